"""What every media adapter shares: the outcome types and how a derivative is written."""

import io
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from PIL import Image

_JPEG_QUALITY: Final = 85


class MediaRejected(Exception):
    """The upload is not an acceptable photo or video.

    ``reason`` is shown to end users, so it never contains paths or library internals.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class MediaInfo:
    mime_type: str
    width: int | None
    height: int | None
    duration: float | None
    codec: str | None
    frame_count: int | None


def fit(width: int, height: int, box: int) -> tuple[int, int]:
    """Largest size with the same aspect ratio that fits in box x box, never upscaled."""
    scale = min(box / width, box / height, 1.0)
    return max(1, round(width * scale)), max(1, round(height * scale))


# Output


def encode_jpeg(image: Image.Image) -> bytes:
    # Pillow falls back to im.info for some markers (e.g. the JPEG comment); an empty info dict
    # plus no exif/icc arguments guarantees nothing from the source leaks into the thumbnail.
    image.info = {}
    buffer = io.BytesIO()
    try:
        image.save(buffer, format="JPEG", quality=_JPEG_QUALITY, optimize=True)
    except Exception as exc:
        raise MediaRejected("a preview could not be created for this file") from exc
    return buffer.getvalue()


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


def check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise MediaRejected("the file has no picture dimensions")
    if width * height > max_pixels:
        raise MediaRejected(f"the picture is too large ({width}x{height} pixels)")
