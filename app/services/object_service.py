"""The built-in storage's own signed URLs: what an upload may store, and what a download serves.

Only mounted when the built-in storage runs (with Supabase Storage the client talks to
Supabase directly). The URL's signature is the permission; the rules here are that the path
is a media path the server built, the bytes are the type the URL was signed for (sniffed as
they arrive), within its size, and an image's header does not promise a decompression bomb.
"""

import asyncio
import os
import stat
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from app.adapters.media.images import check_image_header
from app.adapters.media.sniff import SNIFF_BYTES, mime_matches, sniff_mime
from app.adapters.storage.local import ALREADY_UPLOADED, LocalStorageBackend, etag_for
from app.config import Settings
from app.db.postgres import Database
from app.errors import (
    LINK_INVALID,
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from app.models.media_types import EXTENSION_FOR_MIME
from app.schemas.storage import UploadedObject
from app.services import export_service, media_paths, quota_service
from app.services.export_service import check_archive_path

FILE_NOT_FOUND = "File not found"


# Receiving uploads -------------------------------------------------------------------------


async def receive_upload(
    local: LocalStorageBackend,
    database: Database,
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

    400 bad path or empty file, 403 bad/expired signature or no live reservation, 409 already
    uploaded, 413 over the URL's limit or its reservation (or a decompression bomb), 415 not
    the declared type.
    """
    if bucket != local.bucket:
        raise NotFound("Not found")
    archive = media_paths.is_import_path(path)
    if archive:
        media_paths.parse_import_path(path)
    else:
        media_paths.parse_media_path(path)
    grant = await local.verify_upload(path, params)
    if content_type is not None:
        sent = content_type.split(";", 1)[0].strip().lower()
        if sent not in (grant.mime_type, "application/octet-stream"):
            raise UnsupportedMediaType(
                f"Content-Type {sent} differs from {grant.mime_type}, the type this URL is for"
            )
    if content_length is not None and content_length > grant.max_bytes:
        raise PayloadTooLarge(f"The file is larger than {grant.max_bytes} bytes")
    # The bytes reserved for this upload (quota_service) bound it too: nothing is stored
    # without a live reservation, nor beyond it. An archive to import is no media and
    # reserves nothing (its URL is bound by MAX_IMPORT_BYTES; the import removes it).
    hold = settings.orphan_object_grace_seconds
    max_bytes = grant.max_bytes
    if not archive:
        claim = await quota_service.claim_upload(database, path, hold_seconds=hold)
        if claim is None:
            if await local.stat(path) is not None:
                raise Conflict(ALREADY_UPLOADED)
            raise Forbidden(
                "This upload link is no longer valid; ask for a new one", code=LINK_INVALID
            )
        if claim.already_uploaded:
            raise Conflict(ALREADY_UPLOADED)
        max_bytes = min(max_bytes, claim.max_bytes)
    try:
        if content_length is not None and content_length > max_bytes:
            raise PayloadTooLarge(f"The file is larger than {max_bytes} bytes")
        stored = await local.receive(
            path,
            _checked_type(chunks, grant.mime_type),
            max_bytes=max_bytes,
            inspect=partial(
                check_image_header,
                grant.mime_type,
                settings.max_image_pixels,
                settings.max_decoded_image_bytes,
            ),
        )
    except BaseException:
        if not archive:
            await quota_service.unclaim_upload(database, path)
        raise
    if not archive:
        await quota_service.upload_received(database, path, stored.size, hold_seconds=hold)
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


# A zip starts with a local file header (or, empty, with the end of its central directory).
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


def _check_type(head: bytes, declared: str) -> None:
    if declared == media_paths.IMPORT_MIME:
        if not head.startswith(_ZIP_MAGIC):
            raise UnsupportedMediaType("The archive to import is not a zip file")
        return
    sniffed = sniff_mime(head)
    if sniffed is None:
        raise UnsupportedMediaType(
            f"The file is not a supported photo or video (it was declared {declared})"
        )
    if not mime_matches(declared, sniffed):
        raise UnsupportedMediaType(f"The file's content is {sniffed}, not {declared} as declared")


# Serving downloads -------------------------------------------------------------------------

_CONTENT_TYPES = {extension: mime for mime, extension in EXTENSION_FOR_MIME.items()}


@dataclass(frozen=True)
class Download:
    file: Path
    stat: os.stat_result
    etag: str
    content_type: str
    max_age: int
    # Shown in the browser (media), or saved as a file (an archive).
    attachment: bool = False


async def open_download(
    local: LocalStorageBackend,
    *,
    bucket: str,
    path: str,
    params: Mapping[str, str],
    archives: LocalStorageBackend | None = None,
) -> Download:
    """The file behind a signed download URL: 400 bad path, 403 bad signature, 404 gone.

    A media file of the media bucket, or a finished export of the archives bucket.
    """
    if archives is not None and bucket == archives.bucket:
        check_archive_path(path)
        return await _open(archives, path, params, export_service.ZIP_TYPE, attachment=True)
    if bucket != local.bucket:
        raise NotFound("Not found")
    media_paths.check_media_file_path(path)
    extension = path.rsplit(".", 1)[-1]
    content_type = _CONTENT_TYPES.get(extension, "application/octet-stream")
    return await _open(local, path, params, content_type, attachment=False)


async def _open(
    local: LocalStorageBackend,
    path: str,
    params: Mapping[str, str],
    content_type: str,
    *,
    attachment: bool,
) -> Download:
    remaining = await local.verify_download(path, params)
    file = local.local_file(path)
    try:
        st = await asyncio.to_thread(file.stat)
    except (FileNotFoundError, NotADirectoryError):
        raise NotFound(FILE_NOT_FOUND) from None
    if not stat.S_ISREG(st.st_mode):
        raise NotFound(FILE_NOT_FOUND)
    return Download(
        file=file,
        stat=st,
        etag=etag_for(st),
        content_type=content_type,
        max_age=remaining,
        attachment=attachment,
    )
