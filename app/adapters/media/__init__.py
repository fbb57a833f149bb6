"""Validation, probing and derivatives of uploaded photos and videos.

The module never trusts the client: the declared MIME type must agree with the magic bytes
(`sniff`), then the image or video adapter decodes it. `process_file` is synchronous and pure
on purpose — plain values in (paths, a type, `MediaLimits`), files in the output folder and a
`MediaResult` out — so callers can run it in a thread or in a worker process unchanged.
"""

import hashlib
from pathlib import Path
from typing import Final

from PIL import Image

from app.adapters.media.common import (
    PLAYBACK_FILE,
    PREVIEW_FILE,
    PREVIEW_SIZE,
    PROGRESS_FILE,
    THUMBNAIL_FILE,
    THUMBNAIL_SIZE,
    Capture,
    MediaInfo,
    MediaLimits,
    MediaRejected,
    MediaResult,
    Variant,
    encode_jpeg,
    encode_preview,
    write_variant,
)
from app.adapters.media.images import process_image
from app.adapters.media.placeholder import placeholder_for
from app.adapters.media.playback import make_playback
from app.adapters.media.sniff import SNIFF_BYTES, mime_matches, sniff_mime
from app.adapters.media.videos import process_video
from app.models.media_types import ALLOWED_MIME_TYPES, IMAGE_MIME_TYPES

__all__ = [
    "Capture",
    "MediaInfo",
    "MediaLimits",
    "MediaRejected",
    "MediaResult",
    "Variant",
    "process_file",
]

_HASH_CHUNK: Final = 1024 * 1024
_OUTPUT_FILES: Final = (THUMBNAIL_FILE, PREVIEW_FILE, PLAYBACK_FILE, PROGRESS_FILE)


def process_file(
    source: Path,
    declared_mime: str,
    output_dir: Path,
    limits: MediaLimits | None = None,
) -> MediaResult:
    """Validate an upload, probe it and write its derivatives into `output_dir`.

    Writes `thumbnail.jpg` (≤ 400 px) and `preview.jpg` (≤ 1600 px) for every photo and
    video (a video's from an early frame), and `playback.mp4` for a video browsers cannot
    play as it is. None of them carries EXIF, XMP, GPS or a colour profile (pixels are
    converted to sRGB). The returned ``mime_type`` is the sniffed type (it may differ from
    ``declared_mime`` only within the heic/heif and mp4/quicktime leniencies); store that one.

    Raises ``MediaRejected`` for anything wrong with the upload itself, and then leaves
    nothing in `output_dir`. ``OSError`` escapes only for server-side trouble: an unreadable
    ``source`` or an unwritable output folder.
    """
    limits = limits or MediaLimits()
    try:
        return _process(source, declared_mime, output_dir, limits)
    except BaseException:
        for name in _OUTPUT_FILES:
            (output_dir / name).unlink(missing_ok=True)
        raise


def _process(
    source: Path, declared_mime: str, output_dir: Path, limits: MediaLimits
) -> MediaResult:
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

    plan = None
    if sniffed in IMAGE_MIME_TYPES:
        info, picture, capture = process_image(source, sniffed, limits, PREVIEW_SIZE)
    else:
        info, picture, capture, plan = process_video(source, sniffed, limits, PREVIEW_SIZE)

    thumbnail = _thumbnail(picture)
    variants = _stills(picture, thumbnail, output_dir)
    if plan is not None:
        variants.append(
            make_playback(
                source,
                sniffed,
                plan,
                output_dir / PLAYBACK_FILE,
                limits,
                duration=info.duration,
                progress_file=output_dir / PROGRESS_FILE,
            )
        )
    return MediaResult(
        info=info,
        variants=tuple(variants),
        placeholder=placeholder_for(thumbnail),
        capture=capture,
        sha256=_sha256(source) if limits.compute_sha256 else None,
    )


def _stills(picture: Image.Image, thumbnail: Image.Image, output_dir: Path) -> list[Variant]:
    """The preview as it is (≤ 1600 px) and the thumbnail made from it."""
    return [
        write_variant(
            output_dir, "thumbnail", THUMBNAIL_FILE, "image/jpeg", thumbnail, encode_jpeg(thumbnail)
        ),
        write_variant(
            output_dir,
            "preview",
            PREVIEW_FILE,
            "image/jpeg",
            picture,
            encode_preview(picture.copy()),
        ),
    ]


def _thumbnail(picture: Image.Image) -> Image.Image:
    thumbnail = picture.copy()
    thumbnail.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE), Image.Resampling.LANCZOS)
    return thumbnail


def _sha256(source: Path) -> str:
    digest = hashlib.sha256()
    with source.open("rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
