"""Supabase Auth behind the real API and the real database, GoTrue mocked with respx.

The auth flows run twice, once with the built-in provider and once with Supabase's, with the
same assertions: nothing above the `AuthProvider` seam may notice which one runs. Then what only
Supabase can do: be down, refuse our key, already know an address, fail half-way through a
registration (the account it made is deleted again), and issue access tokens of its own.
The request and response shapes of GoTrue are documented in tests/supabase_fixtures.py.
"""

import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import asyncpg
import httpx
import pytest
import respx
from fastapi import FastAPI

from app.adapters.auth.supabase import (
    CHILD_EMAIL_DOMAIN,
    SupabaseAccessTokens,
    SupabaseAuthProvider,
    child_login_email,
)
from app.adapters.supabase.client import Supabase, SupabaseConfig
from app.adapters.supabase.tokens import SupabaseTokenVerifier
from app.errors import Conflict, ServiceUnavailable
from app.main import create_app
from app.services import session_service
from app.services.session_service import INVALID_LOGIN
from tests.conftest import make_settings
from tests.helpers import API
from tests.helpers.factories import PASSWORD, unique_email
from tests.helpers.sessions import end_reuse_interval
from tests.helpers.supabase_fixtures import (
    ANON_KEY,
    AUTH_URL,
    SERVICE_ROLE_KEY,
    SUPABASE_SETTINGS,
    SUPABASE_URL,
    FakeGoTrue,
    FakeUser,
    SigningKey,
    gotrue_error,
    started,
)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def signing_key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture(scope="module")
async def supabase_app(migrated_database_url: str, data_dir) -> AsyncIterator[FastAPI]:
    """A second app on the same database, configured for a Supabase project."""
    application = create_app(make_settings(migrated_database_url, data_dir, **SUPABASE_SETTINGS))
    async with started(application):
        yield application


