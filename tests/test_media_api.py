"""Media variants through the API: signed variant URLs in memory, media and feed answers,
`GET /storage/media/{id}/url?variant=`, duplicates by SHA-256, keep_location, memory_date from
capture dates, avatars of members and pets, what a member's own database role may not write,
and bad input ending as `failed` (or refused at upload) while the pipeline goes on.
"""

import hashlib
import io
import os
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from PIL import ExifTags, Image

from app.services.media_processor import MediaProcessor
from tests.helpers import API
from tests.helpers import media_samples as samples
from tests.helpers.factories import Member


@pytest.fixture
def bucket_dir(settings) -> Path:
    return settings.storage_root / "memories"


def processor(app) -> MediaProcessor:
    return app.state.context.media


def photo(
    size: tuple[int, int] = (2000, 1500),
    *,
    taken: str | None = "2024:06:01 14:03:07",
    offset: str | None = "+02:00",
    gps: bool = True,
) -> bytes:
    """A phone photo: capture time (and offset), camera, GPS; unique bytes every call."""
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "Apple"
    exif[ExifTags.Base.Model] = "iPhone 15"
    sub = exif.get_ifd(ExifTags.IFD.Exif)
    if taken is not None:
        sub[ExifTags.Base.DateTimeOriginal] = taken
    if offset is not None:
        sub[0x9011] = offset
    if gps:
        exif[ExifTags.IFD.GPSInfo] = {
            ExifTags.GPS.GPSLatitudeRef: "N",
            ExifTags.GPS.GPSLatitude: (52.0, 31.0, 12.0),
            ExifTags.GPS.GPSLongitudeRef: "E",
            ExifTags.GPS.GPSLongitude: (13.0, 24.0, 36.0),
        }
    out = io.BytesIO()
    samples.picture(size).save(out, "JPEG", quality=90, exif=exif.tobytes())
    return out.getvalue()


async def processed(client, member: Member, memory: dict[str, Any], data: bytes, mime: str):
    media = await samples.upload(client, member, memory["id"], data, mime)
    return await samples.wait_for_media(client, member, memory["id"], media["id"])


async def fetch_clean_jpeg(client, url: str, box: int) -> Image.Image:
    response = await client.get(url)  # signed: no bearer token, as an <img src> sends none
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/jpeg"
    assert b"Exif\x00\x00" not in response.content
    with Image.open(io.BytesIO(response.content)) as image:
        assert max(image.size) <= box and len(image.getexif()) == 0
        return image.copy()


# Variants in every answer -------------------------------------------------------------------


async def test_photo_variants_placeholder_capture_and_sha256_in_memory_and_feed(client, factory):
    adult = (await factory.family(["adult"])).adult
    memory = await samples.create_memory(client, adult, status="published")
    data = photo()

    media = await processed(client, adult, memory, data, "image/jpeg")

    assert media["processing_status"] == "completed", media["metadata"]
    variants = media["variants"]
    assert set(variants) == {"thumbnail", "preview"}
    assert {k: (v["width"], v["height"], v["mime_type"]) for k, v in variants.items()} == {
        "thumbnail": (400, 300, "image/jpeg"),
        "preview": (1600, 1200, "image/jpeg"),
    }
    assert (await fetch_clean_jpeg(client, variants["thumbnail"]["url"], 400)).size == (400, 300)
    assert (await fetch_clean_jpeg(client, variants["preview"]["url"], 1600)).size == (1600, 1200)
    assert media["placeholder"]
    assert media["taken_at"] == "2024-06-01T14:03:07+02:00"
    assert media["camera"] == {"make": "Apple", "model": "iPhone 15"}
    assert media["sha256"] == hashlib.sha256(data).hexdigest()
    assert "location" not in media["metadata"]  # keep_location is off by default

    feed = await client.get(f"{API}/feed", headers=adult.headers)
    item = next(i for i in feed.json()["items"] if i["id"] == memory["id"])
    feed_variants = item["media"][0]["variants"]
    await fetch_clean_jpeg(client, feed_variants["preview"]["url"], 1600)
    listed = await client.get(f"{API}/memories", headers=adult.headers)
    assert listed.json()[0]["media"][0]["variants"]["preview"]["url"]


