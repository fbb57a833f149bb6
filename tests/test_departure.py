"""Leaving a family and deleting one's account: every credential dies, what stays with the
family stays readable, what goes is gone (files too), and a family never loses its last
adult while others remain."""

import asyncio
import uuid
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from app.adapters.tokens import hash_token
from tests.helpers import API
from tests.helpers.accounts import Login, assert_alive, assert_dead, sign_in
from tests.helpers.factories import PASSWORD, Factory, Family, Member
from tests.helpers.feed import comment, react
from tests.helpers.media_samples import create_memory, jpeg, upload

FORMER_MEMBER = "Former member"


def login_of(member: Member) -> Login:
    return Login(member.access_token, member.refresh_token)


async def _memory_with_photo(client: httpx.AsyncClient, member: Member) -> dict[str, Any]:
    memory = await create_memory(client, member, status="published", title="Picnic")
    media = await upload(client, member, memory["id"], jpeg((64, 48)), "image/jpeg", "a.jpg")
    return {**memory, "media_id": media["id"], "storage_path": media["storage_path"]}


async def _access_url(client: httpx.AsyncClient, member: Member, path: str) -> httpx.Response:
    return await client.get(
        f"{API}/storage/access-url", params={"storage_path": path}, headers=member.headers
    )


async def _stored(app: FastAPI, path: str) -> bool:
    return await app.state.context.storage.stat(path) is not None


async def _plant_reset_token(pg: asyncpg.Pool, member: Member) -> str:
    token = f"planted-{uuid.uuid4().hex}"
    await pg.execute(
        "insert into app.password_reset_tokens (user_id, token_hash, expires_at)"
        " values ($1, $2, now() + interval '30 minutes')",
        uuid.UUID(member.id),
        hash_token(token),
    )
    return token


async def _leave(client: httpx.AsyncClient, member: Member) -> httpx.Response:
    return await client.post(f"{API}/families/me/leave", headers=member.headers)


async def _delete(client: httpx.AsyncClient, member: Member, memories: str) -> httpx.Response:
    return await client.delete(
        f"{API}/auth/me", params={"memories": memories}, headers=member.headers
    )


async def _author(client: httpx.AsyncClient, reader: Member, memory_id: str) -> dict[str, Any]:
    response = await client.get(f"{API}/memories/{memory_id}", headers=reader.headers)
    assert response.status_code == 200, response.text
    author: dict[str, Any] = response.json()["author"]
    return author


async def _comment_authors(client: httpx.AsyncClient, reader: Member, memory_id: str) -> list[str]:
    response = await client.get(f"{API}/feed/memories/{memory_id}/comments", headers=reader.headers)
    assert response.status_code == 200, response.text
    return [c["author"]["display_name"] for c in response.json()]


# Every credential dies -------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["leave", "delete-keep", "delete-delete"])
async def test_every_credential_of_the_departed_member_dies(
    client: httpx.AsyncClient, factory: Factory, pg: asyncpg.Pool, how: str
):
    family = await factory.family(["adult", "grandparent"])
    grandparent = family.by_role("grandparent")
    second_login = await sign_in(client, grandparent.email, PASSWORD)
    memory = await _memory_with_photo(client, grandparent)
    invite = await factory.invite(grandparent, "teen")
    reset_token = await _plant_reset_token(pg, grandparent)

    response = (
        await _leave(client, grandparent)
        if how == "leave"
        else await _delete(client, grandparent, how.removeprefix("delete-"))
    )
    assert response.status_code == 204, response.text

    await assert_dead(client, login_of(grandparent), second_login)  # access and refresh
    login = await client.post(
        f"{API}/auth/login", json={"email": grandparent.email, "password": PASSWORD}
    )
    assert login.status_code == 401  # the password is gone with the account
    lookup = (await client.get(f"{API}/invites/{invite['token']}")).json()
    assert lookup["valid"] is False and lookup["invite"]["status"] == "revoked"
    reset = await client.post(
        f"{API}/auth/password-reset/confirm",
        json={"token": reset_token, "new_password": "a new passphrase"},
    )
    assert reset.status_code == 400 and reset.json()["code"] == "reset_token_invalid"
    # No new signed URL for them; the family still gets one for what was kept.
    assert (await _access_url(client, grandparent, memory["storage_path"])).status_code == 401
    family_url = await _access_url(client, family.adult, memory["storage_path"])
    assert family_url.status_code == (404 if how == "delete-delete" else 200)
    # The account row keeps nothing that identifies or admits.
    account = await pg.fetchrow(
        "select email, encrypted_password from auth.users where id = $1", uuid.UUID(grandparent.id)
    )
    assert account["email"] is None and account["encrypted_password"] is None
    # The email is free again: the same person can found or join another family.
    again = await client.post(
        f"{API}/auth/register/grandparent",
        json={"email": grandparent.email, "password": PASSWORD, "display_name": "Back"},
    )
    assert again.status_code == 201, again.text
    # Other members are untouched.
    await assert_alive(client, login_of(family.adult))


