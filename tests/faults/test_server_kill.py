"""The server is killed (SIGKILL) while it processes media (issue #7, part 4).

SIGKILL runs no shutdown code: claims stay `processing`, a thumbnail may be half written.
A new server on the same database and storage must finish every one of them, because the
state lives in `memory_media`, not in the dead process: the sweep re-claims stale claims
(short MEDIA_STALE_AFTER_SECONDS / MEDIA_SWEEP_INTERVAL_SECONDS here) and unclaimed
`pending` rows.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from PIL import Image

from tests.faults.server import ApiServer, EmbeddedPostgres
from tests.helpers.factories import Factory
from tests.helpers.media_samples import create_memory, picture, register, send_bytes, upload_url

pytestmark = pytest.mark.faults

MEDIA_COUNT = 10
SHORT_SWEEPS = {
    "MEDIA_SWEEP_INTERVAL_SECONDS": "1",
    "MEDIA_STALE_AFTER_SECONDS": "3",
    # One thread: the media queue up behind each other, so the kill finds work in flight.
    "MEDIA_PROCESSING_WORKERS": "1",
}

_STATUSES = """
select id::text, processing_status, processing_attempts, thumbnail_path, metadata
from public.memory_media where memory_id = $1::uuid order by created_at
"""
# What a process leaves behind when it dies between registering a media and claiming it.
_REGISTERED_NOT_CLAIMED = """
insert into public.memory_media (id, memory_id, family_unit_id, storage_path, file_name,
                                 mime_type, file_size, processing_status)
values ($1::uuid, $2::uuid, $3::uuid, $4, 'late.webp', 'image/webp', $5, 'pending')
"""


def _large_webps(count: int) -> list[bytes]:
    """12 MP WebPs: about half a second each to decode and thumbnail here, so work piles up.

    Each differs in one pixel: a family refuses the same bytes twice (duplicate_media)."""
    size = (4000, 3000)
    image = Image.blend(picture(size), Image.effect_noise(size, 30).convert("RGB"), 0.2)
    photos = []
    for index in range(count):
        image.putpixel((index, 0), (index, 255 - index, 7))
        out = io.BytesIO()
        image.save(out, "WEBP", quality=60, method=0)
        photos.append(out.getvalue())
    return photos


async def _statuses(conn: asyncpg.Connection, memory_id: str) -> list[dict[str, Any]]:
    return [dict(row) for row in await conn.fetch(_STATUSES, memory_id)]


async def test_media_interrupted_by_sigkill_are_finished_after_restart(
    postgres: EmbeddedPostgres, fault_dir: Path, pg_conn: asyncpg.Connection
) -> None:
    data_dir = fault_dir / "data"
    photos = await asyncio.to_thread(_large_webps, MEDIA_COUNT)
    first = ApiServer(postgres.dsn, data_dir, SHORT_SWEEPS)
    try:
        first.start()
        async with httpx.AsyncClient(base_url=first.url, timeout=30) as client:
            adult = await Factory(client).register("adult")
            memory = await create_memory(client, adult, title="Photos of the summer")
            registered: list[str] = []
            for index, photo in enumerate(photos):
                ticket = await upload_url(
                    client, adult, memory["id"], "image/webp", file_size=len(photo)
                )
                assert ticket.status_code == 200, ticket.text
                sent = await send_bytes(client, ticket.json(), photo)
                assert sent.status_code == 201, sent.text
                if index == MEDIA_COUNT - 1:
                    # The last one is stored but its process "dies" before registering it.
                    late = ticket.json()
                    break
                registration = await register(
                    client,
                    adult,
                    memory["id"],
                    ticket.json(),
                    mime_type="image/webp",
                    file_size=len(photo),
                )
                assert registration.status_code == 201, registration.text
                registered.append(registration.json()["id"])
        await pg_conn.execute(
            _REGISTERED_NOT_CLAIMED,
            late["media_id"],
            memory["id"],
            adult.family_id,
            late["storage_path"],
            len(photo),
        )
        registered.append(str(late["media_id"]))

        # Kill once processing is under way, with a file being processed at that moment
        # (between two jobs, for a few milliseconds, none is) and plenty still unfinished.
        deadline = time.monotonic() + 20
        while True:
            counts = Counter(m["processing_status"] for m in await _statuses(pg_conn, memory["id"]))
            if counts["completed"] >= 1 and counts["processing"] >= 1:
                break
            assert time.monotonic() < deadline, f"processing never started: {counts}"
            await asyncio.sleep(0.02)
        first.kill()
    finally:
        first.stop()

    at_kill = await _statuses(pg_conn, memory["id"])
    unfinished = [m["id"] for m in at_kill if m["processing_status"] in ("pending", "processing")]
    assert len(unfinished) >= 3, f"too little in flight to prove anything: {at_kill}"
    assert any(m["processing_status"] == "processing" for m in at_kill)

    second = ApiServer(postgres.dsn, data_dir, SHORT_SWEEPS)
    try:
        second.start()
        deadline = time.monotonic() + 45
        while True:
            final = await _statuses(pg_conn, memory["id"])
            if all(m["processing_status"] in ("completed", "failed") for m in final):
                break
            assert time.monotonic() < deadline, f"not finished after restart: {final}"
            await asyncio.sleep(0.1)
    finally:
        second.stop()

    assert sorted(m["id"] for m in final) == sorted(registered), "media rows lost or doubled"
    for media in final:
        # Valid photos: a retry must complete them, not give up on them.
        assert media["processing_status"] == "completed", media
        assert "error" not in media["metadata"], media
        thumbnail = data_dir / "storage" / "memories" / media["thumbnail_path"]
        with Image.open(thumbnail) as image:
            assert image.format == "JPEG" and max(image.size) <= 400
    retried = {m["id"]: m["processing_attempts"] for m in final if m["id"] in unfinished}
    assert all(attempts >= 1 for attempts in retried.values()), retried
    assert any(attempts >= 2 for attempts in retried.values()), (
        f"no stale claim was taken over after the kill: {retried}"
    )
