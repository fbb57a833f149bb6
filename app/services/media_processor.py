"""Background media work: check, measure and make the derivatives of each registered file
(thumbnail, preview, playback rendition), read when and where it was taken; clean storage.

The state lives in `memory_media.processing_status`, never only in this process:

    pending ──claim──▶ processing ──▶ completed
       ▲                  │    └────▶ failed (metadata.error says why)
       │                  └─ process died or storage hiccup: the claim goes stale and
       │                     the sweep claims it again, up to `media_max_attempts`.
       └── released when this process stops in the middle of a job

A claim is one statement (status, `processing_claimed_at`, `processing_attempts + 1`), taken
with `FOR UPDATE SKIP LOCKED` by the sweep, so any number of processes (API processes,
`timeless worker`s on other machines) can sweep at once without two of them claiming the
same media. Results are written only while the claim is still the one taken (same attempt
number), so a late worker cannot overwrite a newer one. While a job runs its claim is renewed
(a heartbeat every third of `media_stale_after_seconds`), so a long job is never mistaken
for a dead one, and a dead process's claims go stale within `media_stale_after_seconds`.

Scheduling: at most `media_processing_workers` jobs at once per process; a media is claimed
only when a slot is free, so what this process cannot start yet stays `pending` for any other
process. Work starts on a registration in this process (`process`), on a NOTIFY from another
one (`wake`, see app.db.wakeups), or at the periodic sweep.

The file work (`app.adapters.media.process_file`, a pure function of plain values) never runs
in this process: each job runs in a child process with a memory ceiling and time limits
(app.adapters.media.sandbox). A decoder that crashes, runs out of its memory or of its time
fails that media with a reason; this process only downloads, waits and uploads, so its memory
does not grow with the media it processes. The database is only touched in short
transactions around a job (and once every few seconds to publish a long transcode's
progress). Background work runs in `system_session()`: there is no user, and it only touches
the media it claimed.
"""

import asyncio
import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import partial
from pathlib import Path
from typing import Any, Final, TypeVar
from uuid import UUID

import asyncpg

from app.adapters.media import MediaLimits, MediaRejected, MediaResult, process_file
from app.adapters.media.common import PROGRESS_FILE
from app.adapters.media.sandbox import JobKilled, JobLimits, Sandbox, SandboxClosed
from app.adapters.storage.base import StorageBackend
from app.config import Settings
from app.db.postgres import Database
from app.errors import NotFound
from app.metrics import (
    BACKGROUND_QUEUE_DEPTH,
    MEDIA_JOBS_KILLED,
    MEDIA_PROCESSED,
    MEDIA_PROCESSING_SECONDS,
)
from app.services import storage_service
from app.services.analytics_service import AnalyticsRecorder, EventType
from app.services.media_paths import variant_path_for

logger = logging.getLogger(__name__)

# How often a running job's progress file is read and, when it moved, published.
_PROGRESS_POLL_SECONDS: Final = 2.0

T = TypeVar("T")


@dataclass(frozen=True)
class Claim:
    id: UUID
    memory_id: UUID | None  # None: an avatar
    family_unit_id: UUID
    storage_path: str
    mime_type: str
    processing_attempts: int
    sha256: str | None


