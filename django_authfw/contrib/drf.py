"""Django REST framework authentication with django_authfw Bearer tokens (extra ``drf``).

::

    REST_FRAMEWORK = {
        "DEFAULT_AUTHENTICATION_CLASSES": [
            "django_authfw.contrib.drf.BearerTokenAuthentication",
        ],
        "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    }

In a view, ``request.user`` is the token's user and ``request.auth`` the verified
:class:`~django_authfw.records.AuthToken`. Without credentials, DRF's permission classes answer
401 with ``WWW-Authenticate: Bearer``; a token that does not verify gets 401 with
``WWW-Authenticate: Bearer error="invalid_token"``, and a malformed header 401 with
``error="invalid_request"`` (DRF reports every authentication failure as 401).

When :class:`~django_authfw.middleware.BearerTokenMiddleware` already verified the request, its
result (the token and the user) is reused: one storage lookup per request either way. The user
comes as for the middleware (:mod:`~django_authfw.request_user`): read with the token on a
database storage, else loaded here, or answered from the token with ``AUTHFW["USER_SNAPSHOT"]``.
When the token storage or the user database cannot be reached the view answers 503
``temporarily_unavailable`` with ``Retry-After``.
"""

from __future__ import annotations

from typing import Any, ClassVar, NoReturn

from django.views.decorators.debug import sensitive_variables
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request

from ..bearer import MalformedAuthorization, challenge, parse_bearer
from ..exceptions import InvalidToken, StorageUnavailable
from ..http import INVALID_REQUEST, INVALID_TOKEN
from ..middleware import (
    INVALID_TOKEN_DESCRIPTION,
    UNAVAILABLE_RETRY_AFTER,
    get_framework,
    realm_for,
)
from ..records import AuthToken
from ..request_user import usable, user_for

_ERROR = "_authfw_drf_error"
_MISSING = object()


class StorageUnavailableError(exceptions.APIException):
    """503: the token storage or the user database cannot be reached; the client may retry.

    DRF's exception handler turns ``wait`` into the ``Retry-After`` header.
    """

    status_code = 503
    default_detail = "The token storage or the user database cannot be reached; retry later."
    default_code = "temporarily_unavailable"
    wait = UNAVAILABLE_RETRY_AFTER


class BearerTokenAuthentication(BaseAuthentication):
    """``Authorization: Bearer <access token>`` for DRF views.

    Set ``storage`` (the ``AUTHFW["STORAGES"]`` alias) or ``realm`` in a subclass.
    """

    storage: str = "default"
    realm: str | None = None
    #: Tells BearerTokenMiddleware to put this class's ``realm`` in its own challenges for a
    #: view that lists it first (it refuses a bad token before DRF runs).
    authfw_bearer_authentication: ClassVar[bool] = True

    def authenticate(self, request: Request) -> tuple[Any, AuthToken] | None:
        django_request = request._request
        record = getattr(django_request, "auth", _MISSING)
        if record is _MISSING:  # the middleware is not installed
            return self._verify(request)
        if record is None:
            return None
        assert isinstance(record, AuthToken)  # set by the middleware
        # The middleware's user: read with the token, answered from it (USER_SNAPSHOT), or
        # loaded now, once, for the check below.
        return self._checked(request, django_request.user, record)

    def _checked(self, request: Request, user: Any, record: AuthToken) -> tuple[Any, AuthToken]:
        try:
            authenticated = user.is_authenticated
        except StorageUnavailable:
            raise StorageUnavailableError() from None
        if not authenticated:
            self._fail(request, INVALID_TOKEN, INVALID_TOKEN_DESCRIPTION)
        return user, record

    # ``raw`` is the presented token; the frames below (verification) hold it too.
    @sensitive_variables()
    def _verify(self, request: Request) -> tuple[Any, AuthToken] | None:
        try:
            raw = parse_bearer(request.META.get("HTTP_AUTHORIZATION"))
        except MalformedAuthorization as exc:
            self._fail(request, INVALID_REQUEST, str(exc))
        if raw is None:
            return None
        framework = get_framework(self.storage)
        try:
            record, user = framework.verify_token_and_user(raw)
        except InvalidToken:
            self._fail(request, INVALID_TOKEN, INVALID_TOKEN_DESCRIPTION)
        except StorageUnavailable:
            raise StorageUnavailableError() from None

        def load() -> Any:
            return usable(framework.get_user(record))

        return self._checked(request, user_for(record, user, load), record)

    def _fail(self, request: Request, error: str, description: str) -> NoReturn:
        # authenticate_header() is asked for the challenge after this; it reads the reason here.
        setattr(request, _ERROR, (error, description))
        raise exceptions.AuthenticationFailed(description, code=error)

    def authenticate_header(self, request: Request) -> str:
        """``Bearer``, with the error code when a presented token was refused."""
        error, description = getattr(request, _ERROR, (None, None))
        return challenge(error, description, realm=realm_for(request._request, self.realm))