# What stays, and how it reads -------------------------------------------------------------------


async def _family_with_history(client: httpx.AsyncClient, factory: Factory):
    family = await factory.family(["adult", "teen"])
    adult, teen = family.adult, family.by_role("teen")
    own = await _memory_with_photo(client, teen)
    others = await create_memory(client, adult, status="published", title="Adult's day")
    await comment(client, adult, own["id"], "Great shot")
    await comment(client, teen, others["id"], "Thanks for taking me")
    await react(client, teen, others["id"], "❤️")
    return family, adult, teen, own, others


async def test_leaving_keeps_memories_comments_and_reactions_under_the_name_known(
    app: FastAPI, client: httpx.AsyncClient, factory: Factory
):
    _family, adult, teen, own, others = await _family_with_history(client, factory)
    before = await _author(client, adult, own["id"])
    assert (await _leave(client, teen)).status_code == 204

    after = await _author(client, adult, own["id"])
    assert after["display_name"] == before["display_name"]  # leaving keeps the name
    assert await _stored(app, own["storage_path"])
    assert await _comment_authors(client, adult, others["id"]) == [before["display_name"]]
    reactions = await client.get(
        f"{API}/feed/memories/{others['id']}/reactions", headers=adult.headers
    )
    assert [r["user_id"] for r in reactions.json()] == [teen.id]
    members = (await client.get(f"{API}/families/me", headers=adult.headers)).json()["members"]
    assert teen.id not in {m["id"] for m in members}  # no longer a member


async def test_deleting_and_keeping_shows_a_former_member(
    app: FastAPI, client: httpx.AsyncClient, factory: Factory
):
    _family, adult, teen, own, others = await _family_with_history(client, factory)
    await client.patch(
        f"{API}/auth/me", json={"avatar_url": "https://example.com/me.png"}, headers=teen.headers
    )
    assert (await _delete(client, teen, "keep")).status_code == 204

    author = await _author(client, adult, own["id"])
    assert author["display_name"] == FORMER_MEMBER and author["avatar_url"] is None
    assert await _stored(app, own["storage_path"])
    photo = await _access_url(client, adult, own["storage_path"])
    assert (await client.get(photo.json()["access_url"])).status_code == 200
    assert await _comment_authors(client, adult, others["id"]) == [FORMER_MEMBER]
    feed = (await client.get(f"{API}/feed", headers=adult.headers)).json()
    kept = next(item for item in feed["items"] if item["id"] == others["id"])
    assert kept["reaction_count"] == 1 and kept["comment_count"] == 1


