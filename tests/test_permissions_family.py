"""Role × operation matrix for the family, invite and account operations.

The expectations are transcribed from the "Roles and permissions" table of docs/api.md as
literals here; they do not read app.models.rbac, so a wrong table in the code
makes these tests fail.
"""

import uuid

import pytest

from tests.helpers import API
from tests.helpers.factories import Family, Member, unique_email

ROLES = ("adult", "teen", "child", "grandparent")

# docs/api.md: | Operation | adult | teen | child | grandparent |
CONTRACT_TABLE = {
    "update_family": {"adult": True, "teen": False, "child": False, "grandparent": True},
    "provision_child": {"adult": True, "teen": False, "child": False, "grandparent": False},
    "create_pet": {"adult": True, "teen": False, "child": False, "grandparent": True},
    "remove_member": {"adult": True, "teen": False, "child": False, "grandparent": False},
    "list_invites": {"adult": True, "teen": False, "child": False, "grandparent": True},
    "revoke_invite": {"adult": True, "teen": False, "child": False, "grandparent": True},
    "view_family": {"adult": True, "teen": True, "child": True, "grandparent": True},
    "view_analytics": {"adult": True, "teen": False, "child": False, "grandparent": True},
}
# docs/api.md: "Invite members | yes (any role but pet) | no | no | yes (adult, teen, grandparent)"
CONTRACT_INVITABLE = {
    "adult": {"adult", "teen", "child", "grandparent"},
    "teen": set(),
    "child": set(),
    "grandparent": {"adult", "teen", "grandparent"},
}


async def _operation(client, factory, family: Family, actor: Member, operation: str):
    """Perform the operation as `actor`; return (response, was_it_applied)."""
    headers = actor.headers
    if operation == "update_family":
        response = await client.patch(
            f"{API}/families/me", json={"name": "Renamed"}, headers=headers
        )
        current = await client.get(f"{API}/families/me", headers=family.adult.headers)
        return response, current.json()["name"] == "Renamed"
    if operation == "provision_child":
        before = await _member_count(client, family)
        response = await client.post(
            f"{API}/auth/provision/child", json={"display_name": "Kid"}, headers=headers
        )
        return response, await _member_count(client, family) == before + 1
    if operation == "create_pet":
        before = await _member_count(client, family)
        response = await client.post(
            f"{API}/auth/register/pet", json={"display_name": "Rex"}, headers=headers
        )
        return response, await _member_count(client, family) == before + 1
    if operation == "remove_member":
        target = await factory.join(family.adult, "teen")
        response = await client.delete(f"{API}/families/me/members/{target.id}", headers=headers)
        still_in = await client.get(f"{API}/auth/me", headers=target.headers)
        return response, still_in.status_code == 401
    if operation == "list_invites":
        await factory.invite(family.adult, "teen")
        response = await client.get(f"{API}/invites?status=pending", headers=headers)
        return response, response.status_code == 200 and len(response.json()) == 1
    if operation == "revoke_invite":
        invite = await factory.invite(family.adult, "teen")
        response = await client.delete(f"{API}/invites/{invite['id']}", headers=headers)
        listed = await client.get(f"{API}/invites", headers=family.adult.headers)
        return response, listed.json()[0]["status"] == "revoked"
    if operation == "view_family":
        response = await client.get(f"{API}/families/me", headers=headers)
        return response, response.status_code == 200 and response.json()["id"] == family.id
    if operation == "view_analytics":
        response = await client.get(f"{API}/analytics/summary", headers=headers)
        return response, response.status_code == 200
    raise AssertionError(operation)


async def _member_count(client, family: Family) -> int:
    response = await client.get(f"{API}/families/me", headers=family.adult.headers)
    return len(response.json()["members"])


CASES = [(op, role) for op in CONTRACT_TABLE for role in ROLES]


@pytest.mark.parametrize(("operation", "role"), CASES, ids=[f"{o}-{r}" for o, r in CASES])
async def test_role_matrix(client, factory, operation, role):
    family = await factory.family(list(ROLES))
    actor = family.by_role(role)
    response, applied = await _operation(client, factory, family, actor, operation)
    if CONTRACT_TABLE[operation][role]:
        assert response.status_code in (200, 201, 204), response.text
        assert applied
    else:
        assert response.status_code == 403, response.text
        assert "requires" in response.json()["detail"]
        assert not applied


