"""Comments: threads on memories the member can see, at most 3 levels below a top-level one.

Visibility is the memories_select policy (another family's memory or another member's
draft is a 404). Deleting is soft: the comment keeps its place in the thread, its text is
erased and it reads "[deleted]"; comment_count (and so the feed score) stops counting it
in the same transaction, by trigger. Who may edit or delete is the permission table
(`rbac`) here and the guard trigger in the database.
"""

from datetime import datetime
from uuid import UUID

import asyncpg

from app.adapters.cursors import CursorCodec, InvalidCursor
from app.adapters.storage.base import StorageBackend
from app.db.postgres import Connection
from app.errors import Conflict, Forbidden, Invalid, NotFound
from app.models import rbac
from app.models.identity import Actor
from app.models.rbac import Permission
from app.schemas.feed import Comment, CommentPage
from app.services import media_urls

# Depth 0 is a top-level comment; the database refuses depth > 3 as well.
MAX_DEPTH = 3

# The memory (under RLS: visible or absent) and, when replying, the parent comment.
_TARGET = """
select m.id as memory_id, p.memory_id as parent_memory_id, p.depth as parent_depth,
       p.deleted_at as parent_deleted_at
from public.memories m
left join public.memory_comments p on p.id = $2
where m.id = $1
"""
_INSERT = """
insert into public.memory_comments (memory_id, family_unit_id, user_id, parent_comment_id,
                                    content)
values ($1, $2, $3, $4, $5)
returning id
"""
_DETAILS = """
select id, memory_id, user_id, author, parent_comment_id, content, created_at, updated_at,
       deleted_at, reply_count, imported, imported_author_name
from public.memory_comment_details
where id = $1
"""
# What cursors of the comment list are bound to (app.adapters.cursors).
CURSOR_KIND = "comments"
# Before every comment: where a list starts.
_START = (datetime.fromisoformat("0001-01-01T00:00:00+00:00"), UUID(int=0))
_NO_END = datetime.fromisoformat("9999-12-31T00:00:00+00:00")

# The first $2 top-level comments after the position ($4 created_at, $5 id) and created by
# $6, oldest first, with every reply below them when $3. Keyset: the index
# memory_comments_memory_idx (memory_id, created_at, id) starts right at the position.
_THREADS = """
with recursive thread as (
  (select c.* from public.memory_comment_details c
   where c.memory_id = $1 and c.parent_comment_id is null
     and (c.created_at, c.id) > ($4::timestamptz, $5::uuid) and c.created_at <= $6
   order by c.created_at, c.id
   limit $2)
  union all
  select c.* from public.memory_comment_details c
  join thread t on c.parent_comment_id = t.id
  where $3::boolean
)
select id, memory_id, user_id, author, parent_comment_id, content, created_at, updated_at,
       deleted_at, reply_count, imported, imported_author_name
from thread
order by created_at, id
"""
_MEMORY_VISIBLE = "select exists (select 1 from public.memories where id = $1)"
_NOW = "select now()"
_COMMENT = """
select user_id, deleted_at from public.memory_comments where id = $1 and memory_id = $2
"""
_EDIT = """
update public.memory_comments set content = $2, updated_at = now()
where id = $1 and deleted_at is null
returning id
"""
# The text goes with the deletion: "deleted" means nobody reads it again.
_SOFT_DELETE = """
update public.memory_comments set deleted_at = now(), updated_at = now(), content = '[deleted]'
where id = $1 and deleted_at is null
"""


async def create(
    db: Connection,
    actor: Actor,
    memory_id: UUID,
    content: str,
    parent_id: UUID | None,
    *,
    storage: StorageBackend,
) -> Comment:
    rbac.require(actor, Permission.COMMENT)
    target = await db.fetchrow(_TARGET, memory_id, parent_id)
    if target is None:
        raise NotFound("Memory not found")
    if parent_id is not None:
        if target["parent_memory_id"] != memory_id:
            raise Invalid("parent_comment_id is not a comment on this memory")
        if target["parent_deleted_at"] is not None:
            raise Invalid("Cannot reply to a deleted comment")
        if target["parent_depth"] >= MAX_DEPTH:
            raise Invalid(f"Replies can be at most {MAX_DEPTH} levels below a top-level comment")
    try:
        comment_id = await db.fetchval(
            _INSERT, memory_id, actor.family_unit_id, actor.id, parent_id, content
        )
    except asyncpg.ForeignKeyViolationError:
        # The memory or the parent was deleted since the check above.
        raise NotFound("Memory not found") from None
    return await _details(db, storage, comment_id)


async def list_threads(
    db: Connection,
    actor: Actor,
    memory_id: UUID,
    *,
    include_replies: bool,
    limit: int,
    storage: StorageBackend,
) -> list[Comment]:
    """Top-level comments oldest first (at most `limit`), each with its nested replies."""
    rbac.require(actor, Permission.VIEW_MEMORIES)
    return await _threads(db, storage, memory_id, include_replies, limit, *_START, _NO_END)


