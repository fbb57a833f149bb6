async def test_health(client):
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "api_version": "v1"}
    assert response.headers["x-request-id"]


async def test_family_roundtrip(factory, client):
    family = await factory.family()
    response = await client.get("/api/v1/families/me", headers=family.by_role("teen").headers)
    assert response.status_code == 200, response.text
    roles = sorted(m["role"] for m in response.json()["members"])
    assert roles == ["adult", "child", "grandparent", "teen"]
