"""Memories: create, read, list, partial update, the status lifecycle, drafts, limits, events."""

import asyncio
import json
import uuid
from typing import Any

import asyncpg
import pytest

from tests.helpers.media_samples import API, create_memory


async def get_memory(client, member, memory_id: str):
    return await client.get(f"{API}/memories/{memory_id}", headers=member.headers)


async def put_memory(client, member, memory_id: str, **body: Any):
    return await client.put(f"{API}/memories/{memory_id}", json=body, headers=member.headers)


# Creating ------------------------------------------------------------------------------------


async def test_create_returns_the_full_memory_as_a_draft(client, factory):
    family = await factory.family(["adult"])
    response = await client.post(
        f"{API}/memories",
        json={
            "title": "  First steps  ",
            "description": "In the garden.",
            "memory_date": "2024-05-01",
            "location": " Berlin ",
            "tags": ["Family", " baby ", "family", "BABY", "garden", ""],
        },
        headers=family.adult.headers,
    )
    assert response.status_code == 201, response.text
    memory = response.json()
    assert memory["status"] == "draft"
    assert memory["title"] == "First steps"
    assert memory["location"] == "Berlin"
    assert memory["memory_date"] == "2024-05-01"
    assert memory["tags"] == ["family", "baby", "garden"]
    assert memory["user_id"] == family.adult.id
    assert memory["family_unit_id"] == family.id
    assert memory["modified_by"] is None
    assert memory["media"] == []
    assert memory["author"]["id"] == family.adult.id
    assert memory["author"]["role"] == "adult"
    assert set(memory) >= {"id", "created_at", "updated_at", "description"}


async def test_create_published_and_not_archived(client, factory):
    family = await factory.family(["adult"])
    published = await create_memory(client, family.adult, status="published")
    assert published["status"] == "published"
    archived = await client.post(
        f"{API}/memories",
        json={"title": "x", "status": "archived"},
        headers=family.adult.headers,
    )
    assert archived.status_code == 400


LIMIT_CASES = {
    "title-missing": {},
    "title-blank": {"title": "   "},
    "title-256": {"title": "t" * 256},
    "description-10001": {"title": "ok", "description": "d" * 10_001},
    "location-256": {"title": "ok", "location": "l" * 256},
    "21-tags": {"title": "ok", "tags": [f"tag{i}" for i in range(21)]},
    "tag-51-chars": {"title": "ok", "tags": ["t" * 51]},
    "bad-status": {"title": "ok", "status": "deleted"},
    "bad-date": {"title": "ok", "memory_date": "2024-13-40"},
}


@pytest.mark.parametrize("case", list(LIMIT_CASES))
async def test_limits_are_422(client, factory, pg, case):
    family = await factory.family(["adult"])
    response = await client.post(
        f"{API}/memories", json=LIMIT_CASES[case], headers=family.adult.headers
    )
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_failed" and response.json()["errors"]
    count = await pg.fetchval(
        "select count(*) from public.memories where family_unit_id = $1", uuid.UUID(family.id)
    )
    assert count == 0


async def test_limits_at_the_edge_are_fine(client, factory):
    family = await factory.family(["adult"])
    memory = await create_memory(
        client,
        family.adult,
        title="t" * 255,
        description="d" * 10_000,
        location="l" * 255,
        tags=[f"{i:02d}" + "t" * 48 for i in range(20)],
    )
    assert len(memory["tags"]) == 20
    # 21 tags that collapse to 20 after normalising are fine too.
    again = await create_memory(client, family.adult, tags=[f"t{i}" for i in range(20)] + ["T0"])
    assert len(again["tags"]) == 20


async def test_update_limits_are_422(client, factory):
    family = await factory.family(["adult"])
    memory = await create_memory(client, family.adult)
    for body in (
        {"title": "t" * 256},
        {"title": ""},
        {"title": None},
        {"status": None},
        {"tags": None},
        {"tags": ["x" * 51]},
        {"description": "d" * 10_001},
        {"location": "l" * 256},
    ):
        response = await put_memory(client, family.adult, memory["id"], **body)
        assert response.status_code == 422, body
    unchanged = (await get_memory(client, family.adult, memory["id"])).json()
    assert unchanged["title"] == memory["title"]
    assert unchanged["updated_at"] == memory["updated_at"]


