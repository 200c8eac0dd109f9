"""Lockout subjects and bookkeeping (issue 10, items 6 and 13), on every backend.

- Login normalises usernames as registration does (NFKC), before the lookup and before the
  lockout keys; ``::ffff:``-mapped IPv4 addresses are IPv4; IPv6 is counted per /64.
- ``LOCKOUT_IP_THRESHOLD`` is the address's own limit; a success takes back the failures of its
  own (username, address) pair and no others; lockout and refused-while-locked events carry the
  user id; while locked, at most one refused attempt per subject and minute is audited.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.test import RequestFactory

from django_authfw import AuthFramework
from django_authfw.conf import DEFAULTS, conf
from django_authfw.exceptions import AccountLocked, InvalidCredentials
from django_authfw.request_info import RequestInfo
from django_authfw.storage import AuthStorage

from .framework_support import PASSWORD, auth_fixture, counting_hasher_fixture

__all__ = ["auth_fixture", "counting_hasher_fixture"]

# Two spellings that NFKC folds to "fiona": fullwidth letters, and the "fi" ligature U+FB01.
FULLWIDTH = "\uff46\uff49\uff4f\uff4e\uff41"
LIGATURE = "\ufb01ona"
OFFICE = RequestInfo(ip_address="203.0.113.9")
ELSEWHERE = RequestInfo(ip_address="198.51.100.20")


@pytest.fixture
def thresholds(settings: Any) -> None:
    settings.AUTHFW = {
        **settings.AUTHFW,
        "LOCKOUT_THRESHOLD": 3,
        "LOCKOUT_IP_THRESHOLD": 3,
        "LOCKOUT_WINDOW": timedelta(days=3650),  # one window for the whole test
    }


def fail(auth: AuthFramework, username: str, info: RequestInfo | None = None) -> None:
    with pytest.raises(InvalidCredentials):
        auth.authenticate(username, "wrong", request_info=info)


# Item 6: one username, one address, one counter -------------------------------------------------


@pytest.mark.usefixtures("thresholds")
def test_login_normalises_the_username_as_registration_does(auth: AuthFramework) -> None:
    user = auth.register_user(LIGATURE, PASSWORD)
    assert user.get_username() == "fiona"  # create_user applied NFKC
    assert auth.authenticate(LIGATURE, PASSWORD).user_id == str(user.pk)
    assert auth.authenticate(FULLWIDTH, PASSWORD).user_id == str(user.pk)


@pytest.mark.usefixtures("thresholds")
def test_every_nfkc_form_of_a_username_shares_one_counter(auth: AuthFramework) -> None:
    auth.register_user("fiona", PASSWORD)
    fail(auth, LIGATURE)
    fail(auth, FULLWIDTH)
    fail(auth, "fiona")
    with pytest.raises(AccountLocked):
        auth.authenticate("fiona", PASSWORD)
    assert auth.lockout_remaining(LIGATURE, None) > 0
    assert auth.reset_lockout(username=FULLWIDTH) >= 1
    assert auth.authenticate(LIGATURE, PASSWORD)


def test_ipv4_mapped_addresses_are_ipv4() -> None:
    assert RequestInfo(ip_address="::ffff:203.0.113.9").ip_address == "203.0.113.9"
    assert RequestInfo(ip_address="::FFFF:cb00:7109").ip_address == "203.0.113.9"
    request = RequestFactory().get("/", REMOTE_ADDR="::ffff:203.0.113.9")
    assert RequestInfo.from_request(request).ip_address == "203.0.113.9"
    assert RequestInfo(ip_address="2001:db8::1").ip_address == "2001:db8::1"  # untouched


@pytest.mark.usefixtures("thresholds")
def test_a_mapped_address_and_its_ipv4_share_one_counter(
    auth: AuthFramework, storage: AuthStorage
) -> None:
    mapped = RequestInfo(ip_address="::ffff:203.0.113.9")
    fail(auth, "ann", mapped)
    fail(auth, "bob", mapped)
    fail(auth, "cyd", OFFICE)
    assert auth.lockout_remaining(None, "203.0.113.9") > 0
    assert auth.lockout_remaining(None, "::ffff:203.0.113.9") > 0
    assert {e.ip_address for e in storage.query_audit(action="login")} == {"203.0.113.9"}


@pytest.mark.usefixtures("thresholds")
def test_ipv6_is_counted_per_64(auth: AuthFramework, storage: AuthStorage) -> None:
    auth.register_user("alice", PASSWORD)
    for n, interface in enumerate(("::1", "::2", ":abcd:1234:5678:9abc")):
        fail(auth, f"ghost{n}", RequestInfo(ip_address=f"2001:db8:1:2{interface}"))
    with pytest.raises(AccountLocked):  # any address of the /64
        auth.authenticate(
            "alice", PASSWORD, request_info=RequestInfo(ip_address="2001:db8:1:2:ffff::9")
        )
    assert auth.authenticate(
        "alice", PASSWORD, request_info=RequestInfo(ip_address="2001:db8:1:3::1")
    )
    # The audit log keeps each full address.
    assert "2001:db8:1:2::2" in {e.ip_address for e in storage.query_audit(action="login")}
    # Unlocking any address of the network unlocks the network.
    assert auth.reset_lockout(ip_address="2001:db8:1:2::99") >= 1
    assert auth.authenticate(
        "alice", PASSWORD, request_info=RequestInfo(ip_address="2001:db8:1:2::1")
    )


@pytest.mark.usefixtures("thresholds")
def test_ipv4_clients_translated_by_nat64_are_counted_per_ipv4_address(
    auth: AuthFramework,
) -> None:
    """An IPv6-only server behind a stateless translator (SIIT-DC, RFC 7755) sees each IPv4
    client as 64:ff9b::<IPv4> (RFC 6052): one /64 for the whole IPv4 internet, so one
    attacker's failures must not lock every IPv4 client out."""
    auth.register_user("alice", PASSWORD)
    attacker = RequestInfo(ip_address="64:ff9b::198.51.100.66")
    for n in range(3):
        fail(auth, f"ghost{n}", attacker)
    assert auth.lockout_remaining(None, "64:ff9b::c633:6442") > 0  # the attacker's address
    assert auth.authenticate(
        "alice", PASSWORD, request_info=RequestInfo(ip_address="64:ff9b::203.0.113.9")
    )


