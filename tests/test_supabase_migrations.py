"""The migrations on a database prepared like a Supabase project's, and on the built-in server.

The Supabase-like database (tests/supabase_fixtures.py) has Supabase's roles, its `auth` schema
with the real `auth.users` columns, its `storage` tables owned by supabase_storage_admin with row
level security on, and its default privileges in `public`. `app.db.migrate.migrate` must leave
Supabase's own objects alone (no bootstrap), apply every migration, create the private bucket,
and let a member's token read only their own family's files of memories they can see.
"""

import json
import tomllib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from app.adapters.auth.supabase import child_login_email
from app.db.migrate import available_migrations, migrate
from tests.helpers.supabase_fixtures import (
    SUPABASE_AUTH_UID_BODY,
    create_supabase_like_database,
    drop_supabase_like_database,
)

SUPABASE_DIR = Path(__file__).resolve().parents[1] / "supabase"
SEED = SUPABASE_DIR / "seed.sql"
CONTRACT_MEDIA_TYPES = {
    "image/jpeg", "image/png", "image/gif", "image/webp", "image/heic", "image/heif",
    "image/avif", "video/mp4", "video/webm", "video/quicktime",
}  # fmt: skip


@dataclass
class MigratedSupabase:
    dsn: str
    applied: list[str]


@pytest.fixture(scope="module")
async def supabase_db(
    database_url: str, migrated_database_url: str
) -> AsyncIterator[MigratedSupabase]:
    # migrated_database_url first: the session's own database must be bootstrapped before the
    # supabase_admin role exists (while it does, every database on the server looks like
    # Supabase to the migrator).
    database = await create_supabase_like_database(database_url)
    try:
        applied = await migrate(database.dsn)
        yield MigratedSupabase(database.dsn, applied)
    finally:
        await drop_supabase_like_database(database_url, database)


@pytest.fixture
async def conn(supabase_db: MigratedSupabase) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(supabase_db.dsn)
    yield connection
    await connection.close()


async def as_member(conn: asyncpg.Connection, user_id: uuid.UUID, query: str, *args: object):
    """Run `query` as Supabase's API layer would for this user's access token."""
    async with conn.transaction():
        await conn.execute(
            "select set_config('role', 'authenticated', true),"
            " set_config('request.jwt.claims', $1, true)",
            json.dumps({"sub": str(user_id), "role": "authenticated"}),
        )
        return await conn.fetch(query, *args)


# --- applying ------------------------------------------------------------------------------------


async def test_every_migration_applies_and_a_second_run_applies_none(supabase_db: MigratedSupabase):
    assert supabase_db.applied == [m.version for m in available_migrations()]
    assert "20250105000000" in supabase_db.applied
    assert await migrate(supabase_db.dsn) == []


async def test_the_bootstrap_left_supabases_own_objects_alone(conn: asyncpg.Connection):
    # auth.uid() is still Supabase's definition: the bootstrap would have replaced it with ours
    # (`create or replace`, same meaning, different text). (Its role grants cannot be told apart
    # here: roles belong to the whole server, which the session's database bootstrapped.)
    source = await conn.fetchval(
        "select prosrc from pg_proc where oid = 'auth.uid()'::regprocedure"
    )
    assert source == SUPABASE_AUTH_UID_BODY
    # auth.users is Supabase's: all its columns, and no id default (ours has one).
    columns = {
        row["column_name"]: row["column_default"]
        for row in await conn.fetch(
            "select column_name, column_default from information_schema.columns"
            " where table_schema = 'auth' and table_name = 'users'"
        )
    }
    assert {"aud", "is_anonymous", "is_sso_user", "confirmed_at"} <= set(columns)
    assert columns["id"] is None
    owner = await conn.fetchval("select tableowner from pg_tables where schemaname = 'auth'"
                                " and tablename = 'users'")  # fmt: skip
    assert owner == "supabase_auth_admin"


async def test_the_memories_bucket_is_private_with_the_specs_limits(conn: asyncpg.Connection):
    bucket = await conn.fetchrow("select * from storage.buckets where id = 'memories'")
    assert bucket is not None
    assert bucket["name"] == "memories"
    assert bucket["public"] is False
    assert bucket["file_size_limit"] == 50 * 1024 * 1024
    # And the zip a family uploads to import (docs/importing.md).
    assert set(bucket["allowed_mime_types"]) == CONTRACT_MEDIA_TYPES | {"application/zip"}


