"""The StorageBackend contract, run against both backends with the same assertions.

`local`: LocalStorageBackend on real files in a temporary folder; its upload URL is used the way
the `/storage/objects` route uses it (`verify_upload`, then `receive`).
`supabase`: SupabaseStorageBackend against `FakeSupabaseStorage`, an in-memory Supabase Storage
answering over respx with the request and response shapes of the real service, and the upload
and download URLs used exactly as a browser would (plain HTTP, no key).

Sources of the shapes, all in github.com/supabase/storage (src/http/routes/object/*.ts and
src/http/routes/bucket/getBucket.ts; storage3, the Python client, sends the same requests, but it
is not installed here: the `supabase` package is no dependency of this project):

- `POST /object/upload/sign/{bucket}/{path}` (getSignedUploadURL.ts), header `x-upsert`:
  200 `{"url": "/object/upload/sign/{bucket}/{path}?token=<jwt>", "token": "<jwt>"}`, relative
  to /storage/v1. The token (src/storage/object.ts signUploadObjectUrl) is a JWT
  `{"owner", "url": "{bucket}/{path}", "upsert", "scope": "upload", "iat", "exp"}` lasting
  UPLOAD_SIGNED_URL_EXPIRATION_TIME (2 hours on the hosted platform).
- `PUT /object/upload/sign/{bucket}/{path}?token=` (uploadSignedObject.ts), no key, raw body
  with Content-Type: 200 `{"Key": "{bucket}/{path}", "Id": "<uuid>"}`; the bucket's
  `file_size_limit` / `allowed_mime_types` apply; an existing object without upsert is
  `KeyAlreadyExists` (409).
- `GET /object/info/authenticated/{bucket}/{path}` (getObjectInfo.ts, storage/renderer/info.ts):
  200 `{"id", "name", "version", "size", "content_type", "cache_control", "etag", "metadata",
  "created_at"}` plus headers `ETag`, `Last-Modified`; `last_modified` (the row's updated_at) is
  in the body only where the route selects updated_at, which the current one does not.
- `POST /object/sign/{bucket}` `{"expiresIn": int, "paths": [...]}` (getSignedURLs.ts):
  200 `[{"error": null, "path": "...", "signedURL": "/object/sign/{bucket}/{path}?token=<jwt>"}]`;
  a missing object: `{"error": "Either the object does not exist or you do not have access to
  it", "path": "...", "signedURL": null}`.
- `GET /object/sign/{bucket}/{path}?token=` (getSignedObject.ts): the bytes, no key.
- `GET /object/authenticated/{bucket}/{path}` (getObject.ts): the bytes, with the key.
- `POST /object/{bucket}/{path}` (createObject.ts), headers `x-upsert`, `Content-Type`:
  200 `{"Id", "Key"}`.
- `DELETE /object/{bucket}` `{"prefixes": [...]}` (deleteObjects.ts, at most 1000): 200 with the
  deleted objects; names that do not exist are not in it.
- `POST /object/list/{bucket}` `{"prefix", "limit", "offset", "sortBy": {"column", "order"}}`
  (listObjects.ts, storage `search`): one folder level; a folder is
  `{"name", "id": null, "updated_at": null, "created_at": null, "last_accessed_at": null,
  "metadata": null}`, a file `{"name", "id", "updated_at", "created_at", "last_accessed_at",
  "metadata": {"eTag", "size", "mimetype", "cacheControl", "lastModified", "contentLength",
  "httpStatusCode"}}`.
- Errors (src/http/error-handler.ts, src/internal/errors/codes.ts): HTTP 400 (500 stays 500) with
  `{"statusCode": "<real status>", "code": "<ErrorCode>", "error": "<legacy error>", "message"}`,
  e.g. `NoSuchKey` 404 / `not_found`, `NoSuchBucket` 404 / `Bucket not found`, `InvalidJWT` 400,
  `KeyAlreadyExists` 409 / `Duplicate`, `EntityTooLarge` 413, `InvalidMimeType` 415; writing an
  object into a missing bucket breaks a foreign key: `RelatedResourceNotFound`, 404 with the code
  `InvalidRequest` (what a real server answered first for a missing bucket). The API
  gateway refuses a wrong key itself: 401 `{"message": "Invalid API key"}`.
- `GET /bucket/{bucket}` (getBucket.ts): 200 the bucket row (`id`, `name`, `public`,
  `file_size_limit`, `allowed_mime_types`, ...); a missing one `NoSuchBucket`.
"""

