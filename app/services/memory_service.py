"""Memories and their media rows: create, read, partial update, status lifecycle, delete.

Every query runs on the caller's RLS connection, so the database decides visibility
(drafts only for their author, nothing of another family). The service adds the rules
that need a clear answer: 404 for what the caller cannot see, 403 for what their role may
not do (`rbac`), 400 for an impossible status change, 413 for the size limits.

Where a memory's files live is decided here too: `{family_unit_id}/{memory_id}/{media_id}.{ext}`
with the thumbnail `{media_id}_thumb.jpg` beside it.
"""

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from app.config import Settings
from app.db.postgres import Connection
from app.errors import Conflict, Invalid, NotFound, PayloadTooLarge, UnsupportedMediaType
from app.models.identity import Actor
from app.schemas.memories import Media, MediaRef, Memory, MemoryCreate, MemoryStatus, MemoryUpdate
from app.services import rbac
from app.services.media_files import ALLOWED_MIME_TYPES, EXTENSION_FOR_MIME
from app.services.rbac import Permission
from app.services.storage_backend import StorageBackend

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


# Where files live --------------------------------------------------------------------------


@dataclass(frozen=True)
class MediaPath:
    family_unit_id: UUID
    memory_id: UUID
    media_id: UUID
    extension: str


_MEDIA_PATH = re.compile(
    r"^(?P<family>[0-9a-f-]{36})/(?P<memory>[0-9a-f-]{36})/(?P<media>[0-9a-f-]{36})"
    r"\.(?P<extension>[a-z0-9]{1,5})$"
)
_THUMBNAIL_SUFFIX = "_thumb.jpg"


def media_object_path(family_unit_id: UUID, memory_id: UUID, media_id: UUID, mime: str) -> str:
    return f"{family_unit_id}/{memory_id}/{media_id}.{EXTENSION_FOR_MIME[mime]}"


def thumbnail_path_for(storage_path: str) -> str:
    return storage_path.rsplit(".", 1)[0] + _THUMBNAIL_SUFFIX


def parse_media_path(path: str) -> MediaPath:
    """The ids in a server-built object path; Invalid (400) for anything else."""
    match = _MEDIA_PATH.match(path)
    try:
        if match is None:
            raise ValueError(path)
        ids = [UUID(match[name]) for name in ("family", "memory", "media")]
        # Only the canonical spelling, so one object has exactly one path.
        if [str(value) for value in ids] != [match["family"], match["memory"], match["media"]]:
            raise ValueError(path)
    except ValueError:
        raise Invalid(
            "Invalid storage path: expected {family_unit_id}/{memory_id}/{media_id}.{ext}"
        ) from None
    return MediaPath(ids[0], ids[1], ids[2], match["extension"])


def check_media_file_path(path: str) -> None:
    """Invalid (400) unless `path` is a media object or a media object's thumbnail."""
    if path.endswith(_THUMBNAIL_SUFFIX):
        path = path.removesuffix(_THUMBNAIL_SUFFIX) + ".jpg"
    parse_media_path(path)


def normalize_mime(mime_type: str) -> str:
    """The bare, lower-cased type of an allowed MIME type; 415 for anything else."""
    mime = mime_type.split(";", 1)[0].strip().lower()
    if mime not in ALLOWED_MIME_TYPES:
        allowed = ", ".join(sorted(ALLOWED_MIME_TYPES))
        raise UnsupportedMediaType(f"Unsupported file type {mime!r}; allowed: {allowed}")
    return mime


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
_REF = "select id, user_id, family_unit_id, status from public.memories where id = $1"


async def get(db: Connection, actor: Actor, memory_id: UUID) -> Memory:
    rbac.require(actor, Permission.VIEW_MEMORIES)
    row = await db.fetchrow(_GET, memory_id)
    if row is None:
        raise NotFound(MEMORY_NOT_FOUND)
    return Memory.model_validate(dict(row))


async def list_visible(
    db: Connection, actor: Actor, *, status: MemoryStatus | None, limit: int, offset: int
) -> tuple[list[Memory], int]:
    """One page of the memories the caller can see, newest first, and how many there are."""
    rbac.require(actor, Permission.VIEW_MEMORIES)
    rows = await db.fetch(_LIST, actor.family_unit_id, status, limit, offset)
    total = await db.fetchval(_COUNT, actor.family_unit_id, status)
    return [Memory.model_validate(dict(row)) for row in rows], total


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

