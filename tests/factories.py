"""factory-boy factories for users and stored tokens."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import factory
from django.contrib.auth import get_user_model

from django_authfw import tokens
from django_authfw.records import AuthToken, utcnow

PASSWORD = "correct horse battery staple"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.django.Password(PASSWORD)
    is_active = True


class AuthTokenFactory(factory.Factory):
    """An :class:`AuthToken` record as the framework would issue it, not yet stored.

    Pass ``user_id`` of a real user: the database storage keeps a foreign key to it.
    """

    class Meta:
        model = AuthToken

    token_id = factory.LazyFunction(tokens.new_id)
    user_id = "1"
    access_digest = factory.LazyFunction(
        lambda: tokens.digest(tokens.new_secret(tokens.ACCESS_PREFIX))
    )
    refresh_digest = factory.LazyFunction(
        lambda: tokens.digest(tokens.new_secret(tokens.REFRESH_PREFIX))
    )
    expires_at = factory.LazyFunction(lambda: utcnow() + timedelta(hours=1))
    refresh_expires_at = factory.LazyFunction(lambda: utcnow() + timedelta(days=1))
    family_id = factory.LazyFunction(tokens.new_id)
    permissions: Any = factory.LazyFunction(lambda: ["auth.view_user"])
    roles: Any = factory.LazyFunction(lambda: ["staff"])
    metadata: Any = factory.LazyFunction(lambda: {"client": "tests"})