import hashlib
import json
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
import pytest
import respx
from jose import JWTError, jwt

from app.adapters.storage.base import READ_CHUNK_BYTES, StorageBackend, UploadTarget
from app.adapters.storage.local import LocalStorageBackend
from app.adapters.storage.supabase import SupabaseStorageBackend
from app.adapters.supabase.client import Supabase, SupabaseConfig
from app.errors import DomainError, Invalid, NotFound
from tests.helpers.supabase_fixtures import (
    ANON_KEY,
    BUCKET,
    SERVICE_ROLE_KEY,
    STORAGE_URL,
    SUPABASE_URL,
    bucket_row,
)

MiB = 1024 * 1024
# What supabase/migrations/20250105000000_storage.sql gives the bucket.
FILE_SIZE_LIMIT = 50 * MiB
ALLOWED_MIME_TYPES = frozenset(
    {
        "image/jpeg",
        "image/png",
        "image/gif",
        "image/webp",
        "image/heic",
        "image/heif",
        "video/mp4",
        "video/webm",
        "video/quicktime",
    }
)
# Storage signs its URL tokens with a key of its own; the backend never sees it.
URL_SIGNING_KEY = "fake-storage-url-signing-key-" + "U" * 32
MISSING_IN_BATCH = "Either the object does not exist or you do not have access to it"


# --- a Supabase Storage double ----------------------------------------------------------------


def storage_error(
    status: int, code: str, message: str, *, error: str | None = None
) -> httpx.Response:
    """A StorageBackendError as error-handler.ts renders it: HTTP 400 unless 500."""
    return httpx.Response(
        500 if status == 500 else 400,
        json={"statusCode": str(status), "code": code, "error": error or code, "message": message},
    )


def no_such_key() -> httpx.Response:
    return storage_error(404, "NoSuchKey", "Object not found", error="not_found")


