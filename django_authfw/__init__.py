"""django_authfw: bearer tokens hashed at rest, sessions, a TTL key-value store and an audit log.

``from django_authfw import AuthFramework`` is the entry point; see README.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["AuthFramework", "__version__"]

if TYPE_CHECKING:
    from .framework import AuthFramework


def __getattr__(name: str) -> Any:
    # Lazy, so that listing the app in INSTALLED_APPS does not import the framework (and with it
    # the auth models) before the app registry is ready.
    if name == "AuthFramework":
        from .framework import AuthFramework

        return AuthFramework
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
