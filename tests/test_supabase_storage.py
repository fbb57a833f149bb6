"""Supabase Storage: what only it does, its failures, and the API on top of it.

The behaviour both backends share is in tests/test_storage_backends.py, which also holds
`FakeSupabaseStorage` and the sources of every request and response shape used here. Here:
the exact requests the backend sends, how each kind of refusal or outage reaches the client
(the matching 4xx, or a 503 that leaves nothing half-made and no secret in a log), and the whole
upload → register → process → feed → delete → sweep path through a second app configured for a
Supabase project (accounts in the mocked GoTrue of tests/supabase_fixtures.py, data in the real
embedded Postgres).
"""

import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import respx
from fastapi import FastAPI

from app.adapters.storage.local import LocalStorageBackend
from app.adapters.storage.supabase import (
    SIGNED_UPLOAD_URL_SECONDS,
    UNAVAILABLE,
    SupabaseStorageBackend,
)
from app.adapters.supabase.client import Supabase, SupabaseConfig
from app.errors import (
    Conflict,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    UnsupportedMediaType,
)
from app.main import create_app
from tests.conftest import make_settings
from tests.helpers import API
from tests.helpers import media_samples as samples
from tests.helpers.factories import Factory, Member
from tests.helpers.supabase_fixtures import (
    ANON_KEY,
    SERVICE_ROLE_KEY,
    SUPABASE_SETTINGS,
    SUPABASE_URL,
    FakeGoTrue,
    SigningKey,
    started,
)
from tests.test_storage_backends import (
    BUCKET,
    STORAGE_URL,
    FakeSupabaseStorage,
    iso,
    new_path,
    no_such_key,
    photo_bytes,
    storage_error,
    supabase_client,
)

SIGNED_DOWNLOAD_PREFIX = f"{STORAGE_URL}/object/sign/{BUCKET}/"


def logged(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)


def assert_no_secret_in(text: str) -> None:
    assert SERVICE_ROLE_KEY not in text
    assert ANON_KEY not in text
    assert "token=" not in text  # signed URLs carry Storage tokens: never logged


# --- the backend on its own ------------------------------------------------------------------


@pytest.fixture
def storage() -> Iterator[FakeSupabaseStorage]:
    # Every request must hit a route: nothing reaches the network by accident.
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as router:
        yield FakeSupabaseStorage(router)


@pytest.fixture
async def backend(storage: FakeSupabaseStorage) -> AsyncIterator[SupabaseStorageBackend]:
    supabase = supabase_client()
    yield SupabaseStorageBackend(supabase)
    await supabase.aclose()


@pytest.mark.parametrize("lifetime", [7200, 60])
async def test_upload_url_is_supabases_own_carries_no_key_and_states_its_real_lifetime(
    backend: SupabaseStorageBackend, storage: FakeSupabaseStorage, lifetime: int
):
    storage.upload_url_seconds = lifetime
    path = new_path()

    target = await backend.create_upload_url(
        path, mime_type="image/jpeg", max_bytes=1000, expires_in=300
    )

    assert target.url.startswith(f"{STORAGE_URL}/object/upload/sign/{BUCKET}/{path}?token=")
    assert target.method == "PUT"
    assert target.headers == {"Content-Type": "image/jpeg", "x-upsert": "false"}
    # Storage decides how long its upload URLs last; the target says what it really is.
    assert lifetime - 5 <= target.expires_in <= lifetime
    assert SERVICE_ROLE_KEY not in target.url + repr(target.headers)
    [sign] = storage.requests["sign_upload"]
    assert sign.headers["apikey"] == SERVICE_ROLE_KEY
    assert sign.headers["authorization"] == f"Bearer {SERVICE_ROLE_KEY}"
    assert sign.headers["x-upsert"] == "false"


async def test_an_upload_token_without_a_readable_expiry_is_taken_for_two_hours(
    backend: SupabaseStorageBackend, storage: FakeSupabaseStorage
):
    path = new_path()
    storage.override["sign_upload"] = httpx.Response(
        200, json={"url": f"/object/upload/sign/{BUCKET}/{path}?token=not-a-jwt"}
    )

    target = await backend.create_upload_url(
        path, mime_type="image/png", max_bytes=1000, expires_in=300
    )

    assert target.expires_in == SIGNED_UPLOAD_URL_SECONDS == 7200
    assert target.url == f"{STORAGE_URL}/object/upload/sign/{BUCKET}/{path}?token=not-a-jwt"


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(200, json={"url": "https://elsewhere.example/upload?token=x"}),
        httpx.Response(200, json={"url": f"/object/upload/sign/{BUCKET}/a/b.jpg"}),  # no token
        httpx.Response(200, json={}),
        httpx.Response(200, text="<html>captive portal</html>"),
    ],
)
async def test_an_unreadable_upload_url_answer_is_503(
    backend: SupabaseStorageBackend, storage: FakeSupabaseStorage, answer: httpx.Response
):
    storage.override["sign_upload"] = answer
    with pytest.raises(ServiceUnavailable):
        await backend.create_upload_url(
            new_path(), mime_type="image/jpeg", max_bytes=1000, expires_in=300
        )