async def test_variants_are_null_until_processed_and_url_answers_media_not_ready(
    client, factory, pg
):
    adult = (await factory.family(["adult"])).adult
    memory = await samples.create_memory(client, adult)
    media = await samples.upload(client, adult, memory["id"], photo((300, 200)), "image/jpeg")
    assert media["variants"]["thumbnail"] == {
        "url": None,
        "width": None,
        "height": None,
        "mime_type": "image/jpeg",
    }
    await samples.wait_for_media(client, adult, memory["id"], media["id"])
    # As if it were still waiting for a worker.
    await pg.execute(
        "update public.memory_media set processing_status = 'pending' where id = $1",
        uuid.UUID(media["id"]),
    )
    for variant in ("thumbnail", "preview"):
        response = await client.get(
            f"{API}/storage/media/{media['id']}/url",
            params={"variant": variant},
            headers=adult.headers,
        )
        assert response.status_code == 409, response.text
        assert response.json()["code"] == "media_not_ready"
    again = await client.get(f"{API}/memories/{memory['id']}", headers=adult.headers)
    assert again.json()["media"][0]["variants"]["preview"]["url"] is None


async def test_media_url_for_each_variant(client, factory):
    adult = (await factory.family(["adult"])).adult
    memory = await samples.create_memory(client, adult)
    image = await processed(client, adult, memory, photo((500, 400)), "image/jpeg")
    plays = await processed(client, adult, memory, samples.mp4(), "video/mp4")
    needs = await processed(client, adult, memory, samples.mov(), "video/quicktime")

    async def url(media: dict[str, Any], variant: str) -> Any:
        return await client.get(
            f"{API}/storage/media/{media['id']}/url",
            params={"variant": variant},
            headers=adult.headers,
        )

    preview = await url(image, "preview")
    assert preview.status_code == 200 and "_preview.jpg" in preview.json()["access_url"]
    assert (await url(image, "playback")).status_code == 404  # a photo has none
    # A browser-playable MP4 is its own playback; a QuickTime file gets an MP4 rendition.
    assert ".mp4?" in (await url(plays, "playback")).json()["access_url"]
    assert "playback" not in plays["variants"]
    rendition = await url(needs, "playback")
    assert "_play.mp4" in rendition.json()["access_url"]
    downloaded = await client.get(rendition.json()["access_url"])
    assert downloaded.status_code == 200 and downloaded.headers["content-type"] == "video/mp4"
    assert needs["variants"]["playback"]["mime_type"] == "video/mp4"
    assert needs["variants"]["playback"]["url"]
    # Every variant path is also reachable through access-url, and nothing else beside them.
    for variant in ("thumbnail", "preview", "playback"):
        path = (
            needs["storage_path"].rsplit(".", 1)[0]
            + {"thumbnail": "_thumb.jpg", "preview": "_preview.jpg", "playback": "_play.mp4"}[
                variant
            ]
        )
        access = await client.get(
            f"{API}/storage/access-url", params={"storage_path": path}, headers=adult.headers
        )
        assert access.status_code == 200, (variant, access.text)
    bogus = needs["storage_path"].rsplit(".", 1)[0] + "_other.jpg"
    response = await client.get(
        f"{API}/storage/access-url", params={"storage_path": bogus}, headers=adult.headers
    )
    assert response.status_code in (400, 404)


async def test_deleting_media_removes_every_variant(client, factory, bucket_dir):
    adult = (await factory.family(["adult"])).adult
    memory = await samples.create_memory(client, adult)
    media = await processed(client, adult, memory, samples.mov(), "video/quicktime")
    stem = bucket_dir / media["storage_path"].rsplit(".", 1)[0]
    files = [Path(f"{stem}{suffix}") for suffix in ("_thumb.jpg", "_preview.jpg", "_play.mp4")]
    assert all(file.exists() for file in files)

    response = await client.delete(
        f"{API}/memories/{memory['id']}/media/{media['id']}", headers=adult.headers
    )

    assert response.status_code == 204
    assert not any(file.exists() for file in files)


