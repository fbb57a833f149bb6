"""Operations endpoints: health, readiness, metrics labels, offline docs, 500s."""

import httpx
from prometheus_client.parser import text_string_to_metric_families

from app.main import create_app
from tests.conftest import make_settings
from tests.helpers import API

METRICS_TOKEN = "metrics-token-" + "M" * 32


async def test_ready_checks_database_and_migrations(client):
    response = await client.get("/health/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_not_ready_while_a_migration_is_pending(client, pg):
    # The database is behind its code: take the newest migration out of the history (as if it
    # had never run), then put the very row back.
    applied = await pg.fetchrow(
        "select version, name, statements from supabase_migrations.schema_migrations"
        " order by version desc limit 1"
    )
    await pg.execute(
        "delete from supabase_migrations.schema_migrations where version = $1", applied["version"]
    )
    try:
        response = await client.get("/health/ready")
    finally:
        await pg.execute(
            "insert into supabase_migrations.schema_migrations (version, name, statements)"
            " values ($1, $2, $3)",
            applied["version"],
            applied["name"],
            applied["statements"],
        )
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "pending_migrations": [applied["version"]],
    }
    assert (await client.get("/health/ready")).status_code == 200


async def test_metrics_with_a_token_set_need_that_token(migrated_database_url, data_dir):
    settings = make_settings(migrated_database_url, data_dir, metrics_token=METRICS_TOKEN)
    application = create_app(settings)
    transport = httpx.ASGITransport(app=application)
    async with (
        application.router.lifespan_context(application),
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as client,
    ):
        for headers in (
            {},
            {"Authorization": "Bearer "},
            {"Authorization": "Bearer wrong-token"},
            {"Authorization": f"Bearer {METRICS_TOKEN}x"},
            {"Authorization": f"Bearer {METRICS_TOKEN[:-1]}"},
        ):
            refused = await client.get("/metrics", headers=headers)
            assert refused.status_code == 401, headers
            assert METRICS_TOKEN not in refused.text
            assert "http_requests" not in refused.text
        allowed = await client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        assert allowed.status_code == 200
        assert "http_requests" in allowed.text


async def test_metrics_use_route_templates_not_raw_ids(client, factory):
    family = await factory.family(["adult", "teen"])
    teen = family.by_role("teen")
    await client.delete(f"{API}/families/me/members/{teen.id}", headers=family.adult.headers)
    response = await client.get("/metrics")
    assert response.status_code == 200
    routes = set()
    for metric in text_string_to_metric_families(response.text):
        if metric.name == "http_requests":
            routes |= {sample.labels["route"] for sample in metric.samples}
    assert f"{API}/families/me/members/{{user_id}}" in routes
    assert f"{API}/auth/register/adult" in routes
    assert not any(teen.id in route for route in routes)


async def test_docs_are_served_without_a_cdn(client):
    page = await client.get("/docs")
    assert page.status_code == 200
    assert "/static/swagger-ui/swagger-ui-bundle.js" in page.text
    assert "cdn" not in page.text.lower()
    bundle = await client.get("/static/swagger-ui/swagger-ui-bundle.js")
    assert bundle.status_code == 200 and len(bundle.content) > 100_000
    schema = await client.get("/openapi.json")
    assert schema.json()["info"]["title"] == "Timeless Love API"
