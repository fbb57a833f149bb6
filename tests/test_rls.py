"""Row level security on its own: with a connection set up exactly as a user request is
(role `authenticated`, request.jwt.claims of a family B member), family A's rows are
invisible and cannot be changed. This holds even if the service layer had a bug."""

import json
import uuid
from contextlib import asynccontextmanager

import asyncpg
import pytest

FAMILY_TABLES = {
    "public.family_units": "id",
    "public.user_profiles": "family_unit_id",
    "public.pet_profiles": "family_unit_id",
    "public.invitations": "family_unit_id",
    "public.memories": "family_unit_id",
    "public.memory_media": "family_unit_id",
    "public.memory_reactions": "family_unit_id",
    "public.memory_comments": "family_unit_id",
    "public.analytics_events": "family_unit_id",
    "public.analytics_metrics": "family_unit_id",
    "app.memory_changes": "family_unit_id",
}


@asynccontextmanager
async def as_user(pg, user_id: str):
    async with pg.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            await conn.execute(
                "select set_config('role', 'authenticated', true),"
                " set_config('request.jwt.claims', $1, true)",
                json.dumps({"sub": user_id, "role": "authenticated"}),
            )
            yield conn
        finally:
            await tx.rollback()


async def _seed_family_a(client, factory, pg):
    """Family A with a row in every family table (written as the service would)."""
    a = await factory.family(["adult", "teen"])
    await factory.invite(a.adult, "teen")
    await client.post(
        "/api/v1/auth/register/pet", json={"display_name": "Rex"}, headers=a.adult.headers
    )
    fid, uid = uuid.UUID(a.id), uuid.UUID(a.adult.id)
    memory_id = await pg.fetchval(
        "insert into public.memories (family_unit_id, user_id, title, status)"
        " values ($1, $2, 'A secret', 'published') returning id",
        fid,
        uid,
    )
    media_id = uuid.uuid4()
    await pg.execute(
        "insert into public.memory_media (id, memory_id, family_unit_id, storage_path, file_name,"
        " mime_type, file_size) values ($1, $2, $3, $4, 'a.jpg', 'image/jpeg', 10)",
        media_id,
        memory_id,
        fid,
        f"{fid}/{memory_id}/{media_id}.jpg",
    )
    await pg.execute(
        "insert into public.memory_reactions (memory_id, family_unit_id, user_id, emoji)"
        " values ($1, $2, $3, '❤️')",
        memory_id,
        fid,
        uid,
    )
    await pg.execute(
        "insert into public.memory_comments (memory_id, family_unit_id, user_id, content)"
        " values ($1, $2, $3, 'hello')",
        memory_id,
        fid,
        uid,
    )
    await pg.execute(
        "insert into public.analytics_events (event_type, user_id, family_unit_id)"
        " values ('feed_viewed', $1, $2)",
        uid,
        fid,
    )
    return a, memory_id


@pytest.fixture
async def two_families(client, factory, pg):
    a, memory_id = await _seed_family_a(client, factory, pg)
    b = await factory.family(["adult"])
    return a, b, memory_id


async def test_every_family_table_has_rls_enabled_and_forced(pg):
    rows = await pg.fetch(
        "select n.nspname || '.' || c.relname as name, c.relrowsecurity, c.relforcerowsecurity"
        " from pg_class c join pg_namespace n on n.oid = c.relnamespace"
        " where c.relkind = 'r' and n.nspname in ('public', 'app')"
    )
    for row in rows:
        assert row["relrowsecurity"] and row["relforcerowsecurity"], row["name"]
    assert set(FAMILY_TABLES) <= {row["name"] for row in rows}


@pytest.mark.parametrize("table", sorted(FAMILY_TABLES))
async def test_select_sees_none_of_another_family(pg, two_families, table):
    a, b, _ = two_families
    column = FAMILY_TABLES[table]
    total = await pg.fetchval(f"select count(*) from {table} where {column} = $1", uuid.UUID(a.id))
    assert total >= 1, "the seed must put a row of family A in every table"
    async with as_user(pg, b.adult.id) as conn:
        visible = await conn.fetchval(
            f"select count(*) from {table} where {column} = $1", uuid.UUID(a.id)
        )
    assert visible == 0


