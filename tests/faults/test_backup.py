"""`timeless backup` / `timeless restore`: a round trip through a fresh data folder.

A family is created through a real `timeless serve`; `timeless backup` runs while it serves
(as a nightly job would) and leaves it serving; `timeless restore` fills a new data folder,
where a server started on it lets the same adult log in and read the same memory (roles,
grants and row level security came back too). Restoring over data is refused, and a backup
that fails leaves no file behind (the old advice left a 0-byte dump).
"""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.faults.server import TimelessServe, postgres_processes_in, stop_postgres_in
from tests.helpers import API
from tests.helpers.factories import Factory
from tests.helpers.media_samples import create_memory

pytestmark = pytest.mark.faults


@pytest.fixture
def root() -> Iterator[Path]:
    # Short path: PostgreSQL's Unix socket lives in it.
    path = Path(tempfile.mkdtemp(prefix="tlb-"))
    yield path
    for data in (path / "a", path / "b"):
        stop_postgres_in(data / "pg")
    subprocess.run(["rm", "-rf", str(path)], check=False)


async def test_backup_while_serving_then_restore_into_a_new_data_folder(root: Path) -> None:
    dump = root / "family.dump"
    original = TimelessServe(root / "a", cwd=root)
    with original:
        async with httpx.AsyncClient(base_url=original.url, timeout=30) as client:
            adult = await Factory(client).register("adult")
            memory = await create_memory(client, adult, title="Grandpa's boat, summer 1974")

            backup = await asyncio.to_thread(original.run, "backup", str(dump))
            assert backup.returncode == 0, backup.stdout + backup.stderr
            # The server it shared PostgreSQL with is still serving.
            assert (await client.get("/health/ready")).status_code == 200
    assert dump.read_bytes().startswith(b"PGDMP")

    restored = TimelessServe(root / "b", cwd=root)
    result = await asyncio.to_thread(restored.run, "restore", str(dump))
    assert result.returncode == 0, result.stdout + result.stderr
    assert postgres_processes_in(restored.pgdata) == [], "restore left PostgreSQL running"

    with restored:
        async with httpx.AsyncClient(base_url=restored.url, timeout=30) as client:
            login = await client.post(
                f"{API}/auth/login", json={"email": adult.email, "password": adult.password}
            )
            assert login.status_code == 200, login.text
            token = login.json()["access_token"]
            # Read as the member, through row level security: grants and policies came back.
            read = await client.get(
                f"{API}/memories/{memory['id']}", headers={"Authorization": f"Bearer {token}"}
            )
            assert read.status_code == 200, read.text
            assert read.json()["title"] == "Grandpa's boat, summer 1974"

    again = await asyncio.to_thread(restored.run, "restore", str(dump))
    assert again.returncode != 0
    assert "already holds a schema" in again.stderr


def test_a_failed_backup_leaves_no_file(root: Path) -> None:
    target = root / "nothing.dump"
    # A database that does not answer: pg_dump fails, and no file may look like a backup.
    cli = TimelessServe(
        root / "a", cwd=root, env={"DATABASE_URL": "postgresql://u:secret-pw@127.0.0.1:9/none"}
    )
    result = cli.run("backup", str(target))
    assert result.returncode != 0
    assert "pg_dump failed" in result.stderr
    assert "secret-pw" not in result.stdout + result.stderr
    assert list(root.glob("*nothing.dump*")) == []