def iso(moment: datetime) -> str:
    """A timestamp as Storage's JSON has them (node-postgres Date): `2025-01-20T12:00:00.000Z`."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class StoredObject:
    data: bytes
    mimetype: str
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    updated_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def etag(self) -> str:
        # S3's ETag of a single-part upload: the quoted MD5 of the bytes.
        return f'"{hashlib.md5(self.data, usedforsecurity=False).hexdigest()}"'

    def list_entry(self, name: str) -> dict[str, Any]:
        return {
            "name": name,
            "id": self.id,
            "updated_at": iso(self.updated_at),
            "created_at": iso(self.created_at),
            "last_accessed_at": iso(self.created_at),
            "metadata": {
                "eTag": self.etag,
                "size": len(self.data),
                "mimetype": self.mimetype,
                "cacheControl": "max-age=3600",
                "lastModified": iso(self.updated_at),
                "contentLength": len(self.data),
                "httpStatusCode": 200,
            },
        }


def folder_entry(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "id": None,
        "updated_at": None,
        "created_at": None,
        "last_accessed_at": None,
        "metadata": None,
    }


class FakeSupabaseStorage:
    """Supabase Storage for one bucket, in memory, as respx routes (shapes: module docstring).

    `calls` records the operation of every request in order and `requests` the requests;
    `override[operation]` answers that operation with a given response, or raises a given
    exception, instead (key `"*"`: every operation), to play outages and refusals.
    """

    def __init__(
        self,
        router: respx.MockRouter,
        *,
        bucket: str = BUCKET,
        upload_url_seconds: int = 7200,
        allowed_mime_types: frozenset[str] | None = None,
        size_limit: int | None = FILE_SIZE_LIMIT,
    ) -> None:
        self.bucket = bucket
        # The memories bucket's limits by default (the migration's); None: no limit.
        self.allowed_mime_types = allowed_mime_types or ALLOWED_MIME_TYPES
        self.size_limit = size_limit
        self.upload_url_seconds = upload_url_seconds
        self.objects: dict[str, StoredObject] = {}
        self.calls: list[str] = []
        self.requests: dict[str, list[httpx.Request]] = {}
        self.override: dict[str, httpx.Response | Exception] = {}
        b = r"(?P<bucket>[^/]+)"
        # First match wins: the specific routes before the generic `/object/{bucket}/{path}`.
        self._routes: list[tuple[str, str, str, Callable[..., httpx.Response]]] = [
            ("POST", rf"/object/upload/sign/{b}/(?P<path>.+)", "sign_upload", self._sign_upload),
            ("PUT", rf"/object/upload/sign/{b}/(?P<path>.+)", "signed_upload", self._signed_upload),
            ("GET", rf"/object/info/authenticated/{b}/(?P<path>.+)", "info", self._info),
            ("POST", rf"/object/sign/{b}", "sign", self._sign),
            ("GET", rf"/object/sign/{b}/(?P<path>.+)", "signed_download", self._signed_download),
            ("GET", rf"/object/authenticated/{b}/(?P<path>.+)", "download", self._download),
            ("POST", rf"/object/list/{b}", "list", self._list),
            ("DELETE", rf"/object/{b}", "remove", self._remove),
            ("POST", rf"/object/{b}/(?P<path>.+)", "upload", self._upload),
            ("GET", rf"/bucket/{b}", "bucket", self._bucket),
        ]
        router.route(url__startswith=f"{STORAGE_URL}/").mock(side_effect=self._dispatch)

    # --- for tests ---

    def put(self, path: str, data: bytes, mimetype: str = "image/jpeg", *, age: float = 0) -> None:
        """Store an object directly, as if uploaded `age` seconds ago."""
        self.objects[path] = StoredObject(data, mimetype)
        self.age(path, age)

    def age(self, path: str, seconds: float) -> None:
        then = datetime.now(UTC) - timedelta(seconds=seconds)
        self.objects[path].created_at = self.objects[path].updated_at = then

    def count(self, operation: str) -> int:
        return self.calls.count(operation)

    def bodies(self, operation: str) -> list[Any]:
        return [json.loads(request.content) for request in self.requests.get(operation, [])]

    # --- routing ---

    def _dispatch(self, request: httpx.Request) -> httpx.Response:
        route = request.url.path.removeprefix(urlsplit(STORAGE_URL).path)
        for method, pattern, operation, handler in self._routes:
            match = re.fullmatch(pattern, route)
            if request.method != method or match is None:
                continue
            self.calls.append(operation)
            self.requests.setdefault(operation, []).append(request)
            answer = self.override.get(operation, self.override.get("*"))
            if isinstance(answer, Exception):
                raise answer
            if answer is not None:
                return answer
            params = match.groupdict()
            if params.pop("bucket") != self.bucket:
                return storage_error(
                    404, "NoSuchBucket", "Bucket not found", error="Bucket not found"
                )
            if "path" in params:
                params["path"] = unquote(params["path"])
            return handler(request, **params)
        self.calls.append("unknown")
        return httpx.Response(
            404,
            json={"statusCode": 404, "error": "Not Found", "message": f"Route {route} not found"},
        )

    @staticmethod
    def _refused_key(request: httpx.Request) -> httpx.Response | None:
        if request.headers.get("apikey") != SERVICE_ROLE_KEY:
            return httpx.Response(401, json={"message": "Invalid API key"})
        if request.headers.get("authorization") != f"Bearer {SERVICE_ROLE_KEY}":
            return storage_error(400, "InvalidJWT", "invalid signature")
        return None

    def _token(self, path: str, scope: str, seconds: int, **claims: Any) -> str:
        now = int(time.time())
        payload = {"url": f"{self.bucket}/{path}", "scope": scope, "iat": now, "exp": now + seconds}
        return jwt.encode({**payload, **claims}, URL_SIGNING_KEY, algorithm="HS256")

    def _verified(
        self, request: httpx.Request, path: str, scope: str
    ) -> dict[str, Any] | httpx.Response:
        token = request.url.params.get("token", "")
        try:
            claims: dict[str, Any] = jwt.decode(token, URL_SIGNING_KEY, algorithms=["HS256"])
        except JWTError:
            return storage_error(400, "InvalidJWT", "jwt malformed or expired")
        if claims.get("url") != f"{self.bucket}/{path}" or claims.get("scope") != scope:
            return storage_error(400, "InvalidSignature", "The url do not match the signature")
        return claims

    def _store(self, path: str, request: httpx.Request, *, upsert: bool) -> httpx.Response:
        mimetype = request.headers.get("content-type", "").split(";")[0].strip()
        if mimetype not in self.allowed_mime_types:
            return storage_error(
                415,
                "InvalidMimeType",
                f"mime type {mimetype} is not supported",
                error="invalid_mime_type",
            )
        if self.size_limit is not None and len(request.content) > self.size_limit:
            return storage_error(
                413,
                "EntityTooLarge",
                "The object exceeded the maximum allowed size",
                error="Payload too large",
            )
        existing = self.objects.get(path)
        if existing is not None and not upsert:
            return storage_error(
                409, "KeyAlreadyExists", "The resource already exists", error="Duplicate"
            )
        stored = StoredObject(request.content, mimetype)
        if existing is not None:
            stored.id, stored.created_at = existing.id, existing.created_at
        self.objects[path] = stored
        return httpx.Response(200, json={"Key": f"{self.bucket}/{path}", "Id": stored.id})

    def _bytes(self, path: str) -> httpx.Response:
        stored = self.objects.get(path)
        if stored is None:
            return no_such_key()
        return httpx.Response(
            200,
            content=stored.data,
            headers={"Content-Type": stored.mimetype, "ETag": stored.etag},
        )

    # --- handlers ---

    def _sign_upload(self, request: httpx.Request, path: str) -> httpx.Response:
        if (refused := self._refused_key(request)) is not None:
            return refused
        upsert = request.headers.get("x-upsert") == "true"
        token = self._token(path, "upload", self.upload_url_seconds, upsert=upsert, owner=None)
        return httpx.Response(
            200,
            json={"url": f"/object/upload/sign/{self.bucket}/{path}?token={token}", "token": token},
        )

    def _signed_upload(self, request: httpx.Request, path: str) -> httpx.Response:
        claims = self._verified(request, path, "upload")
        if isinstance(claims, httpx.Response):
            return claims
        return self._store(path, request, upsert=bool(claims.get("upsert")))

    def _info(self, request: httpx.Request, path: str) -> httpx.Response:
        if (refused := self._refused_key(request)) is not None:
            return refused
        stored = self.objects.get(path)
        if stored is None:
            return no_such_key()
        body = {
            "id": stored.id,
            "name": path,
            "version": str(uuid.uuid4()),
            "size": len(stored.data),
            "content_type": stored.mimetype,
            "cache_control": "max-age=3600",
            "etag": stored.etag,
            "metadata": None,
            "created_at": iso(stored.created_at),
        }
        headers = {
            "ETag": stored.etag,
            "Last-Modified": format_datetime(stored.updated_at, usegmt=True),
            "Cache-Control": "max-age=3600",
        }
        return httpx.Response(200, json=body, headers=headers)

    def _sign(self, request: httpx.Request) -> httpx.Response:
        if (refused := self._refused_key(request)) is not None:
            return refused
        body = json.loads(request.content)
        expires_in, paths = body.get("expiresIn"), body.get("paths")
        if not isinstance(expires_in, int) or expires_in < 1 or not paths:
            return httpx.Response(
                400,
                json={
                    "statusCode": 400,
                    "code": "FST_ERR_VALIDATION",
                    "error": "Bad Request",
                    "message": "body/paths must NOT have fewer than 1 items",
                },
            )
        items = []
        for path in paths:
            if path in self.objects:
                token = self._token(path, "download", expires_in)
                signed = f"/object/sign/{self.bucket}/{path}?token={token}"
                items.append({"error": None, "path": path, "signedURL": signed})
            else:
                items.append({"error": MISSING_IN_BATCH, "path": path, "signedURL": None})
        return httpx.Response(200, json=items)

    def _signed_download(self, request: httpx.Request, path: str) -> httpx.Response:
        claims = self._verified(request, path, "download")
        if isinstance(claims, httpx.Response):
            return claims
        return self._bytes(path)

    def _download(self, request: httpx.Request, path: str) -> httpx.Response:
        if (refused := self._refused_key(request)) is not None:
            return refused
        return self._bytes(path)

    def _upload(self, request: httpx.Request, path: str) -> httpx.Response:
        if (refused := self._refused_key(request)) is not None:
            return refused
        return self._store(path, request, upsert=request.headers.get("x-upsert") == "true")

    def _bucket(self, request: httpx.Request) -> httpx.Response:
        if (refused := self._refused_key(request)) is not None:
            return refused
        return httpx.Response(200, json=bucket_row(self.bucket))

    def _remove(self, request: httpx.Request) -> httpx.Response:
        if (refused := self._refused_key(request)) is not None:
            return refused
        prefixes = json.loads(request.content).get("prefixes") or []
        if not 1 <= len(prefixes) <= 1000:
            return storage_error(400, "InvalidRequest", "between 1 and 1000 prefixes")
        deleted = []
        for name in prefixes:
            stored = self.objects.pop(name, None)
            if stored is not None:
                deleted.append({"bucket_id": self.bucket, **stored.list_entry(name)})
        return httpx.Response(200, json=deleted)

    def _list(self, request: httpx.Request) -> httpx.Response:
        if (refused := self._refused_key(request)) is not None:
            return refused
        body = json.loads(request.content)
        prefix = body["prefix"]
        if prefix and not prefix.endswith("/"):
            prefix += "/"  # storage: "assuming prefix is always a folder"
        entries: dict[str, dict[str, Any]] = {}
        for name, stored in self.objects.items():
            if not name.startswith(prefix):
                continue
            rest = name[len(prefix) :]
            if "/" in rest:
                folder = rest.split("/", 1)[0]
                entries.setdefault(folder, folder_entry(folder))
            else:
                entries[rest] = stored.list_entry(rest)
        ordered = [entries[name] for name in sorted(entries)]
        offset, limit = body.get("offset", 0), body.get("limit", 100)
        return httpx.Response(200, json=ordered[offset : offset + limit])


def supabase_client() -> Supabase:
    return Supabase(SupabaseConfig(SUPABASE_URL, SERVICE_ROLE_KEY, ANON_KEY))


# --- both backends behind one harness -----------------------------------------------------------


class Harness(Protocol):
    @property
    def backend(self) -> StorageBackend: ...

    async def send(self, target: UploadTarget, data: bytes) -> int:
        """Upload as the client does; the HTTP status it gets."""
        ...

    async def fetch(self, url: str) -> bytes:
        """Download through a signed URL."""
        ...

    def age(self, path: str, seconds: float) -> None:
        """Make an object look written `seconds` ago."""
        ...


@dataclass
class LocalHarness:
    backend: LocalStorageBackend

    def _path_and_params(self, url: str) -> tuple[str, dict[str, str]]:
        parts = urlsplit(url)
        prefix = urlsplit(f"{self.backend.public_url}/{self.backend.bucket}/").path
        assert parts.path.startswith(prefix), url
        params = {key: values[0] for key, values in parse_qs(parts.query).items()}
        return unquote(parts.path.removeprefix(prefix)), params

    async def send(self, target: UploadTarget, data: bytes) -> int:
        # What the /storage/objects route does with the URL (tests/test_storage.py covers the
        # route itself: type sniffing, multipart, streaming limits).
        assert target.method == "PUT"
        path, params = self._path_and_params(target.url)
        try:
            grant = await self.backend.verify_upload(path, params)

            async def body() -> AsyncIterator[bytes]:
                yield data

            await self.backend.receive(path, body(), max_bytes=grant.max_bytes)
        except DomainError as exc:
            return exc.status_code
        return 201

    async def fetch(self, url: str) -> bytes:
        path, params = self._path_and_params(url)
        await self.backend.verify_download(path, params)
        return self.backend.local_file(path).read_bytes()

    def age(self, path: str, seconds: float) -> None:
        then = time.time() - seconds
        os.utime(self.backend.local_file(path), (then, then))


@dataclass
class SupabaseHarness:
    backend: SupabaseStorageBackend
    storage: FakeSupabaseStorage

    async def send(self, target: UploadTarget, data: bytes) -> int:
        # A browser's fetch(upload_url, {method, headers, body}): no key, no session.
        async with httpx.AsyncClient() as browser:
            response = await browser.request(
                target.method, target.url, content=data, headers=target.headers
            )
        if response.is_success:
            return response.status_code
        # Storage refuses with HTTP 400 and the status it means in the body, which is what
        # supabase-js reports to the browser code as `error.statusCode`.
        return int(response.json().get("statusCode", response.status_code))

    async def fetch(self, url: str) -> bytes:
        async with httpx.AsyncClient() as browser:
            response = await browser.get(url)
        assert response.status_code == 200, response.text
        return response.content

    def age(self, path: str, seconds: float) -> None:
        self.storage.age(path, seconds)


@pytest.fixture(params=["local", "supabase"])
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    if request.param == "local":
        yield LocalHarness(
            LocalStorageBackend(
                tmp_path,
                bucket=BUCKET,
                public_url="http://testserver/api/v1/storage/objects",
                secret="contract-test-secret-that-is-long-enough-0123",
            )
        )
        return
    supabase = supabase_client()
    try:
        with respx.mock(assert_all_called=False, assert_all_mocked=True) as router:
            storage = FakeSupabaseStorage(router)
            yield SupabaseHarness(SupabaseStorageBackend(supabase), storage)
    finally:
        await supabase.aclose()


def new_path(
    extension: str = "jpg", *, family: str | None = None, memory: str | None = None
) -> str:
    """A path in the bucket's layout: {family_unit_id}/{memory_id}/{media_id}.{ext}."""
    return f"{family or uuid.uuid4()}/{memory or uuid.uuid4()}/{uuid.uuid4()}.{extension}"


