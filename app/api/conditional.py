"""Conditional requests (docs/api.md, "Conditional requests"): ETag and If-None-Match → 304.

An ETag here names what a response *shows*, computed from its data: a hash of the response
model's JSON with the parts left out that change without anything visible changing (signed
URLs, which Supabase Storage signs anew each time, and a list's next_cursor, which records
when it was made). What those parts stand for enters the hash instead: the expiry window of
the page's URLs, or the hour. So the ETag is weak (`W/"…"`): equal ETags mean the same
content, not the same bytes. A 304 therefore never hands back URLs or a cursor that are
older than their window.
"""

import hashlib
import time
from collections.abc import Sequence
from typing import Any, TypeVar

from fastapi import Request, Response
from pydantic import BaseModel

T = TypeVar("T")

# Cached, but asked again each time: the point is the cheap 304.
CACHE_CONTROL = "private, no-cache"
# A page's parts that change with every answer, whatever it shows.
NEXT_CURSOR = {"next_cursor": True}
FEED_VOLATILE: dict[str, Any] = {
    "next_cursor": True,
    "items": {"__all__": {"media": {"__all__": {"url": True, "thumbnail_url": True}}}},
}
# A list answered with a cursor changes ETag every hour: a 304 hands back a next_cursor at
# most that old, well within its 24 hours.
CURSOR_WINDOW_SECONDS = 3600


def etag(
    content: BaseModel | Sequence[BaseModel],
    *,
    exclude: dict[str, Any] | None = None,
    salt: str = "",
) -> str:
    """A weak ETag of what `content` shows (`exclude`d parts left out, `salt` put in)."""
    digest = hashlib.sha256(salt.encode())
    models = [content] if isinstance(content, BaseModel) else content
    for model in models:
        digest.update(b"\x00")
        digest.update(model.model_dump_json(exclude=exclude).encode())
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
    headers = {"ETag": tag, "Cache-Control": CACHE_CONTROL}
    if matches(request, tag):
        return Response(status_code=304, headers=headers)
    response.headers.update(headers)
    return content


def _opaque(tag: str) -> str:
    tag = tag.strip()
    return tag[2:] if tag.startswith("W/") else tag
