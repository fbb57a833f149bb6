"""LangGraph checkpoints through app.db.graph_db on the built-in PostgreSQL."""

import sys
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from app.db import graph_db

pytest.importorskip(
    "langgraph.checkpoint.postgres.aio", reason='the optional "graph" extra is not installed'
)

from langgraph.checkpoint.base import empty_checkpoint


@pytest.fixture
async def owner_role_dsn(database_url: str) -> AsyncIterator[str]:
    """A fresh database owned by an ordinary login role, as the app's role is on Supabase
    (not a superuser: forced row level security applies to it)."""
    role, database = f"tl_graph_{uuid.uuid4().hex[:8]}", f"tl_graph_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f"create role {role} login")
        await admin.execute(f"create database {database} owner {role}")
    finally:
        await admin.close()
    parts = urlsplit(database_url)
    netloc = f"{role}@{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
    yield urlunsplit(parts._replace(netloc=netloc, path=f"/{database}"))
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f"drop database if exists {database} with (force)")
        await admin.execute(f"drop role if exists {role}")
    finally:
        await admin.close()


async def test_an_ordinary_owner_role_can_use_its_locked_down_tables(owner_role_dsn: str):
    thread = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
    checkpoint = empty_checkpoint()
    async with graph_db.open_checkpointer(owner_role_dsn) as saver:
        await graph_db.setup(saver)
        saved = await saver.aput(thread, checkpoint, {"step": 0}, {})
        found = await saver.aget_tuple(saved)
    assert found is not None
    assert found.checkpoint["id"] == checkpoint["id"]
    admin = await asyncpg.connect(owner_role_dsn)
    try:
        forced = await admin.fetchval(
            "select bool_and(relforcerowsecurity) from pg_class where relname = any($1)",
            list(graph_db.CHECKPOINT_TABLES),
        )
    finally:
        await admin.close()
    assert forced


async def test_a_checkpoint_written_is_read_back(migrated_database_url: str, pg: asyncpg.Pool):
    thread = {"configurable": {"thread_id": f"family-{uuid.uuid4()}", "checkpoint_ns": ""}}
    checkpoint = empty_checkpoint()
    checkpoint["channel_values"] = {"story": "Grandma's paella", "votes": 3}
    checkpoint["channel_versions"] = {"story": 1, "votes": 1}

    async with graph_db.open_checkpointer(migrated_database_url) as saver:
        await graph_db.setup(saver)
        await graph_db.setup(saver)  # idempotent
        saved = await saver.aput(
            thread, checkpoint, {"source": "input", "step": 1}, {"story": 1, "votes": 1}
        )

    # A new pool, as another process would have: the data is in the database, not in memory.
    async with graph_db.open_checkpointer(migrated_database_url) as saver:
        found = await saver.aget_tuple(saved)

    assert found is not None
    assert found.checkpoint["id"] == checkpoint["id"]
    assert found.checkpoint["channel_values"] == {"story": "Grandma's paella", "votes": 3}
    assert found.metadata["step"] == 1

    # Graph state is no member's business: the API roles cannot read the tables.
    for table in graph_db.CHECKPOINT_TABLES:
        assert not await pg.fetchval(
            "select has_table_privilege('authenticated', $1, 'select')", f"public.{table}"
        )
        security = await pg.fetchrow(
            "select relrowsecurity, relforcerowsecurity from pg_class where oid = to_regclass($1)",
            f"public.{table}",
        )
        assert security["relrowsecurity"] and security["relforcerowsecurity"]


async def test_connections_are_transaction_pooler_friendly(migrated_database_url: str):
    async with (
        graph_db.open_checkpointer(migrated_database_url) as saver,
        saver.conn.connection() as conn,
    ):
        assert conn.autocommit is True
        assert conn.prepare_threshold is None


async def test_a_missing_extra_is_a_clear_error(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "langgraph.checkpoint.postgres.aio", None)
    with pytest.raises(graph_db.GraphExtraMissing, match=r"timeless-love\[graph\]"):
        async with graph_db.open_checkpointer("postgresql://unused/none"):
            pass
