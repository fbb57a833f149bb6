"""Logins a member can see and end, password change, log out everywhere (built-in auth)."""

import uuid

import asyncpg
import httpx

from tests.helpers import API
from tests.helpers.accounts import Login, assert_alive, assert_dead, sign_in
from tests.helpers.factories import PASSWORD, Factory

NEW_PASSWORD = "a brand new passphrase"


async def _member_with_logins(factory: Factory, client: httpx.AsyncClient, n: int = 2):
    member = await factory.register("adult")
    first = Login(member.access_token, member.refresh_token)
    others = [await sign_in(client, member.email, PASSWORD, f"Phone {i}") for i in range(n)]
    return member, first, others


# Sessions ------------------------------------------------------------------------------


async def test_sessions_lists_every_login_newest_first_with_the_current_one_marked(
    client: httpx.AsyncClient, factory: Factory
):
    _member, _first, (phone0, _phone1) = await _member_with_logins(factory, client)
    response = await client.get(f"{API}/auth/sessions", headers=phone0.headers)
    assert response.status_code == 200, response.text
    sessions = response.json()
    assert len(sessions) == 3
    assert [s["user_agent"] for s in sessions] == ["Phone 1", "Phone 0", None]
    assert [s["current"] for s in sessions] == [False, True, False]
    assert set(sessions[0]) == {"id", "created_at", "last_used_at", "user_agent", "current"}
    created = [s["created_at"] for s in sessions]
    assert created == sorted(created, reverse=True)


async def test_a_login_that_ended_is_not_listed(client: httpx.AsyncClient, factory: Factory):
    _member, first, (_phone0, phone1) = await _member_with_logins(factory, client)
    await client.post(f"{API}/auth/logout", headers=phone1.headers)
    sessions = (await client.get(f"{API}/auth/sessions", headers=first.headers)).json()
    assert [s["user_agent"] for s in sessions] == ["Phone 0", None]


async def test_ending_one_login_kills_its_tokens_and_no_other(
    client: httpx.AsyncClient, factory: Factory
):
    _member, first, (phone0, phone1) = await _member_with_logins(factory, client)
    sessions = (await client.get(f"{API}/auth/sessions", headers=first.headers)).json()
    phone0_id = next(s["id"] for s in sessions if s["user_agent"] == "Phone 0")
    ended = await client.delete(f"{API}/auth/sessions/{phone0_id}", headers=first.headers)
    assert ended.status_code == 204, ended.text
    await assert_dead(client, phone0)
    await assert_alive(client, first)
    await assert_alive(client, phone1)
    again = await client.delete(f"{API}/auth/sessions/{phone0_id}", headers=first.headers)
    assert again.status_code == 404


async def test_ending_the_current_login_works_like_logout(
    client: httpx.AsyncClient, factory: Factory
):
    _member, first, (phone0,) = await _member_with_logins(factory, client, 1)
    sessions = (await client.get(f"{API}/auth/sessions", headers=phone0.headers)).json()
    current = next(s["id"] for s in sessions if s["current"])
    assert (
        await client.delete(f"{API}/auth/sessions/{current}", headers=phone0.headers)
    ).status_code == 204
    await assert_dead(client, phone0)
    await assert_alive(client, first)


async def test_another_members_login_is_404_and_stays_alive(
    client: httpx.AsyncClient, factory: Factory
):
    family = await factory.family(["adult", "teen"])
    adult, teen = family.adult, family.by_role("teen")
    teen_sessions = (await client.get(f"{API}/auth/sessions", headers=teen.headers)).json()
    for target in (teen_sessions[0]["id"], str(uuid.uuid4())):
        response = await client.delete(f"{API}/auth/sessions/{target}", headers=adult.headers)
        assert response.status_code == 404, response.text
        assert response.json()["code"] == "not_found"
    await assert_alive(client, Login(teen.access_token, teen.refresh_token))


