"""One LISTEN connection per process, kept alive through database restarts.

PostgreSQL delivers a NOTIFY to every session LISTENing on its channel, on every server
connected to the database: that is the whole fan-out between worker processes and servers.
The connection is dedicated (a pooled one would be handed to requests) and needs a real
session: through Supabase's transaction pooler LISTEN does not work, hence its own DSN.

Notifications sent while the connection is down are lost; the owner is told on every
(re)connection (`on_connect`), after LISTEN is in place, so it can catch up from the
table the notifications point to. A connection that silently died (no FIN, a dropped NAT
entry) is found by a periodic ping.
"""

import asyncio
import contextlib
import logging
import os
import random
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg

logger = logging.getLogger(__name__)

Notify = Callable[[str, str], None]
APPLICATION_NAME = "timeless-events-listener"


class PgListener:
    def __init__(
        self,
        dsn: str,
        channels: Sequence[str],
        *,
        on_notify: Notify,
        on_connect: Callable[[], None],
        ping_interval: float = 15.0,
        ping_timeout: float = 5.0,
        connect_timeout: float = 10.0,
        max_backoff: float = 10.0,
        application_name: str = APPLICATION_NAME,
    ):
        self._dsn = dsn
        self._application_name = application_name
        self._channels = tuple(channels)
        self._on_notify = on_notify
        self._on_connect = on_connect
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._connect_timeout = connect_timeout
        self._max_backoff = max_backoff
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        # How many times the connection was (re)established: tests and metrics read it.
        self.connections = 0

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, within: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await self._connected.wait()
        return self.connected

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="pg-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        backoff = 0.2
        while True:
            try:
                await self._listen_until_lost()
                backoff = 0.2  # it was up: the next try is quick
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning(
                    "event listener connection failed; retrying",
                    extra={"error": type(exc).__name__, "retry_in_s": round(backoff, 2)},
                )
            # Jitter: many processes reconnecting after a restart do not all come at once.
            await asyncio.sleep(backoff * random.uniform(0.5, 1.5))  # noqa: S311
            backoff = min(backoff * 2, self._max_backoff)

    async def _listen_until_lost(self) -> None:
        conn: asyncpg.Connection = await asyncpg.connect(
            self._dsn,
            timeout=self._connect_timeout,
            statement_cache_size=0,
            # Findable in pg_stat_activity: one per process, named with its pid.
            server_settings={"application_name": f"{self._application_name}:{os.getpid()}"},
        )
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        try:
            for channel in self._channels:
                await conn.add_listener(channel, self._notified)
            self.connections += 1
            self._connected.set()
            logger.info("event listener connected", extra={"connections": self.connections})
            self._on_connect()
            while not lost.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lost.wait(), self._ping_interval)
                if not lost.is_set():
                    await asyncio.wait_for(conn.fetchval("select 1"), self._ping_timeout)
            logger.warning("event listener connection lost; reconnecting")
        finally:
            self._connected.clear()
            # The connection may be half dead: do not wait on a polite goodbye.
            conn.terminate()

    def _notified(self, _conn: Any, _pid: int, channel: str, payload: str) -> None:
        try:
            self._on_notify(channel, payload)
        except Exception:
            logger.exception("event listener callback failed", extra={"channel": channel})
