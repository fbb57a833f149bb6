"""Live updates (GET /events): who receives which event, and the per-process broker.

Where events come from: triggers write each change's event into `app.live_events` in the
change's own transaction, and services publish the others with `publish` (exports). At
commit each event gets its `seq` (commit order within a family) and a NOTIFY names its
family (supabase/migrations/20250206000000_live_events.sql).

How they reach a stream: each process has one `EventBroker` holding that process's open
streams, grouped by family, and one LISTEN connection (`app.db.listener`). A notification
marks its family as having news; one dispatcher task fetches that family's events past the
last one it handed out (one query for every family with news) and offers each to the
family's streams that may see it (`can_see`, the one home of that rule). A notification
lost while the listener reconnects is made up for by fetching every watched family past
its cursor once the listener is back.

What holds memory: an event is rendered once and shared by every stream it goes to; each
stream queues at most `queue_size` of them. A stream that falls further behind is ended
with a `retry:` hint and catches up by replay (Last-Event-ID), so a slow reader can never
make the server's memory grow.
"""

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from uuid import UUID

from app.adapters.tokens import hash_token, new_opaque_token
from app.db.listener import PgListener
from app.db.postgres import Connection, Database
from app.errors import ServiceUnavailable, Unauthorized
from app.metrics import EVENT_STREAMS_CLOSED, EVENT_STREAMS_OPEN
from app.models import rbac
from app.models.identity import Actor, Role
from app.models.rbac import Permission
from app.schemas.events import EventTicket

logger = logging.getLogger(__name__)

# The NOTIFY channels the migration sends on.
EVENTS_CHANNEL = "app_live_events"
SESSIONS_CHANNEL = "app_sessions_revoked"

TICKET_TTL_SECONDS = 60
INVALID_TICKET = "Invalid, used or expired event ticket"
# Rows per query when dispatching and replaying; a family with more news loops.
FETCH_LIMIT = 500


class EventType(StrEnum):
    """The event types of docs/api.md ("Live updates"); the migration checks the same list."""

    MEMORY_PUBLISHED = "memory.published"
    MEMORY_UPDATED = "memory.updated"
    MEMORY_DELETED = "memory.deleted"
    MEDIA_PROCESSED = "media.processed"
    REACTION_CREATED = "reaction.created"
    REACTION_DELETED = "reaction.deleted"
    COMMENT_CREATED = "comment.created"
    COMMENT_UPDATED = "comment.updated"
    COMMENT_DELETED = "comment.deleted"
    MEMBER_JOINED = "member.joined"
    MEMBER_REMOVED = "member.removed"
    EXPORT_PROGRESS = "export.progress"
    EXPORT_READY = "export.ready"


class CloseReason(StrEnum):
    TOO_SLOW = "too_slow"  # more than queue_size events waiting: dropped, told to retry
    REVOKED = "revoked"  # the login the stream was opened with ended
    REMOVED = "removed"  # the member was removed from the family (or left)
    SHUTDOWN = "shutdown"  # this server is stopping: reconnect (to another one)


@dataclass(frozen=True, slots=True)
class LiveEvent:
    seq: int
    family_unit_id: UUID
    type: str
    # The audience beyond "the family": only this member (a draft's author), only these roles.
    only_member_id: UUID | None
    roles: frozenset[str] | None
    # member.removed: the member it is about, whose own streams end.
    removed_member_id: UUID | None
    # The SSE frame, rendered once for every stream it goes to.
    frame: bytes


def can_see(event: LiveEvent, member: "Subscriber") -> bool:
    """Whether a member receives an event: the same answer as GET about what it names.

    Another family's never; an event about a draft only by its author; an event for some
    roles (an export) only by them.
    """
    return (
        event.family_unit_id == member.family_unit_id
        and (event.only_member_id is None or event.only_member_id == member.user_id)
        and (event.roles is None or member.role in event.roles)
    )


