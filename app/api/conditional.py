"""Conditional requests (docs/api.md, "Conditional requests"): ETag and If-None-Match → 304.

An ETag here names what a response *shows*, computed from its data: a hash of the response
model's JSON with the parts left out that change without anything visible changing: a signed
URL's signature (Supabase Storage signs anew each time, and each process signs for itself),
and a list's next_cursor, which records when it was made. What those parts stand for enters
the hash instead: the object a URL names and the expiry window of the URLs, the hour of a
cursor. So the ETag is weak (`W/"…"`): equal ETags mean the same content, not the same bytes.
A 304 therefore never hands back URLs or a cursor that are older than their window.
A feed page's is taken from the page as read, before its URLs were signed (`feed_service`,
`etag_of`): a tenth of the cost of dumping the validated page for it.
"""

import hashlib
import re
import time
from collections.abc import Sequence
from typing import Any, TypeVar

from fastapi import Request, Response
from pydantic import BaseModel

from app.adapters.storage.signing import expiry
from app.services.media_urls import MEDIA_URL_EXPIRES_IN

T = TypeVar("T")

# Cached, but asked again each time: the point is the cheap 304.
CACHE_CONTROL = "private, no-cache"
# A page's part that changes with every answer, whatever it shows.
NEXT_CURSOR = {"next_cursor": True}
# The signature of a signed URL: the built-in store's `expires` and `signature`, Supabase
# Storage's `token`. The URL without it still names the object (a new avatar or variant is a
# new path); the URLs' window goes into every ETag instead.
_SIGNATURE = re.compile(r'(https?://[^"?\s]+)\?(?:expires=\d+&signature|token)=[^"\s]*')
# A list answered with a cursor changes ETag every hour: a 304 hands back a next_cursor at
# most that old, well within its 24 hours.
CURSOR_WINDOW_SECONDS = 3600


def etag(
    content: BaseModel | Sequence[BaseModel],
    *,
    exclude: dict[str, Any] | None = None,
    salt: str = "",
    now: float | None = None,
) -> str:
    """A weak ETag of what `content` shows (`exclude`d parts left out, `salt` put in)."""
    window = expiry(MEDIA_URL_EXPIRES_IN, time.time() if now is None else now)
    digest = hashlib.sha256(f"{window}:{salt}".encode())
    models = [content] if isinstance(content, BaseModel) else content
    for model in models:
        digest.update(b"\x00")
        digest.update(_SIGNATURE.sub(r"\1", model.model_dump_json(exclude=exclude)).encode())
    return f'W/"{digest.hexdigest()[:32]}"'


def etag_of(shown: bytes, *, salt: str = "") -> str:
    """A weak ETag of what a response shows, as its service wrote it down (the feed: the
    page as read, before its URLs were signed), with `salt` put in."""
    digest = hashlib.sha256(salt.encode())
    digest.update(b"\x00")
    digest.update(shown)
    return f'W/"{digest.hexdigest()[:32]}"'


def page_salt(window: object, next_cursor: str | None) -> str:
    """What a page's left-out next_cursor stands for: its window and whether more follow."""
    return f"{window}:{next_cursor is not None}"


def cursor_window(now: float | None = None) -> str:
    """The window of a list answered with a cursor: the current hour."""
    return str(int((time.time() if now is None else now) // CURSOR_WINDOW_SECONDS))


def matches(request: Request, tag: str) -> bool:
    """Whether If-None-Match names `tag` (weak comparison, as RFC 9110 asks for GET)."""
    header = request.headers.get("if-none-match")
    if not header:
        return False
    if header.strip() == "*":
        return True
    wanted = _opaque(tag)
    return any(_opaque(candidate) == wanted for candidate in header.split(","))


def answer(request: Request, response: Response, content: T, tag: str) -> T | Response:
    """`content` with its ETag, or 304 Not Modified with no body when the client has it."""
    if matches(request, tag):
        return not_modified(tag)
    return tagged(response, content, tag)


def tagged(response: Response, content: T, tag: str) -> T:
    """`content` with its ETag: for an answer built only once `matches` said no (the feed
    signs its URLs only for a client that does not have the page)."""
    response.headers.update({"ETag": tag, "Cache-Control": CACHE_CONTROL})
    return content


def not_modified(tag: str) -> Response:
    """304 Not Modified with no body: the client has what `tag` names."""
    return Response(status_code=304, headers={"ETag": tag, "Cache-Control": CACHE_CONTROL})


def _opaque(tag: str) -> str:
    tag = tag.strip()
    return tag[2:] if tag.startswith("W/") else tag
