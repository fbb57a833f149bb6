"""A member talking to the database directly, as Supabase's Data API lets any member's token.

The token becomes role `authenticated` with the member's claims, exactly as the app's own user
sessions do. Rule: such a member reads only what the API would show and writes nothing the API
would refuse. Two parts:

- The privileges `anon` and `authenticated` hold, read from the catalog (tables, views,
  columns, callable functions), equal the reviewed lists below. A new grant fails the test
  until someone reviews it and adds it here.
- Writes of server-owned values (counters, timestamps, authorship, processing state, sizes)
  are refused, or end up holding the server's value.

Both run on the built-in server and on a database prepared like a Supabase project (Supabase's
default privileges grant the API roles everything in `public`).
"""

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from tests.helpers.supabase_fixtures import (
    create_supabase_like_database,
    drop_supabase_like_database,
)

# --- the reviewed privileges ---------------------------------------------------------------------
# Whole-table privileges. `authenticated` reads what row level security then narrows to the
# member's family (and their own drafts); writes are per column (below) or whole-row deletes
# that policies limit to what the permission table allows. `anon` holds nothing: every endpoint
# that works without a login goes through the server, never through anon's own grants.
TABLE_PRIVILEGES = {
    ("authenticated", "app.auth_sessions", "SELECT"),
    ("authenticated", "app.family_memory_counts", "SELECT"),
    # The feed's change log for stable scrolling: only the log of memories the member may see
    # (policy memory_changes_select), so no other member's draft shows that it exists.
    ("authenticated", "app.memory_changes", "SELECT"),
    ("authenticated", "app.refresh_tokens", "SELECT"),
    ("authenticated", "public.analytics_events", "SELECT"),
    # The family's archive exports, for adults and grandparents (policy archive_exports_select);
    # progress and results are written by the exporter as the service role only.
    ("authenticated", "public.archive_exports", "SELECT"),
    ("authenticated", "public.analytics_metrics", "SELECT"),
    ("authenticated", "public.family_units", "SELECT"),
    # Imports (adults and grandparents of the family): the jobs they follow, and the records
    # of what an import already brought in, written in the importing member's own session.
    ("authenticated", "public.family_imports", "SELECT"),
    ("authenticated", "public.import_items", "INSERT"),
    ("authenticated", "public.import_items", "SELECT"),
    ("authenticated", "public.import_memories", "INSERT"),
    ("authenticated", "public.import_memories", "SELECT"),
    ("authenticated", "public.invitations", "SELECT"),
    ("authenticated", "public.memories", "DELETE"),
    ("authenticated", "public.memories", "SELECT"),
    ("authenticated", "public.memory_comment_details", "SELECT"),
    ("authenticated", "public.memory_comments", "SELECT"),
    ("authenticated", "public.memory_details", "SELECT"),
    ("authenticated", "public.memory_media", "DELETE"),
    ("authenticated", "public.memory_media", "SELECT"),
    ("authenticated", "public.memory_reactions", "DELETE"),
    ("authenticated", "public.memory_reactions", "SELECT"),
    ("authenticated", "public.pet_profiles", "DELETE"),
    ("authenticated", "public.pet_profiles", "SELECT"),
}