_INSERT = """
insert into public.memories
  (family_unit_id, user_id, title, description, memory_date, location, tags, status)
values ($1, $2, $3, $4, $5, $6, $7, $8)
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
update public.memories
set title = $2, description = $3, memory_date = $4, location = $5, tags = $6, status = $7,
    modified_by = $8, updated_at = now()
where id = $1
returning id
"""


async def create(db: Connection, actor: Actor, body: MemoryCreate) -> Memory:
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
    memory_id = await db.fetchval(
        _INSERT,
        actor.family_unit_id,
        actor.id,
        body.title,
        body.description,
        body.memory_date,
        body.location,
        body.tags or [],
        body.status,
    )
    return await get(db, actor, memory_id)


async def update(
    db: Connection, actor: Actor, memory_id: UUID, body: MemoryUpdate
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
    values: dict[str, Any] = {**dict(current), **changes}
    await db.execute(
        _UPDATE,
        memory_id,
        values["title"],
        values["description"],
        values["memory_date"],
        values["location"],
        values["tags"],
        values["status"],
        actor.id,
    )
    return await get(db, actor, memory_id), len(changes)


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
    return Removed(storage_paths=_with_thumbnails(paths), media_count=len(paths))


def _with_thumbnails(paths: list[str]) -> list[str]:
    # The thumbnail's path is derived, not read, so one written by a processor that is still
    # running when the row goes is removed as well.
    return [p for path in paths for p in (path, thumbnail_path_for(path))]


# Media -------------------------------------------------------------------------------------

# Serialises media registrations of one memory, so two at once cannot both pass the
# per-memory size limit. FOR UPDATE applies the memories_update policy (may edit).
_LOCK_MEMORY = "select id from public.memories where id = $1 for update"
_MEMORY_BYTES = "select coalesce(sum(file_size), 0) from public.memory_media where memory_id = $1"
_INSERT_MEDIA = """
insert into public.memory_media
  (id, memory_id, family_unit_id, storage_bucket, storage_path, file_name, mime_type, file_size)
values ($1, $2, $3, $4, $5, $6, $7, $8)
on conflict do nothing
returning id, memory_id, storage_path, storage_bucket, file_name, mime_type, file_size, width,
          height, duration, thumbnail_path, processing_status, metadata, created_at, updated_at
"""
_DELETE_MEDIA = """
delete from public.memory_media where id = $1 and memory_id = $2
returning storage_path
"""


async def media_bytes(db: Connection, memory_id: UUID) -> int:
    """Bytes of the files registered to a memory so far."""
    total: int = await db.fetchval(_MEMORY_BYTES, memory_id)
    return total


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

    stored = await storage.stat(ref.storage_path)
    if stored is None:
        raise Invalid("No uploaded file at storage_path; upload the file first")
    # The orphan sweep removes unregistered uploads after the grace period; registering only
    # well within it means the sweep can never remove a file that was just registered.
    max_age = timedelta(seconds=settings.orphan_object_grace_seconds / 2)
    if stored.modified_at < datetime.now(UTC) - max_age:
        raise Invalid("The upload is too old to register; upload the file again")
    # The real size, from storage: the client's file_size is only informational.
    if stored.size > settings.max_file_bytes:
        raise PayloadTooLarge(f"A file may be at most {settings.max_file_bytes} bytes")
    used = await media_bytes(db, memory_id)
    if used + stored.size > settings.max_memory_bytes:
        raise PayloadTooLarge(
            f"A memory's files may be at most {settings.max_memory_bytes} bytes in all "
            f"({used} used, this file is {stored.size})"
        )

    row = await db.fetchrow(
        _INSERT_MEDIA,
        path.media_id,
        memory_id,
        memory.family_unit_id,
        storage.bucket,
        ref.storage_path,
        ref.file_name,
        mime,
        stored.size,
    )
    if row is None:
        raise Conflict("This file is already registered")
    return Media.model_validate(dict(row))


async def remove_media(db: Connection, actor: Actor, memory_id: UUID, media_id: UUID) -> Removed:
    """Unregister a file from a memory (editing it); its objects are removed in the background."""
    await load_for_edit(db, actor, memory_id)
    path = await db.fetchval(_DELETE_MEDIA, media_id, memory_id)
    if path is None:
        raise NotFound("Media not found")
    return Removed(storage_paths=_with_thumbnails([path]), media_count=1)