async def test_deleting_memories_removes_them_and_their_files(
    app: FastAPI, client: httpx.AsyncClient, factory: Factory, pg: asyncpg.Pool
):
    _family, adult, teen, own, others = await _family_with_history(client, factory)
    media = await pg.fetchrow(
        "select storage_path, thumbnail_path from public.memory_media where id = $1",
        uuid.UUID(own["media_id"]),
    )
    assert (await _delete(client, teen, "delete")).status_code == 204

    assert (
        await client.get(f"{API}/memories/{own['id']}", headers=adult.headers)
    ).status_code == 404
    for path in (media["storage_path"], media["thumbnail_path"]):
        if path:
            assert not await _stored(app, path)
    assert (
        await pg.fetchval(
            "select count(*) from public.memory_comments where memory_id = $1", uuid.UUID(own["id"])
        )
        == 0
    )
    # Their comment on someone else's memory stays, so the thread stays whole.
    assert await _comment_authors(client, adult, others["id"]) == [FORMER_MEMBER]
    assert (await _author(client, adult, others["id"]))["id"] == adult.id


# The last adult -------------------------------------------------------------------------------


async def test_the_last_adult_can_neither_leave_nor_delete_while_others_remain(
    client: httpx.AsyncClient, factory: Factory
):
    family = await factory.family(["adult", "teen", "child"])
    adult = family.adult
    for response in (
        await _leave(client, adult),
        await _delete(client, adult, "keep"),
        await _delete(client, adult, "delete"),
    ):
        assert response.status_code == 409, response.text
        body = response.json()
        assert body["code"] == "last_adult"
        assert "invite another adult" in body["detail"]
    await assert_alive(client, login_of(adult))  # nothing changed
    members = (await client.get(f"{API}/families/me", headers=adult.headers)).json()["members"]
    assert len(members) == 3


async def test_with_a_second_adult_an_adult_may_leave_and_the_other_then_may_not(
    client: httpx.AsyncClient, factory: Factory
):
    family = await factory.family(["adult", "adult", "teen"])
    adults = [m for m in family.members if m.role == "adult"]
    assert (await _leave(client, adults[0])).status_code == 204
    assert (await _leave(client, adults[1])).status_code == 409


async def test_two_adults_leaving_at_once_leave_one_behind(
    client: httpx.AsyncClient, factory: Factory
):
    family = await factory.family(["adult", "adult", "teen"])
    adults = [m for m in family.members if m.role == "adult"]
    answers = await asyncio.gather(*(_leave(client, adult) for adult in adults))
    assert sorted(a.status_code for a in answers) == [204, 409]


async def test_teens_children_and_grandparents_may_leave(
    client: httpx.AsyncClient, factory: Factory
):
    family = await factory.family(["adult", "teen", "child", "grandparent"])
    for member in family.members[1:]:
        assert (await _leave(client, member)).status_code == 204, member.role
    await assert_alive(client, login_of(family.adult))


# Alone in the family ---------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["leave", "delete-keep", "delete-delete"])
async def test_a_member_alone_takes_the_family_with_them(
    app: FastAPI, client: httpx.AsyncClient, factory: Factory, pg: asyncpg.Pool, how: str
):
    founder = await factory.register("teen")
    family_id = uuid.UUID(founder.family_id)
    memory = await _memory_with_photo(client, founder)
    await client.post(
        f"{API}/auth/register/pet", json={"display_name": "Rex"}, headers=founder.headers
    )
    draft = await create_memory(client, founder, title="Unfinished")
    response = (
        await _leave(client, founder)
        if how == "leave"
        else await _delete(client, founder, how.removeprefix("delete-"))
    )
    assert response.status_code == 204, response.text
    for table in ("family_units", "memories", "memory_media", "pet_profiles", "user_profiles"):
        column = "id" if table == "family_units" else "family_unit_id"
        count = await pg.fetchval(
            f"select count(*) from public.{table} where {column} = $1", family_id
        )
        assert count == 0, table
    assert not await _stored(app, memory["storage_path"])
    assert draft["id"]
    await assert_dead(client, login_of(founder))