def photo_bytes(size: int = 3000) -> bytes:
    return b"\xff\xd8\xff\xe0" + os.urandom(size - 4)


async def upload(harness: Harness, path: str, data: bytes, mime: str = "image/jpeg") -> None:
    target = await harness.backend.create_upload_url(
        path, mime_type=mime, max_bytes=FILE_SIZE_LIMIT, expires_in=300
    )
    assert await harness.send(target, data) in (200, 201)


# --- the contract --------------------------------------------------------------------------------


async def test_an_upload_through_its_target_is_then_seen_by_stat(harness: Harness):
    path, data = new_path(), photo_bytes()
    assert await harness.backend.stat(path) is None

    target = await harness.backend.create_upload_url(
        path, mime_type="image/jpeg", max_bytes=FILE_SIZE_LIMIT, expires_in=300
    )

    assert target.method == "PUT"
    assert target.headers["Content-Type"] == "image/jpeg"
    assert target.expires_in >= 300
    assert await harness.send(target, data) in (200, 201)
    stat = await harness.backend.stat(path)
    assert stat is not None
    assert (stat.path, stat.size) == (path, len(data))
    assert stat.etag
    assert stat.modified_at.tzinfo is not None
    assert abs((datetime.now(UTC) - stat.modified_at).total_seconds()) < 60
    assert await harness.backend.stat(new_path()) is None