# Column privileges: exactly the columns the API writes in a member's session. Counters,
# created_at, processing state, removal and acceptance are never among them; updated_at,
# modified_by, deleted_at, created_by and revoked_at are, but a trigger writes the server's
# value into them (now(), the member's own id).
_COLUMNS = {
    # The member's own logins (policy auth_sessions_revoke_own): ending one, and the time of
    # its last use, which the trigger sets to now whatever is written.
    ("app.auth_sessions", "UPDATE"): "last_used_at revoked_at revoked_reason",
    # keep_location: PATCH /families/me (the update policy limits it to adults, grandparents).
    ("public.family_units", "UPDATE"): "keep_location name updated_at",
    # avatar_media_id: an avatar uploaded through the signed-upload flow (a trigger refuses a
    # memory's photo, or another family's media, as an avatar).
    ("public.user_profiles", "UPDATE"): "avatar_media_id avatar_url display_name updated_at",
    ("public.pet_profiles", "UPDATE"): "avatar_media_id avatar_url",
    # Members' display data; never `email` (not even one's own: app.current_member_email()).
    ("public.user_profiles", "SELECT"): (
        "avatar_media_id avatar_url created_at display_name family_unit_id id removed_at role"
        " updated_at username"
    ),
    # An adult provisioning a child (policy user_profiles_provision_child).
    ("public.user_profiles", "INSERT"): "display_name email family_unit_id id role username",
    ("public.pet_profiles", "INSERT"): "avatar_url created_by display_name family_unit_id",
    # Not expires_at: the server's lifetime (an inviter's own would never expire).
    ("public.invitations", "INSERT"): "email family_unit_id invited_by role token_hash",
    ("public.invitations", "UPDATE"): "status",
    ("public.memories", "INSERT"): (
        "description family_unit_id location memory_date status tags title user_id"
    ),
    ("public.memories", "UPDATE"): (
        "description location memory_date modified_by status tags title updated_at"
    ),
    # purpose (memory or avatar) and sha256 as registration writes them. NOTE: a member's own
    # token could register a wrong sha256 and so make the family refuse those bytes later as a
    # duplicate: a nuisance inside the member's own family only (reviewed, kept).
    ("public.memory_media", "INSERT"): (
        "family_unit_id file_name file_size id memory_id mime_type purpose sha256"
        " storage_bucket storage_path"
    ),
    ("public.memory_reactions", "INSERT"): "emoji family_unit_id memory_id user_id",
    # Starting an import; its status, progress and report are the runner's (system session).
    ("public.family_imports", "INSERT"): "created_by family_unit_id source_name storage_path",
    (
        "public.memory_comments",
        "INSERT",
    ): "content family_unit_id memory_id parent_comment_id user_id",
    ("public.memory_comments", "UPDATE"): "content deleted_at updated_at",
    # Queuing an export (policy archive_exports_insert: own family, oneself, adult or
    # grandparent); status, progress, paths and results are the exporter's alone.
    ("public.archive_exports", "INSERT"): "family_unit_id include requested_by",
}
COLUMN_PRIVILEGES = {
    ("authenticated", relation, column, privilege)
    for (relation, privilege), columns in _COLUMNS.items()
    for column in columns.split()
}

# Functions a member can call (schema usage and EXECUTE; trigger functions cannot be called).
# (role, function, security definer?) A definer function acts with its owner's rights, so each
# of those checks the caller itself: current_family_id/current_member_role answer only for the
# caller; remove_family_member re-checks the caller is an adult of the family;
# matching_memory_ids applies the memories_select rule; own_family_object_size answers only
# for the caller's family's folder.
# depart_family acts only for the caller (leaving or deleting their own account, as the API
# does). queue_invite_mail is the server's alone (it takes the mail's text: service_role).
CALLABLE_FUNCTIONS = {
    # Media variants: pure path helpers (no table access of their own), the family's dedupe
    # lookup (definer: answers only for the caller's own family; it tells a member whether the
    # family holds a file with that hash, drafts included: reviewed, needed for 409 before
    # upload), and forgetting stored locations (definer: the caller's family, adults and
    # grandparents only, as PATCH /families/me {keep_location: false} does).
    ("authenticated", "app.avatar_path(uuid)", False),
    ("authenticated", "app.family_media_with_sha256(text)", True),
    ("authenticated", "app.forget_family_locations()", True),
    ("authenticated", "app.media_folder(uuid, uuid)", False),
    ("authenticated", "app.path_in_folder(text, text)", False),
    ("authenticated", "app.variant_paths_in_folder(jsonb, text)", False),
    # Quotas (20250203030000_upload_reservations.sql): members have no privilege on
    # app.upload_reservations; these definers take the family from the caller's profile.
    # Locking and reading the family's use (no data beyond byte counts), reserving for an
    # upload into a memory of the caller's family (or its avatars; at most a day; a member
    # calling it directly only shrinks their own family's room), releasing one of the
    # family's reservations (the API does it when the file is registered).
    ("authenticated", "app.family_storage_used()", True),
    ("authenticated", "app.lock_family_storage(uuid, text)", True),
    ("authenticated", "app.release_upload(text)", True),
    ("authenticated", "app.reserve_upload(uuid, text, bigint, timestamp with time zone)", True),
    ("authenticated", "app.reserved_bytes(bigint, bigint)", False),
    # Importing a Timeless export (20250217000000_import_comments_reactions.sql): definers
    # that take the family and the importer from the caller's session and check the import's
    # rules (an adult or grandparent; a memory of the family; an author who is a member of it,
    # else the caller under the archive's name). Reviewed: they let an adult or grandparent
    # write a back-dated comment or reaction, also as another member of the family, exactly
    # as an import of a crafted archive through the API can; an imported comment says so
    # (`imported` in the responses).
    (
        "authenticated",
        "app.import_comment(uuid, uuid, uuid, uuid, text, text, timestamp with time zone, "
        "timestamp with time zone, boolean)",
        True,
    ),
    ("authenticated", "app.import_reaction(uuid, uuid, text, timestamp with time zone)", True),
    ("authenticated", "app.current_family_id()", True),
    # The caller's own email (members' grants show no email column).
    ("authenticated", "app.current_member_email()", True),
    ("authenticated", "app.current_member_role()", True),
    ("authenticated", "app.depart_family(boolean, boolean)", True),
    (
        "authenticated",
        "app.feed_band_at(timestamp with time zone, timestamp with time zone)",
        False,
    ),
    ("authenticated", "app.feed_band_score(integer, integer)", False),
    ("authenticated", "app.feed_band_start(integer)", False),
    ("authenticated", "app.feed_band_start_at(integer, timestamp with time zone)", False),
    ("authenticated", "app.feed_engagement_score(integer, integer)", False),
    ("authenticated", "app.feed_score(timestamp with time zone, integer, integer)", False),
    ("authenticated", "app.feed_time_score(timestamp with time zone)", False),
    ("authenticated", "app.invite_status(text, timestamp with time zone)", False),
    ("authenticated", "app.matching_memory_ids(text, text[])", True),
    ("authenticated", "app.memory_object_visible(text)", False),
    ("authenticated", "app.own_family_object_size(text, text)", True),
    ("authenticated", "app.remove_family_member(uuid)", True),
    ("authenticated", "app.tags_text(text[])", False),
}

