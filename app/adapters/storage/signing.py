"""Signed URLs of the built-in storage: HMAC-SHA256, bound to one operation and object.

Each URL is bound to one operation, one object path and an expiry; an upload URL is also
bound to the declared MIME type and the largest size accepted.
"""

import base64
import hashlib
import hmac
import math
from dataclasses import dataclass

UPLOAD = "upload"
DOWNLOAD = "download"


@dataclass(frozen=True)
class UploadGrant:
    """What a valid upload URL allows: one object, of this type, up to this size."""

    path: str
    mime_type: str
    max_bytes: int


class UrlSigner:
    """HMAC-SHA256 over (operation, bucket, path, expiry, bound values)."""

    # Domain separation: this key signs storage URLs only, never anything the JWT key signs.
    _CONTEXT = b"timeless-love/storage-url/v1"

    def __init__(self, secret: str):
        self._key = hmac.new(secret.encode(), self._CONTEXT, hashlib.sha256).digest()

    def sign(self, *parts: str) -> str:
        # No part can contain "\n": paths are checked, the rest are ours or numbers.
        digest = hmac.digest(self._key, "\n".join(parts).encode(), "sha256")
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def verify(self, signature: str, *parts: str) -> bool:
        # As bytes: compare_digest refuses str with non-ASCII characters (a forged signature
        # of "é" would otherwise be a 500, not a 403).
        return hmac.compare_digest(self.sign(*parts).encode(), signature.encode())


# The longest step an expiry is rounded up by.
MAX_WINDOW_SECONDS = 3600


def window(expires_in: int) -> int:
    """The step expiries of this lifetime are rounded to: the lifetime, at most an hour."""
    return max(1, min(MAX_WINDOW_SECONDS, expires_in))


def expiry(expires_in: int, now: float) -> int:
    """When a URL asked for `expires_in` seconds at `now` expires (Unix seconds).

    The next boundary of the lifetime's window (whole hours for an hour or more) plus the
    lifetime: never less than asked, at most one window more. Every URL of one object
    signed within a window is then the same URL, so a page that shows it keeps its ETag and
    the browser keeps the cached image (docs/api.md, "Conditional requests").
    """
    step = window(expires_in)
    boundary = -(-math.ceil(now) // step) * step
    return boundary + expires_in
