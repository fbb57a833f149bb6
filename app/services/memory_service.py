"""Memories and their media rows: create, read, partial update, status lifecycle, delete.

Every query runs on the caller's RLS connection, so the database decides visibility
(drafts only for their author, nothing of another family). The service adds the rules
that need a clear answer: 404 for what the caller cannot see, 403 for what their role may
not do (`rbac`), 400 for an impossible status change, 413 for the size limits.
Where a memory's files live is `app.services.media_paths`.
"""

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

from app.adapters.cursors import CursorCodec, InvalidCursor
from app.adapters.storage.base import ObjectStat, StorageBackend
from app.config import Settings
from app.db.postgres import Connection
from app.errors import Conflict, Invalid, NotFound, PayloadTooLarge
from app.models import rbac
from app.models.identity import Actor
from app.models.media_types import EXTENSION_FOR_MIME
from app.models.rbac import Permission
from app.schemas.memories import (
    Media,
    MediaRef,
    Memory,
    MemoryCreate,
    MemoryPage,
    MemoryStatus,
    MemoryUpdate,
)
from app.services import media_urls, quota_service
from app.services.media_paths import derived_paths, normalize_mime, parse_media_path

MEMORY_NOT_FOUND = "Memory not found"

# Status lifecycle: draft → published → archived → published. Staying put is not a change.
ALLOWED_TRANSITIONS: frozenset[tuple[str, str]] = frozenset(
    {("draft", "published"), ("published", "archived"), ("archived", "published")}
)
# A memory is born a draft or published; "archived" is only reached from "published".
INITIAL_STATUSES = frozenset({"draft", "published"})


@dataclass(frozen=True)
class MemoryRef:
    """The facts about a memory that permission checks need."""

    id: UUID
    user_id: UUID
    family_unit_id: UUID
    status: MemoryStatus


@dataclass(frozen=True)
class Removed:
    """Stored objects that belonged to what was deleted (removed in the background)."""

    storage_paths: list[str]
    media_count: int


# Reading -----------------------------------------------------------------------------------

_GET = """
select id, user_id, family_unit_id, title, description, memory_date, location, tags, status,
       created_at, updated_at, modified_by, author, media
from public.memory_details
where id = $1
"""
_LIST = """
select id, user_id, family_unit_id, title, description, memory_date, location, tags, status,
       created_at, updated_at, modified_by, author, media
from public.memory_details
where family_unit_id = $1 and ($2::text is null or status = $2)
order by created_at desc, id
limit $3 offset $4
"""
_COUNT = """
select count(*) from public.memories
where family_unit_id = $1 and ($2::text is null or status = $2)
"""
# A scroll's page: the first $5 memories after the position ($3 created_at, $4 id) in the
# list's order (created_at desc, id). Keyset, two index ranges of
# memories_family_created_idx that start right at the position: no OFFSET to walk.
_SCROLL = """
with page as materialized (
  select id, created_at from (
    (select id, created_at from public.memories
     where family_unit_id = $1 and ($2::text is null or status = $2)
       and created_at = $3 and id > $4
     order by id limit $5)
    union all
    (select id, created_at from public.memories
     where family_unit_id = $1 and ($2::text is null or status = $2) and created_at < $3
     order by created_at desc, id limit $5)
  ) after_position
  order by created_at desc, id limit $5
)
select d.id, d.user_id, d.family_unit_id, d.title, d.description, d.memory_date, d.location,
       d.tags, d.status, d.created_at, d.updated_at, d.modified_by, d.author, d.media
from page p
cross join lateral (select * from public.memory_details where id = p.id limit 1) d
order by p.created_at desc, p.id
"""
# What cursors of this list are bound to (app.adapters.cursors), and where it starts.
CURSOR_KIND = "memories"
_START = (datetime.fromisoformat("9999-12-31T00:00:00+00:00"), UUID(int=0))
_REF = "select id, user_id, family_unit_id, status from public.memories where id = $1"


async def get(db: Connection, actor: Actor, memory_id: UUID, storage: StorageBackend) -> Memory:
    rbac.require(actor, Permission.VIEW_MEMORIES)
    row = await db.fetchrow(_GET, memory_id)
    if row is None:
        raise NotFound(MEMORY_NOT_FOUND)
    return (await _shaped(storage, [dict(row)]))[0]