async def scroll_threads(
    db: Connection,
    actor: Actor,
    memory_id: UUID,
    *,
    include_replies: bool,
    limit: int,
    cursor: str,
    cursors: CursorCodec,
    storage: StorageBackend,
) -> CommentPage:
    """One page of a scroll of top-level comments (`cursor` empty for the first page).

    The scroll holds the top-level comments that existed when it began: later ones come
    after the position, and are left for the next scroll. A deleted comment keeps its place.
    """
    rbac.require(actor, Permission.VIEW_MEMORIES)
    binding = {"memory_id": memory_id}
    if cursor:
        opened = cursors.open(cursor, kind=CURSOR_KIND, user_id=actor.id, binding=binding)
        started_at = opened.started_at
        try:
            created, comment_id = opened.state["p"]
            position = (datetime.fromisoformat(created), UUID(comment_id))
            began = datetime.fromisoformat(opened.state["at"])
        except (KeyError, TypeError, ValueError):
            raise InvalidCursor() from None
    else:
        started_at, position, began = cursors.now(), _START, await db.fetchval(_NOW)
    threads = await _threads(db, storage, memory_id, include_replies, limit + 1, *position, began)
    next_cursor = None
    if len(threads) > limit:
        threads = threads[:limit]
        last = threads[-1]
        next_cursor = cursors.seal(
            kind=CURSOR_KIND,
            user_id=actor.id,
            binding=binding,
            state={"at": began.isoformat(), "p": [last.created_at.isoformat(), str(last.id)]},
            started_at=started_at,
        )
    return CommentPage(items=threads, next_cursor=next_cursor)


async def _threads(
    db: Connection,
    storage: StorageBackend,
    memory_id: UUID,
    include_replies: bool,
    limit: int,
    after_created_at: datetime,
    after_id: UUID,
    created_by: datetime,
) -> list[Comment]:
    rows = await db.fetch(
        _THREADS, memory_id, limit, include_replies, after_created_at, after_id, created_by
    )
    # Comments are visible exactly when their memory is; only an empty list needs a look.
    if not rows and not await db.fetchval(_MEMORY_VISIBLE, memory_id):
        raise NotFound("Memory not found")
    comments = {comment.id: comment for comment in await _shaped(storage, rows)}
    threads = []
    for comment in comments.values():  # oldest first, so replies append in order
        parent = comments.get(comment.parent_comment_id) if comment.parent_comment_id else None
        if parent is None:
            threads.append(comment)
        else:
            parent.replies.append(comment)
    return threads


async def update(
    db: Connection,
    actor: Actor,
    memory_id: UUID,
    comment_id: UUID,
    content: str,
    *,
    storage: StorageBackend,
) -> Comment:
    rbac.require(actor, Permission.EDIT_OWN_COMMENT)
    comment = await _get(db, memory_id, comment_id)
    if comment["user_id"] != actor.id:
        raise Forbidden("Only the author can edit a comment")
    # _EDIT also finds nothing when a concurrent request deleted the comment meanwhile.
    if comment["deleted_at"] is not None or await db.fetchval(_EDIT, comment_id, content) is None:
        raise Conflict("A deleted comment cannot be edited")
    return await _details(db, storage, comment_id)


async def delete(db: Connection, actor: Actor, memory_id: UUID, comment_id: UUID) -> bool:
    """Soft-delete; True if it was deleted now, False if it already was."""
    comment = await _get(db, memory_id, comment_id)
    own = comment["user_id"] == actor.id
    rbac.require(actor, Permission.DELETE_OWN_COMMENT if own else Permission.DELETE_ANY_COMMENT)
    if comment["deleted_at"] is not None:
        return False
    # Zero rows when a concurrent request deleted it first: still deleted once.
    return await db.execute(_SOFT_DELETE, comment_id) == "UPDATE 1"


async def _get(db: Connection, memory_id: UUID, comment_id: UUID) -> asyncpg.Record:
    comment = await db.fetchrow(_COMMENT, comment_id, memory_id)
    if comment is None:
        raise NotFound("Comment not found")
    return comment


async def _details(db: Connection, storage: StorageBackend, comment_id: UUID) -> Comment:
    row = await db.fetchrow(_DETAILS, comment_id)
    [comment] = await _shaped(storage, [row])
    return comment


async def _shaped(storage: StorageBackend, rows: list[asyncpg.Record]) -> list[Comment]:
    """Comments as the API shows them: uploaded avatars' URLs signed in one call."""
    comments = [dict(row) for row in rows]
    await media_urls.shape_authors(storage, [comment["author"] for comment in comments])
    return [Comment(**comment) for comment in comments]