def render_frame(seq: int, event_type: str, data_json: str) -> bytes:
    # JSON has no raw newlines (they are escaped in strings), so `data` is one line.
    return f"id: {seq}\nevent: {event_type}\ndata: {data_json}\n\n".encode()


def _event(row: Mapping[str, Any]) -> LiveEvent:
    roles = row["roles"]
    return LiveEvent(
        seq=row["seq"],
        family_unit_id=row["family_unit_id"],
        type=row["type"],
        only_member_id=row["only_member_id"],
        roles=frozenset(roles) if roles is not None else None,
        removed_member_id=row["removed_member_id"],
        frame=render_frame(row["seq"], row["type"], row["data_json"]),
    )


# Publishing ------------------------------------------------------------------------------

_PUBLISH = "select app.publish_live_event($1, $2, $3::text::jsonb, $4, $5)"


async def publish(
    db: Connection,
    family_unit_id: UUID,
    event_type: EventType,
    data: Mapping[str, Any],
    *,
    only_member_id: UUID | None = None,
    permission: Permission | None = None,
) -> None:
    """Announce an event to a family, in `db`'s transaction: sent only if it commits.

    For what the tables' triggers do not announce themselves (export progress). `db` is a
    system session: members cannot publish (a forged event could end others' streams). Limit the
    audience with `only_member_id` (one member) or `permission` (the roles holding it, as
    the permission table says now). `data` is JSON: ids as strings.
    """
    roles = (
        sorted(role.value for role in rbac.PERMISSIONS[permission])
        if permission is not None
        else None
    )
    await db.execute(
        _PUBLISH,
        family_unit_id,
        event_type.value,
        json.dumps(data, default=str),
        only_member_id,
        roles,
    )


# Tickets ---------------------------------------------------------------------------------

_NEW_TICKET = """
insert into app.event_tickets (ticket_hash, user_id, session_id, expires_at)
values ($1, $2, $3, now() + make_interval(secs => $4))
"""
# Spent whatever happens (single use); valid only for a member still in the family whose
# login is still live.
_REDEEM_TICKET = """
with spent as (
  delete from app.event_tickets where ticket_hash = $1
  returning user_id, session_id, expires_at
)
select p.id, p.family_unit_id, p.role, p.display_name, spent.session_id
from spent
join public.user_profiles p on p.id = spent.user_id and p.removed_at is null
where spent.expires_at > now()
  and (spent.session_id is null or exists (
        select 1 from app.auth_sessions s
        where s.id = spent.session_id and s.revoked_at is null))
"""


async def create_ticket(database: Database, actor: Actor) -> EventTicket:
    """A single-use ticket for `GET /events?ticket=`, bound to the caller's login."""
    ticket = new_opaque_token()
    # System session: members have no grant on the tickets table (its lifetime is ours).
    async with database.system_session() as db:
        await db.execute(
            _NEW_TICKET, hash_token(ticket), actor.id, actor.session_id, float(TICKET_TTL_SECONDS)
        )
    return EventTicket(ticket=ticket, expires_in=TICKET_TTL_SECONDS)


async def redeem_ticket(database: Database, ticket: str) -> Actor:
    """The member a ticket was issued to; the ticket is spent. 401 if it is not valid."""
    # System session: there is no signed-in member yet, only the ticket.
    async with database.system_session() as db:
        row = await db.fetchrow(_REDEEM_TICKET, hash_token(ticket))
    if row is None:
        raise Unauthorized(INVALID_TICKET)
    return Actor(
        id=row["id"],
        family_unit_id=row["family_unit_id"],
        role=Role(row["role"]),
        display_name=row["display_name"],
        session_id=row["session_id"],
    )


# One stream's side ----------------------------------------------------------------------