async def list_visible(
    db: Connection,
    actor: Actor,
    storage: StorageBackend,
    *,
    status: MemoryStatus | None,
    limit: int,
    offset: int,
) -> tuple[list[Memory], int]:
    """One page of the memories the caller can see, newest first, and how many there are."""
    rbac.require(actor, Permission.VIEW_MEMORIES)
    rows = await db.fetch(_LIST, actor.family_unit_id, status, limit, offset)
    total = await db.fetchval(_COUNT, actor.family_unit_id, status)
    return await _shaped(storage, [dict(row) for row in rows]), total


async def _shaped(storage: StorageBackend, rows: list[dict[str, Any]]) -> list[Memory]:
    """Memories as the API shows them: variant and avatar URLs signed in one call."""
    await media_urls.shape_memories(storage, rows)
    return [Memory.model_validate(row) for row in rows]


async def scroll_visible(
    db: Connection,
    actor: Actor,
    storage: StorageBackend,
    *,
    status: MemoryStatus | None,
    limit: int,
    cursor: str,
    cursors: CursorCodec,
) -> tuple[MemoryPage, int]:
    """One page of a scroll of the memories the caller can see (`cursor` empty to start).

    Newest first, so memories created during the scroll come before its position and are
    left for the next scroll; a memory deleted meanwhile is simply not there.
    """
    rbac.require(actor, Permission.VIEW_MEMORIES)
    binding = {"status": status}
    started_at, position = cursors.now(), _START
    if cursor:
        opened = cursors.open(cursor, kind=CURSOR_KIND, user_id=actor.id, binding=binding)
        started_at = opened.started_at
        try:
            created, memory_id = opened.state["p"]
            position = (datetime.fromisoformat(created), UUID(memory_id))
        except (KeyError, TypeError, ValueError):
            raise InvalidCursor() from None
    rows = await db.fetch(_SCROLL, actor.family_unit_id, status, *position, limit + 1)
    memories = await _shaped(storage, [dict(row) for row in rows[:limit]])
    next_cursor = None
    if len(rows) > limit:
        last = memories[-1]
        next_cursor = cursors.seal(
            kind=CURSOR_KIND,
            user_id=actor.id,
            binding=binding,
            state={"p": [last.created_at.isoformat(), str(last.id)]},
            started_at=started_at,
        )
    total = await db.fetchval(_COUNT, actor.family_unit_id, status)
    return MemoryPage(items=memories, next_cursor=next_cursor), total


async def _visible(db: Connection, memory_id: UUID) -> MemoryRef:
    row = await db.fetchrow(_REF, memory_id)
    if row is None:  # not there, another family's, or someone else's draft
        raise NotFound(MEMORY_NOT_FOUND)
    return MemoryRef(**dict(row))


async def load_for_edit(db: Connection, actor: Actor, memory_id: UUID) -> MemoryRef:
    """The memory if the caller may edit it: 404 if they cannot see it, 403 for their role."""
    memory = await _visible(db, memory_id)
    own = memory.user_id == actor.id
    rbac.require(actor, Permission.EDIT_OWN_MEMORY if own else Permission.EDIT_ANY_MEMORY)
    return memory


# Creating and editing ----------------------------------------------------------------------

# Values travel as one JSON object of named fields ($1), read with the table's own row type:
# no list of eight positional values to keep in step with the column list.
_INSERT = """
insert into public.memories
  (family_unit_id, user_id, title, description, memory_date, location, tags, status)
select family_unit_id, user_id, title, description, memory_date, location, tags, status
from jsonb_populate_record(null::public.memories, $1::jsonb)
returning id
"""
# Taken before a change so concurrent edits of one memory queue up instead of overwriting
# each other. FOR UPDATE also applies the memories_update policy: the database agrees.
_LOCK_FOR_EDIT = """
select title, description, memory_date, location, tags, status
from public.memories where id = $1
for update
"""
_UPDATE = """
update public.memories m
set title = v.title, description = v.description, memory_date = v.memory_date,
    location = v.location, tags = v.tags, status = v.status, modified_by = v.modified_by,
    updated_at = now()
from jsonb_populate_record(null::public.memories, $2::jsonb) v
where m.id = $1
returning m.id
"""


