"""`timeless migrate` logs what PostgreSQL says beside the results (review item 15).

asyncpg drops WARNING and NOTICE messages unless a listener takes them; two warnings of a
real Supabase migration run were lost that way.
"""

import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from app.db.migrate import MIGRATIONS_DIR, migrate
from tests.helpers.supabase_fixtures import dsn_for_database

WARNS = """
do $$
begin
  raise warning 'no privileges were granted for "objects"' using hint = 'check the owner';
  raise notice 'relation "memories" already exists, skipping';
end
$$;
"""


@pytest.fixture
async def scratch_dsn(database_url: str) -> AsyncIterator[str]:
    """A new, empty database on the test server."""
    name = f"tl_migrate_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f"create database {name}")
        yield dsn_for_database(database_url, name)
        await admin.execute(f"drop database if exists {name} with (force)")
    finally:
        await admin.close()


async def test_a_migrations_warnings_and_notices_are_logged(
    scratch_dsn: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    (tmp_path / "20990101000000_warns.sql").write_text(WARNS)

    with caplog.at_level(logging.DEBUG, logger="app.db.migrate"):
        applied = await migrate(scratch_dsn, tmp_path)

    assert applied == ["20990101000000"]
    said = [r for r in caplog.records if r.getMessage().startswith("PostgreSQL: ")]
    warning = next(r for r in said if "no privileges were granted" in r.getMessage())
    assert warning.levelno == logging.WARNING
    assert warning.__dict__["migration"] == "20990101000000_warns.sql"
    assert warning.__dict__["hint"] == "check the owner"
    notice = next(r for r in said if "memories" in r.getMessage())
    assert notice.levelno == logging.INFO


async def test_the_bootstraps_expected_notices_stay_at_debug_level(
    scratch_dsn: str, caplog: pytest.LogCaptureFixture
):
    await migrate(scratch_dsn, MIGRATIONS_DIR)
    caplog.clear()

    with caplog.at_level(logging.DEBUG, logger="app.db.migrate"):
        assert await migrate(scratch_dsn, MIGRATIONS_DIR) == []

    said = [r for r in caplog.records if r.getMessage().startswith("PostgreSQL: ")]
    assert said, "the bootstrap's 'already exists, skipping' notices should reach the log"
    assert all(r.levelno == logging.DEBUG for r in said)
