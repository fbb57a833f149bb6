"""The background job that makes a family's archive: claims, progress, results, the sweep.

The state lives in `public.archive_exports`, never only in this process:

    queued ──claim──▶ running ──▶ completed   (zip stored; removed after ARCHIVE_EXPORT_TTL_DAYS)
      ▲                  │  └───▶ failed      (error says why, in plain words)
      └── retry later ◀──┘        (storage or database trouble; up to ARCHIVE_MAX_ATTEMPTS)

A claim is taken with `FOR UPDATE SKIP LOCKED`, so any number of processes can run the job
without two of them making the same export. It lasts `ARCHIVE_CLAIM_SECONDS` and is renewed
with every progress write (about once a second), so a process that died leaves a claim that
runs out, and another process takes the export over and makes it again from the start.
Every write is made under the claim that produced it (same attempt number): a run that lost
its claim stops, and its result is never recorded. A server that stops gracefully hands its
export back at once (not counted as an attempt).

One export at a time per process: it is disk and network work, and the family waits for it
anyway. The zip is written through `StorageBackend.staged_object` into the archives bucket:
`{family_unit_id}/{export id}/{bag name}.zip`. A family keeps its latest export: when one
completes, the family's earlier completed exports (and their files) go.
"""

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from app.adapters.storage.base import StorageBackend
from app.config import Settings
from app.db.postgres import Connection, Database
from app.errors import DATABASE_BUSY, InsufficientStorage, ServiceUnavailable
from app.metrics import BACKGROUND_QUEUE_DEPTH
from app.models.rbac import Permission
from app.services import archive_writer, events_service
from app.services.archive_writer import Progress
from app.services.events_service import EventType
from app.services.export_service import ZIP_TYPE, archive_object_path
from app.services.polling_job import PollingJob

logger = logging.getLogger(__name__)

# Progress is written (and the claim renewed) at most this often.
PROGRESS_EVERY_SECONDS = 1.0
_SWEEP_EVERY_SECONDS = 3600.0
# Files in the archives bucket that no job names are removed once this old (a crashed run's).
_ORPHAN_AGE_SECONDS = 24 * 3600.0

# Give up on exports whose every attempt died.
_GIVE_UP = """
update public.archive_exports
set status = 'failed', claimed_until = null, finished_at = now(),
    error = format('The export did not finish after %s attempts', attempts)
where status = 'running' and claimed_until < now() and attempts >= $1
returning id, family_unit_id, files_done, files_total, bytes_done
"""
_CLAIM = """
with due as (
  select id from public.archive_exports
  where (status = 'queued' and (claimed_until is null or claimed_until < now()))
     or (status = 'running' and claimed_until < now())
  order by created_at
  limit 1
  for update skip locked
)
update public.archive_exports e
set status = 'running', attempts = e.attempts + 1, started_at = coalesce(e.started_at, now()),
    claimed_until = now() + make_interval(secs => $1), files_done = 0, bytes_done = 0
from due
where e.id = due.id
returning e.id, e.family_unit_id, e.include, e.attempts
"""
_PROGRESS = """
update public.archive_exports
set files_done = $3, files_total = $4, bytes_done = $5,
    claimed_until = now() + make_interval(secs => $6)
where id = $1 and attempts = $2 and status = 'running'
returning id
"""
_COMPLETE = """
update public.archive_exports
set status = 'completed', storage_path = $3, size_bytes = $4, files_done = files_total,
    bytes_done = $5, error = null, claimed_until = null, finished_at = now(),
    expires_at = now() + make_interval(days => $6)
where id = $1 and attempts = $2 and status = 'running'
returning files_done, files_total, bytes_done
"""
# The family keeps its latest export only.
_SUPERSEDED = """
delete from public.archive_exports
where family_unit_id = $1 and status = 'completed' and id <> $2
returning storage_path
"""
_RETRY = """
update public.archive_exports
set status = 'queued', claimed_until = now() + make_interval(secs => $3), error = $4
where id = $1 and attempts = $2 and status = 'running'
returning id
"""
_FAIL = """
update public.archive_exports
set status = 'failed', claimed_until = null, finished_at = now(), error = $3
where id = $1 and attempts = $2 and status = 'running'
returning files_done, files_total, bytes_done
"""
# A graceful stop hands the export back to be run at once, and that run is not counted.
_HAND_BACK = """
update public.archive_exports
set status = 'queued', claimed_until = null, attempts = attempts - 1
where id = $1 and attempts = $2 and status = 'running'
"""
_EXPIRED = """
delete from public.archive_exports
where (status = 'completed' and expires_at < now())
   or (status = 'failed' and finished_at < now() - make_interval(days => $1))
returning storage_path
"""
_REFERENCED = """
select p from unnest($1::text[]) as p
where exists (select 1 from public.archive_exports e where e.storage_path = p)
"""

