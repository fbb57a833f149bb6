"""The feed's guarantees below the API: exact counters under concurrency, row level security
on its own, a fixed number of statements per page, and analytics without content."""

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from app.services import storage_service
from tests.helpers import media_samples as samples
from tests.helpers.feed import API, EMOJI, comment, counters, feed_ok, make_memory, react

# Counters under concurrency -------------------------------------------------------------------


async def test_counters_stay_exact_under_concurrent_changes(client, factory, pg):
    family = await factory.family(["adult", "teen", "child", "grandparent"])
    members = family.members
    memory_id = await make_memory(pg, family.adult)
    parents = [await comment(client, family.adult, memory_id, f"parent {i}") for i in range(8)]
    teen = family.by_role("teen")
    earlier = [await react(client, teen, memory_id, emoji) for emoji in EMOJI]

    def post(path: str, member, body: dict[str, Any]):
        return client.post(
            f"{API}/feed/memories/{memory_id}/{path}", json=body, headers=member.headers
        )

    def delete(path: str, member):
        return client.delete(f"{API}/feed/memories/{memory_id}/{path}", headers=member.headers)

    reaction_posts = [
        post("reactions", member, {"emoji": emoji}) for member in members for emoji in EMOJI
    ]
    reaction_posts += [post("reactions", m, {"emoji": "🎉"}) for m in members]  # duplicates
    reaction_deletes = [delete(f"reactions/{r['id']}", teen) for r in earlier]
    comment_posts = [post("comments", m, {"content": f"new {m.role}"}) for m in members]
    # Replies race the deletion of their parents (lock order matters here), and two members
    # delete the same comment at once.
    replies = [
        post("comments", teen, {"content": "re", "parent_comment_id": p["id"]}) for p in parents
    ]
    comment_deletes = [
        delete(f"comments/{p['id']}", deleter)
        for p in parents
        for deleter in (family.adult, family.by_role("grandparent"))
    ]

    groups = await asyncio.gather(
        *[
            asyncio.gather(*group)
            for group in (reaction_posts, reaction_deletes, comment_posts, replies, comment_deletes)
        ]
    )

    statuses = {r.status_code for group in groups for r in group}
    assert statuses <= {201, 204, 400, 409}, [r.text for g in groups for r in g]
    posted, deleted = groups[0], groups[1]
    assert all(r.status_code == 204 for r in deleted)
    teen_new = [r for r in posted if r.status_code == 201 and r.json()["user_id"] == teen.id]
    stored = await counters(pg, memory_id)
    assert stored["reactions"] == 3 * len(EMOJI) + len(teen_new)
    assert stored["reaction_count"] == stored["reactions"]
    assert stored["reactions_by_emoji"] == stored["by_emoji"]
    assert stored["comment_count"] == stored["comments"]
    stale_reply_counts = await pg.fetchval(
        """
        select count(*) from public.memory_comments p
        where p.memory_id = $1 and p.reply_count <> (
          select count(*) from public.memory_comments c where c.parent_comment_id = p.id)
        """,
        uuid.UUID(memory_id),
    )
    assert stale_reply_counts == 0
    published = await pg.fetchval(
        "select published from app.family_memory_counts where family_unit_id = $1",
        uuid.UUID(family.id),
    )
    assert published == 1


async def test_published_counter_follows_inserts_status_changes_and_deletes(client, factory, pg):
    family = await factory.family(["adult"])
    made = [await make_memory(pg, family.adult) for _ in range(3)]
    await make_memory(pg, family.adult, status="draft")
    family_id = uuid.UUID(family.id)
    await pg.execute(
        "update public.memories set status = 'archived' where id = $1", uuid.UUID(made[0])
    )
    await pg.execute("delete from public.memories where id = $1", uuid.UUID(made[1]))
    await pg.execute(
        "update public.memories set status = 'published' where family_unit_id = $1 "
        "and status = 'draft'",
        family_id,
    )
    await pg.execute(
        "update public.memories set title = 'renamed' where id = $1", uuid.UUID(made[2])
    )

    fresh = await pg.fetchval(
        "select count(*) from public.memories where family_unit_id = $1 and status = 'published'",
        family_id,
    )
    assert fresh == 2
    assert (await feed_ok(client, family.adult))["total_count"] == fresh


# Row level security on its own ---------------------------------------------------------------

_AS_MEMBER = """
select set_config('role', 'authenticated', true), set_config('request.jwt.claims', $1, true)
"""


@contextlib.asynccontextmanager
async def as_member(pg: asyncpg.Pool, member) -> AsyncIterator[asyncpg.Connection]:
    """A transaction acting as `member` straight in SQL, rolled back at the end."""
    async with pg.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            claims = json.dumps({"sub": member.id, "role": "authenticated"})
            await conn.execute(_AS_MEMBER, claims)
            yield conn
        finally:
            await transaction.rollback()