class Subscriber:
    """One open stream: who it is for, and the events waiting to be written to it."""

    __slots__ = (
        "_max_pending",
        "_pending",
        "_wake",
        "closed",
        "family_unit_id",
        "role",
        "session_id",
        "start_seq",
        "user_id",
    )

    def __init__(self, actor: Actor, max_pending: int):
        self.user_id = actor.id
        self.family_unit_id = actor.family_unit_id
        self.role: str = actor.role.value
        self.session_id = actor.session_id
        # Every event of the family up to this seq was committed before the stream began;
        # every later one is offered to it.
        self.start_seq = 0
        self.closed: CloseReason | None = None
        self._pending: deque[LiveEvent] = deque()
        self._max_pending = max_pending
        self._wake = asyncio.Event()

    def offer(self, event: LiveEvent) -> None:
        if self.closed is not None:
            return
        if len(self._pending) >= self._max_pending:
            self.close(CloseReason.TOO_SLOW)
            return
        self._pending.append(event)
        self._wake.set()

    def close(self, reason: CloseReason) -> None:
        if self.closed is None:
            self.closed = reason
            EVENT_STREAMS_CLOSED.labels(reason.value).inc()
        # Nothing more will be written: free what waited at once.
        self._pending.clear()
        self._wake.set()

    async def take(self, wait_seconds: float) -> list[LiveEvent]:
        """What is waiting, after waiting up to `wait_seconds` for something (or a close)."""
        if not self._pending and self.closed is None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_seconds):
                    await self._wake.wait()
        self._wake.clear()
        batch = list(self._pending)
        self._pending.clear()
        return batch


# The process's broker ---------------------------------------------------------------------


@dataclass
class _Family:
    subscribers: set[Subscriber] = field(default_factory=set)
    # The last seq handed out to this family's streams; None until the first stream's
    # starting point is known.
    cursor: int | None = None


# The member is still in the family and (for our own tokens) the login is still live; and
# where the family's events stand now.
_SUBSCRIBE = """
select exists (
         select 1 from public.user_profiles p
         where p.id = $2 and p.family_unit_id = $1 and p.removed_at is null
           and ($3::uuid is null or exists (
                 select 1 from app.auth_sessions s
                 where s.id = $3 and s.user_id = p.id and s.revoked_at is null))
       ) as active,
       coalesce((select max(seq) from app.live_events where family_unit_id = $1), 0) as seq
"""
# Both read the columns `_event` turns into a LiveEvent.
_NEWS = """
select e.seq, e.family_unit_id, e.type, e.data::text as data_json, e.only_member_id, e.roles,
       case when e.type = 'member.removed' then (e.data ->> 'user_id')::uuid end
         as removed_member_id
from unnest($1::uuid[], $2::bigint[]) as c (family_unit_id, after_seq)
cross join lateral (
  select * from app.live_events e
  where e.family_unit_id = c.family_unit_id and e.seq > c.after_seq
  order by e.seq
  limit $3
) e
order by e.seq
"""
_REPLAY = """
select e.seq, e.family_unit_id, e.type, e.data::text as data_json, e.only_member_id, e.roles,
       case when e.type = 'member.removed' then (e.data ->> 'user_id')::uuid end
         as removed_member_id
from app.live_events e
where e.family_unit_id = $1 and e.seq > $2 and e.seq <= $3
order by e.seq
limit $4
"""
# Streams whose member was removed or whose login ended while the listener was away.
_ENDED = """
select c.user_id, c.session_id
from unnest($1::uuid[], $2::uuid[]) as c (user_id, session_id)
where not exists (
  select 1 from public.user_profiles p
  where p.id = c.user_id and p.removed_at is null
    and (c.session_id is null or exists (
          select 1 from app.auth_sessions s
          where s.id = c.session_id and s.revoked_at is null))
)
"""
# One process at a time purges (the others find the lock taken and skip the round).
_PURGE_LOCK = "select pg_try_advisory_xact_lock(19542, 1)"
_PURGE_EVENTS = """
delete from app.live_events where id in (
  select id from app.live_events
  where created_at < now() - make_interval(secs => $1)
  order by created_at
  limit $2
)
"""
_PURGE_TICKETS = "delete from app.event_tickets where expires_at < now()"
PURGE_BATCH = 5000