async def create(
    db: Connection, actor: Actor, body: MemoryCreate, storage: StorageBackend
) -> Memory:
    """A new memory (a draft unless said otherwise), with any media already uploaded for it."""
    rbac.require(actor, Permission.CREATE_MEMORY)
    if body.status not in INITIAL_STATUSES:
        raise Invalid("A new memory is a draft or published; archive it once published")
    if body.media:
        raise Invalid(
            "Files are uploaded into an existing memory: create it first, then request "
            "POST /storage/upload-url with its id and register each file with "
            "POST /memories/{id}/media"
        )
    values = body.model_dump(include={"title", "description", "memory_date", "location", "status"})
    values.update(family_unit_id=actor.family_unit_id, user_id=actor.id, tags=body.tags or [])
    memory_id = await db.fetchval(_INSERT, _json_values(values))
    return await get(db, actor, memory_id, storage)


def _json_values(values: dict[str, Any]) -> dict[str, Any]:
    """Dates and ids as JSON strings, for jsonb_populate_record."""
    return {
        key: value.isoformat()
        if isinstance(value, date)
        else str(value)
        if isinstance(value, UUID)
        else value
        for key, value in values.items()
    }


async def update(
    db: Connection, actor: Actor, memory_id: UUID, body: MemoryUpdate, storage: StorageBackend
) -> tuple[Memory, int]:
    """Change only the fields sent; returns the memory and how many fields were sent."""
    await load_for_edit(db, actor, memory_id)
    current = await db.fetchrow(_LOCK_FOR_EDIT, memory_id)
    if current is None:  # row level security disagreed with the permission table
        raise NotFound(MEMORY_NOT_FOUND)
    changes = body.model_dump(exclude_unset=True)
    new_status = changes.get("status", current["status"])
    if new_status != current["status"] and (current["status"], new_status) not in (
        ALLOWED_TRANSITIONS
    ):
        raise Invalid(f"A {current['status']} memory cannot become {new_status}")
    values: dict[str, Any] = {**dict(current), **changes, "modified_by": actor.id}
    await db.execute(_UPDATE, memory_id, _json_values(values))
    return await get(db, actor, memory_id, storage), len(changes)


# Deleting ----------------------------------------------------------------------------------

# One statement: the memory goes, its media rows with it (on delete cascade), and the paths
# of their files come back for removal. The select sees the rows as they were before.
_DELETE = """
with gone as (delete from public.memories where id = $1 returning id)
select gone.id, mm.storage_path
from gone left join public.memory_media mm on mm.memory_id = gone.id
"""


async def delete(db: Connection, actor: Actor, memory_id: UUID) -> Removed:
    memory = await _visible(db, memory_id)
    own = memory.user_id == actor.id
    rbac.require(actor, Permission.DELETE_OWN_MEMORY if own else Permission.DELETE_ANY_MEMORY)
    rows = await db.fetch(_DELETE, memory_id)
    if not rows:  # row level security refused
        raise NotFound(MEMORY_NOT_FOUND)
    paths = [row["storage_path"] for row in rows if row["storage_path"] is not None]
    return Removed(storage_paths=with_thumbnails(paths), media_count=len(paths))


def with_thumbnails(paths: list[str]) -> list[str]:
    """The objects and every derivative they may have.

    Derivative paths are derived, not read, so one written by a processor that is still
    running when the row goes is removed as well.
    """
    return [p for path in paths for p in (path, *derived_paths(path))]


# Media -------------------------------------------------------------------------------------

# Serialises media registrations of one memory, so two at once cannot both pass the
# per-memory size limit. FOR UPDATE applies the memories_update policy (may edit).
_LOCK_MEMORY = "select id from public.memories where id = $1 for update"
# `on conflict do nothing` covers both a second registration of the same upload (its id) and
# the same bytes already in the family (the (family_unit_id, sha256) index).
_INSERT_MEDIA = """
insert into public.memory_media
  (id, memory_id, family_unit_id, storage_bucket, storage_path, file_name, mime_type, file_size,
   sha256)
select id, memory_id, family_unit_id, storage_bucket, storage_path, file_name, mime_type,
       file_size, sha256
from jsonb_populate_record(null::public.memory_media, $1::jsonb)
on conflict do nothing
returning id, memory_id, storage_path, storage_bucket, file_name, mime_type, file_size, width,
          height, duration, thumbnail_path, processing_status, metadata, created_at, updated_at,
          sha256, variants, placeholder, taken_at, taken_at_offset, camera
"""
# Which media of the caller's family already holds these bytes (a definer function: it may
# be in another member's draft, which row level security hides).
_SAME_BYTES = "select app.family_media_with_sha256($1)"
_DELETE_MEDIA = """
delete from public.memory_media where id = $1 and memory_id = $2
returning storage_path
"""


