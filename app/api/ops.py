"""Operations endpoints at the root: health, readiness, metrics, offline API docs."""

import hmac
from typing import Annotated

from fastapi import Header, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from app.api.deps import Context
from app.api.openapi import never_unavailable
from app.api.routing import ApiRouter
from app.db.migrate import MigrationsMissing, pending_migrations
from app.errors import Unauthorized
from app.metrics import DB_POOL_CONNECTIONS, render
from app.schemas.common import error_responses
from app.schemas.ops import Health, Readiness

router = ApiRouter(tags=["operations"])

SWAGGER_STATIC_PATH = "/static/swagger-ui"


@router.get("/health", operation_id="health_get")
async def health(request: Request) -> Health:
    """Liveness: the process answers, and which API version it serves. Touches no database."""
    return Health(status="ok", api_version=request.app.state.settings.api_version)


@router.get(
    "/health/ready",
    operation_id="health_ready",
    response_model=Readiness,
    response_model_exclude_none=True,
    responses={503: {"model": Readiness, "description": "Not ready: the body says why"}},
)
async def ready(context: Context) -> Readiness | JSONResponse:
    """Readiness: the database answers, every migration shipped with this code is applied, and
    the storage bucket exists."""
    try:
        async with context.database.pool.acquire(timeout=2) as conn:
            pending = await pending_migrations(conn)
    except MigrationsMissing:
        # A broken install: not ready, whatever the database holds.
        return _not_ready(Readiness(status="unavailable", migrations="missing"))
    except Exception:
        return _not_ready(Readiness(status="unavailable", database="unreachable"))
    if pending:
        versions = [m.version for m in pending]
        return _not_ready(Readiness(status="unavailable", pending_migrations=versions))
    # A missing bucket (Supabase signs nothing against it, yet answers 200): not ready.
    storage_problem = await context.storage_problem()
    if storage_problem is not None:
        return _not_ready(Readiness(status="unavailable", storage=storage_problem))
    return Readiness(status="ok")


def _not_ready(readiness: Readiness) -> JSONResponse:
    # Its own body, not the error shape: what load balancers and operators read (docs/api.md).
    return JSONResponse(readiness.model_dump(exclude_none=True), status_code=503)


@router.get(
    "/metrics",
    operation_id="metrics_get",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text format",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        **error_responses(401),
    },
)
@never_unavailable
async def metrics(
    context: Context, authorization: Annotated[str | None, Header()] = None
) -> Response:
    """Prometheus text format. Needs `Authorization: Bearer <METRICS_TOKEN>` when that is set."""
    expected = context.settings.metrics_token
    if expected is not None:
        given = (authorization or "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), expected.get_secret_value().encode()):
            raise Unauthorized("Metrics token required")
    for state, value in context.database.pool_stats().items():
        DB_POOL_CONNECTIONS.labels(state).set(value)
    return Response(render(), media_type=CONTENT_TYPE_LATEST)


@router.get("/docs", include_in_schema=False)
async def swagger_ui(request: Request) -> HTMLResponse:
    # Assets come from this server (the fastapi-offline wheel ships Swagger UI 5,
    # which renders OpenAPI 3.1): no CDN, so the page works without internet.
    return get_swagger_ui_html(
        openapi_url=request.app.openapi_url or "/openapi.json",
        title=f"{request.app.title} — API docs",
        swagger_js_url=f"{SWAGGER_STATIC_PATH}/swagger-ui-bundle.js",
        swagger_css_url=f"{SWAGGER_STATIC_PATH}/swagger-ui.css",
        swagger_favicon_url=f"{SWAGGER_STATIC_PATH}/favicon.png",
    )
