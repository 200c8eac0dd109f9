"""``bearer_required``: a view decorator that demands a valid Bearer token.

::

    from django_authfw.decorators import bearer_required

    @bearer_required
    def me(request):
        return JsonResponse({"username": request.user.get_username()})

    @bearer_required(realm="api")
    async def items(request): ...

Without a token the view answers 401 with the bare ``WWW-Authenticate: Bearer`` challenge
(RFC 6750 section 3.1: no error code when no credentials were sent). With a token whose user has
since been deleted or deactivated it answers 401 ``invalid_token``. Both sync and async views
work. It relies on :class:`~django_authfw.middleware.BearerTokenMiddleware`; where the middleware
is not installed it verifies the header itself, with the same rules.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, overload

from asgiref.sync import iscoroutinefunction
from django.http import HttpRequest, HttpResponse

from .middleware import (
    aauthenticate_request,
    authenticate_request,
    invalid_token_response,
    not_authenticated_response,
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

    What :func:`bearer_required` checks, for class-based views and other callers.
    """
    refused = _refusal_before_user(request, realm)
    if refused is not None:
        return refused
    if not request.user.is_authenticated:
        return invalid_token_response(realm)
    return None


async def abearer_refusal(request: HttpRequest, realm: str | None = None) -> HttpResponse | None:
    """The async twin of :func:`bearer_refusal`."""
    refused = await _arefusal_before_user(request, realm)
    if refused is not None:
        return refused
    user = await request.auser()
    if not user.is_authenticated:
        return invalid_token_response(realm)
    return None


def _decorate(view: ViewFunc, realm: str | None) -> ViewFunc:
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
    (``@bearer_required(realm="api")``).
    """
    if view is not None:
        return _decorate(view, realm)
    return lambda func: _decorate(func, realm)
