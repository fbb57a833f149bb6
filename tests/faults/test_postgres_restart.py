"""PostgreSQL restarts while families post memories and reactions (issue #7, part 4).

A real uvicorn talks to this module's own built-in PostgreSQL. Clients keep posting; the
database is stopped with `pg_ctl -m fast stop` (open sessions cut mid-transaction), kept
down for a few seconds, and started again. Expected:

- during the outage the API answers 503 with a `detail` and `Retry-After`, never a 500,
  and /health/ready says 503;
- afterwards it recovers by itself (same server process) and /health/ready says 200;
- every write acknowledged with a 2xx is in the database exactly once; a write that was
  refused or interrupted is there at most once.
"""

from __future__ import annotations

import asyncio
import errno
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from app import exception_handlers
from tests.faults.server import ApiServer, EmbeddedPostgres
from tests.helpers import API
from tests.helpers.factories import Factory, Member

pytestmark = pytest.mark.faults

EMOJI = ["👍", "❤️", "😂", "😮", "😢", "🎉", "🔥", "💯"]
MEMORY_POSTERS = 5
REACTORS = 3
OUTAGE_SECONDS = 3.0
REQUEST_TIMEOUT = httpx.Timeout(15.0)


@dataclass
class Outcome:
    """One client request: what it carried (its marker) and what it got back."""

    kind: str  # "memory" or "reaction"
    marker: str  # memory: its unique title; reaction: "<memory_id> <emoji>" of one member
    member_id: str
    phase_sent: str
    phase_done: str = ""
    status: int | None = None  # None: no HTTP answer (connection error or timeout)
    body: Any = None
    retry_after: str | None = None
    error: str | None = None


@dataclass
class Load:
    """Clients posting until told to stop; `phase` labels what they see."""

    client: httpx.AsyncClient
    phase: str = "before"
    outcomes: list[Outcome] = field(default_factory=list)
    acknowledged_memories: list[str] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def count(self, kind: str, phase: str, status: int = 201) -> int:
        return sum(
            1
            for o in self.outcomes
            if o.kind == kind and o.phase_sent == phase and o.status == status
        )

    async def send(self, outcome: Outcome, method: str, url: str, **kwargs: Any) -> Outcome:
        try:
            response = await self.client.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            outcome.error = f"{type(exc).__name__}: {exc}"
        else:
            outcome.status = response.status_code
            outcome.retry_after = response.headers.get("retry-after")
            try:
                outcome.body = response.json()
            except ValueError:
                outcome.body = response.text
        outcome.phase_done = self.phase
        self.outcomes.append(outcome)
        return outcome

    async def post_memories(self, member: Member) -> None:
        while not self.stop.is_set():
            title = f"restart-{uuid.uuid4().hex}"
            outcome = await self.send(
                Outcome("memory", title, member.id, self.phase),
                "POST",
                f"{API}/memories",
                json={"title": title, "status": "published", "tags": ["fault"]},
                headers=member.headers,
            )
            if outcome.status == 201:
                self.acknowledged_memories.append(outcome.body["id"])
            await asyncio.sleep(0.01)

    async def post_reactions(self, member: Member) -> None:
        """Each (memory, emoji) once: no request may be a legitimate duplicate of another."""
        used: set[tuple[str, str]] = set()
        while not self.stop.is_set():
            target = next(
                (
                    (memory_id, emoji)
                    for memory_id in reversed(self.acknowledged_memories)
                    for emoji in EMOJI
                    if (memory_id, emoji) not in used
                ),
                None,
            )
            if target is None:
                await asyncio.sleep(0.05)
                continue
            used.add(target)
            memory_id, emoji = target
            await self.send(
                Outcome("reaction", f"{memory_id} {emoji}", member.id, self.phase),
                "POST",
                f"{API}/feed/memories/{memory_id}/reactions",
                json={"emoji": emoji},
                headers=member.headers,
            )
            await asyncio.sleep(0.01)


@pytest.fixture(scope="module")
def server(postgres: EmbeddedPostgres, fault_dir: Path) -> Iterator[ApiServer]:
    with ApiServer(postgres.dsn, fault_dir / "data") as api:
        yield api


@pytest.fixture
async def client(server: ApiServer) -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=MEMORY_POSTERS + REACTORS + 4)
    async with httpx.AsyncClient(
        base_url=server.url, timeout=REQUEST_TIMEOUT, limits=limits
    ) as http:
        yield http