# Item 13: an office is not one attacker -----------------------------------------------------


def test_ip_threshold_has_its_own_default() -> None:
    assert DEFAULTS["LOCKOUT_IP_THRESHOLD"] == 50
    assert conf.LOCKOUT_IP_THRESHOLD == 50
    assert conf.LOCKOUT_THRESHOLD == 5


def test_ip_threshold_is_separate_from_the_username_threshold(
    auth: AuthFramework, settings: Any
) -> None:
    settings.AUTHFW = {**settings.AUTHFW, "LOCKOUT_THRESHOLD": 3, "LOCKOUT_IP_THRESHOLD": 6}
    auth.register_user("alice", PASSWORD)
    for n in range(5):  # five colleagues mistype once each
        fail(auth, f"colleague{n}", OFFICE)
    assert auth.lockout_remaining(None, OFFICE.ip_address) == 0
    assert auth.authenticate("alice", PASSWORD, request_info=OFFICE)
    fail(auth, "colleague5", OFFICE)  # the sixth failure locks the address
    with pytest.raises(AccountLocked):
        auth.authenticate("alice", PASSWORD, request_info=OFFICE)
    assert auth.authenticate("alice", PASSWORD, request_info=ELSEWHERE)


@pytest.mark.usefixtures("thresholds")
def test_a_success_clears_its_own_pairs_failures(auth: AuthFramework) -> None:
    auth.register_user("alice", PASSWORD)
    auth.register_user("bob", PASSWORD)
    for _ in range(3):  # mistype twice, then get in: nothing stays against alice or the office
        fail(auth, "alice", OFFICE)
        fail(auth, "alice", OFFICE)
        assert auth.authenticate("alice", PASSWORD, request_info=OFFICE)
    fail(auth, "bob", OFFICE)
    fail(auth, "bob", OFFICE)
    assert auth.authenticate("bob", PASSWORD, request_info=OFFICE)
    assert auth.lockout_remaining("alice", OFFICE.ip_address) == 0


@pytest.mark.usefixtures("thresholds")
def test_a_success_keeps_other_pairs_failures(auth: AuthFramework) -> None:
    auth.register_user("alice", PASSWORD)
    auth.register_user("mallory", PASSWORD)
    # An attacker's failures against alice from elsewhere survive alice's own login.
    fail(auth, "alice", ELSEWHERE)
    fail(auth, "alice", ELSEWHERE)
    assert auth.authenticate("alice", PASSWORD, request_info=OFFICE)
    fail(auth, "alice", ELSEWHERE)
    with pytest.raises(AccountLocked):
        auth.authenticate("alice", PASSWORD, request_info=OFFICE)
    # A valid account does not wipe an address's failures against other accounts.
    attacker = RequestInfo(ip_address="192.0.2.66")
    fail(auth, "victim1", attacker)
    fail(auth, "victim2", attacker)
    assert auth.authenticate("mallory", PASSWORD, request_info=attacker)
    fail(auth, "victim3", attacker)
    with pytest.raises(AccountLocked):
        auth.authenticate("mallory", PASSWORD, request_info=attacker)


