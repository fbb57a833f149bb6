"""Where a memory's files live: `{family_unit_id}/{memory_id}/{media_id}.{ext}`, with its
derivatives beside it (`{media_id}_thumb.jpg`, `{media_id}_preview.jpg`,
`{media_id}_play.mp4`). Avatars of members and pets live in `{family_unit_id}/avatars/`, the
same way. The server builds every path; a client never does.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final
from uuid import UUID

from app.errors import Invalid, UnsupportedMediaType
from app.models.media_types import ALLOWED_MIME_TYPES, EXTENSION_FOR_MIME

# Where files live --------------------------------------------------------------------------


@dataclass(frozen=True)
class MediaPath:
    family_unit_id: UUID
    memory_id: UUID | None  # None: an avatar
    media_id: UUID
    extension: str


AVATARS_FOLDER: Final = "avatars"
_MEDIA_PATH = re.compile(
    r"^(?P<family>[0-9a-f-]{36})/(?P<memory>[0-9a-f-]{36}|avatars)/(?P<media>[0-9a-f-]{36})"
    r"\.(?P<extension>[a-z0-9]{1,5})$"
)
# Each variant's file name after the media id; the extension says its type when served.
VARIANT_SUFFIX: Final[Mapping[str, str]] = MappingProxyType(
    {"thumbnail": "_thumb.jpg", "preview": "_preview.jpg", "playback": "_play.mp4"}
)
_THUMBNAIL_SUFFIX = VARIANT_SUFFIX["thumbnail"]


def media_object_path(family_unit_id: UUID, memory_id: UUID, media_id: UUID, mime: str) -> str:
    return f"{family_unit_id}/{memory_id}/{media_id}.{EXTENSION_FOR_MIME[mime]}"


def avatar_object_path(family_unit_id: UUID, media_id: UUID, mime: str) -> str:
    return f"{family_unit_id}/{AVATARS_FOLDER}/{media_id}.{EXTENSION_FOR_MIME[mime]}"


def variant_path_for(storage_path: str, variant: str) -> str:
    return storage_path.rsplit(".", 1)[0] + VARIANT_SUFFIX[variant]


def thumbnail_path_for(storage_path: str) -> str:
    return variant_path_for(storage_path, "thumbnail")


def derived_paths(storage_path: str) -> list[str]:
    """Every derivative a media object may have, whether or not it was made (yet)."""
    return [variant_path_for(storage_path, variant) for variant in VARIANT_SUFFIX]


def parse_media_path(path: str) -> MediaPath:
    """The ids in a server-built object path; Invalid (400) for anything else."""
    match = _MEDIA_PATH.match(path)
    try:
        if match is None:
            raise ValueError(path)
        names = (
            ("family", "media")
            if match["memory"] == AVATARS_FOLDER
            else ("family", "memory", "media")
        )
        ids = {name: UUID(match[name]) for name in names}
        # Only the canonical spelling, so one object has exactly one path.
        if any(str(value) != match[name] for name, value in ids.items()):
            raise ValueError(path)
    except ValueError:
        raise Invalid(
            "Invalid storage path: expected {family_unit_id}/{memory_id}/{media_id}.{ext}"
        ) from None
    return MediaPath(ids["family"], ids.get("memory"), ids["media"], match["extension"])


def source_of(path: str) -> str | None:
    """The media object a derivative belongs to, with a stand-in extension; None otherwise."""
    for suffix in VARIANT_SUFFIX.values():
        if path.endswith(suffix):
            return path.removesuffix(suffix) + ".jpg"
    return None


def check_media_file_path(path: str) -> MediaPath:
    """Invalid (400) unless `path` is a media object or one of its derivatives."""
    return parse_media_path(source_of(path) or path)


def normalize_mime(mime_type: str) -> str:
    """The bare, lower-cased type of an allowed MIME type; 415 for anything else."""
    mime = mime_type.split(";", 1)[0].strip().lower()
    if mime not in ALLOWED_MIME_TYPES:
        allowed = ", ".join(sorted(ALLOWED_MIME_TYPES))
        raise UnsupportedMediaType(f"Unsupported file type {mime!r}; allowed: {allowed}")
    return mime


# Archives a member uploads to import: `{family_unit_id}/imports/{upload_id}.zip`.
_IMPORT_PATH = re.compile(r"^(?P<family>[0-9a-f-]{36})/imports/(?P<upload>[0-9a-f-]{36})\.zip$")
IMPORT_MIME = "application/zip"


@dataclass(frozen=True)
class ImportPath:
    family_unit_id: UUID
    upload_id: UUID


def import_object_path(family_unit_id: UUID, upload_id: UUID) -> str:
    return f"{family_unit_id}/imports/{upload_id}.zip"


def is_import_path(path: str) -> bool:
    return _IMPORT_PATH.match(path) is not None


def parse_import_path(path: str) -> ImportPath:
    """The ids in an import upload's path; Invalid (400) for anything else."""
    match = _IMPORT_PATH.match(path)
    try:
        if match is None:
            raise ValueError(path)
        family, upload = UUID(match["family"]), UUID(match["upload"])
        if [str(family), str(upload)] != [match["family"], match["upload"]]:
            raise ValueError(path)
    except ValueError:
        raise Invalid(
            "Invalid storage path: expected an import upload, {family_unit_id}/imports/{id}.zip"
        ) from None
    return ImportPath(family, upload)
