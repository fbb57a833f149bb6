"""A decoder that crashes, blows up its memory or hangs fails its own media, nothing more.

The app's media processor runs the decoder stand-in of tests/helpers/decoder_double.py (the
real decoder unless the file carries a marker) in its sandbox, with small limits here, and
the files are uploaded and registered through the API as a phone does.
"""

import asyncio
import os
from collections.abc import Iterator

import pytest

import app.services.media_processor as media_processor
from app.adapters.media.sandbox import (
    CRASHED_REASON,
    MEMORY_REASON,
    TIMEOUT_REASON,
    JobLimits,
    Sandbox,
)
from app.metrics import MEDIA_JOBS_KILLED
from tests.helpers import decoder_double as double
from tests.helpers import media_samples as samples

MiB = 1024 * 1024


@pytest.fixture
def misbehaving_decoder(app, monkeypatch) -> Iterator[Sandbox]:
    box = Sandbox(JobLimits(memory_bytes=192 * MiB, cpu_seconds=2, wall_seconds=4))
    monkeypatch.setattr(media_processor, "process_file", double.process_file)
    monkeypatch.setattr(app.state.context.media, "_sandbox", box)
    yield box
    box.close()


async def _upload(client, member, memory_id: str, marker: bytes | None = None) -> str:
    data = samples.jpeg((60, 40))
    if marker is not None:
        data = double.with_marker(data, marker)  # after the JPEG's end: still a valid JPEG
    media = await samples.upload(client, member, memory_id, data, "image/jpeg")
    return str(media["id"])


@pytest.mark.parametrize(
    ("marker", "cause", "reason"),
    [
        (double.SEGFAULT, "crashed", CRASHED_REASON),
        (double.MEMORY_BOMB, "memory", MEMORY_REASON),
        (double.SPIN, "timeout", TIMEOUT_REASON),
        (double.HANG, "timeout", TIMEOUT_REASON),
    ],
)
async def test_a_misbehaving_decoder_fails_its_file_and_the_next_one_completes(
    client, factory, misbehaving_decoder, marker, cause, reason
):
    family = await factory.family(["adult"])
    memory = await samples.create_memory(client, family.adult)
    killed_before = MEDIA_JOBS_KILLED.labels(cause)._value.get()

    bad = await _upload(client, family.adult, memory["id"], marker)
    good = await _upload(client, family.adult, memory["id"])

    failed = await samples.wait_for_media(client, family.adult, memory["id"], bad)
    assert failed["processing_status"] == "failed"
    assert failed["metadata"]["error"] == reason
    assert failed["thumbnail_path"] is None
    done = await samples.wait_for_media(client, family.adult, memory["id"], good)
    assert done["processing_status"] == "completed", done["metadata"]
    assert MEDIA_JOBS_KILLED.labels(cause)._value.get() == killed_before + 1


async def test_the_api_process_never_decodes(client, factory, app, monkeypatch):
    # Every job runs in a child: the decoder never sees this process's pid.
    seen: list[int] = []
    real = media_processor.Sandbox.run

    def spy(self, job):  # type: ignore[no-untyped-def]
        result = real(self, _PidOf(job))
        seen.append(result[0])
        return result[1]

    monkeypatch.setattr(media_processor.Sandbox, "run", spy)
    family = await factory.family(["adult"])
    memory = await samples.create_memory(client, family.adult)
    media = await _upload(client, family.adult, memory["id"])
    done = await samples.wait_for_media(client, family.adult, memory["id"], media)

    assert done["processing_status"] == "completed"
    assert seen and os.getpid() not in seen


class _PidOf:
    """A picklable job that returns (the pid it ran in, what the wrapped job returned)."""

    def __init__(self, job):  # type: ignore[no-untyped-def]
        self.job = job

    def __call__(self):  # type: ignore[no-untyped-def]
        return os.getpid(), self.job()


async def test_a_job_still_running_keeps_its_claim_alive(app, pg, factory, client, monkeypatch):
    # A job longer than media_stale_after_seconds is not taken over by another process:
    # its claim is renewed while it runs.
    processor = app.state.context.media
    family = await factory.family(["adult"])
    memory = await samples.create_memory(client, family.adult)
    monkeypatch.setattr(media_processor, "process_file", double.process_file)
    # The test client returns once the background processing is done: upload aside.
    upload = asyncio.create_task(_upload(client, family.adult, memory["id"], double.SLOW))
    await _until(lambda: bool(processor._held))
    (media_id,) = list(processor._held)
    await pg.execute(
        "update public.memory_media set processing_claimed_at = now() - interval '1 day'"
        " where id = $1",
        media_id,
    )

    assert await processor._renew_claims() == 1

    row = await pg.fetchrow(
        "select processing_status, processing_attempts,"
        " processing_claimed_at > now() - interval '1 minute' as fresh"
        " from public.memory_media where id = $1",
        media_id,
    )
    assert (row["processing_status"], row["processing_attempts"], row["fresh"]) == (
        "processing",
        1,
        True,
    )
    assert str(media_id) == await upload
    done = await samples.wait_for_media(client, family.adult, memory["id"], str(media_id))
    assert done["processing_status"] == "completed"


async def _until(condition, seconds: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not condition():
        assert loop.time() < deadline, "never happened"
        await asyncio.sleep(0.02)
