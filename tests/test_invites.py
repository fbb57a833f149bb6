"""Invitations: token shown once and stored hashed, expiry, single use, email match, revocation."""

import asyncio
import hashlib
import uuid

from tests.helpers import API
from tests.helpers.factories import PASSWORD, unique_email


def _accept_body(email: str) -> dict:
    return {"email": email, "password": PASSWORD, "display_name": "Joiner"}


async def test_create_shows_token_once_and_stores_only_its_hash(client, factory, pg):
    family = await factory.family(["adult"])
    invite = await factory.invite(family.adult, "teen")
    assert set(invite) == {
        "id",
        "email",
        "role",
        "token",
        "invite_link",
        "expires_at",
        "status",
        "created_at",
    }
    assert invite["status"] == "pending"
    assert invite["invite_link"] == f"http://localhost:5173/accept-invite?token={invite['token']}"
    assert len(invite["token"]) >= 43  # 32 random bytes, URL-safe base64
    stored = await pg.fetchval(
        "select token_hash from public.invitations where id = $1", uuid.UUID(invite["id"])
    )
    assert stored == hashlib.sha256(invite["token"].encode()).hexdigest()
    listed = await client.get(f"{API}/invites", headers=family.adult.headers)
    assert all("token" not in row and "invite_link" not in row for row in listed.json())


async def test_lookup_masks_the_invited_email(client, factory):
    # The lookup needs no sign-in: whoever holds the link sees the invite, but not the whole
    # address it was sent to (enough to recognise one's own).
    family = await factory.family(["adult"])
    invite = await factory.invite(family.adult, "teen", email="gina.smith@example.com")
    short = await factory.invite(family.adult, "teen", email="g@example.org")

    looked_up = (await client.get(f"{API}/invites/{invite['token']}")).json()
    looked_up_short = (await client.get(f"{API}/invites/{short['token']}")).json()

    assert looked_up["invite"]["email"] == "g***@example.com"
    assert looked_up_short["invite"]["email"] == "g***@example.org"
    assert "gina" not in str(looked_up)


async def test_lookup_states(client, factory, pg):
    family = await factory.family(["adult"])
    invite = await factory.invite(family.adult, "grandparent")
    valid = (await client.get(f"{API}/invites/{invite['token']}")).json()
    assert valid["valid"] is True
    assert valid["invite"]["role"] == "grandparent"
    assert valid["invite"]["status"] == "pending"
    family_name = (await client.get(f"{API}/families/me", headers=family.adult.headers)).json()
    assert valid["invite"]["family_name"] == family_name["name"]

    await pg.execute(
        "update public.invitations set expires_at = now() - interval '1 minute' where id = $1",
        uuid.UUID(invite["id"]),
    )
    expired = (await client.get(f"{API}/invites/{invite['token']}")).json()
    assert expired["valid"] is False
    assert expired["invite"]["status"] == "expired"
    assert "expired" in expired["reason"]

    unknown = await client.get(f"{API}/invites/{'x' * 43}")
    assert unknown.status_code == 404


async def test_accept_joins_family_and_is_single_use(client, factory):
    family = await factory.family(["adult"])
    invite = await factory.invite(family.adult, "teen")
    response = await client.post(
        f"{API}/invites/{invite['token']}/accept", json=_accept_body(invite["email"])
    )
    assert response.status_code == 201, response.text
    assert response.json()["family_unit_id"] == family.id
    assert response.json()["role"] == "teen"
    again = await client.post(
        f"{API}/invites/{invite['token']}/accept", json=_accept_body(unique_email())
    )
    assert again.status_code == 400
    lookup = (await client.get(f"{API}/invites/{invite['token']}")).json()
    assert lookup == {**lookup, "valid": False}
    assert lookup["invite"]["status"] == "accepted"


async def test_concurrent_accepts_admit_exactly_one(client, factory, pg):
    family = await factory.family(["adult"])
    invite = await factory.invite(family.adult, "adult")
    responses = await asyncio.gather(
        *[
            client.post(
                f"{API}/invites/{invite['token']}/accept", json=_accept_body(invite["email"])
            )
            for _ in range(4)
        ]
    )
    codes = sorted(r.status_code for r in responses)
    assert codes.count(201) == 1, codes
    members = await pg.fetchval(
        "select count(*) from public.user_profiles where family_unit_id = $1",
        uuid.UUID(family.id),
    )
    assert members == 2


async def test_accept_requires_matching_email(client, factory, pg):
    family = await factory.family(["adult"])
    invite = await factory.invite(family.adult, "teen")
    wrong = unique_email()
    response = await client.post(
        f"{API}/invites/{invite['token']}/accept", json=_accept_body(wrong)
    )
    assert response.status_code == 400
    assert "does not match" in response.json()["detail"]
    assert await pg.fetchval("select count(*) from auth.users where email = $1", wrong) == 0
    upper = await client.post(
        f"{API}/invites/{invite['token']}/accept", json=_accept_body(invite["email"].upper())
    )
    assert upper.status_code == 201


