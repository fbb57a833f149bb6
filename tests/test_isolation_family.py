"""Family B calling every id-taking family endpoint with family A's ids: 404, nothing changes."""

import uuid

from tests.helpers import API


async def _snapshot(pg, family_id: str) -> list:
    fid = uuid.UUID(family_id)
    return [
        await pg.fetch(
            "select id, role, display_name, removed_at from public.user_profiles"
            " where family_unit_id = $1 order by id",
            fid,
        ),
        await pg.fetch(
            "select id, status from public.invitations where family_unit_id = $1 order by id", fid
        ),
        await pg.fetch("select id from public.pet_profiles where family_unit_id = $1", fid),
        await pg.fetch("select name from public.family_units where id = $1", fid),
    ]


async def test_family_b_cannot_touch_family_a(client, factory, pg):
    a = await factory.family(["adult", "teen"])
    b = await factory.family(["adult", "grandparent"])
    invite = await factory.invite(a.adult, "teen")
    pet = (
        await client.post(
            f"{API}/auth/register/pet", json={"display_name": "Rex"}, headers=a.adult.headers
        )
    ).json()
    before = await _snapshot(pg, a.id)

    for attacker in (b.adult, b.by_role("grandparent")):
        calls = [
            client.delete(
                f"{API}/families/me/members/{a.by_role('teen').id}", headers=attacker.headers
            ),
            client.delete(f"{API}/families/me/members/{a.adult.id}", headers=attacker.headers),
            client.delete(f"{API}/families/me/members/{pet['pet_id']}", headers=attacker.headers),
            client.delete(f"{API}/invites/{invite['id']}", headers=attacker.headers),
        ]
        for call in calls:
            response = await call
            # Removal is adult-only, so the grandparent is refused by role first.
            expected = 404 if attacker.role == "adult" else 403
            if "invites" in str(response.request.url):
                expected = 404
            assert response.status_code == expected, response.text

    # Their own views never include family A.
    family = (await client.get(f"{API}/families/me", headers=b.adult.headers)).json()
    assert family["id"] == b.id
    assert {m["id"] for m in family["members"]}.isdisjoint({m.id for m in a.members})
    invites = (await client.get(f"{API}/invites", headers=b.adult.headers)).json()
    assert invite["id"] not in {row["id"] for row in invites}

    assert await _snapshot(pg, a.id) == before
