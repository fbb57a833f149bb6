"""What every media adapter shares: the job's limits, its result, and how derivatives are written.

`process_file` (in `app.adapters.media`) is a pure, synchronous function of plain values: a
source file, the declared type, an output folder and `MediaLimits` in; files in that folder
and a `MediaResult` out. Every type here is a frozen dataclass of plain values, so a job can
be pickled to a worker process and its result pickled back unchanged.
"""

import io
import os
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Final

from PIL import Image

from app.config import DEFAULT_MAX_DECODED_IMAGE_BYTES

# The thumbnail stays a JPEG (what every client of the first API version expects); 85 keeps
# a 400 px grid sharp at ~25 KB.
_JPEG_QUALITY: Final = 85
# Measured in docs/memories.md ("Preview size and quality", bench/preview_quality.py): at
# 1600 px a progressive JPEG at 80 keeps SSIM ≥ 0.98 on detailed photos for ~250 KiB; WebP
# saves ~20 % at equal SSIM but takes ~10x as long to encode (0.6 s against 0.04 s a preview).
PREVIEW_JPEG_QUALITY: Final = 80

THUMBNAIL_SIZE: Final = 400
PREVIEW_SIZE: Final = 1600
# Playback renditions fit in 1920 x 1080 either way round (1080p, portrait or landscape).
PLAYBACK_LONG_EDGE: Final = 1920
PLAYBACK_SHORT_EDGE: Final = 1080

# What each variant is called in the output folder (and so in storage, after the media id).
THUMBNAIL_FILE: Final = "thumbnail.jpg"
PREVIEW_FILE: Final = "preview.jpg"
PLAYBACK_FILE: Final = "playback.mp4"
# process_file writes the playback transcode's progress (0..1) here, for whoever waits on it.
PROGRESS_FILE: Final = "progress"


class MediaRejected(Exception):
    """The upload is not an acceptable photo or video.

    ``reason`` is shown to end users, so it never contains paths or library internals.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class MediaLimits:
    """What one job may cost. Plain values, so a job pickles to a worker process."""

    max_pixels: int = 100_000_000
    # Memory one picture may need once decoded (app.adapters.media.images.decode_cost).
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_IMAGE_BYTES
    # A video longer than this is refused before any frame is decoded (phones cap at 10 min
    # per 50 MiB anyway); a 0-second video has nothing to show and is refused too.
    max_video_seconds: float = 3 * 3600.0
    # CPU seconds a playback transcode may use before the job fails with a reason.
    transcode_cpu_seconds: float = 300.0
    # Frames (of an animation) a decoder may be asked to walk; beyond it the file is refused.
    max_frames: int = 2_000
    # Tiles of a HEIF grid (each one is a picture of its own to decode: libheif opens a
    # decoder for every tile); beyond it the file is refused before any tile is decoded.
    # Cameras write 512 px tiles: 48 for a 12 MP iPhone photo, 192 for a 48 MP one, 380-440
    # for a picture at the 100 MP pixel limit (by its shape). docs/storage.md "Bad input".
    max_tiles: int = 450
    # Compute the SHA-256 of the source (Supabase mode: no digest was taken at upload).
    compute_sha256: bool = False


@dataclass(frozen=True)
class MediaInfo:
    mime_type: str
    width: int | None
    height: int | None
    duration: float | None
    codec: str | None
    frame_count: int | None


@dataclass(frozen=True)
class Variant:
    """A derivative written to the output folder: `file` is its name there."""

    name: str  # thumbnail | preview | playback
    file: str
    mime_type: str
    width: int
    height: int
    size: int


@dataclass(frozen=True)
class Capture:
    """When, with what and where a photo or video was taken, as far as the file says.

    `taken_at` is timezone-aware when the file gives its UTC offset (EXIF OffsetTimeOriginal,
    QuickTime's UTC creation time or Apple's creationdate), naive (local wall-clock time)
    when it does not.
    """

    taken_at: datetime | None = None
    camera_make: str | None = None
    camera_model: str | None = None
    latitude: float | None = None
    longitude: float | None = None


@dataclass(frozen=True)
class MediaResult:
    info: MediaInfo
    variants: tuple[Variant, ...] = ()
    placeholder: str | None = None
    capture: Capture = field(default_factory=Capture)
    sha256: str | None = None

    @property
    def mime_type(self) -> str:
        return self.info.mime_type


def fit(width: int, height: int, box: int) -> tuple[int, int]:
    """Largest size with the same aspect ratio that fits in box x box, never upscaled."""
    scale = min(box / width, box / height, 1.0)
    return max(1, round(width * scale)), max(1, round(height * scale))


def check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise MediaRejected("the file has no picture dimensions")
    if width * height > max_pixels:
        raise MediaRejected(f"the picture is too large ({width}x{height} pixels)")


# Output


def encode_jpeg(image: Image.Image) -> bytes:
    return _encode(image, "JPEG", quality=_JPEG_QUALITY, optimize=True)


def encode_preview(image: Image.Image) -> bytes:
    # Progressive: ~5 % smaller here, and a slow connection shows the whole picture blurred
    # first, then sharp, instead of top to bottom.
    return _encode(image, "JPEG", quality=PREVIEW_JPEG_QUALITY, optimize=True, progressive=True)


def _encode(image: Image.Image, format: str, **options: object) -> bytes:
    # Pillow falls back to im.info for some markers (the JPEG comment, exif, xmp); an empty
    # info dict plus no exif/icc/xmp arguments guarantees nothing from the source leaks into a
    # derivative.
    image.info = {}
    buffer = io.BytesIO()
    try:
        image.save(buffer, format=format, **options)
    except Exception as exc:
        raise MediaRejected("a preview could not be created for this file") from exc
    return buffer.getvalue()


def write_variant(
    output_dir: Path, name: str, file: str, mime_type: str, image: Image.Image, data: bytes
) -> Variant:
    write_atomically(data, output_dir / file)
    return Variant(
        name=name,
        file=file,
        mime_type=mime_type,
        width=image.width,
        height=image.height,
        size=len(data),
    )


def write_atomically(data: bytes, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Hidden, random and in the same directory, so os.replace is an atomic rename.
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(8)}.tmp")
    created = False
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        created = True
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            # Without fsync a power loss after the rename can leave a zero-length thumbnail.
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except BaseException:
        if created:
            tmp.unlink(missing_ok=True)
        raise