async def test_a_page_is_signed_in_one_request_and_missing_objects_are_left_out(
    backend: SupabaseStorageBackend, storage: FakeSupabaseStorage
):
    stored = [new_path() for _ in range(3)]
    for path in stored:
        storage.put(path, photo_bytes())
    missing = new_path()

    before = int(time.time())
    urls = await backend.signed_download_urls([*stored, missing, stored[0]], expires_in=600)
    after = int(time.time())

    [body] = storage.bodies("sign")
    assert body["paths"] == [*stored, missing]
    # The lifetime asked for at least, rounded up so the URLs expire on a 600 s boundary
    # (docs/api.md, "Conditional requests").
    assert 600 <= body["expiresIn"] <= 1200
    assert any((now + body["expiresIn"]) % 600 == 0 for now in range(before, after + 1))
    assert set(urls) == set(stored)
    for path in stored:
        assert urls[path].startswith(f"{SIGNED_DOWNLOAD_PREFIX}{path}?token=")
        assert SERVICE_ROLE_KEY not in urls[path]


async def test_very_many_paths_are_signed_in_batches(
    backend: SupabaseStorageBackend, storage: FakeSupabaseStorage
):
    backend.batch_size = 2
    paths = [new_path() for _ in range(5)]
    for path in paths:
        storage.put(path, photo_bytes())

    urls = await backend.signed_download_urls(paths, expires_in=60)

    assert [body["paths"] for body in storage.bodies("sign")] == [paths[:2], paths[2:4], paths[4:]]
    assert set(urls) == set(paths)


WRITTEN = datetime(2025, 1, 20, 12, 0, 0, tzinfo=UTC)
CREATED = datetime(2025, 1, 19, 8, 30, 0, tzinfo=UTC)
INFO = {
    "id": str(uuid.uuid4()),
    "name": "f/m/x.jpg",
    "version": str(uuid.uuid4()),
    "size": 1234,
    "content_type": "image/jpeg",
    "cache_control": "max-age=3600",
    "etag": '"0123abcd"',
    "metadata": None,
    "created_at": iso(CREATED),
}


@pytest.mark.parametrize(
    ("body", "headers", "modified"),
    [
        # The current route: no last_modified in the body, Last-Modified in the headers.
        (INFO, {"Last-Modified": format_datetime(WRITTEN, usegmt=True)}, WRITTEN),
        # Versions whose route selects updated_at: it is in the body.
        ({**INFO, "last_modified": iso(WRITTEN)}, {}, WRITTEN),
        # Neither: the creation time (objects are write-once).
        (INFO, {}, CREATED),
    ],
)
async def test_stat_reads_each_shape_of_object_info(
    backend: SupabaseStorageBackend,
    storage: FakeSupabaseStorage,
    body: dict[str, Any],
    headers: dict[str, str],
    modified: datetime,
):
    storage.override["info"] = httpx.Response(200, json=body, headers=headers)

    stat = await backend.stat("f/m/x.jpg")

    assert stat is not None
    assert (stat.path, stat.size, stat.etag, stat.modified_at) == (
        "f/m/x.jpg",
        1234,
        '"0123abcd"',
        modified,
    )
    [request] = storage.requests["info"]
    assert request.url == f"{STORAGE_URL}/object/info/authenticated/{BUCKET}/f/m/x.jpg"