async def test_a_body_over_one_mib_is_413(client, factory):
    family = await factory.family(["adult"])
    response = await client.post(
        f"{API}/memories",
        content=json.dumps({"title": "x", "description": "d" * (1024 * 1024)}),
        headers={**family.adult.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 413


# Reading -------------------------------------------------------------------------------------


async def test_list_is_newest_first_paginated_with_total(client, factory):
    family = await factory.family(["adult", "teen"])
    teen = family.by_role("teen")
    titles = [f"memory {i}" for i in range(5)]
    for title in titles:
        await create_memory(client, family.adult, title=title, status="published")
    # Someone else's draft is not counted; one's own is.
    await create_memory(client, teen, title="teen draft")

    response = await client.get(
        f"{API}/memories", params={"limit": 2, "offset": 0}, headers=family.adult.headers
    )
    assert response.status_code == 200
    assert response.headers["x-total-count"] == "5"
    assert [m["title"] for m in response.json()] == ["memory 4", "memory 3"]

    pages = []
    for offset in (0, 2, 4, 6):
        page = await client.get(
            f"{API}/memories", params={"limit": 2, "offset": offset}, headers=family.adult.headers
        )
        assert page.headers["x-total-count"] == "5"
        pages += [m["title"] for m in page.json()]
    assert pages == list(reversed(titles))

    teen_view = await client.get(f"{API}/memories", headers=teen.headers)
    assert teen_view.headers["x-total-count"] == "6"
    assert teen_view.json()[0]["title"] == "teen draft"


async def test_list_filters_by_status(client, factory):
    family = await factory.family(["adult"])
    draft = await create_memory(client, family.adult)
    published = await create_memory(client, family.adult, status="published")
    archived = await create_memory(client, family.adult, status="published")
    await put_memory(client, family.adult, archived["id"], status="archived")

    for status, expected in (
        ("draft", draft),
        ("published", published),
        ("archived", archived),
    ):
        response = await client.get(
            f"{API}/memories", params={"status": status}, headers=family.adult.headers
        )
        assert [m["id"] for m in response.json()] == [expected["id"]]
        assert response.headers["x-total-count"] == "1"
    everything = await client.get(f"{API}/memories", headers=family.adult.headers)
    assert everything.headers["x-total-count"] == "3"


@pytest.mark.parametrize(
    "params",
    [{"limit": 0}, {"limit": 101}, {"offset": -1}, {"status": "deleted"}, {"limit": "many"}],
)
async def test_list_parameters_are_validated(client, factory, params):
    family = await factory.family(["adult"])
    response = await client.get(f"{API}/memories", params=params, headers=family.adult.headers)
    assert response.status_code == 422


async def test_unknown_and_malformed_ids(client, factory):
    family = await factory.family(["adult"])
    assert (await get_memory(client, family.adult, str(uuid.uuid4()))).status_code == 404
    assert (await get_memory(client, family.adult, "not-a-uuid")).status_code == 422


async def test_memories_need_a_token(client):
    response = await client.get(f"{API}/memories")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


# Drafts --------------------------------------------------------------------------------------


async def test_drafts_are_invisible_to_every_other_member(client, factory):
    family = await factory.family(["adult", "teen", "child", "grandparent"])
    teen = family.by_role("teen")
    draft = await create_memory(client, teen, title="secret plans")

    assert (await get_memory(client, teen, draft["id"])).status_code == 200
    for member in family.members:
        if member is teen:
            continue
        assert (await get_memory(client, member, draft["id"])).status_code == 404, member.role
        listed = await client.get(f"{API}/memories", headers=member.headers)
        assert draft["id"] not in [m["id"] for m in listed.json()]
        assert (await put_memory(client, member, draft["id"], title="x")).status_code == 404
        deleted = await client.delete(f"{API}/memories/{draft['id']}", headers=member.headers)
        assert deleted.status_code == 404
    assert (await get_memory(client, teen, draft["id"])).json()["title"] == "secret plans"


async def test_drafts_are_private_in_the_database_too(client, factory, app):
    family = await factory.family(["adult", "teen"])
    teen = family.by_role("teen")
    draft = await create_memory(client, teen)
    memory_id = uuid.UUID(draft["id"])
    database = app.state.context.database
    # A user connection exactly as a request gets it, without the service in between.
    async with database.user_session({"sub": family.adult.id, "role": "authenticated"}) as db:
        assert (
            await db.fetchval("select count(*) from memory_details where id = $1", memory_id) == 0
        )
        status = await db.execute(
            "update public.memories set title = 'pwned' where id = $1", memory_id
        )
        assert status == "UPDATE 0"
    async with database.user_session({"sub": teen.id, "role": "authenticated"}) as db:
        assert (
            await db.fetchval("select count(*) from memory_details where id = $1", memory_id) == 1
        )


# Updating ------------------------------------------------------------------------------------


async def test_partial_update_changes_only_the_fields_sent(client, factory):
    family = await factory.family(["adult", "grandparent"])
    grandparent = family.by_role("grandparent")
    memory = await create_memory(
        client,
        family.adult,
        title="Picnic",
        description="By the lake",
        location="Lake",
        memory_date="2023-07-01",
        tags=["summer"],
        status="published",
    )

    response = await put_memory(client, grandparent, memory["id"], title="Picnic!", tags=["Lake"])

    assert response.status_code == 200, response.text
    updated = response.json()
    assert updated["title"] == "Picnic!"
    assert updated["tags"] == ["lake"]
    assert updated["description"] == "By the lake"
    assert updated["location"] == "Lake"
    assert updated["memory_date"] == "2023-07-01"
    assert updated["status"] == "published"
    assert updated["user_id"] == family.adult.id  # authorship never changes
    assert updated["modified_by"] == grandparent.id
    assert updated["updated_at"] > memory["updated_at"]
    assert updated["created_at"] == memory["created_at"]

    cleared = await put_memory(
        client, family.adult, memory["id"], description=None, location=None, memory_date=None
    )
    assert cleared.status_code == 200
    body = cleared.json()
    assert (body["description"], body["location"], body["memory_date"]) == (None, None, None)
    assert body["title"] == "Picnic!"
    assert body["modified_by"] == family.adult.id

    empty = await put_memory(client, family.adult, memory["id"], tags=[])
    assert empty.json()["tags"] == []


async def test_concurrent_partial_updates_do_not_overwrite_each_other(client, factory):
    family = await factory.family(["adult"])
    memory = await create_memory(client, family.adult)
    await asyncio.gather(
        put_memory(client, family.adult, memory["id"], title="new title"),
        put_memory(client, family.adult, memory["id"], location="new place"),
        put_memory(client, family.adult, memory["id"], description="new words"),
    )
    final = (await get_memory(client, family.adult, memory["id"])).json()
    assert (final["title"], final["location"], final["description"]) == (
        "new title",
        "new place",
        "new words",
    )


ALLOWED = {("draft", "published"), ("published", "archived"), ("archived", "published")}
STATUSES = ("draft", "published", "archived")


async def _memory_in(client, member, status: str) -> dict[str, Any]:
    memory = await create_memory(client, member)
    path = {"draft": [], "published": ["published"], "archived": ["published", "archived"]}
    for step in path[status]:
        response = await put_memory(client, member, memory["id"], status=step)
        assert response.status_code == 200, response.text
    return memory


@pytest.mark.parametrize("current", STATUSES)
@pytest.mark.parametrize("target", STATUSES)
async def test_status_transitions(client, factory, current, target):
    family = await factory.family(["adult"])
    memory = await _memory_in(client, family.adult, current)

    response = await put_memory(client, family.adult, memory["id"], status=target, title="t2")

    if current == target or (current, target) in ALLOWED:
        assert response.status_code == 200, response.text
        assert response.json()["status"] == target
        assert response.json()["title"] == "t2"
    else:
        assert response.status_code == 400, response.text
        assert f"{current} memory cannot become {target}" in response.json()["detail"]
        after = (await get_memory(client, family.adult, memory["id"])).json()
        assert (after["status"], after["title"]) == (current, memory["title"])


async def test_the_database_refuses_impossible_transitions_too(client, factory, pg):
    family = await factory.family(["adult"])
    memory = await _memory_in(client, family.adult, "published")
    with pytest.raises(asyncpg.CheckViolationError):
        await pg.execute(
            "update public.memories set status = 'draft' where id = $1", uuid.UUID(memory["id"])
        )


# Deleting ------------------------------------------------------------------------------------


async def test_delete_removes_the_memory(client, factory, pg):
    family = await factory.family(["adult"])
    memory = await create_memory(client, family.adult, status="published")
    response = await client.delete(f"{API}/memories/{memory['id']}", headers=family.adult.headers)
    assert response.status_code == 204
    assert (await get_memory(client, family.adult, memory["id"])).status_code == 404
    again = await client.delete(f"{API}/memories/{memory['id']}", headers=family.adult.headers)
    assert again.status_code == 404
    count = await pg.fetchval(
        "select count(*) from public.memories where id = $1", uuid.UUID(memory["id"])
    )
    assert count == 0


# Analytics -----------------------------------------------------------------------------------


async def test_memory_events_are_recorded(client, factory, app, pg):
    family = await factory.family(["adult"])
    memory = await create_memory(client, family.adult, title="private words")
    await get_memory(client, family.adult, memory["id"])
    await put_memory(client, family.adult, memory["id"], title="other words", location="x")
    await client.delete(f"{API}/memories/{memory['id']}", headers=family.adult.headers)
    await app.state.context.analytics.flush()

    rows = await pg.fetch(
        "select event_type, user_id, metadata from public.analytics_events"
        " where family_unit_id = $1 and event_type like 'memory_%' order by \"timestamp\"",
        uuid.UUID(family.id),
    )
    assert [row["event_type"] for row in rows] == [
        "memory_posted",
        "memory_viewed",
        "memory_updated",
        "memory_deleted",
    ]
    for row in rows:
        assert str(row["user_id"]) == family.adult.id
        assert row["metadata"]["memory_id"] == memory["id"]
        assert "words" not in json.dumps(row["metadata"])  # ids and counts only
    assert rows[2]["metadata"]["fields_changed"] == 2
