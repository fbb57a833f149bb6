"""Removal is final: a removed member keeps no way back into the family.

The review's path back in: a grandparent invites an adult at another address of hers, is
removed, then accepts her own pending invite — and, now an adult, removes the adult who
removed her. Removing a member revokes the invites they issued (in the same transaction), and
accepting re-checks, under the invite's row lock, that the inviter is still an active member
allowed to invite that role. The class test sweeps every credential a member can hold
(`tests/helpers/credentials.py`) right after the removal.
"""

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from app.adapters.tokens import hash_token, new_opaque_token
from app.main import create_app
from tests.conftest import make_settings
from tests.helpers import API
from tests.helpers import media_samples as samples
from tests.helpers.credentials import assert_all_dead, collect
from tests.helpers.factories import PASSWORD, Factory, unique_email
from tests.helpers.sse import serve


@pytest.fixture(scope="module")
async def live(app) -> AsyncIterator[httpx.AsyncClient]:
    """The session's app over real HTTP, for event streams."""
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        yield http


async def remove(client, adult, member_id: str) -> int:
    response = await client.delete(f"{API}/families/me/members/{member_id}", headers=adult.headers)
    return response.status_code


async def accept(client, invite: dict, email: str | None = None):
    return await client.post(
        f"{API}/invites/{invite['token']}/accept",
        json={
            "email": email or invite["email"],
            "password": PASSWORD,
            "display_name": "Back again",
        },
    )


async def test_a_removed_member_cannot_rejoin_through_her_own_invite(client, factory: Factory):
    family = await factory.family(["adult", "grandparent"])
    bob, gina = family.adult, family.by_role("grandparent")
    alt = await factory.invite(gina, "adult", email=unique_email("gina.alt"))

    assert await remove(client, bob, gina.id) == 204
    response = await accept(client, alt)

    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invite_invalid"
    members = (await client.get(f"{API}/families/me", headers=bob.headers)).json()["members"]
    assert [m["id"] for m in members if m["role"] == "adult"] == [bob.id]
    assert (await client.get(f"{API}/auth/me", headers=bob.headers)).status_code == 200


async def test_removal_revokes_the_pending_invites_the_member_issued(client, factory):
    family = await factory.family(["adult", "adult", "grandparent"])
    founder, gina = family.members[0], family.by_role("grandparent")
    other_adult = family.members[1]
    hers = [await factory.invite(gina, "teen"), await factory.invite(gina, "adult")]
    theirs = await factory.invite(other_adult, "teen")

    assert await remove(client, founder, gina.id) == 204

    listed = (await client.get(f"{API}/invites", headers=founder.headers)).json()
    status = {invite["id"]: invite["status"] for invite in listed}
    assert [status[invite["id"]] for invite in hers] == ["revoked", "revoked"]
    assert status[theirs["id"]] == "pending"
    looked_up = (await client.get(f"{API}/invites/{hers[0]['token']}")).json()
    assert looked_up["valid"] is False
    assert looked_up["reason"] == "This invite has been revoked"
    assert (await accept(client, theirs)).status_code == 201


async def test_accepting_rechecks_that_the_inviter_is_still_a_member(client, factory, pg):
    # Whatever path ends a membership without revoking its invites (a future one, or a bug),
    # acceptance itself refuses an invite whose inviter is no longer an active member.
    family = await factory.family(["adult", "grandparent"])
    gina = family.by_role("grandparent")
    invite = await factory.invite(gina, "teen")
    await pg.execute(
        "update public.user_profiles set removed_at = now() where id = $1", uuid.UUID(gina.id)
    )

    looked_up = (await client.get(f"{API}/invites/{invite['token']}")).json()
    response = await accept(client, invite)

    assert looked_up["valid"] is False
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invite_invalid"


async def test_accepting_rechecks_that_the_inviter_may_invite_that_role(client, factory, pg):
    # A teen may invite no one: an invite row naming a teen as inviter (written around the
    # API) admits nobody.
    family = await factory.family(["adult", "teen"])
    teen = family.by_role("teen")
    token = new_opaque_token()
    email = unique_email("smuggled")
    await pg.execute(
        "insert into public.invitations (family_unit_id, email, role, token_hash, invited_by,"
        " expires_at) values ($1, $2, 'adult', $3, $4, $5)",
        uuid.UUID(family.id),
        email,
        hash_token(token),
        uuid.UUID(teen.id),
        datetime.now(UTC) + timedelta(days=1),
    )

    response = await accept(client, {"token": token, "email": email})

    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invite_invalid"