OUR_SCHEMAS = ["public", "app"]
API_ROLES = ["anon", "authenticated"]

# PUBLIC (grantee 0) counts: every role holds what PUBLIC holds.
_GRANTEE = "coalesce((select rolname from pg_roles where oid = a.grantee), 'PUBLIC')"
_TABLE_GRANTS = f"""
select {_GRANTEE} as grantee, n.nspname || '.' || c.relname as relation, a.privilege_type
from pg_class c
join pg_namespace n on n.oid = c.relnamespace
cross join lateral aclexplode(c.relacl) a
where n.nspname = any($1::text[]) and c.relkind in ('r', 'p', 'v', 'm', 'f', 'S')
"""
_COLUMN_GRANTS = f"""
select {_GRANTEE} as grantee, n.nspname || '.' || c.relname as relation,
       att.attname as column_name, a.privilege_type
from pg_attribute att
join pg_class c on c.oid = att.attrelid
join pg_namespace n on n.oid = c.relnamespace
cross join lateral aclexplode(att.attacl) a
where n.nspname = any($1::text[]) and att.attnum > 0 and not att.attisdropped
"""
_CALLABLE = """
select r.rolname as grantee,
       n.nspname || '.' || p.proname || '(' || oidvectortypes(p.proargtypes) || ')'
         as function,
       p.prosecdef as security_definer
from pg_proc p
join pg_namespace n on n.oid = p.pronamespace
cross join pg_roles r
where n.nspname = any($1::text[]) and r.rolname = any($2::text[])
  and p.prorettype <> 'trigger'::regtype
  and has_schema_privilege(r.oid, n.oid, 'USAGE')
  and has_function_privilege(r.oid, p.oid, 'EXECUTE')
"""


@pytest.fixture(scope="module")
async def supabase_dsn(database_url: str, migrated_database_url: str) -> AsyncIterator[str]:
    # After migrated_database_url: see tests/test_supabase_migrations.py (supabase_admin).
    from app.db.migrate import migrate

    database = await create_supabase_like_database(database_url)
    try:
        await migrate(database.dsn)
        yield database.dsn
    finally:
        await drop_supabase_like_database(database_url, database)


