"""Connection pool and the two kinds of session every query runs in.

`user_session` acts for one signed-in user: a transaction that first switches to
the `authenticated` role and publishes the user's JWT claims, exactly as
Supabase's own API layer does, so the row level security policies written with
`auth.uid()` decide what the user's queries can see and change.

`member_session` is `user_session` for a request: its first statement (a function such as
`app.enter_member_session`) switches the role and publishes the claims itself and returns
the member, in one round trip instead of two.

`system_session` is for privileged work that has no user yet or acts for the
service (registration, login, invite acceptance, background jobs). It runs as
`service_role`, which bypasses RLS; keep what runs in it small and obvious.
"""

import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from contextvars import ContextVar
from types import TracebackType
from typing import Any, Generic, TypeAlias, TypeVar, cast

import asyncpg
import orjson

from app.errors import DATABASE_BUSY, ServiceUnavailable

Connection: TypeAlias = asyncpg.Connection
Record: TypeAlias = asyncpg.Record
# What a member session yields beside its connection (session_service: the Actor).
Member = TypeVar("Member")

logger = logging.getLogger(__name__)

_ENTER_USER_ROLE = """
select set_config('role', 'authenticated', true),
       set_config('request.jwt.claims', $1, true)
"""
_ENTER_SERVICE_ROLE = "select set_config('role', 'service_role', true)"
_CURRENT_ROLE = "select current_setting('role')"
_RESTORE_ROLE = "select set_config('role', $1, true)"
# How long a client is told to wait after `database_busy`: a shortage passes in seconds.
_BUSY_RETRY_AFTER = {"Retry-After": "2"}

# The connection of the session the current task is inside (see Database.connection_in_use).
_session_connection: ContextVar[Connection | None] = ContextVar("session_connection", default=None)


async def init_connection(conn: Connection) -> None:
    for type_name in ("json", "jsonb"):
        # orjson reads what PostgreSQL wrote (a feed page is mostly JSON built in SQL) several
        # times faster than the standard library, to the same Python values.
        await conn.set_type_codec(
            type_name, encoder=json.dumps, decoder=orjson.loads, schema="pg_catalog"
        )


class PooledConnection(asyncpg.Connection):
    """A pool connection that skips the pool's reset after a session's transaction.

    The pool sends `RESET ALL; UNLISTEN *; CLOSE ALL; SELECT pg_advisory_unlock_all()` on
    every release: one more round trip per request. A user, member or system session changes
    nothing that outlives its transaction (role and claims are `set_config(..., true)`,
    settings `SET LOCAL`; no LISTEN, cursor or session lock), and an open transaction is still
    rolled back on release whatever this says, so after one there is nothing to reset. Any
    other use of a pooled connection is reset as asyncpg does by default.
    """

    _transaction_scoped = False

    def mark_transaction_scoped(self) -> None:
        self._transaction_scoped = True

    def get_reset_query(self) -> str:
        return "" if self._transaction_scoped else cast(str, super().get_reset_query())

    async def reset(self, *, timeout: float | None = None) -> None:  # noqa: ASYNC109 (asyncpg's)
        try:
            await super().reset(timeout=timeout)
        finally:
            self._transaction_scoped = False  # the next use is judged on its own


@asynccontextmanager
async def service_role_within(conn: Connection) -> AsyncIterator[Connection]:
    """Service-role statements inside the transaction already open on `conn`.

    For the small privileged step of a request that runs in a member's RLS session or a
    system session (creating a built-in account, choosing a child's username, reading the
    member's own email, which members' grants do not show): taking a second pooled
    connection for it would let N such requests deadlock a pool of N, and its writes would
    commit apart from the caller's. A savepoint holds the role switch: an error rolls both
    back; on success the caller's role is put back.
    """
    async with conn.transaction():
        previous = await conn.fetchval(_CURRENT_ROLE)
        await conn.execute(_ENTER_SERVICE_ROLE)
        yield conn
        await conn.execute(_RESTORE_ROLE, previous)