INVITE_CASES = [(inviter, invited) for inviter in ROLES for invited in ROLES]


@pytest.mark.parametrize(
    ("inviter_role", "invited_role"),
    INVITE_CASES,
    ids=[f"{a}-invites-{b}" for a, b in INVITE_CASES],
)
async def test_invite_matrix(client, factory, pg, inviter_role, invited_role):
    family = await factory.family(list(ROLES))
    inviter = family.by_role(inviter_role)
    email = unique_email("invited")
    response = await client.post(
        f"{API}/invites", json={"email": email, "role": invited_role}, headers=inviter.headers
    )
    stored = await pg.fetchval("select count(*) from public.invitations where email = $1", email)
    if invited_role in CONTRACT_INVITABLE[inviter_role]:
        assert response.status_code == 201, response.text
        assert stored == 1
    else:
        assert response.status_code == 403, response.text
        assert stored == 0


@pytest.mark.parametrize("role", ROLES)
async def test_nobody_can_invite_a_pet(client, factory, role):
    family = await factory.family(list(ROLES))
    response = await client.post(
        f"{API}/invites",
        json={"email": unique_email(), "role": "pet"},
        headers=family.by_role(role).headers,
    )
    # Roles that may invite learn the role is invalid; the others are refused outright.
    assert response.status_code == (422 if CONTRACT_INVITABLE[role] else 403)


async def test_last_adult_cannot_be_removed(client, factory):
    family = await factory.family(["adult", "grandparent"])
    response = await client.delete(
        f"{API}/families/me/members/{family.adult.id}", headers=family.adult.headers
    )
    assert response.status_code == 409
    assert "last adult" in response.json()["detail"]
    me = await client.get(f"{API}/auth/me", headers=family.adult.headers)
    assert me.status_code == 200


async def test_an_adult_can_be_removed_while_another_remains(client, factory):
    family = await factory.family(["adult"])
    second = await factory.join(family.adult, "adult")
    response = await client.delete(
        f"{API}/families/me/members/{second.id}", headers=family.adult.headers
    )
    assert response.status_code == 204
    # Now the founder is the last adult again.
    again = await client.delete(
        f"{API}/families/me/members/{family.adult.id}", headers=family.adult.headers
    )
    assert again.status_code == 409


async def test_removal_ends_every_login_of_the_member_in_the_database(client, factory, pg):
    # Tokens of a removed member are refused because the profile is marked removed; the
    # logins themselves end too, so that second line holds on its own (checked in the table).
    family = await factory.family(["adult", "teen"])
    teen = family.by_role("teen")
    await factory.login(teen.email)  # a second login
    response = await client.delete(
        f"{API}/families/me/members/{teen.id}", headers=family.adult.headers
    )
    assert response.status_code == 204
    sessions = await pg.fetch(
        "select revoked_at, revoked_reason from app.auth_sessions where user_id = $1",
        uuid.UUID(teen.id),
    )
    assert len(sessions) >= 2
    assert all(row["revoked_at"] is not None for row in sessions)
    assert {row["revoked_reason"] for row in sessions} == {"removed from family"}


async def test_removing_an_unknown_member_is_404(client, factory):
    family = await factory.family(["adult"])
    response = await client.delete(
        f"{API}/families/me/members/{uuid.uuid4()}", headers=family.adult.headers
    )
    assert response.status_code == 404


async def test_removing_a_pet(client, factory):
    family = await factory.family(["adult"])
    pet = await client.post(
        f"{API}/auth/register/pet", json={"display_name": "Tom"}, headers=family.adult.headers
    )
    pet_id = pet.json()["pet_id"]
    response = await client.delete(
        f"{API}/families/me/members/{pet_id}", headers=family.adult.headers
    )
    assert response.status_code == 204
    members = await client.get(f"{API}/families/me", headers=family.adult.headers)
    assert pet_id not in {m["id"] for m in members.json()["members"]}