@pytest.fixture(params=["built-in", "supabase"])
async def conn(
    request, migrated_database_url: str, supabase_dsn: str
) -> AsyncIterator[asyncpg.Connection]:
    """A superuser connection to the built-in server's database or the Supabase-like one."""
    dsn = supabase_dsn if request.param == "supabase" else migrated_database_url
    connection = await asyncpg.connect(dsn)
    yield connection
    await connection.close()


def _grantee_rows(rows: list[asyncpg.Record]) -> list[asyncpg.Record]:
    return [row for row in rows if row["grantee"] in ("anon", "authenticated", "PUBLIC")]


async def test_table_privileges_of_the_api_roles_are_the_reviewed_ones(conn):
    rows = _grantee_rows(await conn.fetch(_TABLE_GRANTS, OUR_SCHEMAS))
    found = {(row["grantee"], row["relation"], row["privilege_type"]) for row in rows}
    assert sorted(found - TABLE_PRIVILEGES) == [], "not reviewed: add to TABLE_PRIVILEGES"
    assert sorted(TABLE_PRIVILEGES - found) == [], "no longer granted: remove from the list"


async def test_column_privileges_of_the_api_roles_are_the_reviewed_ones(conn):
    rows = _grantee_rows(await conn.fetch(_COLUMN_GRANTS, OUR_SCHEMAS))
    found = {
        (row["grantee"], row["relation"], row["column_name"], row["privilege_type"]) for row in rows
    }
    assert sorted(found - COLUMN_PRIVILEGES) == [], "not reviewed: add to _COLUMNS"
    assert sorted(COLUMN_PRIVILEGES - found) == [], "no longer granted: remove from _COLUMNS"


async def test_functions_the_api_roles_can_call_are_the_reviewed_ones(conn):
    rows = await conn.fetch(_CALLABLE, OUR_SCHEMAS, API_ROLES)
    found = {(row["grantee"], row["function"], row["security_definer"]) for row in rows}
    assert sorted(found - CALLABLE_FUNCTIONS) == [], "not reviewed: add to CALLABLE_FUNCTIONS"
    assert sorted(CALLABLE_FUNCTIONS - found) == [], "no longer callable: remove from the list"


# --- writes of server-owned values ----------------------------------------------------------------


@dataclass
class World:
    family: uuid.UUID
    adult: uuid.UUID
    teen: uuid.UUID
    memory: uuid.UUID  # the teen's, published
    comment: uuid.UUID  # the teen's, on it
    accepted_invite: uuid.UUID
    revoked_session: uuid.UUID  # the teen's, logged out


async def _member(conn: asyncpg.Connection, family: uuid.UUID, role: str) -> uuid.UUID:
    user_id = uuid.uuid4()
    email = f"{user_id.hex[:12]}@example.com"
    await conn.execute("insert into auth.users (id, email) values ($1, $2)", user_id, email)
    await conn.execute(
        "insert into public.user_profiles (id, family_unit_id, role, display_name, email)"
        " values ($1, $2, $3, 'M', $4)",
        user_id,
        family,
        role,
        email,
    )
    return user_id


@pytest.fixture
async def world(conn: asyncpg.Connection) -> World:
    """A family written as the superuser: an adult, a teen, a memory and a comment of the teen."""
    family = await conn.fetchval("insert into public.family_units (name) values ('F') returning id")
    adult, teen = await _member(conn, family, "adult"), await _member(conn, family, "teen")
    memory = await conn.fetchval(
        "insert into public.memories (family_unit_id, user_id, title, status)"
        " values ($1, $2, 'M', 'published') returning id",
        family,
        teen,
    )
    comment = await conn.fetchval(
        "insert into public.memory_comments (memory_id, family_unit_id, user_id, content)"
        " values ($1, $2, $3, 'hi') returning id",
        memory,
        family,
        teen,
    )
    accepted_invite = await conn.fetchval(
        "insert into public.invitations (family_unit_id, email, role, token_hash, invited_by,"
        " expires_at, status, accepted_at, accepted_by)"
        " values ($1, $2, 'teen', $3, $4, now() + interval '1 day', 'accepted', now(), $5)"
        " returning id",
        family,
        f"{uuid.uuid4().hex[:12]}@example.com",
        uuid.uuid4().hex,
        adult,
        teen,
    )
    revoked_session = await conn.fetchval(
        "insert into app.auth_sessions (user_id, revoked_at, revoked_reason)"
        " values ($1, now() - interval '1 hour', 'logout') returning id",
        teen,
    )
    return World(family, adult, teen, memory, comment, accepted_invite, revoked_session)


