"""Domain errors raised by services, mapped to HTTP by one handler in `app.exception_handlers`.

Services never import FastAPI: they raise these, and `exception_handlers.install`'s
`domain_error` turns each into the status code of docs/api.md and its error body.
Every error body, whichever layer answers, is built by `error_body` (and a 422's by
`validation_body`), so there is one shape: `{detail, code, request_id, ...}`.
"""

from collections.abc import Mapping, Sequence
from typing import Any

from app.log import request_id_var

# Codes that sharpen a status's default code (docs/api.md, "Errors", lists every code).
VALIDATION_FAILED = "validation_failed"
INVALID_CREDENTIALS = "invalid_credentials"  # 401 at login: sign in again, differently
TOKEN_EXPIRED = "token_expired"  # 401: refresh, then retry
TOKEN_REVOKED = "token_revoked"  # 401: the login ended; sign in again
INVITE_INVALID = "invite_invalid"  # 400: used, expired, revoked, or not for this email/role
LINK_INVALID = "link_invalid"  # 403: a signed storage URL changed or expired
LAST_ADULT = "last_adult"  # 409
MEDIA_NOT_READY = "media_not_ready"  # 409: processing has not produced it yet
QUOTA_EXCEEDED = "quota_exceeded"  # 413: the family's storage quota
DATABASE_BUSY = "database_busy"  # 503: no database connection came free in time


def error_body(detail: str, code: str, extra: Mapping[str, object] | None = None) -> dict[str, Any]:
    """The one error shape (docs/api.md, "Errors"); `extra` never overrides the three fields."""
    return {**(extra or {}), "detail": detail, "code": code, "request_id": request_id_var.get()}


def validation_body(errors: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A 422: one sentence about the first problem, and every problem in `errors`."""
    items = [{"loc": list(e["loc"]), "msg": str(e["msg"]), "type": str(e["type"])} for e in errors]
    detail = "The request is not valid"
    if items:
        detail = f"Invalid {_where(items[0]['loc'])}: {items[0]['msg']}"
        if len(items) > 1:
            detail += f" (and {len(items) - 1} more in `errors`)"
    return {**error_body(detail, VALIDATION_FAILED), "errors": items}


def _where(loc: Sequence[object]) -> str:
    """`["body", "tags", 3]` → "tags.3"; `["query", "limit"]` → "query parameter limit"."""
    kind, *rest = [str(part) for part in loc] or ["request"]
    field = ".".join(rest)
    if not field:
        return kind  # the whole body, say: "Invalid body: JSON decode error"
    if kind == "body":
        return field
    if kind in ("query", "path"):
        return f"{kind} parameter {field}"
    return f"{kind} {field}"


class DomainError(Exception):
    """A rule said no. `code` is the stable, documented name a client branches on
    (docs/api.md, "Errors"); `extra` adds named fields to the body (e.g. `media_id`)."""

    status_code = 400
    default_detail = "Bad request"
    default_code = "bad_request"

    def __init__(
        self,
        detail: str | None = None,
        *,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, str] | None = None,
    ):
        self.detail = detail or self.default_detail
        self.code = code or self.default_code
        self.headers = headers
        self.extra = extra or {}
        super().__init__(self.detail)


class Invalid(DomainError):
    status_code = 400
    default_detail = "Invalid request"
    default_code = "bad_request"


class Unauthorized(DomainError):
    status_code = 401
    default_detail = "Could not validate credentials"
    default_code = "not_authenticated"

    def __init__(self, detail: str | None = None, *, code: str | None = None):
        super().__init__(detail, code=code, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(DomainError):
    status_code = 403
    default_detail = "Operation not permitted"
    default_code = "forbidden"


class NotFound(DomainError):
    status_code = 404
    default_detail = "Not found"
    default_code = "not_found"


class Conflict(DomainError):
    status_code = 409
    default_detail = "Conflict"
    default_code = "conflict"


class PayloadTooLarge(DomainError):
    status_code = 413
    default_detail = "Payload too large"
    default_code = "payload_too_large"


class UnsupportedMediaType(DomainError):
    status_code = 415
    default_detail = "Unsupported media type"
    default_code = "unsupported_media_type"


class UnprocessableInput(DomainError):
    """A domain rule on a field that validation alone cannot see (still a 422, so it carries
    `errors` like any validation failure: `loc` names the field)."""

    status_code = 422
    default_detail = "Unprocessable input"
    default_code = VALIDATION_FAILED

    def __init__(self, detail: str | None = None, *, loc: Sequence[str] = ("body",)):
        super().__init__(detail)
        self.errors = [{"loc": list(loc), "msg": self.detail, "type": "value_error"}]


class RateLimited(DomainError):
    status_code = 429
    default_detail = "Too many requests"
    default_code = "rate_limited"

    def __init__(self, retry_after_seconds: int):
        super().__init__(
            "Too many requests; try again later",
            headers={"Retry-After": str(max(1, retry_after_seconds))},
        )


class ServiceUnavailable(DomainError):
    status_code = 503
    default_detail = "Service temporarily unavailable"
    default_code = "service_unavailable"


class InsufficientStorage(DomainError):
    status_code = 507
    default_detail = "Storage is full; the upload was not kept"
    default_code = "storage_full"
