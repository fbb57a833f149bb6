"""Apply the SQL migrations in order, recorded where the Supabase CLI records them.

The files live in `supabase/migrations/` (where the Supabase CLI reads them) and ship inside
the package as `app/db/migrations/` (a link to that folder, followed when the wheel is built),
so they are found from the package's own location whatever the working directory.

On a database that is not Supabase, a bootstrap first creates what Supabase would
provide (roles, the `auth` schema with `auth.uid()`/`auth.jwt()`/`auth.role()`,
a minimal `auth.users`), so the same migrations run unchanged on both.
"""

import logging
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from asyncpg.exceptions import PostgresLogMessage

logger = logging.getLogger(__name__)

# Next to this module in a checkout (through the link) and in an installed wheel alike.
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Any number will do as long as every process agrees on it.
_MIGRATION_LOCK_KEY = 7_351_204_118

_IS_SUPABASE = "select exists (select 1 from pg_roles where rolname = 'supabase_admin')"

# The roles Supabase has (cluster-wide, so a database dump does not carry them).
BOOTSTRAP_ROLES_SQL = """
do $$
begin
  if not exists (select 1 from pg_roles where rolname = 'anon') then
    create role anon nologin noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'authenticated') then
    create role authenticated nologin noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'service_role') then
    create role service_role nologin noinherit bypassrls;
  end if;
end
$$;

-- The login role must be able to switch into them, as Supabase's authenticator can.
grant anon, authenticated, service_role to current_user;
"""

BOOTSTRAP_SQL = (
    BOOTSTRAP_ROLES_SQL
    + """
create schema if not exists auth;
grant usage on schema auth to anon, authenticated, service_role;

-- The same definitions Supabase ships: claims come from request.jwt.claims.
create or replace function auth.jwt() returns jsonb
language sql stable as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim', true), ''),
    nullif(current_setting('request.jwt.claims', true), '')
  )::jsonb
$$;

create or replace function auth.uid() returns uuid
language sql stable as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim.sub', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
  )::uuid
$$;

create or replace function auth.role() returns text
language sql stable as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim.role', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
  )::text
$$;

grant execute on function auth.jwt(), auth.uid(), auth.role()
  to anon, authenticated, service_role;

-- The columns of Supabase's auth.users that the built-in auth provider uses.
create table if not exists auth.users (
  id uuid primary key default gen_random_uuid(),
  email text,
  encrypted_password text,
  raw_app_meta_data jsonb not null default '{}'::jsonb,
  raw_user_meta_data jsonb not null default '{}'::jsonb,
  last_sign_in_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
"""
)

_CREATE_HISTORY = """
create schema if not exists supabase_migrations;
create table if not exists supabase_migrations.schema_migrations (
  version text primary key,
  statements text[],
  name text
);
"""


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text()


class MigrationsMissing(RuntimeError):
    """The package holds no migration: a broken install, never a database to call current."""


def available_migrations(directory: Path | None = None) -> list[Migration]:
    """The migrations shipped with this code, oldest first; raises `MigrationsMissing` if none."""
    directory = directory or MIGRATIONS_DIR
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        version, _, name = path.stem.partition("_")
        migrations.append(Migration(version=version, name=name, path=path))
    if not migrations:
        # An empty list would make every database look current (ready, then 500s).
        raise MigrationsMissing(
            f"No SQL migrations found in {directory}: the installation is incomplete "
            "(they ship as package data under app/db/migrations)"
        )
    return migrations


async def is_supabase(conn: asyncpg.Connection) -> bool:
    return bool(await conn.fetchval(_IS_SUPABASE))


async def applied_versions(conn: asyncpg.Connection) -> set[str]:
    exists = await conn.fetchval("select to_regclass('supabase_migrations.schema_migrations')")
    if exists is None:
        return set()
    rows = await conn.fetch("select version from supabase_migrations.schema_migrations")
    return {row["version"] for row in rows}


async def pending_migrations(
    conn: asyncpg.Connection, directory: Path | None = None
) -> list[Migration]:
    done = await applied_versions(conn)
    return [m for m in available_migrations(directory) if m.version not in done]


class _ServerMessages:
    """Logs what PostgreSQL says beside the results: WARNING, NOTICE, INFO (asyncpg drops them).

    A migration's warnings matter (on Supabase, say, a GRANT that granted nothing); the
    bootstrap's "already exists, skipping" notices are expected on every run, so they are
    logged at debug level only.
    """

    def __init__(self) -> None:
        self.migration: str | None = None

    def __call__(self, conn: asyncpg.Connection, message: PostgresLogMessage) -> None:
        severity = str(getattr(message, "severity_en", None) or message.severity or "").upper()
        if severity == "WARNING":
            level = logging.WARNING
        elif self.migration is None or severity.startswith("DEBUG"):
            level = logging.DEBUG
        else:
            level = logging.INFO
        details = {
            "migration": self.migration,
            "severity": severity,
            "sqlstate": message.sqlstate,
            "detail": getattr(message, "detail", None),
            "hint": getattr(message, "hint", None),
        }
        logger.log(
            level,
            f"PostgreSQL: {message.message}",
            extra={key: value for key, value in details.items() if value is not None},
        )


async def migrate(dsn: str, directory: Path | None = None) -> list[str]:
    """Bring the database at `dsn` up to date; returns the versions applied now."""
    available_migrations(directory)  # no migrations at all: fail before touching the database
    conn = await asyncpg.connect(dsn, statement_cache_size=0)
    messages = _ServerMessages()
    conn.add_log_listener(messages)
    try:
        # All or nothing, in one transaction. Several workers may start at once: the
        # transaction-scoped lock lets one migrate while the others wait, and it is
        # released by the commit itself, so it cannot be left behind by a pooler.
        async with conn.transaction():
            await conn.execute("select pg_advisory_xact_lock($1)", _MIGRATION_LOCK_KEY)
            return await _migrate_locked(conn, directory, messages)
    finally:
        await conn.close()


async def _migrate_locked(
    conn: asyncpg.Connection, directory: Path | None, messages: _ServerMessages
) -> list[str]:
    if not await is_supabase(conn):
        await conn.execute(BOOTSTRAP_SQL)
    await conn.execute(_CREATE_HISTORY)
    applied = []
    for migration in await pending_migrations(conn, directory):
        messages.migration = migration.path.name
        async with conn.transaction():  # a savepoint per migration
            await conn.execute(migration.sql)
            await conn.execute(
                "insert into supabase_migrations.schema_migrations (version, name, statements)"
                " values ($1, $2, $3)",
                migration.version,
                migration.name,
                [migration.sql],
            )
        logger.info("applied migration", extra={"migration": migration.path.name})
        applied.append(migration.version)
    return applied