async def test_removal_and_acceptance_at_the_same_moment_agree(client, factory, pg):
    # Either the invite was accepted before the removal (the newcomer stays) or it was revoked
    # by it; never both, never a deadlock or a 500.
    for _ in range(5):
        family = await factory.family(["adult", "grandparent"])
        founder, gina = family.adult, family.by_role("grandparent")
        invite = await factory.invite(gina, "teen")

        removed, accepted = await asyncio.gather(
            remove(client, founder, gina.id), accept(client, invite)
        )

        assert removed == 204
        assert accepted.status_code in (201, 400), accepted.text
        stored = await pg.fetchval(
            "select status from public.invitations where id = $1", uuid.UUID(invite["id"])
        )
        assert stored == ("accepted" if accepted.status_code == 201 else "revoked")


@pytest.mark.parametrize("role", ["teen", "child", "grandparent", "adult"])
async def test_every_credential_dies_when_a_member_is_removed(client, live, factory, role):
    family = await factory.family(["adult", "adult", "teen", "child", "grandparent"])
    founder = family.members[0]
    member = family.members[1] if role == "adult" else family.by_role(role)
    held = await collect(client, member, live=live)

    assert await remove(client, founder, member.id) == 204

    await assert_all_dead(client, held)


async def test_the_family_gets_fresh_links_that_work_after_a_removal(client, factory):
    family = await factory.family(["adult", "teen"])
    founder, teen = family.adult, family.by_role("teen")
    held = await collect(client, founder)
    before = held.download_urls[0]

    assert await remove(client, founder, teen.id) == 204

    assert (await client.get(before)).status_code == 403
    feed = (await client.get(f"{API}/feed", headers=founder.headers)).json()
    fresh = feed["items"][0]["media"][0]["url"]
    assert fresh != before
    assert (await client.get(fresh)).status_code == 200


async def test_a_removal_made_elsewhere_voids_the_feeds_links_and_fresh_ones_work(
    client, factory, pg
):
    # The feed signs with the epoch its own transaction reads, never one remembered by this
    # process: a removal committed by another process (here straight in the database, as
    # `app.end_membership` does) voids the links at once, and the next page's links work.
    family = await factory.family(["adult", "teen"])
    founder, teen = family.adult, family.by_role("teen")
    memory = await samples.create_memory(client, founder, status="published")
    await samples.upload(client, founder, memory["id"], samples.jpeg((32, 24)), "image/jpeg")
    first = (await client.get(f"{API}/feed", headers=founder.headers)).json()
    before = first["items"][0]["media"][0]["url"]
    assert (await client.get(before)).status_code == 200

    await pg.execute("select app.end_membership($1, 'removed elsewhere')", uuid.UUID(teen.id))

    assert (await client.get(before)).status_code == 403
    page = (await client.get(f"{API}/feed", headers=founder.headers)).json()
    fresh = page["items"][0]["media"][0]["url"]
    assert fresh != before
    assert (await client.get(fresh)).status_code == 200


async def test_signing_links_needs_no_second_database_connection(
    migrated_database_url, data_dir, client, factory
):
    # Reading the family's signing epoch while a request's transaction is open must use that
    # transaction's connection: N requests each waiting for a second pooled connection would
    # deadlock a pool of N. With a pool of one, any second connection waits for ever.
    family = await factory.family(["adult"])
    held = await collect(client, family.adult)
    settings = make_settings(
        migrated_database_url, data_dir, database_pool_min=1, database_pool_max=1
    )
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as one:
            feed = await asyncio.wait_for(
                one.get(f"{API}/feed", headers=family.adult.headers), timeout=60
            )
            assert feed.status_code == 200, feed.text
            url = feed.json()["items"][0]["media"][0]["url"]
            assert (await asyncio.wait_for(one.get(url), timeout=60)).status_code == 200
    assert held.download_urls


@pytest.mark.parametrize(
    "how",
    ["leave", "delete-keep", "delete-delete"],
)
async def test_every_credential_dies_when_a_member_leaves_or_deletes_the_account(
    client, live, factory, how
):
    # The same sweep for the other ways a membership ends.
    family = await factory.family(["adult", "grandparent"])
    member = family.by_role("grandparent")
    held = await collect(client, member, live=live)

    if how == "leave":
        response = await client.post(f"{API}/families/me/leave", headers=member.headers)
    else:
        memories = how.removeprefix("delete-")
        response = await client.delete(
            f"{API}/auth/me", params={"memories": memories}, headers=member.headers
        )
    assert response.status_code == 204, response.text

    await assert_all_dead(client, held)
