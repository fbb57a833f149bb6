"""Live updates across processes: a server with 2 workers, and two servers on one database.

Real uvicorn processes (tests/faults/server.py) on the session's database. A stream is
held by whichever worker accepted its connection and a change is made by whichever worker
accepts the request, so the event has to travel through PostgreSQL. With two separate
servers that is certain: the stream is on one and the change on the other.

Latencies are measured and printed (`pytest -s`), never asserted: a loaded 2-core machine
must not make this flaky. An event that does not arrive within EVENT_TIMEOUT fails.
"""

import asyncio
import contextlib
import statistics
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from app.db.listener import APPLICATION_NAME
from tests.faults.server import ApiServer
from tests.helpers import API
from tests.helpers.factories import Factory, Member
from tests.helpers.sse import EVENT_TIMEOUT, EventReader, ServerEvent, open_events

STREAMS = 4
CHANGES = 6
# Short, so that keep-alive comments are seen without waiting 15 s.
SERVER_ENV = {"EVENTS_KEEPALIVE_SECONDS": "0.5"}


@pytest.fixture(scope="module")
def two_workers(migrated_database_url: str, data_dir: Path) -> Iterator[ApiServer]:
    with ApiServer(migrated_database_url, data_dir / "events-2w", SERVER_ENV, workers=2) as server:
        yield server


@pytest.fixture(scope="module")
def other_server(migrated_database_url: str, data_dir: Path) -> Iterator[ApiServer]:
    with ApiServer(migrated_database_url, data_dir / "events-1w", SERVER_ENV) as server:
        yield server


@pytest.fixture
async def on_two_workers(two_workers: ApiServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=two_workers.url, timeout=30) as client:
        yield client


@pytest.fixture
async def on_other_server(other_server: ApiServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=other_server.url, timeout=30) as client:
        yield client


async def post_memory(base_url: str, member: Member, title: str) -> tuple[str, float]:
    """On a new connection (so any worker may take it): the id, and when it was sent.

    Latencies are measured from the moment the request is sent: an upper bound for "from
    the change to the event", which includes making the change.
    """
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        sent_at = time.monotonic()
        response = await client.post(
            f"{API}/memories",
            json={"title": title, "status": "published"},
            headers=member.headers,
        )
    assert response.status_code == 201, response.text
    return response.json()["id"], sent_at


async def published(reader: EventReader, count: int) -> list[ServerEvent]:
    events = [await reader.next_event() for _ in range(count)]
    assert {e.event for e in events} == {"memory.published"}
    return events


async def published_ids(reader: EventReader, count: int) -> list[tuple[str, float]]:
    """(memory id, when it arrived) of the next `count` events, all memory.published."""
    return [(e.json()["memory_id"], e.received_at) for e in await published(reader, count)]


def report(label: str, latencies: list[float]) -> None:
    ms = sorted(latency * 1000 for latency in latencies)
    print(
        f"\n{label}: {len(ms)} deliveries, median {statistics.median(ms):.1f} ms, "
        f"max {ms[-1]:.1f} ms (from sending the change to the event at the other member)"
    )


async def test_each_worker_keeps_one_listen_connection(two_workers: ApiServer, pg):
    workers = psutil.Process(two_workers.pid).children(recursive=True)
    names = {f"{APPLICATION_NAME}:{worker.pid}" for worker in workers}
    assert len(names) >= 2
    deadline = time.monotonic() + 30
    while True:
        listening = await pg.fetch(
            "select application_name from pg_stat_activity where application_name = any($1)",
            list(names),
        )
        if len(listening) == 2 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    # One per worker process, not one per stream.
    assert len(listening) == 2


async def test_an_event_reaches_the_other_member_on_a_two_worker_server(
    two_workers: ApiServer, on_two_workers: httpx.AsyncClient
):
    factory = Factory(on_two_workers)
    family = await factory.family(["adult", "teen"])
    adult, teen = family.adult, family.by_role("teen")
    async with streams_of(on_two_workers, teen, STREAMS) as readers:
        sent = [await post_memory(two_workers.url, adult, f"Memory {n}") for n in range(CHANGES)]
        latencies = []
        for reader in readers:
            received = await published_ids(reader, CHANGES)
            # Every stream, whichever worker holds it, gets every change, in commit order.
            assert [memory_id for memory_id, _ in received] == [m for m, _ in sent]
            latencies += [
                arrived - done for (_, arrived), (_, done) in zip(received, sent, strict=True)
            ]
        report("2 workers", latencies)
        # Idle streams carry a keep-alive comment.
        await wait_for(lambda: all(reader.comments for reader in readers))