# Duplicates ---------------------------------------------------------------------------------


async def test_same_bytes_twice_in_a_family_is_409_with_the_existing_media(client, factory):
    family = await factory.family(["adult", "teen"])
    adult, teen = family.adult, family.by_role("teen")
    data = photo((200, 150))
    first_memory = await samples.create_memory(client, adult)  # a draft only adult sees
    first = await samples.upload(client, adult, first_memory["id"], data, "image/jpeg")

    # The teen's phone syncs the same photo: the upload URL says so before a byte is sent.
    memory = await samples.create_memory(client, teen)
    body = {
        "memory_id": memory["id"],
        "file_name": "IMG_0001.JPG",
        "mime_type": "image/jpeg",
        "sha256": hashlib.sha256(data).hexdigest().upper(),
    }
    early = await client.post(f"{API}/storage/upload-url", json=body, headers=teen.headers)
    assert early.status_code == 409, early.text
    assert early.json()["code"] == "duplicate_media"
    assert early.json()["media_id"] == first["id"]
    # ... and registration catches a client that did not send the digest.
    ticket = (await samples.upload_url(client, teen, memory["id"], "image/jpeg")).json()
    assert (await samples.send_bytes(client, ticket, data)).status_code == 201
    late = await samples.register(client, teen, memory["id"], ticket, mime_type="image/jpeg")
    assert late.status_code == 409, late.text
    assert (late.json()["code"], late.json()["media_id"]) == ("duplicate_media", first["id"])
    # The media id says nothing the teen may not see: the draft stays a 404.
    hidden = await client.get(f"{API}/storage/media/{first['id']}/url", headers=teen.headers)
    assert hidden.status_code == 404

    # Another family may have the same photo; different bytes are fine here.
    other = (await factory.family(["adult"])).adult
    other_memory = await samples.create_memory(client, other)
    await samples.upload(client, other, other_memory["id"], data, "image/jpeg")
    await samples.upload(client, teen, memory["id"], photo((200, 150)), "image/jpeg")
    fresh = {**body, "sha256": hashlib.sha256(b"never uploaded").hexdigest()}
    ok = await client.post(f"{API}/storage/upload-url", json=fresh, headers=teen.headers)
    assert ok.status_code == 200, ok.text


async def test_digest_unknown_at_upload_is_taken_while_processing(client, factory, bucket_dir):
    """Supabase Storage takes no digest: processing does, and a duplicate then fails."""
    adult = (await factory.family(["adult"])).adult
    memory = await samples.create_memory(client, adult)
    data = photo((200, 150))
    first = await processed(client, adult, memory, data, "image/jpeg")
    ticket = (await samples.upload_url(client, adult, memory["id"], "image/jpeg")).json()
    assert (await samples.send_bytes(client, ticket, data)).status_code == 201
    os.removexattr(bucket_dir / ticket["storage_path"], "user.timeless.sha256")

    registered = await samples.register(client, adult, memory["id"], ticket, mime_type="image/jpeg")
    assert registered.status_code == 201, registered.text
    assert registered.json()["sha256"] is None
    done = await samples.wait_for_media(client, adult, memory["id"], registered.json()["id"])

    assert done["processing_status"] == "failed"
    assert done["metadata"]["error"] == "the same file is already in this family"
    assert done["metadata"]["duplicate_of"] == first["id"]


# Location and dates -------------------------------------------------------------------------


async def test_gps_is_kept_only_while_the_family_keeps_locations(client, factory):
    family = await factory.family(["adult", "teen"])
    adult, teen = family.adult, family.by_role("teen")
    memory = await samples.create_memory(client, adult)
    assert (await client.get(f"{API}/families/me", headers=adult.headers)).json()[
        "keep_location"
    ] is False
    refused = await client.patch(
        f"{API}/families/me", json={"keep_location": True}, headers=teen.headers
    )
    assert refused.status_code == 403

    before = await processed(client, adult, memory, photo((100, 80)), "image/jpeg")
    turned_on = await client.patch(
        f"{API}/families/me", json={"keep_location": True}, headers=adult.headers
    )
    assert turned_on.status_code == 200 and turned_on.json()["keep_location"] is True
    kept = await processed(client, adult, memory, photo((100, 80)), "image/jpeg")

    assert "location" not in before["metadata"]
    assert kept["metadata"]["location"] == {"lat": 52.52, "lon": 13.41}
    off = await client.patch(
        f"{API}/families/me", json={"keep_location": False}, headers=adult.headers
    )
    assert off.status_code == 200 and off.json()["name"]  # the name is untouched
    again = await client.get(f"{API}/memories/{memory['id']}", headers=adult.headers)
    assert all("location" not in m["metadata"] for m in again.json()["media"])


