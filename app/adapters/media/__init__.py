"""Validation, probing and thumbnailing of uploaded photos and videos.

The module never trusts the client: the declared MIME type must agree with the magic bytes
(`sniff`), then the image or video adapter decodes it. Synchronous on purpose: callers run it
off the event loop.
"""

from pathlib import Path

from app.adapters.media.common import MediaInfo, MediaRejected, encode_jpeg, write_atomically
from app.adapters.media.images import process_image
from app.adapters.media.sniff import SNIFF_BYTES, mime_matches, sniff_mime
from app.adapters.media.videos import process_video
from app.config import DEFAULT_MAX_DECODED_IMAGE_BYTES
from app.models.media_types import ALLOWED_MIME_TYPES, IMAGE_MIME_TYPES

__all__ = ["MediaInfo", "MediaRejected", "process_file"]


def process_file(
    source: Path,
    declared_mime: str,
    thumbnail_dest: Path,
    *,
    max_pixels: int = 100_000_000,
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_IMAGE_BYTES,
    thumb_size: int = 400,
) -> MediaInfo:
    """Validate an upload, probe it and write a metadata-free JPEG thumbnail.

    The returned ``mime_type`` is the sniffed type (it may differ from ``declared_mime`` only
    within the heic/heif and mp4/quicktime leniencies); store that one.

    Raises ``MediaRejected`` for anything wrong with the upload itself. ``OSError`` escapes only
    for server-side trouble: an unreadable ``source`` or an unwritable thumbnail directory.
    """
    with source.open("rb") as fh:
        head = fh.read(SNIFF_BYTES)
    if not head:
        raise MediaRejected("the file is empty")
    declared = declared_mime.split(";", 1)[0].strip().lower()
    if declared not in ALLOWED_MIME_TYPES:
        raise MediaRejected("this file type is not supported")
    sniffed = sniff_mime(head)
    if sniffed is None:
        raise MediaRejected("the file is not a supported photo or video format")
    if not mime_matches(declared, sniffed):
        raise MediaRejected(f"the file content is {sniffed}, not {declared}")

    if sniffed in IMAGE_MIME_TYPES:
        info, thumbnail = process_image(source, sniffed, max_pixels, thumb_size, max_decoded_bytes)
    else:
        info, thumbnail = process_video(source, sniffed, max_pixels, thumb_size)
    write_atomically(encode_jpeg(thumbnail), thumbnail_dest)
    return info
