"""factory-boy factories for users and stored tokens.

Call them as ``UserFactory.create(...)`` and ``AuthTokenFactory.build(...)``: those class methods
are typed (they return the model), while calling the factory class itself is not.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from factory.base import Factory
from factory.declarations import LazyAttribute, LazyFunction, Sequence
from factory.django import DjangoModelFactory, Password

from django_authfw import tokens
from django_authfw.records import AuthToken, utcnow

PASSWORD = "correct horse battery staple"


class UserFactory(DjangoModelFactory[User]):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = Sequence(lambda n: f"user{n}")
    email = LazyAttribute(lambda u: f"{u.username}@example.com")
    password = Password(PASSWORD)
    is_active = True


class AuthTokenFactory(Factory[AuthToken]):
    """An :class:`AuthToken` record as the framework would issue it, not yet stored.

    Pass ``user_id`` of a real user: the database storage keeps a foreign key to it.
    """

    class Meta:
        model = AuthToken

    user_id = "1"
    access_digest = LazyFunction(lambda: tokens.digest(tokens.new_secret(tokens.ACCESS_PREFIX)))
    # As the framework mints them: the id derived from the access digest, the family named
    # after the login's first token.
    token_id = LazyAttribute(lambda token: tokens.token_id_for(token.access_digest))
    refresh_digest = LazyFunction(lambda: tokens.digest(tokens.new_secret(tokens.REFRESH_PREFIX)))
    expires_at = LazyFunction(lambda: utcnow() + timedelta(hours=1))
    refresh_expires_at = LazyFunction(lambda: utcnow() + timedelta(days=1))
    family_id = LazyAttribute(lambda token: token.token_id)
    permissions: Any = LazyFunction(lambda: ["auth.view_user"])
    roles: Any = LazyFunction(lambda: ["staff"])
    metadata: Any = LazyFunction(lambda: {"client": "tests"})
