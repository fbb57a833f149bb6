"""create_app(): settings → routers, middleware, error handlers; the lifespan builds the context."""

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from app import exception_handlers
from app.api import openapi, ops, storage_objects
from app.api.event_stream import close_streams_on_exit_signal
from app.api.routing import RouteIndex
from app.api.v1 import router as v1_router
from app.config import Settings, get_settings
from app.context import build_context
from app.log import configure_logging
from app.middleware import GuardMiddleware, RequestContextMiddleware
from app.proxy import TrustedProxyMiddleware
from app.schemas.common import ErrorOut, ValidationErrorOut

# The router of each API version this code holds; `API_VERSION` picks the one served.
API_VERSIONS: dict[str, APIRouter] = {"v1": v1_router}

DESCRIPTION = """
A private space where a family keeps and shares its memories across generations.

Sign in with `POST /api/v1/auth/login` and send `Authorization: Bearer <access_token>`.
The whole contract (endpoints, shapes, error codes) is `docs/api.md` in the repository.
"""


def create_app(settings: Settings | None = None, *, server_process: bool = False) -> FastAPI:
    """The app. `server_process`: this process serves it until it stops (a uvicorn worker),
    so what start-up built is set aside from the garbage collector (`_freeze_heap`)."""
    settings = settings or get_settings()
    if settings.api_version not in API_VERSIONS:
        known = ", ".join(sorted(API_VERSIONS))
        raise RuntimeError(f"API_VERSION={settings.api_version} is not one of: {known}")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        context = await build_context(settings)
        app.state.context = context
        context.start(background_jobs=settings.background_jobs)
        stop_closing_streams = close_streams_on_exit_signal(context.events.close_streams)
        if server_process:
            _freeze_heap()
        try:
            yield
        finally:
            stop_closing_streams()
            await context.aclose()

    app = FastAPI(
        title="Timeless Love API",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        # FastAPI's own OpenTelemetry hooks: this service's metrics are Prometheus' (/metrics)
        # and its traces none, yet with them on every request asks whether a provider was
        # configured (docs/performance.md).
        telemetry={"tracing": False, "metrics": False, "logs": False},
        # Every operation can answer these two; `app.api.openapi` adds what depends on the
        # route (401, 413, 429, 503). Declaring 422 here also keeps FastAPI's own
        # validation schema, which this API never answers, out of the document.
        responses={
            422: {"model": ValidationErrorOut, "description": "Validation failed"},
            500: {"model": ErrorOut, "description": "A bug; quote `request_id`"},
        },
        generate_unique_id_function=openapi.operation_id,
        # Starlette's slash redirect builds an absolute URL from the client's Host header;
        # `exception_handlers` answers the same 307 with a relative Location instead.
        redirect_slashes=False,
    )
    app.state.settings = settings

    # FastAPI matches routes in the order they were included, walking every route of an
    # included router before the next: /health (what load balancers ask most often) first,
    # so it is not matched against each route of the API (docs/performance.md).
    app.include_router(ops.router)
    mount_api_version(app, settings.api_version, API_VERSIONS[settings.api_version])
    if not settings.supabase_enabled:
        # The built-in store serves its own signed URLs; with Supabase Storage they go there.
        app.include_router(storage_objects.router, prefix=settings.api_prefix)
    app.mount(
        ops.SWAGGER_STATIC_PATH,
        StaticFiles(directory=Path(fastapi_offline.__file__).parent / "static"),
        name="swagger-ui",
    )

    # The router's table of routes instead of its walk (app.api.routing).
    app.router.middleware_stack = RouteIndex(app.router)
    exception_handlers.install(app)
    openapi.install(app)
    # Added innermost first. GuardMiddleware's answers (413, the last-resort 500) pass
    # through CORSMiddleware, so a browser can read them; RequestContextMiddleware, outside
    # both, gives every response (preflights too) its request id and access log line.
    app.add_middleware(
        GuardMiddleware,
        max_body_bytes=settings.max_json_body_bytes,
        # Uploads stream to storage with their own (larger) limit; see app.api.storage_objects.
        unlimited_prefixes=(f"{settings.api_prefix}{storage_objects.PREFIX}/",),
    )
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_credentials=True,
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=["X-Request-ID", "X-Total-Count", "Retry-After", "ETag", "Location"],
    )
    app.add_middleware(RequestContextMiddleware, api_prefix=settings.api_prefix)
    # Outermost: everything inside (limits, logs, URLs) sees the client a trusted proxy names.
    app.add_middleware(TrustedProxyMiddleware, trusted=settings.trusted_proxies)
    return app


def _freeze_heap() -> None:
    """Leave what start-up built (modules, routes, schemas, validators: some 120 000 objects)
    out of every later garbage collection.

    A full collection walks every tracked object; with them in the heap each one stopped the
    worker for 50 to 70 ms, a few times a minute under load, and those pauses were the feed's
    p99 (docs/performance.md, "Fourth pass"). Afterwards a full collection walks only what
    was made since: the permanent generation gc.freeze moves them to is never walked again.
    """
    gc.collect()
    gc.freeze()


def mount_api_version(app: FastAPI, version: str, router: APIRouter) -> None:
    """Serve `router` under /api/{version}; during a migration v1 and v2 can stand side by side."""
    app.include_router(router, prefix=f"/api/{version}")


def configure_from_env() -> FastAPI:
    """Factory for `uvicorn --factory app.main:configure_from_env` (used by each worker)."""
    settings = get_settings()
    configure_logging(settings.log_level)
    return create_app(settings, server_process=True)
