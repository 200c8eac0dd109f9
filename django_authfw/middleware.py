"""``BearerTokenMiddleware``: ``Authorization: Bearer <token>`` on every request.

Put it after Django's ``AuthenticationMiddleware``::

    MIDDLEWARE = [
        ...,
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "django_authfw.middleware.BearerTokenMiddleware",
        ...,
    ]

Then, on each request:

* no ``Authorization`` header, or another scheme: ``request.auth`` is None and ``request.user``
  is left as ``AuthenticationMiddleware`` set it (an admin's session keeps working);
* a valid Bearer token: ``request.auth`` is the verified :class:`~django_authfw.records.AuthToken`
  and ``request.user`` / ``await request.auser()`` the token's user (see
  :mod:`~django_authfw.request_user`: read with the token in the same query on a database
  storage, else loaded on first use, or answered from the token for ``pk``,
  ``is_authenticated`` and ``is_active`` with ``AUTHFW["USER_SNAPSHOT"]``);
* an unknown, expired or revoked token: 401 with ``WWW-Authenticate: Bearer
  error="invalid_token"`` and the same body whatever the reason (RFC 6750 section 3.1);
* a malformed Bearer header (bad characters, extra parts, over 4 KB, binary junk): 400 with
  ``error="invalid_request"``;
* the challenges carry the ``realm`` of the view the URL resolves to when it has one
  (``@bearer_required(realm="api")``), else the middleware's own ``realm`` (default none);
* a request for a view in one of ``AUTHFW["BEARER_EXEMPT_NAMESPACES"]`` (default: the admin),
  or for a view marked with :func:`~django_authfw.decorators.bearer_exempt`: the header is
  ignored, as if absent. Those views authenticate with a session cookie and CSRF, and a Bearer
  token must not stand in for them;
* the storage cannot be reached, here or later when the view loads the token's user
  (:class:`~django_authfw.exceptions.StorageUnavailable`): 503 ``temporarily_unavailable`` with
  ``Retry-After``.

Verifying costs one storage lookup (on a database storage, the token joined to its user) and
writes nothing. A user who may no longer log in (deleted, inactive) gives ``AnonymousUser``,
and :func:`~django_authfw.decorators.bearer_required` and the DRF class answer 401
``invalid_token``. (The framework revokes a user's tokens when the account is deactivated, so
in practice such a token is refused up front.)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.contrib.auth.models import AnonymousUser
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse
from django.urls import Resolver404, get_resolver
from django.views.decorators.debug import sensitive_variables

from .bearer import MalformedAuthorization, challenge, parse_bearer
from .conf import conf
from .exceptions import InvalidToken, StorageUnavailable
from .framework import AuthFramework
from .http import (
    INVALID_REQUEST,
    INVALID_TOKEN,
    NOT_AUTHENTICATED,
    TEMPORARILY_UNAVAILABLE,
    error_response,
)
from .records import NOT_LOADED, AuthToken
from .request_user import UserOrAnonymous, usable, user_for
from .storage import get_storage

# One text for every rejected token, so a caller cannot tell unknown from expired or revoked.
INVALID_TOKEN_DESCRIPTION = "The access token is invalid, expired or revoked."
NOT_AUTHENTICATED_DESCRIPTION = "This endpoint needs 'Authorization: Bearer <access token>'."
# Seconds a client should wait before retrying when the token storage cannot be reached.
UNAVAILABLE_RETRY_AFTER = 5


_USER_CACHE = "_authfw_user"
_BEFORE_BEARER = "_authfw_before_bearer"
#: The attribute :func:`~django_authfw.decorators.bearer_exempt` sets on a view function.
EXEMPT_ATTRIBUTE = "bearer_exempt"
#: The attribute :func:`~django_authfw.decorators.bearer_required` sets on a view function: the
#: view's ``realm``, which the middleware's own challenges for that view carry too.
REALM_ATTRIBUTE = "bearer_realm"
#: A class attribute of :class:`django_authfw.contrib.drf.BearerTokenAuthentication`: an
#: authentication class whose ``realm`` the middleware's challenges for a DRF view carry.
AUTHENTICATION_CLASS_ATTRIBUTE = "authfw_bearer_authentication"
#: The request attribute holding the realm of the middleware's challenges for the request, so
#: that a view without a realm of its own answers a missing token with the same one.
_REALM = "_authfw_realm"


# One framework per storage alias for the HTTP surfaces (the middleware, the DRF class, the
# views, the auth backend): building one per request cost more than verifying a token in
# memory. Dropped when the settings that build storages change; a framework whose storage is no
# longer the alias's current one (reset_storages) is replaced on its next use.
_frameworks: dict[str, AuthFramework] = {}


def get_framework(storage: str = "default") -> AuthFramework:
    """The :class:`AuthFramework` the HTTP surfaces use for storage alias ``storage`` (one per
    alias, reused from request to request)."""
    framework = _frameworks.get(storage)
    if framework is None or framework.storage is not get_storage(storage):
        framework = _frameworks[storage] = AuthFramework(storage)
    return framework


@receiver(setting_changed)
def _forget_frameworks(*, setting: str, **kwargs: Any) -> None:
    if setting in ("AUTHFW", "CACHES", "DATABASES"):
        _frameworks.clear()


def invalid_token_response(realm: str | None = None) -> HttpResponse:
    """401 for a presented token that does not verify (RFC 6750 section 3.1)."""
    return error_response(
        401,
        INVALID_TOKEN,
        INVALID_TOKEN_DESCRIPTION,
        {"WWW-Authenticate": challenge(INVALID_TOKEN, INVALID_TOKEN_DESCRIPTION, realm=realm)},
    )


def invalid_request_response(description: str, realm: str | None = None) -> HttpResponse:
    """400 for a malformed Authorization header (RFC 6750 section 3.1)."""
    return error_response(
        400,
        INVALID_REQUEST,
        description,
        {"WWW-Authenticate": challenge(INVALID_REQUEST, description, realm=realm)},
    )


def not_authenticated_response(realm: str | None = None) -> HttpResponse:
    """401 for a request that sent no Bearer token: the bare challenge, no error code."""
    return error_response(
        401,
        NOT_AUTHENTICATED,
        NOT_AUTHENTICATED_DESCRIPTION,
        {"WWW-Authenticate": challenge(realm=realm)},
    )


def unavailable_response() -> HttpResponse:
    """503 when the token storage cannot be reached; the client may retry."""
    return error_response(
        503,
        TEMPORARILY_UNAVAILABLE,
        "The token storage or the user database cannot be reached; retry later.",
        {"Retry-After": str(UNAVAILABLE_RETRY_AFTER)},
    )


def _attach(
    request: HttpRequest, framework: AuthFramework, record: AuthToken, user: Any = NOT_LOADED
) -> None:
    """Set ``request.auth`` and ``request.user`` / ``request.auser`` for ``record``.

    ``user`` is what verification read with the token (see :mod:`~django_authfw.request_user`):
    the user itself, or NOT_LOADED, when it is loaded on first use (or answered from the token
    with ``AUTHFW["USER_SNAPSHOT"]``).
    """

    def load() -> UserOrAnonymous:
        cached: UserOrAnonymous | None = getattr(request, _USER_CACHE, None)
        if cached is None:
            cached = usable(framework.get_user(record))
            setattr(request, _USER_CACHE, cached)
        return cached

    async def aload() -> UserOrAnonymous:
        cached: UserOrAnonymous | None = getattr(request, _USER_CACHE, None)
        if cached is None:
            cached = usable(await framework.aget_user(record))
            setattr(request, _USER_CACHE, cached)
        return cached

    if user is not NOT_LOADED:
        setattr(request, _USER_CACHE, usable(user))
    # Kept so that process_view can put the session's user back if the view turns out exempt.
    setattr(request, _BEFORE_BEARER, (request.__dict__.get("user"), request.__dict__.get("auser")))
    request.auth = record  # type: ignore[attr-defined]
    request.user = user_for(record, user, load)  # type: ignore[assignment]
    request.auser = aload  # type: ignore[assignment]


def _detach(request: HttpRequest) -> None:
    """Undo :func:`_attach`: the request is as if it had sent no Bearer header."""
    user, auser = getattr(request, _BEFORE_BEARER)
    delattr(request, _BEFORE_BEARER)
    for name, value in (("user", user), ("auser", auser)):
        if value is None:
            request.__dict__.pop(name, None)
        else:
            setattr(request, name, value)
    _no_credentials(request)


def _no_credentials(request: HttpRequest) -> None:
    request.auth = None  # type: ignore[attr-defined]
    if not hasattr(request, "user"):
        # Without AuthenticationMiddleware nobody else sets it; views may still read it.
        request.user = AnonymousUser()

        async def anonymous() -> AnonymousUser:
            return AnonymousUser()

        request.auser = anonymous


# ``raw`` is the presented token; the frames below (verification) hold it too.
@sensitive_variables()
def authenticate_request(
    request: HttpRequest,
    framework: AuthFramework | None = None,
    realm: str | None = None,
    *,
    storage: str = "default",
) -> HttpResponse | None:
    """Authenticate ``request`` from its Bearer header; return an error response or None.

    None means the request goes on: authenticated (``request.auth`` set) or anonymous
    (``request.auth`` None). ``framework`` defaults to one on the ``storage`` alias.
    """
    try:
        raw = parse_bearer(request.META.get("HTTP_AUTHORIZATION"))
    except MalformedAuthorization as exc:
        return invalid_request_response(str(exc), realm)
    if raw is None:
        _no_credentials(request)
        return None
    # Built only now: a request without a token never touches the storage configuration.
    framework = framework or get_framework(storage)
    try:
        record, user = framework.verify_token_and_user(raw)
    except InvalidToken:
        return invalid_token_response(realm)
    except StorageUnavailable:
        return unavailable_response()
    _attach(request, framework, record, user)
    return None


@sensitive_variables()
async def aauthenticate_request(
    request: HttpRequest,
    framework: AuthFramework | None = None,
    realm: str | None = None,
    *,
    storage: str = "default",
) -> HttpResponse | None:
    """The async twin of :func:`authenticate_request`."""
    try:
        raw = parse_bearer(request.META.get("HTTP_AUTHORIZATION"))
    except MalformedAuthorization as exc:
        return invalid_request_response(str(exc), realm)
    if raw is None:
        _no_credentials(request)
        return None
    # Built only now: a request without a token never touches the storage configuration.
    framework = framework or get_framework(storage)
    try:
        record, user = await framework.averify_token_and_user(raw)
    except InvalidToken:
        return invalid_token_response(realm)
    except StorageUnavailable:
        return unavailable_response()
    _attach(request, framework, record, user)
    return None


def _namespaces(match: Any) -> set[str]:
    # Instance namespaces ("admin", or the name of another AdminSite), application namespaces
    # (every AdminSite's is "admin"), and the joined forms of nested ones ("api:v1").
    names = {*match.namespaces, *match.app_names}
    if match.namespace:
        names.add(match.namespace)
    if match.app_name:
        names.add(match.app_name)
    return names


def _resolve(request: HttpRequest) -> Any:
    """The URL match of ``request`` as Django will resolve it, or None for a 404."""
    urlconf = getattr(request, "urlconf", None)
    try:
        return get_resolver(urlconf).resolve(request.path_info)
    except Resolver404:
        return None


def is_exempt(request: HttpRequest, namespaces: Iterable[str] | None = None) -> bool:
    """Whether the view ``request`` resolves to takes no Bearer tokens.

    True for a view under one of ``namespaces`` (default ``AUTHFW["BEARER_EXEMPT_NAMESPACES"]``),
    for a view of an ``AdminSite`` when ``"admin"`` or the site's name is listed (even where its
    URLs are included without a namespace), or for a view marked with
    :func:`~django_authfw.decorators.bearer_exempt`. The URL is resolved the way
    Django will resolve it (``request.urlconf`` if an earlier middleware set one); a path that
    resolves to nothing is not exempt (it will be a 404 anyway).
    """
    match = _resolve(request)
    return match is not None and _exempt_view(match, match.func, namespaces)


def view_realm(view: Any, method: str | None = None) -> str | None:
    """The ``realm`` a view asks for in its challenges.

    ``@bearer_required(realm=...)`` on the view function, or, for a class-based view, on its
    handler for ``method`` (``method_decorator(bearer_required(realm=...))`` on ``get``); for a
    DRF view, the ``realm`` of its first authentication class when that is a
    ``BearerTokenAuthentication`` (the class DRF asks for the challenge of a missing token).
    """
    realm = getattr(view, REALM_ATTRIBUTE, None)
    if isinstance(realm, str):
        return realm
    view_class = getattr(view, "view_class", None)
    if view_class is None:
        return None
    name = (method or "").lower()
    # Only the HTTP methods the class serves: the method is the client's to choose.
    served = name in getattr(view_class, "http_method_names", ())
    handler = getattr(view_class, name, None) if served else None
    if handler is None and name == "head":  # View.setup() serves HEAD with get()
        handler = getattr(view_class, "get", None)
    realm = getattr(handler, REALM_ATTRIBUTE, None)
    if isinstance(realm, str):
        return realm
    classes = getattr(view_class, "authentication_classes", None)
    if isinstance(classes, list | tuple) and classes:
        first = classes[0]
        if getattr(first, AUTHENTICATION_CLASS_ATTRIBUTE, False):
            realm = getattr(first, "realm", None)
            return realm if isinstance(realm, str) else None
    return None


def realm_for(request: HttpRequest, realm: str | None) -> str | None:
    """``realm``, or when it is None the realm of the middleware's challenges for ``request``
    (its subclass's ``realm``), so that one view answers a missing and a bad token alike."""
    if realm is not None:
        return realm
    found = getattr(request, _REALM, None)
    return found if isinstance(found, str) else None


def _exempt_view(match: Any, view: Any, namespaces: Iterable[str] | None) -> bool:
    if getattr(view, EXEMPT_ATTRIBUTE, False):
        return True
    wanted = conf.BEARER_EXEMPT_NAMESPACES if namespaces is None else namespaces
    names = _admin_site_names(view)
    if match is not None:
        names |= _namespaces(match)
    return bool(names.intersection(wanted))


def _admin_site_names(view: Any) -> set[str]:
    # An admin view is one wherever it is mounted: ``include(site.get_urls())`` puts it under no
    # namespace at all, yet it still takes the session and would take a Bearer token. Its
    # wrapper says which site it belongs to (AdminSite and ModelAdmin.get_urls set these).
    site = getattr(view, "admin_site", None)
    if site is None:
        site = getattr(getattr(view, "model_admin", None), "admin_site", None)
    name = getattr(site, "name", None)
    # "admin" is the application namespace of every AdminSite, as for a namespaced mount.
    return {"admin", name} if isinstance(name, str) else set()


class BearerTokenMiddleware:
    """Authenticate requests that carry ``Authorization: Bearer <token>`` (sync and async).

    Subclass to change ``storage`` (the ``AUTHFW["STORAGES"]`` alias the tokens live in), to
    add a ``realm`` to the ``WWW-Authenticate`` challenges, or to set ``exempt_namespaces``
    (default None: ``AUTHFW["BEARER_EXEMPT_NAMESPACES"]``).
    """

    sync_capable = True
    async_capable = True

    storage: str = "default"
    realm: str | None = None
    exempt_namespaces: tuple[str, ...] | list[str] | None = None

    def __init__(
        self,
        get_response: Callable[[HttpRequest], HttpResponse]
        | Callable[[HttpRequest], Awaitable[HttpResponse]],
    ) -> None:
        # Any: the same attribute holds a sync or an async callable, as in Django's own mixin.
        self.get_response: Any = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def _route(self, request: HttpRequest) -> tuple[bool, str | None]:
        """Whether the request's view is exempt, and the realm of its challenges.

        Only a request that sends an Authorization header pays for resolving its URL: the
        view's own realm (``@bearer_required(realm=...)``) wins over the middleware's, so that
        a bad token is refused with the same challenge the view gives a missing one.
        """
        if not request.META.get("HTTP_AUTHORIZATION"):
            return False, self.realm
        match = _resolve(request)
        if match is None:
            return False, self.realm
        if _exempt_view(match, match.func, self.exempt_namespaces):
            _no_credentials(request)
            return True, None
        return False, view_realm(match.func, request.method) or self.realm

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        exempt, realm = self._route(request)
        setattr(request, _REALM, realm)
        if not exempt:
            refused = authenticate_request(request, realm=realm, storage=self.storage)
            if refused is not None:
                return refused
        return self.get_response(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        exempt, realm = self._route(request)
        setattr(request, _REALM, realm)
        if not exempt:
            refused = await aauthenticate_request(request, realm=realm, storage=self.storage)
            if refused is not None:
                return refused
        response: HttpResponse = await self.get_response(request)
        return response

    def process_view(
        self, request: HttpRequest, view_func: Any, view_args: Any, view_kwargs: Any
    ) -> None:
        """Check again against the view Django actually calls.

        ``__call__`` resolved the URL before the middlewares after this one ran; one of them may
        set ``request.urlconf`` (tenant or host routing) or a locale prefix, so that the view
        called is an exempt one (the admin) after all. The Bearer user is then taken back.
        """
        if getattr(request, _BEFORE_BEARER, None) is None:
            return
        if _exempt_view(request.resolver_match, view_func, self.exempt_namespaces):
            _detach(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        """A view that hit an unreachable storage (the token's user is loaded lazily, in the
        view) answers 503 JSON with ``Retry-After``, not Django's HTML 500."""
        if isinstance(exception, StorageUnavailable):
            return unavailable_response()
        return None