class Database:
    def __init__(self, pool: asyncpg.Pool, *, acquire_timeout: float | None = None):
        self.pool = pool
        # None: wait for a connection as long as it takes (scripts, tests' own pools).
        self.acquire_timeout = acquire_timeout

    @classmethod
    async def connect(
        cls,
        dsn: str,
        *,
        pooler_mode: bool = False,
        min_size: int = 2,
        max_size: int = 10,
        command_timeout: float = 30.0,
        acquire_timeout: float | None = None,
    ) -> "Database":
        pool = await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            command_timeout=command_timeout,
            init=init_connection,
            connection_class=PooledConnection,
            # A transaction pooler hands each transaction to any backend, where
            # a statement prepared on another one does not exist.
            statement_cache_size=0 if pooler_mode else 100,
        )
        return cls(pool, acquire_timeout=acquire_timeout)

    async def close(self) -> None:
        await self.pool.close()

    @asynccontextmanager
    async def user_session(self, claims: Mapping[str, Any]) -> AsyncIterator[Connection]:
        async with self._connection(transaction_scoped=True) as conn, conn.transaction():
            await conn.execute(_ENTER_USER_ROLE, json.dumps(dict(claims)))
            token = _session_connection.set(conn)
            try:
                yield conn
            finally:
                _session_connection.reset(token)

    def member_session(
        self,
        claims: Mapping[str, Any],
        enter: str,
        *args: Any,
        member: "Callable[[Record | None], Member]",
    ) -> "MemberSession[Member]":
        """A user session whose first statement `enter` switches to `authenticated` with
        `claims` (its first parameter, as JSON text) before it reads anything, and returns
        the member's row, which `member` turns into what the session yields beside the
        connection (or refuses, raising: the transaction then ends). One round trip instead
        of two."""
        return MemberSession(self, orjson.dumps(dict(claims)).decode(), enter, args, member)

    @asynccontextmanager
    async def system_session(self) -> AsyncIterator[Connection]:
        async with self._connection(transaction_scoped=True) as conn, conn.transaction():
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
    async def _connection(self, *, transaction_scoped: bool = False) -> AsyncIterator[Connection]:
        conn = await self._acquire(transaction_scoped=transaction_scoped)
        try:
            yield conn
        finally:
            await self._release(conn)

    async def _acquire(self, *, transaction_scoped: bool = False) -> Connection:
        try:
            conn = await self.pool.acquire(timeout=self.acquire_timeout)
        except TimeoutError:
            # Every connection is busy: answer now (503, retry shortly) rather than queue
            # requests behind one another until clients give up.
            logger.warning("no database connection free", extra={"pool": self.pool_stats()})
            raise ServiceUnavailable(
                "The service is busy; please retry", code=DATABASE_BUSY, headers=_BUSY_RETRY_AFTER
            ) from None
        if transaction_scoped:
            # Through the pool's proxy; a pool of plain connections (tests) has no such mark.
            mark = getattr(conn, "mark_transaction_scoped", None)
            if mark is not None:
                mark()
        return conn

    async def _release(self, conn: Connection) -> None:
        """Give a connection back; this never fails the caller.

        It is released after its transaction has committed or rolled back: the outcome is
        decided. If the server cut the connection just then (a restart), resetting it fails;
        asyncpg drops it and the pool opens a new one later. Raising here would turn a
        stored write into an error answer.
        """
        try:
            await self.pool.release(conn)
        except Exception as exc:
            logger.warning(
                "dropped a database connection that could not be reset",
                extra={"error": type(exc).__name__},
            )

    def pool_stats(self) -> dict[str, int]:
        return {"size": self.pool.get_size(), "idle": self.pool.get_idle_size()}


class MemberSession(Generic[Member]):
    """`Database.member_session`: an async context manager written out as a class, not with
    `@asynccontextmanager`: every member request opens one, and the generator machinery (with
    the pool's and the transaction's own managers nested in it) cost more than its work.

    Entering takes a pooled connection, begins the transaction, runs `enter` and hands its row
    to `member`; leaving commits (or rolls back after an exception) and gives the connection
    back, whatever happened to the transaction.
    """

    __slots__ = (
        "_args",
        "_claims",
        "_conn",
        "_database",
        "_enter",
        "_member",
        "_token",
        "_transaction",
    )

    def __init__(
        self,
        database: Database,
        claims: str,
        enter: str,
        args: tuple[Any, ...],
        member: Callable[[Record | None], Member],
    ):
        self._database = database
        self._claims = claims
        self._enter = enter
        self._args = args
        self._member = member

    async def __aenter__(self) -> tuple[Connection, Member]:
        conn = await self._database._acquire(transaction_scoped=True)
        try:
            transaction = conn.transaction()
            await transaction.start()
            try:
                member = self._member(await conn.fetchrow(self._enter, self._claims, *self._args))
            except BaseException:
                await transaction.rollback()
                raise
        except BaseException:
            await self._database._release(conn)
            raise
        self._conn, self._transaction = conn, transaction
        self._token = _session_connection.set(conn)
        return conn, member

    async def __aexit__(
        self,
        error_type: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _session_connection.reset(self._token)
        try:
            if error_type is None:
                await self._transaction.commit()
            else:
                await self._transaction.rollback()
        finally:
            await self._database._release(self._conn)
