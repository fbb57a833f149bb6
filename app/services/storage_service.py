"""Storage: upload URLs for a memory's files, receiving and serving them (built-in storage),
access URLs for what the caller can see, and removing files that nothing references.

Who may do what is decided with the memory (`memory_service.load_for_edit`, and row level
security on `memory_media` for reading): a URL is only ever signed for an object of a
memory the caller can see, or an upload into a memory they may edit.
"""

import asyncio
import logging
import os
import stat
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from uuid import UUID, uuid4

from PIL import Image

from app.config import Settings
from app.db.postgres import Connection, Database
from app.errors import Conflict, Invalid, NotFound, PayloadTooLarge, UnsupportedMediaType
from app.models.identity import Actor
from app.schemas.storage import AccessUrlOut, MediaVariant, UploadedObject, UploadUrlOut
from app.services import memory_service, rbac
from app.services.media_files import EXTENSION_FOR_MIME, SNIFF_BYTES, mime_matches, sniff_mime
from app.services.rbac import Permission
from app.services.storage_backend import (
    LocalStorageBackend,
    StorageBackend,
    check_object_path,
    etag_for,
)

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
) -> UploadUrlOut:
    """A signed URL to upload one file into a memory the caller may edit."""
    memory = await memory_service.load_for_edit(db, actor, memory_id)
    mime = memory_service.normalize_mime(mime_type)
    if file_size is not None and file_size > settings.max_file_bytes:
        raise PayloadTooLarge(f"A file may be at most {settings.max_file_bytes} bytes")
    room = settings.max_memory_bytes - await memory_service.media_bytes(db, memory_id)
    if room <= 0 or (file_size is not None and file_size > room):
        raise PayloadTooLarge(
            f"A memory's files may be at most {settings.max_memory_bytes} bytes in all "
            f"({max(room, 0)} bytes left)"
        )
    media_id = uuid4()
    path = memory_service.media_object_path(memory.family_unit_id, memory.id, media_id, mime)
    # The URL itself carries the limit, so the upload stops at the first byte too many.
    max_bytes = min(settings.max_file_bytes, room)
    target = await storage.create_upload_url(
        path, mime_type=mime, max_bytes=max_bytes, expires_in=settings.upload_url_ttl_seconds
    )
    return UploadUrlOut(
        upload_url=target.url,
        storage_path=path,
        media_id=media_id,
        expires_in=target.expires_in,
        method="PUT",
        headers=target.headers,
        max_bytes=max_bytes,
    )


# Receiving uploads (built-in storage) ------------------------------------------------------


async def receive_upload(
    storage: StorageBackend,
    settings: Settings,
    *,
    bucket: str,
    path: str,
    params: Mapping[str, str],
    content_type: str | None,
    content_length: int | None,
    chunks: AsyncIterator[bytes],
) -> UploadedObject:
    """Store the bytes sent to a signed upload URL, or refuse them and keep nothing.

    400 bad path or empty file, 403 bad/expired signature, 409 already uploaded,
    413 over the URL's limit (or a decompression bomb), 415 not the declared type.
    """
    local = _built_in(storage, bucket)
    memory_service.parse_media_path(path)
    grant = local.verify_upload(path, params)
    if content_type is not None:
        sent = content_type.split(";", 1)[0].strip().lower()
        if sent not in (grant.mime_type, "application/octet-stream"):
            raise UnsupportedMediaType(
                f"Content-Type {sent} differs from {grant.mime_type}, the type this URL is for"
            )
    if content_length is not None and content_length > grant.max_bytes:
        raise PayloadTooLarge(f"The file is larger than {grant.max_bytes} bytes")
    stored = await local.receive(
        path,
        _checked_type(chunks, grant.mime_type),
        max_bytes=grant.max_bytes,
        inspect=partial(_inspect_image, grant.mime_type, settings.max_image_pixels),
    )
    return UploadedObject(storage_path=path, file_size=stored.size)


async def _checked_type(chunks: AsyncIterator[bytes], declared: str) -> AsyncIterator[bytes]:
    """Pass the bytes through, refusing (415) as soon as the first ones show another type."""
    head = b""
    async for chunk in chunks:
        if len(head) < SNIFF_BYTES:
            head += chunk[: SNIFF_BYTES - len(head)]
            if len(head) == SNIFF_BYTES:
                _check_type(head, declared)
        yield chunk
    if 0 < len(head) < SNIFF_BYTES:
        _check_type(head, declared)


def _check_type(head: bytes, declared: str) -> None:
    sniffed = sniff_mime(head)
    if sniffed is None:
        raise UnsupportedMediaType(
            f"The file is not a supported photo or video (it was declared {declared})"
        )
    if not mime_matches(declared, sniffed):
        raise UnsupportedMediaType(f"The file's content is {sniffed}, not {declared} as declared")


