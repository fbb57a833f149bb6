"""LangGraph checkpoints in our own PostgreSQL (optional extra `[graph]`).

    async with open_checkpointer(dsn) as saver:
        await setup(saver)                      # once per database; safe to repeat
        graph = builder.compile(checkpointer=saver)

The saver is LangGraph's `AsyncPostgresSaver` on a small psycopg pool, with the settings that
library documents for connections it does not open itself, plus those a transaction pooler
(Supabase's port 6543, pgbouncer) needs:

- `autocommit=True`: the saver commits nothing itself; without it `setup()`'s tables vanish.
- `row_factory=dict_row`: the saver reads rows by column name.
- `prepare_threshold=None`: no server-side prepared statements. Behind a transaction pooler the
  next statement may run on another server connection, where a prepared statement does not
  exist. Checkpoint writes are not hot enough for preparing to matter, so this is always on.

`setup()` also locks the checkpoint tables down: they land in `public`,
which Supabase's Data API serves, and graph state is no member's business. See docs/graph.md.

psycopg and langgraph are imported only when used, so the app runs without the extra.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    from langgraph.checkpoint.serde.base import SerializerProtocol

INSTALL_HINT = (
    'LangGraph checkpoints need the optional "graph" extra: pip install "timeless-love[graph]"'
)

# The tables LangGraph's setup() creates (in the first schema of the search path: `public`).
CHECKPOINT_TABLES = (
    "checkpoints",
    "checkpoint_blobs",
    "checkpoint_writes",
    "checkpoint_migrations",
)
_API_ROLES = "select rolname from pg_roles where rolname in ('anon', 'authenticated')"


class GraphExtraMissing(RuntimeError):
    """The `[graph]` extra (langgraph-checkpoint-postgres, psycopg) is not installed."""


@asynccontextmanager
async def open_checkpointer(
    dsn: str,
    *,
    max_connections: int = 4,
    serde: "SerializerProtocol | None" = None,
) -> AsyncIterator["AsyncPostgresSaver"]:
    """A checkpoint saver on its own small pool, closed on exit.

    `dsn` is the same database the app uses (`settings.database_url`); on Supabase either the
    direct connection or the transaction pooler works. `serde` defaults to LangGraph's; set
    LANGGRAPH_STRICT_MSGPACK=true (docs/graph.md) to limit what a checkpoint can deserialise to.
    """
    try:
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
        from psycopg.rows import dict_row
        from psycopg_pool import AsyncConnectionPool
    except ImportError as exc:
        raise GraphExtraMissing(INSTALL_HINT) from exc

    connection_options: dict[str, Any] = {
        "autocommit": True,
        "row_factory": dict_row,
        "prepare_threshold": None,
    }
    pool = AsyncConnectionPool(
        dsn, min_size=1, max_size=max_connections, kwargs=connection_options, open=False
    )
    await pool.open(wait=True)
    try:
        yield AsyncPostgresSaver(pool, serde=serde)  # type: ignore[arg-type]
    finally:
        await pool.close()


async def setup(saver: "AsyncPostgresSaver") -> None:
    """Create or upgrade the checkpoint tables (LangGraph's own migrations), then lock them down.

    As every table of ours: row level security enabled and forced. One policy lets the role the
    saver connects as (the tables' owner) use them; service_role bypasses row level security;
    the API roles get no grant and no policy. Idempotent: run it at deploy or when a graph
    starts. `saver` must come from `open_checkpointer`.
    """
    from psycopg import sql
    from psycopg_pool import AsyncConnectionPool

    pool = saver.conn
    if not isinstance(pool, AsyncConnectionPool):
        raise TypeError("graph_db.setup() needs a saver from graph_db.open_checkpointer()")
    await saver.setup()
    async with pool.connection() as conn:
        cursor = await conn.execute(_API_ROLES)
        api_roles = [row["rolname"] for row in await cursor.fetchall()]
        for table in CHECKPOINT_TABLES:
            name = sql.Identifier(table)
            for statement in (
                "alter table {} enable row level security",
                "alter table {} force row level security",
                "drop policy if exists checkpoint_owner on {}",
                "create policy checkpoint_owner on {} for all to current_user"
                " using (true) with check (true)",
            ):
                await conn.execute(sql.SQL(statement).format(name))
            for role in api_roles:
                revoke = sql.SQL("revoke all on {} from {}").format(name, sql.Identifier(role))
                await conn.execute(revoke)