# (answer, what stat gives, what the log must say). None: "no such object", as the built-in one.
REFUSALS: dict[str, tuple[httpx.Response | Exception, type[Exception] | None, str | None]] = {
    "missing object (HTTP 400, real status in the body)": (no_such_key(), None, None),
    "missing object (HTTP 404)": (
        httpx.Response(
            404, json={"statusCode": "404", "error": "not_found", "message": "Object not found"}
        ),
        None,
        None,
    ),
    "no such bucket": (
        storage_error(404, "NoSuchBucket", "Bucket not found", error="Bucket not found"),
        ServiceUnavailable,
        "no bucket",
    ),
    "gateway refuses the key": (
        httpx.Response(401, json={"message": "Invalid API key"}),
        ServiceUnavailable,
        "SUPABASE_SERVICE_ROLE_KEY",
    ),
    "storage refuses the JWT": (
        storage_error(400, "InvalidJWT", "invalid signature"),
        ServiceUnavailable,
        "SUPABASE_SERVICE_ROLE_KEY",
    ),
    "unknown route (wrong SUPABASE_URL path)": (
        httpx.Response(404, json={"message": "no Route matched with those values"}),
        ServiceUnavailable,
        "Supabase Storage failed",
    ),
    "internal error": (
        storage_error(500, "InternalError", "Internal server error"),
        ServiceUnavailable,
        "Supabase Storage failed",
    ),
    "a 5xx, whatever its body says": (
        httpx.Response(500, json={"statusCode": "404", "code": "NoSuchKey", "error": "not_found"}),
        ServiceUnavailable,
        "Supabase Storage failed",
    ),
    "bad gateway page": (
        httpx.Response(502, text="<html>502 Bad Gateway</html>"),
        ServiceUnavailable,
        "Supabase Storage failed",
    ),
    "database connection limit (HTTP 400, 503 in the body)": (
        storage_error(503, "DatabaseConnectionLimit", "maximum number of connections"),
        ServiceUnavailable,
        "Supabase Storage failed",
    ),
    "database timeout (544)": (
        httpx.Response(
            544,
            json={
                "statusCode": "544",
                "code": "DatabaseTimeout",
                "error": "DatabaseTimeout",
                "message": "The connection to the database timed out",
            },
        ),
        ServiceUnavailable,
        "Supabase Storage failed",
    ),
    "too many connections": (
        httpx.Response(
            429,
            json={
                "statusCode": "429",
                "error": "too_many_connections",
                "code": "SlowDown",
                "message": "Too many connections issued to the database",
            },
        ),
        ServiceUnavailable,
        "rate limit",
    ),
    "connect timeout": (httpx.ConnectTimeout("timed out"), ServiceUnavailable, "unreachable"),
    "read timeout": (httpx.ReadTimeout("timed out"), ServiceUnavailable, "unreachable"),
    "connection refused": (
        httpx.ConnectError("[Errno 111] Connection refused"),
        ServiceUnavailable,
        "unreachable",
    ),
    "connection dropped": (
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        ServiceUnavailable,
        "unreachable",
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS))
async def test_each_kind_of_refusal_and_outage_gets_its_meaning(
    backend: SupabaseStorageBackend,
    storage: FakeSupabaseStorage,
    caplog: pytest.LogCaptureFixture,
    case: str,
):
    answer, expected, log_says = REFUSALS[case]
    storage.override["info"] = answer

    with caplog.at_level(logging.INFO):
        if expected is None:
            assert await backend.stat(new_path()) is None
        else:
            with pytest.raises(expected) as raised:
                await backend.stat(new_path())
            assert raised.value.detail == UNAVAILABLE  # type: ignore[attr-defined]
            assert raised.value.headers == {"Retry-After": "5"}  # type: ignore[attr-defined]

    if log_says:
        assert log_says in logged(caplog)
    assert_no_secret_in(logged(caplog))


@pytest.mark.parametrize(
    "operation",
    ["create_upload_url", "stat", "sign", "download_to", "upload_file", "remove", "list"],
)
async def test_every_operation_is_503_while_supabase_is_unreachable(
    backend: SupabaseStorageBackend,
    storage: FakeSupabaseStorage,
    tmp_path: Path,
    operation: str,
):
    storage.override["*"] = httpx.ConnectTimeout("timed out")
    src = tmp_path / "thumb.jpg"
    src.write_bytes(photo_bytes())
    path = new_path()
    calls = {
        "create_upload_url": lambda: backend.create_upload_url(
            path, mime_type="image/jpeg", max_bytes=10, expires_in=60
        ),
        "stat": lambda: backend.stat(path),
        "sign": lambda: backend.signed_download_urls([path], expires_in=60),
        "download_to": lambda: backend.download_to(path, tmp_path / "out"),
        "upload_file": lambda: backend.upload_file(path, src, "image/jpeg"),
        "remove": lambda: backend.remove([path]),
        "list": lambda: anext(aiter(backend.list_objects(datetime.now(UTC)))),
    }

    with pytest.raises(ServiceUnavailable):
        await calls[operation]()

    assert storage.calls, "the request was attempted"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (
            storage_error(413, "EntityTooLarge", "The object exceeded the maximum allowed size"),
            PayloadTooLarge,
        ),
        (
            storage_error(415, "InvalidMimeType", "mime type image/tiff is not supported"),
            UnsupportedMediaType,
        ),
        (storage_error(409, "KeyAlreadyExists", "The resource already exists"), Conflict),
    ],
)
async def test_refusals_of_an_upload_keep_their_meaning(
    backend: SupabaseStorageBackend,
    storage: FakeSupabaseStorage,
    tmp_path: Path,
    answer: httpx.Response,
    expected: type[Exception],
):
    storage.override["upload"] = answer
    src = tmp_path / "thumb.jpg"
    src.write_bytes(photo_bytes())

    with pytest.raises(expected):
        await backend.upload_file(new_path(), src, "image/jpeg")