async def test_the_archives_bucket_is_private_and_takes_only_zips(conn: asyncpg.Connection):
    # The family archive's exports (docs/archive.md): zips of any size the project allows.
    bucket = await conn.fetchrow("select * from storage.buckets where id = 'archives'")
    assert bucket is not None
    assert bucket["public"] is False
    assert bucket["file_size_limit"] is None
    assert list(bucket["allowed_mime_types"]) == ["application/zip"]
    policies = await conn.fetchval(
        "select count(*) from pg_policies where schemaname = 'storage' and tablename = 'objects'"
        " and (qual like '%archives%' or with_check like '%archives%')"
    )
    assert policies == 0  # nothing for members' tokens: only the service role reads it


# --- the storage read policy ---------------------------------------------------------------------


async def _member(conn: asyncpg.Connection, family: uuid.UUID, role: str) -> uuid.UUID:
    user_id = uuid.uuid4()
    email = f"{user_id.hex[:12]}@example.com"
    await conn.execute(
        "insert into auth.users (id, aud, role, email) values ($1, 'authenticated',"
        " 'authenticated', $2)",
        user_id,
        email,
    )
    await conn.execute(
        "insert into public.user_profiles (id, family_unit_id, role, display_name, email)"
        " values ($1, $2, $3, 'M', $4)",
        user_id,
        family,
        role,
        email,
    )
    return user_id


async def _family(conn: asyncpg.Connection) -> uuid.UUID:
    return await conn.fetchval("insert into public.family_units (name) values ('F') returning id")


async def _memory(
    conn: asyncpg.Connection, family: uuid.UUID, author: uuid.UUID, status: str
) -> uuid.UUID:
    return await conn.fetchval(
        "insert into public.memories (family_unit_id, user_id, title, status)"
        " values ($1, $2, 'M', $3) returning id",
        family,
        author,
        status,
    )


async def test_a_members_token_reads_only_its_familys_visible_memory_files(
    conn: asyncpg.Connection,
):
    family_a, family_b = await _family(conn), await _family(conn)
    a1 = await _member(conn, family_a, "adult")
    b1 = await _member(conn, family_b, "adult")
    b2 = await _member(conn, family_b, "teen")
    a_published = await _memory(conn, family_a, a1, "published")
    b_published = await _memory(conn, family_b, b1, "published")
    b1_draft = await _memory(conn, family_b, b1, "draft")
    b2_draft = await _memory(conn, family_b, b2, "draft")

    # Written as the service role writes them (signed uploads); a superuser here.
    await conn.execute(
        "insert into storage.buckets (id, name, public) values ('avatars', 'avatars', false)"
        " on conflict do nothing"
    )
    objects = {
        ("memories", f"{family_a}/{a_published}/1.jpg"),
        ("memories", f"{family_b}/{b_published}/2.jpg"),
        ("memories", f"{family_b}/{b_published}/2_thumb.jpg"),
        ("memories", f"{family_b}/{b1_draft}/3.jpg"),
        ("memories", f"{family_b}/{b2_draft}/4.jpg"),
        # Family B's folder, family A's memory; and the other way round.
        ("memories", f"{family_b}/{a_published}/5.jpg"),
        ("memories", f"{family_a}/{b_published}/6.jpg"),
        # Not the layout: an odd folder name, a deeper path, another bucket.
        ("memories", f"{family_b}/not-a-memory/7.jpg"),
        ("memories", f"{family_b}/{b_published}/deeper/8.jpg"),
        ("avatars", f"{family_b}/{b_published}/9.jpg"),
    }
    await conn.executemany(
        "insert into storage.objects (bucket_id, name) values ($1, $2)", sorted(objects)
    )

    async def readable(user: uuid.UUID) -> set[str]:
        rows = await as_member(
            conn,
            user,
            "select name from storage.objects where name like any($1::text[])",
            [f"{family_a}/%", f"{family_b}/%"],
        )
        return {row["name"].rsplit("/", 1)[1] for row in rows}

    assert await readable(b1) == {"2.jpg", "2_thumb.jpg", "3.jpg"}  # not b2's draft
    assert await readable(b2) == {"2.jpg", "2_thumb.jpg", "4.jpg"}  # not b1's draft
    assert await readable(a1) == {"1.jpg"}
    assert await readable(uuid.uuid4()) == set()  # a Supabase account with no profile

    # No policy lets a member's token change anything in Storage.
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await as_member(
            conn,
            b1,
            "insert into storage.objects (bucket_id, name) values ('memories', $1) returning id",
            f"{family_b}/{b_published}/10.jpg",
        )
    deleted = await as_member(
        conn, b1, "delete from storage.objects where bucket_id = 'memories' returning id"
    )
    assert deleted == []


# --- the API roles' privileges -------------------------------------------------------------------


