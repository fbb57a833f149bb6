"""Operations endpoints: health, readiness, metrics labels, offline docs, 500s."""

from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import API


async def test_ready_checks_database_and_migrations(client):
    response = await client.get("/health/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


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
