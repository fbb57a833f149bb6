"""Mass assignment: fields the server owns, sent in the body of every write endpoint, are ignored.

Every endpoint with a request body (enumerated from the OpenAPI document; a new one fails
`test_every_write_endpoint_is_attacked` until it has a test here) gets the legitimate body
plus every server-owned field it does not itself declare — `role`, `family_unit_id`,
`user_id`, `id`, `status`, `processing_status`, the counters, timestamps, `modified_by`,
`storage_path`, … — pointing at another family or another member where that would hurt.
The request must succeed as if those fields were not there, and the database (read with
the superuser pool, not through the API) must show the server's values, not the injected
ones.
"""

import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from jose import jwt

from app.adapters.tokens import hash_token
from tests.attacks.helpers import API, EMPTY_ZIP, openapi_schema, operations
from tests.helpers import media_samples as samples
from tests.helpers.factories import PASSWORD, Factory, Member, unique_email

SCHEMA = openapi_schema()
LONG_AGO = "2001-01-01T00:00:00Z"
EVIL_ID = "00000000-0000-4000-8000-000000000bad"


def write_operations() -> list[tuple[str, str]]:
    """Operations with a JSON body (the signed uploads take raw bytes: no fields to smuggle)."""
    return [
        (method, path)
        for method, path in operations(SCHEMA)
        if _json_body(SCHEMA["paths"][path][method.lower()])
    ]


def _json_body(operation: dict[str, Any]) -> bool:
    return "application/json" in operation.get("requestBody", {}).get("content", {})


def declared_fields(method: str, path: str) -> set[str]:
    schema = SCHEMA["paths"][path][method.lower()]["requestBody"]["content"]["application/json"]
    refs = [schema["schema"].get("$ref")]
    refs += [item.get("$ref") for item in schema["schema"].get("anyOf", [])]
    name = next(ref for ref in refs if ref).rsplit("/", 1)[-1]
    return set(SCHEMA["components"]["schemas"][name]["properties"])


def protected(victim: Member, other: Member) -> dict[str, Any]:
    """Server-owned fields, aimed at another family (`victim`) or another member (`other`)."""
    return {
        "id": EVIL_ID,
        "user_id": other.id,
        "family_unit_id": victim.family_id,
        "role": "adult",
        "status": "accepted",
        "processing_status": "completed",
        "reaction_count": 999,
        "comment_count": 999,
        "reactions_by_emoji": {"🔥": 999},
        "feed_score": 99.0,
        "created_at": LONG_AGO,
        "updated_at": LONG_AGO,
        "deleted_at": LONG_AGO,
        "removed_at": LONG_AGO,
        "modified_by": other.id,
        "created_by": other.id,
        "invited_by": other.id,
        "accepted_by": other.id,
        "memory_id": str(uuid.uuid4()),
        "session_id": str(uuid.uuid4()),
        "storage_path": f"{victim.family_id}/{uuid.uuid4()}/{uuid.uuid4()}.jpg",
        "storage_bucket": "other-bucket",
        "thumbnail_path": f"{victim.family_id}/{uuid.uuid4()}/{uuid.uuid4()}_thumb.jpg",
        "width": 12345,
        "height": 12345,
        "metadata": {"error": "injected"},
        "token": "chosen-token-chosen-token-chosen-token",
        "token_hash": "0" * 64,
        "expires_at": "2100-01-01T00:00:00Z",
        "username": "root",
        "author": {"id": other.id, "display_name": "Someone else", "role": "adult"},
        "depth": 0,
        "reply_count": 999,
        "max_bytes": 10**12,
        "media_id": EVIL_ID,
        "upload_url": "https://evil.example/upload",
        "password_hash": "$argon2id$v=19$m=1,t=1,p=1$AAAA$AAAA",
        "sha256": "0" * 64,
        "variants": {"preview": {"path": f"{victim.family_id}/x/y_preview.jpg"}},
        "avatar_media_id": EVIL_ID,
        "purpose": "avatar",
        "taken_at": LONG_AGO,
    }


def with_injected(
    method: str, path: str, body: dict[str, Any], victim: Member, other: Member
) -> dict[str, Any]:
    """The legitimate body plus every protected field this endpoint does not declare."""
    declared = declared_fields(method, path)
    extra = {key: value for key, value in protected(victim, other).items() if key not in declared}
    assert extra, f"{method} {path} declares every protected field?"
    return {**extra, **body}


