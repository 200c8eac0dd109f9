"""``bearer_required``: a view decorator that demands a valid Bearer token.

::

    from django_authfw.decorators import bearer_required

    @bearer_required
    def me(request):
        return JsonResponse({"username": request.user.get_username()})

    @bearer_required(realm="api")
    async def items(request): ...

Without a token the view answers 401 with the bare ``WWW-Authenticate: Bearer`` challenge
(RFC 6750 section 3.1: no error code when no credentials were sent). A ``realm`` is in every
challenge for the view, the middleware's refusals of a bad or malformed token included: the
decorator marks the view function with it (put other decorators that do not copy function
attributes inside it, as for ``csrf_exempt``). With a token whose user has
since been deleted or deactivated it answers 401 ``invalid_token``. Both sync and async views
work. It relies on :class:`~django_authfw.middleware.BearerTokenMiddleware`; where the middleware
is not installed it verifies the header itself, with the same rules. When the token storage or the
user database cannot be reached it answers 503 ``temporarily_unavailable`` with ``Retry-After``.

``bearer_exempt`` marks a view the middleware must leave alone (a cookie and CSRF view), as
``AUTHFW["BEARER_EXEMPT_NAMESPACES"]`` does for whole namespaces.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, overload

from asgiref.sync import iscoroutinefunction
from django.http import HttpRequest, HttpResponse

from .bearer import check_realm
from .exceptions import StorageUnavailable
from .middleware import (
    EXEMPT_ATTRIBUTE,
    REALM_ATTRIBUTE,
    aauthenticate_request,
    authenticate_request,
    invalid_token_response,
    not_authenticated_response,
    realm_for,
    unavailable_response,
)

ViewFunc = TypeVar("ViewFunc", bound=Callable[..., Any])

_MISSING = object()


def _refusal_before_user(request: HttpRequest, realm: str | None) -> HttpResponse | None:
    if getattr(request, "auth", _MISSING) is _MISSING:
        refused = authenticate_request(request, realm=realm)
        if refused is not None:
            return refused
    if request.auth is None:  # type: ignore[attr-defined]
        return not_authenticated_response(realm)
    return None


async def _arefusal_before_user(request: HttpRequest, realm: str | None) -> HttpResponse | None:
    if getattr(request, "auth", _MISSING) is _MISSING:
        refused = await aauthenticate_request(request, realm=realm)
        if refused is not None:
            return refused
    if request.auth is None:  # type: ignore[attr-defined]
        return not_authenticated_response(realm)
    return None


def bearer_refusal(request: HttpRequest, realm: str | None = None) -> HttpResponse | None:
    """The 401 a request without a valid Bearer token of an active user gets, or None.

    What :func:`bearer_required` checks, for class-based views and other callers. Without a
    ``realm``, the challenges carry the middleware's (its subclass's ``realm``), if any.
    """
    realm = realm_for(request, realm)
    refused = _refusal_before_user(request, realm)
    if refused is not None:
        return refused
    try:
        authenticated = request.user.is_authenticated  # loads the token's user
    except StorageUnavailable:
        return unavailable_response()
    if not authenticated:
        return invalid_token_response(realm)
    return None


async def abearer_refusal(request: HttpRequest, realm: str | None = None) -> HttpResponse | None:
    """The async twin of :func:`bearer_refusal`."""
    realm = realm_for(request, realm)
    refused = await _arefusal_before_user(request, realm)
    if refused is not None:
        return refused
    try:
        user = await request.auser()
    except StorageUnavailable:
        return unavailable_response()
    if not user.is_authenticated:
        return invalid_token_response(realm)
    return None


def _decorate(view: ViewFunc, realm: str | None) -> ViewFunc:
    wrapped = _wrap(view, realm)
    # The middleware refuses a bad or malformed token before the view runs; this attribute tells
    # it the view's realm, so that those challenges carry it too.
    setattr(wrapped, REALM_ATTRIBUTE, realm)
    return wrapped


def _wrap(view: ViewFunc, realm: str | None) -> ViewFunc:
    if iscoroutinefunction(view):

        @functools.wraps(view)
        async def async_wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            refused = await abearer_refusal(request, realm)
            if refused is not None:
                return refused
            return await view(request, *args, **kwargs)

        return async_wrapper  # type: ignore[return-value]

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        refused = bearer_refusal(request, realm)
        if refused is not None:
            return refused
        return view(request, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


@overload
def bearer_required(view: ViewFunc, *, realm: str | None = None) -> ViewFunc: ...
@overload
def bearer_required(
    view: None = None, *, realm: str | None = None
) -> Callable[[ViewFunc], ViewFunc]: ...
def bearer_required(
    view: ViewFunc | None = None, *, realm: str | None = None
) -> ViewFunc | Callable[[ViewFunc], ViewFunc]:
    """Let the view run only for a request with a valid Bearer token of an active user.

    Usable bare (``@bearer_required``) or with a ``realm`` for the challenge
    (``@bearer_required(realm="api")``). A realm that cannot be a header value (a line
    break, a control character) raises ValueError here.
    """
    check_realm(realm)
    if view is not None:
        return _decorate(view, realm)
    return lambda func: _decorate(func, realm)


def bearer_exempt(view: ViewFunc) -> ViewFunc:
    """Mark a view that :class:`~django_authfw.middleware.BearerTokenMiddleware` must skip.

    For a request to it the ``Authorization`` header is ignored, as if absent: ``request.auth``
    is None and ``request.user`` stays what ``AuthenticationMiddleware`` set (the session
    user). Use it on views that authenticate with a session cookie and CSRF outside the
    namespaces of ``AUTHFW["BEARER_EXEMPT_NAMESPACES"]``. Like ``csrf_exempt``, it sets an
    attribute on the view function, so put it outermost.
    """
    setattr(view, EXEMPT_ATTRIBUTE, True)
    return view
