"""The media pipeline end to end: upload as a browser does, processing, thumbnails, recovery."""

import asyncio
import io
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from app.metrics import MEDIA_PROCESSED
from app.services.media_processor import MediaProcessor
from tests.helpers import media_samples as samples
from tests.helpers.media_samples import API


@pytest.fixture
def bucket_dir(settings) -> Path:
    return settings.storage_root / "memories"


def processor(app) -> MediaProcessor:
    return app.state.context.media


def assert_clean_thumbnail(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        assert image.format == "JPEG"
        assert image.width <= 400 and image.height <= 400
        assert len(image.getexif()) == 0
        assert "exif" not in image.info
        assert b"Exif\x00\x00" not in data
        return image.copy()


async def fetch(client, member, url: str, **headers: str):
    # Signed URLs carry their own permission: no bearer token, as an <img src> sends none.
    return await client.get(url, headers=headers)


async def test_upload_flow_as_a_browser_does_it(client, factory, bucket_dir):
    family = await factory.family(["adult"])
    adult = family.adult
    data = samples.jpeg((600, 400), orientation=6, gps=True)

    # 1. A draft memory.
    memory = await samples.create_memory(client, adult, title="Beach day")
    assert memory["status"] == "draft" and memory["media"] == []

    # 2. An upload URL for one JPEG.
    ticket_response = await samples.upload_url(
        client, adult, memory["id"], "image/jpeg", file_name="beach.jpg", file_size=len(data)
    )
    assert ticket_response.status_code == 200, ticket_response.text
    ticket = ticket_response.json()
    assert ticket["method"] == "PUT"
    assert ticket["expires_in"] == 300
    assert ticket["headers"] == {"Content-Type": "image/jpeg"}
    assert ticket["storage_path"] == f"{family.id}/{memory['id']}/{ticket['media_id']}.jpg"
    assert ticket["upload_url"].startswith("http://testserver/api/v1/storage/objects/memories/")

    # 3. The bytes go straight to the signed URL.
    sent = await samples.send_bytes(client, ticket, data)
    assert sent.status_code == 201, sent.text
    assert sent.json() == {"storage_path": ticket["storage_path"], "file_size": len(data)}
    assert (bucket_dir / ticket["storage_path"]).read_bytes() == data

    # 4. Register it with the memory.
    registered = await samples.register(
        client, adult, memory["id"], ticket, mime_type="image/jpeg", file_name="beach.jpg"
    )
    assert registered.status_code == 201, registered.text
    media = registered.json()
    assert media["id"] == ticket["media_id"]
    assert media["file_size"] == len(data)  # the stored size, not the client's "1"
    assert media["processing_status"] in ("pending", "processing", "completed")

    # 5. Processing finishes in the background.
    done = await samples.wait_for_media(client, adult, memory["id"], media["id"])
    assert done["processing_status"] == "completed", done["metadata"]
    assert (done["width"], done["height"]) == (400, 600)  # upright: orientation 6 turns it
    assert done["thumbnail_path"] == f"{family.id}/{memory['id']}/{media['id']}_thumb.jpg"

    # 6. The thumbnail through its access URL: a clean, upright JPEG within 400x400.
    url_response = await client.get(
        f"{API}/storage/media/{media['id']}/url",
        params={"variant": "thumbnail"},
        headers=adult.headers,
    )
    assert url_response.status_code == 200, url_response.text
    assert url_response.json()["expires_in"] == 3600
    thumb_response = await fetch(client, adult, url_response.json()["access_url"])
    assert thumb_response.status_code == 200
    assert thumb_response.headers["content-type"] == "image/jpeg"
    assert thumb_response.headers["cache-control"].startswith("private")
    thumbnail = assert_clean_thumbnail(thumb_response.content)
    assert thumbnail.size == (267, 400)
    # Upright: orientation 6 turns the stored left (red) half to the top, right (blue) down.
    top, bottom = thumbnail.getpixel((200, 150)), thumbnail.getpixel((200, 300))
    assert isinstance(top, tuple) and isinstance(bottom, tuple)
    assert top[0] > 150 and top[2] < 100, top
    assert bottom[2] > 150 and bottom[0] < 100, bottom

    # 7. The original is byte for byte what was sent.
    original_url = await client.get(
        f"{API}/storage/access-url",
        params={"storage_path": ticket["storage_path"], "expires_in": 60},
        headers=adult.headers,
    )
    assert original_url.status_code == 200, original_url.text
    original = await fetch(client, adult, original_url.json()["access_url"])
    assert original.status_code == 200
    assert original.content == data


SAMPLES: dict[str, tuple[Callable[[], bytes], str, dict[str, Any]]] = {
    "jpeg-exif-orientation-6-gps": (
        lambda: samples.jpeg((600, 400), orientation=6),
        "image/jpeg",
        {"width": 400, "height": 600, "thumb": (267, 400)},
    ),
    "png-alpha": (
        lambda: samples.png_with_alpha((320, 200)),
        "image/png",
        {"width": 320, "height": 200, "thumb": (320, 200)},
    ),
    "gif-animated": (
        lambda: samples.animated_gif((120, 80), frames=4),
        "image/gif",
        {"width": 120, "height": 80, "thumb": (120, 80), "frame_count": 4},
    ),
    "webp": (
        lambda: samples.webp((900, 300)),
        "image/webp",
        {"width": 900, "height": 300, "thumb": (400, 133)},
    ),
    "heic": (
        lambda: samples.heic((640, 480)),
        "image/heic",
        {"width": 640, "height": 480, "thumb": (400, 300)},
    ),
    "mp4-h264": (
        lambda: samples.mp4(size=(320, 240), frames=30),
        "video/mp4",
        {"width": 320, "height": 240, "thumb": (320, 240), "duration": 1.0, "codec": "h264"},
    ),
    "webm-vp9": (
        lambda: samples.webm(size=(320, 240), frames=45),
        "video/webm",
        {"width": 320, "height": 240, "thumb": (320, 240), "duration": 1.5, "codec": "vp9"},
    ),
    "mov-h264": (
        lambda: samples.mov(size=(480, 270), frames=30),
        "video/quicktime",
        {"width": 480, "height": 270, "thumb": (400, 225), "duration": 1.0, "codec": "h264"},
    ),
}


@pytest.mark.parametrize("name", list(SAMPLES))
async def test_real_samples_are_processed(client, factory, name):
    make, mime, expected = SAMPLES[name]
    family = await factory.family(["adult"])
    memory = await samples.create_memory(client, family.adult)
    media = await samples.upload(client, family.adult, memory["id"], make(), mime)

    done = await samples.wait_for_media(client, family.adult, memory["id"], media["id"])

    assert done["processing_status"] == "completed", done["metadata"]
    assert (done["width"], done["height"]) == (expected["width"], expected["height"])
    if "duration" in expected:
        assert done["duration"] == pytest.approx(expected["duration"], abs=0.1)
        assert done["metadata"]["codec"] == expected["codec"]
    else:
        assert done["duration"] is None
    if "frame_count" in expected:
        assert done["metadata"]["frame_count"] == expected["frame_count"]
    url = await client.get(
        f"{API}/storage/media/{media['id']}/url",
        params={"variant": "thumbnail"},
        headers=family.adult.headers,
    )
    thumbnail = assert_clean_thumbnail((await client.get(url.json()["access_url"])).content)
    assert thumbnail.size == expected["thumb"]


async def test_bytes_that_are_not_the_declared_type_fail_processing(
    client, factory, app, bucket_dir
):
    # Built-in storage refuses these at upload; with storage that takes uploads directly
    # (Supabase), the processor is the check. Simulate that by writing the file directly.
    family = await factory.family(["adult"])
    memory = await samples.create_memory(client, family.adult)
    ticket = (await samples.upload_url(client, family.adult, memory["id"], "image/jpeg")).json()
    target = bucket_dir / ticket["storage_path"]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(samples.png_with_alpha())

    registered = await samples.register(
        client, family.adult, memory["id"], ticket, mime_type="image/jpeg"
    )
    assert registered.status_code == 201, registered.text
    done = await samples.wait_for_media(client, family.adult, memory["id"], ticket["media_id"])

    assert done["processing_status"] == "failed"
    assert done["metadata"]["error"] == "the file content is image/png, not image/jpeg"
    assert done["thumbnail_path"] is None
    assert not (bucket_dir / ticket["storage_path"].replace(".jpg", "_thumb.jpg")).exists()
    thumb = await client.get(
        f"{API}/storage/media/{ticket['media_id']}/url",
        params={"variant": "thumbnail"},
        headers=family.adult.headers,
    )
    assert thumb.status_code == 409


async def test_a_bomb_that_reached_storage_fails_processing(client, factory, bucket_dir):
    family = await factory.family(["adult"])
    memory = await samples.create_memory(client, family.adult)
    ticket = (await samples.upload_url(client, family.adult, memory["id"], "image/png")).json()
    target = bucket_dir / ticket["storage_path"]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(samples.png_bomb(20_000, 20_000))

    await samples.register(client, family.adult, memory["id"], ticket, mime_type="image/png")
    done = await samples.wait_for_media(client, family.adult, memory["id"], ticket["media_id"])

    assert done["processing_status"] == "failed"
    assert "too large" in done["metadata"]["error"]


# Crash recovery and concurrency ---------------------------------------------------------------


async def _completed_media(client, factory, count: int = 1):
    family = await factory.family(["adult"])
    memory = await samples.create_memory(client, family.adult)
    media = [
        await samples.upload(
            client, family.adult, memory["id"], samples.webp((60, 40)), "image/webp"
        )
        for _ in range(count)
    ]
    for item in media:
        await samples.wait_for_media(client, family.adult, memory["id"], item["id"])
    return family, memory, [uuid.UUID(item["id"]) for item in media]


async def _simulate_crash(pg, bucket_dir: Path, media_ids, *, status: str, claimed_ago: float):
    """As if a process died mid-way: no result, no thumbnail, the claim left behind."""
    rows = await pg.fetch(
        "update public.memory_media set processing_status = $2,"
        " processing_claimed_at = now() - make_interval(secs => $3), processing_attempts = 1,"
        " width = null, height = null, thumbnail_path = null, metadata = '{}'"
        " where id = any($1) returning storage_path",
        list(media_ids),
        status,
        claimed_ago,
    )
    for row in rows:
        thumbnail = row["storage_path"].rsplit(".", 1)[0] + "_thumb.jpg"
        (bucket_dir / thumbnail).unlink(missing_ok=True)


async def _status(pg, media_id) -> dict[str, Any]:
    row = await pg.fetchrow(
        "select processing_status, processing_attempts, width, height, thumbnail_path, metadata"
        " from public.memory_media where id = $1",
        media_id,
    )
    return dict(row)


async def test_sweep_completes_media_left_processing_by_a_crash(
    client, factory, app, pg, settings, bucket_dir
):
    _, _, (media_id,) = await _completed_media(client, factory)
    stale = settings.media_stale_after_seconds + 60
    await _simulate_crash(pg, bucket_dir, [media_id], status="processing", claimed_ago=stale)

    await processor(app).sweep()

    row = await _status(pg, media_id)
    assert row["processing_status"] == "completed"
    assert row["processing_attempts"] == 2
    assert (row["width"], row["height"]) == (60, 40)
    assert (bucket_dir / row["thumbnail_path"]).is_file()


async def test_sweep_leaves_a_fresh_claim_alone(client, factory, app, pg, bucket_dir):
    _, _, (media_id,) = await _completed_media(client, factory)
    await _simulate_crash(pg, bucket_dir, [media_id], status="processing", claimed_ago=1)

    await processor(app).sweep()

    row = await _status(pg, media_id)
    assert row["processing_status"] == "processing"  # still someone else's, for now
    assert row["processing_attempts"] == 1


async def test_sweep_processes_media_that_never_started(client, factory, app, pg, bucket_dir):
    _, _, (media_id,) = await _completed_media(client, factory)
    await pg.execute(
        "update public.memory_media set processing_status = 'pending',"
        " processing_claimed_at = null, processing_attempts = 0, thumbnail_path = null"
        " where id = $1",
        media_id,
    )

    await processor(app).sweep()

    row = await _status(pg, media_id)
    assert row["processing_status"] == "completed"
    assert row["processing_attempts"] == 1


async def test_sweep_gives_up_after_the_last_attempt(
    client, factory, app, pg, settings, bucket_dir
):
    _, _, (media_id,) = await _completed_media(client, factory)
    stale = settings.media_stale_after_seconds + 60
    await _simulate_crash(pg, bucket_dir, [media_id], status="processing", claimed_ago=stale)
    await pg.execute(
        "update public.memory_media set processing_attempts = $2 where id = $1",
        media_id,
        settings.media_max_attempts,
    )

    await processor(app).sweep()

    row = await _status(pg, media_id)
    assert row["processing_status"] == "failed"
    assert row["metadata"]["error"] == (
        f"processing did not finish after {settings.media_max_attempts} attempts"
    )


async def test_two_processes_sweeping_at_once_never_process_the_same_media_twice(
    client, factory, app, pg, settings, bucket_dir
):
    _, _, media_ids = await _completed_media(client, factory, count=6)
    stale = settings.media_stale_after_seconds + 60
    await _simulate_crash(pg, bucket_dir, media_ids, status="processing", claimed_ago=stale)
    context = app.state.context
    # A second server process: its own processor (and thread pool) on the same database.
    other = MediaProcessor(context.database, context.storage, context.analytics, settings)
    try:
        await asyncio.gather(processor(app).sweep(), other.sweep(), other.sweep())
    finally:
        await other.stop()

    for media_id in media_ids:
        row = await _status(pg, media_id)
        assert row["processing_status"] == "completed"
        assert row["processing_attempts"] == 2, "claimed more than once"


class _HeldSandbox:
    """Runs each job in the calling thread, once `release` is set (the jobs wait for it)."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def run(self, job: Callable[[], Any]) -> Any:
        self.release.wait(60)
        return job()

    def warm_up(self) -> None:
        pass

    def close(self) -> None:
        self.release.set()


async def _until_status(pg, media_id, status: str, seconds: float = 20) -> bool:
    deadline = asyncio.get_running_loop().time() + seconds
    while (await _status(pg, media_id))["processing_status"] != status:
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def test_a_wake_up_fills_an_idle_slot_while_another_job_runs(
    client, factory, app, pg, settings, bucket_dir
):
    """A phone sync: the first registration wakes the worker, which finds one media; the next
    one, registered while that job runs, must take the other slot, not wait for it."""
    _, _, (first, second) = await _completed_media(client, factory, count=2)
    context = app.state.context
    held = _HeldSandbox()
    worker = MediaProcessor(
        context.database,
        context.storage,
        context.analytics,
        settings.model_copy(update={"media_processing_workers": 2}),
        sandbox=held,  # type: ignore[arg-type]
    )
    worker.start()
    try:
        await _simulate_crash(pg, bucket_dir, [first], status="pending", claimed_ago=0)
        worker.wake()
        assert await _until_status(pg, first, "processing")

        await _simulate_crash(pg, bucket_dir, [second], status="pending", claimed_ago=0)
        worker.wake()

        assert await _until_status(pg, second, "processing"), "waited for the running job"
        held.release.set()
        assert await _until_status(pg, first, "completed")
        assert await _until_status(pg, second, "completed")
    finally:
        held.release.set()
        await worker.stop()


async def test_a_passing_storage_failure_is_retried(
    client, factory, app, pg, settings, monkeypatch, bucket_dir
):
    _, _, (media_id,) = await _completed_media(client, factory)
    await _simulate_crash(pg, bucket_dir, [media_id], status="pending", claimed_ago=0)
    await pg.execute(
        "update public.memory_media set processing_attempts = 0 where id = $1", media_id
    )
    storage = app.state.context.storage
    real_download = storage.download_to

    async def flaky(path, dest):
        raise OSError("storage is briefly away")

    monkeypatch.setattr(storage, "download_to", flaky)
    await processor(app).sweep()
    row = await _status(pg, media_id)
    assert row["processing_status"] == "processing"  # claim kept; it goes stale, then retried
    assert row["metadata"]["last_error"] == "processing was interrupted; it will be retried"

    monkeypatch.setattr(storage, "download_to", real_download)
    await pg.execute(
        "update public.memory_media set processing_claimed_at = now() - interval '1 day'"
        " where id = $1",
        media_id,
    )
    await processor(app).sweep()
    row = await _status(pg, media_id)
    assert row["processing_status"] == "completed"
    assert row["processing_attempts"] == 2
    assert "last_error" not in row["metadata"]


async def test_outcomes_are_counted_and_recorded(client, factory, app, pg):
    completed_before = MEDIA_PROCESSED.labels("completed")._value.get()
    family, memory, (media_id,) = await _completed_media(client, factory)
    assert MEDIA_PROCESSED.labels("completed")._value.get() == completed_before + 1

    await app.state.context.analytics.flush()
    event = await pg.fetchrow(
        "select user_id, metadata from public.analytics_events"
        " where event_type = 'media_processed' and family_unit_id = $1",
        uuid.UUID(family.id),
    )
    assert event is not None
    metadata = event["metadata"]
    assert metadata["media_id"] == str(media_id)
    assert metadata["memory_id"] == memory["id"]
    assert metadata["outcome"] == "completed"
    assert metadata["mime_type"] == "image/webp"
    assert isinstance(metadata["duration_ms"], int)