async def test_rls_hides_and_protects_another_familys_reactions_and_comments(client, factory, pg):
    family = await factory.family(["adult", "teen"])
    outsider = (await factory.family(["adult"])).adult
    memory_id = await make_memory(pg, family.adult, title="Picnic")
    reaction = await react(client, family.by_role("teen"), memory_id, "👍")
    note = await comment(client, family.by_role("teen"), memory_id, "secret")
    memory = uuid.UUID(memory_id)

    async with as_member(pg, outsider) as conn:
        for table in ("memory_reactions", "memory_comments", "memory_comment_details"):
            seen = await conn.fetchval(
                f"select count(*) from public.{table} where memory_id = $1", memory
            )
            assert seen == 0, table
        assert await conn.fetch("select app.matching_memory_ids('picnic', null)") == []
        assert (
            await conn.fetchval(
                "select count(*) from app.family_memory_counts where family_unit_id = $1",
                uuid.UUID(family.id),
            )
            == 0
        )
        assert (
            await conn.execute(
                "update public.memory_comments set content = 'x' where id = $1",
                uuid.UUID(note["id"]),
            )
            == "UPDATE 0"
        )
        assert (
            await conn.execute(
                "delete from public.memory_reactions where id = $1", uuid.UUID(reaction["id"])
            )
            == "DELETE 0"
        )
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(
                "insert into public.memory_reactions (memory_id, family_unit_id, user_id, emoji)"
                " values ($1, $2, $3, '❤️')",
                memory,
                uuid.UUID(outsider.family_id),
                uuid.UUID(outsider.id),
            )
    stored = await counters(pg, memory_id)
    assert stored["reaction_count"] == 1 and stored["comment_count"] == 1


async def test_rls_and_guard_enforce_drafts_and_comment_permissions_in_sql(client, factory, pg):
    family = await factory.family(["adult", "teen", "child"])
    teen, child = family.by_role("teen"), family.by_role("child")
    draft = uuid.UUID(await make_memory(pg, teen, status="draft"))
    memory_id = await make_memory(pg, family.adult)
    childs = await comment(client, child, memory_id, "child's")
    adults = await comment(client, family.adult, memory_id, "adult's")

    async with as_member(pg, family.adult) as conn:  # another member's draft: invisible
        assert await conn.fetchval("select count(*) from public.memories where id = $1", draft) == 0
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(
                "insert into public.memory_comments (memory_id, family_unit_id, user_id, content)"
                " values ($1, $2, $3, 'x')",
                draft,
                uuid.UUID(family.id),
                uuid.UUID(family.adult.id),
            )
    async with as_member(pg, child) as conn:  # a child may not delete, even their own
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(
                "update public.memory_comments set deleted_at = now() where id = $1",
                uuid.UUID(childs["id"]),
            )
    async with as_member(pg, teen) as conn:  # a teen edits and deletes only their own
        for change in ("content = 'x'", "deleted_at = now()"):
            outcome = await conn.execute(
                f"update public.memory_comments set {change} where id = $1",
                uuid.UUID(adults["id"]),
            )
            assert outcome == "UPDATE 0", change
    async with as_member(pg, family.adult) as conn:  # an adult never edits others' words...
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(
                "update public.memory_comments set content = 'x' where id = $1",
                uuid.UUID(childs["id"]),
            )
    async with as_member(pg, family.adult) as conn:  # ...but may delete them
        assert (
            await conn.execute(
                "update public.memory_comments set deleted_at = now() where id = $1",
                uuid.UUID(childs["id"]),
            )
            == "UPDATE 1"
        )


# A fixed number of statements per page --------------------------------------------------------


class _CountingConnection:
    """Forwards to the real connection and notes every statement it runs."""

    _RUNS = frozenset({"fetch", "fetchrow", "fetchval", "execute", "executemany"})

    def __init__(self, conn: asyncpg.Connection, log: list[str]):
        self._conn = conn
        self._log = log

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._conn, name)
        if name not in self._RUNS:
            return attribute

        async def run(*args: Any, **kwargs: Any) -> Any:
            self._log.append(args[0])
            return await attribute(*args, **kwargs)

        return run


@pytest.fixture
def statements(app, monkeypatch) -> list[str]:
    """Every statement the members' request transactions run while the test lasts (besides
    opening them), look-ups made on the same connection (`connection_in_use`) included."""
    database = app.state.context.database
    opening, in_use = database.member_session, database.connection_in_use
    log: list[str] = []
    counting: dict[int, _CountingConnection] = {}  # one wrapper per connection

    def counted(conn: Any) -> Any:
        if conn is None:
            return None
        return counting.setdefault(id(conn), _CountingConnection(conn, log))

    @contextlib.asynccontextmanager
    async def counted_session(*args: Any, **kwargs: Any) -> AsyncIterator[tuple[Any, Any]]:
        async with opening(*args, **kwargs) as (conn, member):
            yield counted(conn), member

    monkeypatch.setattr(database, "member_session", counted_session)
    monkeypatch.setattr(database, "connection_in_use", lambda: counted(in_use()))
    return log