def recent(value: datetime) -> bool:
    return datetime.now(UTC) - value < timedelta(minutes=5)


@pytest.fixture
async def victim(factory: Factory) -> Member:
    """The adult of another family, whose family id the attacks aim at."""
    return await factory.register("adult")


async def family(factory: Factory):
    return await factory.family(["adult", "teen", "child", "grandparent"])


# Accounts -----------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["adult", "teen", "grandparent"])
async def test_register_ignores_role_family_id_and_timestamps(client, pg, victim, role):
    path = f"{API}/auth/register/{role}"
    email = unique_email(role)
    body = {"email": email, "password": PASSWORD, "display_name": "New founder"}
    injected = with_injected("POST", path, body, victim, victim)
    injected["role"] = "adult" if role != "adult" else "child"
    response = await client.post(path, json=injected)
    assert response.status_code == 201, response.text
    row = await pg.fetchrow("select * from public.user_profiles where email = $1", email)
    assert row["role"] == role
    assert str(row["id"]) != EVIL_ID and row["username"] is None
    assert str(row["family_unit_id"]) != victim.family_id
    assert row["removed_at"] is None and recent(row["created_at"])
    family_row = await pg.fetchrow(
        "select * from public.family_units where id = $1", row["family_unit_id"]
    )
    assert family_row["created_by"] == row["id"]
    assert await _members(pg, victim.family_id) == [uuid.UUID(victim.id)]


async def _members(pg, family_id: str) -> list[uuid.UUID]:
    rows = await pg.fetch(
        "select id from public.user_profiles where family_unit_id = $1", uuid.UUID(family_id)
    )
    return [row["id"] for row in rows]


async def test_register_child_ignores_role_and_family_id(client, pg, factory, victim):
    inviter = await factory.register("adult")
    invite = await factory.invite(inviter, "child")
    path = f"{API}/auth/register/child"
    body = {"invite_token": invite["token"], "password": PASSWORD, "display_name": "Kid"}
    response = await client.post(path, json=with_injected("POST", path, body, victim, inviter))
    assert response.status_code == 201, response.text
    row = await pg.fetchrow(
        "select * from public.user_profiles where id = $1", uuid.UUID(response.json()["user_id"])
    )
    assert (row["role"], str(row["family_unit_id"])) == ("child", inviter.family_id)
    assert await _members(pg, victim.family_id) == [uuid.UUID(victim.id)]


async def test_provision_child_ignores_role_family_id_and_chosen_password(
    client, pg, factory, victim
):
    adult = await factory.register("adult")
    path = f"{API}/auth/provision/child"
    injected = with_injected("POST", path, {"display_name": "Kiddo"}, victim, victim)
    injected["password"] = "chosen-by-the-caller-123"
    response = await client.post(path, json=injected, headers=adult.headers)
    assert response.status_code == 201, response.text
    child = response.json()
    row = await pg.fetchrow(
        "select * from public.user_profiles where id = $1", uuid.UUID(child["user_id"])
    )
    assert (row["role"], str(row["family_unit_id"])) == ("child", adult.family_id)
    assert str(row["id"]) != EVIL_ID and row["username"] != "root"
    assert child["password"] != injected["password"]
    chosen = await client.post(
        f"{API}/auth/login", json={"email": child["username"], "password": injected["password"]}
    )
    assert chosen.status_code == 401


async def test_register_pet_ignores_family_id_and_creator(client, pg, factory, victim):
    world = await family(factory)
    adult = world.adult
    path = f"{API}/auth/register/pet"
    body = {"display_name": "Whiskers"}
    response = await client.post(
        path,
        json=with_injected("POST", path, body, victim, world.by_role("teen")),
        headers=adult.headers,
    )
    assert response.status_code == 201, response.text
    row = await pg.fetchrow(
        "select * from public.pet_profiles where id = $1", uuid.UUID(response.json()["pet_id"])
    )
    assert str(row["family_unit_id"]) == adult.family_id
    assert str(row["created_by"]) == adult.id and str(row["id"]) != EVIL_ID
    assert recent(row["created_at"])


