"""Supabase Storage behind the `StorageBackend` seam.

Files live in the project's private bucket (`memories`, created with its limits by
supabase/migrations/20250105000000_storage.sql). Browsers send and fetch bytes straight to and
from Supabase through signed URLs; this backend only signs, checks, downloads (for the media
processor), uploads thumbnails, removes and lists. Storage REST endpoints used, all under
`{SUPABASE_URL}/storage/v1` and all called with the service-role key, which never leaves the
server (the URLs handed to clients carry a Storage token for one object instead):

    POST   /object/upload/sign/{bucket}/{path}   upload URL: {"url": "/object/upload/sign/…?token="}
    GET    /object/info/authenticated/{bucket}/{path}   stat: {"size", "etag", "last_modified", …}
    POST   /object/sign/{bucket}   {"expiresIn", "paths"}   download URLs, one request per page:
                                   [{"path", "signedURL": "/object/sign/…?token=", "error"}]
    GET    /object/authenticated/{bucket}/{path}   download, streamed (to a file, or as chunks)
    GET    /bucket/{bucket}   the bucket, checked at start-up and by readiness
    POST   /object/{bucket}/{path}   x-upsert: true   upload (thumbnails; archives streamed)
    DELETE /object/{bucket}   {"prefixes": [...]}   remove
    POST   /object/list/{bucket}   {"prefix", "limit", "offset", "sortBy"}   one folder's entries

Why plain httpx rather than storage3 (the `supabase` package's Storage client): storage3's
`download` returns the whole object in memory, where we stream a video of up to 50 MiB to disk;
and it turns HTTP errors into `StorageApiError` while timeouts pass through as httpx errors and
odd bodies as KeyError or pydantic errors. Like the Auth provider
(`app.adapters.auth.supabase`), we must tell "Supabase is down" (503) from "Supabase said no"
(the matching 4xx) precisely; one `_send` and one classification (`storage_refusal`, `_refused`)
do that for every call. Seven endpoints with documented shapes are simpler than wrapping the
package's three kinds of failure.

How Storage says no (supabase/storage src/http/error-handler.ts, src/internal/errors/codes.ts):
most refusals come as HTTP 400 with the real status in the body, e.g. a missing object is
`400 {"statusCode": "404", "code": "NoSuchKey", "error": "not_found", "message": "Object not
found"}` (older versions omit `code`); newer versions may send the real status instead. The API
gateway answers a bad key itself: `401 {"message": "Invalid API key"}`. So the body's
`statusCode` decides when there is one, the HTTP status otherwise.

Where it differs from the built-in backend (docs/storage.md, "Supabase Storage"):
- An upload URL cannot carry a size limit or bind the type: the bucket's `file_size_limit` and
  `allowed_mime_types` bound every upload, registration checks the stored size (`stat`), and
  the media processor checks the real type. Its lifetime is Storage's (2 hours on the hosted
  platform), not the `expires_in` asked for; the target reports the real one.
- Upload URLs are signed with `x-upsert: false`, so, as with the built-in backend, objects
  are write-once: a second upload to the same URL is refused (409).
- Download URLs are only signed for objects that exist; a missing one is left out of the
  result (the feed then shows `null`). Against a missing bucket every URL is left out and the
  answer is still 200, so the bucket is checked at start-up (an error in the log) and by
  `/health/ready` (503 until it exists): `configuration_problem`.
"""

import asyncio
import contextlib
import email.utils
import logging
import os
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import anyio
import httpx
from jose import JWTError, jwt

from app.adapters.storage.base import (
    READ_CHUNK_BYTES,
    ObjectStat,
    UploadTarget,
    check_object_path,
)
from app.adapters.storage.signing import expiry
from app.adapters.supabase.client import Supabase
from app.errors import (
    Conflict,
    DomainError,
    Invalid,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    UnsupportedMediaType,
)

logger = logging.getLogger(__name__)

UNAVAILABLE = "File storage is temporarily unavailable; please retry"
_RETRY_AFTER = {"Retry-After": "5"}
MISSING = "The stored file is missing"

# How long the hosted platform's Storage accepts an upload URL (UPLOAD_SIGNED_URL_EXPIRATION_TIME).
# Used only if the token's `exp` cannot be read.
SIGNED_UPLOAD_URL_SECONDS = 2 * 3600

