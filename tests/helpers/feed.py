"""Feed test helpers: memories straight into the database, reactions and comments through the API.

Memories are inserted with SQL on the superuser `pg` pool so a test can choose their age
(`created_at`); the triggers still run, so the per-family counters stay exact. Reactions and
comments always go through the HTTP endpoints, so their counters are exercised for real.
"""

import uuid
from datetime import date, datetime, timedelta
from typing import Any

import asyncpg
import httpx

from tests.helpers import API
from tests.helpers.factories import Member

EMOJI = ["👍", "❤️", "😂", "😮", "😢", "🎉", "🔥", "💯"]

_INSERT_MEMORY = """
insert into public.memories (family_unit_id, user_id, title, description, memory_date,
                             location, tags, status, created_at, updated_at)
values ($1, $2, $3, $4, $5, $6, $7, $8, coalesce($9, now() - $10::interval),
        coalesce($9, now() - $10::interval))
returning id
"""
_INSERT_MEDIA = """
insert into public.memory_media (id, memory_id, family_unit_id, storage_path, file_name,
                                 mime_type, file_size, thumbnail_path, processing_status)
values ($1, $2, $3, $4, 'photo.jpg', 'image/jpeg', 1000, $5, $6)
"""


async def make_memory(
    pg: asyncpg.Pool,
    author: Member,
    *,
    title: str = "A day to remember",
    description: str | None = None,
    location: str | None = None,
    tags: list[str] | None = None,
    memory_date: date | None = None,
    status: str = "published",
    age: timedelta = timedelta(minutes=1),
    created_at: datetime | None = None,
    photos: int = 0,
    thumbnails_ready: bool = True,
) -> str:
    """A memory by `author`, created `age` ago (or exactly at `created_at`); returns its id."""
    memory_id = await pg.fetchval(
        _INSERT_MEMORY,
        uuid.UUID(author.family_id),
        uuid.UUID(author.id),
        title,
        description,
        memory_date,
        location,
        tags or [],
        status,
        created_at,
        age,
    )
    for _ in range(photos):
        media_id = uuid.uuid4()
        folder = f"{author.family_id}/{memory_id}"
        await pg.execute(
            _INSERT_MEDIA,
            media_id,
            memory_id,
            uuid.UUID(author.family_id),
            f"{folder}/{media_id}.jpg",
            f"{folder}/{media_id}_thumb.jpg" if thumbnails_ready else None,
            "completed" if thumbnails_ready else "pending",
        )
    return str(memory_id)


async def react(client: httpx.AsyncClient, member: Member, memory_id: str, emoji: str) -> Any:
    response = await client.post(
        f"{API}/feed/memories/{memory_id}/reactions", json={"emoji": emoji}, headers=member.headers
    )
    assert response.status_code == 201, response.text
    return response.json()


async def comment(
    client: httpx.AsyncClient,
    member: Member,
    memory_id: str,
    content: str = "Lovely!",
    parent: str | None = None,
) -> Any:
    response = await client.post(
        f"{API}/feed/memories/{memory_id}/comments",
        json={"content": content, "parent_comment_id": parent},
        headers=member.headers,
    )
    assert response.status_code == 201, response.text
    return response.json()


async def engage(
    client: httpx.AsyncClient, members: list[Member], memory_id: str, weight: int
) -> None:
    """Reactions and comments through the API with reactions + 2 × comments == weight.

    As many reactions as there are (member, emoji) pairs, comments for the rest.
    """
    pairs = [(member, emoji) for emoji in EMOJI for member in members]
    reactions = min(weight, len(pairs))
    if (weight - reactions) % 2:
        reactions -= 1
    comments = (weight - reactions) // 2
    for member, emoji in pairs[:reactions]:
        await react(client, member, memory_id, emoji)
    for index in range(comments):
        await comment(client, members[index % len(members)], memory_id, f"Comment {index}")


async def feed(client: httpx.AsyncClient, member: Member, **params: Any) -> httpx.Response:
    return await client.get(f"{API}/feed", params=params, headers=member.headers)


async def feed_ok(client: httpx.AsyncClient, member: Member, **params: Any) -> dict[str, Any]:
    response = await feed(client, member, **params)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


async def counters(pg: asyncpg.Pool, memory_id: str) -> dict[str, Any]:
    """The stored counters of a memory next to fresh counts of the rows they summarise."""
    row = await pg.fetchrow(
        """
        select m.reaction_count, m.comment_count, m.reactions_by_emoji,
               (select count(*) from public.memory_reactions r where r.memory_id = m.id)
                 as reactions,
               (select count(*) from public.memory_comments c
                where c.memory_id = m.id and c.deleted_at is null) as comments,
               (select coalesce(jsonb_object_agg(emoji, n), '{}'::jsonb) from (
                  select emoji, count(*) as n from public.memory_reactions r
                  where r.memory_id = m.id group by emoji) e) as by_emoji
        from public.memories m where m.id = $1
        """,
        uuid.UUID(memory_id),
    )
    return dict(row)