# Right after registration: only if nobody has claimed it yet.
_CLAIM_NEW = """
update public.memory_media
set processing_status = 'processing', processing_claimed_at = now(),
    processing_attempts = processing_attempts + 1, updated_at = now()
where id = $1 and processing_status = 'pending'
returning id, memory_id, family_unit_id, storage_path, mime_type, processing_attempts, sha256
"""
# The sweep: anything pending, or processing under a claim older than $1 seconds.
_CLAIM_STALE = """
with claimable as (
  select id from public.memory_media
  where processing_attempts < $3
    and (processing_status = 'pending'
         or (processing_status = 'processing'
             and processing_claimed_at < now() - make_interval(secs => $1)))
  order by created_at
  limit $2
  for update skip locked
)
update public.memory_media m
set processing_status = 'processing', processing_claimed_at = now(),
    processing_attempts = m.processing_attempts + 1, updated_at = now()
from claimable
where m.id = claimable.id
returning m.id, m.memory_id, m.family_unit_id, m.storage_path, m.mime_type,
          m.processing_attempts, m.sha256
"""
_GIVE_UP = """
update public.memory_media
set processing_status = 'failed',
    metadata = metadata || jsonb_build_object(
      'error', format('processing did not finish after %s attempts', processing_attempts)),
    processing_claimed_at = null, updated_at = now()
where processing_attempts >= $2
  and (processing_status = 'pending'
       or (processing_status = 'processing'
           and processing_claimed_at < now() - make_interval(secs => $1)))
"""
# The result is written only under the claim that produced it ($2 = its attempt number).
# Values travel as one JSON object ($3) read with the table's own row type. The position is
# kept only when the family has turned keep_location on, decided here, at the last moment.
_COMPLETE = """
update public.memory_media m
set processing_status = 'completed', mime_type = r.mime_type, width = r.width,
    height = r.height, duration = r.duration, thumbnail_path = r.thumbnail_path,
    variants = r.variants, placeholder = r.placeholder, taken_at = r.taken_at,
    taken_at_offset = r.taken_at_offset, camera = r.camera,
    sha256 = coalesce(m.sha256, r.sha256),
    metadata = (m.metadata - 'error' - 'last_error' - 'progress' - 'location') || r.metadata
      || case when f.keep_location and $4::jsonb is not null
              then jsonb_build_object('location', $4::jsonb) else '{}'::jsonb end,
    processing_claimed_at = null, updated_at = now()
from jsonb_populate_record(null::public.memory_media, $3::jsonb) r,
     public.family_units f
where m.id = $1 and m.processing_status = 'processing' and m.processing_attempts = $2
  and f.id = m.family_unit_id
returning m.id
"""
# A memory without a date takes the earliest capture date of its media; a date a member set
# is never touched (memory_date_from_media turns false when anyone edits it).
_MEMORY_DATE_FROM_MEDIA = """
update public.memories
set memory_date = $2, memory_date_from_media = true
where id = $1 and (memory_date is null or (memory_date_from_media and memory_date > $2))
"""
_DUPLICATE_OF = """
select id from public.memory_media
where family_unit_id = $1 and sha256 = $2 and purpose = 'memory' and id <> $3
"""
_NOTE_DUPLICATE = """
update public.memory_media
set metadata = metadata || jsonb_build_object('duplicate_of', $2::text)
where id = $1
"""
_PROGRESS = """
update public.memory_media
set metadata = metadata || jsonb_build_object('progress', $3::float8), updated_at = now()
where id = $1 and processing_status = 'processing' and processing_attempts = $2
"""
_FAIL = """
update public.memory_media
set processing_status = 'failed', metadata = metadata || jsonb_build_object('error', $3::text),
    processing_claimed_at = null, updated_at = now()
where id = $1 and processing_status = 'processing' and processing_attempts = $2
returning id
"""
# This process is stopping mid-job: hand the media back at once, without counting the attempt.
_RELEASE = """
update public.memory_media
set processing_status = 'pending', processing_claimed_at = null,
    processing_attempts = processing_attempts - 1, updated_at = now()
where id = $1 and processing_status = 'processing' and processing_attempts = $2
returning id
"""
# The heartbeat: the claims of the jobs still running here are alive.
_RENEW = """
update public.memory_media m
set processing_claimed_at = now()
from unnest($1::uuid[], $2::int[]) as held(id, attempts)
where m.id = held.id and m.processing_attempts = held.attempts
  and m.processing_status = 'processing'
"""
# A passing problem (storage, database, a bug): keep the claim; it goes stale and is retried.
_NOTE_RETRY = """
update public.memory_media
set metadata = metadata || jsonb_build_object('last_error', $3::text), updated_at = now()
where id = $1 and processing_status = 'processing' and processing_attempts = $2
returning id
"""

_RETRY_MESSAGE = "processing was interrupted; it will be retried"
_DUPLICATE_MESSAGE = "the same file is already in this family"
_GAVE_UP_MESSAGE = "processing failed after {attempts} attempts"