_OBJECT_MISSING_CODES = frozenset({"NoSuchKey", "not_found"})
_BUCKET_MISSING_CODES = frozenset({"NoSuchBucket", "Bucket not found"})
# Writing an object into a missing bucket breaks the objects → buckets foreign key, which
# Storage reports as `RelatedResourceNotFound`: 404 with the generic code `InvalidRequest`
# (src/internal/errors/codes.ts). An object's only related resource is its bucket.
_RELATED_RESOURCE_MISSING = "InvalidRequest"
_KEY_REFUSED_CODES = frozenset({"InvalidJWT", "AccessDenied", "Unauthorized"})
_DOWNLOAD_CHUNK_BYTES = 1024 * 1024
# Files up to this size are uploaded from memory (thumbnails); larger ones (archives) stream.
_UPLOAD_IN_ONE_PIECE_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class StorageRefusal:
    """A non-2xx answer of Supabase Storage, read whatever its shape."""

    http_status: int
    # The status Storage means: the body's `statusCode` when it sends one, else the HTTP status.
    status: int
    # `code` (newer versions) and `error` (older ones, and the gateway's): any that were sent.
    codes: frozenset[str]

    @property
    def object_missing(self) -> bool:
        return self.status == 404 and bool(self.codes & _OBJECT_MISSING_CODES)

    @property
    def bucket_missing(self) -> bool:
        related_missing = self.status == 404 and _RELATED_RESOURCE_MISSING in self.codes
        return related_missing or bool(self.codes & _BUCKET_MISSING_CODES)

    @property
    def key_refused(self) -> bool:
        return (
            self.http_status in (401, 403)
            or self.status in (401, 403)
            or bool(self.codes & _KEY_REFUSED_CODES)
        )


def storage_refusal(response: httpx.Response) -> StorageRefusal:
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {}
    status = response.status_code
    stated = body.get("statusCode")
    # Only a 4xx carries the meant status in its body; a 5xx is an outage whatever it says.
    if status < 500 and (isinstance(stated, int) or (isinstance(stated, str) and stated.isdigit())):
        status = int(stated)
    codes = frozenset(
        value for value in (body.get("code"), body.get("error")) if isinstance(value, str)
    )
    return StorageRefusal(response.status_code, status, codes)


