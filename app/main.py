"""create_app(): settings → database → services, routers, middleware, error handlers."""

import errno
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from app.api import ops
from app.api.v1 import analytics, auth, families, feed, invites, memories, storage
from app.config import Settings, get_settings
from app.context import AppContext
from app.db.postgres import Database
from app.db.supabase import Supabase
from app.errors import DomainError, InsufficientStorage
from app.log import configure_logging, request_id_var
from app.middleware import RequestContextMiddleware
from app.schemas.common import ErrorOut, ValidationErrorOut
from app.services import media_processor
from app.services.analytics_service import AnalyticsRecorder
from app.services.auth_providers import LocalAuthProvider
from app.services.passwords import Passwords
from app.services.rate_limit import MemoryCounterStore, RateLimiter, RedisCounterStore
from app.services.storage_backend import LocalStorageBackend
from app.services.supabase_auth import SupabaseAccessTokens, SupabaseAuthProvider
from app.services.supabase_storage import SupabaseStorageBackend
from app.services.supabase_tokens import SupabaseTokenVerifier

logger = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
# Uploads stream to storage with their own (larger) limit; see the storage router.
UNLIMITED_BODY_PREFIXES = (f"{API_PREFIX}/storage/objects/",)

DESCRIPTION = """
A private space where a family keeps and shares its memories across generations.

Sign in with `POST /api/v1/auth/login` and send `Authorization: Bearer <access_token>`.
Errors are `{"detail": "..."}`; validation errors are 422 with FastAPI's list form.
"""


async def build_context(settings: Settings) -> AppContext:
    if settings.database_url is None:
        raise RuntimeError("DATABASE_URL is not set (timeless serve starts the built-in one)")
    database = await Database.connect(
        settings.database_url.get_secret_value(),
        pooler_mode=settings.database_pooler_mode,
        min_size=settings.database_pool_min,
        max_size=settings.database_pool_max,
        command_timeout=settings.database_command_timeout,
    )
    passwords = Passwords(
        time_cost=settings.password_hash_time_cost, memory_kib=settings.password_hash_memory_kib
    )
    analytics = AnalyticsRecorder(
        database,
        batch_size=settings.analytics_batch_size,
        flush_interval=settings.analytics_flush_interval_seconds,
        retention_days=settings.analytics_retention_days,
    )
    counters = RedisCounterStore(settings.redis_url) if settings.redis_url else MemoryCounterStore()
    context = AppContext(
        settings=settings,
        database=database,
        auth_provider=LocalAuthProvider(database, passwords),
        analytics=analytics,
        storage=_local_storage(settings),
        rate_limiter=RateLimiter(counters, enabled=settings.rate_limit_enabled),
    )
    if settings.supabase_enabled:
        _use_supabase(context)
    # After the storage is chosen: the processor keeps the backend it is given.
    context.extras[media_processor.EXTRAS_KEY] = media_processor.MediaProcessor(
        database, context.storage, analytics, settings
    )
    return context


def _local_storage(settings: Settings) -> LocalStorageBackend:
    """Files under settings.storage_root, served through URLs signed by this server."""
    return LocalStorageBackend(
        settings.storage_root,
        bucket=settings.supabase_storage_bucket,
        public_url=f"{settings.base_url}{API_PREFIX}/storage/objects",
        secret=settings.jwt_secret,
    )


def _use_supabase(context: AppContext) -> None:
    """Accounts in Supabase Auth (its access tokens accepted too), files in Supabase Storage."""
    supabase = Supabase.from_settings(context.settings)
    # One HTTP client for Auth, the token verifier and Storage; closed in the lifespan.
    context.extras["supabase"] = supabase
    context.auth_provider = SupabaseAuthProvider(supabase)
    verifier = SupabaseTokenVerifier(
        supabase.config.url, jwt_secret=supabase.config.jwt_secret, http=supabase.http
    )
    context.extras["external_token_verifier"] = SupabaseAccessTokens(verifier, supabase.config.url)
    context.storage = SupabaseStorageBackend(supabase)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        context = await build_context(settings)
        app.state.context = context
        context.analytics.start()
        media = media_processor.from_context(context)
        media.start()
        try:
            yield
        finally:
            await media.stop()
            await context.analytics.stop()
            supabase: Supabase | None = context.extras.get("supabase")
            if supabase is not None:
                await supabase.aclose()
            await context.database.close()

    app = FastAPI(
        title="Timeless Love API",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        # What RequestContextMiddleware may answer to any request: a body over the limit, and
        # a URL that is not UTF-8 (a validation error, as FastAPI documents it on most routes).
        responses={
            413: {"model": ErrorOut, "description": "Request body too large"},
            422: {"model": ValidationErrorOut, "description": "Validation Error"},
        },
    )
    app.state.settings = settings

    for router in (
        auth.router,
        families.router,
        invites.router,
        memories.router,
        storage.router,
        feed.router,
        analytics.router,
    ):
        app.include_router(router, prefix=API_PREFIX)
    app.include_router(ops.router)
    app.mount(
        ops.SWAGGER_STATIC_PATH,
        StaticFiles(directory=Path(fastapi_offline.__file__).parent / "static"),
        name="swagger-ui",
    )

    _install_error_handlers(app)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_credentials=True,
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=["X-Request-ID", "X-Total-Count", "Retry-After"],
    )
    app.add_middleware(
        RequestContextMiddleware,
        max_body_bytes=settings.max_json_body_bytes,
        api_prefix=API_PREFIX,
        unlimited_prefixes=UNLIMITED_BODY_PREFIXES,
    )
    return app


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


def _is_database_outage(exc: BaseException) -> bool:
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


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def domain_error(request: Request, exc: DomainError) -> JSONResponse:
        return JSONResponse(
            {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
        )

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
        if not _is_database_outage(exc):
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


def configure_from_env() -> FastAPI:
    """Factory for `uvicorn --factory app.main:configure_from_env` (used by each worker)."""
    settings = get_settings()
    configure_logging(settings.log_level)
    return create_app(settings)
