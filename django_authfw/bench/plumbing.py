"""The per-request plumbing around verification, timed once per run (no storage involved).

* the ``Authorization`` header parsed by :func:`~django_authfw.bearer.parse_bearer` beside the
  header split of DRF's ``TokenAuthentication`` (``get_authorization_header(request).split()``,
  the keyword compared, the token decoded), which checks far less;
* the :class:`~django_authfw.AuthFramework` the middleware and the DRF class get for an alias
  (:func:`~django_authfw.middleware.get_framework`, one per alias) beside building one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.test import RequestFactory

from ..bearer import parse_bearer
from ..framework import AuthFramework
from ..middleware import get_framework
from ..tokens import ACCESS_PREFIX, new_secret
from .runner import measure


def _without_drf(request: Any) -> bytes:
    # DRF's get_authorization_header, for a run without DRF installed.
    auth: Any = request.headers.get("authorization", b"")
    return auth.encode("iso-8859-1") if isinstance(auth, str) else auth


def _drf_split() -> Callable[[Any], Any]:
    get_header: Callable[[Any], bytes] = _without_drf
    try:
        from rest_framework.authentication import get_authorization_header
    except ImportError:
        pass
    else:
        get_header = get_authorization_header

    def split(request: Any) -> Any:
        auth = get_header(request).split()
        if not auth or auth[0].lower() != b"bearer" or len(auth) != 2:
            return None
        return auth[1].decode()

    return split


def measure_plumbing(alias: str, seconds: float) -> dict[str, Any]:
    """Nanoseconds per call of each piece, and the ratios the targets name."""
    header = f"Bearer {new_secret(ACCESS_PREFIX)}"
    request = RequestFactory().get("/", HTTP_AUTHORIZATION=header)
    request.headers.get("authorization")  # request.headers is built once, on first use
    split = _drf_split()
    get_framework(alias)  # built once, as the first request does
    pieces: dict[str, Callable[[], object]] = {
        "parse_bearer": lambda: parse_bearer(header),
        "drf_header_split": lambda: split(request),
        "get_framework": lambda: get_framework(alias),
        "new_framework": lambda: AuthFramework(alias),
    }
    result: dict[str, Any] = {}
    for name, piece in pieces.items():
        figures = measure(piece, seconds)
        result[f"{name}_ns"] = round(1e9 / figures.ops_per_sec, 1) if figures.ops_per_sec else None
    parse, drf = result["parse_bearer_ns"], result["drf_header_split_ns"]
    result["parse_to_drf"] = round(parse / drf, 2) if parse and drf else None
    return result
