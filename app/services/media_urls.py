"""Signed URLs in responses: media variants and uploaded avatars, a whole response at a time.

Rows come from the views (`memory_details`, `memory_comment_details`, the profile queries)
with storage paths; clients get signed URLs instead. Every path of one response is signed in
one `signed_download_urls` call (one HTTP request with Supabase Storage), however many media
and authors the response holds.
"""

from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Final

from app.adapters.storage.base import StorageBackend

# Long enough to scroll a page and come back to it; the contract's default for access URLs.
MEDIA_URL_EXPIRES_IN: Final = 3600

# Every photo and video gets these; `playback` only a video browsers cannot play as it is.
_ALWAYS: Final[Mapping[str, str]] = {"thumbnail": "image/jpeg", "preview": "image/jpeg"}
_NONE: Final[Mapping[str, Any]] = {}

Row = MutableMapping[str, Any]


def media_paths(media: Mapping[str, Any]) -> list[str]:
    """The variant paths of a media row that exist (processing completed)."""
    if media.get("processing_status") != "completed":
        return []
    variants = media.get("variants") or {}
    return [v["path"] for v in variants.values() if isinstance(v, dict) and v.get("path")]


def shape_media(media: Row, urls: Mapping[str, str]) -> Row:
    """Turn a media row as stored into the Media the API shows (in place)."""
    stored = media.get("variants") or _NONE
    # Every response with media shapes each of them: written for few steps per variant.
    names = _ALWAYS if stored.keys() <= _ALWAYS.keys() else _variant_names(stored)
    ready = media.get("processing_status") == "completed"
    variants: dict[str, dict[str, Any]] = {}
    for name in names:  # before processing has completed, a variant shows only its type
        variant = stored.get(name) or _NONE
        path = variant.get("path") if ready else None
        variants[name] = {
            "url": urls.get(path) if path else None,
            "width": variant.get("width") if ready else None,
            "height": variant.get("height") if ready else None,
            "mime_type": variant.get("mime_type") or _ALWAYS.get(name, "video/mp4"),
        }
    media["variants"] = variants
    taken, offset = media.get("taken_at"), media.pop("taken_at_offset", None)
    media["taken_at"] = None if taken is None else _taken_at(taken, offset)
    return media


def _variant_names(stored: Mapping[str, Any]) -> list[str]:
    return [*_ALWAYS, *(name for name in stored if name not in _ALWAYS)]


def _taken_at(value: object, offset: object) -> datetime:
    taken = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    if not isinstance(offset, int):
        # The file gave a local time without its zone: show the wall-clock time as it was.
        return taken.astimezone(UTC).replace(tzinfo=None)
    return taken.astimezone(timezone(timedelta(minutes=offset)))


def avatar_path(author: Mapping[str, Any]) -> str | None:
    path = author.get("avatar_path")
    return path if isinstance(path, str) and path else None


def shape_author(author: Row, urls: Mapping[str, str]) -> Row:
    """An uploaded avatar's thumbnail becomes avatar_url (signed); a URL avatar stays."""
    path = author.pop("avatar_path", None)
    if path:
        author["avatar_url"] = urls.get(path)
    return author


async def sign(storage: StorageBackend, paths: Iterable[str]) -> dict[str, str]:
    unique = list(dict.fromkeys(paths))
    if not unique:
        return {}
    return await storage.signed_download_urls(unique, expires_in=MEDIA_URL_EXPIRES_IN)


async def shape_memories(storage: StorageBackend, memories: Sequence[Row]) -> None:
    """Sign and shape the media and the author of each memory row, in one signing call."""
    paths = [p for memory in memories for media in memory["media"] for p in media_paths(media)]
    paths += [p for memory in memories if (p := avatar_path(memory["author"]))]
    urls = await sign(storage, paths)
    for memory in memories:
        shape_author(memory["author"], urls)
        for media in memory["media"]:
            shape_media(media, urls)


async def shape_authors(storage: StorageBackend, authors: Sequence[Row]) -> None:
    urls = await sign(storage, [p for author in authors if (p := avatar_path(author))])
    for author in authors:
        shape_author(author, urls)
