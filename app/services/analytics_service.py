"""Analytics: events recorded off the request path, and the family summary.

`AnalyticsRecorder.record()` only appends to an in-memory buffer and never raises,
so an analytics problem can neither fail nor slow a request. A background task
writes the buffer in batches (one multi-row insert each) on a connection of its
own with a short timeout; if the database is slow or down the batch is dropped
with a log line (and counted), never retried forever, and the buffer is bounded.
"""

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from app.db.postgres import Connection, Database
from app.metrics import ANALYTICS_DROPPED, BACKGROUND_QUEUE_DEPTH
from app.models import rbac
from app.models.identity import Actor
from app.models.rbac import Permission
from app.schemas.analytics import AnalyticsSummary

logger = logging.getLogger(__name__)


class EventType(StrEnum):
    USER_REGISTERED = "user_registered"
    USER_LOGGED_IN = "user_logged_in"
    USER_LOGGED_OUT = "user_logged_out"
    MEMORY_POSTED = "memory_posted"
    MEMORY_UPDATED = "memory_updated"
    MEMORY_DELETED = "memory_deleted"
    MEMORY_VIEWED = "memory_viewed"
    REACTION_CREATED = "reaction_created"
    REACTION_DELETED = "reaction_deleted"
    COMMENT_CREATED = "comment_created"
    COMMENT_UPDATED = "comment_updated"
    COMMENT_DELETED = "comment_deleted"
    FEED_VIEWED = "feed_viewed"
    INVITE_CREATED = "invite_created"
    INVITE_ACCEPTED = "invite_accepted"
    CHILD_PROVISIONED = "child_provisioned"
    PET_CREATED = "pet_created"
    MEDIA_PROCESSED = "media_processed"


@dataclass(frozen=True, slots=True)
class Event:
    event_type: EventType
    user_id: UUID | None
    family_unit_id: UUID | None
    session_id: str | None
    metadata: dict[str, Any]
    timestamp: datetime = field(default_factory=lambda: datetime.now(UTC))


_INSERT_EVENTS = """
insert into public.analytics_events
  (event_type, "timestamp", user_id, family_unit_id, session_id, metadata)
select * from unnest($1::text[], $2::timestamptz[], $3::uuid[], $4::uuid[], $5::text[], $6::jsonb[])
"""


_PURGE_BATCH_SIZE = 10_000
_PURGE_BATCH = """
delete from public.analytics_events
where event_id in (
  select event_id from public.analytics_events
  where "timestamp" < now() - make_interval(days => $1)
  limit $2
)
"""


def _jsonable(value: Any) -> Any:
    if isinstance(value, UUID | datetime):
        return str(value)
    return value


