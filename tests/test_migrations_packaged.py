"""The migrations ship with the package, and readiness says when the schema is behind them.

They are found from the package's own location (never the working directory): a wheel built
from the same files as the Docker build context holds every one of them; no migration at all is
a loud error, never a database that looks current; `/health/ready` answers 503 while one that
this code ships is not applied. Starting `timeless serve` from another working directory is in
tests/faults/test_lifecycle.py.
"""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import asyncpg
import httpx
import pytest

from app.db import migrate as migrate_module
from app.db.migrate import MigrationsMissing, available_migrations, migrate

ROOT = Path(__file__).resolve().parents[1]
CLI_MIGRATIONS = ROOT / "supabase" / "migrations"  # where the Supabase CLI reads them
FUTURE_MIGRATION = "29991231000000_not_applied_yet.sql"


def test_migrations_are_found_beside_the_package_and_match_the_supabase_folder():
    shipped = available_migrations()
    assert shipped, "no migrations"
    package_dir = Path(migrate_module.__file__).resolve().parent
    assert package_dir / "migrations" == migrate_module.MIGRATIONS_DIR
    assert [m.path.name for m in shipped] == sorted(p.name for p in CLI_MIGRATIONS.glob("*.sql"))
    # One set of files, two names: the package's folder is the Supabase CLI's folder.
    assert migrate_module.MIGRATIONS_DIR.resolve() == CLI_MIGRATIONS.resolve()


def test_a_wheel_built_like_the_docker_image_holds_every_migration(tmp_path: Path):
    # The Docker build context's files, copied as `COPY` copies them (the link stays a link).
    context = tmp_path / "src"
    context.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, context / name)
    shutil.copytree(CLI_MIGRATIONS, context / "supabase" / "migrations")
    shutil.copytree(
        ROOT / "app", context / "app", symlinks=True, ignore=shutil.ignore_patterns("__pycache__")
    )
    assert (context / "app" / "db" / "migrations").is_symlink()
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), "."],
        cwd=context,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = tmp_path.glob("timeless_love-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        packaged = {
            Path(name).name
            for name in archive.namelist()
            if name.startswith("app/db/migrations/") and name.endswith(".sql")
        }
    assert packaged == {p.name for p in CLI_MIGRATIONS.glob("*.sql")}


async def test_no_migrations_is_an_error_before_the_database_is_touched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    with pytest.raises(MigrationsMissing, match="No SQL migrations found"):
        available_migrations(tmp_path)
    monkeypatch.setattr(migrate_module, "MIGRATIONS_DIR", tmp_path)
    # An address nothing listens on: the error must come before any connection attempt.
    with pytest.raises(MigrationsMissing):
        await migrate("postgresql://nobody@127.0.0.1:9/none")


@pytest.fixture
def migrations_with_a_new_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """What a deploy of newer code sees: every migration applied so far, plus one more."""
    folder = tmp_path / "migrations"
    shutil.copytree(CLI_MIGRATIONS, folder)
    (folder / FUTURE_MIGRATION).write_text("select 1;\n")
    monkeypatch.setattr(migrate_module, "MIGRATIONS_DIR", folder)
    return folder


async def test_ready_is_503_while_a_shipped_migration_is_not_applied(
    client: httpx.AsyncClient, migrations_with_a_new_one: Path, migrated_database_url: str
):
    response = await client.get("/health/ready")
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "pending_migrations": [FUTURE_MIGRATION.split("_")[0]],
    }
    # Liveness stays up: the process is fine, only its database is behind.
    assert (await client.get("/health")).status_code == 200
    conn = await asyncpg.connect(migrated_database_url)
    try:
        applied = await conn.fetchval("select count(*) from supabase_migrations.schema_migrations")
    finally:
        await conn.close()
    assert applied == len(available_migrations()) - 1


async def test_ready_is_503_when_the_install_has_no_migrations(
    client: httpx.AsyncClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(migrate_module, "MIGRATIONS_DIR", tmp_path)
    response = await client.get("/health/ready")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "migrations": "missing"}


async def test_ready_is_200_once_migrated(client: httpx.AsyncClient):
    response = await client.get("/health/ready")
    assert response.status_code == 200, response.text
