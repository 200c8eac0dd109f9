"""``AUTHFW["USER_SNAPSHOT"]``: request.user's pk, is_authenticated and is_active from the token.

On the storages that cannot read the user with the token (in-memory, LocMemCache, Redis), a
request whose view reads only those makes no SQL query at all; anything else loads the user.
Every way of changing a user is checked against the snapshot: the ones that go through
``save()``/``delete()`` end the user's tokens (so the snapshot is never served for them), and
``QuerySet.update()``, which bypasses the signal receivers, is stale until the token ends, as
docs/middleware.md says.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.http import HttpRequest, JsonResponse
from django.test import Client, RequestFactory
from django.urls import include, path

from django_authfw import AuthFramework
from django_authfw.decorators import bearer_required
from django_authfw.middleware import BearerTokenMiddleware
from django_authfw.request_user import TokenUser

from .backends import selected_backends
from .http_support import bearer, body, fast_hashing, login, storages_for, user_factory

__all__ = ["fast_hashing", "login", "user_factory"]  # fixtures used below

User = get_user_model()


def snapshot_view(request: HttpRequest) -> JsonResponse:
    """Reads only what the snapshot holds."""
    user = request.user
    return JsonResponse(
        {
            "pk": user.pk,
            "id": user.id,
            "authenticated": user.is_authenticated,
            "active": user.is_active,
        }
    )


def profile_view(request: HttpRequest) -> JsonResponse:
    """Reads an attribute the snapshot does not hold (first, so the user is loaded before
    is_authenticated is read)."""
    user = request.user
    username = user.get_username() or None
    return JsonResponse(
        {
            "authenticated": user.is_authenticated,
            "username": username,
            "first_name": getattr(user, "first_name", None),
        }
    )


@bearer_required
def protected_view(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"pk": request.user.pk})


urlpatterns = [
    path("snap/", snapshot_view),
    path("profile/", profile_view),
    path("protected/", protected_view),
    path("", include("testproject.urls")),
]

SNAPSHOT_BACKENDS = [name for name in selected_backends() if name in ("memory", "locmem", "redis")]


@pytest.fixture(params=SNAPSHOT_BACKENDS)
def snapshot_backend(request: pytest.FixtureRequest, settings: Any, db: None) -> Iterator[str]:
    """The ``default`` alias on each storage that cannot join users, with the snapshot on."""
    backend: str = request.param
    settings.AUTHFW = {
        **settings.AUTHFW,
        "STORAGES": storages_for(backend, settings),
        "USER_SNAPSHOT": True,
    }
    yield backend
    framework = AuthFramework()
    try:
        framework.storage.flush()
    finally:
        framework.storage.close()


pytestmark = pytest.mark.urls(__name__)


def get(client: Client, url: str, token: str) -> Any:
    return client.get(url, **bearer(token))


def test_a_request_reading_the_snapshot_makes_no_sql_query(
    snapshot_backend: str,
    client: Client,
    user_factory: Any,
    login: Any,
    django_assert_num_queries: Any,
) -> None:
    user = user_factory(username="sam")
    issued = login(user)
    with django_assert_num_queries(0):
        response = get(client, "/snap/", issued.access_token)
        protected = get(client, "/protected/", issued.access_token)
    assert body(response) == {"pk": user.pk, "id": user.pk, "authenticated": True, "active": True}
    assert body(protected) == {"pk": user.pk}


def test_any_other_attribute_loads_the_user_once(
    snapshot_backend: str,
    client: Client,
    user_factory: Any,
    login: Any,
    django_assert_num_queries: Any,
) -> None:
    issued = login(user_factory(username="sam", first_name="Sam"))
    with django_assert_num_queries(1):
        response = get(client, "/profile/", issued.access_token)
    assert body(response) == {"authenticated": True, "username": "sam", "first_name": "Sam"}


def test_without_the_snapshot_the_user_is_loaded(
    snapshot_backend: str,
    settings: Any,
    client: Client,
    user_factory: Any,
    login: Any,
    django_assert_num_queries: Any,
) -> None:
    settings.AUTHFW = {**settings.AUTHFW, "USER_SNAPSHOT": False}
    issued = login(user_factory())
    with django_assert_num_queries(1):
        assert body(get(client, "/snap/", issued.access_token))["authenticated"] is True


def test_the_token_user_is_a_lazy_user(user_factory: Any, db: None) -> None:
    user = user_factory(username="lazy")
    loads: list[int] = []

    def load() -> Any:
        loads.append(1)
        return User.objects.get(pk=user.pk)

    proxy = TokenUser(user.pk, "id", load)
    assert (proxy.pk, proxy.id, proxy.is_authenticated, proxy.is_active) == (
        user.pk,
        user.pk,
        True,
        True,
    )
    assert bool(proxy)
    assert not proxy.is_anonymous
    assert not proxy.loaded
    assert loads == []
    assert proxy.get_username() == "lazy"
    assert isinstance(proxy, User)
    assert proxy == user
    assert loads == [1]
    assert proxy.loaded


# Every way of changing a user, against the snapshot -------------------------------------------


def deactivate_in_admin(client: Client, user: Any) -> None:
    admin = User.objects.create_superuser("root", "root@example.org", "x" * 20)
    client.force_login(admin)
    joined = user.date_joined
    response = client.post(
        f"/admin/auth/user/{user.pk}/change/",
        {
            "username": user.username,
            "date_joined_0": joined.strftime("%Y-%m-%d"),
            "date_joined_1": joined.strftime("%H:%M:%S"),
            # is_active left out: the checkbox is cleared.
        },
    )
    assert response.status_code == 302, response.content[:2000]
    client.logout()


def _set_password(user: Any, client: Client) -> None:
    user.set_password("A brand new passphrase")
    user.save()


def _assign_and_save(user: Any, client: Client) -> None:
    user.is_active = False
    user.save()


def _update_fields(user: Any, client: Client) -> None:
    user.is_active = False
    user.save(update_fields=["is_active"])


def _password_update_fields(user: Any, client: Client) -> None:
    user.set_password("Another new passphrase")
    user.save(update_fields=["password"])


def _admin(user: Any, client: Client) -> None:
    deactivate_in_admin(client, user)


def _delete(user: Any, client: Client) -> None:
    user.delete()


def _queryset_delete(user: Any, client: Client) -> None:
    User.objects.filter(pk=user.pk).delete()


ENDING_CHANGES = {
    "set_password": _set_password,
    "is_active=False + save": _assign_and_save,
    "update_fields is_active": _update_fields,
    "update_fields password": _password_update_fields,
    "admin": _admin,
    "delete": _delete,
    "queryset delete": _queryset_delete,
}


@pytest.mark.parametrize("change", list(ENDING_CHANGES), ids=list(ENDING_CHANGES))
def test_changes_through_save_or_delete_end_the_token_and_its_snapshot(
    snapshot_backend: str, client: Client, user_factory: Any, login: Any, change: str
) -> None:
    user = user_factory(username="victim")
    issued = login(user)
    assert get(client, "/protected/", issued.access_token).status_code == 200
    ENDING_CHANGES[change](user, client)
    # The token is revoked or deleted by the receivers: nothing answers from it any more.
    assert get(client, "/snap/", issued.access_token).status_code == 401
    assert get(client, "/protected/", issued.access_token).status_code == 401


@pytest.mark.parametrize("update_fields", [None, ["first_name"]], ids=["save", "update_fields"])
def test_other_changes_keep_the_snapshot_and_are_read_fresh(
    snapshot_backend: str,
    client: Client,
    user_factory: Any,
    login: Any,
    update_fields: list[str] | None,
    django_assert_num_queries: Any,
) -> None:
    user = user_factory(username="kim", first_name="Kim")
    issued = login(user)
    user.first_name = "Kimberly"
    user.save(update_fields=update_fields)
    with django_assert_num_queries(0):
        assert body(get(client, "/snap/", issued.access_token))["authenticated"] is True
    # What the snapshot does not hold is loaded per request: the new name at once.
    assert body(get(client, "/profile/", issued.access_token))["first_name"] == "Kimberly"


def test_reactivation_serves_new_tokens_as_active(
    snapshot_backend: str, client: Client, user_factory: Any, login: Any
) -> None:
    user = user_factory(username="back")
    old = login(user)
    user.is_active = False
    user.save()
    user.is_active = True
    user.save()
    assert get(client, "/snap/", old.access_token).status_code == 401  # revoked when deactivated
    new = login(user)
    assert body(get(client, "/snap/", new.access_token))["active"] is True


def test_queryset_update_bypasses_the_receivers_until_the_token_ends(
    snapshot_backend: str, client: Client, user_factory: Any, login: Any
) -> None:
    """The documented bound: QuerySet.update() sends no signal, so the token stays live and the
    snapshot's answers are the token's until it is revoked or expires; everything else is read
    fresh, and the lazy load sees the user is inactive."""
    user = user_factory(username="bulk")
    issued = login(user)
    User.objects.filter(pk=user.pk).update(is_active=False)
    snap = body(get(client, "/snap/", issued.access_token))
    assert (snap["authenticated"], snap["active"]) == (True, True)  # stale, as documented
    assert body(get(client, "/profile/", issued.access_token)) == {
        "authenticated": False,
        "username": None,
        "first_name": None,
    }
    # The remedy docs/middleware.md gives after a bulk update: end the user's tokens.
    AuthFramework().revoke_user_tokens(user)
    assert get(client, "/snap/", issued.access_token).status_code == 401


def test_the_snapshot_is_not_used_where_the_user_comes_with_the_token(
    settings: Any, user_factory: Any, login: Any, django_assert_num_queries: Any
) -> None:
    """On the database storage the user is read with the token: a real user, no proxy."""
    settings.AUTHFW = {**settings.AUTHFW, "USER_SNAPSHOT": True}
    issued = login(user_factory())
    request = RequestFactory().get("/", **bearer(issued.access_token))
    seen: list[Any] = []

    def view(request: HttpRequest) -> JsonResponse:
        seen.append(request.user)
        return JsonResponse({})

    with django_assert_num_queries(1):
        BearerTokenMiddleware(view)(request)
    assert type(seen[0]) is User
