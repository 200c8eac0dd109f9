"""The JSON endpoints of :mod:`django_authfw.urls` (see docs/http-api.md).

Each endpoint is a thin class over :class:`~django_authfw.framework.AuthFramework`: parse the
body (JSON or form fields, at most 16 KB), call one framework method, turn its exceptions into
the stable error bodies of :mod:`django_authfw.http`. They are CSRF-exempt because they do not
authenticate with cookies: callers present a password, a refresh token or a Bearer token. The
one exception, introspection by a staff member's admin session, only reads.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db.models import Field
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.views import View
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables

from .decorators import bearer_refusal
from .exceptions import (
    AccountLocked,
    InvalidCredentials,
    InvalidInput,
    InvalidToken,
    StorageUnavailable,
    UserExists,
)
from .framework import AuthFramework
from .http import (
    INVALID_GRANT,
    METHOD_NOT_ALLOWED,
    NOT_FOUND,
    TOO_MANY_ATTEMPTS,
    UNSUPPORTED_GRANT_TYPE,
    USER_EXISTS,
    APIError,
    bad_request,
    error_response,
    json_response,
    parse_body,
    string_param,
)
from .middleware import (
    authenticate_request,
    get_framework,
    not_authenticated_response,
    unavailable_response,
)
from .records import SessionData
from .request_info import RequestInfo
from .tokens import IssuedToken

INVALID_GRANT_PASSWORD = "The username or password is wrong."
#: Parameters an error report (Django's 500 page, the admins' email) must never show.
SENSITIVE_PARAMETERS = ("password", "refresh_token", "token")
INVALID_GRANT_REFRESH = "The refresh token is invalid, expired or revoked."


def token_response(issued: IssuedToken) -> HttpResponse:
    """The RFC 6749 section 5.1 success response."""
    body: dict[str, Any] = {
        "access_token": issued.access_token,
        "token_type": issued.token_type,
        "expires_in": issued.expires_in,
    }
    if issued.refresh_token is not None:
        body["refresh_token"] = issued.refresh_token
    return json_response(body)


def session_json(session: SessionData) -> dict[str, Any]:
    """A session as the sessions endpoint shows it (its ``data`` stays private to the app)."""
    return {
        "session_id": session.session_id,
        "created_at": session.created_at.isoformat(),
        "last_accessed": session.last_accessed.isoformat(),
        "expires_at": session.expires_at.isoformat() if session.expires_at else None,
        "ip_address": session.ip_address,
        "user_agent": session.user_agent,
    }


class Endpoint(View):
    """Base of the JSON endpoints: error mapping, JSON 405, the framework for ``storage``."""

    #: The ``AUTHFW["STORAGES"]`` alias the endpoint works on; set it in ``as_view(storage=...)``
    #: or in a subclass.
    storage: str = "default"

    @classmethod
    def as_view(cls, **initkwargs: Any) -> Any:
        # On the view function, not on dispatch(): a subclass that overrides dispatch() would
        # otherwise silently lose the exemption (and the hiding of secret parameters).
        view = sensitive_post_parameters(*SENSITIVE_PARAMETERS)(super().as_view(**initkwargs))
        return csrf_exempt(view)

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not hasattr(request, "auth"):
            # BearerTokenMiddleware is not installed: apply the same rules here.
            refused = authenticate_request(request, storage=self.storage)
            if refused is not None:
                return refused
        try:
            response: HttpResponseBase = super().dispatch(request, *args, **kwargs)
        except APIError as exc:
            return exc.response()
        except StorageUnavailable:
            return unavailable_response()
        return response

    def options(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        """The methods the endpoint takes, as JSON (Django's default is an empty text/html)."""
        allowed: list[str] = self._allowed_methods()  # type: ignore[attr-defined]
        return json_response({"methods": allowed}, headers={"Allow": ", ".join(allowed)})

    def http_method_not_allowed(
        self, request: HttpRequest, *args: Any, **kwargs: Any
    ) -> HttpResponse:
        allowed = ", ".join(self._allowed_methods())  # type: ignore[attr-defined]
        return error_response(
            405,
            METHOD_NOT_ALLOWED,
            f"{request.method} is not allowed here; use {allowed}.",
            {"Allow": allowed},
        )

    @property
    def framework(self) -> AuthFramework:
        return get_framework(self.storage)

    def request_info(self) -> RequestInfo:
        return RequestInfo.from_request(self.request)

    def params(self) -> dict[str, Any]:
        return parse_body(self.request)


def _check_grant_type(params: Mapping[str, Any], allowed: str) -> None:
    grant_type = string_param(params, "grant_type", required=False)
    if grant_type is not None and grant_type != allowed:
        raise APIError(
            400,
            UNSUPPORTED_GRANT_TYPE,
            f"This endpoint does grant_type {allowed!r} only.",
        )


def _validate_new_account(username: str) -> None:
    """The username checks Django's UserCreationForm makes: the username field's validators
    (length, allowed characters). ``register_user`` runs ``AUTH_PASSWORD_VALIDATORS`` itself,
    for this endpoint and for Python callers alike."""
    model = get_user_model()
    field = model._meta.get_field(model.USERNAME_FIELD)
    assert isinstance(field, Field)  # USERNAME_FIELD names a concrete field
    try:
        field.clean(username, None)
    except ValidationError as exc:
        raise bad_request("username: " + " ".join(exc.messages)) from None


class RegisterView(Endpoint):
    """``POST register/`` with ``username`` and ``password``: create an account (201)."""

    # The handlers hold passwords and tokens in their locals (params, password, issued): an
    # error report hides every local here and in the frames below that have no list of their own.
    @sensitive_variables()
    def post(self, request: HttpRequest) -> HttpResponse:
        params = self.params()
        username = string_param(params, "username")
        password = string_param(params, "password")
        assert username is not None  # required above
        assert password is not None
        _validate_new_account(username)
        try:
            user = self.framework.register_user(
                username, password, request_info=self.request_info()
            )
        except UserExists:
            raise APIError(409, USER_EXISTS, "That username is taken; choose another.") from None
        except InvalidInput as exc:
            raise bad_request(str(exc)) from None
        return json_response({"id": str(user.pk), "username": user.get_username()}, status=201)


class TokenView(Endpoint):
    """``POST token/``: the token endpoint of RFC 6749 (section 3.2).

    ``grant_type=password`` (or no ``grant_type``) with ``username`` and ``password`` logs in
    (section 4.3); ``grant_type=refresh_token`` with ``refresh_token`` refreshes (section 6),
    exactly as ``token/refresh/`` does, so that a standard OAuth 2.0 client's automatic refresh
    works against the one token URL it knows.
    """

    @sensitive_variables()
    def post(self, request: HttpRequest) -> HttpResponse:
        params = self.params()
        grant_type = string_param(params, "grant_type", required=False)
        if grant_type == "refresh_token":
            return refresh_grant(self.framework, params, self.request_info())
        if grant_type not in (None, "password"):
            raise APIError(
                400,
                UNSUPPORTED_GRANT_TYPE,
                "This endpoint does grant_type 'password' and 'refresh_token' only.",
            )
        username = string_param(params, "username")
        password = string_param(params, "password")
        assert username is not None  # required above
        assert password is not None
        try:
            issued = self.framework.authenticate(
                username, password, request_info=self.request_info()
            )
        except AccountLocked as exc:
            raise APIError(
                429,
                TOO_MANY_ATTEMPTS,
                "Too many failed logins; wait before trying again.",
                {"Retry-After": str(max(1, int(exc.retry_after)))},
            ) from None
        except (InvalidCredentials, InvalidInput):
            # A too-long or malformed username cannot belong to an account either; answering
            # the same keeps the endpoint from telling which inputs it checks first.
            raise APIError(400, INVALID_GRANT, INVALID_GRANT_PASSWORD) from None
        return token_response(issued)


@sensitive_variables()  # the presented and the issued refresh tokens
def refresh_grant(
    framework: AuthFramework, params: Mapping[str, Any], info: RequestInfo
) -> HttpResponse:
    """The refresh grant (RFC 6749 section 6), shared by ``token/`` and ``token/refresh/``:
    rotation, reuse detection and audit are the framework's, so both answer alike."""
    refresh_token = string_param(params, "refresh_token")
    assert refresh_token is not None  # required above
    try:
        issued = framework.refresh(refresh_token, request_info=info)
    except (InvalidToken, InvalidInput):
        raise APIError(400, INVALID_GRANT, INVALID_GRANT_REFRESH) from None
    return token_response(issued)


class RefreshView(Endpoint):
    """``POST token/refresh/`` with ``refresh_token``: a new token pair (RFC 6749 section 6).

    The same grant as ``token/`` with ``grant_type=refresh_token``; here ``grant_type`` is
    optional.
    """

    @sensitive_variables()
    def post(self, request: HttpRequest) -> HttpResponse:
        params = self.params()
        _check_grant_type(params, "refresh_token")
        return refresh_grant(self.framework, params, self.request_info())


class RevokeView(Endpoint):
    """``POST token/revoke/`` with ``token``: revoke it (RFC 7009), always 200."""

    @sensitive_variables()
    def post(self, request: HttpRequest) -> HttpResponse:
        params = self.params()
        token = string_param(params, "token")
        assert token is not None  # required above
        # token_type_hint is optional and may be ignored (RFC 7009 section 2.1): the framework
        # recognises both kinds by their prefix.
        string_param(params, "token_type_hint", required=False)
        # RFC 7009 section 2.2: an invalid token is not an error; the answer is the same.
        with contextlib.suppress(InvalidToken, InvalidInput):
            self.framework.revoke_token(token, request_info=self.request_info())
        return json_response({})


class IntrospectView(Endpoint):
    """``POST token/introspect/`` with ``token`` (RFC 7662), for authenticated callers only.

    A caller with a Bearer token sees its own user's tokens (others are ``{"active": false}``);
    staff, by Bearer token or by their admin session, see every token.
    """

    @sensitive_variables()
    def post(self, request: HttpRequest) -> HttpResponse:
        if request.auth is not None:  # type: ignore[attr-defined]
            refused = bearer_refusal(request)
            if refused is not None:
                return refused
        elif not (request.user.is_authenticated and request.user.is_staff):
            return not_authenticated_response()
        params = self.params()
        token = string_param(params, "token")
        assert token is not None  # required above
        string_param(params, "token_type_hint", required=False)
        try:
            result = self.framework.introspect(token)
        except (InvalidToken, InvalidInput):
            result = {"active": False}
        user = request.user
        if result.get("active") and not user.is_staff and result.get("sub") != str(user.pk):
            result = {"active": False}
        return json_response(result)


class AuthenticatedEndpoint(Endpoint):
    """An endpoint that needs a valid Bearer token of an active user."""

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        # Checked here rather than in each handler; a wrong method still gets its 405 first.
        method = (request.method or "").lower()
        if method != "options" and method in self._allowed_handler_names():
            if not hasattr(request, "auth"):
                refused = authenticate_request(request, storage=self.storage)
                if refused is not None:
                    return refused
            refused = bearer_refusal(request)
            if refused is not None:
                return refused
        return super().dispatch(request, *args, **kwargs)

    def _allowed_handler_names(self) -> set[str]:
        return {name for name in self.http_method_names if hasattr(self, name)}


class LogoutAllView(AuthenticatedEndpoint):
    """``POST logout-all/``: revoke every token and end every session of the caller's user."""

    def post(self, request: HttpRequest) -> HttpResponse:
        info = self.request_info()
        framework = self.framework
        revoked = framework.revoke_user_tokens(request.user, request_info=info)
        ended = framework.end_user_sessions(request.user, request_info=info)
        return json_response({"revoked_tokens": revoked, "ended_sessions": ended})


class SessionListView(AuthenticatedEndpoint):
    """``GET sessions/``: the caller's unexpired sessions, oldest first."""

    def get(self, request: HttpRequest) -> HttpResponse:
        sessions = self.framework.list_sessions(request.user)
        return json_response({"sessions": [session_json(s) for s in sessions]})


class SessionDetailView(AuthenticatedEndpoint):
    """``DELETE`` (or ``POST``) ``sessions/<session_id>/``: end one of the caller's sessions."""

    def delete(self, request: HttpRequest, session_id: str) -> HttpResponse:
        framework = self.framework
        session = None
        with contextlib.suppress(InvalidInput):  # an id no session can have
            session = framework.get_session(session_id)
        # Someone else's session answers exactly like an unknown one.
        if session is None or session.user_id != str(request.user.pk):
            raise APIError(404, NOT_FOUND, "You have no session with that id.")
        framework.end_session(session_id, request_info=self.request_info())
        return json_response({"ended": True})

    def post(self, request: HttpRequest, session_id: str) -> HttpResponse:
        return self.delete(request, session_id)