async def test_objects_are_write_once_through_their_upload_url(harness: Harness):
    path, first = new_path(), photo_bytes(2000)
    target = await harness.backend.create_upload_url(
        path, mime_type="image/jpeg", max_bytes=FILE_SIZE_LIMIT, expires_in=300
    )
    assert await harness.send(target, first) in (200, 201)

    again = await harness.send(target, photo_bytes(5000))

    assert again == 409
    stat = await harness.backend.stat(path)
    assert stat is not None and stat.size == len(first)


async def test_every_existing_path_gets_a_working_download_url(harness: Harness):
    family, memory = str(uuid.uuid4()), str(uuid.uuid4())
    objects = {new_path(family=family, memory=memory): photo_bytes(1000 + i) for i in range(3)}
    for path, data in objects.items():
        await upload(harness, path, data)

    urls = await harness.backend.signed_download_urls(list(objects), expires_in=600)

    assert set(objects) <= set(urls)
    for path, data in objects.items():
        assert await harness.fetch(urls[path]) == data
    assert await harness.backend.signed_download_urls([], expires_in=600) == {}


async def test_download_to_copies_the_bytes_and_a_missing_object_is_not_found(
    harness: Harness, tmp_path: Path
):
    path, data = new_path("mp4"), photo_bytes(200_000)
    await upload(harness, path, data, "video/mp4")
    dest = tmp_path / "work" / "original"
    dest.parent.mkdir()

    await harness.backend.download_to(path, dest)

    assert dest.read_bytes() == data
    with pytest.raises(NotFound):
        await harness.backend.download_to(new_path(), tmp_path / "work" / "missing")
    assert not (tmp_path / "work" / "missing").exists()


