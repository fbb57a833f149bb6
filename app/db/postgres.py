"""Connection pool and the two kinds of session every query runs in.

`user_session` acts for one signed-in user: a transaction that first switches to
the `authenticated` role and publishes the user's JWT claims, exactly as
Supabase's own API layer does, so the row level security policies written with
`auth.uid()` decide what the user's queries can see and change.

`system_session` is for privileged work that has no user yet or acts for the
service (registration, login, invite acceptance, background jobs). It runs as
`service_role`, which bypasses RLS; keep what runs in it small and obvious.
"""

import json
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any, TypeAlias

import asyncpg

Connection: TypeAlias = asyncpg.Connection

logger = logging.getLogger(__name__)

_ENTER_USER_ROLE = """
select set_config('role', 'authenticated', true),
       set_config('request.jwt.claims', $1, true)
"""
_ENTER_SERVICE_ROLE = "select set_config('role', 'service_role', true)"

# The connection of the session the current task is inside (see Database.connection_in_use).
_session_connection: ContextVar[Connection | None] = ContextVar("session_connection", default=None)


async def init_connection(conn: Connection) -> None:
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(
            type_name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )


class Database:
    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool

    @classmethod
    async def connect(
        cls,
        dsn: str,
        *,
        pooler_mode: bool = False,
        min_size: int = 2,
        max_size: int = 10,
        command_timeout: float = 30.0,
    ) -> "Database":
        pool = await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            command_timeout=command_timeout,
            init=init_connection,
            # A transaction pooler hands each transaction to any backend, where
            # a statement prepared on another one does not exist.
            statement_cache_size=0 if pooler_mode else 100,
        )
        return cls(pool)

    async def close(self) -> None:
        await self.pool.close()

    @asynccontextmanager
    async def user_session(self, claims: Mapping[str, Any]) -> AsyncIterator[Connection]:
        async with self._connection() as conn, conn.transaction():
            await conn.execute(_ENTER_USER_ROLE, json.dumps(dict(claims)))
            token = _session_connection.set(conn)
            try:
                yield conn
            finally:
                _session_connection.reset(token)

    @asynccontextmanager
    async def system_session(self) -> AsyncIterator[Connection]:
        async with self._connection() as conn, conn.transaction():
            await conn.execute(_ENTER_SERVICE_ROLE)
            token = _session_connection.set(conn)
            try:
                yield conn
            finally:
                _session_connection.reset(token)

    def connection_in_use(self) -> Connection | None:
        """The connection of the session the current task is inside, if any.

        A small lookup made while a session is open (an adapter reading a family's storage
        signing epoch during a request) reads on it rather than taking a second pooled
        connection: N requests each holding one connection and waiting for another would
        deadlock a pool of N. It reads with that session's role and row level security.
        """
        return _session_connection.get()

    @asynccontextmanager
    async def snapshot_session(self) -> AsyncIterator[Connection]:
        """A service-role, read-only REPEATABLE READ transaction: one consistent view of the
        database for a long read (an archive export), as pg_dump takes one.

        It sits idle while files are copied, so no idle-in-transaction limit applies to it.
        Service role: the caller filters by family itself, as background jobs do.
        """
        async with (
            self._connection() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            await conn.execute(_ENTER_SERVICE_ROLE)
            await conn.execute("set local idle_in_transaction_session_timeout = 0")
            yield conn

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Connection]:
        """A pooled connection whose hand-back never fails the caller.

        It is released after its transaction has committed or rolled back: the outcome is
        decided. If the server cut the connection just then (a restart), resetting it fails;
        asyncpg drops it and the pool opens a new one later. Raising here would turn a
        stored write into an error answer.
        """
        conn = await self.pool.acquire()
        try:
            yield conn
        finally:
            try:
                await self.pool.release(conn)
            except Exception as exc:
                logger.warning(
                    "dropped a database connection that could not be reset",
                    extra={"error": type(exc).__name__},
                )

    def pool_stats(self) -> dict[str, int]:
        return {"size": self.pool.get_size(), "idle": self.pool.get_idle_size()}
