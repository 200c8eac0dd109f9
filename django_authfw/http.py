"""JSON responses, the error vocabulary and request-body parsing of the HTTP endpoints.

Every error body has the RFC 6749 section 5.2 shape, ``{"error": code, "error_description":
text}``, with one of the stable codes below; the text is for people and may change, the code is
for programs and does not. Every response carries ``Cache-Control: no-store`` and ``Pragma:
no-cache`` (RFC 6749 section 5.1): they hold tokens or a user's own data.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from typing import Any

from django.core.exceptions import SuspiciousOperation
from django.http import HttpRequest, JsonResponse, QueryDict
from django.http.multipartparser import MultiPartParserError
from django.views.decorators.debug import sensitive_variables

# Stable error codes (the ``error`` member of every error body).
INVALID_REQUEST = "invalid_request"  # 400: missing, repeated or malformed parameters
INVALID_GRANT = "invalid_grant"  # 400: wrong credentials, or a bad refresh token
UNSUPPORTED_GRANT_TYPE = "unsupported_grant_type"  # 400: grant_type this endpoint does not do
INVALID_TOKEN = "invalid_token"  # 401: the Bearer token is unknown, expired or revoked
NOT_AUTHENTICATED = "not_authenticated"  # 401: the endpoint needs a Bearer token; none sent
FORBIDDEN = "forbidden"  # 403: authenticated, but not allowed
NOT_FOUND = "not_found"  # 404
METHOD_NOT_ALLOWED = "method_not_allowed"  # 405, with Allow
USER_EXISTS = "user_exists"  # 409: register with a taken username
REQUEST_TOO_LARGE = "request_too_large"  # 413
UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"  # 415
TOO_MANY_ATTEMPTS = "too_many_attempts"  # 429, with Retry-After: lockout
SERVER_ERROR = "server_error"  # 500: the storage failed
TEMPORARILY_UNAVAILABLE = "temporarily_unavailable"  # 503, with Retry-After: storage down

# The endpoints take a few short strings; 16 KB is far more than any valid request needs and
# refuses big bodies before they are read.
MAX_BODY_BYTES = 16 * 1024
MAX_FIELDS = 20


def no_store(response: JsonResponse) -> JsonResponse:
    """Mark a response as never cacheable (RFC 6749 section 5.1)."""
    response["Cache-Control"] = "no-store"
    response["Pragma"] = "no-cache"
    return response


def json_response(
    data: Mapping[str, Any] | list[Any],
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> JsonResponse:
    """A JSON response with the no-store headers every endpoint sends."""
    response = JsonResponse(data, status=status, safe=False, headers=dict(headers or {}))
    return no_store(response)


def error_response(
    status: int,
    error: str,
    description: str,
    headers: Mapping[str, str] | None = None,
) -> JsonResponse:
    """An error in the RFC 6749 section 5.2 shape."""
    return json_response(
        {"error": error, "error_description": description}, status=status, headers=headers
    )


class APIError(Exception):
    """Raised inside an endpoint to answer with an error body; see :func:`error_response`."""

    def __init__(
        self,
        status: int,
        error: str,
        description: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description
        self.headers = dict(headers or {})

    def response(self) -> JsonResponse:
        return error_response(self.status, self.error, self.description, self.headers)


def bad_request(description: str) -> APIError:
    return APIError(400, INVALID_REQUEST, description)


def _content_length(request: HttpRequest) -> int | None:
    raw = request.META.get("CONTENT_LENGTH") or ""
    if not raw:
        return None
    try:
        length = int(raw)
    except ValueError:
        raise bad_request("The Content-Length header is not a number.") from None
    if length < 0:
        raise bad_request("The Content-Length header is negative.")
    return length


def _read_limited(request: HttpRequest, max_bytes: int) -> bytes:
    length = _content_length(request)
    if length is not None and length > max_bytes:
        raise APIError(
            413, REQUEST_TOO_LARGE, f"The request body is larger than {max_bytes} bytes."
        )
    # Read one byte more than allowed: a body sent without Content-Length cannot sneak past.
    body = request.read(max_bytes + 1)
    if len(body) > max_bytes:
        raise APIError(
            413, REQUEST_TOO_LARGE, f"The request body is larger than {max_bytes} bytes."
        )
    return body


def _single_values(items: list[tuple[str, list[Any]]]) -> dict[str, str]:
    if len(items) > MAX_FIELDS:
        raise bad_request(f"The request has more than {MAX_FIELDS} parameters.")
    fields: dict[str, str] = {}
    for name, values in items:
        # RFC 6749 section 3.2: parameters must not be sent more than once.
        if len(values) != 1:
            raise bad_request(f"The parameter {name!r} is sent more than once.")
        fields[name] = values[0]
    return fields


class _RepeatedMember(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads keeps the last of repeated members; a proxy or a log that reads the first one
    # would see another request than the endpoint acts on (RFC 8259 section 4: names SHOULD be
    # unique). Refused like a repeated form field, at every depth.
    data: dict[str, Any] = {}
    for name, value in pairs:
        if name in data:
            raise _RepeatedMember(name)
        data[name] = value
    return data


def _parse_json(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body, object_pairs_hook=_unique_members)
    except _RepeatedMember as exc:
        raise bad_request(f"The parameter {exc.name[:64]!r} is sent more than once.") from None
    except (UnicodeDecodeError, ValueError):
        raise bad_request("The request body is not valid JSON.") from None
    except RecursionError:
        # Python 3.11/3.12's json gives up at about 1,000 levels, well within 16 KB; the
        # endpoints take flat objects, so any deep nesting is refused as malformed.
        raise bad_request("The JSON request body is nested too deeply.") from None
    if not isinstance(data, dict):
        raise bad_request("The JSON request body must be an object.")
    if len(data) > MAX_FIELDS:
        raise bad_request(f"The request has more than {MAX_FIELDS} parameters.")
    return data


def _parse_form(request: HttpRequest, body: bytes) -> dict[str, str]:
    encoding = request.encoding or "utf-8"
    try:
        text = body.decode(encoding)
        form = QueryDict(text, encoding=encoding)
    # UnicodeError, not only UnicodeDecodeError: codecs such as idna raise the base class.
    # LookupError: a charset Python does not know. SuspiciousOperation: Django's own limits
    # (TooManyFieldsSent at DATA_UPLOAD_MAX_NUMBER_FIELDS), which would otherwise be its HTML 400.
    except (UnicodeError, LookupError):
        raise bad_request(f"The form body cannot be decoded as {encoding!r}.") from None
    except SuspiciousOperation:
        raise bad_request(f"The request has more than {MAX_FIELDS} parameters.") from None
    return _single_values(list(form.lists()))


def _parse_multipart(request: HttpRequest, body: bytes) -> dict[str, str]:
    try:
        fields, files = request.parse_file_upload(request.META, io.BytesIO(body))
    # The parser decodes field names and values with the charset the client names, so a codec
    # like idna raises UnicodeError; too many fields or files is a SuspiciousOperation.
    except (MultiPartParserError, SuspiciousOperation, UnicodeError, LookupError):
        raise bad_request("The multipart body is malformed.") from None
    if files:
        raise bad_request("The endpoints take no file uploads.")
    return _single_values(list(fields.lists()))


# The body holds passwords and tokens: an error report must not show it (nor anything parsed).
@sensitive_variables()
def parse_body(request: HttpRequest, max_bytes: int = MAX_BODY_BYTES) -> dict[str, Any]:
    """Return the request's parameters from a JSON object or form fields.

    JSON (``application/json``) must be an object without repeated member names; its values are
    returned as they are and the endpoint checks their types. Form bodies
    (``application/x-www-form-urlencoded`` or ``multipart/form-data``) give strings. An empty
    body gives ``{}``. Raises :class:`APIError` for a body over ``max_bytes`` (413), another
    media type (415) and anything malformed (400): bad JSON, JSON nested too deeply, repeated
    members, an undecodable charset, too many fields. No body, however hostile, raises anything
    else.
    """
    content_type = request.META.get("CONTENT_TYPE", "").split(";", 1)[0].strip().lower()
    body = _read_limited(request, max_bytes)
    if not body:
        return {}
    if content_type == "application/json" or content_type.endswith("+json"):
        return _parse_json(body)
    if content_type == "application/x-www-form-urlencoded":
        return _parse_form(request, body)
    if content_type == "multipart/form-data":
        return _parse_multipart(request, body)
    raise APIError(
        415,
        UNSUPPORTED_MEDIA_TYPE,
        "Send the parameters as application/json or as form fields.",
    )


@sensitive_variables("params", "value")
def string_param(params: Mapping[str, Any], name: str, *, required: bool = True) -> str | None:
    """Return ``params[name]`` as a non-empty string, or raise a 400 that names the problem.

    A string that is not valid Unicode text (a lone surrogate such as ``"\\ud800"``, which JSON
    escapes can carry) is refused here: it cannot be encoded for hashing or for the database.
    """
    value = params.get(name)
    if value is None or value == "":
        if required:
            raise bad_request(f"The parameter {name!r} is required.")
        return None
    if not isinstance(value, str):
        raise bad_request(f"The parameter {name!r} must be a string.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise bad_request(f"The parameter {name!r} is not valid Unicode text.") from None
    return value
