"""Errors a client can branch on, and the edges of every response (docs/api.md, "Errors").

One shape for every status, whichever layer answers: `{detail, code, request_id}`, plus
`errors` for a 422. The codes that tell a client what to do next (refresh or sign in again,
ask for a new link, wait) are checked here one by one; tests/test_zz_contract.py checks the
shape of every error the whole suite produced.

Also issue 10, item 12: errors from the outermost layers carry the CORS headers, token
responses are `no-store`, and the trailing-slash redirect never echoes the client's Host.
"""

import uuid
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from jose import jwt

from app.adapters.tokens import issue_access_token
from app.main import create_app
from app.models.identity import Role
from tests.helpers import API
from tests.helpers.factories import PASSWORD, unique_email
from tests.helpers.feed import make_memory

ORIGIN = "http://localhost:5173"  # the default CORS_ORIGINS


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    assert isinstance(body["detail"], str) and body["detail"]
    assert body["request_id"] == response.headers["x-request-id"]
    return body


# 401: what to do next ---------------------------------------------------------------------


async def test_no_token_is_not_authenticated(client):
    response = await client.get(f"{API}/auth/me")
    assert_error(response, 401, "not_authenticated")
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "eyJhbGciOiJub25lIn0.e30."])
async def test_a_malformed_token_is_not_authenticated(client, token):
    response = await client.get(f"{API}/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert_error(response, 401, "not_authenticated")


async def test_an_expired_access_token_is_token_expired(client, factory, settings):
    member = await factory.register("adult")
    claims = _claims(member.headers)
    expired = issue_access_token(
        secret=settings.jwt_secret,
        ttl_seconds=-60,
        user_id=uuid.UUID(member.id),
        role=Role.ADULT,
        family_unit_id=uuid.UUID(member.family_id),
        session_id=uuid.UUID(claims["sid"]),
    )
    response = await client.get(f"{API}/auth/me", headers={"Authorization": f"Bearer {expired}"})
    body = assert_error(response, 401, "token_expired")
    assert "expired" in body["detail"].lower()


async def test_an_access_token_of_a_logged_out_session_is_token_revoked(client, factory):
    member = await factory.register("adult")
    assert (await client.post(f"{API}/auth/logout", headers=member.headers)).status_code == 204
    assert_error(await client.get(f"{API}/auth/me", headers=member.headers), 401, "token_revoked")


async def test_a_removed_members_token_is_token_revoked(client, factory):
    family = await factory.family(["adult", "teen"])
    teen = family.by_role("teen")
    removed = await client.delete(
        f"{API}/families/me/members/{teen.id}", headers=family.adult.headers
    )
    assert removed.status_code == 204
    assert_error(await client.get(f"{API}/feed", headers=teen.headers), 401, "token_revoked")


async def test_an_unknown_refresh_token_is_not_authenticated(client):
    unknown = await client.post(f"{API}/auth/refresh", json={"refresh_token": "x" * 43})
    assert_error(unknown, 401, "not_authenticated")


async def test_refresh_after_logout_is_token_revoked(client, factory):
    member = await factory.register("adult")
    logout = await client.post(
        f"{API}/auth/logout", json={"refresh_token": member.refresh_token}, headers=member.headers
    )
    assert logout.status_code == 204
    response = await client.post(
        f"{API}/auth/refresh", json={"refresh_token": member.refresh_token}
    )
    assert_error(response, 401, "token_revoked")


async def test_a_wrong_password_is_invalid_credentials(client, factory):
    member = await factory.register("adult")
    for login in (member.email, unique_email("nobody")):
        response = await client.post(
            f"{API}/auth/login", json={"email": login, "password": PASSWORD + "x"}
        )
        assert_error(response, 401, "invalid_credentials")


# Sharper codes of 400, 403 and 409 ---------------------------------------------------------


async def test_an_invite_used_twice_is_invite_invalid(client, factory):
    family = await factory.family(["adult"])
    invite = await factory.invite(family.adult, "teen")
    body = {"email": invite["email"], "password": PASSWORD, "display_name": "Tess"}
    accept = f"{API}/invites/{invite['token']}/accept"
    assert (await client.post(accept, json=body)).status_code == 201
    again = await client.post(accept, json={**body, "email": unique_email()})
    assert_error(again, 400, "invite_invalid")


async def test_an_invite_for_another_email_is_invite_invalid(client, factory):
    family = await factory.family(["adult"])
    invite = await factory.invite(family.adult, "teen")
    response = await client.post(
        f"{API}/invites/{invite['token']}/accept",
        json={"email": unique_email(), "password": PASSWORD, "display_name": "Tess"},
    )
    assert_error(response, 400, "invite_invalid")


async def test_removing_the_last_adult_is_last_adult(client, factory):
    family = await factory.family(["adult"])
    adult = family.adult
    response = await client.delete(f"{API}/families/me/members/{adult.id}", headers=adult.headers)
    assert_error(response, 409, "last_adult")


async def test_a_thumbnail_not_yet_made_is_media_not_ready(client, factory, pg):
    family = await factory.family(["adult"])
    memory_id = await make_memory(pg, family.adult, photos=1, thumbnails_ready=False)
    media_id = await pg.fetchval(
        "select id from public.memory_media where memory_id = $1", uuid.UUID(memory_id)
    )
    response = await client.get(
        f"{API}/storage/media/{media_id}/url",
        params={"variant": "thumbnail"},
        headers=family.adult.headers,
    )
    assert_error(response, 409, "media_not_ready")


async def test_a_changed_signed_link_is_link_invalid(client, factory):
    family = await factory.family(["adult"])
    memory = await client.post(
        f"{API}/memories", json={"title": "Links"}, headers=family.adult.headers
    )
    grant = await client.post(
        f"{API}/storage/upload-url",
        json={"memory_id": memory.json()["id"], "file_name": "a.png", "mime_type": "image/png"},
        headers=family.adult.headers,
    )
    changed = grant.json()["upload_url"].replace("signature=", "signature=x")
    response = await client.put(changed, content=b"x", headers={"Content-Type": "image/png"})
    assert_error(response, 403, "link_invalid")


# 422: one sentence, and every field in `errors` ----------------------------------------------


async def test_validation_failures_say_one_sentence_and_list_every_field(client, factory):
    family = await factory.family(["adult"])
    response = await client.post(
        f"{API}/memories",
        json={"title": "", "tags": ["x" * 51], "status": "lost"},
        headers=family.adult.headers,
    )
    body = assert_error(response, 422, "validation_failed")
    assert body["detail"].startswith("Invalid title: ")
    assert "(and 2 more in `errors`)" in body["detail"]
    fields = {tuple(error["loc"]) for error in body["errors"]}
    assert fields == {("body", "title"), ("body", "tags"), ("body", "status")}
    assert all({"loc", "msg", "type"} == set(error) for error in body["errors"])


async def test_a_bad_query_parameter_names_it(client, factory):
    family = await factory.family(["adult"])
    response = await client.get(f"{API}/memories?limit=0", headers=family.adult.headers)
    body = assert_error(response, 422, "validation_failed")
    assert body["detail"].startswith("Invalid query parameter limit: ")
    assert body["errors"][0]["loc"] == ["query", "limit"]


async def test_a_body_that_is_not_json_is_validation_failed(client, factory):
    family = await factory.family(["adult"])
    response = await client.post(
        f"{API}/memories",
        content=b"{not json",
        headers={**family.adult.headers, "Content-Type": "application/json"},
    )
    body = assert_error(response, 422, "validation_failed")
    assert body["errors"][0]["type"] == "json_invalid"


async def test_a_url_that_is_not_utf8_is_validation_failed(client):
    body = assert_error(await client.get("/health?q=%FF"), 422, "validation_failed")
    assert body["errors"] == [
        {
            "loc": ["query"],
            "msg": "The URL is not valid UTF-8 once percent-decoded",
            "type": "string_unicode",
        }
    ]


# The HTTP layer: unknown paths, methods, oversized bodies --------------------------------------


async def test_an_unknown_path_is_not_found_in_the_one_shape(client):
    assert_error(await client.get(f"{API}/no-such-thing"), 404, "not_found")
    assert_error(await client.post("/nowhere", json={}), 404, "not_found")


async def test_a_method_a_path_does_not_take_is_method_not_allowed(client):
    response = await client.patch(f"{API}/feed")
    assert_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "GET"


async def test_a_body_over_the_limit_is_payload_too_large(client, factory):
    family = await factory.family(["adult"])
    response = await client.post(
        f"{API}/memories",
        content=b'{"title": "' + b"x" * (1024 * 1024) + b'"}',
        headers={**family.adult.headers, "Content-Type": "application/json"},
    )
    body = assert_error(response, 413, "payload_too_large")
    assert "1048576 bytes" in body["detail"]


async def test_a_get_is_never_refused_for_a_body_it_does_not_read(client, factory):
    family = await factory.family(["adult"])
    response = await client.request(
        "GET", f"{API}/auth/me", content=b"x" * (1024 * 1024 + 1), headers=family.adult.headers
    )
    assert response.status_code == 200, response.text


# Outages and bugs, on an app of their own ------------------------------------------------------


@pytest.fixture
def bare_app(settings) -> FastAPI:
    """The real app's middleware and handlers around routes that fail on purpose.

    Nothing here needs the database, so the app is not started (no lifespan).
    """
    application = create_app(settings)

    async def bug() -> None:
        raise RuntimeError("a bug")

    async def outage() -> None:
        raise asyncpg.CannotConnectNowError("the database system is starting up")

    application.add_api_route("/boom", bug)
    application.add_api_route("/outage", outage)
    return application


@pytest.fixture
async def bare_client(bare_app) -> Any:
    transport = httpx.ASGITransport(app=bare_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


async def test_a_bug_is_internal_error_in_the_one_shape(bare_client):
    response = await bare_client.get("/boom", headers={"Origin": ORIGIN})
    body = assert_error(response, 500, "internal_error")
    assert "a bug" not in response.text and "Traceback" not in response.text
    assert body["detail"] == "Internal server error"


async def test_an_outage_is_service_unavailable_with_retry_after(bare_client):
    response = await bare_client.get("/outage")
    assert_error(response, 503, "service_unavailable")
    assert int(response.headers["retry-after"]) >= 1


# Issue 10, item 12: CORS on every answer, no-store on tokens, no Host in redirects -----------


@pytest.mark.parametrize(
    ("method", "path", "content"),
    [
        ("GET", "/boom", None),
        ("POST", "/outage", b'{"x": "' + b"x" * (1024 * 1024) + b'"}'),
        ("GET", "/health?q=%FF", None),
        ("GET", "/no-such-path", None),
        ("GET", "/outage", None),
    ],
    ids=["500 bug", "413 body", "422 url", "404 path", "503 outage"],
)
async def test_every_error_carries_the_cors_headers(bare_client, method, path, content):
    headers = {"Origin": ORIGIN, "Content-Type": "application/json"}
    response = await bare_client.request(method, path, content=content, headers=headers)
    assert response.status_code >= 400
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert response.headers["access-control-allow-credentials"] == "true"
    exposed = response.headers["access-control-expose-headers"]
    assert "X-Request-ID" in exposed and "Retry-After" in exposed
    assert response.headers["x-request-id"]


async def test_an_origin_not_allowed_gets_no_cors_headers_on_errors(bare_client):
    response = await bare_client.get("/boom", headers={"Origin": "https://evil.example"})
    assert response.status_code == 500
    assert "access-control-allow-origin" not in response.headers


async def test_a_preflight_carries_a_request_id(client):
    response = await client.options(
        f"{API}/memories",
        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"},
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert response.headers["x-request-id"]


def assert_no_store(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"


async def test_every_response_holding_a_token_or_password_is_no_store(client, factory):
    body = {"email": unique_email(), "password": PASSWORD, "display_name": "Ada"}
    registered = await client.post(f"{API}/auth/register/adult", json=body)
    assert_no_store(registered, 201)
    adult = registered.json()["tokens"]
    headers = {"Authorization": f"Bearer {adult['access_token']}"}
    login = await client.post(
        f"{API}/auth/login", json={"email": body["email"], "password": PASSWORD}
    )
    assert_no_store(login, 200)
    refresh = await client.post(
        f"{API}/auth/refresh", json={"refresh_token": login.json()["refresh_token"]}
    )
    assert_no_store(refresh, 200)
    invite = await client.post(
        f"{API}/invites", json={"email": unique_email(), "role": "teen"}, headers=headers
    )
    assert_no_store(invite, 201)
    accepted = await client.post(
        f"{API}/invites/{invite.json()['token']}/accept",
        json={"email": invite.json()["email"], "password": PASSWORD, "display_name": "Byron"},
    )
    assert_no_store(accepted, 201)
    child_invite = await client.post(
        f"{API}/invites", json={"email": unique_email(), "role": "child"}, headers=headers
    )
    child = await client.post(
        f"{API}/auth/register/child",
        json={
            "invite_token": child_invite.json()["token"],
            "password": PASSWORD,
            "display_name": "Kid",
        },
    )
    assert_no_store(child, 201)
    provisioned = await client.post(
        f"{API}/auth/provision/child", json={"display_name": "Kit"}, headers=headers
    )
    assert_no_store(provisioned, 201)
    # What holds no secret stays cacheable as before.
    profile = await client.get(f"{API}/auth/me", headers=headers)
    assert profile.status_code == 200 and "cache-control" not in profile.headers


async def test_the_openapi_document_declares_no_store_on_token_responses(app):
    document = app.openapi()
    for path, method, status in [
        ("/api/v1/auth/login", "post", "200"),
        ("/api/v1/auth/refresh", "post", "200"),
        ("/api/v1/auth/register/adult", "post", "201"),
        ("/api/v1/invites/{token}/accept", "post", "201"),
    ]:
        headers = document["paths"][path][method]["responses"][status]["headers"]
        assert headers["Cache-Control"]["schema"]["const"] == "no-store"


@pytest.mark.parametrize(
    ("asked", "location"),
    [
        (f"{API}/memories/", f"{API}/memories"),
        (f"{API}/memories/?limit=5&status=draft", f"{API}/memories?limit=5&status=draft"),
        ("/health/", "/health"),
    ],
)
async def test_the_trailing_slash_redirect_is_relative(client, asked, location):
    response = await client.get(asked, headers={"Host": "evil.example:666"})
    assert response.status_code == 307
    assert response.headers["location"] == location
    assert "evil" not in response.text


@pytest.mark.parametrize("path", ["//evil.example/", "//evil.example/api/v1/memories/", "/\\evil/"])
async def test_a_path_that_reads_as_another_host_is_never_redirected(client, path):
    # The raw path as sent: httpx would read "//evil.example/" in a URL as a host.
    url = httpx.URL("http://testserver").copy_with(raw_path=path.encode())
    response = await client.get(url)
    assert response.status_code == 404
    assert "location" not in response.headers


async def test_memories_create_says_where_the_memory_is(client, factory):
    family = await factory.family(["adult"])
    created = await client.post(
        f"{API}/memories",
        json={"title": "Where"},
        headers={**family.adult.headers, "Host": "evil.example"},
    )
    assert created.status_code == 201
    location = created.headers["location"]
    assert location == f"{API}/memories/{created.json()['id']}"
    fetched = await client.get(location, headers=family.adult.headers)
    assert fetched.status_code == 200 and fetched.json()["id"] == created.json()["id"]


def _claims(headers: dict[str, str]) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.get_unverified_claims(headers["Authorization"][len("Bearer ") :])
    return claims
