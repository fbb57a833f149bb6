"""How errors become responses: domain errors, validation, database outages (503), storage
full (507), and row level security refusals (404). Installed once by `create_app`.

Services raise the domain errors of `app.errors`; nothing else here knows about HTTP status
codes for business rules.
"""

import errno
import logging

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match

from app.errors import (
    DomainError,
    InsufficientStorage,
    NotFound,
    ServiceUnavailable,
    UnprocessableInput,
    error_body,
    validation_body,
)

logger = logging.getLogger(__name__)


# The database is away (restarting, failing over, shutting down, network gone) or just cut
# the session: nothing was acknowledged, and the client may retry shortly (503).
_DATABASE_OUTAGE: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,  # refused, or lost mid-query (ConnectionDoesNotExistError)
    asyncpg.CannotConnectNowError,  # the server is starting up or shutting down
    asyncpg.AdminShutdownError,  # the session was ended by a shutdown or pg_terminate_backend
    asyncpg.CrashShutdownError,
    # The driver's protocol state out of step with a connection the server has just cut
    # ("cannot switch to state ...; another operation is in progress"); the pool drops it.
    asyncpg.exceptions.InternalClientError,
    ConnectionError,
    TimeoutError,
)
_CLOSED = ("connection is closed", "connection was closed", "pool is closed")
# Connecting to a stopped server's Unix socket fails with ENOENT; a lost network like this.
_UNREACHABLE_ERRNOS = frozenset(
    {errno.ENOENT, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN}
)


def is_database_outage(exc: BaseException) -> bool:
    """Whether `exc`, or an error it was raised while handling, means the database is away.

    asyncpg says so in several ways: its connection errors; an `InterfaceError` about a
    closed connection (the rollback after a lost connection raises one, hiding the cause);
    and a bare `OSError` from connecting (socket errors carry no file name, so a file
    system error, which always does, is not mistaken for an outage and stays a 500).
    """
    current: BaseException | None = exc
    for _ in range(10):
        if current is None:
            return False
        if isinstance(current, _DATABASE_OUTAGE):
            return True
        if isinstance(current, asyncpg.InterfaceError) and any(m in str(current) for m in _CLOSED):
            return True
        if (
            isinstance(current, OSError)
            and current.filename is None
            and current.errno in _UNREACHABLE_ERRNOS
        ):
            return True
        current = current.__cause__ or current.__context__
    return False


# The code of an error the HTTP layer raises itself (Starlette's HTTPException): an unknown
# path, a method the path does not take, a body FastAPI cannot read. docs/api.md lists each.
HTTP_ERROR_CODES: dict[int, str] = {
    400: "bad_request",
    401: "not_authenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    503: "service_unavailable",
}
_HTTP_DETAILS: dict[int, str] = {
    404: "Not found",
    405: "This path does not take that method; the Allow header lists those it takes",
}


def http_error_code(status: int) -> str:
    """The documented code for a status the HTTP layer answers (a 4xx or 5xx)."""
    return HTTP_ERROR_CODES.get(status, "bad_request" if status < 500 else "internal_error")


def install(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def domain_error(request: Request, exc: DomainError) -> JSONResponse:
        body = error_body(exc.detail, exc.code, exc.extra)
        if isinstance(exc, UnprocessableInput):
            body["errors"] = exc.errors
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # The input is never echoed back (it may hold a password): loc, msg and type only.
        return JSONResponse(validation_body(exc.errors()), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # FastAPI answers a body it cannot decode at all (not UTF-8, or nested too deep for
        # the parser) with a bare 400; it is malformed JSON like any other: 422.
        if exc.status_code == 400 and isinstance(
            exc.__cause__, (UnicodeDecodeError, RecursionError)
        ):
            error = {"loc": ["body"], "msg": "JSON decode error", "type": "json_invalid"}
            return JSONResponse(validation_body([error]), status_code=422)
        if exc.status_code == 404 and "endpoint" not in request.scope:
            redirect = _slash_redirect(request)
            if redirect is not None:
                return redirect
        detail = _HTTP_DETAILS.get(exc.status_code)
        if detail is None:
            detail = exc.detail if isinstance(exc.detail, str) else "Request refused"
        body = error_body(detail, http_error_code(exc.status_code))
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(asyncpg.PostgresConnectionError)
    @app.exception_handler(asyncpg.CannotConnectNowError)
    @app.exception_handler(asyncpg.AdminShutdownError)
    @app.exception_handler(asyncpg.CrashShutdownError)
    @app.exception_handler(asyncpg.exceptions.InternalClientError)
    @app.exception_handler(asyncpg.InterfaceError)
    @app.exception_handler(OSError)  # ConnectionError, TimeoutError and the rest
    async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return await domain_error(request, InsufficientStorage())
        if not is_database_outage(exc):
            raise exc  # a bug, not an outage: the middleware answers 500 and logs it
        logger.warning("database unavailable", extra={"error": type(exc).__name__})
        return await domain_error(
            request,
            ServiceUnavailable(
                "Service temporarily unavailable; please retry", headers={"Retry-After": "2"}
            ),
        )

    @app.exception_handler(asyncpg.InsufficientPrivilegeError)
    async def row_security_refused(request: Request, exc: Exception) -> JSONResponse:
        # Row level security refused what the service allowed: treat it as absent.
        logger.warning("row level security refused a write", extra={"error": str(exc)})
        return await domain_error(request, NotFound())


def _slash_redirect(request: Request) -> Response | None:
    """`/api/v1/memories/` → 307 to `/api/v1/memories`, and the reverse, as Starlette would.

    The app is built with `redirect_slashes=False` because Starlette's own redirect is an
    absolute URL made from the request's Host header, which a client controls; this one is
    relative (the path and query only), so it points back at whatever host was asked.
    """
    path = request.scope["path"]
    # "//host/…" and "/\\host/…" read as another host in a relative Location: never redirect there.
    if path == "/" or path.startswith(("//", "/\\")):
        return None
    other = path.rstrip("/") if path.endswith("/") else path + "/"
    scope = {**request.scope, "path": other}
    for route in request.app.router.routes:
        match, _ = route.matches(scope)
        if match is not Match.NONE:
            query = request.scope.get("query_string", b"").decode("latin-1")
            return RedirectResponse(other + (f"?{query}" if query else ""), status_code=307)
    return None
