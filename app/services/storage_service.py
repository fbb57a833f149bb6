"""Storage: upload URLs for a memory's files, access URLs for what the caller can see, and
removing files that nothing references. What the built-in store's own signed URLs accept and
serve is `app.services.object_service`.

Who may do what is decided with the memory (`memory_service.load_for_edit`, and row level
security on `memory_media` for reading): a URL is only ever signed for an object of a
memory the caller can see, or an upload into a memory they may edit.
"""

import logging
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from app.adapters.storage.base import (
    StorageBackend,
    UploadTarget,
    check_object_path,
)
from app.config import Settings
from app.db.postgres import Connection, Database
from app.errors import (
    MEDIA_NOT_READY,
    Conflict,
    Invalid,
    NotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from app.models import rbac
from app.models.identity import Actor
from app.models.rbac import Permission
from app.schemas.storage import AccessUrlOut, MediaVariant, UploadUrlOut
from app.services import media_paths, memory_service, quota_service

logger = logging.getLogger(__name__)

FILE_NOT_FOUND = "File not found"


# Upload URLs -----------------------------------------------------------------------------


async def create_upload_url(
    db: Connection,
    actor: Actor,
    storage: StorageBackend,
    settings: Settings,
    *,
    memory_id: UUID,
    mime_type: str,
    file_size: int | None,
    sha256: str | None = None,
) -> UploadUrlOut:
    """A signed URL to upload one file into a memory the caller may edit.

    With `sha256`, a phone re-syncing its camera roll learns before sending a byte that the
    family already has the file (409 duplicate_media with its id).

    Its bytes (the declared `file_size`, else all the room left) are reserved against the
    memory's limit and the family's quota until the file is registered or the URL expires.
    """
    memory = await memory_service.load_for_edit(db, actor, memory_id)
    mime = media_paths.normalize_mime(mime_type)
    if sha256 is not None:
        await memory_service.refuse_duplicate(db, sha256)
    # Locks the family's storage until this request's transaction commits.
    max_bytes = await quota_service.room_for_upload(db, settings, memory_id, file_size)
    media_id = uuid4()
    path = media_paths.media_object_path(memory.family_unit_id, memory.id, media_id, mime)
    return await reserved_upload(
        db,
        storage,
        settings,
        memory_id=memory_id,
        path=path,
        media_id=media_id,
        mime=mime,
        max_bytes=max_bytes,
    )


async def reserved_upload(
    db: Connection,
    storage: StorageBackend,
    settings: Settings,
    *,
    memory_id: UUID | None,
    path: str,
    media_id: UUID,
    mime: str,
    max_bytes: int,
) -> UploadUrlOut:
    """A signed upload URL for `path`, its `max_bytes` reserved against the quota (and the
    memory's limit) until the file is registered or the URL expires."""
    # The URL itself carries the limit, so the upload stops at the first byte too many.
    target = await storage.create_upload_url(
        path, mime_type=mime, max_bytes=max_bytes, expires_in=settings.upload_url_ttl_seconds
    )
    url_expires_at = datetime.now(UTC) + timedelta(seconds=target.expires_in)
    await quota_service.reserve(db, memory_id, path, max_bytes, url_expires_at)
    return _upload_out(target, path, media_id, max_bytes)


def _upload_out(target: UploadTarget, path: str, media_id: UUID, max_bytes: int) -> UploadUrlOut:
    return UploadUrlOut(
        upload_url=target.url,
        storage_path=path,
        media_id=media_id,
        expires_in=target.expires_in,
        method="PUT",
        headers=target.headers,
        max_bytes=max_bytes,
    )


async def create_import_upload_url(
    db: Connection,
    actor: Actor,
    storage: StorageBackend,
    settings: Settings,
    *,
    mime_type: str,
    file_size: int | None,
) -> UploadUrlOut:
    """A signed URL to upload a zip (a Takeout, a Timeless export) to import into the family."""
    rbac.require(actor, Permission.MANAGE_ARCHIVE)
    if mime_type.split(";", 1)[0].strip().lower() not in (
        media_paths.IMPORT_MIME,
        "application/x-zip-compressed",
    ):
        raise UnsupportedMediaType("An archive to import is a zip file (application/zip)")
    if file_size is not None and file_size > settings.max_import_bytes:
        raise PayloadTooLarge(
            f"An archive may be at most {settings.max_import_bytes} bytes; export it in parts"
        )
    upload_id = uuid4()
    path = media_paths.import_object_path(actor.family_unit_id, upload_id)
    target = await storage.create_upload_url(
        path,
        mime_type=media_paths.IMPORT_MIME,
        max_bytes=settings.max_import_bytes,
        expires_in=settings.upload_url_ttl_seconds,
    )
    return _upload_out(target, path, upload_id, settings.max_import_bytes)


# Access URLs -------------------------------------------------------------------------------

# Row level security on memory_media shows only media of memories the caller can see (and
# the family's avatars). A path is the media's original or one of its stored variants.
_VISIBLE_OBJECT = """
select 1 from public.memory_media m
where m.id = $2
  and ($1 in (m.storage_path, m.thumbnail_path)
       or exists (select 1 from jsonb_each(m.variants) v where v.value ->> 'path' = $1))
"""
_VISIBLE_MEDIA = """
select storage_path, thumbnail_path, processing_status, mime_type, variants
from public.memory_media where id = $1 and purpose = 'memory'
"""


async def access_url(
    db: Connection, actor: Actor, storage: StorageBackend, storage_path: str, expires_in: int
) -> AccessUrlOut:
    """A signed download URL for a media file (original or thumbnail) the caller can see."""
    rbac.require(actor, Permission.VIEW_MEMORIES)
    check_object_path(storage_path)
    try:
        media_id = media_paths.check_media_file_path(storage_path).media_id
    except Invalid:  # a safe path, but not one the server would make: nothing is there
        raise NotFound(FILE_NOT_FOUND) from None
    if await db.fetchval(_VISIBLE_OBJECT, storage_path, media_id) is None:
        raise NotFound(FILE_NOT_FOUND)
    return await _signed(storage, storage_path, expires_in)


async def media_url(
    db: Connection,
    actor: Actor,
    storage: StorageBackend,
    media_id: UUID,
    variant: MediaVariant,
    expires_in: int,
) -> AccessUrlOut:
    """A signed URL for a media item's original or one of its variants.

    409 media_not_ready until processing has made the variant (or when it failed). A video
    that browsers play as it is has no playback rendition: `playback` is then its original.
    A photo has no `playback` (404).
    """
    rbac.require(actor, Permission.VIEW_MEMORIES)
    media = await db.fetchrow(_VISIBLE_MEDIA, media_id)
    if media is None:
        raise NotFound("Media not found")
    return await _signed(storage, _variant_path(media, variant), expires_in)


def _variant_path(media: Mapping[str, Any], variant: MediaVariant) -> str:
    if variant == "original":
        return str(media["storage_path"])
    if variant == "playback" and not media["mime_type"].startswith("video/"):
        raise NotFound("A photo has no playback rendition")
    status = media["processing_status"]
    if status != "completed":
        raise Conflict(f"The {variant} is not ready (processing is {status})", code=MEDIA_NOT_READY)
    stored = (media["variants"] or {}).get(variant) or {}
    if stored.get("path"):
        return str(stored["path"])
    if variant == "playback":  # browsers play this video as uploaded
        return str(media["storage_path"])
    if variant == "thumbnail" and media["thumbnail_path"]:  # processed before variants existed
        return str(media["thumbnail_path"])
    raise NotFound(f"This media has no {variant}")


async def _signed(storage: StorageBackend, path: str, expires_in: int) -> AccessUrlOut:
    # A backend leaves out objects it does not have (the file vanished from storage).
    url = (await storage.signed_download_urls([path], expires_in=expires_in)).get(path)
    if url is None:
        raise NotFound(FILE_NOT_FOUND)
    return AccessUrlOut(access_url=url, expires_in=expires_in)


# Signing keys (built-in storage) ---------------------------------------------------------------

_SIGNING_EPOCHS = """
select id::text as family, storage_signing_epoch from public.family_units
where id = any($1::uuid[])
"""
# A family's signing epoch as a value of another statement ($1: the family), so that a
# statement a request runs anyway reads it along (the feed's count: one round trip fewer
# per page), then hands it over with `epochs_read`.
SIGNING_EPOCH_OF_FAMILY = "(select storage_signing_epoch from public.family_units where id = $1)"

# Signing epochs a transaction has read already: its connection and what it read.
_epochs_read: ContextVar[tuple[Connection, Mapping[str, int]] | None] = ContextVar(
    "signing_epochs_read", default=None
)


@contextmanager
def epochs_read(db: Connection, epochs: Mapping[str, int]) -> Iterator[None]:
    """Inside this block, `signing_epochs` answers with `epochs` (family id → epoch) for the
    families they cover, read just now by `db`'s transaction, without reading them again.

    Exactly what a read of its own would give: the same transaction, moments later (a
    removal committing in between voids the links either way). Nothing is kept beyond the
    block, so no other request, and no other process, ever signs with an epoch remembered.
    """
    token = _epochs_read.set((db, epochs))
    try:
        yield
    finally:
        _epochs_read.reset(token)


async def signing_epochs(database: Database, families: Collection[str]) -> Mapping[str, int]:
    """The built-in storage's signing epoch of each family named (by the first segment of an
    object path); ending a membership moves it on (`app.end_membership`), which voids every
    link of the family signed before. Anything that is not a family id is at epoch 0."""
    # Inside a request, on the request's own connection (a member's session sees their own
    # family, the only one whose links a member is given); else, as the service.
    db = database.connection_in_use()
    read = _epochs_read.get()
    if read is not None and read[0] is db and read[1].keys() >= set(families):
        return read[1]
    ids = [UUID(family) for family in families if _is_canonical_uuid(family)]
    if not ids:
        return {}
    if db is not None:
        rows = await db.fetch(_SIGNING_EPOCHS, ids)
    else:
        async with database.system_session() as db:
            rows = await db.fetch(_SIGNING_EPOCHS, ids)
    return {row["family"]: row["storage_signing_epoch"] for row in rows}


def _is_canonical_uuid(value: str) -> bool:
    try:
        return str(UUID(value)) == value
    except ValueError:
        return False


# Removing files ----------------------------------------------------------------------------


async def remove_objects(storage: StorageBackend, paths: Sequence[str]) -> None:
    """Background removal of deleted media's files; a failure is left to the orphan sweep."""
    if not paths:
        return
    try:
        await storage.remove(paths)
    except Exception:
        logger.exception("could not remove stored files", extra={"objects": len(paths)})


# An object is referenced while its media row exists: the original and every derivative of
# it (derivatives are named after the media id, inside the row's own folder).
_REFERENCED = """
select t.p from unnest($1::text[], $2::uuid[]) as t(p, media_id)
where exists (
  select 1 from public.memory_media m
  where m.id = t.media_id
    and starts_with(t.p, app.media_folder(m.family_unit_id, m.memory_id))
) or exists (
  -- An archive uploaded to import, until its import has finished.
  select 1 from public.family_imports i
  where i.storage_path = t.p and i.status in ('queued', 'running')
)
"""
_ORPHAN_BATCH = 500


async def remove_orphans(
    database: Database, storage: StorageBackend, *, grace_seconds: float
) -> int:
    """Remove objects older than the grace period that no media row references; returns how many.

    That is files of deleted media whose background removal did not happen, uploads never
    registered, and abandoned partial uploads. Media registration only accepts uploads younger
    than half the grace period, so a file cannot be registered while it is being removed.
    """
    older_than = datetime.now(UTC) - timedelta(seconds=grace_seconds)
    await quota_service.purge_expired(database)
    removed = 0
    batch: list[str] = []
    async for path in storage.list_objects(older_than):
        batch.append(path)
        if len(batch) >= _ORPHAN_BATCH:
            removed += await _remove_unreferenced(database, storage, batch)
            batch = []
    if batch:
        removed += await _remove_unreferenced(database, storage, batch)
    if removed:
        logger.info("removed orphaned stored files", extra={"objects": removed})
    return removed


async def _remove_unreferenced(
    database: Database, storage: StorageBackend, paths: list[str]
) -> int:
    async with database.system_session() as db:
        media_ids = [_media_id_of(path) for path in paths]
        referenced = {row["p"] for row in await db.fetch(_REFERENCED, paths, media_ids)}
    orphans = [path for path in paths if path not in referenced]
    if orphans:
        await storage.remove(orphans)
    return len(orphans)


def _media_id_of(path: str) -> UUID | None:
    try:
        return media_paths.check_media_file_path(path).media_id
    except Invalid:  # an abandoned `.incoming` part, or a name this server never makes
        return None