_PILLOW_FORMATS = {
    "image/jpeg": "JPEG",
    "image/png": "PNG",
    "image/gif": "GIF",
    "image/webp": "WEBP",
    "image/heic": "HEIF",
    "image/heif": "HEIF",
}


def _inspect_image(mime: str, max_pixels: int, file: Path) -> None:
    """Refuse, before it is kept, an image that would explode when decoded.

    Only the header is read (cheap); the full decode and everything else happens in the
    media processor. Videos are probed there too.
    """
    pillow_format = _PILLOW_FORMATS.get(mime)
    if pillow_format is None:
        return
    try:
        with Image.open(file, formats=[pillow_format]) as image:
            width, height = image.size
    except Image.DecompressionBombError:
        raise PayloadTooLarge("The picture has too many pixels to be processed") from None
    except Exception:
        raise Invalid("The image is corrupt or cannot be read") from None
    if width * height > max_pixels:
        raise PayloadTooLarge(
            f"The picture has too many pixels to be processed ({width}x{height}; "
            f"at most {max_pixels // 1_000_000} megapixels)"
        )


# Serving downloads (built-in storage) ------------------------------------------------------

_CONTENT_TYPES = {extension: mime for mime, extension in EXTENSION_FOR_MIME.items()}


@dataclass(frozen=True)
class Download:
    file: Path
    stat: os.stat_result
    etag: str
    content_type: str
    max_age: int


async def open_download(
    storage: StorageBackend, *, bucket: str, path: str, params: Mapping[str, str]
) -> Download:
    """The file behind a signed download URL: 400 bad path, 403 bad signature, 404 gone."""
    local = _built_in(storage, bucket)
    memory_service.check_media_file_path(path)
    remaining = local.verify_download(path, params)
    file = local.local_file(path)
    try:
        st = await asyncio.to_thread(file.stat)
    except (FileNotFoundError, NotADirectoryError):
        raise NotFound(FILE_NOT_FOUND) from None
    if not stat.S_ISREG(st.st_mode):
        raise NotFound(FILE_NOT_FOUND)
    extension = path.rsplit(".", 1)[-1]
    return Download(
        file=file,
        stat=st,
        etag=etag_for(st),
        content_type=_CONTENT_TYPES.get(extension, "application/octet-stream"),
        max_age=remaining,
    )


def _built_in(storage: StorageBackend, bucket: str) -> LocalStorageBackend:
    # With Supabase Storage the client talks to Supabase directly; these routes do not exist.
    if not isinstance(storage, LocalStorageBackend) or bucket != storage.bucket:
        raise NotFound("Not found")
    return storage


# Access URLs -------------------------------------------------------------------------------

# Row level security on memory_media shows only media of memories the caller can see.
_VISIBLE_OBJECT = """
select id from public.memory_media where storage_path = $1 or thumbnail_path = $1
"""
_VISIBLE_MEDIA = """
select storage_path, thumbnail_path, processing_status from public.memory_media where id = $1
"""


async def access_url(
    db: Connection, actor: Actor, storage: StorageBackend, storage_path: str, expires_in: int
) -> AccessUrlOut:
    """A signed download URL for a media file (original or thumbnail) the caller can see."""
    rbac.require(actor, Permission.VIEW_MEMORIES)
    check_object_path(storage_path)
    if await db.fetchval(_VISIBLE_OBJECT, storage_path) is None:
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
    """A signed URL for a media item's original or thumbnail (409 until the thumbnail exists)."""
    rbac.require(actor, Permission.VIEW_MEMORIES)
    media = await db.fetchrow(_VISIBLE_MEDIA, media_id)
    if media is None:
        raise NotFound("Media not found")
    path = media["storage_path"] if variant == "original" else media["thumbnail_path"]
    if path is None:
        raise Conflict(f"The thumbnail is not ready (processing is {media['processing_status']})")
    return await _signed(storage, path, expires_in)


async def _signed(storage: StorageBackend, path: str, expires_in: int) -> AccessUrlOut:
    # A backend leaves out objects it does not have (the file vanished from storage).
    url = (await storage.signed_download_urls([path], expires_in=expires_in)).get(path)
    if url is None:
        raise NotFound(FILE_NOT_FOUND)
    return AccessUrlOut(access_url=url, expires_in=expires_in)


# Removing files ----------------------------------------------------------------------------


async def remove_objects(storage: StorageBackend, paths: Sequence[str]) -> None:
    """Background removal of deleted media's files; a failure is left to the orphan sweep."""
    if not paths:
        return
    try:
        await storage.remove(paths)
    except Exception:
        logger.exception("could not remove stored files", extra={"objects": len(paths)})


_REFERENCED = """
select p from unnest($1::text[]) as p
where exists (
  select 1 from public.memory_media m where m.storage_path = p or m.thumbnail_path = p
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
        referenced = {row["p"] for row in await db.fetch(_REFERENCED, paths)}
    orphans = [path for path in paths if path not in referenced]
    if orphans:
        await storage.remove(orphans)
    return len(orphans)