async def test_last_used_moves_on_refresh_and_only_now_and_then_on_access(
    client: httpx.AsyncClient, factory: Factory, pg: asyncpg.Pool
):
    member = await factory.register("adult")
    login = Login(member.access_token, member.refresh_token)
    session_id = await pg.fetchval(
        "select id from app.auth_sessions where user_id = $1", uuid.UUID(member.id)
    )
    long_ago = "update app.auth_sessions set last_used_at = now() - interval '1 hour' where id = $1"
    last_used = "select last_used_at from app.auth_sessions where id = $1"

    await pg.execute(long_ago, session_id)
    before = await pg.fetchval(last_used, session_id)
    await assert_alive(client, login)
    touched = await pg.fetchval(last_used, session_id)
    assert touched > before  # an access after a long pause moves it ...
    await assert_alive(client, login)
    await assert_alive(client, login)
    assert await pg.fetchval(last_used, session_id) == touched  # ... but not on every request

    refreshed = await client.post(
        f"{API}/auth/refresh",
        json={"refresh_token": login.refresh_token},
        headers={"User-Agent": "Tablet"},
    )
    assert refreshed.status_code == 200
    row = await pg.fetchrow(
        "select last_used_at, user_agent from app.auth_sessions where id = $1", session_id
    )
    assert row["last_used_at"] > touched  # every refresh moves it
    assert row["user_agent"] == "Tablet"


# Log out everywhere -----------------------------------------------------------------------


async def test_logout_all_ends_every_login_this_one_too(
    client: httpx.AsyncClient, factory: Factory
):
    member, first, others = await _member_with_logins(factory, client)
    response = await client.post(f"{API}/auth/logout-all", headers=others[0].headers)
    assert response.status_code == 204, response.text
    await assert_dead(client, first, *others)
    # The password still works: a new login is fine.
    await assert_alive(client, await sign_in(client, member.email, PASSWORD))


async def test_logout_all_leaves_other_members_alone(client: httpx.AsyncClient, factory: Factory):
    family = await factory.family(["adult", "teen"])
    teen = family.by_role("teen")
    await client.post(f"{API}/auth/logout-all", headers=family.adult.headers)
    await assert_alive(client, Login(teen.access_token, teen.refresh_token))


# Password change --------------------------------------------------------------------------


async def test_password_change_ends_every_other_login(client: httpx.AsyncClient, factory: Factory):
    member, first, others = await _member_with_logins(factory, client)
    response = await client.post(
        f"{API}/auth/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=first.headers,
    )
    assert response.status_code == 204, response.text
    await assert_dead(client, *others)
    await assert_alive(client, first)
    refreshed = await client.post(
        f"{API}/auth/refresh", json={"refresh_token": first.refresh_token}
    )
    assert refreshed.status_code == 200  # this login goes on

    old = await client.post(f"{API}/auth/login", json={"email": member.email, "password": PASSWORD})
    assert old.status_code == 401
    await sign_in(client, member.email, NEW_PASSWORD)


async def test_wrong_current_password_is_400_and_changes_nothing(
    client: httpx.AsyncClient, factory: Factory
):
    member, first, others = await _member_with_logins(factory, client, 1)
    response = await client.post(
        f"{API}/auth/password",
        json={"current_password": "not my password", "new_password": NEW_PASSWORD},
        headers=first.headers,
    )
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid_credentials"
    await assert_alive(client, first)  # a 400, not a 401: this login is fine
    await assert_alive(client, others[0])
    await sign_in(client, member.email, PASSWORD)


async def test_weak_new_password_is_422_and_changes_nothing(
    client: httpx.AsyncClient, factory: Factory
):
    member, first, others = await _member_with_logins(factory, client, 1)
    response = await client.post(
        f"{API}/auth/password",
        json={"current_password": PASSWORD, "new_password": "short"},
        headers=first.headers,
    )
    assert response.status_code == 422, response.text
    await assert_alive(client, others[0])
    await sign_in(client, member.email, PASSWORD)


async def test_provisioned_child_changes_their_password(
    client: httpx.AsyncClient, factory: Factory
):
    family = await factory.family(["adult"])
    child = await factory.provision_child(family.adult)
    response = await client.post(
        f"{API}/auth/password",
        json={"current_password": child.password, "new_password": NEW_PASSWORD},
        headers=child.headers,
    )
    assert response.status_code == 204, response.text
    assert child.username
    await sign_in(client, child.username, NEW_PASSWORD)