async def test_supabase_default_privileges_do_not_let_a_member_change_role_or_family(
    conn: asyncpg.Connection,
):
    family, other_family = await _family(conn), await _family(conn)
    adult = await _member(conn, family, "adult")
    child = await _member(conn, family, "child")
    for statement, args in [
        ("update public.user_profiles set role = 'adult' where id = $1", (child,)),
        (
            "update public.user_profiles set family_unit_id = $2 where id = $1",
            (child, other_family),
        ),
        ("update public.family_units set created_by = $1 where id = $2", (child, family)),
        ("update public.memories set reaction_count = 99 where user_id = $1", (child,)),
        ("delete from public.user_profiles where id = $1", (child,)),
    ]:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await as_member(conn, child, statement, *args)
    # What the migrations grant still works.
    renamed = await as_member(
        conn,
        child,
        "update public.user_profiles set display_name = 'Pip' where id = $1 returning id",
        child,
    )
    assert [row["id"] for row in renamed] == [child]
    assert await as_member(conn, adult, "select id from public.memory_details") == []

    privilege = "select has_table_privilege($1, $2, $3)"
    assert not await conn.fetchval(privilege, "anon", "public.memories", "select")
    assert not await conn.fetchval(privilege, "anon", "public.user_profiles", "select")
    assert not await conn.fetchval(privilege, "authenticated", "public.analytics_events", "insert")
    assert await conn.fetchval(privilege, "service_role", "public.memories", "update")

    # Tables created later by the migrating role are no longer granted by default.
    await conn.execute("create table public.tl_probe (id int)")
    try:
        assert not await conn.fetchval(privilege, "anon", "public.tl_probe", "select")
        assert not await conn.fetchval(privilege, "authenticated", "public.tl_probe", "select")
    finally:
        await conn.execute("drop table public.tl_probe")


# --- seed.sql ------------------------------------------------------------------------------------


async def test_seed_applies_on_top_and_its_members_see_what_they_should(conn: asyncpg.Connection):
    await conn.execute(SEED.read_text())
    members = {
        row["display_name"]: row
        for row in await conn.fetch(
            "select p.id, p.display_name, p.role, p.email, p.username, u.email as auth_email,"
            " u.email_confirmed_at, u.confirmation_token"
            " from public.user_profiles p join auth.users u on u.id = p.id"
            " where p.family_unit_id = 'f4a1e000-0000-4000-8000-000000000001'"
        )
    }
    assert sorted(m["role"] for m in members.values()) == ["adult", "child", "grandparent", "teen"]
    sofia = members["Sofia Rivera"]
    assert sofia["email"] is None
    assert sofia["auth_email"] == child_login_email(sofia["username"])
    for member in members.values():
        assert member["email_confirmed_at"] is not None
        assert member["confirmation_token"] == ""  # GoTrue cannot read NULL there
    identities = await conn.fetchval(
        "select count(*) from auth.identities where provider = 'email' and user_id = any($1)",
        [m["id"] for m in members.values()],
    )
    assert identities == 4

    async def titles(name: str) -> int:
        rows = await as_member(conn, members[name]["id"], "select title from public.memories")
        return len(rows)

    assert await titles("Maria Rivera") == 3  # published only
    assert await titles("Leo Rivera") == 4  # and his own draft


# --- the built-in server -------------------------------------------------------------------------


async def test_on_the_built_in_server_the_storage_parts_are_skipped(pg: asyncpg.Pool):
    assert await pg.fetchval("select to_regclass('storage.buckets')") is None
    assert await pg.fetchval(
        "select exists (select 1 from supabase_migrations.schema_migrations"
        " where version = '20250105000000')"
    )
    assert (
        await pg.fetchval("select to_regprocedure('app.memory_object_visible(text)')") is not None
    )


# --- the Supabase CLI's config.toml ---------------------------------------------------------------


def test_cli_config_describes_the_local_stack():
    config = tomllib.loads((SUPABASE_DIR / "config.toml").read_text())
    assert config["project_id"] == "timeless-love"
    for section in ("api", "db", "studio", "auth", "storage"):
        assert section in config
    assert config["api"]["port"] == 54321
    assert config["db"]["port"] == 54322
    assert config["storage"]["file_size_limit"] == "50MiB"
    # seed.sql is the one `supabase db reset` loads, and it exists.
    seeds = config["db"]["seed"]["sql_paths"]
    assert config["db"]["seed"]["enabled"] is True
    assert seeds == ["./seed.sql"] and all((SUPABASE_DIR / path).is_file() for path in seeds)
    # Only the backend creates accounts; email + password sign-in must stay possible.
    assert config["auth"]["enable_signup"] is False
    assert config["auth"]["email"]["enable_signup"] is True
    assert config["auth"]["minimum_password_length"] <= 10
