"""Storage quotas: the one home of "how many bytes may this upload take".

Three limits, per file (`MAX_FILE_BYTES`), per memory (`MAX_MEMORY_BYTES`) and per family
(`FAMILY_STORAGE_QUOTA_BYTES`, 0 = none). What counts against the memory's and the family's
is every registered file plus every upload in progress: issuing an upload URL reserves its
bytes (`app.upload_reservations`) until the file is registered or the reservation expires,
so five upload URLs of 50 MiB cannot all be issued into a memory of 200 MiB. The built-in
storage's receiver stores nothing beyond a live reservation and, once it has the file, keeps
the reservation at its real size for as long as an unregistered file stays on disk.

Decisions are taken under a lock on the family's row (`app.lock_family_storage`), so requests
arriving together are decided one after the other. See docs/storage.md, "Quotas".
"""

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from app.config import Settings
from app.db.postgres import Connection, Database
from app.errors import QUOTA_EXCEEDED, PayloadTooLarge
from app.schemas.families import FamilyStorage

_LOCK = "select family_bytes, memory_bytes from app.lock_family_storage($1, $2)"
_RESERVE = "select app.reserve_upload($1, $2, $3, $4)"
_RELEASE = "select app.release_upload($1)"
_FAMILY_USED = "select app.family_storage_used()"


@dataclass(frozen=True)
class Usage:
    family_bytes: int
    memory_bytes: int


async def _lock(db: Connection, memory_id: UUID | None, excluding_path: str | None) -> Usage:
    row = await db.fetchrow(_LOCK, memory_id, excluding_path)
    return Usage(family_bytes=row["family_bytes"], memory_bytes=row["memory_bytes"])


def _memory_full(settings: Settings, left: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"A memory's files may be at most {settings.max_memory_bytes} bytes in all "
        f"({max(left, 0)} bytes left)"
    )


def _quota_exceeded(settings: Settings, left: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"Your family's storage quota of {settings.family_storage_quota_bytes} bytes would be "
        f"exceeded ({max(left, 0)} bytes left)",
        code=QUOTA_EXCEEDED,
    )


# Upload URLs -------------------------------------------------------------------------------


async def room_for_upload(
    db: Connection, settings: Settings, memory_id: UUID | None, file_size: int | None
) -> int:
    """How many bytes a new upload URL into the memory (None: an avatar, which belongs to no
    memory) may accept: the declared `file_size` if it fits, else all the room there is (at
    most one file's limit). 413 `payload_too_large` when the file or the memory is full,
    413 `quota_exceeded` when the family is.

    Locks the family's storage until the caller's transaction ends: reserve in it.
    """
    if file_size is not None and file_size > settings.max_file_bytes:
        raise PayloadTooLarge(f"A file may be at most {settings.max_file_bytes} bytes")
    usage = await _lock(db, memory_id, None)
    room = settings.max_file_bytes
    if memory_id is not None:
        memory_room = settings.max_memory_bytes - usage.memory_bytes
        if memory_room <= 0 or (file_size is not None and file_size > memory_room):
            raise _memory_full(settings, memory_room)
        room = min(room, memory_room)
    quota = settings.family_storage_quota_bytes
    if quota:
        family_room = quota - usage.family_bytes
        if family_room <= 0 or (file_size is not None and file_size > family_room):
            raise _quota_exceeded(settings, family_room)
        room = min(room, family_room)
    return file_size if file_size is not None else room


async def reserve(
    db: Connection,
    memory_id: UUID | None,
    storage_path: str,
    max_bytes: int,
    url_expires_at: datetime,
) -> None:
    """Hold `max_bytes` for the upload at `storage_path` until its URL expires."""
    await db.execute(_RESERVE, memory_id, storage_path, max_bytes, url_expires_at)


# Registration ------------------------------------------------------------------------------


async def check_registration(
    db: Connection, settings: Settings, memory_id: UUID | None, storage_path: str, size: int
) -> None:
    """413 unless a file of `size` bytes fits the memory (if it belongs to one) and the family,
    counting everything else in use (its own reservation is replaced by its real size)."""
    usage = await _lock(db, memory_id, storage_path)
    if memory_id is not None and usage.memory_bytes + size > settings.max_memory_bytes:
        raise PayloadTooLarge(
            f"A memory's files may be at most {settings.max_memory_bytes} bytes in all "
            f"({usage.memory_bytes} used, this file is {size})"
        )
    quota = settings.family_storage_quota_bytes
    if quota and usage.family_bytes + size > quota:
        raise _quota_exceeded(settings, quota - usage.family_bytes)


async def release(db: Connection, storage_path: str) -> None:
    """The file is registered (its media row counts it now): drop its reservation."""
    await db.execute(_RELEASE, storage_path)


async def family_storage(db: Connection, settings: Settings) -> FamilyStorage:
    """What the caller's family uses (registered files and uploads in progress) of its quota."""
    used: int = await db.fetchval(_FAMILY_USED)
    return FamilyStorage(used_bytes=used, quota_bytes=settings.family_storage_quota_bytes)


# The built-in storage's receiver --------------------------------------------------------------

# Claiming holds the reservation while the bytes arrive (an upload that began before the URL
# expired may finish after); only a reservation of a memory that still exists can be claimed.
_CLAIM = """
update app.upload_reservations r
set expires_at = greatest(r.expires_at, now() + make_interval(secs => $2))
where r.storage_path = $1 and r.expires_at > now()
  and (r.memory_id is null or exists (select 1 from public.memories m where m.id = r.memory_id))
returning r.max_bytes, r.uploaded_bytes
"""
_UNCLAIM = """
update app.upload_reservations set expires_at = url_expires_at
where storage_path = $1 and uploaded_bytes is null
"""
_RECEIVED = """
update app.upload_reservations
set uploaded_bytes = $2, expires_at = now() + make_interval(secs => $3)
where storage_path = $1
"""


@dataclass(frozen=True)
class Claim:
    max_bytes: int
    already_uploaded: bool


async def claim_upload(
    database: Database, storage_path: str, *, hold_seconds: float
) -> Claim | None:
    """The live reservation behind an upload, held while it is received; None if there is
    none (expired, never made, already registered, or its memory is gone)."""
    async with database.system_session() as db:
        row = await db.fetchrow(_CLAIM, storage_path, hold_seconds)
    if row is None:
        return None
    return Claim(max_bytes=row["max_bytes"], already_uploaded=row["uploaded_bytes"] is not None)


async def unclaim_upload(database: Database, storage_path: str) -> None:
    """The upload failed (nothing was kept): the reservation lasts as long as its URL again."""
    async with database.system_session() as db:
        await db.execute(_UNCLAIM, storage_path)


async def upload_received(
    database: Database, storage_path: str, size: int, *, hold_seconds: float
) -> None:
    """The file is stored: it counts by its real size for as long as it may stay unregistered."""
    async with database.system_session() as db:
        await db.execute(_RECEIVED, storage_path, size, hold_seconds)


_PURGE_EXPIRED = "delete from app.upload_reservations where expires_at <= now()"


async def purge_expired(database: Database) -> None:
    """Housekeeping for the orphan sweep: expired reservations count for nothing already."""
    async with database.system_session() as db:
        await db.execute(_PURGE_EXPIRED)