STORAGE_FULL = "The server's storage is full"
STORAGE_UNAVAILABLE = "The file storage could not be reached"
DATABASE_TOO_BUSY = "The database was too busy to answer"
UNEXPECTED = "An unexpected error interrupted the export"


@dataclass(frozen=True)
class Claim:
    id: UUID
    family_unit_id: UUID
    include: list[str]
    attempts: int


class LostClaim(Exception):
    """Another process took this export over (or it was deleted): stop, record nothing."""


# Events ------------------------------------------------------------------------------------


async def announce(
    db: Connection, family_unit_id: UUID, event: EventType, data: dict[str, Any]
) -> None:
    """The one place the exporter announces `export.progress` and `export.ready`.

    Called in the (system) transaction that writes the progress or result, so an event goes
    out only if that is stored; only the family's members who may export receive it (the
    same who may GET the job).
    """
    await events_service.publish(
        db, family_unit_id, event, data, permission=Permission.MANAGE_ARCHIVE
    )


def _event_data(export_id: UUID, status: str, row: Any) -> dict[str, Any]:
    return {
        "export_id": str(export_id),
        "status": status,
        "progress": {
            "files_done": row["files_done"],
            "files_total": row["files_total"],
            "bytes_done": row["bytes_done"],
        },
    }


# The job -----------------------------------------------------------------------------------