async def test_login_ignores_role_and_family_id(client, factory, victim):
    teen = (await family(factory)).by_role("teen")
    path = f"{API}/auth/login"
    body = {"email": teen.email, "password": PASSWORD}
    response = await client.post(path, json=with_injected("POST", path, body, victim, victim))
    assert response.status_code == 200, response.text
    claims = jwt.get_unverified_claims(response.json()["access_token"])
    assert (claims["sub"], claims["role"], claims["family_unit_id"]) == (
        teen.id,
        "teen",
        teen.family_id,
    )


async def test_refresh_ignores_role_family_id_and_user_id(client, factory, victim):
    world = await family(factory)
    teen = world.by_role("teen")
    path = f"{API}/auth/refresh"
    body = {"refresh_token": teen.refresh_token}
    response = await client.post(path, json=with_injected("POST", path, body, victim, world.adult))
    assert response.status_code == 200, response.text
    claims = jwt.get_unverified_claims(response.json()["access_token"])
    assert (claims["sub"], claims["role"], claims["family_unit_id"]) == (
        teen.id,
        "teen",
        teen.family_id,
    )


async def test_logout_ignores_user_id_and_session_id_of_another_member(client, pg, factory, victim):
    world = await family(factory)
    teen, adult = world.by_role("teen"), world.adult
    adult_session = jwt.get_unverified_claims(adult.access_token)["sid"]
    path = f"{API}/auth/logout"
    injected = with_injected("POST", path, {"refresh_token": teen.refresh_token}, victim, adult)
    injected["session_id"] = adult_session
    response = await client.post(path, json=injected, headers=teen.headers)
    assert response.status_code == 204, response.text
    assert (await client.get(f"{API}/auth/me", headers=adult.headers)).status_code == 200
    assert (await client.get(f"{API}/auth/me", headers=teen.headers)).status_code == 401
    revoked = await pg.fetchval(
        "select revoked_at from app.auth_sessions where id = $1", uuid.UUID(adult_session)
    )
    assert revoked is None


async def test_update_me_ignores_role_family_id_email_and_username(client, pg, factory, victim):
    teen = (await family(factory)).by_role("teen")
    before = await pg.fetchrow(
        "select * from public.user_profiles where id = $1", uuid.UUID(teen.id)
    )
    path = f"{API}/auth/me"
    injected = with_injected("PATCH", path, {"display_name": "Renamed"}, victim, victim)
    injected |= {"email": "hijack@example.com"}
    response = await client.patch(path, json=injected, headers=teen.headers)
    assert response.status_code == 200, response.text
    after = await pg.fetchrow(
        "select * from public.user_profiles where id = $1", uuid.UUID(teen.id)
    )
    assert after["display_name"] == "Renamed"
    for column in ("id", "role", "family_unit_id", "email", "username", "removed_at", "created_at"):
        assert after[column] == before[column], column


async def test_rename_family_ignores_id_and_creator(client, pg, factory, victim):
    world = await family(factory)
    path = f"{API}/families/me"
    injected = with_injected("PATCH", path, {"name": "Our name"}, victim, world.by_role("teen"))
    injected["id"] = victim.family_id
    victim_before = await pg.fetchrow(
        "select * from public.family_units where id = $1", uuid.UUID(victim.family_id)
    )
    own_before = await pg.fetchrow(
        "select * from public.family_units where id = $1", uuid.UUID(world.id)
    )
    response = await client.patch(path, json=injected, headers=world.adult.headers)
    assert response.status_code == 200, response.text
    own = await pg.fetchrow("select * from public.family_units where id = $1", uuid.UUID(world.id))
    assert own["name"] == "Our name"
    assert (own["created_by"], own["created_at"]) == (
        own_before["created_by"],
        own_before["created_at"],
    )
    victim_after = await pg.fetchrow(
        "select * from public.family_units where id = $1", uuid.UUID(victim.family_id)
    )
    assert victim_after == victim_before


# Invites ------------------------------------------------------------------------------------