async def test_a_page_of_100_costs_the_same_statements_as_a_page_of_1(
    client, factory, pg, statements, signing_calls
):
    family = await factory.family(["adult", "teen"])
    teen = family.by_role("teen")
    for index in range(100):
        memory_id = await make_memory(
            pg, family.adult, tags=["zoo"], photos=2, thumbnails_ready=index % 2 == 0
        )
        await react(client, teen, memory_id, "❤️")
        await comment(client, teen, memory_id)

    # The count (which reads the signing epoch along) and the page; a filter plans for its
    # values first (set local). Signing the page's URLs runs no statement of its own.
    expected = {"": 2, "created_at": 2, "zoo": 3, family.adult.id: 3}
    for params in ({}, {"order_by": "created_at"}, {"tags": "zoo"}, {"user_id": family.adult.id}):
        costs = {}
        for size in (1, 100):
            statements.clear()
            signing_calls.clear()
            page = await feed_ok(client, family.adult, page_size=size, **params)
            assert len(page["items"]) == size
            costs[size] = len(statements)
            assert len(signing_calls) == 1  # every URL of the page signed in one call
            media = [m for item in page["items"] for m in item["media"]]
            ready = [m for m in media if m["thumbnail_url"]]
            assert len(media) == 2 * size
            assert signing_calls[0] == len(media) + len(ready)  # originals and ready thumbnails
        assert costs[1] == costs[100] == expected[next(iter(params.values()), "")], (
            params,
            costs,
        )


async def test_a_page_signs_with_the_epoch_read_by_its_count_not_a_statement_of_its_own(
    app, client, factory, monkeypatch
):
    # The family's signing epoch comes with the page's count (one round trip fewer per
    # page); the epoch itself is the one verification reads, so the links work.
    family = await factory.family(["adult", "teen"])
    memory = await samples.create_memory(client, family.adult, status="published")
    photo = await samples.upload(
        client, family.adult, memory["id"], samples.jpeg((32, 24)), "image/jpeg"
    )
    await samples.wait_for_media(client, family.adult, memory["id"], photo["id"])
    removed = await client.delete(  # moves the family's epoch on: links carry a non-zero one
        f"{API}/families/me/members/{family.by_role('teen').id}", headers=family.adult.headers
    )
    assert removed.status_code == 204
    with monkeypatch.context() as patched:
        patched.setattr(storage_service, "_SIGNING_EPOCHS", "select no_such_column")
        for params in ({}, {"order_by": "created_at"}, {"tags": "bench"}):
            page = await feed_ok(client, family.adult, **params)
            assert len(page["items"]) == (0 if params.get("tags") else 1)
        page = await feed_ok(client, family.adult)
    [media] = page["items"][0]["media"]
    for url in (media["url"], media["thumbnail_url"], media["variants"]["preview"]["url"]):
        assert (await client.get(url)).status_code == 200, url


# Analytics ------------------------------------------------------------------------------------


async def test_feed_reaction_and_comment_events_carry_ids_only(app, client, factory, pg):
    family = await factory.family(["adult"])
    memory_id = await make_memory(pg, family.adult)
    await feed_ok(client, family.adult, page=1)
    reaction = await react(client, family.adult, memory_id, "👍")
    await client.delete(
        f"{API}/feed/memories/{memory_id}/reactions/{reaction['id']}", headers=family.adult.headers
    )
    note = await comment(client, family.adult, memory_id, "a private sentence")
    await client.put(
        f"{API}/feed/memories/{memory_id}/comments/{note['id']}",
        json={"content": "another private sentence"},
        headers=family.adult.headers,
    )
    await client.delete(
        f"{API}/feed/memories/{memory_id}/comments/{note['id']}", headers=family.adult.headers
    )
    await app.state.context.analytics.flush()

    rows = await pg.fetch(
        "select event_type, user_id, metadata from public.analytics_events "
        "where family_unit_id = $1 and event_type <> 'user_registered' order by \"timestamp\"",
        uuid.UUID(family.id),
    )
    events = {row["event_type"]: row["metadata"] for row in rows}
    assert set(events) == {
        "feed_viewed",
        "reaction_created",
        "reaction_deleted",
        "comment_created",
        "comment_updated",
        "comment_deleted",
    }
    assert all(row["user_id"] == uuid.UUID(family.adult.id) for row in rows)
    assert events["feed_viewed"] == {"page": 1, "items": 1}
    assert events["reaction_created"] == {"memory_id": memory_id, "reaction_id": reaction["id"]}
    assert events["comment_updated"] == {"memory_id": memory_id, "comment_id": note["id"]}
    assert "private" not in json.dumps([row["metadata"] for row in rows])
