"""Bad input to the account and family endpoints: a clear 4xx, and no rows left behind."""

import pytest

from tests.helpers import API
from tests.helpers.factories import PASSWORD, unique_email


async def _counts(pg) -> tuple[int, int, int, int]:
    return (
        await pg.fetchval("select count(*) from auth.users"),
        await pg.fetchval("select count(*) from public.user_profiles"),
        await pg.fetchval("select count(*) from public.family_units"),
        await pg.fetchval("select count(*) from app.auth_sessions"),
    )


def _register_body(**overrides):
    body = {"email": unique_email(), "password": PASSWORD, "display_name": "Ann"}
    body.update(overrides)
    return body


BAD_REGISTRATIONS = {
    "weak_password": _register_body(password="tiny-pw9"),
    "empty_password": _register_body(password=""),
    "huge_password": _register_body(password="x" * 10_000),
    "bad_email": _register_body(email="not-an-email"),
    "missing_email": {"password": PASSWORD, "display_name": "Ann"},
    "blank_display_name": _register_body(display_name="   "),
    "long_display_name": _register_body(display_name="x" * 101),
    "long_family_name": _register_body(family_name="x" * 256),
    "wrong_type_email": _register_body(email=12345),
    "wrong_type_name": _register_body(display_name=["Ann"]),
    "body_is_a_list": ["email", "password"],
    "null_body": None,
}


@pytest.mark.parametrize("case", sorted(BAD_REGISTRATIONS))
async def test_bad_registration_is_422_and_writes_nothing(client, pg, case):
    before = await _counts(pg)
    response = await client.post(f"{API}/auth/register/adult", json=BAD_REGISTRATIONS[case])
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "validation_failed"
    assert isinstance(body["detail"], str) and body["detail"]
    assert body["errors"] and {"loc", "msg", "type"} <= set(body["errors"][0])
    # The rejected password is never echoed back.
    assert PASSWORD not in response.text and "tiny-pw9" not in response.text
    assert await _counts(pg) == before


async def test_malformed_json_is_422(client, pg):
    before = await _counts(pg)
    response = await client.post(
        f"{API}/auth/register/adult",
        content=b'{"email": "a@example.com", "password":',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["type"] == "json_invalid"
    assert await _counts(pg) == before


async def test_unknown_registration_role_is_404(client):
    response = await client.post(f"{API}/auth/register/pirate", json=_register_body())
    assert response.status_code == 404


async def test_unknown_invite_role_is_422(client, factory):
    family = await factory.family(["adult"])
    response = await client.post(
        f"{API}/invites",
        json={"email": unique_email(), "role": "emperor"},
        headers=family.adult.headers,
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "role"]


@pytest.mark.parametrize("variant", ["same", "upper", "padded"])
async def test_duplicate_email_any_case_is_409(client, pg, variant):
    email = unique_email()
    first = await client.post(f"{API}/auth/register/adult", json=_register_body(email=email))
    assert first.status_code == 201
    again = {"same": email, "upper": email.upper(), "padded": email.title()}[variant]
    before = await _counts(pg)
    response = await client.post(f"{API}/auth/register/teen", json=_register_body(email=again))
    assert response.status_code == 409
    assert response.json()["detail"] == "An account with this email already exists"
    assert response.json()["code"] == "conflict"
    assert await _counts(pg) == before


async def test_json_body_over_one_mebibyte_is_413(client, pg):
    before = await _counts(pg)
    huge = _register_body(display_name="x" * (1024 * 1024 + 10))
    response = await client.post(f"{API}/auth/register/adult", json=huge)
    assert response.status_code == 413
    assert "detail" in response.json()
    assert await _counts(pg) == before


async def test_oversize_body_without_content_length_is_413(client):
    async def chunks():
        for _ in range(20):
            yield b"x" * 65536

    response = await client.post(
        f"{API}/auth/login", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413


async def test_bad_uuid_in_path_is_422(client, factory):
    family = await factory.family(["adult"])
    response = await client.delete(
        f"{API}/families/me/members/not-a-uuid", headers=family.adult.headers
    )
    assert response.status_code == 422


async def test_bad_avatar_url_is_422(client, factory):
    family = await factory.family(["adult"])
    response = await client.patch(
        f"{API}/auth/me",
        json={"avatar_url": "javascript:alert(1)"},
        headers=family.adult.headers,
    )
    assert response.status_code == 422


async def test_blank_family_name_is_422(client, factory):
    family = await factory.family(["adult"])
    response = await client.patch(
        f"{API}/families/me", json={"name": "  "}, headers=family.adult.headers
    )
    assert response.status_code == 422


async def test_request_id_is_echoed_or_generated(client):
    echoed = await client.get("/health", headers={"X-Request-ID": "abc-123"})
    assert echoed.headers["x-request-id"] == "abc-123"
    generated = await client.get("/health", headers={"X-Request-ID": "bad id\twith spaces"})
    assert generated.headers["x-request-id"] not in ("", "bad id\twith spaces")
    on_error = await client.post(f"{API}/auth/login", json={})
    assert on_error.headers["x-request-id"]