async def test_writes_into_another_family_fail(pg, two_families):
    a, b, memory_id = two_families
    fid = uuid.UUID(a.id)
    async with as_user(pg, b.adult.id) as conn:
        # Updates and deletes simply match no row of family A...
        for statement in (
            "update public.family_units set name = 'pwned' where id = $1",
            "update public.user_profiles set display_name = 'pwned' where family_unit_id = $1",
            "update public.invitations set status = 'revoked' where family_unit_id = $1",
            "delete from public.pet_profiles where family_unit_id = $1",
            "delete from public.memories where family_unit_id = $1",
            "delete from public.memory_media where family_unit_id = $1",
            "delete from public.memory_reactions where family_unit_id = $1",
            "update public.memory_comments set content = 'pwned' where family_unit_id = $1",
        ):
            assert await conn.execute(statement, fid) in ("UPDATE 0", "DELETE 0"), statement

    # ...and inserts into family A are refused outright.
    inserts = [
        (
            "insert into public.memories (family_unit_id, user_id, title) values ($1, $2, 't')",
            (fid, uuid.UUID(b.adult.id)),
        ),
        ("insert into public.pet_profiles (family_unit_id, display_name) values ($1, 'x')", (fid,)),
        (
            "insert into public.invitations (family_unit_id, email, role, token_hash, invited_by,"
            " expires_at) values ($1, 'x@example.com', 'adult', 'h', $2, now() + interval '1 day')",
            (fid, uuid.UUID(b.adult.id)),
        ),
        (
            "insert into public.memory_reactions (memory_id, family_unit_id, user_id, emoji)"
            " values ($1, $2, $3, '👍')",
            (memory_id, fid, uuid.UUID(b.adult.id)),
        ),
        (
            "insert into public.memory_comments (memory_id, family_unit_id, user_id, content)"
            " values ($1, $2, $3, 'x')",
            (memory_id, fid, uuid.UUID(b.adult.id)),
        ),
    ]
    for statement, args in inserts:
        async with as_user(pg, b.adult.id) as conn:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(statement, *args)

    name = await pg.fetchval("select name from public.family_units where id = $1", fid)
    assert name != "pwned"
    assert await pg.fetchval("select count(*) from public.memories where id = $1", memory_id) == 1


async def test_role_cannot_be_changed_by_its_holder_in_the_database(pg, client, factory):
    family = await factory.family(["adult", "teen"])
    teen = family.by_role("teen")
    async with as_user(pg, teen.id) as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(
                "update public.user_profiles set role = 'adult' where id = $1", uuid.UUID(teen.id)
            )


async def test_drafts_are_private_to_their_author_in_the_database(pg, client, factory):
    family = await factory.family(["adult", "teen"])
    draft_id = await pg.fetchval(
        "insert into public.memories (family_unit_id, user_id, title) values ($1, $2, 'd')"
        " returning id",
        uuid.UUID(family.id),
        uuid.UUID(family.by_role("teen").id),
    )
    async with as_user(pg, family.adult.id) as conn:
        assert (
            await conn.fetchval("select count(*) from public.memories where id = $1", draft_id) == 0
        )
        assert await conn.execute("delete from public.memories where id = $1", draft_id) == (
            "DELETE 0"
        )
    async with as_user(pg, family.by_role("teen").id) as conn:
        assert (
            await conn.fetchval("select count(*) from public.memories where id = $1", draft_id) == 1
        )


async def test_removed_member_sees_nothing(pg, client, factory):
    family = await factory.family(["adult", "teen"])
    teen = family.by_role("teen")
    await client.delete(f"/api/v1/families/me/members/{teen.id}", headers=family.adult.headers)
    async with as_user(pg, teen.id) as conn:
        assert await conn.fetchval("select count(*) from public.family_units") == 0
        assert await conn.fetchval("select count(*) from public.user_profiles") == 0
