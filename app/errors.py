"""Domain errors raised by services, mapped to HTTP by one handler in `app.exception_handlers`.

Services never import FastAPI: they raise these, and `exception_handlers.install`'s
`domain_error` turns each into the status code of docs/api.md and its error body.
"""


class DomainError(Exception):
    status_code = 400
    default_detail = "Bad request"

    def __init__(self, detail: str | None = None, *, headers: dict[str, str] | None = None):
        self.detail = detail or self.default_detail
        self.headers = headers
        super().__init__(self.detail)


class Invalid(DomainError):
    status_code = 400
    default_detail = "Invalid request"


class Unauthorized(DomainError):
    status_code = 401
    default_detail = "Could not validate credentials"

    def __init__(self, detail: str | None = None):
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(DomainError):
    status_code = 403
    default_detail = "Operation not permitted"


class NotFound(DomainError):
    status_code = 404
    default_detail = "Not found"


class Conflict(DomainError):
    status_code = 409
    default_detail = "Conflict"


class PayloadTooLarge(DomainError):
    status_code = 413
    default_detail = "Payload too large"


class UnsupportedMediaType(DomainError):
    status_code = 415
    default_detail = "Unsupported media type"


class UnprocessableInput(DomainError):
    """A domain rule on a field that validation alone cannot see (still a 422)."""

    status_code = 422
    default_detail = "Unprocessable input"


class RateLimited(DomainError):
    status_code = 429
    default_detail = "Too many requests"

    def __init__(self, retry_after_seconds: int):
        super().__init__(
            "Too many requests; try again later",
            headers={"Retry-After": str(max(1, retry_after_seconds))},
        )


class ServiceUnavailable(DomainError):
    status_code = 503
    default_detail = "Service temporarily unavailable"


class InsufficientStorage(DomainError):
    status_code = 507
    default_detail = "Storage is full; the upload was not kept"