async def test_upload_file_stores_a_thumbnail_and_replaces_an_earlier_one(
    harness: Harness, tmp_path: Path
):
    path = new_path().replace(".jpg", "_thumb.jpg")
    first, second = tmp_path / "first.jpg", tmp_path / "second.jpg"
    first.write_bytes(photo_bytes(1500))
    second.write_bytes(photo_bytes(2500))

    await harness.backend.upload_file(path, first, "image/jpeg")
    stat = await harness.backend.stat(path)
    assert stat is not None and stat.size == 1500
    await harness.backend.upload_file(path, second, "image/jpeg")

    stat = await harness.backend.stat(path)
    assert stat is not None and stat.size == 2500
    dest = tmp_path / "copy"
    await harness.backend.download_to(path, dest)
    assert dest.read_bytes() == second.read_bytes()


async def test_removed_objects_are_gone_and_missing_ones_are_ignored(harness: Harness):
    family, memory = str(uuid.uuid4()), str(uuid.uuid4())
    kept, removed = new_path(family=family, memory=memory), new_path(family=family, memory=memory)
    for path in (kept, removed):
        await upload(harness, path, photo_bytes())

    await harness.backend.remove([removed, new_path()])
    await harness.backend.remove([])

    assert await harness.backend.stat(removed) is None
    assert await harness.backend.stat(kept) is not None