class AnalyticsRecorder:
    def __init__(
        self,
        database: Database,
        *,
        batch_size: int = 200,
        flush_interval: float = 1.0,
        write_timeout: float = 5.0,
        max_buffered: int = 10_000,
        retention_days: int = 365,
        purge_interval: float = 3600.0,
    ):
        self._database = database
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._write_timeout = write_timeout
        self._buffer: deque[Event] = deque(maxlen=max_buffered)
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # One flush at a time: a flush() returns only once what was buffered when it was
        # called is written, even if the background writer had already taken part of it.
        self._flushing = asyncio.Lock()
        self._retention_days = retention_days
        self._purge_interval = purge_interval
        self._last_purge = 0.0
        self._purges = True

    def record(
        self,
        event_type: EventType,
        *,
        actor: Actor | None = None,
        user_id: UUID | None = None,
        family_unit_id: UUID | None = None,
        **metadata: Any,
    ) -> None:
        """Queue an event. Metadata is ids and counts only: never content or secrets."""
        try:
            if len(self._buffer) == self._buffer.maxlen:
                ANALYTICS_DROPPED.inc()
            self._buffer.append(
                Event(
                    event_type=event_type,
                    user_id=actor.id if actor else user_id,
                    family_unit_id=actor.family_unit_id if actor else family_unit_id,
                    session_id=str(actor.session_id) if actor and actor.session_id else None,
                    metadata={key: _jsonable(value) for key, value in metadata.items()},
                )
            )
            BACKGROUND_QUEUE_DEPTH.labels("analytics").set(len(self._buffer))
            if len(self._buffer) >= self._batch_size:
                self._wakeup.set()
        except Exception:  # analytics must never fail the caller
            logger.exception("could not queue analytics event")

    def start(self, *, purge: bool = True) -> None:
        """Start the writer; with `purge`, it also purges expired events now and then.

        Every process that records events writes its own buffer; the purge is a shared job,
        run only by processes that run the background jobs.
        """
        self._purges = purge
        self._task = asyncio.create_task(self._run(), name="analytics-writer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self._flush_interval)
            self._wakeup.clear()
            await self.flush()
            if self._purges and time.monotonic() - self._last_purge >= self._purge_interval:
                self._last_purge = time.monotonic()
                await self.purge_expired()

    async def purge_expired(self) -> int:
        """Delete raw events past retention (the daily rollup keeps the counts).

        In bounded batches, so a first purge of years of history never holds long locks.
        Safe with several processes: two purgers just share the work.
        """
        removed = 0
        try:
            while True:
                async with self._database.system_session() as db:
                    status = await db.execute(_PURGE_BATCH, self._retention_days, _PURGE_BATCH_SIZE)
                batch = int(status.split()[-1])
                removed += batch
                if batch < _PURGE_BATCH_SIZE:
                    break
        except Exception as exc:
            logger.warning("analytics purge failed", extra={"error": type(exc).__name__})
        if removed:
            logger.info("analytics events purged", extra={"events": removed})
        return removed

    async def flush(self) -> int:
        """Write everything buffered now, batch by batch; returns how many were written."""
        async with self._flushing:
            return await self._flush_locked()

    async def _flush_locked(self) -> int:
        written = 0
        while self._buffer:
            batch = [
                self._buffer.popleft() for _ in range(min(self._batch_size, len(self._buffer)))
            ]
            BACKGROUND_QUEUE_DEPTH.labels("analytics").set(len(self._buffer))
            try:
                await asyncio.wait_for(self._write(batch), self._write_timeout)
                written += len(batch)
            except Exception as exc:
                ANALYTICS_DROPPED.inc(len(batch))
                logger.warning(
                    "analytics batch dropped",
                    extra={"events": len(batch), "error": type(exc).__name__},
                )
                break
        return written

    async def _write(self, batch: list[Event]) -> None:
        async with self._database.system_session() as db:
            await db.execute(
                _INSERT_EVENTS,
                [event.event_type.value for event in batch],
                [event.timestamp for event in batch],
                [event.user_id for event in batch],
                [event.family_unit_id for event in batch],
                [event.session_id for event in batch],
                [event.metadata for event in batch],
            )


# The family summary -------------------------------------------------------------------
# Read from analytics_metrics (the daily rollup kept by triggers), never from raw
# events or base tables, so it costs the same for a family with decades of history.

_SUMMARY_TOTALS = """
select coalesce(sum(memories), 0)::int as memories_posted,
       coalesce(sum(reactions), 0)::int as reactions,
       coalesce(sum(comments), 0)::int as comments,
       count(distinct user_id) filter (
         where events > 0 or memories > 0 or reactions > 0 or comments > 0
       )::int as active_members
from public.analytics_metrics
where family_unit_id = (select app.current_family_id())
  and day > (now() at time zone 'UTC')::date - $1::int
"""
_SUMMARY_CONTRIBUTORS = """
select m.user_id, p.display_name,
       sum(m.memories)::int as memories, sum(m.reactions)::int as reactions,
       sum(m.comments)::int as comments
from public.analytics_metrics m
join public.user_profiles p on p.id = m.user_id
where m.family_unit_id = (select app.current_family_id())
  and m.day > (now() at time zone 'UTC')::date - $1::int
group by m.user_id, p.display_name
having sum(m.memories + m.reactions + m.comments) > 0
order by sum(m.memories + m.reactions + m.comments) desc, sum(m.memories) desc, m.user_id
limit 10
"""
_SUMMARY_DAILY = """
select d.day::date as date,
       coalesce(sum(m.memories), 0)::int as memories,
       coalesce(sum(m.reactions), 0)::int as reactions,
       coalesce(sum(m.comments), 0)::int as comments
from generate_series(
       (now() at time zone 'UTC')::date - ($1::int - 1), (now() at time zone 'UTC')::date,
       interval '1 day') as d(day)
left join public.analytics_metrics m
  on m.day = d.day::date and m.family_unit_id = (select app.current_family_id())
group by d.day
order by d.day
"""


async def summary(db: Connection, actor: Actor, *, days: int) -> AnalyticsSummary:
    rbac.require(actor, Permission.VIEW_ANALYTICS)
    totals = await db.fetchrow(_SUMMARY_TOTALS, days)
    contributors = await db.fetch(_SUMMARY_CONTRIBUTORS, days)
    daily = await db.fetch(_SUMMARY_DAILY, days)
    return AnalyticsSummary.model_validate(
        {
            "days": days,
            **dict(totals),
            "top_contributors": [dict(row) for row in contributors],
            "daily": [dict(row) for row in daily],
        }
    )
