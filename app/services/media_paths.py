"""Where a memory's files live: `{family_unit_id}/{memory_id}/{media_id}.{ext}`, with the
thumbnail `{media_id}_thumb.jpg` beside it. The server builds every path; a client never does.
"""

import re
from dataclasses import dataclass
from uuid import UUID

from app.errors import Invalid, UnsupportedMediaType
from app.models.media_types import ALLOWED_MIME_TYPES, EXTENSION_FOR_MIME

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
