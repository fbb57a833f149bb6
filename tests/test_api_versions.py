"""API versioning: `API_VERSION` names the prefix, /health reports it, and a second version can
be mounted beside the first during a migration."""

from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter

from app.config import Settings
from app.main import create_app, mount_api_version
from tests.conftest import make_settings


async def test_health_reports_the_served_api_version(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "api_version": "v1"}


async def test_a_throwaway_v2_router_is_served_beside_v1(settings: Settings) -> None:
    app = create_app(settings)
    v2 = APIRouter()

    @v2.get("/auth/me")
    async def me_v2() -> dict[str, str]:
        return {"shape": "v2"}

    mount_api_version(app, "v2", v2)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            # v1 is untouched (no token: its own 401), v2 answers with its own shape.
            v1_response = await client.get("/api/v1/auth/me")
            v2_response = await client.get("/api/v2/auth/me")
    assert v1_response.status_code == 401
    assert v2_response.status_code == 200
    assert v2_response.json() == {"shape": "v2"}
    paths = app.openapi()["paths"]
    assert "/api/v1/auth/me" in paths and "/api/v2/auth/me" in paths


def test_an_unknown_api_version_stops_start_up(migrated_database_url: str, data_dir: Path) -> None:
    with pytest.raises(RuntimeError, match="API_VERSION=v7"):
        create_app(make_settings(migrated_database_url, data_dir, api_version="v7"))


def test_a_malformed_api_version_is_refused_by_settings(
    migrated_database_url: str, data_dir: Path
) -> None:
    with pytest.raises(ValueError, match="api_version"):
        make_settings(migrated_database_url, data_dir, api_version="latest")