async def test_thumbnails_are_uploaded_with_the_service_key_and_upsert(
    backend: SupabaseStorageBackend, storage: FakeSupabaseStorage, tmp_path: Path
):
    src, path = tmp_path / "thumb.jpg", new_path()
    src.write_bytes(photo_bytes(777))

    await backend.upload_file(path, src, "image/jpeg")

    [request] = storage.requests["upload"]
    assert request.url == f"{STORAGE_URL}/object/{BUCKET}/{path}"
    assert request.headers["x-upsert"] == "true"
    assert request.headers["content-type"] == "image/jpeg"
    assert request.headers["apikey"] == SERVICE_ROLE_KEY
    assert storage.objects[path].data == src.read_bytes()


async def test_a_large_file_is_streamed_up_with_its_length(
    backend: SupabaseStorageBackend,
    storage: FakeSupabaseStorage,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    # An archive of gigabytes must not be read into memory: above 8 MiB the body is a stream,
    # sent with Content-Length (Storage wants the length; no chunked encoding).
    storage.override["upload"] = httpx.Response(200, json={"Key": "k", "Id": "i"})
    src = tmp_path / "archive.bin"
    data = photo_bytes(9 * 1024 * 1024)
    src.write_bytes(data)

    def whole_file(self: Path) -> bytes:
        raise AssertionError(f"{self} was read whole")

    monkeypatch.setattr(Path, "read_bytes", whole_file)
    await backend.upload_file(new_path(), src, "image/jpeg")

    [request] = storage.requests["upload"]
    assert request.headers["content-length"] == str(len(data))
    assert "transfer-encoding" not in request.headers
    assert request.content == data


async def test_downloads_stream_from_the_authenticated_route(
    backend: SupabaseStorageBackend, storage: FakeSupabaseStorage, tmp_path: Path
):
    path, data = new_path("mp4"), photo_bytes(3 * 1024 * 1024 + 17)
    storage.put(path, data, "video/mp4")

    await backend.download_to(path, tmp_path / "original")

    assert (tmp_path / "original").read_bytes() == data
    [request] = storage.requests["download"]
    assert request.url == f"{STORAGE_URL}/object/authenticated/{BUCKET}/{path}"


class _CutOff(httpx.AsyncByteStream):
    """A body that breaks off after its first megabyte, as a dropped connection does."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b"\x00" * 1024 * 1024
        raise httpx.ReadError("connection reset by peer")


async def test_a_download_cut_off_midway_is_503_and_leaves_no_partial_file(
    backend: SupabaseStorageBackend, storage: FakeSupabaseStorage, tmp_path: Path
):
    storage.override["download"] = httpx.Response(200, stream=_CutOff())
    dest = tmp_path / "original"

    with pytest.raises(ServiceUnavailable):
        await backend.download_to(new_path(), dest)

    assert not dest.exists()


async def test_a_missing_object_is_not_found_for_the_media_processor(
    backend: SupabaseStorageBackend, tmp_path: Path
):
    with pytest.raises(NotFound):
        await backend.download_to(new_path(), tmp_path / "original")
    assert not (tmp_path / "original").exists()


async def test_removal_sends_exact_names_in_batches(
    backend: SupabaseStorageBackend, storage: FakeSupabaseStorage
):
    backend.batch_size = 2
    paths = [new_path() for _ in range(3)]
    for path in paths:
        storage.put(path, photo_bytes())
    bystander = paths[0] + ".jpg"  # shares the prefix: must stay
    storage.put(bystander, photo_bytes())

    await backend.remove([*paths, paths[1]])

    assert storage.bodies("remove") == [{"prefixes": paths[:2]}, {"prefixes": paths[2:]}]
    assert set(storage.objects) == {bystander}
    assert all(r.url == f"{STORAGE_URL}/object/{BUCKET}" for r in storage.requests["remove"])


async def test_listing_walks_every_folder_page_by_page(
    backend: SupabaseStorageBackend, storage: FakeSupabaseStorage
):
    backend.list_page_size = 2
    family = str(uuid.uuid4())
    memories = [str(uuid.uuid4()) for _ in range(3)]
    old = [new_path(family=family, memory=memory) for memory in memories for _ in range(3)]
    old.append(new_path())  # a second family
    young = new_path(family=family, memory=memories[0])
    for path in old:
        storage.put(path, photo_bytes(100), age=3 * 86400)
    storage.put(young, photo_bytes(100))
    # Not a name the backend makes (uploaded in the dashboard): never offered for removal.
    storage.put(f"{family}/{memories[0]}/holiday photo.jpg", photo_bytes(100), age=3 * 86400)

    listed = [p async for p in backend.list_objects(datetime.now(UTC) - timedelta(days=1))]

    assert sorted(listed) == sorted(old)
    bodies = storage.bodies("list")
    assert {body["prefix"] for body in bodies} == {
        "",
        f"{family}/",
        *(f"{family}/{memory}/" for memory in memories),
        f"{old[-1].split('/')[0]}/",
        f"{old[-1].rsplit('/', 1)[0]}/",
    }
    first_memory = [b["offset"] for b in bodies if b["prefix"] == f"{family}/{memories[0]}/"]
    assert first_memory == [0, 2, 4]  # five entries, two per page
    assert all(
        b["limit"] == 2 and b["sortBy"] == {"column": "name", "order": "asc"} for b in bodies
    )


async def test_the_backend_talks_through_the_shared_http_client():
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return no_such_key()

    shared = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    supabase = Supabase(SupabaseConfig(SUPABASE_URL, SERVICE_ROLE_KEY, ANON_KEY), http=shared)
    try:
        assert await SupabaseStorageBackend(supabase).stat(new_path()) is None
    finally:
        await supabase.aclose()
    assert len(seen) == 1
    assert shared.is_closed


# --- through the API, on an app configured for Supabase -------------------------------------------


@pytest.fixture(scope="module")
def signing_key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture(scope="module")
async def supabase_app(migrated_database_url: str, data_dir: Path) -> AsyncIterator[FastAPI]:
    """A second app on the same database, configured for a Supabase project."""
    application = create_app(make_settings(migrated_database_url, data_dir, **SUPABASE_SETTINGS))
    async with started(application):
        yield application


@pytest.fixture(scope="module")
async def api(supabase_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=supabase_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


@dataclass
class Project:
    gotrue: FakeGoTrue
    storage: FakeSupabaseStorage


@pytest.fixture
def project(pg: asyncpg.Pool, signing_key: SigningKey) -> Iterator[Project]:
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as router:
        yield Project(FakeGoTrue(router, pg, signing_key), FakeSupabaseStorage(router))


@pytest.fixture
async def draft(api: httpx.AsyncClient, project: Project) -> tuple[Member, dict[str, Any]]:
    family = await Factory(api).family(["adult"])
    memory = await samples.create_memory(api, family.adult, status="published")
    return family.adult, memory


async def ticket_for(
    api: httpx.AsyncClient, member: Member, memory_id: str, mime: str = "image/jpeg"
) -> dict[str, Any]:
    response = await samples.upload_url(api, member, memory_id, mime)
    assert response.status_code == 200, response.text
    ticket: dict[str, Any] = response.json()
    return ticket


async def send_to_supabase(ticket: dict[str, Any], data: bytes) -> httpx.Response:
    """What the browser does with the ticket: straight to Supabase, no bearer token, no key."""
    async with httpx.AsyncClient() as browser:
        return await browser.request(
            ticket["method"], ticket["upload_url"], content=data, headers=ticket["headers"]
        )


async def media_rows(pg: asyncpg.Pool, media_id: str) -> int:
    return await pg.fetchval(
        "select count(*) from public.memory_media where id = $1", uuid.UUID(media_id)
    )


async def test_upload_register_process_and_feed_on_supabase_storage(
    api: httpx.AsyncClient, project: Project, draft
):
    adult, memory = draft
    data = samples.jpeg((600, 400))

    ticket = await ticket_for(api, adult, memory["id"])
    assert ticket["upload_url"].startswith(
        f"{STORAGE_URL}/object/upload/sign/{BUCKET}/{ticket['storage_path']}?token="
    )
    assert ticket["headers"] == {"Content-Type": "image/jpeg", "x-upsert": "false"}
    assert ticket["expires_in"] == pytest.approx(7200, abs=5)
    assert (await send_to_supabase(ticket, data)).status_code == 200

    registered = await samples.register(api, adult, memory["id"], ticket, mime_type="image/jpeg")
    assert registered.status_code == 201, registered.text
    assert registered.json()["file_size"] == len(data)  # from Storage's info, not the client
    done = await samples.wait_for_media(api, adult, memory["id"], ticket["media_id"])
    assert done["processing_status"] == "completed", done["metadata"]
    assert (done["width"], done["height"]) == (400, 600)
    thumbnail = project.storage.objects[done["thumbnail_path"]]
    assert thumbnail.mimetype == "image/jpeg"
    assert thumbnail.data[:3] == b"\xff\xd8\xff"

    signing_before = project.storage.count("sign")
    feed = await api.get(f"{API}/feed", params={"user_id": adult.id}, headers=adult.headers)
    assert feed.status_code == 200, feed.text
    assert project.storage.count("sign") == signing_before + 1  # one request for the page
    [item] = [i for i in feed.json()["items"] if i["id"] == memory["id"]]
    [media] = item["media"]
    assert media["url"].startswith(f"{SIGNED_DOWNLOAD_PREFIX}{ticket['storage_path']}?token=")
    assert media["thumbnail_url"].startswith(f"{SIGNED_DOWNLOAD_PREFIX}{done['thumbnail_path']}")
    async with httpx.AsyncClient() as browser:
        assert (await browser.get(media["url"])).content == data
        assert (await browser.get(media["thumbnail_url"])).content == thumbnail.data

    thumb_url = await api.get(
        f"{API}/storage/media/{ticket['media_id']}/url",
        params={"variant": "thumbnail"},
        headers=adult.headers,
    )
    assert thumb_url.status_code == 200, thumb_url.text
    assert thumb_url.json()["access_url"].startswith(SIGNED_DOWNLOAD_PREFIX)
    assert SERVICE_ROLE_KEY not in feed.text + thumb_url.text


FAILURES: dict[str, httpx.Response | Exception] = {
    "connect timeout": httpx.ConnectTimeout("timed out"),
    "read timeout": httpx.ReadTimeout("timed out"),
    "internal error": storage_error(500, "InternalError", "Internal server error"),
    "bad gateway": httpx.Response(502, text="<html>502 Bad Gateway</html>"),
    "database unavailable": storage_error(503, "DatabaseConnectionLimit", "too many clients"),
}


@pytest.mark.parametrize("failure", list(FAILURES))
async def test_registration_while_storage_is_down_is_503_and_creates_nothing(
    api: httpx.AsyncClient, project: Project, draft, pg: asyncpg.Pool, failure: str
):
    adult, memory = draft
    ticket = await ticket_for(api, adult, memory["id"])
    assert (await send_to_supabase(ticket, samples.jpeg())).status_code == 200
    project.storage.override["info"] = FAILURES[failure]

    registered = await samples.register(api, adult, memory["id"], ticket, mime_type="image/jpeg")

    assert registered.status_code == 503, registered.text
    assert registered.json()["detail"] == UNAVAILABLE
    assert registered.json()["code"] == "service_unavailable"
    assert registered.headers["retry-after"] == "5"
    assert await media_rows(pg, ticket["media_id"]) == 0

    # Back up: the same upload registers.
    del project.storage.override["info"]
    again = await samples.register(api, adult, memory["id"], ticket, mime_type="image/jpeg")
    assert again.status_code == 201, again.text


async def test_registering_a_file_never_uploaded_is_400_as_with_built_in_storage(
    api: httpx.AsyncClient, project: Project, draft, pg: asyncpg.Pool
):
    adult, memory = draft
    ticket = await ticket_for(api, adult, memory["id"])  # and nothing sent

    registered = await samples.register(api, adult, memory["id"], ticket, mime_type="image/jpeg")

    assert registered.status_code == 400, registered.text
    assert "No uploaded file at storage_path" in registered.json()["detail"]
    assert await media_rows(pg, ticket["media_id"]) == 0
    assert project.storage.count("info") == 1


async def test_an_object_gone_before_processing_fails_the_media_as_missing(
    api: httpx.AsyncClient, project: Project, draft
):
    adult, memory = draft
    ticket = await ticket_for(api, adult, memory["id"])
    assert (await send_to_supabase(ticket, samples.jpeg())).status_code == 200
    project.storage.override["download"] = no_such_key()

    registered = await samples.register(api, adult, memory["id"], ticket, mime_type="image/jpeg")
    assert registered.status_code == 201, registered.text
    done = await samples.wait_for_media(api, adult, memory["id"], ticket["media_id"])

    assert done["processing_status"] == "failed"
    assert done["metadata"]["error"] == "the uploaded file is missing"


async def test_upload_url_and_feed_while_storage_is_down_are_503(
    api: httpx.AsyncClient, project: Project, draft, caplog: pytest.LogCaptureFixture
):
    adult, memory = draft
    ticket = await ticket_for(api, adult, memory["id"])
    assert (await send_to_supabase(ticket, samples.jpeg())).status_code == 200
    registered = await samples.register(api, adult, memory["id"], ticket, mime_type="image/jpeg")
    assert registered.status_code == 201, registered.text
    project.storage.override["*"] = httpx.ConnectError("[Errno 111] Connection refused")

    with caplog.at_level(logging.INFO):
        upload_url = await samples.upload_url(api, adult, memory["id"], "image/png")
        feed = await api.get(f"{API}/feed", headers=adult.headers)

    for response in (upload_url, feed):
        assert response.status_code == 503, response.text
        assert response.json()["detail"] == UNAVAILABLE
    assert "Supabase Storage unreachable" in logged(caplog)
    assert_no_secret_in(logged(caplog))


async def test_a_refused_key_is_503_and_the_log_names_the_setting_not_the_key(
    api: httpx.AsyncClient, project: Project, draft, caplog: pytest.LogCaptureFixture
):
    adult, memory = draft
    project.storage.override["*"] = httpx.Response(401, json={"message": "Invalid API key"})

    with caplog.at_level(logging.INFO):
        response = await samples.upload_url(api, adult, memory["id"], "image/jpeg")

    assert response.status_code == 503
    assert SERVICE_ROLE_KEY not in response.text
    assert "check SUPABASE_SERVICE_ROLE_KEY" in logged(caplog)
    assert_no_secret_in(logged(caplog))


async def test_deleting_a_memory_removes_its_objects_from_supabase(
    api: httpx.AsyncClient, project: Project, draft
):
    adult, memory = draft
    ticket = await ticket_for(api, adult, memory["id"])
    assert (await send_to_supabase(ticket, samples.jpeg())).status_code == 200
    await samples.register(api, adult, memory["id"], ticket, mime_type="image/jpeg")
    done = await samples.wait_for_media(api, adult, memory["id"], ticket["media_id"])
    paths = {done["storage_path"], done["thumbnail_path"]}
    assert paths <= set(project.storage.objects)

    response = await api.delete(f"{API}/memories/{memory['id']}", headers=adult.headers)

    assert response.status_code == 204
    assert not paths & set(project.storage.objects)
    # Every derivative the original may have goes with it, made or not (a processor still
    # running could be writing one).
    stem = done["storage_path"].rsplit(".", 1)[0]
    derived = {f"{stem}{suffix}" for suffix in ("_thumb.jpg", "_preview.jpg", "_play.mp4")}
    assert set(project.storage.bodies("remove")[-1]["prefixes"]) == paths | derived
    assert not derived & set(project.storage.objects)


async def test_files_left_by_a_removal_during_an_outage_go_with_the_orphan_sweep(
    api: httpx.AsyncClient,
    supabase_app: FastAPI,
    project: Project,
    draft,
    caplog: pytest.LogCaptureFixture,
):
    adult, memory = draft
    storage = project.storage
    kept_ticket = await ticket_for(api, adult, memory["id"])
    assert (await send_to_supabase(kept_ticket, samples.jpeg())).status_code == 200
    await samples.register(api, adult, memory["id"], kept_ticket, mime_type="image/jpeg")
    kept = await samples.wait_for_media(api, adult, memory["id"], kept_ticket["media_id"])
    other = await samples.create_memory(api, adult)
    gone_ticket = await ticket_for(api, adult, other["id"])
    assert (await send_to_supabase(gone_ticket, samples.jpeg())).status_code == 200
    await samples.register(api, adult, other["id"], gone_ticket, mime_type="image/jpeg")
    gone = await samples.wait_for_media(api, adult, other["id"], gone_ticket["media_id"])
    abandoned = await ticket_for(api, adult, memory["id"])  # uploaded, never registered
    fresh = await ticket_for(api, adult, memory["id"])  # uploaded a moment ago
    for ticket in (abandoned, fresh):
        assert (await send_to_supabase(ticket, samples.jpeg())).status_code == 200

    storage.override["remove"] = httpx.ReadTimeout("timed out")
    with caplog.at_level(logging.INFO):
        deleted = await api.delete(f"{API}/memories/{other['id']}", headers=adult.headers)
    assert deleted.status_code == 204  # the memory is gone; its files wait for the sweep
    assert "could not remove stored files" in logged(caplog)
    assert_no_secret_in(logged(caplog))
    left_over = {gone["storage_path"], gone["thumbnail_path"]}
    assert left_over <= set(storage.objects)

    del storage.override["remove"]
    referenced = {kept["storage_path"], kept["thumbnail_path"]}
    for path in {*left_over, *referenced, abandoned["storage_path"]}:
        storage.age(path, 2 * 86400)
    removed = await supabase_app.state.context.media.sweep_orphans()

    assert removed == 3
    assert not (left_over | {abandoned["storage_path"]}) & set(storage.objects)
    assert referenced | {fresh["storage_path"]} <= set(storage.objects)


async def test_the_built_in_object_routes_do_not_exist_with_supabase_storage(
    api: httpx.AsyncClient, project: Project
):
    url = f"{API}/storage/objects/{BUCKET}/{new_path()}"
    query = {"expires": "9999999999", "type": "image/jpeg", "max_bytes": "10", "signature": "x"}

    put = await api.put(
        url, params=query, content=b"\xff\xd8\xff", headers={"Content-Type": "image/jpeg"}
    )
    get = await api.get(url, params={"expires": "9999999999", "signature": "x"})

    assert (put.status_code, get.status_code) == (404, 404)
    assert project.storage.calls == []


def test_supabase_settings_select_supabase_storage(supabase_app: FastAPI, app: FastAPI):
    storage = supabase_app.state.context.storage
    assert isinstance(storage, SupabaseStorageBackend)
    assert storage.bucket == BUCKET
    assert isinstance(app.state.context.storage, LocalStorageBackend)


# --- a missing bucket (review item 15) ---------------------------------------------------------

# What the real Storage server first answered for a missing bucket: writing an object breaks
# the objects → buckets foreign key, reported as RelatedResourceNotFound (codes.ts).
RELATED_RESOURCE_MISSING = storage_error(
    404, "InvalidRequest", "The related resource does not exist"
)
NO_SUCH_BUCKET = storage_error(404, "NoSuchBucket", "Bucket not found", error="Bucket not found")


@pytest.mark.parametrize("operation", ["upload", "sign_upload", "info"])
async def test_a_missing_bucket_answered_as_a_missing_related_resource_is_named(
    backend: SupabaseStorageBackend,
    storage: FakeSupabaseStorage,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
    operation: str,
):
    storage.override[operation] = RELATED_RESOURCE_MISSING
    thumbnail = tmp_path / "t.jpg"
    thumbnail.write_bytes(photo_bytes())
    calls = {
        "upload": lambda: backend.upload_file(new_path(), thumbnail, "image/jpeg"),
        "sign_upload": lambda: backend.create_upload_url(
            new_path(), mime_type="image/jpeg", max_bytes=1, expires_in=60
        ),
        "info": lambda: backend.stat(new_path()),
    }

    with caplog.at_level(logging.INFO), pytest.raises(ServiceUnavailable):
        await calls[operation]()

    assert "no bucket 'memories'" in logged(caplog)
    assert "SUPABASE_STORAGE_BUCKET" in logged(caplog)


async def test_an_invalid_request_that_is_not_a_missing_resource_is_not_called_one(
    backend: SupabaseStorageBackend, storage: FakeSupabaseStorage, caplog: pytest.LogCaptureFixture
):
    storage.override["info"] = storage_error(400, "InvalidRequest", "Metadata header is required")
    with caplog.at_level(logging.INFO), pytest.raises(ServiceUnavailable):
        await backend.stat(new_path())
    assert "no bucket" not in logged(caplog)


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        (None, None),
        (NO_SUCH_BUCKET, "no bucket 'memories'"),
        (RELATED_RESOURCE_MISSING, "no bucket 'memories'"),
        (httpx.Response(401, json={"message": "Invalid API key"}), "SUPABASE_SERVICE_ROLE_KEY"),
    ],
    ids=["present", "no-such-bucket", "related-resource", "key-refused"],
)
async def test_the_bucket_check_names_what_to_fix(
    backend: SupabaseStorageBackend, storage: FakeSupabaseStorage, answer, problem
):
    if answer is not None:
        storage.override["bucket"] = answer
    found = await backend.configuration_problem()
    assert found is None if problem is None else problem in found
    assert storage.requests["bucket"][0].url == f"{STORAGE_URL}/bucket/{BUCKET}"


async def test_the_bucket_check_while_storage_is_unreachable_is_an_outage_not_a_problem(
    backend: SupabaseStorageBackend, storage: FakeSupabaseStorage
):
    storage.override["bucket"] = httpx.ConnectError("refused")
    with pytest.raises(ServiceUnavailable):
        await backend.configuration_problem()


async def test_a_missing_bucket_is_logged_at_start_up_and_fails_readiness(
    migrated_database_url: str, data_dir: Path, caplog: pytest.LogCaptureFixture
):
    application = create_app(make_settings(migrated_database_url, data_dir, **SUPABASE_SETTINGS))
    with caplog.at_level(logging.ERROR):
        async with started(application, bucket=NO_SUCH_BUCKET):
            assert "Supabase Storage has no bucket 'memories'" in logged(caplog)
            transport = httpx.ASGITransport(app=application)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
                with respx.mock(assert_all_called=False, assert_all_mocked=True) as router:
                    storage = FakeSupabaseStorage(router, bucket="another-bucket")
                    missing = await c.get("/health/ready")
                    storage.bucket = BUCKET  # someone ran the migrations
                    present = await c.get("/health/ready")

    assert missing.status_code == 503, missing.text
    assert "no bucket 'memories'" in missing.json()["storage"]
    assert present.status_code == 200, present.text


async def test_readiness_stays_up_while_storage_is_only_unreachable(
    api: httpx.AsyncClient, project: Project
):
    project.storage.override["bucket"] = httpx.ConnectError("refused")
    response = await api.get("/health/ready")
    assert response.status_code == 200, response.text