async def _wait_until(check: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out after {seconds} s waiting for {what}"
        await asyncio.sleep(0.05)


async def _ready_status(client: httpx.AsyncClient) -> int | None:
    try:
        return (await client.get("/health/ready", timeout=5)).status_code
    except httpx.TransportError:
        return None


async def test_acknowledged_writes_survive_a_database_restart(
    server: ApiServer, postgres: EmbeddedPostgres, client: httpx.AsyncClient
) -> None:
    factory = Factory(client)
    family = await factory.family(["adult", "teen", "grandparent"])
    posters = [family.members[i % len(family.members)] for i in range(MEMORY_POSTERS)]
    reactors = family.members[:REACTORS]
    load = Load(client)
    tasks = [asyncio.create_task(load.post_memories(m)) for m in posters] + [
        asyncio.create_task(load.post_reactions(m)) for m in reactors
    ]
    ready_during_outage: list[int | None] = []
    try:
        await _wait_until(
            lambda: load.count("memory", "before") >= 20 and load.count("reaction", "before") >= 10,
            20,
            "traffic before the outage",
        )

        load.phase = "outage"
        await asyncio.to_thread(postgres.stop)
        outage_ends = time.monotonic() + OUTAGE_SECONDS
        while time.monotonic() < outage_ends:
            ready_during_outage.append(await _ready_status(client))
            await asyncio.sleep(0.2)
        load.phase = "recovering"
        await asyncio.to_thread(postgres.start)

        recovered_at = time.monotonic() + 30
        while await _ready_status(client) != 200:
            assert time.monotonic() < recovered_at, "the API did not recover by itself in 30 s"
            await asyncio.sleep(0.1)
        load.phase = "after"
        await _wait_until(
            lambda: load.count("memory", "after") >= 20 and load.count("reaction", "after") >= 10,
            20,
            "traffic after the restart",
        )
    finally:
        load.stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
        if not postgres.is_running():
            await asyncio.to_thread(postgres.start)

    assert server.alive(), "the server process died; it must ride out a database restart"
    _check_answers(load, ready_during_outage)
    await _check_database(postgres.dsn, load)


def _check_answers(load: Load, ready_during_outage: list[int | None]) -> None:
    statuses = Counter((o.kind, o.status) for o in load.outcomes)
    unexpected = [o for o in load.outcomes if o.status not in (201, 503)]
    assert not unexpected, (
        f"only 201 or 503 are acceptable; got {statuses}; first: {unexpected[:3]}"
    )
    refused = [o for o in load.outcomes if o.status == 503]
    assert refused, f"no client saw the outage (statuses {statuses}); the test proved nothing"
    for outcome in refused:
        assert isinstance(outcome.body, dict) and isinstance(outcome.body.get("detail"), str)
        assert outcome.body["detail"], outcome
        assert outcome.retry_after is not None and int(outcome.retry_after) > 0, outcome
    # Once ready again, the very next requests succeed: no stale pooled connections.
    after = [o for o in load.outcomes if o.phase_sent == "after"]
    assert after and all(o.status == 201 for o in after), Counter(o.status for o in after)
    assert 503 in ready_during_outage, f"/health/ready during the outage: {ready_during_outage}"


_MEMORIES_BY_TITLE = """
select title, array_agg(id::text) as ids from public.memories
where title = any($1::text[]) group by title
"""
_REACTIONS = """
select id::text, memory_id::text, user_id::text, emoji from public.memory_reactions
where memory_id = any($1::uuid[])
"""
_COUNTERS = """
select m.id::text, m.reaction_count, (select count(*) from public.memory_reactions r
                                      where r.memory_id = m.id) as actual
from public.memories m where m.id = any($1::uuid[])
"""


async def _check_database(dsn: str, load: Load) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        memories = [o for o in load.outcomes if o.kind == "memory"]
        stored = {
            row["title"]: row["ids"]
            for row in await conn.fetch(_MEMORIES_BY_TITLE, [o.marker for o in memories])
        }
        for outcome in memories:
            ids = stored.get(outcome.marker, [])
            assert len(ids) <= 1, f"memory {outcome.marker} stored {len(ids)} times"
            if outcome.status == 201:
                assert ids == [outcome.body["id"]], f"acknowledged memory lost: {outcome}"

        memory_ids = sorted({o.marker.split()[0] for o in load.outcomes if o.kind == "reaction"})
        reactions = await conn.fetch(_REACTIONS, memory_ids)
        by_id = Counter(row["id"] for row in reactions)
        by_marker = Counter(
            (f"{row['memory_id']} {row['emoji']}", row["user_id"]) for row in reactions
        )
        assert all(n == 1 for n in by_marker.values()), "a reaction was stored twice"
        for outcome in load.outcomes:
            if outcome.kind == "reaction" and outcome.status == 201:
                assert by_id[outcome.body["id"]] == 1, f"acknowledged reaction lost: {outcome}"
                assert by_marker[(outcome.marker, outcome.member_id)] == 1

        # The per-memory counters the feed reads stayed exact through the crash.
        for row in await conn.fetch(_COUNTERS, memory_ids):
            assert row["reaction_count"] == row["actual"], dict(row)
    finally:
        await conn.close()


def _raised_while_handling(error: BaseException, cause: BaseException) -> BaseException:
    try:
        try:
            raise cause
        except BaseException:
            raise error  # noqa: B904 - the implicit context is the point
    except BaseException as raised:
        return raised


@pytest.mark.parametrize(
    ("error", "outage"),
    [
        # What a restart looks like from asyncpg and the socket.
        (FileNotFoundError(errno.ENOENT, "No such file or directory"), True),
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), True),
        (asyncpg.CannotConnectNowError("the database system is shutting down"), True),
        (asyncpg.AdminShutdownError("terminating connection due to administrator command"), True),
        (asyncpg.ConnectionDoesNotExistError("connection was closed in the middle"), True),
        (asyncpg.InterfaceError("cannot call Transaction.__aexit__(): connection is closed"), True),
        (
            _raised_while_handling(
                asyncpg.InterfaceError("cannot perform operation: another operation"),
                asyncpg.ConnectionDoesNotExistError("connection was closed"),
            ),
            True,
        ),
        (
            asyncpg.exceptions.InternalClientError(
                "cannot switch to state 15; another operation (2) is in progress"
            ),
            True,
        ),
        (TimeoutError(), True),
        # Bugs stay 500s: a missing file names its path; misuse of a connection is ours.
        (FileNotFoundError(errno.ENOENT, "No such file or directory", "/srv/x.jpg"), False),
        (PermissionError(errno.EACCES, "Permission denied", "/srv/storage"), False),
        (
            asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
            False,
        ),
        (asyncpg.DataError("invalid input for query argument $1"), False),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else str(value),
)
def test_which_errors_count_as_a_database_outage(error: BaseException, outage: bool) -> None:
    assert exception_handlers.is_database_outage(error) is outage