async def test_memory_date_from_the_earliest_capture_never_over_a_members_date(client, factory):
    adult = (await factory.family(["adult"])).adult
    undated = await samples.create_memory(client, adult)
    dated = await samples.create_memory(client, adult, memory_date="2020-01-01")

    await processed(
        client, adult, undated, photo((80, 60), taken="2024:06:03 09:00:00"), "image/jpeg"
    )
    # Late at night with its offset: the local date counts, not UTC's (already the 2nd).
    late = photo((80, 60), taken="2024:06:01 23:30:00", offset="-05:00")
    await processed(client, adult, undated, late, "image/jpeg")
    await processed(client, adult, dated, photo((80, 60)), "image/jpeg")

    async def memory_date(memory: dict[str, Any]) -> str | None:
        response = await client.get(f"{API}/memories/{memory['id']}", headers=adult.headers)
        return response.json()["memory_date"]

    assert await memory_date(undated) == "2024-06-01"
    assert await memory_date(dated) == "2020-01-01"
    # Once a member sets it, it is theirs.
    await client.put(
        f"{API}/memories/{undated['id']}", json={"memory_date": "2024-07-01"}, headers=adult.headers
    )
    await processed(
        client, adult, undated, photo((80, 60), taken="2023:01:01 10:00:00"), "image/jpeg"
    )
    assert await memory_date(undated) == "2024-07-01"


async def test_photo_without_offset_shows_its_local_time(client, factory):
    adult = (await factory.family(["adult"])).adult
    memory = await samples.create_memory(client, adult)

    media = await processed(client, adult, memory, photo((80, 60), offset=None), "image/jpeg")

    assert media["taken_at"] == "2024-06-01T14:03:07"


# Avatars ------------------------------------------------------------------------------------


async def upload_avatar(client, member: Member, target: str, data: bytes) -> dict[str, Any]:
    response = await client.post(
        f"{API}/storage/avatar-upload-url",
        json={"target": target, "file_name": "me.heic", "mime_type": "image/heic"},
        headers=member.headers,
    )
    assert response.status_code == 200, response.text
    ticket: dict[str, Any] = response.json()
    assert (await samples.send_bytes(client, ticket, data)).status_code == 201
    return ticket


async def wait_for_avatar(client, member: Member, path: str, who: str) -> str:
    for _ in range(400):
        response = await client.get(f"{API}{path}", headers=member.headers)
        body = response.json()
        found = (
            body if "members" not in body else next(m for m in body["members"] if m["id"] == who)
        )
        if found["avatar_url"]:
            return str(found["avatar_url"])
        await __import__("asyncio").sleep(0.05)
    raise AssertionError("the avatar was never processed")


