"""Built-in storage: upload URLs, signed uploads and downloads, access URLs, limits, cleanup.

Every refused upload must give a clear 4xx and leave nothing behind: no file in the bucket
(not even a partial one) and no media row.
"""

import os
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from app.errors import Invalid
from app.main import create_app
from tests.conftest import make_settings
from tests.helpers import media_samples as samples
from tests.helpers.media_samples import API

MiB = 1024 * 1024


@pytest.fixture
def bucket_dir(settings) -> Path:
    return settings.storage_root / "memories"


def files_under(folder: Path) -> set[Path]:
    return {path for path in folder.rglob("*") if path.is_file()} if folder.exists() else set()


async def media_rows(pg, media_id: str) -> int:
    return await pg.fetchval(
        "select count(*) from public.memory_media where id = $1", uuid.UUID(media_id)
    )


async def new_ticket(client, member, memory_id: str, mime: str = "image/jpeg") -> dict[str, Any]:
    response = await samples.upload_url(client, member, memory_id, mime)
    assert response.status_code == 200, response.text
    ticket: dict[str, Any] = response.json()
    return ticket


def query_of(url: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {**query_of(url), **changes}
    return f"{parts.scheme}://{parts.netloc}{parts.path}?{urlencode(query)}"


@pytest.fixture
async def draft(client, factory):
    family = await factory.family(["adult", "teen"])
    memory = await samples.create_memory(client, family.adult)
    return family, memory


# Upload URLs ---------------------------------------------------------------------------------


async def test_upload_url_is_bound_to_a_server_built_path(client, draft):
    family, memory = draft
    response = await samples.upload_url(
        client, family.adult, memory["id"], "video/quicktime", file_name="../../etc/passwd"
    )
    assert response.status_code == 200, response.text
    ticket = response.json()
    # The client's file name never reaches the path.
    assert ticket["storage_path"] == f"{family.id}/{memory['id']}/{ticket['media_id']}.mov"
    assert ticket["max_bytes"] == 50 * MiB
    assert set(query_of(ticket["upload_url"])) == {"expires", "type", "max_bytes", "signature"}


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"mime_type": "text/html"}, 415, "Unsupported file type"),
        ({"mime_type": "image/svg+xml"}, 415, "Unsupported file type"),
        ({"mime_type": "image/jpeg", "file_size": 50 * MiB + 1}, 413, "at most 52428800 bytes"),
        ({"mime_type": "image/jpeg", "file_size": 0}, 422, None),
        ({"mime_type": "image/jpeg", "file_name": ""}, 422, None),
    ],
)
async def test_upload_url_refuses_bad_requests(client, draft, body, status, detail):
    family, memory = draft
    payload = {"memory_id": memory["id"], "file_name": "a.jpg", **body}
    response = await client.post(
        f"{API}/storage/upload-url", json=payload, headers=family.adult.headers
    )
    assert response.status_code == status, response.text
    if detail:
        assert detail in response.json()["detail"]


async def test_upload_url_needs_a_memory_the_caller_may_edit(client, factory):
    family = await factory.family(["adult", "teen", "child", "grandparent"])
    teen, child, grandparent = (family.by_role(r) for r in ("teen", "child", "grandparent"))
    adults_published = await samples.create_memory(client, family.adult, status="published")
    teens_draft = await samples.create_memory(client, teen)

    async def status_for(member, memory_id):
        return (await samples.upload_url(client, member, memory_id, "image/png")).status_code

    assert await status_for(teen, adults_published["id"]) == 403
    assert await status_for(child, adults_published["id"]) == 403
    assert await status_for(grandparent, adults_published["id"]) == 200
    assert await status_for(family.adult, teens_draft["id"]) == 404  # drafts are private
    assert await status_for(teen, teens_draft["id"]) == 200
    assert await status_for(teen, str(uuid.uuid4())) == 404


# Refused uploads leave nothing behind ----------------------------------------------------------