async def test_create_invite_ignores_status_family_id_inviter_expiry_and_token(
    client, pg, factory, victim, settings
):
    world = await family(factory)
    grandparent = world.by_role("grandparent")
    path = f"{API}/invites"
    body = {"email": unique_email("invitee"), "role": "teen"}
    response = await client.post(
        path,
        json=with_injected("POST", path, body, victim, world.adult),
        headers=grandparent.headers,
    )
    assert response.status_code == 201, response.text
    created = response.json()
    row = await pg.fetchrow(
        "select * from public.invitations where id = $1", uuid.UUID(created["id"])
    )
    assert row["status"] == "pending" and row["accepted_by"] is None
    assert str(row["family_unit_id"]) == world.id
    assert str(row["invited_by"]) == grandparent.id
    assert str(row["id"]) != EVIL_ID and row["token_hash"] != "0" * 64
    assert created["token"] != "chosen-token-chosen-token-chosen-token"
    lifetime = row["expires_at"] - row["created_at"]
    assert abs(lifetime - timedelta(days=settings.invite_ttl_days)) < timedelta(minutes=1)


async def test_accept_invite_ignores_role_and_family_id(client, pg, factory, victim):
    inviter = await factory.register("adult")
    invite = await factory.invite(inviter, "teen")
    path = f"{API}/invites/{{token}}/accept"
    body = {"email": invite["email"], "password": PASSWORD, "display_name": "Joiner"}
    response = await client.post(
        f"{API}/invites/{invite['token']}/accept",
        json=with_injected("POST", path, body, victim, inviter),
    )
    assert response.status_code == 201, response.text
    row = await pg.fetchrow(
        "select * from public.user_profiles where id = $1", uuid.UUID(response.json()["user_id"])
    )
    assert (row["role"], str(row["family_unit_id"])) == ("teen", inviter.family_id)
    assert await _members(pg, victim.family_id) == [uuid.UUID(victim.id)]


# Memories and media -------------------------------------------------------------------------

_MEMORY = "select * from public.memories where id = $1"


async def test_create_memory_ignores_owner_family_counters_and_timestamps(
    client, pg, factory, victim
):
    world = await family(factory)
    teen = world.by_role("teen")
    path = f"{API}/memories"
    body = {"title": "Mine", "status": "published"}
    response = await client.post(
        path, json=with_injected("POST", path, body, victim, world.adult), headers=teen.headers
    )
    assert response.status_code == 201, response.text
    row = await pg.fetchrow(_MEMORY, uuid.UUID(response.json()["id"]))
    assert str(row["user_id"]) == teen.id and str(row["family_unit_id"]) == teen.family_id
    assert str(row["id"]) != EVIL_ID and row["modified_by"] is None
    assert (row["reaction_count"], row["comment_count"]) == (0, 0)
    assert recent(row["created_at"]) and recent(row["updated_at"])
    assert row["status"] == "published"


async def test_update_memory_ignores_owner_family_counters_and_modified_by(
    client, pg, factory, victim
):
    world = await family(factory)
    teen, grandparent = world.by_role("teen"), world.by_role("grandparent")
    memory = await samples.create_memory(client, teen, title="Teen's", status="published")
    before = await pg.fetchrow(_MEMORY, uuid.UUID(memory["id"]))
    path = f"{API}/memories/{{memory_id}}"
    response = await client.put(
        f"{API}/memories/{memory['id']}",
        json=with_injected("PUT", path, {"title": "Edited"}, victim, world.adult),
        headers=grandparent.headers,
    )
    assert response.status_code == 200, response.text
    after = await pg.fetchrow(_MEMORY, uuid.UUID(memory["id"]))
    assert after["title"] == "Edited"
    assert str(after["modified_by"]) == grandparent.id
    for column in ("id", "user_id", "family_unit_id", "created_at", "status"):
        assert after[column] == before[column], column
    assert (after["reaction_count"], after["comment_count"]) == (0, 0)