async def test_member_avatar_upload_becomes_a_signed_thumbnail_everywhere(
    client, factory, bucket_dir
):
    family = await factory.family(["adult", "teen"])
    teen = family.by_role("teen")
    ticket = await upload_avatar(client, teen, "me", samples.heic((900, 600)))
    assert ticket["storage_path"].startswith(f"{teen.family_id}/avatars/")

    response = await client.patch(
        f"{API}/auth/me", json={"avatar_storage_path": ticket["storage_path"]}, headers=teen.headers
    )
    assert response.status_code == 200, response.text
    url = await wait_for_avatar(client, teen, "/auth/me", teen.id)

    assert "_thumb.jpg" in url
    assert (await fetch_clean_jpeg(client, url, 400)).size == (400, 267)
    family_view = await client.get(f"{API}/families/me", headers=family.adult.headers)
    member = next(m for m in family_view.json()["members"] if m["id"] == teen.id)
    assert "_thumb.jpg" in member["avatar_url"]
    memory = await samples.create_memory(client, teen, status="published")
    assert "_thumb.jpg" in memory["author"]["avatar_url"]
    feed = await client.get(f"{API}/feed", headers=family.adult.headers)
    item = next(i for i in feed.json()["items"] if i["id"] == memory["id"])
    assert "_thumb.jpg" in item["author"]["avatar_url"]
    comments = f"{API}/feed/memories/{memory['id']}/comments"
    comment = await client.post(comments, json={"content": "Hi!"}, headers=teen.headers)
    assert comment.status_code == 201, comment.text
    reply = await client.post(
        comments,
        json={"content": "Me again", "parent_comment_id": comment.json()["id"]},
        headers=teen.headers,
    )
    edited = await client.put(
        f"{comments}/{comment.json()['id']}", json={"content": "Hello!"}, headers=teen.headers
    )
    listed = await client.get(comments, headers=family.adult.headers)
    scrolled = await client.get(comments, params={"cursor": ""}, headers=family.adult.headers)
    shown = [
        comment.json(),
        reply.json(),
        edited.json(),
        listed.json()[0],
        listed.json()[0]["replies"][0],
        scrolled.json()["items"][0],
    ]
    assert all("_thumb.jpg" in (c["author"]["avatar_url"] or "") for c in shown), shown

    # A new avatar replaces it: the old files go.
    old = bucket_dir / ticket["storage_path"]
    replacement = await upload_avatar(client, teen, "me", samples.heic((300, 300)))
    await client.patch(
        f"{API}/auth/me",
        json={"avatar_storage_path": replacement["storage_path"]},
        headers=teen.headers,
    )
    assert not old.exists()
    # A plain URL replaces an uploaded one.
    plain = await client.patch(
        f"{API}/auth/me", json={"avatar_url": "https://example.com/a.png"}, headers=teen.headers
    )
    assert plain.json()["avatar_url"] == "https://example.com/a.png"


async def test_pet_avatars_by_adults_and_grandparents_only(client, factory):
    family = await factory.family(["adult", "teen"])
    adult, teen = family.adult, family.by_role("teen")
    pet = await client.post(
        f"{API}/auth/register/pet", json={"display_name": "Rex"}, headers=adult.headers
    )
    pet_id = pet.json()["pet_id"]
    refused = await client.post(
        f"{API}/storage/avatar-upload-url",
        json={"target": pet_id, "file_name": "rex.jpg", "mime_type": "image/jpeg"},
        headers=teen.headers,
    )
    assert refused.status_code == 403
    ticket = await upload_avatar(client, adult, pet_id, samples.heic((400, 400)))

    updated = await client.patch(
        f"{API}/families/me/pets/{pet_id}",
        json={"avatar_storage_path": ticket["storage_path"]},
        headers=adult.headers,
    )
    assert updated.status_code == 200, updated.text
    url = await wait_for_avatar(client, adult, "/families/me", pet_id)
    await fetch_clean_jpeg(client, url, 400)

    other = (await factory.family(["adult"])).adult
    for target in (pet_id, str(uuid.uuid4())):
        response = await client.post(
            f"{API}/storage/avatar-upload-url",
            json={"target": target, "file_name": "x.jpg", "mime_type": "image/jpeg"},
            headers=other.headers,
        )
        assert response.status_code == 404
    stolen = await client.patch(
        f"{API}/auth/me",
        json={"avatar_storage_path": ticket["storage_path"]},
        headers=other.headers,
    )
    assert stolen.status_code == 400
    video = await client.post(
        f"{API}/storage/avatar-upload-url",
        json={"target": "me", "file_name": "x.mp4", "mime_type": "video/mp4"},
        headers=adult.headers,
    )
    assert video.status_code == 415


# What a member's own database role may write --------------------------------------------------


