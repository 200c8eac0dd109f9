"""AuthFramework is one facade: every public method has an ``a``-prefixed async twin with the
same signature, and both are documented. The framework's audit events are built by typed
functions of audit.py."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest

from django_authfw import audit
from django_authfw.framework import AuthFramework


def _public_methods() -> dict[str, Callable[..., Any]]:
    return {
        name: member
        for name, member in inspect.getmembers(AuthFramework, inspect.isfunction)
        if not name.startswith("_")
    }


def _sync_names() -> list[str]:
    """Public methods that are not themselves a twin (``aaudit`` is the twin of ``audit``)."""
    public = _public_methods()
    return sorted(name for name in public if not (name.startswith("a") and name[1:] in public))


def _shape(function: Callable[..., Any]) -> list[tuple[str, str, str, str]]:
    # Annotations are strings (from __future__ import annotations); compared as written.
    return [
        (p.name, p.kind.name, repr(p.default), str(p.annotation))
        for p in inspect.signature(function).parameters.values()
    ]


def test_the_facade_is_what_the_twin_checks_cover() -> None:
    # A broken discovery (no methods found) would make every check below pass vacuously.
    names = _sync_names()
    assert {"authenticate", "refresh", "revoke_token", "audit", "create_session"} <= set(names)
    assert len(names) >= 20


@pytest.mark.parametrize("name", _sync_names())
def test_every_public_method_has_an_async_twin_with_the_same_signature(name: str) -> None:
    public = _public_methods()
    twin = "a" + name
    assert twin in public, f"AuthFramework.{name} has no async twin {twin}"
    sync, async_ = public[name], public[twin]
    assert not inspect.iscoroutinefunction(sync), f"{name} is a coroutine function"
    assert inspect.iscoroutinefunction(async_), f"{twin} is not a coroutine function"
    assert _shape(async_) == _shape(sync)
    assert inspect.signature(async_).return_annotation == inspect.signature(sync).return_annotation


@pytest.mark.parametrize("name", _sync_names())
def test_every_public_method_and_its_twin_are_documented(name: str) -> None:
    public = _public_methods()
    sync_doc = inspect.getdoc(public[name]) or ""
    twin_doc = inspect.getdoc(public["a" + name]) or ""
    assert sync_doc.strip(), f"AuthFramework.{name} has no docstring"
    assert f":meth:`{name}`" in twin_doc, f"a{name}'s docstring does not name {name}"


def test_every_audit_event_builder_is_typed_and_documented() -> None:
    builders = {
        name: function
        for name, function in inspect.getmembers(audit, inspect.isfunction)
        if name.endswith("_event") and function.__module__ == audit.__name__
    }
    assert {"login_failure_event", "grant_event", "reuse_event", "revoke_event"} <= set(builders)
    for name, function in builders.items():
        assert inspect.signature(function).return_annotation == "AuditEvent", name
        assert inspect.getdoc(function), name