async def as_member(conn: asyncpg.Connection, user_id: uuid.UUID, statement: str, *args) -> str:
    """Run one statement as the member's token would, committed if it succeeds."""
    async with conn.transaction():
        await conn.execute(
            "select set_config('role', 'authenticated', true),"
            " set_config('request.jwt.claims', $1, true)",
            json.dumps({"sub": str(user_id), "role": "authenticated"}),
        )
        status: str = await conn.execute(statement, *args)
        return status


FAR_FUTURE = datetime(2099, 1, 1, tzinfo=UTC)
LONG_AGO = datetime(2001, 1, 1, tzinfo=UTC)

# Each refused outright: the column is not the member's to write (42501).
REFUSED_WRITES = {
    "memory born with 5000 reactions": (
        "insert into public.memories (family_unit_id, user_id, title, status, reaction_count)"
        " values ($1, $2, 'pinned', 'published', 5000)"
    ),
    "memory born with comments": (
        "insert into public.memories (family_unit_id, user_id, title, comment_count)"
        " values ($1, $2, 'pinned', 99)"
    ),
    "memory born in 2099": (
        "insert into public.memories (family_unit_id, user_id, title, created_at)"
        " values ($1, $2, 'pinned', '2099-01-01')"
    ),
    "memory born edited by someone": (
        "insert into public.memories (family_unit_id, user_id, title, modified_by)"
        " values ($1, $2, 'pinned', $2)"
    ),
    "memory's counter raised": (
        "update public.memories set reaction_count = 5000 where user_id = $2 and $1::uuid = $1"
    ),
    "memory's emoji counts written": (
        "update public.memories set reactions_by_emoji = '{\"🔥\": 5000}'"
        " where user_id = $2 and $1::uuid = $1"
    ),
    "memory moved to 2099": (
        "update public.memories set created_at = '2099-01-01' where user_id = $2 and $1::uuid = $1"
    ),
    "comment back-dated": (
        "insert into public.memory_comments (memory_id, family_unit_id, user_id, content,"
        " created_at) select id, $1, $2, 'first!', '2001-01-01' from public.memories"
        " where user_id = $2"
    ),
    "comment born deleted": (
        "insert into public.memory_comments (memory_id, family_unit_id, user_id, content,"
        " deleted_at) select id, $1, $2, 'x', now() from public.memories where user_id = $2"
    ),
    "comment born with replies": (
        "insert into public.memory_comments (memory_id, family_unit_id, user_id, content,"
        " reply_count) select id, $1, $2, 'x', 50 from public.memories where user_id = $2"
    ),
    "comment re-dated": (
        "update public.memory_comments set created_at = '2001-01-01'"
        " where user_id = $2 and $1::uuid = $1"
    ),
    "reaction back-dated": (
        "insert into public.memory_reactions (memory_id, family_unit_id, user_id, emoji,"
        " created_at) select id, $1, $2, '👍', '2001-01-01' from public.memories"
        " where user_id = $2"
    ),
    "media born completed": (
        "insert into public.memory_media (id, memory_id, family_unit_id, storage_path, file_name,"
        " mime_type, file_size, processing_status) select g, m.id, $1::uuid,"
        " $1::uuid::text || '/' || m.id || '/' || g || '.jpg', 'a.jpg', 'image/jpeg', 1,"
        " 'completed'"
        " from public.memories m, gen_random_uuid() g where m.user_id = $2"
    ),
    "media born with a thumbnail and metadata": (
        "insert into public.memory_media (id, memory_id, family_unit_id, storage_path, file_name,"
        " mime_type, file_size, width, height, metadata) select g, m.id, $1::uuid,"
        " $1::uuid::text || '/' || m.id || '/' || g || '.jpg', 'a.jpg', 'image/jpeg', 1, 1, 1,"
        " '{\"exif\": {}}' from public.memories m, gen_random_uuid() g where m.user_id = $2"
    ),
    "media born past its attempts": (
        "insert into public.memory_media (id, memory_id, family_unit_id, storage_path, file_name,"
        " mime_type, file_size, processing_attempts) select g, m.id, $1::uuid,"
        " $1::uuid::text || '/' || m.id || '/' || g || '.jpg', 'a.jpg', 'image/jpeg', 1, 99"
        " from public.memories m, gen_random_uuid() g where m.user_id = $2"
    ),
    "profile removal undone": (
        "update public.user_profiles set removed_at = null where id = $2 and $1::uuid = $1"
    ),
    "profile created in the past": (
        "update public.user_profiles set created_at = '2001-01-01' where id = $2 and $1::uuid = $1"
    ),
    "analytics event forged": (
        "insert into public.analytics_events (event_type, user_id, family_unit_id)"
        " values ('memory_posted', $2, $1)"
    ),
    "published count raised": (
        "update app.family_memory_counts set published = 5000 where family_unit_id = $1"
        " and $2::uuid = $2"
    ),
    "comment imported by a teen": (
        "select app.import_comment(id, gen_random_uuid(), null, null, 'Grandpa', 'x',"
        " '2001-01-01', '2001-01-01', false) from public.memories where user_id = $2"
        " and $1::uuid = $1"
    ),
    "comment with an archive author's name": (
        "insert into public.memory_comments (memory_id, family_unit_id, user_id, content,"
        " imported_author_name) select id, $1, $2, 'x', 'Grandpa' from public.memories"
        " where user_id = $2"
    ),
    "comment with an archive id": (
        "insert into public.memory_comments (memory_id, family_unit_id, user_id, content,"
        " import_source_id) select id, $1, $2, 'x', gen_random_uuid() from public.memories"
        " where user_id = $2"
    ),
    "reaction imported by a teen": (
        "select app.import_reaction(id, $2, '👍', '2001-01-01') from public.memories"
        " where user_id = $2 and $1::uuid = $1"
    ),
    "comment hard-deleted": (
        "delete from public.memory_comments where user_id = $2 and $1::uuid = $1"
    ),
}