async def as_member(pg: asyncpg.Pool, member: Member, statement: str, *args: Any) -> Any:
    async with pg.acquire() as conn, conn.transaction():
        await conn.execute("set local role authenticated")
        await conn.execute(
            "select set_config('request.jwt.claims', $1, true)", f'{{"sub": "{member.id}"}}'
        )
        return await conn.execute(statement, *args)


async def test_members_cannot_write_processing_results_or_borrow_a_memory_photo(
    client, factory, pg
):
    family = await factory.family(["adult", "teen"])
    adult, teen = family.adult, family.by_role("teen")
    memory = await samples.create_memory(client, adult)  # the adult's draft
    media = await processed(client, adult, memory, photo((60, 40)), "image/jpeg")
    victim = (await factory.family(["adult"])).adult
    evil = {"preview": {"path": f"{victim.family_id}/{uuid.uuid4()}/{uuid.uuid4()}_preview.jpg"}}

    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await as_member(
            pg,
            adult,
            "update public.memory_media set variants = $2::jsonb where id = $1",
            uuid.UUID(media["id"]),
            evil,
        )
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await as_member(
            pg,
            adult,
            "insert into public.memory_media (id, memory_id, family_unit_id, storage_path, "
            "file_name, mime_type, file_size, variants) values ($1, $2, $3, $4, 'x', "
            "'image/jpeg', 1, $5::jsonb)",
            uuid.uuid4(),
            uuid.UUID(memory["id"]),
            uuid.UUID(adult.family_id),
            f"{adult.family_id}/{memory['id']}/{uuid.uuid4()}.jpg",
            evil,
        )
    # Even the service role cannot store a variant outside the row's own folder.
    with pytest.raises(asyncpg.CheckViolationError):
        await pg.execute(
            "update public.memory_media set variants = $2::jsonb where id = $1",
            uuid.UUID(media["id"]),
            evil,
        )
    # A memory's photo (here another member's draft) cannot become an avatar.
    with pytest.raises(asyncpg.CheckViolationError):
        await as_member(
            pg,
            teen,
            "update public.user_profiles set avatar_media_id = $2 where id = $1",
            uuid.UUID(teen.id),
            uuid.UUID(media["id"]),
        )


# Bad input: failed with a reason (or refused at upload), and the pipeline goes on ------------


