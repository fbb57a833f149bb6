"""Signed URLs of the built-in storage: HMAC-SHA256, bound to one operation and object.

Each URL is bound to one operation, one object path and an expiry; an upload URL is also
bound to the declared MIME type and the largest size accepted.
"""

import base64
import hashlib
import hmac
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
        return hmac.compare_digest(self.sign(*parts), signature)


def expiry(expires_in: int, now: float) -> int:
    # Rounded up to a step (at most a quarter of the lifetime, at most 5 minutes) so that the
    # same object signed again a moment later gets the same URL and the browser cache works.
    step = max(1, min(300, expires_in // 4))
    deadline = int(now) + expires_in
    return -(-deadline // step) * step