@pytest.mark.usefixtures("thresholds")
def test_lockout_and_refusal_events_carry_the_user_id(
    auth: AuthFramework, storage: AuthStorage
) -> None:
    user_id = str(auth.register_user("alice", PASSWORD).pk)
    for _ in range(3):
        fail(auth, "alice", OFFICE)
    with pytest.raises(AccountLocked):
        auth.authenticate("alice", PASSWORD, request_info=ELSEWHERE)
    # The admin's search by username filters on the user id: these events must carry it.
    locks = storage.query_audit(action="lockout", user_id=user_id)
    assert sorted(e.metadata["scope"] for e in locks) == ["ip", "user"]
    refused = storage.query_audit(action="login", user_id=user_id, limit=1)[0]
    assert (refused.metadata["reason"], refused.metadata["scope"]) == ("locked", "user")
    # An unknown username has no id to carry.
    for _ in range(3):
        fail(auth, "nobody", ELSEWHERE)
    assert storage.query_audit(action="lockout", limit=1)[0].user_id is None


@pytest.mark.usefixtures("thresholds")
def test_refusals_while_locked_are_audited_once_a_minute_per_subject(
    auth: AuthFramework, storage: AuthStorage, counting_hasher: Any
) -> None:
    auth.register_user("alice", PASSWORD)
    for _ in range(3):
        fail(auth, "alice")
    counting_hasher.reset()
    for _ in range(20):
        with pytest.raises(AccountLocked):
            auth.authenticate("alice", PASSWORD)
    assert counting_hasher.calls == 0
    failures = storage.query_audit(action="login", outcome=False, limit=100)
    assert sorted(e.metadata["reason"] for e in failures) == ["locked"] + ["wrong_password"] * 3
    # Another locked subject (an address) gets its own event.
    for n in range(3):
        fail(auth, f"ghost{n}", OFFICE)
    for n in range(10):
        with pytest.raises(AccountLocked):
            auth.authenticate(f"other{n}", PASSWORD, request_info=OFFICE)
    assert storage.count_audit(action="login", outcome=False) == 4 + 3 + 1
    # Lifting the lock also forgets the minute: the next lock's refusals are audited again.
    auth.reset_lockout(username="alice")
    for _ in range(3):
        fail(auth, "alice")
    with pytest.raises(AccountLocked):
        auth.authenticate("alice", PASSWORD)
    assert storage.count_audit(action="login", outcome=False) == 8 + 3 + 1


@pytest.mark.usefixtures("thresholds")
def test_async_login_normalises_and_counts_alike(auth: AuthFramework, storage: AuthStorage) -> None:
    user_id = str(auth.register_user("fiona", PASSWORD).pk)

    async def scenario() -> None:
        assert (await auth.aauthenticate(LIGATURE, PASSWORD, request_info=OFFICE)).user_id
        for name in (LIGATURE, FULLWIDTH):
            with pytest.raises(InvalidCredentials):
                await auth.aauthenticate(name, "wrong", request_info=OFFICE)
        # Its own pair's failures are taken back by the success...
        assert await auth.aauthenticate("fiona", PASSWORD, request_info=OFFICE)
        for _ in range(2):
            with pytest.raises(InvalidCredentials):
                await auth.aauthenticate("fiona", "wrong", request_info=ELSEWHERE)
        assert await auth.aauthenticate("fiona", PASSWORD, request_info=OFFICE)
        # ...another pair's are not.
        with pytest.raises(InvalidCredentials):
            await auth.aauthenticate("fiona", "wrong", request_info=ELSEWHERE)
        for _ in range(3):
            with pytest.raises(AccountLocked):
                await auth.aauthenticate("fiona", PASSWORD, request_info=OFFICE)

    async_to_sync(scenario)()
    # The user and the address ELSEWHERE locked together: both events name the user.
    locks = storage.query_audit(action="lockout")
    assert sorted((e.metadata["scope"], e.user_id) for e in locks) == [
        ("ip", user_id),
        ("user", user_id),
    ]
    refusals = [
        e
        for e in storage.query_audit(action="login", outcome=False)
        if e.metadata["reason"] == "locked"
    ]
    assert [e.user_id for e in refusals] == [user_id]