@pytest.mark.parametrize("attack", sorted(REFUSED_WRITES))
async def test_a_teen_cannot_write_server_owned_columns(conn, world, attack):
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await as_member(conn, world.teen, REFUSED_WRITES[attack], world.family, world.teen)


async def test_an_import_writes_only_into_the_importers_own_family(conn, world):
    """app.import_comment / app.import_reaction as an adult: into the family's memories, by
    its members (or the adult under an archive name), never into or as another family."""
    other = await conn.fetchval("insert into public.family_units (name) values ('O') returning id")
    stranger = await _member(conn, other, "adult")
    elsewhere = await conn.fetchval(
        "insert into public.memories (family_unit_id, user_id, title, status)"
        " values ($1, $2, 'M', 'published') returning id",
        other,
        stranger,
    )
    comment = (
        "select added from app.import_comment($1, gen_random_uuid(), null, $2, $3, 'x',"
        " '2001-01-01', '2001-01-01', false)"
    )
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await as_member(conn, world.adult, comment, elsewhere, None, "Joe")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await as_member(conn, world.adult, comment, world.memory, stranger, None)
    reaction = "select app.import_reaction($1, $2, '👍', '2001-01-01')"
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await as_member(conn, world.adult, reaction, world.memory, stranger)
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await as_member(conn, world.adult, reaction, elsewhere, stranger)
    # What is allowed: the teen's words, back-dated, and the adult's under an archive name.
    await as_member(conn, world.adult, comment, world.memory, world.teen, None)
    await as_member(conn, world.adult, comment, world.memory, None, "Joe")
    rows = await conn.fetch(
        "select user_id, imported_author_name, created_at from public.memory_comments"
        " where memory_id = $1 and import_source_id is not null order by imported_author_name",
        world.memory,
    )
    assert [(r["user_id"], r["imported_author_name"]) for r in rows] == [
        (world.adult, "Joe"),
        (world.teen, None),
    ]
    assert {r["created_at"] for r in rows} == {LONG_AGO}


async def test_a_new_memory_is_a_draft_or_published(conn, world):
    with pytest.raises(asyncpg.CheckViolationError):
        await as_member(
            conn,
            world.teen,
            "insert into public.memories (family_unit_id, user_id, title, status)"
            " values ($1, $2, 'x', 'archived')",
            world.family,
            world.teen,
        )