async def test_register_media_ignores_processing_state_dimensions_and_paths(
    client, pg, factory, victim
):
    world = await family(factory)
    adult = world.adult
    memory = await samples.create_memory(client, adult)
    other_memory = await samples.create_memory(client, adult)
    data = samples.jpeg((60, 40), orientation=1)
    ticket = (
        await samples.upload_url(client, adult, memory["id"], "image/jpeg", file_size=len(data))
    ).json()
    assert (await samples.send_bytes(client, ticket, data)).status_code == 201
    path = f"{API}/memories/{{memory_id}}/media"
    body = {
        "storage_path": ticket["storage_path"],
        "file_name": "p.jpg",
        "mime_type": "image/jpeg",
        "file_size": 1,
    }
    injected = with_injected("POST", path, body, victim, adult)
    injected["memory_id"] = other_memory["id"]
    response = await client.post(
        f"{API}/memories/{memory['id']}/media", json=injected, headers=adult.headers
    )
    assert response.status_code == 201, response.text
    registered = response.json()
    assert registered["processing_status"] == "pending"
    assert str(registered["id"]) == ticket["media_id"]
    media = await samples.wait_for_media(client, adult, memory["id"], registered["id"])
    assert media["processing_status"] == "completed"
    row = await pg.fetchrow(
        "select * from public.memory_media where id = $1", uuid.UUID(registered["id"])
    )
    assert str(row["memory_id"]) == memory["id"] and str(row["family_unit_id"]) == adult.family_id
    assert row["storage_bucket"] == "memories" and row["file_size"] == len(data)
    assert (row["width"], row["height"]) == (60, 40)
    assert row["thumbnail_path"] == ticket["storage_path"].replace(".jpg", "_thumb.jpg")
    assert "injected" not in str(row["metadata"])
    assert row["sha256"] == hashlib.sha256(data).hexdigest() and row["purpose"] == "memory"
    assert all(v["path"].startswith(f"{adult.family_id}/") for v in row["variants"].values())


async def test_avatar_upload_url_ignores_path_media_id_and_limits(
    client, factory, victim, settings
):
    adult = await factory.register("adult")
    path = f"{API}/storage/avatar-upload-url"
    body = {"target": "me", "file_name": "me.jpg", "mime_type": "image/jpeg"}
    response = await client.post(
        path, json=with_injected("POST", path, body, victim, victim), headers=adult.headers
    )
    assert response.status_code == 200, response.text
    ticket = response.json()
    assert ticket["storage_path"].startswith(f"{adult.family_id}/avatars/")
    assert ticket["media_id"] != EVIL_ID
    assert ticket["max_bytes"] <= settings.max_file_bytes


async def test_update_pet_ignores_family_id_creator_and_media(client, pg, factory, victim):
    world = await family(factory)
    created = await client.post(
        f"{API}/auth/register/pet", json={"display_name": "Rex"}, headers=world.adult.headers
    )
    pet_id = created.json()["pet_id"]
    before = await pg.fetchrow("select * from public.pet_profiles where id = $1", uuid.UUID(pet_id))
    path = f"{API}/families/me/pets/{{pet_id}}"
    injected = with_injected(
        "PATCH", path, {"avatar_url": "https://example.com/rex.png"}, victim, world.adult
    )
    injected |= {"display_name": "Renamed by a stranger"}
    response = await client.patch(
        f"{API}/families/me/pets/{pet_id}", json=injected, headers=world.adult.headers
    )
    assert response.status_code == 200, response.text
    after = await pg.fetchrow("select * from public.pet_profiles where id = $1", uuid.UUID(pet_id))
    assert after["avatar_url"] == "https://example.com/rex.png"
    for column in ("id", "family_unit_id", "display_name", "created_by", "created_at"):
        assert after[column] == before[column], column
    assert after["avatar_media_id"] is None


async def test_upload_url_ignores_path_media_id_and_limits(client, factory, victim, settings):
    adult = await factory.register("adult")
    memory = await samples.create_memory(client, adult)
    path = f"{API}/storage/upload-url"
    body = {"memory_id": memory["id"], "file_name": "p.jpg", "mime_type": "image/jpeg"}
    response = await client.post(
        path, json=with_injected("POST", path, body, victim, victim), headers=adult.headers
    )
    assert response.status_code == 200, response.text
    ticket = response.json()
    assert ticket["storage_path"].startswith(f"{adult.family_id}/{memory['id']}/")
    assert ticket["media_id"] != EVIL_ID
    assert ticket["max_bytes"] <= settings.max_file_bytes
    assert ticket["upload_url"].startswith(settings.base_url)


# Reactions and comments ---------------------------------------------------------------------