async def test_list_objects_yields_every_object_older_than_the_cutoff_and_no_other(
    harness: Harness,
):
    family = str(uuid.uuid4())
    memory_a, memory_b = str(uuid.uuid4()), str(uuid.uuid4())
    old = [
        new_path(family=family, memory=memory_a),
        new_path(family=family, memory=memory_b),
        new_path(),  # another family
    ]
    young = [new_path(family=family, memory=memory_a), new_path()]
    for path in old + young:
        await upload(harness, path, photo_bytes(500))
    for path in old:
        harness.age(path, 3 * 3600)

    listed = [
        path async for path in harness.backend.list_objects(datetime.now(UTC) - timedelta(hours=1))
    ]

    assert sorted(listed) == sorted(old)


@pytest.mark.parametrize(
    "path", ["", "../x.jpg", "a/../b.jpg", "/etc/passwd", "a//b.jpg", "a/ b.jpg"]
)
async def test_unsafe_paths_are_refused_before_anything_is_touched(
    harness: Harness, tmp_path: Path, path: str
):
    backend = harness.backend
    src = tmp_path / "thumb.jpg"
    src.write_bytes(photo_bytes())
    attempts = [
        backend.create_upload_url(path, mime_type="image/jpeg", max_bytes=10, expires_in=60),
        backend.stat(path),
        backend.signed_download_urls([path], expires_in=60),
        backend.download_to(path, tmp_path / "out"),
        backend.upload_file(path, src, "image/jpeg"),
        backend.remove([path]),
    ]
    for attempt in attempts:
        with pytest.raises(Invalid):
            await attempt
    if isinstance(harness, SupabaseHarness):
        assert harness.storage.calls == []


async def test_read_chunks_streams_an_object_and_a_missing_one_is_not_found(harness: Harness):
    path, data = new_path("mp4"), photo_bytes(READ_CHUNK_BYTES * 2 + 123)
    await upload(harness, path, data, "video/mp4")

    chunks = [chunk async for chunk in harness.backend.read_chunks(path)]

    assert b"".join(chunks) == data
    assert max(map(len, chunks)) <= READ_CHUNK_BYTES  # never the whole file at once
    with pytest.raises(NotFound):
        async for _ in harness.backend.read_chunks(new_path()):
            pass


@pytest.fixture(params=["local", "supabase"])
async def archives(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StorageBackend]:
    """The archives bucket: zips only, no size limit of its own (the migration's)."""
    if request.param == "local":
        yield LocalStorageBackend(
            tmp_path / "storage",
            bucket="archives",
            public_url="http://testserver/api/v1/storage/objects",
            secret="contract-test-secret-that-is-long-enough-0123",
        )
        return
    supabase = supabase_client()
    try:
        with respx.mock(assert_all_called=False, assert_all_mocked=True) as router:
            FakeSupabaseStorage(
                router,
                bucket="archives",
                allowed_mime_types=frozenset({"application/zip"}),
                size_limit=None,
            )
            yield SupabaseStorageBackend(
                supabase, bucket="archives", scratch_dir=tmp_path / "scratch"
            )
    finally:
        await supabase.aclose()