async def test_an_edit_is_signed_by_its_editor_now(conn, world):
    status = await as_member(
        conn,
        world.teen,
        "update public.memories set title = 'edited', modified_by = $2, updated_at = $3"
        " where id = $1",
        world.memory,
        world.adult,  # framing the adult
        FAR_FUTURE,
    )
    assert status == "UPDATE 1"
    row = await conn.fetchrow(
        "select modified_by, updated_at, now() as now from public.memories where id = $1",
        world.memory,
    )
    assert row["modified_by"] == world.teen
    assert row["updated_at"] <= row["now"]


async def test_a_comment_edit_and_deletion_happen_now(conn, world):
    await as_member(
        conn,
        world.teen,
        "update public.memory_comments set content = 'edited', updated_at = $2 where id = $1",
        world.comment,
        LONG_AGO,
    )
    await as_member(
        conn,
        world.teen,
        "update public.memory_comments set deleted_at = $2 where id = $1",
        world.comment,
        LONG_AGO,
    )
    row = await conn.fetchrow(
        "select updated_at, deleted_at, created_at from public.memory_comments where id = $1",
        world.comment,
    )
    assert row["deleted_at"] >= row["created_at"]
    assert row["updated_at"] >= row["created_at"]


async def test_a_pet_is_created_by_whoever_creates_it(conn, world):
    await as_member(
        conn,
        world.adult,
        "insert into public.pet_profiles (family_unit_id, display_name, created_by)"
        " values ($1, 'Rex', $2)",
        world.family,
        world.teen,
    )
    created_by = await conn.fetchval(
        "select created_by from public.pet_profiles where family_unit_id = $1", world.family
    )
    assert created_by == world.adult


@pytest.mark.parametrize("table", ["public.family_units", "public.user_profiles"])
async def test_updated_at_is_the_servers(conn, world, table):
    column = "name" if table == "public.family_units" else "display_name"
    key = world.family if table == "public.family_units" else world.adult
    await as_member(
        conn,
        world.adult,
        f"update {table} set {column} = 'N', updated_at = $2 where id = $1",
        key,
        FAR_FUTURE,
    )
    row = await conn.fetchrow(f"select updated_at, now() as now from {table} where id = $1", key)
    assert row["updated_at"] <= row["now"]


async def test_an_accepted_invite_cannot_be_revoked_afterwards(conn, world):
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await as_member(
            conn,
            world.adult,
            "update public.invitations set status = 'revoked' where id = $1",
            world.accepted_invite,
        )


async def test_a_revoked_login_stays_revoked(conn, world):
    await as_member(
        conn,
        world.teen,
        "update app.auth_sessions set revoked_at = null, revoked_reason = null where id = $1",
        world.revoked_session,
    )
    row = await conn.fetchrow(
        "select revoked_at, revoked_reason from app.auth_sessions where id = $1",
        world.revoked_session,
    )
    assert row["revoked_at"] is not None and row["revoked_reason"] == "logout"


async def test_a_logins_last_use_is_the_servers(conn, world):
    session = await conn.fetchval(
        "insert into app.auth_sessions (user_id) values ($1) returning id", world.teen
    )
    await as_member(
        conn,
        world.teen,
        "update app.auth_sessions set last_used_at = $2 where id = $1",
        session,
        FAR_FUTURE,
    )
    row = await conn.fetchrow(
        "select last_used_at, now() as now from app.auth_sessions where id = $1", session
    )
    assert row["last_used_at"] <= row["now"]


# --- media sizes where the database can see the objects (Supabase Storage) -----------------------