class ArchiveExporter(PollingJob):
    name = "archive-exporter"

    def __init__(
        self,
        database: Database,
        storage: StorageBackend,
        archives: StorageBackend,
        settings: Settings,
    ) -> None:
        # ARCHIVE_POLL_INTERVAL_SECONDS <= 0 leaves the job off in this process.
        super().__init__(settings.archive_poll_interval_seconds)
        self._database = database
        self._storage = storage
        self._archives = archives
        self._settings = settings
        self._last_sweep = 0.0

    async def run_pass(self) -> bool:
        return await self.run_next()

    async def after_passes(self) -> None:
        if time.monotonic() - self._last_sweep >= _SWEEP_EVERY_SECONDS:
            self._last_sweep = time.monotonic()
            await self.sweep()

    # Work -----------------------------------------------------------------------------------

    async def run_next(self) -> bool:
        """Claim and make one due export; False when there was none."""
        async with self._database.system_session() as db:
            for row in await db.fetch(_GIVE_UP, self._settings.archive_max_attempts):
                await announce(
                    db,
                    row["family_unit_id"],
                    EventType.EXPORT_READY,
                    _event_data(row["id"], "failed", row),
                )
            row = await db.fetchrow(_CLAIM, self._settings.archive_claim_seconds)
        if row is None:
            return False
        claim = Claim(row["id"], row["family_unit_id"], list(row["include"]), row["attempts"])
        BACKGROUND_QUEUE_DEPTH.labels("archive").set(1)
        try:
            await self._make(claim)
        finally:
            BACKGROUND_QUEUE_DEPTH.labels("archive").set(0)
        return True

    async def _make(self, claim: Claim) -> None:
        log = {"export_id": str(claim.id), "attempt": claim.attempts}
        started = time.perf_counter()
        try:
            stored = await self._write(claim)
        except asyncio.CancelledError:
            await asyncio.shield(self._hand_back(claim))
            raise
        except LostClaim:
            logger.warning("archive export taken over by another process", extra=log)
            return
        except InsufficientStorage:
            await self._after_error(claim, STORAGE_FULL)
            return
        except ServiceUnavailable as exc:
            busy = exc.code == DATABASE_BUSY  # no pooled connection came free in time
            await self._after_error(claim, DATABASE_TOO_BUSY if busy else STORAGE_UNAVAILABLE)
            return
        except Exception:
            logger.exception("archive export failed", extra=log)
            await self._after_error(claim, UNEXPECTED)
            return
        if not await self._complete(claim, stored):
            # Taken over or deleted (the family left) while the file was stored: drop it.
            await self._archives.remove([stored.path])
            return
        logger.info(
            "archive export completed",
            extra={
                **log,
                "bytes": stored.size,
                "files": stored.summary.totals.payload_files,
                "seconds": round(time.perf_counter() - started, 1),
            },
        )

    async def _write(self, claim: Claim) -> "_Stored":
        progress_writer = _ProgressWriter(self, claim)
        async with archive_writer.family_snapshot(self._database, claim.family_unit_id) as snap:
            path = archive_object_path(claim.family_unit_id, claim.id, snap.bag_name)
            async with self._archives.staged_object(path, ZIP_TYPE) as staged:
                out = await asyncio.to_thread(staged.open, "wb")
                try:
                    summary = await archive_writer.write_archive(
                        snap,
                        self._storage,
                        out,
                        include=claim.include,
                        report=progress_writer.report,
                    )
                finally:
                    await asyncio.to_thread(out.close)
                size = (await asyncio.to_thread(staged.stat)).st_size
                # The last renewal before the (possibly long) upload of a Supabase archive.
                await progress_writer.write(progress_writer.last)
        return _Stored(path, size, summary, progress_writer.last)

    async def write_progress(self, claim: Claim, progress: Progress) -> None:
        async with self._database.system_session() as db:
            row = await db.fetchrow(
                _PROGRESS,
                claim.id,
                claim.attempts,
                progress.files_done,
                progress.files_total,
                progress.bytes_done,
                self._settings.archive_claim_seconds,
            )
            if row is None:
                raise LostClaim()
            data = {
                "export_id": str(claim.id),
                "status": "running",
                "progress": {
                    "files_done": progress.files_done,
                    "files_total": progress.files_total,
                    "bytes_done": progress.bytes_done,
                },
            }
            await announce(db, claim.family_unit_id, EventType.EXPORT_PROGRESS, data)

    async def _complete(self, claim: Claim, stored: "_Stored") -> bool:
        async with self._database.system_session() as db:
            row = await db.fetchrow(
                _COMPLETE,
                claim.id,
                claim.attempts,
                stored.path,
                stored.size,
                stored.progress.bytes_done,
                self._settings.archive_export_ttl_days,
            )
            if row is None:
                return False
            superseded = [
                r["storage_path"]
                for r in await db.fetch(_SUPERSEDED, claim.family_unit_id, claim.id)
            ]
            await announce(
                db,
                claim.family_unit_id,
                EventType.EXPORT_READY,
                _event_data(claim.id, "completed", row),
            )
        await self._remove_quietly([path for path in superseded if path])
        return True

    async def _after_error(self, claim: Claim, reason: str) -> None:
        """Retry later (with a growing pause), or fail for good after the last attempt."""
        try:
            async with self._database.system_session() as db:
                if claim.attempts >= self._settings.archive_max_attempts:
                    row = await db.fetchrow(_FAIL, claim.id, claim.attempts, reason)
                    if row is not None:
                        data = _event_data(claim.id, "failed", row)
                        await announce(db, claim.family_unit_id, EventType.EXPORT_READY, data)
                else:
                    pause = self._settings.archive_claim_seconds * claim.attempts
                    await db.execute(_RETRY, claim.id, claim.attempts, pause, reason)
        except Exception:
            # The database is away too: the claim runs out and the export is taken up again.
            logger.exception("could not record an archive export error")

    async def _hand_back(self, claim: Claim) -> None:
        try:
            async with self._database.system_session() as db:
                await db.execute(_HAND_BACK, claim.id, claim.attempts)
        except Exception:
            logger.warning("could not hand an archive export back; its claim will run out")

    # The sweep ------------------------------------------------------------------------------

    async def sweep(self) -> int:
        """Remove expired exports (file and job) and files no job names; how many files."""
        async with self._database.system_session() as db:
            rows = await db.fetch(_EXPIRED, self._settings.archive_export_ttl_days)
        expired = [row["storage_path"] for row in rows if row["storage_path"]]
        await self._remove_quietly(expired)
        orphans = await self._orphans()
        await self._remove_quietly(orphans)
        return len(expired) + len(orphans)

    async def _orphans(self) -> list[str]:
        older_than = datetime.now(UTC) - timedelta(seconds=_ORPHAN_AGE_SECONDS)
        paths = [path async for path in self._archives.list_objects(older_than)]
        if not paths:
            return []
        async with self._database.system_session() as db:
            referenced = {row["p"] for row in await db.fetch(_REFERENCED, paths)}
        return [path for path in paths if path not in referenced]

    async def _remove_quietly(self, paths: list[str]) -> None:
        if not paths:
            return
        try:
            await self._archives.remove(paths)
        except Exception:
            # The next sweep finds them again as files no job names.
            logger.exception("could not remove archive files", extra={"objects": len(paths)})


@dataclass(frozen=True)
class _Stored:
    path: str
    size: int
    summary: archive_writer.ArchiveSummary
    progress: Progress


class _ProgressWriter:
    """Writes progress (renewing the claim) at most once a second, and at the end."""

    def __init__(self, exporter: ArchiveExporter, claim: Claim) -> None:
        self._exporter = exporter
        self._claim = claim
        self._written_at = 0.0
        self.last = Progress()

    async def report(self, progress: Progress) -> None:
        self.last = progress
        now = time.monotonic()
        if now - self._written_at >= PROGRESS_EVERY_SECONDS:
            await self.write(progress)

    async def write(self, progress: Progress) -> None:
        self._written_at = time.monotonic()
        await self._exporter.write_progress(self._claim, progress)