BAD_UPLOADS: dict[str, tuple[str, bytes, int, str]] = {
    "png-declared-as-jpeg": (
        "image/jpeg",
        samples.png_with_alpha(),
        415,
        "content is image/png, not image/jpeg",
    ),
    "script-declared-as-jpeg": ("image/jpeg", samples.SCRIPT, 415, "not a supported photo"),
    "short-script": ("image/jpeg", b"<script>alert(1)</script>", 415, "not a supported photo"),
    "zero-bytes": ("image/jpeg", b"", 400, "The file is empty"),
    "decompression-bomb": ("image/png", samples.png_bomb(20_000, 20_000), 413, "too many pixels"),
    "truncated-jpeg-header": ("image/jpeg", b"\xff\xd8\xff\xe0" + b"\x00" * 100, 400, "corrupt"),
}


@pytest.mark.parametrize("case", list(BAD_UPLOADS))
async def test_bad_uploads_are_refused_and_nothing_is_kept(client, draft, pg, bucket_dir, case):
    mime, data, status, detail = BAD_UPLOADS[case]
    family, memory = draft
    ticket = await new_ticket(client, family.adult, memory["id"], mime)
    before = files_under(bucket_dir)

    response = await samples.send_bytes(client, ticket, data)

    assert response.status_code == status, response.text
    assert detail in response.json()["detail"]
    assert files_under(bucket_dir) == before
    registered = await samples.register(client, family.adult, memory["id"], ticket, mime_type=mime)
    assert registered.status_code == 400
    assert "upload the file first" in registered.json()["detail"]
    assert await media_rows(pg, ticket["media_id"]) == 0


async def test_a_body_over_the_limit_is_refused_while_streaming(client, draft, pg, bucket_dir):
    family, memory = draft
    ticket = await new_ticket(client, family.adult, memory["id"], "image/jpeg")
    before = files_under(bucket_dir)
    head = samples.jpeg((64, 64))

    async def fifty_mib_and_one_byte():
        # No Content-Length: the limit must hold while the bytes stream in.
        yield head
        sent = len(head)
        while sent <= 50 * MiB:
            chunk = b"\x00" * min(MiB, 50 * MiB + 1 - sent)
            sent += len(chunk)
            yield chunk

    response = await client.put(
        ticket["upload_url"], content=fifty_mib_and_one_byte(), headers=ticket["headers"]
    )

    assert response.status_code == 413, response.text
    assert "larger than 52428800 bytes" in response.json()["detail"]
    assert files_under(bucket_dir) == before
    assert await media_rows(pg, ticket["media_id"]) == 0


async def test_a_declared_length_over_the_limit_is_refused_before_reading(
    client, draft, bucket_dir
):
    family, memory = draft
    ticket = await new_ticket(client, family.adult, memory["id"], "image/jpeg")
    before = files_under(bucket_dir)

    async def body():
        yield samples.jpeg((32, 32))

    headers = {**ticket["headers"], "Content-Length": str(50 * MiB + 1)}
    response = await client.put(ticket["upload_url"], content=body(), headers=headers)

    assert response.status_code == 413
    assert files_under(bucket_dir) == before


