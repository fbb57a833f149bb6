"""Several tabs refreshing one login at once (docs/api.md, "Auth": the reuse interval).

Tabs of one browser share the refresh token in storage; when the access token expires they
all refresh with it at the same moment. Within REFRESH_REUSE_INTERVAL_SECONDS of the first
rotation each of them gets a valid pair for the same login; after it, presenting the token
again is theft and ends the whole login, as before.
"""

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from jose import jwt

from app.main import create_app
from tests.conftest import make_settings
from tests.helpers import API
from tests.helpers.factories import Factory, Member
from tests.helpers.sessions import end_reuse_interval


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def session_of(access_token: str) -> str:
    sid: str = jwt.get_unverified_claims(access_token)["sid"]
    return sid


async def refresh(client: httpx.AsyncClient, refresh_token: str) -> httpx.Response:
    return await client.post(f"{API}/auth/refresh", json={"refresh_token": refresh_token})


@pytest.mark.parametrize("tabs", [2, 5])
async def test_tabs_refreshing_at_once_all_get_a_working_pair_for_the_same_login(
    client: httpx.AsyncClient, factory: Factory, tabs: int
) -> None:
    member = await factory.register("adult")
    responses = await asyncio.gather(*(refresh(client, member.refresh_token) for _ in range(tabs)))
    assert [r.status_code for r in responses] == [200] * tabs, [r.text for r in responses]
    pairs = [r.json() for r in responses]
    # Same login: every access token names the session the registration started.
    assert {session_of(p["access_token"]) for p in pairs} == {session_of(member.access_token)}
    assert len({p["refresh_token"] for p in pairs}) == tabs
    for pair in pairs:
        me = await client.get(f"{API}/auth/me", headers=bearer(pair["access_token"]))
        assert me.status_code == 200, me.text
    # Each tab keeps refreshing with its own token afterwards.
    for pair in pairs:
        assert (await refresh(client, pair["refresh_token"])).status_code == 200
    # And the registration's own access token was never revoked.
    assert (await client.get(f"{API}/auth/me", headers=member.headers)).status_code == 200


async def test_a_tab_refreshing_a_moment_later_is_not_taken_for_a_thief(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    member = await factory.register("adult")
    first = await refresh(client, member.refresh_token)
    later = await refresh(client, member.refresh_token)
    assert (first.status_code, later.status_code) == (200, 200), later.text
    me = await client.get(f"{API}/auth/me", headers=bearer(first.json()["access_token"]))
    assert me.status_code == 200


async def test_reuse_after_the_interval_is_theft_and_ends_the_login(
    client: httpx.AsyncClient, factory: Factory, pg
) -> None:
    member = await factory.register("adult")
    first = await refresh(client, member.refresh_token)
    assert first.status_code == 200
    pair = first.json()
    await end_reuse_interval(pg, member.refresh_token)

    replay = await refresh(client, member.refresh_token)
    assert replay.status_code == 401
    assert replay.json()["code"] == "token_revoked"
    for access_token in (member.access_token, pair["access_token"]):
        me = await client.get(f"{API}/auth/me", headers=bearer(access_token))
        assert me.status_code == 401
    assert (await refresh(client, pair["refresh_token"])).status_code == 401


async def test_reuse_by_concurrent_tabs_after_the_interval_is_still_theft(
    client: httpx.AsyncClient, factory: Factory, pg
) -> None:
    member = await factory.register("adult")
    assert (await refresh(client, member.refresh_token)).status_code == 200
    await end_reuse_interval(pg, member.refresh_token)
    responses = await asyncio.gather(*(refresh(client, member.refresh_token) for _ in range(3)))
    assert [r.status_code for r in responses] == [401] * 3
    assert (await client.get(f"{API}/auth/me", headers=member.headers)).status_code == 401


async def test_a_revoked_login_gets_nothing_even_within_the_interval(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    member = await factory.register("adult")
    assert (await refresh(client, member.refresh_token)).status_code == 200
    logout = await client.post(f"{API}/auth/logout", headers=member.headers)
    assert logout.status_code == 204
    assert (await refresh(client, member.refresh_token)).status_code == 401


# The interval is a setting: 0 turns the allowance off ----------------------------------------


@pytest.fixture(scope="module")
async def strict_client(migrated_database_url, data_dir) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(migrated_database_url, data_dir, refresh_reuse_interval_seconds=0)
    application: FastAPI = create_app(settings)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            yield c


async def test_with_no_interval_any_reuse_is_theft(strict_client: httpx.AsyncClient) -> None:
    member: Member = await Factory(strict_client).register("adult")
    assert (await refresh(strict_client, member.refresh_token)).status_code == 200
    replay = await refresh(strict_client, member.refresh_token)
    assert replay.status_code == 401
    assert replay.json()["code"] == "token_revoked"