async def test_a_staged_object_is_stored_when_its_block_ends_and_only_then(
    archives: StorageBackend,
):
    path = f"{uuid.uuid4()}/{uuid.uuid4()}/timeless-archive-2025-02-11.zip"
    # Larger than what is sent in one piece: the Supabase backend streams it.
    data = os.urandom(9 * 1024 * 1024)

    async with archives.staged_object(path, "application/zip") as staged:
        staged.write_bytes(data)
        assert await archives.stat(path) is None

    assert not staged.exists()  # no second copy left behind
    stat = await archives.stat(path)
    assert stat is not None and stat.size == len(data)
    assert b"".join([chunk async for chunk in archives.read_chunks(path)]) == data

    failed = path.replace(".zip", "-2.zip")
    with pytest.raises(RuntimeError):
        async with archives.staged_object(failed, "application/zip") as staged:
            staged.write_bytes(b"half an archive")
            raise RuntimeError("the export broke off")
    assert not staged.exists()
    assert await archives.stat(failed) is None


async def test_local_download_urls_reused_only_for_the_same_address_and_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Signed once per expiry window (docs/performance.md); what a client gets never changes.
    bases = ["http://one.example/objects"]
    backend = LocalStorageBackend(
        tmp_path, bucket=BUCKET, public_url=lambda: bases[0], secret="x" * 40
    )
    signed = []
    real_sign = backend._signer.sign
    monkeypatch.setattr(backend._signer, "sign", lambda *p: signed.append(p) or real_sign(*p))
    paths = ["m/a.jpg", "m/b.jpg"]

    first = await backend.signed_download_urls(paths, expires_in=600)
    again = await backend.signed_download_urls(paths, expires_in=600)
    assert again == first and len(signed) == 2
    assert first["m/a.jpg"].startswith("http://one.example/objects/")

    bases[0] = "http://two.example/objects"  # another Host, as behind a proxy
    other = await backend.signed_download_urls(paths, expires_in=600)
    assert other["m/a.jpg"].startswith("http://two.example/objects/") and len(signed) == 4

    later = time.time() + 3 * 3600  # a later window: a later expiry, signed anew
    monkeypatch.setattr("app.adapters.storage.local.time.time", lambda: later)
    moved = await backend.signed_download_urls(paths, expires_in=600)
    assert moved != other and len(signed) == 6
    with pytest.raises(Invalid):  # a refused path is never taken from what was signed
        await backend.signed_download_urls(["../m/a.jpg"], expires_in=600)


async def test_local_download_urls_kept_per_family_epoch_and_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A URL kept for reuse is the one its family's current epoch signs: when the epoch moves
    # on (a member left), the next call signs anew; the other family's URL is unchanged.
    # However many objects are signed, at most MAX_CACHED_DOWNLOAD_URLS are kept.
    epochs = {"fam-a": 0, "fam-b": 0}

    async def key_epochs(families: Any) -> dict[str, int]:
        return {family: epochs[family] for family in families if family in epochs}

    backend = LocalStorageBackend(
        tmp_path,
        bucket=BUCKET,
        public_url="http://one.example/objects",
        secret="x" * 40,
        key_epochs=key_epochs,
    )
    paths = ["fam-a/m/a.jpg", "fam-b/m/b.jpg"]
    first = await backend.signed_download_urls(paths, expires_in=600)
    epochs["fam-a"] = 1
    moved = await backend.signed_download_urls(paths, expires_in=600)
    assert moved["fam-a/m/a.jpg"] != first["fam-a/m/a.jpg"]
    assert moved["fam-b/m/b.jpg"] == first["fam-b/m/b.jpg"]
    assert moved == await backend.signed_download_urls(paths, expires_in=600)
    params = {"expires": parse_qs(urlsplit(moved["fam-a/m/a.jpg"]).query)["expires"][0]}
    params["signature"] = parse_qs(urlsplit(moved["fam-a/m/a.jpg"]).query)["signature"][0]
    assert await backend.verify_download("fam-a/m/a.jpg", params) > 0
    epochs["fam-a"] = 2  # a link signed before the move is refused
    with pytest.raises(DomainError):
        await backend.verify_download("fam-a/m/a.jpg", params)

    monkeypatch.setattr("app.adapters.storage.local.MAX_CACHED_DOWNLOAD_URLS", 5)
    many = [f"fam-b/m/{index}.jpg" for index in range(12)]
    for start in range(0, 12, 3):
        urls = await backend.signed_download_urls(many[start : start + 3], expires_in=600)
        assert set(urls) == set(many[start : start + 3])
        kept = sum(len(known) for known in backend._download_urls.values())
        assert kept <= 5
    assert await backend.signed_download_urls(many, expires_in=600) == {
        path: (await backend.signed_download_urls([path], expires_in=600))[path] for path in many
    }