class EventBroker:
    """This process's open streams and the one task that hands events out to them."""

    def __init__(
        self,
        database: Database,
        listen_dsn: str,
        *,
        queue_size: int = 256,
        keepalive_seconds: float = 15.0,
        retry_ms: int = 3000,
        retention_seconds: float = 3600.0,
        purge_interval_seconds: float = 300.0,
    ):
        self.database = database
        self.queue_size = queue_size
        self.keepalive_seconds = keepalive_seconds
        self.retry_ms = retry_ms
        self.retention_seconds = retention_seconds
        self.purge_interval_seconds = purge_interval_seconds
        self.listener = PgListener(
            listen_dsn,
            (EVENTS_CHANNEL, SESSIONS_CHANNEL),
            on_notify=self._notified,
            on_connect=self._reconnected,
        )
        self._families: dict[UUID, _Family] = {}
        self._by_session: dict[UUID, set[Subscriber]] = {}
        # Families with news: the highest seq notified for each.
        self._news: dict[UUID, int] = {}
        self._catch_up = False
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    # Lifecycle

    def start(self) -> None:
        self.listener.start()
        self._tasks.append(asyncio.create_task(self._dispatch_loop(), name="events-dispatch"))
        if self.purge_interval_seconds > 0:
            self._tasks.append(asyncio.create_task(self._purge_loop(), name="events-purge"))

    def close_streams(self) -> None:
        """End every open stream (the server is going away): clients reconnect elsewhere."""
        self._stopping = True
        for family in list(self._families.values()):
            for subscriber in list(family.subscribers):
                self._end(subscriber, CloseReason.SHUTDOWN)

    async def stop(self) -> None:
        self.close_streams()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self.listener.stop()

    @property
    def stream_count(self) -> int:
        return sum(len(f.subscribers) for f in self._families.values())

    def subscribers_of(self, user_id: UUID) -> list[Subscriber]:
        """The member's open streams in this process (tests and diagnostics)."""
        return [s for f in self._families.values() for s in f.subscribers if s.user_id == user_id]

    # Streams coming and going

    async def subscribe(self, actor: Actor) -> Subscriber:
        """Register a stream for the member; 401 if they were removed or logged out meanwhile.

        Registered before the check, so a removal committed after the check reaches it by
        notification, and one committed before is seen by the check.
        """
        subscriber = Subscriber(actor, self.queue_size)
        family = self._families.setdefault(actor.family_unit_id, _Family())
        family.subscribers.add(subscriber)
        if actor.session_id is not None:
            self._by_session.setdefault(actor.session_id, set()).add(subscriber)
        EVENT_STREAMS_OPEN.inc()
        try:
            async with self.database.system_session() as db:
                row = await db.fetchrow(
                    _SUBSCRIBE, actor.family_unit_id, actor.id, actor.session_id
                )
        except BaseException:
            self.unsubscribe(subscriber)
            raise
        if self._stopping:
            self.unsubscribe(subscriber)
            raise ServiceUnavailable(
                "This server is shutting down; reconnect", headers={"Retry-After": "1"}
            )
        if not row["active"] or subscriber.closed is not None:
            self.unsubscribe(subscriber)
            raise Unauthorized("Token has been revoked", code="token_revoked")
        if family.cursor is None:
            # The family's first stream here: everything after this point is news.
            family.cursor = row["seq"]
            if actor.family_unit_id in self._news:
                self._wake.set()
        subscriber.start_seq = family.cursor
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        family = self._families.get(subscriber.family_unit_id)
        if family is None or subscriber not in family.subscribers:
            return
        family.subscribers.discard(subscriber)
        EVENT_STREAMS_OPEN.dec()
        if not family.subscribers:
            del self._families[subscriber.family_unit_id]
            self._news.pop(subscriber.family_unit_id, None)
        if subscriber.session_id is not None:
            streams = self._by_session.get(subscriber.session_id)
            if streams is not None:
                streams.discard(subscriber)
                if not streams:
                    del self._by_session[subscriber.session_id]

    def _end(self, subscriber: Subscriber, reason: CloseReason) -> None:
        subscriber.close(reason)
        self.unsubscribe(subscriber)

    # Notifications (called by the listener, on the event loop, never blocking)

    def _notified(self, channel: str, payload: str) -> None:
        if channel == SESSIONS_CHANNEL:
            for subscriber in list(self._by_session.get(UUID(payload), ())):
                self._end(subscriber, CloseReason.REVOKED)
            return
        family_text, _, seq_text = payload.partition(" ")
        family_id, seq = UUID(family_text), int(seq_text)
        family = self._families.get(family_id)
        if family is None or (family.cursor is not None and seq <= family.cursor):
            return  # no stream here for it, or already fetched with an earlier batch
        self._news[family_id] = max(seq, self._news.get(family_id, 0))
        self._wake.set()

    def _reconnected(self) -> None:
        # Anything may have happened while the listener was away: look at every stream.
        self._catch_up = True
        self._wake.set()

    # The dispatcher

    async def _dispatch_loop(self) -> None:
        backoff = 0.5
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                if self._catch_up:
                    self._catch_up = False
                    await self._end_streams_of_ended_logins()
                    for family_id, family in self._families.items():
                        if family.cursor is not None:
                            self._news[family_id] = max(
                                family.cursor + 1, self._news.get(family_id, 0)
                            )
                await self._hand_out_news()
                backoff = 0.5
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The database is away: try again later, fetching from the cursors (nothing
                # is lost) and checking every stream again.
                logger.warning(
                    "event dispatch failed; retrying",
                    extra={"error": type(exc).__name__, "retry_in_s": backoff},
                )
                self._catch_up = True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                self._wake.set()

    async def _hand_out_news(self) -> None:
        while True:
            batch = {
                family_id: family.cursor
                for family_id in list(self._news)
                if (family := self._families.get(family_id)) is not None
                and family.cursor is not None
            }
            for family_id in batch:
                del self._news[family_id]
            if not batch:
                return
            async with self.database.system_session() as db:
                rows = await db.fetch(_NEWS, list(batch), list(batch.values()), FETCH_LIMIT)
            fetched: dict[UUID, int] = {}
            for row in rows:
                event = _event(row)
                fetched[event.family_unit_id] = fetched.get(event.family_unit_id, 0) + 1
                self._dispatch(event)
            for family_id, count in fetched.items():
                if count >= FETCH_LIMIT:
                    self._news[family_id] = self._news.get(family_id, 0)  # more to fetch

    def _dispatch(self, event: LiveEvent) -> None:
        family = self._families.get(event.family_unit_id)
        if family is None or family.cursor is None or event.seq <= family.cursor:
            return
        family.cursor = event.seq
        for subscriber in list(family.subscribers):
            if event.removed_member_id == subscriber.user_id:
                self._end(subscriber, CloseReason.REMOVED)
            elif can_see(event, subscriber):
                subscriber.offer(event)
                if subscriber.closed is CloseReason.TOO_SLOW:
                    self.unsubscribe(subscriber)

    async def _end_streams_of_ended_logins(self) -> None:
        streams = [s for f in self._families.values() for s in f.subscribers]
        if not streams:
            return
        async with self.database.system_session() as db:
            rows = await db.fetch(
                _ENDED, [s.user_id for s in streams], [s.session_id for s in streams]
            )
        ended = {(row["user_id"], row["session_id"]) for row in rows}
        for subscriber in streams:
            if (subscriber.user_id, subscriber.session_id) in ended:
                self._end(subscriber, CloseReason.REVOKED)

    # Replay

    async def replay(
        self, subscriber: Subscriber, after_seq: int
    ) -> AsyncIterator[list[LiveEvent]]:
        """The events the member may see with after_seq < seq <= the stream's start, in pages."""
        while after_seq < subscriber.start_seq:
            async with self.database.system_session() as db:
                rows = await db.fetch(
                    _REPLAY,
                    subscriber.family_unit_id,
                    after_seq,
                    subscriber.start_seq,
                    FETCH_LIMIT,
                )
            if not rows:
                return
            events = [_event(row) for row in rows]
            after_seq = events[-1].seq
            yield [event for event in events if can_see(event, subscriber)]
            if len(rows) < FETCH_LIMIT:
                return

    # Purge

    async def purge(self) -> int:
        """Delete events past the retention period and spent tickets; returns events deleted."""
        deleted = 0
        while True:
            async with self.database.system_session() as db:
                if not await db.fetchval(_PURGE_LOCK):
                    return deleted
                status = await db.execute(_PURGE_EVENTS, float(self.retention_seconds), PURGE_BATCH)
                if deleted == 0:
                    await db.execute(_PURGE_TICKETS)
            count = int(status.split()[-1])
            deleted += count
            if count < PURGE_BATCH:
                return deleted

    async def _purge_loop(self) -> None:
        while True:
            await asyncio.sleep(self.purge_interval_seconds)
            try:
                await self.purge()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("event purge failed", extra={"error": type(exc).__name__})


# The stream -------------------------------------------------------------------------------

KEEPALIVE = b": keep-alive\n\n"
# Frames are written in chunks of about this size at most. A reader that stops reading
# leaves at most the transport's buffer (64 KiB before it pauses) plus one chunk in the
# server's memory; one large chunk would park all its queued events there at once.
CHUNK_BYTES = 64 * 1024


def _chunks(events: list[LiveEvent], after_seq: int) -> Iterator[bytes]:
    """The frames of the events past `after_seq`, joined into chunks of ~CHUNK_BYTES."""
    chunk: list[bytes] = []
    size = 0
    for event in events:
        if event.seq <= after_seq:
            continue
        chunk.append(event.frame)
        size += len(event.frame)
        if size >= CHUNK_BYTES:
            yield b"".join(chunk)
            chunk, size = [], 0
    if chunk:
        yield b"".join(chunk)


class EventStream:
    """What GET /events writes: replay, then live events, keep-alives and the end."""

    def __init__(self, broker: EventBroker, subscriber: Subscriber, last_event_id: int | None):
        self.broker = broker
        self.subscriber = subscriber
        self.last_event_id = last_event_id

    async def chunks(self) -> AsyncIterator[bytes]:
        broker, subscriber = self.broker, self.subscriber
        yield f"retry: {broker.retry_ms}\n\n".encode()
        seen = subscriber.start_seq
        if self.last_event_id is not None:
            async for page in broker.replay(subscriber, self.last_event_id):
                for chunk in _chunks(page, self.last_event_id):
                    yield chunk
            # A client that already saw more (from a server further ahead) gets no repeats.
            seen = max(seen, self.last_event_id)
        # An `id` with no data sets the browser's Last-Event-ID without an event: a stream
        # that ends before any event still resumes from here.
        yield f"id: {seen}\n\n".encode()
        while True:
            batch = await subscriber.take(broker.keepalive_seconds)
            wrote = False
            for chunk in _chunks(batch, seen):
                yield chunk
                wrote = True
            if not wrote and subscriber.closed is None:
                yield KEEPALIVE
            if subscriber.closed is not None:
                if subscriber.closed in (CloseReason.TOO_SLOW, CloseReason.SHUTDOWN):
                    yield f"retry: {broker.retry_ms}\n\n".encode()
                return

    def close(self) -> None:
        self.broker.unsubscribe(self.subscriber)


async def open_stream(
    broker: EventBroker, actor: Actor, *, last_event_id: int | None
) -> EventStream:
    """Start a member's stream: live from now, after replaying what followed last_event_id."""
    subscriber = await broker.subscribe(actor)
    return EventStream(broker, subscriber, last_event_id)