async def test_create_reaction_ignores_owner_memory_and_family(client, pg, factory, victim):
    world = await family(factory)
    child = world.by_role("child")
    memory = await samples.create_memory(client, world.adult, status="published")
    other = await samples.create_memory(client, world.adult, status="published")
    path = f"{API}/feed/memories/{{memory_id}}/reactions"
    injected = with_injected("POST", path, {"emoji": "🎉"}, victim, world.adult)
    injected["memory_id"] = other["id"]
    response = await client.post(
        f"{API}/feed/memories/{memory['id']}/reactions", json=injected, headers=child.headers
    )
    assert response.status_code == 201, response.text
    rows = await pg.fetch(
        "select * from public.memory_reactions where memory_id = any($1::uuid[])",
        [uuid.UUID(memory["id"]), uuid.UUID(other["id"])],
    )
    assert len(rows) == 1
    row = rows[0]
    assert (str(row["user_id"]), str(row["memory_id"])) == (child.id, memory["id"])
    assert str(row["family_unit_id"]) == child.family_id and str(row["id"]) != EVIL_ID
    assert recent(row["created_at"])
    counters = await pg.fetchrow(_MEMORY, uuid.UUID(memory["id"]))
    assert counters["reaction_count"] == 1


async def test_create_comment_ignores_owner_family_deletion_and_depth(client, pg, factory, victim):
    world = await family(factory)
    teen = world.by_role("teen")
    memory = await samples.create_memory(client, world.adult, status="published")
    path = f"{API}/feed/memories/{{memory_id}}/comments"
    response = await client.post(
        f"{API}/feed/memories/{memory['id']}/comments",
        json=with_injected("POST", path, {"content": "Hi"}, victim, world.adult),
        headers=teen.headers,
    )
    assert response.status_code == 201, response.text
    row = await pg.fetchrow(
        "select * from public.memory_comments where id = $1", uuid.UUID(response.json()["id"])
    )
    assert (str(row["user_id"]), str(row["memory_id"])) == (teen.id, memory["id"])
    assert str(row["family_unit_id"]) == teen.family_id and str(row["id"]) != EVIL_ID
    assert row["deleted_at"] is None and row["depth"] == 0 and recent(row["created_at"])
    assert (await pg.fetchrow(_MEMORY, uuid.UUID(memory["id"])))["comment_count"] == 1


async def test_edit_comment_ignores_owner_memory_parent_and_deletion(client, pg, factory, victim):
    world = await family(factory)
    teen = world.by_role("teen")
    memory = await samples.create_memory(client, world.adult, status="published")
    other = await samples.create_memory(client, world.adult, status="published")
    anchor = (
        await client.post(
            f"{API}/feed/memories/{memory['id']}/comments",
            json={"content": "Top"},
            headers=world.adult.headers,
        )
    ).json()
    mine = (
        await client.post(
            f"{API}/feed/memories/{memory['id']}/comments",
            json={"content": "Mine"},
            headers=teen.headers,
        )
    ).json()
    before = await pg.fetchrow(
        "select * from public.memory_comments where id = $1", uuid.UUID(mine["id"])
    )
    path = f"{API}/feed/memories/{{memory_id}}/comments/{{comment_id}}"
    injected = with_injected("PUT", path, {"content": "Edited"}, victim, world.adult)
    injected |= {"memory_id": other["id"], "parent_comment_id": anchor["id"]}
    response = await client.put(
        f"{API}/feed/memories/{memory['id']}/comments/{mine['id']}",
        json=injected,
        headers=teen.headers,
    )
    assert response.status_code == 200, response.text
    after = await pg.fetchrow(
        "select * from public.memory_comments where id = $1", uuid.UUID(mine["id"])
    )
    assert after["content"] == "Edited"
    for column in (
        "id",
        "user_id",
        "memory_id",
        "family_unit_id",
        "parent_comment_id",
        "depth",
        "deleted_at",
        "created_at",
    ):
        assert after[column] == before[column], column


async def test_password_change_ignores_user_id_of_another_member(client, pg, factory, victim):
    world = await family(factory)
    teen, adult = world.by_role("teen"), world.adult
    path = f"{API}/auth/password"
    body = {"current_password": PASSWORD, "new_password": "the teen's new passphrase"}
    response = await client.post(
        path, json=with_injected("POST", path, body, victim, adult), headers=teen.headers
    )
    assert response.status_code == 204, response.text
    assert (await client.get(f"{API}/auth/me", headers=adult.headers)).status_code == 200
    for member, password in ((adult, PASSWORD), (victim, PASSWORD)):
        login = await client.post(
            f"{API}/auth/login", json={"email": member.email, "password": password}
        )
        assert login.status_code == 200, login.text