# Bad input ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("params", [{}, {"memories": "maybe"}, {"memories": ""}])
async def test_delete_needs_to_know_what_to_do_with_the_memories(
    client: httpx.AsyncClient, factory: Factory, params: dict[str, str]
):
    family: Family = await factory.family(["adult", "teen"])
    teen = family.by_role("teen")
    response = await client.delete(f"{API}/auth/me", params=params, headers=teen.headers)
    assert response.status_code == 422, response.text
    await assert_alive(client, login_of(teen))


async def test_leaving_twice_is_401_the_second_time(client: httpx.AsyncClient, factory: Factory):
    family = await factory.family(["adult", "teen"])
    teen = family.by_role("teen")
    assert (await _leave(client, teen)).status_code == 204
    assert (await _leave(client, teen)).status_code == 401


# Leaving while an invite of the leaver is being accepted ----------------------------------


async def _accept(client: httpx.AsyncClient, invite: dict[str, Any]) -> httpx.Response:
    body = {"email": invite["email"], "password": PASSWORD, "display_name": "Newcomer"}
    return await client.post(f"{API}/invites/{invite['token']}/accept", json=body)


async def _departure_waits_for_a_lock(pg: asyncpg.Pool) -> None:
    """Until a departure is blocked on a row lock (or a few seconds passed: then it is not)."""
    for _ in range(100):
        if await pg.fetchval(
            "select exists (select 1 from pg_stat_activity where wait_event_type = 'Lock'"
            " and query like '%depart_family%')"
        ):
            return
        await asyncio.sleep(0.05)


class _AcceptsAfterTheDeparture:
    """The real auth provider, creating an account only once a departure waits for a lock:
    the acceptance then holds what it held before, so the departure meets it mid-way."""

    def __init__(self, inner: Any, pg: asyncpg.Pool):
        self.inner, self.pg = inner, pg

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def create_user(self, **kwargs: Any) -> Any:
        await _departure_waits_for_a_lock(self.pg)
        return await self.inner.create_user(**kwargs)


async def _race_leaving_and_accepting(
    client: httpx.AsyncClient, factory: Factory, pg: asyncpg.Pool, *, accept_first: bool
) -> None:
    family = await factory.family(["adult", "adult"])
    leaver = family.members[1]
    invite = await factory.invite(leaver, "teen")

    async def accept_then() -> httpx.Response:
        return await _accept(client, invite)

    async def leave_then() -> httpx.Response:
        if accept_first:
            await asyncio.sleep(0)  # the acceptance starts first and reaches its account
        return await _leave(client, leaver)

    accepted, left = await asyncio.wait_for(asyncio.gather(accept_then(), leave_then()), 120)

    assert left.status_code == 204, left.text
    assert accepted.status_code in (201, 400), accepted.text
    stored = await pg.fetchval(
        "select status from public.invitations where id = $1", uuid.UUID(invite["id"])
    )
    assert stored == ("accepted" if accepted.status_code == 201 else "revoked")


async def test_leaving_meets_an_acceptance_of_the_leavers_invite_mid_way(
    app: FastAPI, client: httpx.AsyncClient, factory: Factory, pg: asyncpg.Pool
):
    # The acceptance holds the invite's row lock while it creates the account; the leaver's
    # departure revokes their pending invites. Taken in opposite orders (the departure first
    # locking the family row, the acceptance the invite), the two deadlocked (a 500).
    context = app.state.context
    real = context.auth_provider
    context.auth_provider = _AcceptsAfterTheDeparture(real, pg)
    try:
        for _ in range(3):
            await _race_leaving_and_accepting(client, factory, pg, accept_first=True)
    finally:
        context.auth_provider = real


async def test_leaving_and_accepting_at_once_agree_every_time(
    client: httpx.AsyncClient, factory: Factory, pg: asyncpg.Pool
):
    # Either the invite was accepted before the departure (the newcomer stays) or it was
    # revoked by it; never both, never a deadlock.
    for round_ in range(12):
        await _race_leaving_and_accepting(client, factory, pg, accept_first=round_ % 2 == 0)
