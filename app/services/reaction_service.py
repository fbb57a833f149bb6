"""Reactions: one of each emoji per member per memory, on memories the member can see.

Visibility is the memories_select policy: a memory another family owns, or another
member's draft, is simply absent (404). The counters the feed scores by move in the same
transaction, by trigger (see the reactions migration).
"""

from uuid import UUID

import asyncpg

from app.db.postgres import Connection
from app.errors import Conflict, Forbidden, NotFound
from app.models import rbac
from app.models.identity import Actor
from app.models.rbac import Permission
from app.schemas.feed import Emoji, Reaction

# Selecting the memory under RLS doubles as the visibility check: no row, no insert.
_INSERT = """
insert into public.memory_reactions (memory_id, family_unit_id, user_id, emoji)
select m.id, m.family_unit_id, $2, $3 from public.memories m where m.id = $1
returning id, memory_id, user_id, emoji, created_at, updated_at
"""
_LIST = """
select id, memory_id, user_id, emoji, created_at, updated_at from public.memory_reactions
where memory_id = $1
order by created_at, id
"""
_MEMORY_VISIBLE = "select exists (select 1 from public.memories where id = $1)"
_DELETE_OWN = """
delete from public.memory_reactions where id = $1 and memory_id = $2 and user_id = $3
returning id
"""
_OWNER = "select user_id from public.memory_reactions where id = $1 and memory_id = $2"


async def create(db: Connection, actor: Actor, memory_id: UUID, emoji: Emoji) -> Reaction:
    rbac.require(actor, Permission.REACT)
    try:
        row = await db.fetchrow(_INSERT, memory_id, actor.id, emoji)
    except asyncpg.UniqueViolationError:
        # unique (memory_id, user_id, emoji): of two identical concurrent requests, the
        # second waits for the first and lands here.
        raise Conflict(f"You already reacted with {emoji} to this memory") from None
    if row is None:
        raise NotFound("Memory not found")
    return Reaction(**dict(row))


async def list_for_memory(db: Connection, actor: Actor, memory_id: UUID) -> list[Reaction]:
    rbac.require(actor, Permission.VIEW_MEMORIES)
    rows = await db.fetch(_LIST, memory_id)
    # Reactions are visible exactly when their memory is; only an empty list needs a look.
    if not rows and not await db.fetchval(_MEMORY_VISIBLE, memory_id):
        raise NotFound("Memory not found")
    return [Reaction(**dict(row)) for row in rows]


async def delete(db: Connection, actor: Actor, memory_id: UUID, reaction_id: UUID) -> None:
    """Remove one of your own reactions; someone else's is a 403, a missing one a 404."""
    rbac.require(actor, Permission.REACT)
    if await db.fetchval(_DELETE_OWN, reaction_id, memory_id, actor.id) is not None:
        return
    # Nothing deleted: say why. The lookup runs under RLS, so a reaction on a memory the
    # caller cannot see stays a 404.
    owner = await db.fetchval(_OWNER, reaction_id, memory_id)
    if owner is None:
        raise NotFound("Reaction not found")
    raise Forbidden("You can only remove your own reactions")