async def test_a_content_type_other_than_the_declared_one_is_refused(client, draft, bucket_dir):
    family, memory = draft
    ticket = await new_ticket(client, family.adult, memory["id"], "image/jpeg")
    before = files_under(bucket_dir)
    response = await client.put(
        ticket["upload_url"], content=samples.jpeg(), headers={"Content-Type": "text/html"}
    )
    assert response.status_code == 415
    assert files_under(bucket_dir) == before
    # Without a type, or as plain bytes, the upload is fine (the URL fixes the type).
    ok = await client.put(
        ticket["upload_url"],
        content=samples.jpeg(),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert ok.status_code == 201, ok.text


@pytest.mark.parametrize(
    "tamper",
    [
        {"signature": "A" * 43},
        {"max_bytes": str(500 * MiB)},
        {"type": "image/png"},
        {"expires": str(int(time.time()) + 86_400)},
        {"signature": ""},
    ],
    ids=["signature", "max_bytes", "type", "expires", "empty-signature"],
)
async def test_a_tampered_upload_url_is_forbidden(client, draft, pg, bucket_dir, tamper):
    family, memory = draft
    ticket = await new_ticket(client, family.adult, memory["id"], "image/jpeg")
    before = files_under(bucket_dir)

    response = await client.put(
        with_query(ticket["upload_url"], **tamper),
        content=samples.jpeg(),
        headers=ticket["headers"],
    )

    assert response.status_code == 403
    assert response.json()["detail"] == "Invalid or expired link"
    assert files_under(bucket_dir) == before
    assert await media_rows(pg, ticket["media_id"]) == 0


async def test_a_signature_for_another_path_is_forbidden(client, draft, bucket_dir):
    family, memory = draft
    first = await new_ticket(client, family.adult, memory["id"])
    second = await new_ticket(client, family.adult, memory["id"])
    before = files_under(bucket_dir)
    # The second object's path, with the first one's signature.
    first_query = urlsplit(first["upload_url"]).query
    url = urlsplit(second["upload_url"])._replace(query=first_query).geturl()

    response = await client.put(url, content=samples.jpeg(), headers=first["headers"])

    assert response.status_code == 403
    assert files_under(bucket_dir) == before


async def test_an_expired_upload_url_is_forbidden(client, draft, app, bucket_dir):
    family, memory = draft
    ticket = await new_ticket(client, family.adult, memory["id"])
    expired = await app.state.context.storage.create_upload_url(
        ticket["storage_path"], mime_type="image/jpeg", max_bytes=MiB, expires_in=-1
    )
    before = files_under(bucket_dir)

    response = await client.put(expired.url, content=samples.jpeg(), headers=expired.headers)

    assert response.status_code == 403
    assert response.json()["detail"] == "Invalid or expired link"
    assert files_under(bucket_dir) == before


@pytest.mark.parametrize(
    "suffix",
    [
        "%2e%2e/%2e%2e/%2e%2e/escaped.jpg",
        "..%2f..%2f..%2fescaped.jpg",
        "x/../escaped.jpg",
        ".incoming/escaped.jpg",
    ],
)
async def test_a_path_with_dot_segments_is_refused(client, draft, settings, suffix):
    family, memory = draft
    ticket = await new_ticket(client, family.adult, memory["id"])
    base = f"http://testserver{API}/storage/objects/memories/{family.id}/{memory['id']}/"
    url = f"{base}{suffix}?{urlsplit(ticket['upload_url']).query}"

    response = await client.put(url, content=samples.jpeg(), headers=ticket["headers"])

    assert response.status_code in (400, 403, 404), response.text
    assert not list(settings.data_dir.rglob("escaped.jpg"))


async def test_dot_segments_are_a_clear_400(client, draft):
    family, memory = draft
    ticket = await new_ticket(client, family.adult, memory["id"])
    url = ticket["upload_url"].replace(f"/{memory['id']}/", f"/{memory['id']}/%2e%2e/")
    response = await client.put(url, content=samples.jpeg(), headers=ticket["headers"])
    assert response.status_code == 400
    assert "Invalid storage path" in response.json()["detail"]


async def test_a_download_signature_cannot_upload(client, draft):
    family, memory = draft
    media = await samples.upload(client, family.adult, memory["id"], samples.jpeg(), "image/jpeg")
    url = await client.get(f"{API}/storage/media/{media['id']}/url", headers=family.adult.headers)
    response = await client.put(url.json()["access_url"], content=samples.jpeg())
    assert response.status_code == 403


async def test_objects_are_write_once(client, draft, bucket_dir):
    family, memory = draft
    ticket = await new_ticket(client, family.adult, memory["id"])
    first = samples.jpeg((50, 50))
    assert (await samples.send_bytes(client, ticket, first)).status_code == 201

    again = await samples.send_bytes(client, ticket, samples.jpeg((80, 80)))

    assert again.status_code == 409
    assert (bucket_dir / ticket["storage_path"]).read_bytes() == first


async def test_another_bucket_is_not_found(client, draft):
    family, memory = draft
    ticket = await new_ticket(client, family.adult, memory["id"])
    url = ticket["upload_url"].replace("/objects/memories/", "/objects/other/")
    response = await client.put(url, content=samples.jpeg(), headers=ticket["headers"])
    assert response.status_code == 404


async def test_multipart_form_upload(client, draft, bucket_dir):
    family, memory = draft
    ticket = await new_ticket(client, family.adult, memory["id"], "image/png")
    data = samples.png_with_alpha()

    response = await client.post(
        ticket["upload_url"],
        data={"note": "ignored"},
        files={"file": ("photo.png", data, "image/png")},
    )

    assert response.status_code == 201, response.text
    assert (bucket_dir / ticket["storage_path"]).read_bytes() == data


async def test_multipart_form_without_a_file_field(client, draft, bucket_dir):
    family, memory = draft
    ticket = await new_ticket(client, family.adult, memory["id"], "image/png")
    before = files_under(bucket_dir)
    response = await client.post(
        ticket["upload_url"], files={"photo": ("photo.png", samples.png_with_alpha(), "image/png")}
    )
    assert response.status_code == 400
    assert "field named 'file'" in response.json()["detail"]
    assert files_under(bucket_dir) == before


async def test_the_json_body_limit_does_not_apply_to_uploads(client, draft):
    family, memory = draft
    data = samples.jpeg((64, 64)) + os.urandom(3 * MiB)  # a JPEG with trailing bytes
    ticket = await new_ticket(client, family.adult, memory["id"])
    response = await samples.send_bytes(client, ticket, data)
    assert response.status_code == 201, response.text
    assert response.json()["file_size"] == len(data)


# Downloads -----------------------------------------------------------------------------------


@pytest.fixture
async def stored(client, draft):
    family, memory = draft
    data = samples.png_with_alpha((200, 100))
    media = await samples.upload(client, family.adult, memory["id"], data, "image/png")
    url = await client.get(f"{API}/storage/media/{media['id']}/url", headers=family.adult.headers)
    return family, memory, media, data, url.json()["access_url"]


async def test_download_honours_range_etag_and_if_none_match(client, stored):
    *_, data, url = stored

    full = await client.get(url)
    assert full.status_code == 200
    assert full.content == data
    assert full.headers["content-type"] == "image/png"
    assert full.headers["accept-ranges"] == "bytes"
    assert full.headers["x-content-type-options"] == "nosniff"
    etag = full.headers["etag"]

    part = await client.get(url, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206
    assert part.content == data[10:20]
    assert part.headers["content-range"] == f"bytes 10-19/{len(data)}"

    tail = await client.get(url, headers={"Range": "bytes=-5"})
    assert tail.status_code == 206 and tail.content == data[-5:]

    not_modified = await client.get(url, headers={"If-None-Match": etag})
    assert not_modified.status_code == 304
    assert not_modified.content == b""
    assert not_modified.headers["etag"] == etag

    changed = await client.get(url, headers={"If-None-Match": '"something-else"'})
    assert changed.status_code == 200

    unsatisfiable = await client.get(url, headers={"Range": f"bytes={len(data) + 10}-"})
    assert unsatisfiable.status_code == 416

    head = await client.head(url)
    assert head.status_code == 200
    assert head.headers["content-length"] == str(len(data))


async def test_a_tampered_or_expired_download_url_is_forbidden(client, app, stored):
    _, _, media, _, url = stored
    assert (await client.get(with_query(url, signature="B" * 43))).status_code == 403
    assert (
        await client.get(with_query(url, expires=str(int(time.time()) + 999)))
    ).status_code == 403
    other_path = url.replace(media["id"], str(uuid.uuid4()))
    assert (await client.get(other_path)).status_code == 403

    storage = app.state.context.storage
    # Signing with a lifetime already over gives an expired link.
    expired = await storage.signed_download_urls([media["storage_path"]], expires_in=-400)
    assert (await client.get(expired[media["storage_path"]])).status_code == 403


async def test_signed_urls_stay_the_same_for_a_while_so_browsers_can_cache(client, stored):
    family, _, media, _, url = stored
    again = await client.get(f"{API}/storage/media/{media['id']}/url", headers=family.adult.headers)
    assert again.json()["access_url"] == url


# Access URLs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expires_in", "status"), [(59, 422), (60, 200), (86_400, 200), (86_401, 422)]
)
async def test_access_url_lifetime_bounds(client, stored, expires_in, status):
    family, _, media, _, _ = stored
    response = await client.get(
        f"{API}/storage/access-url",
        params={"storage_path": media["storage_path"], "expires_in": expires_in},
        headers=family.adult.headers,
    )
    assert response.status_code == status, response.text
    media_url = await client.get(
        f"{API}/storage/media/{media['id']}/url",
        params={"expires_in": expires_in},
        headers=family.adult.headers,
    )
    assert media_url.status_code == status
    if status == 200:
        assert response.json()["expires_in"] == expires_in
        remaining = int(query_of(response.json()["access_url"])["expires"]) - time.time()
        # Rounded up to a boundary of its window (the lifetime, at most an hour), never less
        # than asked (docs/api.md, "Conditional requests").
        assert expires_in - 5 <= remaining <= expires_in + min(expires_in, 3600) + 5


async def test_access_url_only_for_registered_files_the_caller_can_see(client, factory, stored):
    family, memory, media, _, _ = stored
    teen = family.by_role("teen")

    async def status_for(member, path):
        response = await client.get(
            f"{API}/storage/access-url", params={"storage_path": path}, headers=member.headers
        )
        return response.status_code

    done = await samples.wait_for_media(client, family.adult, memory["id"], media["id"])
    # The memory is the adult's draft: invisible to the teen.
    assert await status_for(family.adult, media["storage_path"]) == 200
    assert await status_for(family.adult, done["thumbnail_path"]) == 200
    assert await status_for(teen, media["storage_path"]) == 404
    unregistered = await new_ticket(client, family.adult, memory["id"])
    await samples.send_bytes(client, unregistered, samples.jpeg())
    assert await status_for(family.adult, unregistered["storage_path"]) == 404
    assert await status_for(family.adult, f"{family.id}/../../etc/passwd") == 400

    published = await client.put(
        f"{API}/memories/{memory['id']}", json={"status": "published"}, headers=family.adult.headers
    )
    assert published.status_code == 200
    assert await status_for(teen, media["storage_path"]) == 200

    stranger = (await factory.family(["adult"])).adult
    assert await status_for(stranger, media["storage_path"]) == 404
    by_id = await client.get(f"{API}/storage/media/{media['id']}/url", headers=stranger.headers)
    assert by_id.status_code == 404


async def test_media_url_variant_is_validated(client, stored):
    family, _, media, _, _ = stored
    response = await client.get(
        f"{API}/storage/media/{media['id']}/url",
        params={"variant": "raw"},
        headers=family.adult.headers,
    )
    assert response.status_code == 422


# Registering media ---------------------------------------------------------------------------


async def test_registration_checks_the_path_type_and_size(client, factory, draft, pg):
    family, memory = draft
    other_memory = await samples.create_memory(client, family.adult)
    ticket = await new_ticket(client, family.adult, memory["id"], "image/jpeg")
    data = samples.jpeg((90, 60))
    assert (await samples.send_bytes(client, ticket, data)).status_code == 201

    async def register(memory_id, **changes):
        body = {
            "storage_path": ticket["storage_path"],
            "file_name": "a.jpg",
            "mime_type": "image/jpeg",
            "file_size": 1,
            **changes,
        }
        return await client.post(
            f"{API}/memories/{memory_id}/media", json=body, headers=family.adult.headers
        )

    wrong_memory = await register(other_memory["id"])
    assert wrong_memory.status_code == 400
    assert "not an upload of this memory" in wrong_memory.json()["detail"]
    assert (await register(memory["id"], mime_type="image/png")).status_code == 400
    assert (await register(memory["id"], mime_type="text/plain")).status_code == 415
    dotted = await register(memory["id"], storage_path=f"{family.id}/{memory['id']}/../x.jpg")
    assert dotted.status_code == 400
    assert (await register(memory["id"], file_name="")).status_code == 422

    ok = await register(memory["id"])
    assert ok.status_code == 201, ok.text
    assert ok.json()["file_size"] == len(data)
    assert (await register(memory["id"])).status_code == 409
    assert await media_rows(pg, ticket["media_id"]) == 1


async def test_registration_refuses_uploads_older_than_half_the_grace(
    client, draft, settings, bucket_dir
):
    family, memory = draft
    ticket = await new_ticket(client, family.adult, memory["id"])
    await samples.send_bytes(client, ticket, samples.jpeg())
    old = time.time() - settings.orphan_object_grace_seconds / 2 - 60
    os.utime(bucket_dir / ticket["storage_path"], (old, old))

    response = await samples.register(
        client, family.adult, memory["id"], ticket, mime_type="image/jpeg"
    )

    assert response.status_code == 400
    assert "too old" in response.json()["detail"]


async def test_media_in_a_new_memory_must_already_be_under_its_path(client, draft, pg):
    family, memory = draft
    ticket = await new_ticket(client, family.adult, memory["id"])
    await samples.send_bytes(client, ticket, samples.jpeg())
    title = f"with media {uuid.uuid4()}"
    response = await client.post(
        f"{API}/memories",
        json={
            "title": title,
            "media": [
                {
                    "storage_path": ticket["storage_path"],
                    "file_name": "a.jpg",
                    "mime_type": "image/jpeg",
                }
            ],
        },
        headers=family.adult.headers,
    )
    assert response.status_code == 400
    # All or nothing: the memory was not created either.
    assert await pg.fetchval("select count(*) from public.memories where title = $1", title) == 0


# Limits, with small ones so the tests stay fast --------------------------------------------------

SMALL_FILE = 64 * 1024
SMALL_MEMORY = 160 * 1024


@pytest.fixture(scope="module")
async def small_client(settings):
    small = make_settings(
        settings.database_url.get_secret_value(),
        settings.data_dir,
        max_file_bytes=SMALL_FILE,
        max_memory_bytes=SMALL_MEMORY,
    )
    application = create_app(small)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            yield c


def padded_jpeg(total: int) -> bytes:
    head = samples.jpeg((16, 16), gps=False)
    return head + b"\x00" * (total - len(head))


async def test_per_file_limit_is_bound_into_the_upload_url(small_client, draft, bucket_dir):
    family, memory = draft
    too_big = await samples.upload_url(
        small_client, family.adult, memory["id"], "image/jpeg", file_size=SMALL_FILE + 1
    )
    assert too_big.status_code == 413
    ticket = await new_ticket(small_client, family.adult, memory["id"])
    assert ticket["max_bytes"] == SMALL_FILE
    before = files_under(bucket_dir)

    response = await samples.send_bytes(small_client, ticket, padded_jpeg(SMALL_FILE + 1))

    assert response.status_code == 413
    assert files_under(bucket_dir) == before
    exact = await samples.send_bytes(small_client, ticket, padded_jpeg(SMALL_FILE))
    assert exact.status_code == 201


async def test_per_file_limit_holds_at_registration_for_a_file_stored_another_way(
    small_client, draft, bucket_dir, pg
):
    # An object that did not come through our upload URL (in Supabase mode the upload URL is
    # Supabase Storage's, bound only by the bucket's own limit): registering it still checks
    # the real size against the per-file limit.
    family, memory = draft
    ticket = await new_ticket(small_client, family.adult, memory["id"])
    stored = bucket_dir / ticket["storage_path"]
    stored.parent.mkdir(parents=True, exist_ok=True)
    stored.write_bytes(padded_jpeg(SMALL_FILE + 1))
    response = await samples.register(
        small_client, family.adult, memory["id"], ticket, mime_type="image/jpeg", file_size=1
    )
    assert response.status_code == 413
    assert str(SMALL_FILE) in response.json()["detail"]
    assert await media_rows(pg, ticket["media_id"]) == 0


async def test_per_memory_limit_counts_reservations_and_the_real_stored_sizes(
    small_client, draft, pg
):
    family, memory = draft
    # Upload URLs reserve the memory's room as they are issued: two full files, then what is
    # left, then nothing (tests/test_quotas.py has the rest of the quota rules).
    tickets = [await new_ticket(small_client, family.adult, memory["id"]) for _ in range(3)]
    assert [t["max_bytes"] for t in tickets] == [
        SMALL_FILE,
        SMALL_FILE,
        SMALL_MEMORY - 2 * SMALL_FILE,
    ]
    none_left = await samples.upload_url(small_client, family.adult, memory["id"], "image/jpeg")
    assert none_left.status_code == 413
    assert "(0 bytes left)" in none_left.json()["detail"]
    for ticket in tickets:
        data = padded_jpeg(ticket["max_bytes"])
        sent = await samples.send_bytes(small_client, ticket, data)
        assert sent.status_code == 201, sent.text

    for ticket in tickets[:2]:
        # The client claims 1 byte; the stored size is what counts.
        response = await samples.register(
            small_client, family.adult, memory["id"], ticket, mime_type="image/jpeg", file_size=1
        )
        assert response.status_code == 201, response.text
        assert response.json()["file_size"] == SMALL_FILE

    # The third upload's reservation lapses before it is registered, and its room goes to
    # another upload URL: registering it now would overfill the memory.
    await pg.execute(
        "update app.upload_reservations set expires_at = now() - interval '1 second'"
        " where storage_path = $1",
        tickets[2]["storage_path"],
    )
    later = await new_ticket(small_client, family.adult, memory["id"])
    assert later["max_bytes"] == SMALL_MEMORY - 2 * SMALL_FILE
    third = await samples.register(
        small_client, family.adult, memory["id"], tickets[2], mime_type="image/jpeg", file_size=1
    )
    assert third.status_code == 413
    assert "at most 163840 bytes in all" in third.json()["detail"]
    assert await media_rows(pg, tickets[2]["media_id"]) == 0
    over = await samples.upload_url(
        small_client, family.adult, memory["id"], "image/jpeg", file_size=SMALL_FILE
    )
    assert over.status_code == 413


# Deleting and the orphan sweep -------------------------------------------------------------------


async def test_deleting_media_removes_its_files(client, stored, pg, bucket_dir):
    family, memory, media, _, url = stored
    done = await samples.wait_for_media(client, family.adult, memory["id"], media["id"])
    original, thumbnail = bucket_dir / done["storage_path"], bucket_dir / done["thumbnail_path"]
    assert original.is_file() and thumbnail.is_file()

    response = await client.delete(
        f"{API}/memories/{memory['id']}/media/{media['id']}", headers=family.adult.headers
    )

    assert response.status_code == 204
    assert not original.exists() and not thumbnail.exists()
    assert await media_rows(pg, media["id"]) == 0
    assert (await client.get(url)).status_code == 404
    again = await client.delete(
        f"{API}/memories/{memory['id']}/media/{media['id']}", headers=family.adult.headers
    )
    assert again.status_code == 404


async def test_deleting_a_memory_removes_all_its_files(client, draft, pg, bucket_dir):
    family, memory = draft
    items = [
        await samples.upload(
            client, family.adult, memory["id"], samples.webp((40, 30)), "image/webp"
        )
        for _ in range(2)
    ]
    paths = []
    for item in items:
        done = await samples.wait_for_media(client, family.adult, memory["id"], item["id"])
        paths += [bucket_dir / done["storage_path"], bucket_dir / done["thumbnail_path"]]
    assert all(path.is_file() for path in paths)

    response = await client.delete(f"{API}/memories/{memory['id']}", headers=family.adult.headers)

    assert response.status_code == 204
    assert not any(path.exists() for path in paths)
    assert not (bucket_dir / family.id / memory["id"]).exists()
    count = await pg.fetchval(
        "select count(*) from public.memory_media where memory_id = $1", uuid.UUID(memory["id"])
    )
    assert count == 0


async def test_orphan_sweep_removes_only_old_unreferenced_files(
    client, app, draft, settings, bucket_dir
):
    family, memory = draft
    registered = await samples.upload(
        client, family.adult, memory["id"], samples.webp((40, 30)), "image/webp"
    )
    done = await samples.wait_for_media(client, family.adult, memory["id"], registered["id"])
    abandoned = await new_ticket(client, family.adult, memory["id"])
    fresh = await new_ticket(client, family.adult, memory["id"])
    for ticket in (abandoned, fresh):
        await samples.send_bytes(client, ticket, samples.jpeg())
    partial = bucket_dir / ".incoming" / f"{uuid.uuid4().hex}.part"
    partial.parent.mkdir(parents=True, exist_ok=True)
    partial.write_bytes(b"half an upload")

    long_ago = time.time() - settings.orphan_object_grace_seconds - 60
    old_files = [
        bucket_dir / done["storage_path"],
        bucket_dir / done["thumbnail_path"],
        bucket_dir / abandoned["storage_path"],
        partial,
    ]
    for path in old_files:
        os.utime(path, (long_ago, long_ago))

    removed = await app.state.context.media.sweep_orphans()

    assert removed >= 2
    assert not (bucket_dir / abandoned["storage_path"]).exists()
    assert not partial.exists()
    assert (bucket_dir / done["storage_path"]).is_file()  # referenced
    assert (bucket_dir / done["thumbnail_path"]).is_file()  # referenced as the thumbnail
    assert (bucket_dir / fresh["storage_path"]).is_file()  # within the grace period


# The backend on its own ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "",
        "../x.jpg",
        "a/../../x.jpg",
        "/etc/passwd",
        "a//b.jpg",
        "a/./b.jpg",
        "a\\..\\b.jpg",
        "a/b\x00.jpg",
        "a/b\n.jpg",
        "a/ b.jpg",
        "x" * 1025,
    ],
)
async def test_backend_refuses_unsafe_paths(app, path):
    storage = app.state.context.storage
    with pytest.raises(Invalid):
        await storage.stat(path)
    with pytest.raises(Invalid):
        await storage.signed_download_urls([path], expires_in=60)
    with pytest.raises(Invalid):
        await storage.remove([path])


async def test_backend_does_not_follow_a_symlink_out_of_the_bucket(app, bucket_dir, tmp_path):
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(b"not yours")
    link = bucket_dir / "escape-link"
    bucket_dir.mkdir(parents=True, exist_ok=True)
    link.symlink_to(tmp_path, target_is_directory=True)
    try:
        with pytest.raises(Invalid):
            await app.state.context.storage.stat("escape-link/secret.jpg")
    finally:
        link.unlink()


async def test_signed_download_urls_sign_a_whole_page_at_once(client, app, draft):
    family, memory = draft
    items = [
        await samples.upload(
            client, family.adult, memory["id"], samples.webp((30, 20)), "image/webp"
        )
        for _ in range(3)
    ]
    paths = [item["storage_path"] for item in items]
    storage = app.state.context.storage

    urls = await storage.signed_download_urls(paths, expires_in=600)

    assert set(urls) == set(paths)
    for path in paths:
        response = await client.get(urls[path])
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/webp"
