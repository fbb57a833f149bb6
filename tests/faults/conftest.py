"""Fault tests: a real uvicorn and a built-in PostgreSQL of their own, per test module.

Each module gets a fresh folder with its own PostgreSQL (so stopping it never disturbs the
session server the other tests share); tests start `ApiServer`s against it as they need.
"""

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from app.db.migrate import migrate
from tests.faults.server import EmbeddedPostgres


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "faults: real-server fault injection (database restart, SIGKILL, full disk)",
    )


@pytest.fixture(scope="module")
def fault_dir() -> Iterator[Path]:
    # Short path: PostgreSQL's Unix socket lives in it.
    path = Path(tempfile.mkdtemp(prefix="tlf-"))
    yield path
    # KEEP_FAULT_DIR=1 keeps the folder (server logs, PostgreSQL log) to look at a failure.
    if not os.environ.get("KEEP_FAULT_DIR"):
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
async def postgres(fault_dir: Path) -> AsyncIterator[EmbeddedPostgres]:
    """This module's own built-in PostgreSQL, migrated."""
    with EmbeddedPostgres(fault_dir) as server:
        await migrate(server.dsn)
        yield server


@pytest.fixture
async def pg_conn(postgres: EmbeddedPostgres) -> AsyncIterator[asyncpg.Connection]:
    """Superuser access to this module's database, to check what really got stored."""
    conn = await asyncpg.connect(postgres.dsn)
    yield conn
    await conn.close()