class SupabaseStorageBackend:
    """One bucket of Supabase Storage; see the module docstring for endpoints and errors."""

    # Paths per signing or removal request. Storage takes at most 1000 prefixes per removal;
    # a feed page signs far fewer paths, so it is always one request.
    batch_size = 1000
    # Entries per listing request while walking the bucket for the orphan sweep.
    list_page_size = 1000

    def __init__(
        self, supabase: Supabase, *, bucket: str | None = None, scratch_dir: Path | None = None
    ) -> None:
        self.bucket = bucket or supabase.config.storage_bucket
        # Where `staged_object` files wait before their upload (the system's temp folder if
        # None; an archive can be large, so the service points this at its data folder).
        self._scratch_dir = scratch_dir
        self._config = supabase.config
        self._http = supabase.http
        self._base = supabase.config.storage_url

    # The StorageBackend interface ------------------------------------------------------------

    async def create_upload_url(
        self, path: str, *, mime_type: str, max_bytes: int, expires_in: int
    ) -> UploadTarget:
        # `max_bytes` and `expires_in` cannot be bound into a Supabase upload URL: the bucket's
        # limits and registration's size check hold instead (module docstring).
        operation = "sign an upload URL"
        response = await self._send(
            "POST",
            f"/object/upload/sign/{self._object(path)}",
            operation,
            # The token says "no upsert": the object is write-once, as with the built-in backend.
            headers={"x-upsert": "false"},
        )
        body = _json_object(self._checked(response, operation), operation)
        relative = body.get("url")
        if not (isinstance(relative, str) and relative.startswith("/object/upload/sign/")):
            raise _unreadable(operation)
        token = _query_value(relative, "token")
        if not token:
            raise _unreadable(operation)
        return UploadTarget(
            url=f"{self._base}{relative}",
            method="PUT",
            headers={"Content-Type": mime_type, "x-upsert": "false"},
            expires_in=_seconds_left(token),
        )

    async def stat(self, path: str) -> ObjectStat | None:
        operation = "stat an object"
        response = await self._send(
            "GET", f"/object/info/authenticated/{self._object(path)}", operation
        )
        if not response.is_success:
            refusal = storage_refusal(response)
            if refusal.object_missing:
                return None
            raise self._refused(refusal, operation)
        info = _json_object(response, operation)
        size = info.get("size")
        # `last_modified` is the row's updated_at; some Storage versions leave it out of the
        # body, the Last-Modified header (the stored file's) is always sent.
        modified = (
            _timestamp(info.get("last_modified"))
            or _http_date(response.headers.get("last-modified"))
            or _timestamp(info.get("created_at"))
        )
        if not isinstance(size, int) or isinstance(size, bool) or modified is None:
            raise _unreadable(operation)
        etag = info.get("etag") or response.headers.get("etag") or ""
        return ObjectStat(path=path, size=size, modified_at=modified, etag=str(etag))

    async def signed_download_urls(
        self, paths: Sequence[str], *, expires_in: int
    ) -> dict[str, str]:
        operation = "sign download URLs"
        wanted = list(dict.fromkeys(check_object_path(path) for path in paths))
        urls: dict[str, str] = {}
        # Supabase puts the time of signing in each URL, so URLs differ on every signing;
        # their expiry, at least, is the built-in store's: rounded up to the window's
        # boundary, so every URL of a page signed within a window lives until the same
        # moment, and a page answered 304 in that window never holds one about to expire.
        now = time.time()
        lifetime = expiry(expires_in, now) - int(now)
        for batch in _batches(wanted, self.batch_size):
            response = await self._send(
                "POST",
                f"/object/sign/{quote(self.bucket)}",
                operation,
                json={"expiresIn": lifetime, "paths": batch},
            )
            items = _json(self._checked(response, operation), operation)
            if not isinstance(items, list):
                raise _unreadable(operation)
            requested = set(batch)
            for item in items:
                if not isinstance(item, dict):
                    continue
                path, signed = item.get("path"), item.get("signedURL")
                # A missing object comes back with `error` set and no URL: left out.
                if path in requested and isinstance(signed, str) and signed.startswith("/"):
                    urls[path] = f"{self._base}{signed}"
        return urls

    async def download_to(self, path: str, dest: Path) -> None:
        operation = "download an object"
        url = f"{self._base}/object/authenticated/{self._object(path)}"
        try:
            async with self._http.stream("GET", url, headers=self._headers()) as response:
                if not response.is_success:
                    await response.aread()
                    raise self._refused(storage_refusal(response), operation)
                async with await anyio.open_file(dest, "wb") as out:
                    async for chunk in response.aiter_bytes(_DOWNLOAD_CHUNK_BYTES):
                        await out.write(chunk)
        except httpx.HTTPError as exc:  # before the answer or while streaming it
            await _remove_partial(dest)
            raise _unreachable(operation, exc) from None
        except BaseException:
            await _remove_partial(dest)
            raise

    async def upload_file(self, path: str, src: Path, content_type: str) -> None:
        operation = "upload a file"
        size = (await asyncio.to_thread(src.stat)).st_size
        content: bytes | AsyncIterator[bytes]
        if size <= _UPLOAD_IN_ONE_PIECE_BYTES:
            # Thumbnails are a few dozen KiB: read at once (off the event loop).
            content = await asyncio.to_thread(src.read_bytes)
        else:
            # An archive may be gigabytes: streamed, with its length (no chunked encoding).
            content = _file_chunks(src)
        response = await self._send(
            "POST",
            f"/object/{self._object(path)}",
            operation,
            content=content,
            # Replacing is intended: a thumbnail made again after a retry overwrites the last.
            headers={"Content-Type": content_type, "Content-Length": str(size), "x-upsert": "true"},
        )
        self._checked(response, operation)

    async def read_chunks(self, path: str) -> AsyncIterator[bytes]:
        operation = "download an object"
        url = f"{self._base}/object/authenticated/{self._object(path)}"
        try:
            async with self._http.stream("GET", url, headers=self._headers()) as response:
                if not response.is_success:
                    await response.aread()
                    raise self._refused(storage_refusal(response), operation)
                async for chunk in response.aiter_bytes(READ_CHUNK_BYTES):
                    yield chunk
        except httpx.HTTPError as exc:  # before the answer or while streaming it
            raise _unreachable(operation, exc) from None

    @asynccontextmanager
    async def staged_object(self, path: str, content_type: str) -> AsyncIterator[Path]:
        check_object_path(path)
        if self._scratch_dir is not None:
            await asyncio.to_thread(self._scratch_dir.mkdir, parents=True, exist_ok=True)
        handle, name = await asyncio.to_thread(
            tempfile.mkstemp, prefix="timeless-", suffix=".part", dir=self._scratch_dir
        )
        os.close(handle)
        staged = Path(name)
        try:
            yield staged
            await self.upload_file(path, staged, content_type)
        finally:
            # Not in a thread: a cancelled job must not leave the file behind.
            staged.unlink(missing_ok=True)  # noqa: ASYNC240

    async def remove(self, paths: Sequence[str]) -> None:
        operation = "remove objects"
        wanted = list(dict.fromkeys(check_object_path(path) for path in paths))
        for batch in _batches(wanted, self.batch_size):
            # Names are matched exactly; ones that do not exist are simply not in the answer.
            response = await self._send(
                "DELETE", f"/object/{quote(self.bucket)}", operation, json={"prefixes": batch}
            )
            self._checked(response, operation)

    async def list_objects(self, older_than: datetime) -> AsyncIterator[str]:
        # Storage lists one folder at a time, files and sub-folders (entries without an id).
        # Walk the bucket depth first; each folder is read completely before anything from it is
        # yielded, because the caller removes objects while it iterates and offsets would shift.
        folders = [""]
        while folders:
            folder = folders.pop()
            for entry in await self._list_folder(folder):
                name = entry.get("name")
                if not isinstance(name, str) or not name:
                    continue
                path = f"{folder}{name}"
                if entry.get("id") is None:
                    folders.append(f"{path}/")
                    continue
                if not _is_object_path(path):
                    # Not a name this backend makes (say, uploaded in the dashboard): leave it.
                    continue
                written = _timestamp(entry.get("updated_at")) or _timestamp(entry.get("created_at"))
                if written is not None and written < older_than:
                    yield path

    async def configuration_problem(self) -> str | None:
        operation = "check the bucket"
        response = await self._send("GET", f"/bucket/{quote(self.bucket)}", operation)
        if response.is_success:
            return None
        refusal = storage_refusal(response)
        if refusal.bucket_missing:
            return _bucket_missing(self.bucket)
        if refusal.key_refused:
            return "Supabase Storage refused the configured key: check SUPABASE_SERVICE_ROLE_KEY"
        raise self._refused(refusal, operation)

    # Plumbing ----------------------------------------------------------------------------------

    def _object(self, path: str) -> str:
        """`{bucket}/{path}` for a URL; Invalid (400) for an unsafe path, as the built-in one."""
        return f"{quote(self.bucket)}/{quote(check_object_path(path))}"

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {**self._config.service_headers(), **(extra or {})}

    async def _list_folder(self, folder: str) -> list[dict[str, Any]]:
        operation = "list objects"
        entries: list[dict[str, Any]] = []
        while True:
            body = {
                "prefix": folder,
                "limit": self.list_page_size,
                "offset": len(entries),
                "sortBy": {"column": "name", "order": "asc"},
            }
            response = await self._send(
                "POST", f"/object/list/{quote(self.bucket)}", operation, json=body
            )
            page = _json(self._checked(response, operation), operation)
            if not isinstance(page, list):
                raise _unreadable(operation)
            entries += [entry for entry in page if isinstance(entry, dict)]
            if not page or len(page) < self.list_page_size:
                return entries

    async def _send(
        self,
        method: str,
        route: str,
        operation: str,
        *,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        try:
            return await self._http.request(
                method, f"{self._base}{route}", headers=self._headers(headers), **kwargs
            )
        except httpx.HTTPError as exc:  # timeouts, refused connections, TLS failures
            raise _unreachable(operation, exc) from None

    def _checked(self, response: httpx.Response, operation: str) -> httpx.Response:
        if not response.is_success:
            raise self._refused(storage_refusal(response), operation)
        return response

    def _refused(self, refusal: StorageRefusal, operation: str) -> DomainError:
        """The client's error for a refusal: the matching 4xx, or 503 for what is ours to fix."""
        if refusal.object_missing:
            return NotFound(MISSING)
        if refusal.status == 409:
            return Conflict("A file is already stored at this path")
        if refusal.status == 413:
            return PayloadTooLarge("The file is larger than the storage bucket accepts")
        if refusal.status == 415:
            return UnsupportedMediaType("The storage bucket does not accept this type of file")
        if "InvalidKey" in refusal.codes:
            return Invalid("Invalid storage path")

        extra = {
            "operation": operation,
            "status": refusal.http_status,
            "storage_status": refusal.status,
            "error_code": ",".join(sorted(refusal.codes)) or None,
        }
        if refusal.bucket_missing:
            logger.error(_bucket_missing(self.bucket), extra=extra)
        elif refusal.key_refused:
            logger.error(
                "Supabase Storage refused the configured API key; check SUPABASE_SERVICE_ROLE_KEY",
                extra=extra,
            )
        elif refusal.status == 429:
            logger.warning("Supabase Storage rate limit reached", extra=extra)
        else:
            logger.warning("Supabase Storage failed", extra=extra)
        return ServiceUnavailable(UNAVAILABLE, headers=_RETRY_AFTER)


# Helpers --------------------------------------------------------------------------------------


def _bucket_missing(bucket: str) -> str:
    return (
        f"Supabase Storage has no bucket {bucket!r}: apply the migrations (supabase db push or "
        "timeless migrate) or set SUPABASE_STORAGE_BUCKET"
    )


def _unreachable(operation: str, exc: Exception) -> ServiceUnavailable:
    # The exception's type only: its message may hold the URL, and URLs may hold tokens.
    logger.warning(
        "Supabase Storage unreachable",
        extra={"operation": operation, "error": type(exc).__name__},
    )
    return ServiceUnavailable(UNAVAILABLE, headers=_RETRY_AFTER)


def _unreadable(operation: str) -> ServiceUnavailable:
    logger.warning("Supabase Storage sent an unreadable answer", extra={"operation": operation})
    return ServiceUnavailable(UNAVAILABLE, headers=_RETRY_AFTER)


def _json(response: httpx.Response, operation: str) -> Any:
    try:
        return response.json()
    except ValueError:
        raise _unreadable(operation) from None


def _json_object(response: httpx.Response, operation: str) -> dict[str, Any]:
    body = _json(response, operation)
    if not isinstance(body, dict):
        raise _unreadable(operation)
    return body


def _query_value(url: str, name: str) -> str | None:
    values = parse_qs(urlsplit(url).query).get(name)
    return values[0] if values else None


def _seconds_left(token: str) -> int:
    """How long Storage will accept an upload token: its `exp` claim.

    Read without verifying the signature: only Storage can verify it, and the value is only
    reported to the client, never trusted for a decision here.
    """
    try:
        expires = jwt.get_unverified_claims(token).get("exp")
    except JWTError:
        expires = None
    if isinstance(expires, int | float) and not isinstance(expires, bool):
        return max(0, int(expires - time.time()))
    return SIGNED_UPLOAD_URL_SECONDS


def _timestamp(value: object) -> datetime | None:
    """An ISO-8601 time as Storage sends them (`2025-01-20T12:00:00.000Z`), always aware."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _http_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _is_object_path(path: str) -> bool:
    try:
        check_object_path(path)
    except Invalid:
        return False
    return True


def _batches(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


async def _file_chunks(src: Path) -> AsyncIterator[bytes]:
    handle = await asyncio.to_thread(src.open, "rb")
    try:
        while chunk := await asyncio.to_thread(handle.read, READ_CHUNK_BYTES):
            yield chunk
    finally:
        handle.close()


async def _remove_partial(dest: Path) -> None:
    with contextlib.suppress(OSError):
        await asyncio.to_thread(dest.unlink, missing_ok=True)