async def test_a_media_rows_size_is_its_objects(supabase_dsn):
    conn = await asyncpg.connect(supabase_dsn)
    try:
        family = await conn.fetchval(
            "insert into public.family_units (name) values ('F') returning id"
        )
        teen = await _member(conn, family, "teen")
        memory = await conn.fetchval(
            "insert into public.memories (family_unit_id, user_id, title) values ($1, $2, 'M')"
            " returning id",
            family,
            teen,
        )
        media, missing = uuid.uuid4(), uuid.uuid4()
        path = f"{family}/{memory}/{media}.jpg"
        real_size = 48 * 1024 * 1024
        await conn.execute(
            "insert into storage.objects (bucket_id, name, metadata)"
            " values ('memories', $1, $2::jsonb)",
            path,
            json.dumps({"size": real_size, "mimetype": "image/jpeg"}),
        )
        register = (
            "insert into public.memory_media (id, memory_id, family_unit_id, storage_path,"
            " file_name, mime_type, file_size) values ($1, $2, $3, $4, 'a.jpg', 'image/jpeg', 1)"
        )
        await as_member(conn, teen, register, media, memory, family, path)
        stored = await conn.fetchval(
            "select file_size from public.memory_media where id = $1", media
        )
        assert stored == real_size  # not the 1 byte claimed
        # No object at all: nothing to register.
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            await as_member(
                conn, teen, register, missing, memory, family, f"{family}/{memory}/{missing}.jpg"
            )
        # Other writers (the server's system sessions) are trusted as before.
        service_media = uuid.uuid4()
        await conn.execute(
            "insert into public.memory_media (id, memory_id, family_unit_id, storage_path,"
            " file_name, mime_type, file_size) values ($1, $2, $3, $4, 'a.jpg', 'image/jpeg', 7)",
            service_media,
            memory,
            family,
            f"{family}/{memory}/{service_media}.jpg",
        )
        assert (
            await conn.fetchval(
                "select file_size from public.memory_media where id = $1", service_media
            )
            == 7
        )
    finally:
        await conn.close()


# --- invitations: the mail and the expiry are the server's ------------------------------------


async def _pending_invite(conn: asyncpg.Connection, world: World) -> uuid.UUID:
    invite: uuid.UUID = await conn.fetchval(
        "insert into public.invitations (family_unit_id, email, role, token_hash, invited_by,"
        " expires_at) values ($1, $2, 'teen', $3, $4, now() + interval '7 days') returning id",
        world.family,
        f"{uuid.uuid4().hex[:12]}@example.com",
        uuid.uuid4().hex,
        world.adult,
    )
    return invite


ATTACKER_TEXT = "Your account is locked: confirm your password at evil.example"


async def test_an_inviter_cannot_put_text_of_their_own_in_an_invite_mail(conn, world):
    # The mail's subject and bodies used to be the caller's to choose: a member's token could
    # mail anything to someone it had invited, as often as it liked. Only the server queues
    # invite mail now, rendered from its own templates.
    invite = await _pending_invite(conn, world)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await as_member(
            conn,
            world.adult,
            "select app.queue_invite_mail($1, $2, $3, $3, $3)",
            invite,
            f"<{uuid.uuid4().hex}@evil.example>",
            ATTACKER_TEXT,
        )
    queued = await conn.fetchval(
        "select count(*) from app.mail_outbox where subject = $1 or text_body = $1"
        " or html_body = $1",
        ATTACKER_TEXT,
    )
    assert queued == 0


async def test_an_inviter_cannot_choose_an_invites_expiry(conn, world):
    # An invite that never expires (or one made to look fresh) is the server's TTL to refuse.
    new_invite = (
        "insert into public.invitations (family_unit_id, email, role, token_hash, invited_by,"
        " expires_at) values ($1, $2, 'teen', $3, $4, $5)"
    )
    for expiry in (FAR_FUTURE, LONG_AGO):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await as_member(
                conn,
                world.adult,
                new_invite,
                world.family,
                f"{uuid.uuid4().hex[:12]}@example.com",
                uuid.uuid4().hex,
                world.adult,
                expiry,
            )
    invite = await _pending_invite(conn, world)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await as_member(
            conn,
            world.adult,
            "update public.invitations set expires_at = $2 where id = $1",
            invite,
            FAR_FUTURE,
        )
    # Made without one, an invite gets the default lifetime, counted from now.
    email = f"{uuid.uuid4().hex[:12]}@example.com"
    await as_member(
        conn,
        world.adult,
        "insert into public.invitations (family_unit_id, email, role, token_hash, invited_by)"
        " values ($1, $2, 'teen', $3, $4)",
        world.family,
        email,
        uuid.uuid4().hex,
        world.adult,
    )
    lifetime = await conn.fetchval(
        "select expires_at - now() from public.invitations where email = $1", email
    )
    assert timedelta(days=6, hours=23) < lifetime <= timedelta(days=7)