async def test_expired_and_revoked_invites_cannot_be_accepted(client, factory, pg):
    family = await factory.family(["adult"])
    expired = await factory.invite(family.adult, "teen")
    await pg.execute(
        "update public.invitations set expires_at = now() - interval '1 second' where id = $1",
        uuid.UUID(expired["id"]),
    )
    response = await client.post(
        f"{API}/invites/{expired['token']}/accept", json=_accept_body(expired["email"])
    )
    assert response.status_code == 400
    assert "expired" in response.json()["detail"]

    revoked = await factory.invite(family.adult, "teen")
    assert (
        await client.delete(f"{API}/invites/{revoked['id']}", headers=family.adult.headers)
    ).status_code == 204
    response = await client.post(
        f"{API}/invites/{revoked['token']}/accept", json=_accept_body(revoked["email"])
    )
    assert response.status_code == 400
    assert "revoked" in response.json()["detail"]
    # Revoking twice: it is no longer pending.
    twice = await client.delete(f"{API}/invites/{revoked['id']}", headers=family.adult.headers)
    assert twice.status_code == 409


async def test_one_pending_invite_per_email(client, factory):
    family = await factory.family(["adult"])
    email = unique_email()
    await factory.invite(family.adult, "teen", email=email)
    response = await client.post(
        f"{API}/invites",
        json={"email": email.upper(), "role": "adult"},
        headers=family.adult.headers,
    )
    assert response.status_code == 409


async def test_list_filters_by_status(client, factory, pg):
    family = await factory.family(["adult"])
    pending = await factory.invite(family.adult, "teen")
    expired = await factory.invite(family.adult, "teen")
    await pg.execute(
        "update public.invitations set expires_at = now() - interval '1 second' where id = $1",
        uuid.UUID(expired["id"]),
    )
    by_status = {}
    for status in ("pending", "expired"):
        rows = await client.get(f"{API}/invites?status={status}", headers=family.adult.headers)
        by_status[status] = [row["id"] for row in rows.json()]
    assert by_status == {"pending": [pending["id"]], "expired": [expired["id"]]}
    bad = await client.get(f"{API}/invites?status=bogus", headers=family.adult.headers)
    assert bad.status_code == 422


async def test_accepting_with_an_email_that_has_an_account_is_409(client, factory, pg):
    other = await factory.register("adult")
    family = await factory.family(["adult"])
    invite = await factory.invite(family.adult, "teen", email=other.email)
    response = await client.post(
        f"{API}/invites/{invite['token']}/accept", json=_accept_body(other.email)
    )
    assert response.status_code == 409
    status = await pg.fetchval(
        "select status from public.invitations where id = $1", uuid.UUID(invite["id"])
    )
    assert status == "pending"


async def test_child_joining_without_email_gets_a_username_to_log_in_with(client, factory):
    family = await factory.family(["adult"])
    invite = await factory.invite(family.adult, "child")
    response = await client.post(
        f"{API}/auth/register/child",
        json={"invite_token": invite["token"], "password": PASSWORD, "display_name": "Zoë"},
    )
    assert response.status_code == 201, response.text
    joined = response.json()
    assert joined["email"] is None
    assert joined["username"].startswith("zoe.")
    tokens = await factory.login(joined["username"], PASSWORD)
    me = await client.get(
        f"{API}/auth/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert me.json()["id"] == joined["user_id"]


async def test_failure_after_the_account_exists_leaves_no_account(client, factory, pg):
    family = await factory.family(["adult"])
    invite = await factory.invite(family.adult, "teen")
    # Marking the invite accepted fails (as a lost connection or a bug would).
    await pg.execute(
        "create function public.test_fail_accept() returns trigger language plpgsql"
        " as $$ begin raise exception 'simulated failure'; end $$"
    )
    await pg.execute(
        "create trigger test_fail_accept before update on public.invitations for each row"
        f" when (new.id = '{invite['id']}') execute function public.test_fail_accept()"
    )
    try:
        response = await client.post(
            f"{API}/invites/{invite['token']}/accept", json=_accept_body(invite["email"])
        )
    finally:
        await pg.execute("drop trigger test_fail_accept on public.invitations")
        await pg.execute("drop function public.test_fail_accept()")
    assert response.status_code == 500
    assert "simulated" not in response.text  # no internals in a 500
    assert response.json()["request_id"] == response.headers["x-request-id"]
    assert (
        await pg.fetchval("select count(*) from auth.users where email = $1", invite["email"]) == 0
    )
    assert (
        await pg.fetchval(
            "select count(*) from public.user_profiles where email = $1", invite["email"]
        )
        == 0
    )
    # The invite is still usable.
    retry = await client.post(
        f"{API}/invites/{invite['token']}/accept", json=_accept_body(invite["email"])
    )
    assert retry.status_code == 201