async def checked_upload(
    db: Connection,
    storage: StorageBackend,
    settings: Settings,
    memory_id: UUID | None,
    storage_path: str,
    *,
    field: str,
) -> ObjectStat:
    """The uploaded file about to be registered (a memory's, or an avatar when `memory_id`
    is None): there, recent enough, within the size limit and the quota."""
    stored = await storage.stat(storage_path)
    if stored is None:
        raise Invalid(f"No uploaded file at {field}; upload the file first")
    # The orphan sweep removes unregistered uploads after the grace period; registering only
    # well within it means the sweep can never remove a file that was just registered.
    max_age = timedelta(seconds=settings.orphan_object_grace_seconds / 2)
    if stored.modified_at < datetime.now(UTC) - max_age:
        raise Invalid("The upload is too old to register; upload the file again")
    # The real size, from storage: the client's file_size is only informational.
    if stored.size > settings.max_file_bytes:
        raise PayloadTooLarge(f"A file may be at most {settings.max_file_bytes} bytes")
    await quota_service.check_registration(db, settings, memory_id, storage_path, stored.size)
    return stored


async def add_media(
    db: Connection,
    actor: Actor,
    memory_id: UUID,
    ref: MediaRef,
    storage: StorageBackend,
    settings: Settings,
) -> Media:
    """Register an uploaded file with a memory; it is then processed in the background."""
    memory = await load_for_edit(db, actor, memory_id)
    mime = normalize_mime(ref.mime_type)
    path = parse_media_path(ref.storage_path)
    if (path.family_unit_id, path.memory_id) != (memory.family_unit_id, memory.id):
        raise Invalid("storage_path is not an upload of this memory")
    if path.extension != EXTENSION_FOR_MIME[mime]:
        raise Invalid(f"mime_type {mime} does not match the file uploaded as .{path.extension}")
    if await db.fetchval(_LOCK_MEMORY, memory_id) is None:
        raise NotFound(MEMORY_NOT_FOUND)

    stored = await checked_upload(
        db, storage, settings, memory_id, ref.storage_path, field="storage_path"
    )

    if stored.sha256 is not None:
        await refuse_duplicate(db, stored.sha256)

    media = {
        "id": path.media_id,
        "memory_id": memory_id,
        "family_unit_id": memory.family_unit_id,
        "storage_bucket": storage.bucket,
        "storage_path": ref.storage_path,
        "file_name": ref.file_name,
        "mime_type": mime,
        "file_size": stored.size,
        "sha256": stored.sha256,
    }
    row = await db.fetchrow(_INSERT_MEDIA, _json_values(media))
    if row is None:
        if stored.sha256 is not None:  # registered by someone else a moment ago
            await refuse_duplicate(db, stored.sha256)
        raise Conflict("This file is already registered")
    await quota_service.release(db, ref.storage_path)  # its media row counts it from now on
    return Media.model_validate(media_urls.shape_media(dict(row), {}))


async def refuse_duplicate(db: Connection, sha256: str) -> None:
    """409 duplicate_media, naming the existing media, when the family already has these bytes."""
    existing = await db.fetchval(_SAME_BYTES, sha256)
    if existing is not None:
        raise Conflict(
            "This file is already in your family's memories",
            code="duplicate_media",
            extra={"media_id": str(existing)},
        )


async def remove_media(db: Connection, actor: Actor, memory_id: UUID, media_id: UUID) -> Removed:
    """Unregister a file from a memory (editing it); its objects are removed in the background."""
    await load_for_edit(db, actor, memory_id)
    path = await db.fetchval(_DELETE_MEDIA, media_id, memory_id)
    if path is None:
        raise NotFound("Media not found")
    return Removed(storage_paths=with_thumbnails([path]), media_count=1)