@pytest.fixture(scope="module")
async def supabase_client(supabase_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=supabase_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


@pytest.fixture
def gotrue(pg: asyncpg.Pool, signing_key: SigningKey) -> Iterator[FakeGoTrue]:
    # Every outgoing request must hit a route: nothing reaches the network by accident.
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as router:
        yield FakeGoTrue(router, pg, signing_key)


@pytest.fixture
def fresh_verifier(supabase_app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    """A verifier that has not fetched the JWKS yet, as in a newly started process."""
    supabase = supabase_app.state.context.supabase
    assert supabase is not None
    verifier = SupabaseTokenVerifier(SUPABASE_URL, jwt_secret=None, http=supabase.http)
    monkeypatch.setattr(
        supabase_app.state.context,
        "external_tokens",
        SupabaseAccessTokens(verifier, SUPABASE_URL),
    )


@dataclass
class Flows:
    """One app and, for Supabase, its GoTrue: what the parametrized flow tests drive."""

    client: httpx.AsyncClient
    gotrue: FakeGoTrue | None

    async def register(self, role: str = "adult", **body: object) -> dict:
        body.setdefault("email", unique_email(role))
        body.setdefault("password", PASSWORD)
        body.setdefault("display_name", "Ann")
        response = await self.client.post(f"{API}/auth/register/{role}", json=body)
        assert response.status_code == 201, response.text
        return response.json()

    async def login(self, login: str, password: str = PASSWORD) -> httpx.Response:
        return await self.client.post(
            f"{API}/auth/login", json={"email": login, "password": password}
        )


@pytest.fixture(params=["local", "supabase"])
def flows(
    request: pytest.FixtureRequest,
    client: httpx.AsyncClient,
    supabase_client: httpx.AsyncClient,
    pg: asyncpg.Pool,
    signing_key: SigningKey,
) -> Iterator[Flows]:
    if request.param == "local":
        yield Flows(client, None)
        return
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as router:
        yield Flows(supabase_client, FakeGoTrue(router, pg, signing_key))


# --- the same flows with both providers ----------------------------------------------------------


async def test_register_founder_then_login_and_me(flows: Flows):
    email = unique_email("founder")
    body = await flows.register("adult", email=email, family_name="Oaks")
    assert body["email"] == email
    assert body["role"] == "adult"

    me = await flows.client.get(f"{API}/auth/me", headers=bearer(body["tokens"]["access_token"]))
    assert me.status_code == 200, me.text
    assert me.json()["id"] == body["user_id"]

    login = await flows.login(email.upper())
    assert login.status_code == 200, login.text
    assert set(login.json()) >= {"access_token", "refresh_token", "token_type", "expires_in"}

    if flows.gotrue:
        account = flows.gotrue.by_email(email)
        assert account is not None and str(account.id) == body["user_id"]
        assert account.email_confirmed
        assert account.password == PASSWORD
        assert account.app_metadata == {"managed_by": "timeless-love"}
        # The password was checked by Supabase, and the session that opened was closed again.
        assert flows.gotrue.token.call_count == 1
        assert flows.gotrue.logout.call_count == 1
        grant_token = flows.gotrue.token.calls.last.response.json()["access_token"]
        assert flows.gotrue.logout.calls.last.request.headers["authorization"] == (
            f"Bearer {grant_token}"
        )


async def test_wrong_password_and_unknown_login_get_the_same_401(flows: Flows):
    body = await flows.register()
    wrong = await flows.login(body["email"], "not the password at all")
    unknown = await flows.login(unique_email("nobody"))
    for response in (wrong, unknown):
        assert response.status_code == 401, response.text
        assert response.json()["detail"] == INVALID_LOGIN
        assert response.headers["www-authenticate"] == "Bearer"
    if flows.gotrue:
        # The unknown login was also put to Supabase (for an address that cannot exist), so it
        # takes as long as a wrong password.
        asked = [call.request for call in flows.gotrue.token.calls]
        assert len(asked) == 2
        assert f"@{CHILD_EMAIL_DOMAIN}".encode() in asked[1].content


async def test_refresh_rotates_and_detects_reuse(flows: Flows, pg: asyncpg.Pool):
    body = await flows.register()
    old = body["tokens"]["refresh_token"]
    first = await flows.client.post(f"{API}/auth/refresh", json={"refresh_token": old})
    assert first.status_code == 200, first.text
    assert first.json()["refresh_token"] != old
    await end_reuse_interval(pg, old)
    reused = await flows.client.post(f"{API}/auth/refresh", json={"refresh_token": old})
    assert reused.status_code == 401


async def test_accept_invite_then_login(flows: Flows):
    founder = await flows.register()
    headers = bearer(founder["tokens"]["access_token"])
    email = unique_email("teen")
    invite = await flows.client.post(
        f"{API}/invites", json={"email": email, "role": "teen"}, headers=headers
    )
    assert invite.status_code == 201, invite.text
    accepted = await flows.client.post(
        f"{API}/invites/{invite.json()['token']}/accept",
        json={"email": email, "password": PASSWORD, "display_name": "Tom"},
    )
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["family_unit_id"] == founder["family_unit_id"]
    assert accepted.json()["role"] == "teen"
    assert (await flows.login(email)).status_code == 200
    if flows.gotrue:
        assert str(flows.gotrue.by_email(email).id) == accepted.json()["user_id"]


async def test_provisioned_child_logs_in_with_username(flows: Flows, pg: asyncpg.Pool):
    founder = await flows.register()
    provisioned = await flows.client.post(
        f"{API}/auth/provision/child",
        json={"display_name": "Pip"},
        headers=bearer(founder["tokens"]["access_token"]),
    )
    assert provisioned.status_code == 201, provisioned.text
    child = provisioned.json()

    login = await flows.login(child["username"], child["password"])
    assert login.status_code == 200, login.text
    me = await flows.client.get(f"{API}/auth/me", headers=bearer(login.json()["access_token"]))
    assert me.status_code == 200, me.text
    assert me.json()["username"] == child["username"]
    assert me.json()["email"] is None
    assert me.json()["role"] == "child"

    if flows.gotrue:
        # Supabase needs an address; the child's is synthetic and stays out of the profile.
        account = flows.gotrue.users[uuid.UUID(child["user_id"])]
        assert account.email == f"{child['username']}@children.timeless.invalid"
        assert account.email == child_login_email(child["username"])
        assert account.user_metadata == {"username": child["username"]}
        stored = await pg.fetchval(
            "select email from public.user_profiles where id = $1", uuid.UUID(child["user_id"])
        )
        assert stored is None


async def test_duplicate_email_is_409(flows: Flows):
    email = unique_email("twice")
    await flows.register(email=email)
    again = await flows.client.post(
        f"{API}/auth/register/teen",
        json={"email": email.upper(), "password": PASSWORD, "display_name": "Bo"},
    )
    assert again.status_code == 409, again.text
    if flows.gotrue:
        assert flows.gotrue.create.call_count == 1  # refused before Supabase was asked


# --- Supabase down or refusing -------------------------------------------------------------------


async def _leftovers(pg: asyncpg.Pool, email: str, family_name: str) -> tuple[int, int, int]:
    return (
        await pg.fetchval("select count(*) from public.user_profiles where email = $1", email),
        await pg.fetchval("select count(*) from public.family_units where name = $1", family_name),
        await pg.fetchval("select count(*) from auth.users where email = $1", email),
    )


@pytest.mark.parametrize(
    "failure",
    [
        httpx.ConnectTimeout("connect timed out"),
        httpx.ReadTimeout("read timed out"),
        httpx.ConnectError("connection refused"),
        httpx.Response(500, json={"code": 500, "error_code": "unexpected_failure", "msg": "x"}),
        httpx.Response(502, text="Bad Gateway"),
        httpx.Response(503, text="upstream connect error"),
    ],
    ids=["connect-timeout", "read-timeout", "refused", "500", "502", "503"],
)
async def test_register_while_supabase_is_down_is_503_and_leaves_nothing(
    gotrue: FakeGoTrue, supabase_client: httpx.AsyncClient, pg: asyncpg.Pool, failure
):
    if isinstance(failure, httpx.Response):
        gotrue.create.mock(return_value=failure)
    else:
        gotrue.create.mock(side_effect=failure)
    email, family_name = unique_email("down"), f"Down {uuid.uuid4().hex}"
    response = await supabase_client.post(
        f"{API}/auth/register/adult",
        json={
            "email": email,
            "password": PASSWORD,
            "display_name": "D",
            "family_name": family_name,
        },
    )
    assert response.status_code == 503, response.text
    assert "unavailable" in response.json()["detail"]
    assert response.headers["retry-after"]
    assert await _leftovers(pg, email, family_name) == (0, 0, 0)
    assert not gotrue.delete.called


async def test_login_while_supabase_is_down_is_503_not_401(
    gotrue: FakeGoTrue, supabase_client: httpx.AsyncClient
):
    flows = Flows(supabase_client, gotrue)
    body = await flows.register()
    gotrue.token.mock(side_effect=httpx.ReadTimeout("read timed out"))
    response = await flows.login(body["email"])
    assert response.status_code == 503, response.text


async def test_supabase_rate_limit_is_503_with_retry_after(
    gotrue: FakeGoTrue, supabase_client: httpx.AsyncClient
):
    flows = Flows(supabase_client, gotrue)
    body = await flows.register()
    gotrue.token.mock(
        return_value=gotrue_error(429, "over_request_rate_limit", "Request rate limit reached")
    )
    response = await flows.login(body["email"])
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"]


async def test_refused_service_key_is_503_logged_without_the_key(
    gotrue: FakeGoTrue,
    supabase_client: httpx.AsyncClient,
    pg: asyncpg.Pool,
    caplog: pytest.LogCaptureFixture,
):
    gotrue.create.mock(return_value=httpx.Response(401, json={"message": "Invalid API key"}))
    email, family_name = unique_email("key"), f"Key {uuid.uuid4().hex}"
    with caplog.at_level(logging.INFO):
        response = await supabase_client.post(
            f"{API}/auth/register/adult",
            json={
                "email": email,
                "password": PASSWORD,
                "display_name": "K",
                "family_name": family_name,
            },
        )
    assert response.status_code == 503, response.text
    assert any("SUPABASE_SERVICE_ROLE_KEY" in r.getMessage() for r in caplog.records)
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    for secret in (SERVICE_ROLE_KEY, ANON_KEY, PASSWORD):
        assert secret not in logged
        assert secret not in response.text
    assert await _leftovers(pg, email, family_name) == (0, 0, 0)


async def test_address_supabase_already_knows_is_409_and_that_account_is_kept(
    gotrue: FakeGoTrue, supabase_client: httpx.AsyncClient
):
    email = unique_email("known")
    stranger = FakeUser(uuid.uuid4(), email, "their own password", {}, {}, True)
    gotrue.users[stranger.id] = stranger
    response = await supabase_client.post(
        f"{API}/auth/register/adult",
        json={"email": email, "password": PASSWORD, "display_name": "K"},
    )
    assert response.status_code == 409, response.text
    assert not gotrue.delete.called  # someone else's account is never removed
    assert stranger.id in gotrue.users


async def test_password_supabase_rejects_is_422_with_its_reason(
    gotrue: FakeGoTrue, supabase_client: httpx.AsyncClient
):
    reason = "Password should contain at least one character of each: abc, 123."
    gotrue.create.mock(
        return_value=httpx.Response(
            422,
            json={
                "code": 422,
                "error_code": "weak_password",
                "msg": reason,
                "weak_password": {"reasons": ["characters"]},
            },
        )
    )
    response = await supabase_client.post(
        f"{API}/auth/register/adult",
        json={"email": unique_email("weak"), "password": PASSWORD, "display_name": "W"},
    )
    assert response.status_code == 422, response.text
    assert reason in response.json()["detail"]


# --- a registration failing after Supabase created the account -----------------------------------


async def test_profile_conflict_after_account_creation_deletes_the_account(
    gotrue: FakeGoTrue, supabase_client: httpx.AsyncClient, pg: asyncpg.Pool
):
    """Someone registers the same address between our check and our profile insert."""
    email = unique_email("race")
    rival_id = uuid.uuid4()
    create_account = gotrue.create.side_effect

    async def create_while_a_rival_registers(request: httpx.Request) -> httpx.Response:
        response = await create_account(request)
        await pg.execute("insert into auth.users (id, email) values ($1, 'rival')", rival_id)
        family = await pg.fetchval(
            "insert into public.family_units (name) values ('Rivals') returning id"
        )
        await pg.execute(
            "insert into public.user_profiles (id, family_unit_id, role, display_name, email)"
            " values ($1, $2, 'adult', 'Rival', $3)",
            rival_id,
            family,
            email,
        )
        return response

    gotrue.create.mock(side_effect=create_while_a_rival_registers)
    response = await supabase_client.post(
        f"{API}/auth/register/adult",
        json={"email": email, "password": PASSWORD, "display_name": "Late"},
    )
    assert response.status_code == 409, response.text
    created_id = gotrue.create.calls.last.response.json()["id"]
    assert gotrue.delete.call_count == 1
    assert gotrue.delete.calls.last.request.url.path.endswith(f"/admin/users/{created_id}")
    assert gotrue.users == {}
    assert (
        await pg.fetchval("select count(*) from auth.users where id = $1", uuid.UUID(created_id))
        == 0
    )
    profile_owner = await pg.fetchval("select id from public.user_profiles where email = $1", email)
    assert profile_owner == rival_id


async def test_unexpected_profile_failure_deletes_the_account_and_leaves_no_family(
    gotrue: FakeGoTrue, supabase_client: httpx.AsyncClient, pg: asyncpg.Pool
):
    # GoTrue answers but its row is missing: the family insert breaks its foreign key.
    gotrue.writes_auth_users = False
    email, family_name = unique_email("fk"), f"Fk {uuid.uuid4().hex}"
    response = await supabase_client.post(
        f"{API}/auth/register/adult",
        json={
            "email": email,
            "password": PASSWORD,
            "display_name": "F",
            "family_name": family_name,
        },
    )
    assert response.status_code == 500
    assert "traceback" not in response.text.lower()
    assert gotrue.delete.call_count == 1
    assert gotrue.users == {}
    assert await _leftovers(pg, email, family_name) == (0, 0, 0)


async def test_failure_after_the_profile_deletes_the_account_too(
    gotrue: FakeGoTrue,
    supabase_client: httpx.AsyncClient,
    pg: asyncpg.Pool,
    monkeypatch: pytest.MonkeyPatch,
):
    async def tokens_fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("token issuance broke")

    monkeypatch.setattr(session_service, "issue_tokens", tokens_fail)
    email, family_name = unique_email("late"), f"Late {uuid.uuid4().hex}"
    response = await supabase_client.post(
        f"{API}/auth/register/adult",
        json={
            "email": email,
            "password": PASSWORD,
            "display_name": "L",
            "family_name": family_name,
        },
    )
    assert response.status_code == 500
    assert gotrue.delete.call_count == 1
    assert gotrue.users == {}
    assert await _leftovers(pg, email, family_name) == (0, 0, 0)


async def test_compensating_delete_is_retried_through_a_blip(
    gotrue: FakeGoTrue,
    supabase_client: httpx.AsyncClient,
    pg: asyncpg.Pool,
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setattr(SupabaseAuthProvider, "delete_retry_delays", (0.0, 0.0))
    delete_account = gotrue.delete.side_effect
    gotrue.delete.mock(side_effect=[httpx.ReadTimeout("blip"), delete_account])
    gotrue.writes_auth_users = False
    email, family_name = unique_email("blip"), f"Blip {uuid.uuid4().hex}"
    response = await supabase_client.post(
        f"{API}/auth/register/adult",
        json={
            "email": email,
            "password": PASSWORD,
            "display_name": "B",
            "family_name": family_name,
        },
    )
    assert response.status_code == 500
    assert gotrue.delete.call_count == 2
    assert gotrue.users == {}


# --- the provider's reading of GoTrue's answers --------------------------------------------------
# Error bodies, from supabase/auth internal/api/errors.go: HTTPError `{"code": <status>,
# "error_code", "msg"}` (current), the same without `error_code` (before error codes, 2023),
# HTTPErrorResponse20240101 `{"code": "<error code>", "message"}` (clients sending
# X-Supabase-Api-Version: 2024-01-01), and OAuthError `{"error", "error_description"}` (the token
# endpoint of older versions).


@pytest.fixture
async def provider() -> AsyncIterator[SupabaseAuthProvider]:
    supabase = Supabase(SupabaseConfig(SUPABASE_URL, SERVICE_ROLE_KEY, ANON_KEY))
    yield SupabaseAuthProvider(supabase)
    await supabase.aclose()


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as mock_router:
        yield mock_router


@pytest.mark.parametrize(
    "body",
    [
        {"code": 400, "error_code": "invalid_credentials", "msg": "Invalid login credentials"},
        {"error": "invalid_grant", "error_description": "Invalid login credentials"},
        {"code": "invalid_credentials", "message": "Invalid login credentials"},
        {"code": 400, "error_code": "email_not_confirmed", "msg": "Email not confirmed"},
    ],
    ids=["current", "before-error-codes", "api-2024-01-01", "unconfirmed"],
)
async def test_refusals_of_the_password_grant_are_false(
    provider: SupabaseAuthProvider, router: respx.MockRouter, body
):
    router.post(f"{AUTH_URL}/token").mock(return_value=httpx.Response(400, json=body))
    ok = await provider.check_password(
        user_id=uuid.uuid4(), email="a@example.com", username=None, password=PASSWORD
    )
    assert ok is False


async def test_password_grant_for_another_account_is_false(
    provider: SupabaseAuthProvider, router: respx.MockRouter
):
    other = {"id": str(uuid.uuid4()), "email": "a@example.com"}
    router.post(f"{AUTH_URL}/token").mock(
        return_value=httpx.Response(200, json={"access_token": "t", "user": other})
    )
    logout = router.post(f"{AUTH_URL}/logout").mock(return_value=httpx.Response(204))
    ok = await provider.check_password(
        user_id=uuid.uuid4(), email="a@example.com", username=None, password=PASSWORD
    )
    assert ok is False
    assert logout.called


@pytest.mark.parametrize(
    "body",
    [{"code": 422, "error_code": "email_provider_disabled", "msg": "Email logins are disabled"}],
)
async def test_email_sign_in_turned_off_is_503_not_a_wrong_password(
    provider: SupabaseAuthProvider, router: respx.MockRouter, caplog: pytest.LogCaptureFixture, body
):
    router.post(f"{AUTH_URL}/token").mock(return_value=httpx.Response(422, json=body))
    with pytest.raises(ServiceUnavailable):
        await provider.check_password(
            user_id=uuid.uuid4(), email="a@example.com", username=None, password=PASSWORD
        )
    assert any("Email provider" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "body",
    [
        {"code": 422, "error_code": "email_exists", "msg": "Email address already registered"},
        {"code": 422, "msg": "A user with this email address has already been registered"},
        {
            "code": "email_exists",
            "message": "A user with this email address has already been registered",
        },
        {"code": 422, "error_code": "user_already_exists", "msg": "User already registered"},
    ],
    ids=["current", "before-error-codes", "api-2024-01-01", "user-already-exists"],
)
async def test_every_shape_of_email_taken_is_a_conflict(
    provider: SupabaseAuthProvider, router: respx.MockRouter, body
):
    router.post(f"{AUTH_URL}/admin/users").mock(return_value=httpx.Response(422, json=body))
    with pytest.raises(Conflict):
        await provider.create_user(email="a@example.com", username=None, password=PASSWORD)


async def test_deleting_an_account_already_gone_is_fine(
    provider: SupabaseAuthProvider, router: respx.MockRouter
):
    user_id = uuid.uuid4()
    route = router.delete(f"{AUTH_URL}/admin/users/{user_id}").mock(
        return_value=gotrue_error(404, "user_not_found", "User not found")
    )
    await provider.delete_user(user_id)
    assert route.call_count == 1


async def test_a_refused_delete_is_not_retried_and_is_reported(
    provider: SupabaseAuthProvider, router: respx.MockRouter, caplog: pytest.LogCaptureFixture
):
    user_id = uuid.uuid4()
    route = router.delete(f"{AUTH_URL}/admin/users/{user_id}").mock(
        return_value=httpx.Response(403, json={"code": 403, "error_code": "not_admin", "msg": "no"})
    )
    with pytest.raises(ServiceUnavailable):
        await provider.delete_user(user_id)
    assert route.call_count == 1
    assert any(str(user_id) in r.getMessage() for r in caplog.records)


# --- Supabase access tokens as bearer tokens -----------------------------------------------------


async def test_supabase_token_of_a_member_reads_their_profile(
    gotrue: FakeGoTrue,
    supabase_client: httpx.AsyncClient,
    signing_key: SigningKey,
    fresh_verifier: None,
):
    member = await Flows(supabase_client, gotrue).register("grandparent")
    token = signing_key.token(member["user_id"])
    me = await supabase_client.get(f"{API}/auth/me", headers=bearer(token))
    assert me.status_code == 200, me.text
    assert me.json()["id"] == member["user_id"]
    # Role and family come from the profile: the token carries neither.
    assert me.json()["role"] == "grandparent"
    assert me.json()["family_unit_id"] == member["family_unit_id"]
    assert gotrue.jwks.call_count == 1
    family = await supabase_client.get(f"{API}/families/me", headers=bearer(token))
    assert family.status_code == 200, family.text
    assert family.json()["id"] == member["family_unit_id"]


async def test_supabase_token_of_an_account_without_profile_is_401(
    gotrue: FakeGoTrue,
    supabase_client: httpx.AsyncClient,
    signing_key: SigningKey,
    fresh_verifier: None,
):
    response = await supabase_client.get(
        f"{API}/auth/me", headers=bearer(signing_key.token(uuid.uuid4()))
    )
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"


async def test_supabase_token_of_a_removed_member_is_401(
    gotrue: FakeGoTrue,
    supabase_client: httpx.AsyncClient,
    signing_key: SigningKey,
    pg: asyncpg.Pool,
    fresh_verifier: None,
):
    member = await Flows(supabase_client, gotrue).register()
    await pg.execute(
        "update public.user_profiles set removed_at = now() where id = $1",
        uuid.UUID(member["user_id"]),
    )
    response = await supabase_client.get(
        f"{API}/auth/me", headers=bearer(signing_key.token(member["user_id"]))
    )
    assert response.status_code == 401, response.text


@pytest.mark.parametrize("problem", ["expired", "foreign-key", "wrong-audience"])
async def test_invalid_supabase_tokens_are_401(
    gotrue: FakeGoTrue,
    supabase_client: httpx.AsyncClient,
    signing_key: SigningKey,
    fresh_verifier: None,
    problem: str,
):
    member = await Flows(supabase_client, gotrue).register()
    if problem == "expired":
        token = signing_key.token(member["user_id"], expires_in=-60)
    elif problem == "foreign-key":
        token = SigningKey.generate().token(member["user_id"])
    else:
        token = signing_key.token(member["user_id"], aud="somebody-else")
    response = await supabase_client.get(f"{API}/auth/me", headers=bearer(token))
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    # Only an expired token is worth a refresh (docs/api.md, "Errors").
    expected = "token_expired" if problem == "expired" else "not_authenticated"
    assert response.json()["code"] == expected


@pytest.mark.parametrize(
    "outage",
    [httpx.ConnectError("refused"), httpx.Response(503, text="unavailable")],
    ids=["unreachable", "503"],
)
async def test_supabase_token_while_the_key_set_is_unreachable_is_503(
    gotrue: FakeGoTrue,
    supabase_client: httpx.AsyncClient,
    signing_key: SigningKey,
    fresh_verifier: None,
    outage,
):
    member = await Flows(supabase_client, gotrue).register()
    if isinstance(outage, httpx.Response):
        gotrue.jwks.mock(return_value=outage)
    else:
        gotrue.jwks.mock(side_effect=outage)
    response = await supabase_client.get(
        f"{API}/auth/me", headers=bearer(signing_key.token(member["user_id"]))
    )
    assert response.status_code == 503, response.text
    # The backend's own tokens do not depend on Supabase at all.
    own = await supabase_client.get(
        f"{API}/auth/me", headers=bearer(member["tokens"]["access_token"])
    )
    assert own.status_code == 200, own.text


# --- wiring --------------------------------------------------------------------------------------


async def test_supabase_settings_select_the_supabase_provider_and_close_its_client(
    migrated_database_url: str, data_dir
):
    application = create_app(make_settings(migrated_database_url, data_dir, **SUPABASE_SETTINGS))
    async with started(application):
        context = application.state.context
        assert isinstance(context.auth_provider, SupabaseAuthProvider)
        assert isinstance(context.external_tokens, SupabaseAccessTokens)
        http = context.supabase.http
        assert not http.is_closed
    assert http.is_closed


def test_built_in_settings_keep_the_built_in_provider(app: FastAPI):
    context = app.state.context
    assert not isinstance(context.auth_provider, SupabaseAuthProvider)
    assert context.external_tokens is None
    assert context.supabase is None


def test_config_keeps_keys_out_of_its_repr_and_puts_them_in_the_right_headers():
    config = SupabaseConfig(SUPABASE_URL + "/", SERVICE_ROLE_KEY, ANON_KEY, jwt_secret="jwt-secret")
    assert SERVICE_ROLE_KEY not in repr(config)
    assert ANON_KEY not in repr(config)
    assert "jwt-secret" not in repr(config)
    assert config.service_headers() == {
        "apikey": SERVICE_ROLE_KEY,
        "Authorization": f"Bearer {SERVICE_ROLE_KEY}",
    }
    assert config.public_headers() == {"apikey": ANON_KEY}
    without_anon = SupabaseConfig(SUPABASE_URL, SERVICE_ROLE_KEY)
    assert without_anon.public_headers() == {"apikey": SERVICE_ROLE_KEY}


# --- accounts: reset, password change and closing with Supabase Auth ---------------------------


async def _supabase_member(gotrue: FakeGoTrue, client: httpx.AsyncClient) -> dict:
    return await Flows(client, gotrue).register()


async def _dead(client: httpx.AsyncClient, tokens: dict) -> None:
    me = await client.get(f"{API}/auth/me", headers=bearer(tokens["access_token"]))
    assert me.status_code == 401
    refreshed = await client.post(
        f"{API}/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert refreshed.status_code == 401


async def test_reset_asks_supabase_to_mail_the_link_for_known_and_unknown_alike(
    gotrue: FakeGoTrue, supabase_client: httpx.AsyncClient, pg: asyncpg.Pool
):
    body = await _supabase_member(gotrue, supabase_client)
    nobody = unique_email("nobody")
    for address in (body["email"], nobody):
        response = await supabase_client.post(f"{API}/auth/password-reset", json={"email": address})
        assert response.status_code == 202, response.text
    assert gotrue.recovered == [body["email"], nobody]  # the same call for both
    request = gotrue.recover.calls[0].request
    assert request.url.params["redirect_to"] == "http://localhost:5173/reset-password"
    assert request.headers["apikey"] == ANON_KEY
    # Supabase mails it: nothing goes into our outbox, no token of ours is made.
    assert (
        await pg.fetchval(
            "select count(*) from app.mail_outbox where to_address = $1", body["email"]
        )
        == 0
    )


async def test_reset_hides_supabase_refusals_about_an_address(
    gotrue: FakeGoTrue, supabase_client: httpx.AsyncClient
):
    body = await _supabase_member(gotrue, supabase_client)
    gotrue.recover.mock(
        return_value=gotrue_error(
            429,
            "over_email_send_rate_limit",
            "For security purposes, you can only request this once every 60 seconds",
        )
    )
    response = await supabase_client.post(
        f"{API}/auth/password-reset", json={"email": body["email"]}
    )
    assert response.status_code == 202  # a 429 only known accounts get must not show


async def test_reset_while_supabase_is_down_is_503(
    gotrue: FakeGoTrue, supabase_client: httpx.AsyncClient
):
    gotrue.recover.mock(side_effect=httpx.ConnectTimeout("connect timed out"))
    response = await supabase_client.post(
        f"{API}/auth/password-reset", json={"email": unique_email("x")}
    )
    assert response.status_code == 503


async def test_confirming_with_the_recovery_token_sets_the_password_and_ends_every_login(
    gotrue: FakeGoTrue, supabase_client: httpx.AsyncClient
):
    body = await _supabase_member(gotrue, supabase_client)
    other = (await Flows(supabase_client, gotrue).login(body["email"])).json()
    token = gotrue.recovery_token_for(body["email"])
    confirm = f"{API}/auth/password-reset/confirm"

    done = await supabase_client.post(confirm, json={"token": token, "new_password": "x" * 10})
    assert done.status_code == 204, done.text
    assert gotrue.by_email(body["email"]).password == "x" * 10
    await _dead(supabase_client, body["tokens"])
    await _dead(supabase_client, other)
    global_logout = gotrue.logout.calls.last.request
    assert global_logout.url.params["scope"] == "global"
    assert global_logout.headers["authorization"] == f"Bearer {token}"

    same = await supabase_client.post(confirm, json={"token": token, "new_password": "x" * 10})
    assert same.status_code == 422  # GoTrue's same_password
    unknown = await supabase_client.post(
        confirm, json={"token": "not-a-recovery-token", "new_password": "a fine passphrase"}
    )
    assert unknown.status_code == 400
    assert unknown.json()["code"] == "reset_token_invalid"


async def test_password_change_with_supabase_checks_then_sets_through_the_admin_api(
    gotrue: FakeGoTrue, supabase_client: httpx.AsyncClient
):
    body = await _supabase_member(gotrue, supabase_client)
    other = (await Flows(supabase_client, gotrue).login(body["email"])).json()
    headers = bearer(body["tokens"]["access_token"])
    wrong = await supabase_client.post(
        f"{API}/auth/password",
        json={"current_password": "not the password", "new_password": "a new passphrase"},
        headers=headers,
    )
    assert wrong.status_code == 400 and wrong.json()["code"] == "invalid_credentials"
    assert not gotrue.update.called
    changed = await supabase_client.post(
        f"{API}/auth/password",
        json={"current_password": PASSWORD, "new_password": "a new passphrase"},
        headers=headers,
    )
    assert changed.status_code == 204, changed.text
    assert gotrue.by_email(body["email"]).password == "a new passphrase"
    assert gotrue.update.calls.last.request.headers["apikey"] == SERVICE_ROLE_KEY
    await _dead(supabase_client, other)
    me = await supabase_client.get(f"{API}/auth/me", headers=headers)
    assert me.status_code == 200  # this login goes on


async def test_deleting_the_account_soft_deletes_it_in_supabase(
    gotrue: FakeGoTrue, supabase_client: httpx.AsyncClient, pg: asyncpg.Pool
):
    founder = await _supabase_member(gotrue, supabase_client)
    headers = bearer(founder["tokens"]["access_token"])
    email = unique_email("teen")
    invite = await supabase_client.post(
        f"{API}/invites", json={"email": email, "role": "teen"}, headers=headers
    )
    teen = (
        await supabase_client.post(
            f"{API}/invites/{invite.json()['token']}/accept",
            json={"email": email, "password": PASSWORD, "display_name": "Tom"},
        )
    ).json()
    response = await supabase_client.delete(
        f"{API}/auth/me",
        params={"memories": "keep"},
        headers=bearer(teen["tokens"]["access_token"]),
    )
    assert response.status_code == 204, response.text
    deletion = gotrue.delete.calls.last.request
    assert deletion.url.path.endswith(teen["user_id"])
    assert json.loads(deletion.content) == {"should_soft_delete": True}
    assert gotrue.by_email(email) is None  # the address is free again in Supabase Auth
    # The profile (and its key in auth.users) stays, so what the teen left keeps an author.
    assert await pg.fetchval(
        "select removed_at is not null from public.user_profiles where id = $1",
        uuid.UUID(teen["user_id"]),
    )
    await _dead(supabase_client, teen["tokens"])


async def test_closing_the_account_while_supabase_is_down_changes_nothing(
    gotrue: FakeGoTrue, supabase_client: httpx.AsyncClient
):
    founder = await _supabase_member(gotrue, supabase_client)
    gotrue.delete.mock(side_effect=httpx.ConnectError("connection refused"))
    headers = bearer(founder["tokens"]["access_token"])
    response = await supabase_client.delete(
        f"{API}/auth/me", params={"memories": "delete"}, headers=headers
    )
    assert response.status_code == 503
    me = await supabase_client.get(f"{API}/auth/me", headers=headers)
    assert me.status_code == 200  # nothing was committed: still a member, still signed in


# --- an unknown login costs a password hash too (review item 15) ----------------------------------


async def test_an_unknown_login_is_checked_against_a_decoy_account_that_exists(
    pg: asyncpg.Pool, signing_key: SigningKey, caplog: pytest.LogCaptureFixture
):
    """GoTrue refuses an address it does not know before hashing: a real account is needed.

    Asking about an address that cannot exist (what this did before) came back without any
    password hash, measurably faster than a member's wrong password.
    """
    supabase = Supabase(SupabaseConfig(SUPABASE_URL, SERVICE_ROLE_KEY, ANON_KEY))
    provider = SupabaseAuthProvider(supabase)
    try:
        with (
            respx.mock(assert_all_called=False, assert_all_mocked=True) as router,
            caplog.at_level(logging.DEBUG),
        ):
            gotrue = FakeGoTrue(router, pg, signing_key)
            for _ in range(3):
                refused = await provider.check_password(
                    user_id=None, email=None, username=None, password="a guess"
                )
                assert refused is False
    finally:
        await supabase.aclose()

    asked = [call.request for call in gotrue.token.calls]
    decoys = [user for user in gotrue.users.values() if user.app_metadata.get("decoy")]
    assert len(decoys) == 1 and gotrue.create.call_count == 1  # created once, then reused
    decoy = decoys[0]
    assert decoy.email.endswith(f"@{CHILD_EMAIL_DOMAIN}") and decoy.email_confirmed
    assert decoy.app_metadata == {"managed_by": "timeless-love", "decoy": True}
    # Every unknown login was put to GoTrue as a password check on that existing account.
    assert [json.loads(request.content)["email"] for request in asked] == [decoy.email] * 3
    # Its password is random and went nowhere but GoTrue.
    assert len(decoy.password) >= 40
    assert decoy.password not in "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)


async def test_the_decoy_that_already_exists_is_used_as_it_is(
    pg: asyncpg.Pool, signing_key: SigningKey
):
    supabase = Supabase(SupabaseConfig(SUPABASE_URL, SERVICE_ROLE_KEY, ANON_KEY))
    provider = SupabaseAuthProvider(supabase)
    try:
        with respx.mock(assert_all_called=False, assert_all_mocked=True) as router:
            gotrue = FakeGoTrue(router, pg, signing_key)
            # Another process (or an earlier start) made it.
            await SupabaseAuthProvider(supabase).check_password(
                user_id=None, email=None, username=None, password="x"
            )
            assert not await provider.check_password(
                user_id=None, email=None, username=None, password="y"
            )
    finally:
        await supabase.aclose()
    assert gotrue.create.call_count == 2  # the second answered email_exists, which is fine
    assert len(gotrue.users) == 1
    assert [json.loads(c.request.content)["email"] for c in gotrue.token.calls] == [
        next(iter(gotrue.users.values())).email
    ] * 2