async def test_an_event_crosses_from_one_server_to_another(
    two_workers: ApiServer,
    other_server: ApiServer,
    on_two_workers: httpx.AsyncClient,
    on_other_server: httpx.AsyncClient,
):
    factory = Factory(on_two_workers)
    family = await factory.family(["adult", "grandparent"])
    adult, grandparent = family.adult, family.by_role("grandparent")
    latencies = []
    async with (
        open_events(on_two_workers, headers=grandparent.headers) as here,
        open_events(on_other_server, headers=adult.headers) as there,
    ):
        for n in range(3):
            # Made on one server, seen by the stream held by the other (and by both).
            for server, author, far_stream in (
                (other_server, adult, here),
                (two_workers, grandparent, there),
            ):
                memory_id, sent_at = await post_memory(server.url, author, f"Far {n}")
                for stream in (here, there):
                    [(received, arrived)] = await published_ids(stream, 1)
                    assert received == memory_id
                    if stream is far_stream:
                        latencies.append(arrived - sent_at)
    report("2 servers", latencies)


async def test_last_event_id_replays_on_another_server(
    two_workers: ApiServer,
    other_server: ApiServer,
    on_two_workers: httpx.AsyncClient,
    on_other_server: httpx.AsyncClient,
):
    factory = Factory(on_two_workers)
    family = await factory.family(["adult", "teen"])
    adult, teen = family.adult, family.by_role("teen")
    async with open_events(on_two_workers, headers=teen.headers) as reader:
        first, _ = await post_memory(two_workers.url, adult, "Seen")
        [seen] = await published(reader, 1)
        assert seen.json()["memory_id"] == first
        last_id = seen.id
    missed = [(await post_memory(two_workers.url, adult, f"Missed {n}"))[0] for n in range(3)]
    async with open_events(on_other_server, headers=teen.headers, last_event_id=last_id) as again:
        assert [m for m, _ in await published_ids(again, 3)] == missed


async def test_a_removed_members_stream_ends_whichever_server_removes_them(
    two_workers: ApiServer,
    on_two_workers: httpx.AsyncClient,
    on_other_server: httpx.AsyncClient,
):
    factory = Factory(on_two_workers)
    family = await factory.family(["adult", "teen"])
    adult, teen = family.adult, family.by_role("teen")
    async with streams_of(on_two_workers, teen, 2) as readers:
        removed = await on_other_server.delete(
            f"{API}/families/me/members/{teen.id}", headers=adult.headers
        )
        assert removed.status_code == 204, removed.text
        for reader in readers:
            await reader.wait_ended()


# Helpers ---------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def streams_of(
    client: httpx.AsyncClient, member: Member, count: int
) -> AsyncIterator[list[EventReader]]:
    """`count` streams for one member, each on its own connection."""
    async with contextlib.AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(open_events(client, headers=member.headers))
            for _ in range(count)
        ]


async def wait_for(condition: Callable[[], bool], within: float = EVENT_TIMEOUT) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_stopping_a_server_ends_its_streams_with_a_retry_hint(
    migrated_database_url: str, data_dir: Path
):
    """SIGTERM ends open streams at once (clients reconnect elsewhere), rather than holding
    uvicorn's graceful shutdown until its timeout cuts them without a word."""
    with ApiServer(migrated_database_url, data_dir / "events-stop", SERVER_ENV) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            member = (await Factory(client).family(["adult"])).adult
            async with open_events(client, headers=member.headers) as reader:
                await reader.next()  # the stream is up
                stopping = asyncio.create_task(asyncio.to_thread(server.stop))
                rest = await reader.wait_ended()
                await stopping
    assert rest, "the stream was cut without a word"
    assert rest[-1].retry is not None
