"""Where the bytes of photos and videos live: the StorageBackend interface and object paths.

`StorageBackend` is deliberately small so Supabase Storage can implement it too (signed
upload URL, stat, signed download URLs, download/upload a file, read one as a stream, write a
large one through a staged local file, remove, list). Nothing
outside the adapters knows which backend runs: the built-in one is
`app.adapters.storage.local`, Supabase Storage `app.adapters.storage.supabase`.

Object paths are always relative, `/`-separated, without `.`/`..` or empty segments, and
are resolved and checked to stay inside the bucket folder before any file is touched.
"""

import re
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from app.errors import Invalid

# Reads stream in chunks of this size: large enough to copy fast, small enough to stay flat.
READ_CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True)
class UploadTarget:
    """Where and how the client sends the bytes of one file."""

    url: str
    method: str
    headers: dict[str, str]
    expires_in: int


@dataclass(frozen=True)
class ObjectStat:
    path: str
    size: int
    modified_at: datetime
    etag: str
    # SHA-256 of the bytes (hex) when the backend took it while receiving them (the built-in
    # one does); None when unknown, and then the media processor computes it.
    sha256: str | None = None


class StorageBackend(Protocol):
    """The object store for media files, one bucket."""

    bucket: str

    async def create_upload_url(
        self, path: str, *, mime_type: str, max_bytes: int, expires_in: int
    ) -> UploadTarget:
        """A URL the client sends the file to directly, valid for `expires_in` seconds."""
        ...

    async def stat(self, path: str) -> ObjectStat | None:
        """Size and age of a stored object, or None when there is none."""
        ...

    async def signed_download_urls(
        self, paths: Sequence[str], *, expires_in: int
    ) -> dict[str, str]:
        """One expiring download URL per path, signed in one call (a feed page at a time)."""
        ...

    async def download_to(self, path: str, dest: Path) -> None:
        """Copy an object into a local file (for the media processor); NotFound if missing."""
        ...

    async def upload_file(self, path: str, src: Path, content_type: str) -> None:
        """Store a local file as an object (thumbnails), replacing any previous one."""
        ...

    def read_chunks(self, path: str) -> AsyncIterator[bytes]:
        """An object's bytes in chunks of at most `READ_CHUNK_BYTES`, never held whole.

        NotFound (before any chunk) if the object does not exist.
        """
        ...

    def staged_object(self, path: str, content_type: str) -> AbstractAsyncContextManager[Path]:
        """A local file to write a large object into (an archive), stored as `path` when the
        block ends without an error and removed otherwise.

        The staged file is the only copy: the built-in store writes it in its own folder
        and moves it into place, Supabase Storage streams it up from a scratch folder.
        """
        ...

    async def remove(self, paths: Sequence[str]) -> None:
        """Delete objects; paths that do not exist are ignored."""
        ...

    def list_objects(self, older_than: datetime) -> AsyncIterator[str]:
        """Every object last written before `older_than` (for the orphan sweep)."""
        ...

    async def configuration_problem(self) -> str | None:
        """What an operator must fix before files can be stored (a missing bucket), or None.

        Raises ServiceUnavailable when the store cannot be asked right now: an outage makes
        the requests that need files 503, it is not a configuration problem.
        """
        ...


# Object paths -----------------------------------------------------------------------------

_MAX_PATH_LENGTH = 1024
# Non-empty segments of [A-Za-z0-9._-], none of them "." or "..": one expression, because the
# feed checks every path of a page (about 50) before signing it.
_SAFE_SEGMENT = r"(?!\.\.?(?:/|$))[A-Za-z0-9._-]+"
_SAFE_PATH = re.compile(rf"{_SAFE_SEGMENT}(?:/{_SAFE_SEGMENT})*")


def check_object_path(path: str) -> str:
    """Return `path` if it is a safe relative object path, else raise Invalid (400)."""
    if len(path) > _MAX_PATH_LENGTH or _SAFE_PATH.fullmatch(path) is None:
        raise Invalid("Invalid storage path")
    return path