def job_limits(settings: Settings) -> JobLimits:
    return JobLimits(
        memory_bytes=settings.media_job_memory_bytes,
        cpu_seconds=settings.media_job_cpu_seconds,
        wall_seconds=settings.media_job_timeout_seconds,
        heif_decode_threads=settings.media_heif_decode_threads
        or heif_threads_per_job(settings.media_processing_workers, _usable_cpus()),
    )


# pillow-heif's own default, and the most a job gets when the CPUs are left to one job.
_MAX_HEIF_THREADS: Final = 4


def heif_threads_per_job(jobs_at_once: int, cpus: int) -> int:
    """libheif's decoding threads for each job: the CPUs shared among the jobs run at once.

    libheif decodes a grid's tiles on its own threads; more threads than a job's share of
    the CPUs only queue behind the other jobs' (measured in docs/performance.md: two jobs
    on 2 CPUs with 4 threads each took more CPU and more time than with one each).
    """
    return max(1, min(_MAX_HEIF_THREADS, cpus // max(1, jobs_at_once)))


def _usable_cpus() -> int:
    # The CPUs this process may run on (a container's cpuset), not all the machine's.
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class MediaProcessor:
    def __init__(
        self,
        database: Database,
        storage: StorageBackend,
        analytics: AnalyticsRecorder,
        settings: Settings,
        sandbox: Sandbox | None = None,
    ):
        self._database = database
        self._storage = storage
        self._analytics = analytics
        self._settings = settings
        self._workers = max(1, settings.media_processing_workers)
        # A free slot is needed before a claim: nothing claimed here waits for a slot.
        self._slots = asyncio.Semaphore(self._workers)
        # These threads only wait for the job's child process; the work happens there.
        self._executor = ThreadPoolExecutor(self._workers, thread_name_prefix="media")
        self._sandbox = sandbox or Sandbox(
            job_limits(settings), jobs_per_child=settings.media_jobs_per_child
        )
        self._held: dict[UUID, Claim] = {}
        self._idle = asyncio.Event()  # set whenever no job is held
        self._wake = asyncio.Event()
        self._started = False
        self._stopping = False
        self._loops: list[asyncio.Task[None]] = []
        # The claim loops the periodic sweep and the wake-ups started (see `_top_up`).
        self._drains: set[asyncio.Task[None]] = set()

    # Lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Run the jobs here: the sweep (on wake-ups and every interval), the claims' heartbeat
        and the orphan sweep. An interval <= 0 turns that periodic pass off."""
        settings = self._settings
        self._started = True
        # The children's forkserver imports the decoders once (about a second): before the
        # first job rather than during it.
        asyncio.get_running_loop().run_in_executor(self._executor, self._warm_up)
        self._loops.append(asyncio.create_task(self._sweeping(), name="media-sweep"))
        heartbeat = max(1.0, settings.media_stale_after_seconds / 3)
        self._loops.append(
            asyncio.create_task(_every(heartbeat, self._renew_claims, "media-heartbeat"))
        )
        if settings.orphan_sweep_interval_seconds > 0:
            self._loops.append(
                asyncio.create_task(
                    _every(settings.orphan_sweep_interval_seconds, self.sweep_orphans, "orphans"),
                    name="orphan-sweep",
                )
            )

    def _warm_up(self) -> None:
        try:
            self._sandbox.warm_up()
        except Exception:
            logger.exception("the media sandbox did not start; jobs will try again")

    async def stop(self) -> None:
        """Kill the running jobs' children and hand their media back, then stop the loops."""
        self._stopping = True
        # Joining the idle children blocks for a moment: not on the event loop.
        await asyncio.to_thread(self._sandbox.close)
        # The jobs end at once (their children are gone); let them release their claims.
        if self._held:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout=5)
        tasks = [*self._loops, *self._drains]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._loops = []
        self._executor.shutdown(wait=False, cancel_futures=True)

    def wake(self) -> None:
        """Media was registered elsewhere (a NOTIFY): sweep now rather than at the interval."""
        self._wake.set()

    # Work -----------------------------------------------------------------------------------

    async def process(self, media_ids: Sequence[UUID]) -> None:
        """Process newly registered media now (a background task after the response).

        Nothing when this process runs no background jobs (`timeless serve --no-worker`): the
        media stays `pending` until a worker claims it.
        """
        if not self._started:
            return
        await asyncio.gather(*(self._process_new(media_id) for media_id in media_ids))

    async def sweep(self) -> int:
        """Finish unfinished media: give up on exhausted ones, claim and process the rest.

        As many jobs at a time as there are slots, each claimed as a slot frees up, until
        nothing is left to claim. Returns how many were processed.
        """
        await self._give_up_exhausted()
        done = await asyncio.gather(*(self._drain() for _ in range(self._workers)))
        return sum(done)

    async def _give_up_exhausted(self) -> None:
        async with self._database.system_session() as db:
            await db.execute(
                _GIVE_UP,
                self._settings.media_stale_after_seconds,
                self._settings.media_max_attempts,
            )

    async def _drain(self) -> int:
        processed = 0
        while not self._stopping:
            async with self._slots:
                async with self._database.system_session() as db:
                    row = await db.fetchrow(
                        _CLAIM_STALE,
                        self._settings.media_stale_after_seconds,
                        1,
                        self._settings.media_max_attempts,
                    )
                if row is None:
                    return processed
                await self._run(Claim(**dict(row)))
            processed += 1
        return processed

    async def _sweeping(self) -> None:
        interval = self._settings.media_sweep_interval_seconds
        while True:
            # The first pass waits too (start-up stays quick) unless woken: the wake-ups
            # listener wakes every job once it listens.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval if interval > 0 else None)
            self._wake.clear()
            try:
                await self._give_up_exhausted()
            except Exception:
                logger.exception("background job failed", extra={"job": "media-sweep"})
            self._top_up()

    def _top_up(self) -> None:
        """One claim loop per slot, without waiting for the loops still running.

        A loop that found nothing pending has ended; one that is busy with a long job (a
        video's rendition) goes on. Waiting for it before starting new loops would leave the
        other slots idle while the media registered meanwhile stay pending: measured, a phone
        sync ran one job at a time with two slots (docs/performance.md).
        """
        while len(self._drains) < self._workers and not self._stopping:
            task = asyncio.create_task(self._drain_logged(), name="media-drain")
            self._drains.add(task)
            task.add_done_callback(self._drains.discard)

    async def _drain_logged(self) -> None:
        try:
            await self._drain()
        except Exception:
            logger.exception("background job failed", extra={"job": "media-sweep"})

    async def sweep_orphans(self) -> int:
        return await storage_service.remove_orphans(
            self._database,
            self._storage,
            grace_seconds=self._settings.orphan_object_grace_seconds,
        )

    async def _process_new(self, media_id: UUID) -> None:
        async with self._slots:
            if self._stopping:
                return  # still pending: the next process to sweep takes it
            try:
                async with self._database.system_session() as db:
                    row = await db.fetchrow(_CLAIM_NEW, media_id)
            except Exception:
                # The sweep will find it pending.
                logger.exception("could not claim media", extra={"media_id": str(media_id)})
                return
            if row is not None:
                await self._run(Claim(**dict(row)))

    async def _renew_claims(self) -> int:
        held = list(self._held.values())
        if not held:
            return 0
        async with self._database.system_session() as db:
            await db.execute(_RENEW, [c.id for c in held], [c.processing_attempts for c in held])
        return len(held)

    async def _run(self, claim: Claim) -> None:
        """Process one claimed media item; never raises."""
        started = time.perf_counter()
        self._held[claim.id] = claim
        self._idle.clear()
        BACKGROUND_QUEUE_DEPTH.labels("media").set(len(self._held))
        outcome = "failed"
        mime_type = claim.mime_type
        try:
            try:
                result = await self._derive(claim)
            except MediaRejected as exc:
                if isinstance(exc, JobKilled):
                    MEDIA_JOBS_KILLED.labels(exc.cause).inc()
                    logger.warning(
                        "media job killed",
                        extra={"media_id": str(claim.id), "cause": exc.cause},
                    )
                await self._finish(_FAIL, claim, exc.reason)
            except NotFound:
                await self._finish(_FAIL, claim, "the uploaded file is missing")
            else:
                mime_type = result.mime_type
                if await self._complete(claim, result):
                    outcome = "completed"
        except SandboxClosed:
            outcome = "released"
            await self._release(claim)
        except Exception:
            logger.exception("media processing error", extra={"media_id": str(claim.id)})
            outcome = "error"
            await self._after_error(claim)
        finally:
            self._held.pop(claim.id, None)
            if not self._held:
                self._idle.set()
            BACKGROUND_QUEUE_DEPTH.labels("media").set(len(self._held))
        if outcome == "released":
            return
        seconds = time.perf_counter() - started
        MEDIA_PROCESSED.labels(outcome).inc()
        MEDIA_PROCESSING_SECONDS.observe(seconds)
        self._analytics.record(
            EventType.MEDIA_PROCESSED,
            family_unit_id=claim.family_unit_id,
            media_id=claim.id,
            memory_id=claim.memory_id,
            outcome=outcome,
            mime_type=mime_type,
            duration_ms=round(seconds * 1000),
        )

    def limits(self, *, compute_sha256: bool) -> MediaLimits:
        return MediaLimits(
            max_pixels=self._settings.max_image_pixels,
            max_decoded_bytes=self._settings.max_decoded_image_bytes,
            transcode_cpu_seconds=self._settings.media_transcode_cpu_seconds,
            compute_sha256=compute_sha256,
        )

    def _in_sandbox(self, job: Callable[[], T]) -> "asyncio.Future[T]":
        """Run `job` (picklable) in a child process; see app.adapters.media.sandbox."""
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(self._executor, self._sandbox.run, job)

    async def _derive(self, claim: Claim) -> MediaResult:
        """Download, run process_file in a child process, and store every derivative it made."""
        with tempfile.TemporaryDirectory(prefix="timeless-media-") as work:
            source, output = Path(work) / "original", Path(work) / "out"
            output.mkdir()
            await self._storage.download_to(claim.storage_path, source)
            job = partial(
                process_file,
                source,
                claim.mime_type,
                output,
                self.limits(compute_sha256=claim.sha256 is None),
            )
            future = self._in_sandbox(job)
            result = await self._with_progress(claim, future, output / PROGRESS_FILE)
            for variant in result.variants:
                await self._storage.upload_file(
                    variant_path_for(claim.storage_path, variant.name),
                    output / variant.file,
                    variant.mime_type,
                )
        return result

    async def _with_progress(
        self, claim: Claim, future: "asyncio.Future[MediaResult]", progress_file: Path
    ) -> MediaResult:
        """Wait for the job, publishing what its progress file says every few seconds."""
        published = None
        while True:
            done, _ = await asyncio.wait({future}, timeout=_PROGRESS_POLL_SECONDS)
            if done:
                return future.result()
            progress = await asyncio.to_thread(_read_progress, progress_file)
            if progress is not None and progress != published:
                published = progress
                try:
                    async with self._database.system_session() as db:
                        await db.execute(_PROGRESS, claim.id, claim.processing_attempts, progress)
                except Exception:
                    # Only a hint for clients; the job itself goes on.
                    logger.warning("could not publish progress", extra={"media_id": str(claim.id)})

    async def _complete(self, claim: Claim, result: MediaResult) -> bool:
        """Write the result; False when it is a duplicate (then the media failed)."""
        values = _result_row(claim, result)
        capture = result.capture
        location = None
        if capture.latitude is not None and capture.longitude is not None:
            location = {"lat": capture.latitude, "lon": capture.longitude}
        try:
            async with self._database.system_session() as db:
                updated = await db.fetchval(
                    _COMPLETE, claim.id, claim.processing_attempts, values, location
                )
                taken_on = _local_date(capture.taken_at)
                if updated is not None and claim.memory_id is not None and taken_on is not None:
                    await db.execute(_MEMORY_DATE_FROM_MEDIA, claim.memory_id, taken_on)
        except asyncpg.UniqueViolationError:
            # The digest was only known now (Supabase Storage takes none at upload): the same
            # bytes are already in the family.
            await self._fail_as_duplicate(claim, result.sha256)
            return False
        # No row updated: the media was deleted meanwhile (its files are then removed by the
        # orphan sweep) or another process holds a newer claim and writes its own result.
        return True

    async def _fail_as_duplicate(self, claim: Claim, sha256: str | None) -> None:
        async with self._database.system_session() as db:
            original = await db.fetchval(_DUPLICATE_OF, claim.family_unit_id, sha256, claim.id)
            await db.fetchval(_FAIL, claim.id, claim.processing_attempts, _DUPLICATE_MESSAGE)
            if original is not None:
                await db.execute(_NOTE_DUPLICATE, claim.id, str(original))

    async def _finish(self, statement: str, claim: Claim, *message: str) -> None:
        async with self._database.system_session() as db:
            await db.fetchval(statement, claim.id, claim.processing_attempts, *message)

    async def _release(self, claim: Claim) -> None:
        try:
            await self._finish(_RELEASE, claim)
        except Exception:
            # The claim goes stale instead, and is taken again then.
            logger.exception("could not release media", extra={"media_id": str(claim.id)})

    async def _after_error(self, claim: Claim) -> None:
        try:
            if claim.processing_attempts >= self._settings.media_max_attempts:
                message = _GAVE_UP_MESSAGE.format(attempts=claim.processing_attempts)
                await self._finish(_FAIL, claim, message)
            else:
                await self._finish(_NOTE_RETRY, claim, _RETRY_MESSAGE)
        except Exception:
            # The database is away too: the claim goes stale and the sweep decides later.
            logger.exception("could not record media error", extra={"media_id": str(claim.id)})


def _result_row(claim: Claim, result: MediaResult) -> dict[str, Any]:
    """The columns a completed result sets, as JSON for jsonb_populate_record."""
    info, capture = result.info, result.capture
    variants = {
        variant.name: {
            "path": variant_path_for(claim.storage_path, variant.name),
            "mime_type": variant.mime_type,
            "width": variant.width,
            "height": variant.height,
            "size": variant.size,
        }
        for variant in result.variants
    }
    taken_at, offset = None, None
    if capture.taken_at is not None:
        utc_offset = capture.taken_at.utcoffset()
        if utc_offset is None:  # local time, zone unknown: kept as if UTC, shown without offset
            taken_at = capture.taken_at.replace(tzinfo=UTC)
        else:
            taken_at, offset = capture.taken_at, round(utc_offset.total_seconds() / 60)
    camera = {"make": capture.camera_make, "model": capture.camera_model}
    details = {"codec": info.codec, "frame_count": info.frame_count}
    return {
        "mime_type": info.mime_type,
        "width": info.width,
        "height": info.height,
        "duration": info.duration,
        "thumbnail_path": variants.get("thumbnail", {}).get("path"),
        "variants": variants,
        "placeholder": result.placeholder,
        "taken_at": taken_at.isoformat() if taken_at is not None else None,
        "taken_at_offset": offset,
        "camera": camera if any(camera.values()) else None,
        "sha256": result.sha256,
        "metadata": {key: value for key, value in details.items() if value is not None},
    }


def _local_date(taken_at: datetime | None) -> date | None:
    """The calendar day where it was taken (the wall clock's, offset or not)."""
    return taken_at.date() if taken_at is not None else None


def _read_progress(file: Path) -> float | None:
    try:
        return round(float(file.read_text()), 2)
    except (OSError, ValueError):
        return None


async def _every(interval: float, job: Callable[[], Awaitable[int]], name: str) -> None:
    # The first run waits one interval too: start-up stays quick, and a restarted process
    # still picks up what a crashed one left within one interval.
    while True:
        await asyncio.sleep(interval)
        try:
            await job()
        except Exception:
            logger.exception("background job failed", extra={"job": name})