def _gif(frames: int, size: tuple[int, int] = (8, 8)) -> bytes:
    """A dot moving over a black square: every frame differs from the one before."""
    images = []
    for i in range(frames):
        image = Image.new("L", size, 0)
        image.putpixel((i % size[0], (i // size[0]) % size[1]), 255)
        images.append(image)
    out = io.BytesIO()
    images[0].save(out, "GIF", save_all=True, append_images=images[1:], duration=20)
    return out.getvalue()


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _audio_only_mp4(tmp_path: Path) -> bytes:
    import av

    path = tmp_path / "sound.mp4"
    with av.open(str(path), mode="w", format="mp4") as output:
        stream = output.add_stream("aac", rate=48_000, layout="stereo")
        assert isinstance(stream, av.AudioStream)
        chunk = av.AudioFrame(format=stream.format.name, layout="stereo", samples=1024)
        for plane in chunk.planes:
            plane.update(bytes(plane.buffer_size))
        chunk.sample_rate, chunk.pts = 48_000, 0
        output.mux(stream.encode(chunk))
        output.mux(stream.encode(None))
    return path.read_bytes()


def _empty_mp4(tmp_path: Path) -> bytes:
    import av

    path = tmp_path / "empty.mp4"
    with av.open(str(path), mode="w", format="mp4") as output:
        stream = output.add_stream("libx264", rate=30)
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height = 64, 64
        output.start_encoding()
    return path.read_bytes()


BAD_FILES = {
    "truncated jpeg": (
        lambda tmp: _truncated(photo((800, 600), gps=False)),
        "image/jpeg",
        "corrupt",
    ),
    "truncated heic": (lambda tmp: _truncated(samples.heic((640, 480))), "image/heic", "corrupt"),
    "truncated mp4": (lambda tmp: _truncated(samples.mp4(frames=60)), "video/mp4", "corrupt"),
    "video without a video track": (_audio_only_mp4, "video/mp4", "no video track"),
    "0-second video": (_empty_mp4, "video/mp4", "video"),
    "gif of 5000 frames": (lambda tmp: _gif(5000), "image/gif", "too many frames"),
    # Refused from its header, before any tile is decoded (the sandbox's limits stay behind it).
    "heic grid of 500 tiles": (lambda tmp: samples.heic_grid(25, 20), "image/heic", "500 tiles"),
}


@pytest.mark.parametrize("name", BAD_FILES)
async def test_bad_files_fail_with_a_reason_and_the_next_file_is_processed(
    client, factory, tmp_path, name
):
    make, mime, reason = BAD_FILES[name]
    adult = (await factory.family(["adult"])).adult
    memory = await samples.create_memory(client, adult)

    bad = await processed(client, adult, memory, make(tmp_path), mime)
    good = await processed(client, adult, memory, photo((120, 90)), "image/jpeg")

    assert bad["processing_status"] == "failed"
    assert reason in bad["metadata"]["error"], bad["metadata"]
    assert all(v["url"] is None for v in bad["variants"].values())
    assert good["processing_status"] == "completed"


async def test_broken_exif_block_costs_the_capture_facts_not_the_photo(client, factory):
    adult = (await factory.family(["adult"])).adult
    memory = await samples.create_memory(client, adult)

    broken = await processed(
        client, adult, memory, samples.with_broken_exif(photo((800, 600))), "image/jpeg"
    )
    good = await processed(client, adult, memory, photo((120, 90)), "image/jpeg")

    assert broken["processing_status"] == "completed", broken["metadata"]
    assert set(broken["variants"]) == {"thumbnail", "preview"}
    assert broken["taken_at"] is None and broken["camera"] is None
    assert good["processing_status"] == "completed"


async def test_picture_claiming_60000_by_60000_is_refused_at_upload(client, factory):
    adult = (await factory.family(["adult"])).adult
    memory = await samples.create_memory(client, adult)
    ticket = (await samples.upload_url(client, adult, memory["id"], "image/png")).json()

    sent = await samples.send_bytes(client, ticket, samples.png_bomb(60_000, 60_000))

    assert sent.status_code == 413, sent.text
    assert "too many pixels" in sent.json()["detail"]


async def test_picture_claiming_60000_by_60000_fails_if_it_got_in(client, factory, bucket_dir):
    """Supabase Storage checks no header: the processor refuses it as quickly."""
    adult = (await factory.family(["adult"])).adult
    memory = await samples.create_memory(client, adult)
    ticket = (await samples.upload_url(client, adult, memory["id"], "image/png")).json()
    file = bucket_dir / ticket["storage_path"]
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_bytes(samples.png_bomb(60_000, 60_000))  # as if stored by another backend

    registered = await samples.register(client, adult, memory["id"], ticket, mime_type="image/png")
    done = await samples.wait_for_media(client, adult, memory["id"], registered.json()["id"])

    assert done["processing_status"] == "failed"
    assert "too large" in done["metadata"]["error"]


async def test_transcode_past_its_cpu_budget_fails_and_shows_progress_meanwhile(
    client, factory, app, settings, monkeypatch
):
    adult = (await factory.family(["adult"])).adult
    memory = await samples.create_memory(client, adult)
    monkeypatch.setattr(processor(app)._settings, "media_transcode_cpu_seconds", 0.0)

    done = await processed(client, adult, memory, samples.video("mp4", "libx265"), "video/mp4")

    assert done["processing_status"] == "failed"
    assert "took too long" in done["metadata"]["error"]
    assert "progress" not in done["metadata"] or done["metadata"]["progress"] < 1


async def test_no_avatar_lookup_runs_for_an_author_without_an_uploaded_avatar(pg) -> None:
    # A feed page shows up to 80 authors, most without an uploaded avatar; app.avatar_path
    # cannot be inlined (it sets search_path), so only STRICT keeps PostgreSQL from running
    # its query for each null id (docs/performance.md). The answers are the test above's.
    strict = await pg.fetchval(
        "select proisstrict from pg_proc where oid = 'app.avatar_path(uuid)'::regprocedure"
    )
    assert strict