async def test_password_reset_request_ignores_user_id_and_a_chosen_token(client, pg, victim):
    member_email = victim.email
    path = f"{API}/auth/password-reset"
    injected = with_injected("POST", path, {"email": member_email}, victim, victim)
    response = await client.post(path, json=injected)
    assert response.status_code == 202, response.text
    stored = await pg.fetch(
        "select token_hash from app.password_reset_tokens where user_id = $1",
        uuid.UUID(victim.id),
    )
    assert stored and all(row["token_hash"] != hash_token(injected["token"]) for row in stored)
    confirm = await client.post(
        f"{API}/auth/password-reset/confirm",
        json={"token": injected["token"], "new_password": "an attacker's passphrase"},
    )
    assert confirm.status_code == 400


async def test_password_reset_confirm_ignores_user_id_of_another_member(
    client, pg, factory, victim
):
    member = await factory.register("adult")
    token = f"planted-{uuid.uuid4().hex}"
    await pg.execute(
        "insert into app.password_reset_tokens (user_id, token_hash, expires_at)"
        " values ($1, $2, now() + interval '30 minutes')",
        uuid.UUID(member.id),
        hash_token(token),
    )
    path = f"{API}/auth/password-reset/confirm"
    body = {"token": token, "new_password": "a brand new passphrase"}
    response = await client.post(path, json=with_injected("POST", path, body, victim, victim))
    assert response.status_code == 204, response.text
    victim_login = await client.post(
        f"{API}/auth/login", json={"email": victim.email, "password": PASSWORD}
    )
    assert victim_login.status_code == 200  # the victim's password did not change
    assert (await client.get(f"{API}/auth/me", headers=victim.headers)).status_code == 200
    member_login = await client.post(
        f"{API}/auth/login", json={"email": member.email, "password": body["new_password"]}
    )
    assert member_login.status_code == 200


# Imports ------------------------------------------------------------------------------------


async def test_start_import_ignores_family_creator_status_progress_and_report(
    client, pg, factory, victim
):
    world = await family(factory)
    adult = world.adult
    ticket = (
        await client.post(
            f"{API}/storage/upload-url",
            json={"purpose": "import", "file_name": "t.zip", "mime_type": "application/zip"},
            headers=adult.headers,
        )
    ).json()
    assert (await client.put(ticket["upload_url"], content=EMPTY_ZIP)).status_code == 201
    path = f"{API}/families/me/imports"
    injected = with_injected(
        "POST", path, {"storage_path": ticket["storage_path"]}, victim, world.by_role("teen")
    )
    injected.update(
        status="completed",
        family_unit_id=victim.family_id,
        progress={"files_done": 99},
        report={"memories_created": 99},
        error="injected",
    )
    response = await client.post(path, json=injected, headers=adult.headers)
    assert response.status_code == 202, response.text
    job = await pg.fetchrow(
        "select * from public.family_imports where id = $1", uuid.UUID(response.json()["id"])
    )
    assert job["family_unit_id"] == uuid.UUID(world.id)
    assert job["created_by"] == uuid.UUID(adult.id)
    assert job["status"] == "queued" and job["error"] is None
    assert job["progress"]["files_done"] == 0 and job["report"]["memories_created"] == 0
    assert recent(job["created_at"])
    assert (
        await pg.fetchval(
            "select count(*) from public.family_imports where family_unit_id = $1",
            uuid.UUID(victim.family_id),
        )
        == 0
    )


# Coverage -----------------------------------------------------------------------------------

# The family archive ---------------------------------------------------------------------------


async def test_start_export_ignores_family_requester_state_and_results(client, pg, factory, victim):
    world = await family(factory)
    path = f"{API}/families/me/exports"
    injected = with_injected(
        "POST", path, {"include": ["originals"]}, victim, world.by_role("teen")
    )
    injected.update(
        requested_by=world.by_role("teen").id,
        files_done=99,
        bytes_done=99,
        size_bytes=99,
        error="injected",
        attempts=99,
        download_url="https://evil.example/archive.zip",
    )
    response = await client.post(path, json=injected, headers=world.adult.headers)
    assert response.status_code == 202, response.text
    row = await pg.fetchrow(
        "select * from public.archive_exports where id = $1", uuid.UUID(response.json()["id"])
    )
    assert row["family_unit_id"] == uuid.UUID(world.id)
    assert row["requested_by"] == uuid.UUID(world.adult.id)
    assert (row["status"], row["files_done"], row["bytes_done"], row["attempts"]) == (
        "queued",
        0,
        0,
        0,
    )
    assert row["size_bytes"] is None and row["storage_path"] is None and row["error"] is None
    assert row["expires_at"] is None and recent(row["created_at"])
    assert response.json()["download_url"] is None
    victims = await pg.fetchval(
        "select count(*) from public.archive_exports where family_unit_id = $1",
        uuid.UUID(victim.family_id),
    )
    assert victims == 0


