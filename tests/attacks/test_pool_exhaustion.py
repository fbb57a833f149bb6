"""Account creations cannot exhaust the connection pool, and a shortage is a 503, not a hang.

The last review found that registering, accepting an invite, registering a child and
provisioning a child each held one pooled connection (their transaction) while the built-in
auth provider wrote `auth.users` on a second one (and a child's username was chosen on a
third): as many such requests at once as the pool had connections each waited for ever, and
so did every other request of the process. Each now runs on the caller's one connection, and
`pool.acquire` gives up after `DATABASE_ACQUIRE_TIMEOUT` seconds with `503 database_busy`.

A hang is detected with `asyncio.wait_for`: a deadlocked request never answers.
"""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.main import create_app
from tests.conftest import make_settings
from tests.helpers import API
from tests.helpers.accounts import create_invite, register_founder
from tests.helpers.factories import PASSWORD, unique_email

# Long enough for a loaded machine to answer; a deadlocked request never does.
HANG = 120
POOL = 3


async def _app(url: str, data_dir: Any, **overrides: object) -> AsyncIterator[FastAPI]:
    settings = make_settings(url, data_dir, **overrides)
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def small_pool(migrated_database_url, data_dir) -> AsyncIterator[httpx.AsyncClient]:
    # The acquire timeout is far beyond what waiting one's turn takes, so a 503 here means a
    # request held a connection while it waited for another.
    async for application in _app(
        migrated_database_url,
        data_dir,
        database_pool_min=1,
        database_pool_max=POOL,
        database_acquire_timeout=HANG / 2,
    ):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            yield c


async def _accept(client: httpx.AsyncClient, invite: dict[str, Any]) -> httpx.Response:
    body = {"email": invite["email"], "password": PASSWORD, "display_name": "Joiner"}
    return await client.post(f"{API}/invites/{invite['token']}/accept", json=body)


async def _register_child(client: httpx.AsyncClient, invite: dict[str, Any]) -> httpx.Response:
    body = {"invite_token": invite["token"], "password": PASSWORD, "display_name": "Kid"}
    return await client.post(f"{API}/auth/register/child", json=body)


async def _provision(client: httpx.AsyncClient, adult: dict[str, Any]) -> httpx.Response:
    return await client.post(
        f"{API}/auth/provision/child",
        json={"display_name": "Provisioned"},
        headers={"Authorization": f"Bearer {adult['tokens']['access_token']}"},
    )


async def test_every_account_creation_needs_only_one_connection(migrated_database_url, data_dir):
    # With a pool of one connection, any request that takes a second one waits for ever.
    async for application in _app(
        migrated_database_url,
        data_dir,
        database_pool_min=1,
        database_pool_max=1,
        database_acquire_timeout=HANG / 2,
    ):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as one:
            adult = await asyncio.wait_for(register_founder(one, "Burst"), HANG)
            adult_invite = await create_invite(one, adult, "adult")
            child_invite = await create_invite(one, adult, "child")
            for attempt in (
                _accept(one, adult_invite),
                _register_child(one, child_invite),
                _provision(one, adult),
            ):
                response = await asyncio.wait_for(attempt, HANG)
                assert response.status_code == 201, response.text


async def test_three_times_the_pool_of_registrations_at_once_all_get_in(small_pool):
    responses = await asyncio.wait_for(
        asyncio.gather(*(_raw_register(small_pool) for _ in range(3 * POOL))), HANG
    )
    assert [r.status_code for r in responses] == [201] * (3 * POOL), [r.text for r in responses]


async def _raw_register(client: httpx.AsyncClient) -> httpx.Response:
    body = {"email": unique_email(), "password": PASSWORD, "display_name": "Burst"}
    return await client.post(f"{API}/auth/register/adult", json=body)


async def test_three_times_the_pool_of_every_account_creation_at_once(small_pool):
    adult = await asyncio.wait_for(register_founder(small_pool, "Burst"), HANG)
    adult_invites = [await create_invite(small_pool, adult, "adult") for _ in range(POOL)]
    child_invites = [await create_invite(small_pool, adult, "child") for _ in range(POOL)]
    attempts = [
        *(_accept(small_pool, invite) for invite in adult_invites),
        *(_register_child(small_pool, invite) for invite in child_invites),
        *(_provision(small_pool, adult) for _ in range(POOL)),
        *(_raw_register(small_pool) for _ in range(POOL)),
    ]
    responses = await asyncio.wait_for(asyncio.gather(*attempts), HANG)
    assert [r.status_code for r in responses] == [201] * len(attempts), [r.text for r in responses]


async def test_a_pool_shortage_is_a_503_with_retry_after_not_a_hang(
    migrated_database_url, data_dir, factory
):
    family = await factory.family(["adult"])
    async for application in _app(
        migrated_database_url,
        data_dir,
        database_pool_min=1,
        database_pool_max=1,
        database_acquire_timeout=0.5,
    ):
        pool = application.state.context.database.pool
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as one:
            held = await pool.acquire()  # the pool's only connection, held by someone else
            try:
                busy = await asyncio.wait_for(
                    one.get(f"{API}/families/me", headers=family.adult.headers), HANG
                )
            finally:
                await pool.release(held)
            assert busy.status_code == 503, busy.text
            assert busy.json()["code"] == "database_busy"
            assert int(busy.headers["retry-after"]) >= 1
            # Nothing stays broken once the connection is back.
            again = await one.get(f"{API}/families/me", headers=family.adult.headers)
            assert again.status_code == 200, again.text


async def test_a_registration_failing_after_the_account_exists_leaves_no_account(
    app, client, pg, monkeypatch
):
    # The built-in account is written in the registration's own transaction: when a later
    # step fails, the rollback takes the account too; no compensating delete is needed.
    async def no_tokens(*args: object, **kwargs: object) -> None:
        raise RuntimeError("issuing tokens failed")

    async def no_delete(user_id: object) -> None:
        raise AssertionError("the rollback should have removed the account")

    provider = app.state.context.auth_provider
    monkeypatch.setattr("app.services.session_service.issue_tokens", no_tokens)
    monkeypatch.setattr(provider, "delete_user", no_delete)
    email = unique_email()
    body = {"email": email, "password": PASSWORD, "display_name": "Half"}
    response = await client.post(f"{API}/auth/register/adult", json=body)
    assert response.status_code == 500
    assert await pg.fetchval("select count(*) from auth.users where email = $1", email) == 0
    assert (
        await pg.fetchval("select count(*) from public.user_profiles where email = $1", email) == 0
    )
