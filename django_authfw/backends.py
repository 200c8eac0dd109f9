"""``BearerTokenBackend``: a Django authentication backend for raw Bearer tokens.

The middleware does not need it; it serves code that calls Django's own API with a token, for
example to turn a token into a browser session::

    AUTHENTICATION_BACKENDS = [
        "django.contrib.auth.backends.ModelBackend",
        "django_authfw.backends.BearerTokenBackend",
    ]

    user = django.contrib.auth.authenticate(request, bearer_token=raw_token)
    if user is not None:
        django.contrib.auth.login(request, user)

``authenticate`` returns None (and Django tries the next backend) for anything but a valid,
unexpired, unrevoked access token of an active user; on success ``request.auth`` is the verified
token record. Calls with ``username``/``password`` are not for this backend and get None.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import BaseBackend
from django.contrib.auth.base_user import AbstractBaseUser
from django.http import HttpRequest

from .exceptions import InvalidInput, InvalidToken
from .middleware import get_framework


class BearerTokenBackend(BaseBackend):
    """Authenticate ``bearer_token=...`` through :meth:`AuthFramework.verify_token`.

    ``storage`` is the ``AUTHFW["STORAGES"]`` alias the tokens live in; set it in a subclass.
    """

    storage: str = "default"

    def user_can_authenticate(self, user: AbstractBaseUser | None) -> bool:
        """Reject missing and inactive users, as ModelBackend does."""
        return user is not None and getattr(user, "is_active", True)

    def authenticate(  # type: ignore[override]
        self, request: HttpRequest | None, bearer_token: str | None = None, **kwargs: Any
    ) -> AbstractBaseUser | None:
        if bearer_token is None:
            return None
        framework = get_framework(self.storage)
        try:
            record = framework.verify_token(bearer_token)
        except (InvalidToken, InvalidInput):
            return None
        user = framework.get_user(record)
        if not self.user_can_authenticate(user):
            return None
        if request is not None:
            request.auth = record  # type: ignore[attr-defined]
        return user

    async def aauthenticate(  # type: ignore[override]
        self, request: HttpRequest | None, bearer_token: str | None = None, **kwargs: Any
    ) -> AbstractBaseUser | None:
        if bearer_token is None:
            return None
        framework = get_framework(self.storage)
        try:
            record = await framework.averify_token(bearer_token)
        except (InvalidToken, InvalidInput):
            return None
        user = await framework.aget_user(record)
        if not self.user_can_authenticate(user):
            return None
        if request is not None:
            request.auth = record  # type: ignore[attr-defined]
        return user

    def get_user(self, user_id: Any) -> AbstractBaseUser | None:  # type: ignore[override]
        """The user a session logged in through this backend belongs to, if still active."""
        model = get_user_model()
        try:
            user = model._default_manager.get(pk=user_id)
        except model.DoesNotExist:
            return None
        return user if self.user_can_authenticate(user) else None