ATTACKED = {
    ("POST", f"{API}/auth/register/adult"): test_register_ignores_role_family_id_and_timestamps,
    ("POST", f"{API}/auth/register/teen"): test_register_ignores_role_family_id_and_timestamps,
    ("POST", f"{API}/auth/register/grandparent"): (
        test_register_ignores_role_family_id_and_timestamps
    ),
    ("POST", f"{API}/auth/register/child"): test_register_child_ignores_role_and_family_id,
    ("POST", f"{API}/auth/provision/child"): (
        test_provision_child_ignores_role_family_id_and_chosen_password
    ),
    ("POST", f"{API}/auth/register/pet"): test_register_pet_ignores_family_id_and_creator,
    ("POST", f"{API}/auth/login"): test_login_ignores_role_and_family_id,
    ("POST", f"{API}/auth/refresh"): test_refresh_ignores_role_family_id_and_user_id,
    ("POST", f"{API}/auth/logout"): test_logout_ignores_user_id_and_session_id_of_another_member,
    ("PATCH", f"{API}/auth/me"): test_update_me_ignores_role_family_id_email_and_username,
    ("POST", f"{API}/auth/password"): test_password_change_ignores_user_id_of_another_member,
    ("POST", f"{API}/auth/password-reset"): (
        test_password_reset_request_ignores_user_id_and_a_chosen_token
    ),
    ("POST", f"{API}/auth/password-reset/confirm"): (
        test_password_reset_confirm_ignores_user_id_of_another_member
    ),
    ("PATCH", f"{API}/families/me"): test_rename_family_ignores_id_and_creator,
    ("POST", f"{API}/families/me/imports"): (
        test_start_import_ignores_family_creator_status_progress_and_report
    ),
    ("POST", f"{API}/invites"): (
        test_create_invite_ignores_status_family_id_inviter_expiry_and_token
    ),
    ("POST", f"{API}/invites/{{token}}/accept"): test_accept_invite_ignores_role_and_family_id,
    ("POST", f"{API}/memories"): (test_create_memory_ignores_owner_family_counters_and_timestamps),
    ("PUT", f"{API}/memories/{{memory_id}}"): (
        test_update_memory_ignores_owner_family_counters_and_modified_by
    ),
    ("POST", f"{API}/memories/{{memory_id}}/media"): (
        test_register_media_ignores_processing_state_dimensions_and_paths
    ),
    ("POST", f"{API}/storage/upload-url"): test_upload_url_ignores_path_media_id_and_limits,
    ("POST", f"{API}/storage/avatar-upload-url"): (
        test_avatar_upload_url_ignores_path_media_id_and_limits
    ),
    ("PATCH", f"{API}/families/me/pets/{{pet_id}}"): (
        test_update_pet_ignores_family_id_creator_and_media
    ),
    ("POST", f"{API}/feed/memories/{{memory_id}}/reactions"): (
        test_create_reaction_ignores_owner_memory_and_family
    ),
    ("POST", f"{API}/feed/memories/{{memory_id}}/comments"): (
        test_create_comment_ignores_owner_family_deletion_and_depth
    ),
    ("PUT", f"{API}/feed/memories/{{memory_id}}/comments/{{comment_id}}"): (
        test_edit_comment_ignores_owner_memory_parent_and_deletion
    ),
    ("POST", f"{API}/families/me/exports"): (
        test_start_export_ignores_family_requester_state_and_results
    ),
}


def test_every_write_endpoint_is_attacked(app):
    assert write_operations() == sorted(
        (m, p)
        for m, p in operations(app.openapi())
        if _json_body(app.openapi()["paths"][p][m.lower()])
    )
    missing = [op for op in write_operations() if op not in ATTACKED]
    assert not missing, f"add a mass-assignment test for {missing}"
    assert len(ATTACKED) >= 18
