"""PostgreSQL restarts under open event streams.

A real uvicorn holds a member's GET /events stream; the database is stopped (`pg_ctl -m
fast`: the LISTEN connection is cut), kept down a moment and started again. Expected: the
stream stays open through the outage (keep-alive comments go on), the process's listener
connects again by itself, and a change made after the restart reaches the stream.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from app.db.listener import APPLICATION_NAME
from tests.faults.server import ApiServer, EmbeddedPostgres
from tests.helpers import API
from tests.helpers.factories import Factory
from tests.helpers.sse import open_events

pytestmark = pytest.mark.faults

OUTAGE_SECONDS = 2.0
RECOVERY_SECONDS = 60.0


@pytest.fixture(scope="module")
def server(postgres: EmbeddedPostgres, fault_dir: Path) -> Iterator[ApiServer]:
    env = {"EVENTS_KEEPALIVE_SECONDS": "0.5"}
    with ApiServer(postgres.dsn, fault_dir / "events-data", env) as api:
        yield api


@pytest.fixture
async def client(server: ApiServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=15) as c:
        yield c


async def listeners(dsn: str, pid: int) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        count: int = await conn.fetchval(
            "select count(*) from pg_stat_activity where application_name = $1",
            f"{APPLICATION_NAME}:{pid}",
        )
        return count
    finally:
        await conn.close()


async def test_streams_survive_a_database_restart_and_the_listener_comes_back(
    server: ApiServer, postgres: EmbeddedPostgres, client: httpx.AsyncClient
):
    family = await Factory(client).family(["adult", "teen"])
    adult, teen = family.adult, family.by_role("teen")
    assert await listeners(postgres.dsn, server.pid) == 1

    async with open_events(client, headers=teen.headers) as reader:
        await asyncio.to_thread(postgres.stop)
        comments_before = len(reader.comments)
        await asyncio.sleep(OUTAGE_SECONDS)
        await asyncio.to_thread(postgres.start)
        assert len(reader.comments) > comments_before, "keep-alives stopped during the outage"
        assert not reader.ended.is_set(), "the stream ended with the database"

        # Post until the database takes it (the pool reconnects as requests come).
        deadline = time.monotonic() + RECOVERY_SECONDS
        while True:
            response = await client.post(
                f"{API}/memories",
                json={"title": "After the restart", "status": "published"},
                headers=adult.headers,
            )
            if response.status_code == 201:
                break
            assert response.status_code == 503, response.text
            assert time.monotonic() < deadline, "the API did not recover"
            await asyncio.sleep(0.2)

        event = await reader.next_event(RECOVERY_SECONDS)
        assert (event.event, event.json()["memory_id"]) == (
            "memory.published",
            response.json()["id"],
        )
    assert await listeners(postgres.dsn, server.pid) == 1, "one listener, not one per attempt"
