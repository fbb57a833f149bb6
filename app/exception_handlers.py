"""How errors become responses: domain errors, validation, database outages (503), storage
full (507), and row level security refusals (404). Installed once by `create_app`.

Services raise the domain errors of `app.errors`; nothing else here knows about HTTP status
codes for business rules.
"""

import errno
import logging

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from app.errors import DomainError, InsufficientStorage
from app.log import request_id_var

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


def install(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def domain_error(request: Request, exc: DomainError) -> JSONResponse:
        body = {"detail": exc.detail, "code": exc.code, "request_id": request_id_var.get()}
        return JSONResponse({**exc.extra, **body}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's list form, minus the echoed input (it may hold a password).
        errors = [
            {"loc": list(err["loc"]), "msg": err["msg"], "type": err["type"]}
            for err in exc.errors()
        ]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # FastAPI answers a body it cannot decode at all (not UTF-8, or nested too deep for
        # the parser) with a bare 400; it is malformed JSON like any other: 422, list form.
        if exc.status_code == 400 and isinstance(
            exc.__cause__, (UnicodeDecodeError, RecursionError)
        ):
            error = {"loc": ["body"], "msg": "JSON decode error", "type": "json_invalid"}
            return JSONResponse({"detail": [error]}, status_code=422)
        return await http_exception_handler(request, exc)

    @app.exception_handler(asyncpg.PostgresConnectionError)
    @app.exception_handler(asyncpg.CannotConnectNowError)
    @app.exception_handler(asyncpg.AdminShutdownError)
    @app.exception_handler(asyncpg.CrashShutdownError)
    @app.exception_handler(asyncpg.exceptions.InternalClientError)
    @app.exception_handler(asyncpg.InterfaceError)
    @app.exception_handler(OSError)  # ConnectionError, TimeoutError and the rest
    async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            storage_full = InsufficientStorage()
            return JSONResponse({"detail": storage_full.detail}, status_code=507)
        if not is_database_outage(exc):
            raise exc  # a bug, not an outage: the middleware answers 500 and logs it
        logger.warning("database unavailable", extra={"error": type(exc).__name__})
        return JSONResponse(
            {
                "detail": "Service temporarily unavailable; please retry",
                "request_id": request_id_var.get(),
            },
            status_code=503,
            headers={"Retry-After": "2"},
        )

    @app.exception_handler(asyncpg.InsufficientPrivilegeError)
    async def row_security_refused(request: Request, exc: Exception) -> JSONResponse:
        # Row level security refused what the service allowed: treat it as absent.
        logger.warning("row level security refused a write", extra={"error": str(exc)})
        return JSONResponse({"detail": "Not found"}, status_code=404)
