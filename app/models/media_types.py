"""The photo and video types a family may upload, and what each is called elsewhere."""

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

IMAGE_MIME_TYPES: Final = frozenset(
    {"image/jpeg", "image/png", "image/gif", "image/webp", "image/heic", "image/heif", "image/avif"}
)
VIDEO_MIME_TYPES: Final = frozenset({"video/mp4", "video/webm", "video/quicktime"})
ALLOWED_MIME_TYPES: Final[frozenset[str]] = IMAGE_MIME_TYPES | VIDEO_MIME_TYPES

EXTENSION_FOR_MIME: Final[Mapping[str, str]] = MappingProxyType(
    {
        "image/jpeg": "jpg",
        "image/png": "png",
        "image/gif": "gif",
        "image/webp": "webp",
        "image/heic": "heic",
        "image/heif": "heif",
        "image/avif": "avif",
        "video/mp4": "mp4",
        "video/webm": "webm",
        "video/quicktime": "mov",
    }
)

# Pillow plugin names; pinning them stops Pillow from trying every other plugin on the bytes.
PILLOW_FORMAT: Final[Mapping[str, str]] = MappingProxyType(
    {
        "image/jpeg": "JPEG",
        "image/png": "PNG",
        "image/gif": "GIF",
        "image/webp": "WEBP",
        "image/heic": "HEIF",
        "image/heif": "HEIF",
        # Pillow's own AVIF plugin (libavif, Pillow >= 11.2); pillow-heif is built without AVIF.
        "image/avif": "AVIF",
    }
)
