"""Every row level security policy, one rule at a time, in the database's own words.

Each test connects as Supabase's API layer (and the app's user sessions) do: role
`authenticated` with a member's JWT claims. Each case satisfies every rule of a policy but
one, so a policy that lost that one rule (its family check, its role check, its author check,
its draft check) fails exactly the case aimed at it, whatever the service layer does.

Which role may do what comes from PERMISSIONS below, written out here on purpose: deriving the
cases from the app's own table (app.services.rbac) would make a wrong table agree with itself.

`@covers(...)` names the policies a test exercises; `test_every_policy_has_a_test` lists
pg_policies and fails for any policy no test names, so a new table cannot arrive untested.
Writes happen in transactions that are rolled back, so the module's two families stay as
seeded.
"""

import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
import pytest

ROLES = ("adult", "teen", "child", "grandparent")

# The permission table, as the product defines it (docs/api.md, "Roles and permissions").
PERMISSIONS: dict[str, set[str]] = {
    "rename the family": {"adult", "grandparent"},
    "see and revoke invites": {"adult", "grandparent"},
    "provision a child": {"adult"},
    "add a pet": {"adult", "grandparent"},
    "remove a pet": {"adult"},
    "edit own memory": {"adult", "teen", "child", "grandparent"},
    "edit anyone's memory": {"adult", "grandparent"},
    "delete own memory": {"adult", "teen", "grandparent"},
    "delete anyone's memory": {"adult"},
    "delete own comment": {"adult", "teen", "grandparent"},
    "delete anyone's comment": {"adult", "grandparent"},
    "read analytics": {"adult", "grandparent"},
    "change a pet's profile": {"adult", "grandparent"},
    "export and import the archive": {"adult", "grandparent"},
}
# Who may invite whom (pets are created, never invited).
INVITABLE: dict[str, set[str]] = {
    "adult": {"adult", "teen", "child", "grandparent"},
    "grandparent": {"adult", "teen", "grandparent"},
    "teen": set(),
    "child": set(),
}

# Policies whose tests live in another module: name -> the test that exercises it. They need
# not exist here (the checkpoint tables appear once app.db.graph_db.setup has run).
_GRAPH_TEST = "tests/test_graph_db.py::test_an_ordinary_owner_role_can_use_its_locked_down_tables"
COVERED_ELSEWHERE = {
    **{
        f"public.{table}.checkpoint_owner": _GRAPH_TEST
        for table in (
            "checkpoints",
            "checkpoint_blobs",
            "checkpoint_writes",
            "checkpoint_migrations",
        )
    },
    # Exists only where Supabase Storage does (the Supabase-like database).
    "storage.objects.memories_family_read": (
        "tests/test_supabase_migrations.py"
        "::test_a_members_token_reads_only_its_familys_visible_memory_files"
    ),
}

COVERED: dict[str, list[str]] = {}
F = TypeVar("F", bound=Callable[..., Any])


def covers(*policies: str) -> Callable[[F], F]:
    """Declare the policies ("schema.table.policy") a test exercises."""

    def mark(test: F) -> F:
        for policy in policies:
            COVERED.setdefault(policy, []).append(test.__name__)
        return test

    return mark


def may(role: str, action: str) -> bool:
    return role in PERMISSIONS[action]


# --- the two families ------------------------------------------------------------------------


@dataclass
class Seeded:
    family: str
    members: dict[str, str]  # role -> user id
    published: dict[str, uuid.UUID]  # author role -> a published memory of theirs
    drafts: dict[str, uuid.UUID]  # author role -> a draft of theirs
    pet: uuid.UUID
    invite: uuid.UUID

    def other_than(self, role: str) -> str:
        """A member of the same family whose role differs (the adult, else the teen)."""
        return "teen" if role == "adult" else "adult"


async def _seed(pg: asyncpg.Pool, family: Any) -> Seeded:
    fid = uuid.UUID(family.id)
    members = {m.role: m.id for m in family.members}
    published, drafts = {}, {}
    for role, member_id in members.items():
        for status, into in (("published", published), ("draft", drafts)):
            into[role] = await pg.fetchval(
                "insert into public.memories (family_unit_id, user_id, title, status)"
                " values ($1, $2, $3, $4) returning id",
                fid,
                uuid.UUID(member_id),
                f"{status} of the {role}",
                status,
            )
    pet = await pg.fetchval(
        "insert into public.pet_profiles (family_unit_id, display_name, created_by)"
        " values ($1, 'Rex', $2) returning id",
        fid,
        uuid.UUID(members["adult"]),
    )
    invite = await pg.fetchval(
        "insert into public.invitations (family_unit_id, email, role, token_hash, invited_by,"
        " expires_at) values ($1, $2, 'teen', $3, $4, now() + interval '7 days') returning id",
        fid,
        f"invited-{uuid.uuid4().hex[:10]}@example.com",
        uuid.uuid4().hex,
        uuid.UUID(members["adult"]),
    )
    await pg.execute(
        "insert into public.analytics_events (event_type, user_id, family_unit_id)"
        " values ('feed_viewed', $1, $2)",
        uuid.UUID(members["adult"]),
        fid,
    )
    return Seeded(family.id, members, published, drafts, pet, invite)


@pytest.fixture(scope="module")
async def families(factory, pg) -> tuple[Seeded, Seeded]:
    """Family A and family B, each with one member of every role and a row in every table."""
    a = await _seed(pg, await factory.family(list(ROLES)))
    b = await _seed(pg, await factory.family(list(ROLES)))
    return a, b


@pytest.fixture
def a(families: tuple[Seeded, Seeded]) -> Seeded:
    return families[0]


@pytest.fixture
def b(families: tuple[Seeded, Seeded]) -> Seeded:
    return families[1]


# --- connections -----------------------------------------------------------------------------


@asynccontextmanager
async def transaction(pg: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A superuser transaction that is always rolled back: set up, `become`, then try."""
    async with pg.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            yield conn
        finally:
            await tx.rollback()


async def become(conn: asyncpg.Connection, user_id: str) -> None:
    """From here to the end of the transaction, act as this member's token would."""
    await conn.execute(
        "select set_config('role', 'authenticated', true),"
        " set_config('request.jwt.claims', $1, true)",
        json.dumps({"sub": user_id, "role": "authenticated"}),
    )


async def run_as(pg: asyncpg.Pool, user_id: str, statement: str, *args: Any) -> str:
    """The status of one statement run as the member (e.g. "UPDATE 0"), rolled back."""
    async with transaction(pg) as conn:
        await become(conn, user_id)
        status: str = await conn.execute(statement, *args)
        return status


async def refused_as(pg: asyncpg.Pool, user_id: str, statement: str, *args: Any) -> None:
    """The statement, run as the member, is refused outright (42501)."""
    async with transaction(pg) as conn:
        await become(conn, user_id)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(statement, *args)


async def count_as(pg: asyncpg.Pool, user_id: str, query: str, *args: Any) -> int:
    async with transaction(pg) as conn:
        await become(conn, user_id)
        count: int = await conn.fetchval(query, *args)
        return count


def u(value: str) -> uuid.UUID:
    return uuid.UUID(value)


def done(count: int, verb: str = "UPDATE") -> str:
    return f"{verb} {count}"


# --- the coverage of this module -------------------------------------------------------------


async def test_every_policy_has_a_test(pg):
    rows = await pg.fetch(
        "select schemaname || '.' || tablename || '.' || policyname as name from pg_policies"
    )
    policies = {row["name"] for row in rows}
    untested = policies - set(COVERED) - set(COVERED_ELSEWHERE)
    assert not untested, f"policies with no test naming them (@covers): {sorted(untested)}"
    stale = set(COVERED) - policies
    assert not stale, f"@covers names policies that do not exist: {sorted(stale)}"


# --- statements with no WHERE clause ----------------------------------------------------------
# A WHERE clause that reads columns brings the table's SELECT policy in as well, which would hide
# another family's rows even from an UPDATE or DELETE policy that lost its family check. With no
# WHERE clause only the command's own policy stands between a member and every row in the
# database: each must reach only the caller's rows.


@covers("public.family_units.family_units_update")
async def test_family_units_update_with_no_where_clause(pg, b):
    statement = "update public.family_units set name = 'N'"
    assert await run_as(pg, b.members["adult"], statement) == done(1)


# What a member's token may read of other members: the display data the API shows (name,
# role, avatar, a child's username), never an email address, not even their own: the
# column is not granted (the API reads a member's own email as the service).
MEMBER_DISPLAY_COLUMNS = "id, family_unit_id, role, display_name, username, avatar_url"


@covers("public.user_profiles.user_profiles_select")
@pytest.mark.parametrize("role", ROLES)
async def test_members_read_each_others_display_data_but_no_email(pg, a, role):
    caller, other = a.members[role], a.members[a.other_than(role)]
    query = f"select count(*) from (select {MEMBER_DISPLAY_COLUMNS} from public.user_profiles"
    assert await count_as(pg, caller, query + " where id = $1) p", u(other)) == 1
    for statement in (
        "select email from public.user_profiles where id = $1",
        "select * from public.user_profiles where id = $1",
        "select count(*) from public.user_profiles where email like '%' and id = $1",
    ):
        await refused_as(pg, caller, statement, u(other))
        await refused_as(pg, caller, statement, u(caller))


@covers("public.user_profiles.user_profiles_update_own")
async def test_user_profiles_update_with_no_where_clause(pg, b):
    statement = "update public.user_profiles set display_name = 'N'"
    assert await run_as(pg, b.members["teen"], statement) == done(1)


@covers("public.pet_profiles.pet_profiles_delete")
async def test_pet_profiles_delete_with_no_where_clause(pg, b):
    statement = "delete from public.pet_profiles"
    assert await run_as(pg, b.members["adult"], statement) == done(1, "DELETE")


@covers("public.memories.memories_update")
async def test_memories_update_with_no_where_clause(pg, b):
    # B's adult may edit every published memory of B and their own draft: 4 + 1.
    statement = "update public.memories set title = 'N'"
    assert await run_as(pg, b.members["adult"], statement) == done(5)


@covers("public.memories.memories_delete")
async def test_memories_delete_with_no_where_clause(pg, b):
    statement = "delete from public.memories"
    assert await run_as(pg, b.members["adult"], statement) == done(5, "DELETE")


@covers("app.auth_sessions.auth_sessions_revoke_own")
async def test_auth_sessions_revoke_with_no_where_clause(pg, b):
    own = await pg.fetchval(
        "select count(*) from app.auth_sessions where user_id = $1", u(b.members["teen"])
    )
    statement = "update app.auth_sessions set revoked_reason = 'probe'"
    assert await run_as(pg, b.members["teen"], statement) == done(own)


# --- families and members ----------------------------------------------------------------------


@covers("public.family_units.family_units_select")
@pytest.mark.parametrize("role", ROLES)
async def test_family_units_select_own_family_only(pg, a, b, role):
    query = "select count(*) from public.family_units where id = $1"
    assert await count_as(pg, a.members[role], query, u(a.family)) == 1
    assert await count_as(pg, a.members[role], query, u(b.family)) == 0


@covers("public.family_units.family_units_update")
@pytest.mark.parametrize("role", ROLES)
async def test_family_units_update_by_role(pg, a, role):
    status = await run_as(
        pg, a.members[role], "update public.family_units set name = 'N' where id = $1", u(a.family)
    )
    assert status == done(1 if may(role, "rename the family") else 0)


@covers("public.family_units.family_units_update")
async def test_family_units_update_not_another_family(pg, a, b):
    status = await run_as(
        pg,
        b.members["adult"],
        "update public.family_units set name = 'N' where id = $1",
        u(a.family),
    )
    assert status == done(0)


@covers("public.user_profiles.user_profiles_select")
async def test_user_profiles_select_own_family_only(pg, a, b):
    query = "select count(*) from public.user_profiles where family_unit_id = $1"
    assert await count_as(pg, b.members["child"], query, u(b.family)) == 4
    assert await count_as(pg, b.members["adult"], query, u(a.family)) == 0


@covers("public.user_profiles.user_profiles_update_own")
@pytest.mark.parametrize("role", ROLES)
async def test_user_profiles_update_own_profile_only(pg, a, role):
    statement = "update public.user_profiles set display_name = 'Renamed' where id = $1"
    assert await run_as(pg, a.members[role], statement, u(a.members[role])) == done(1)
    other = a.members[a.other_than(role)]
    assert await run_as(pg, a.members[role], statement, u(other)) == done(0)


@covers("public.user_profiles.user_profiles_update_own")
async def test_user_profiles_update_not_once_removed(pg, a):
    teen = a.members["teen"]
    async with transaction(pg) as conn:
        await conn.execute(
            "update public.user_profiles set removed_at = now() where id = $1", u(teen)
        )
        await become(conn, teen)
        # No WHERE clause: one reading `id` would bring in the select policy, which hides
        # everything from a removed member anyway.
        status = await conn.execute("update public.user_profiles set display_name = 'Back'")
    assert status == done(0)


_PROVISION = (
    "insert into public.user_profiles (id, family_unit_id, role, display_name, username)"
    " values ($1, $2, $3, 'Kid', $4)"
)


async def _provision_as(
    pg: asyncpg.Pool, actor: str, family: str, role: str
) -> asyncpg.InsufficientPrivilegeError | None:
    """Insert a new profile (for a new auth user) as `actor`; the refusal, if any."""
    async with transaction(pg) as conn:
        account = await conn.fetchval("insert into auth.users (email) values (null) returning id")
        await become(conn, actor)
        try:
            await conn.execute(_PROVISION, account, u(family), role, f"kid-{uuid.uuid4().hex[:8]}")
        except asyncpg.InsufficientPrivilegeError as refused:
            return refused
    return None


@covers("public.user_profiles.user_profiles_provision_child")
@pytest.mark.parametrize("role", ROLES)
async def test_user_profiles_provision_child_by_role(pg, a, role):
    refused = await _provision_as(pg, a.members[role], a.family, "child")
    assert (refused is None) == may(role, "provision a child")


@covers("public.user_profiles.user_profiles_provision_child")
async def test_user_profiles_provision_child_into_own_family_only(pg, a, b):
    assert await _provision_as(pg, b.members["adult"], a.family, "child") is not None


@covers("public.user_profiles.user_profiles_provision_child")
@pytest.mark.parametrize("new_role", ["adult", "teen", "grandparent"])
async def test_user_profiles_provision_only_children(pg, a, new_role):
    assert await _provision_as(pg, a.members["adult"], a.family, new_role) is not None


# --- pets --------------------------------------------------------------------------------------


@covers("public.pet_profiles.pet_profiles_select")
async def test_pet_profiles_select_own_family_only(pg, a, b):
    query = "select count(*) from public.pet_profiles where id = $1"
    assert await count_as(pg, a.members["child"], query, a.pet) == 1
    assert await count_as(pg, b.members["adult"], query, a.pet) == 0


_NEW_PET = (
    "insert into public.pet_profiles (family_unit_id, display_name, created_by)"
    " values ($1, 'Tom', $2)"
)


@covers("public.pet_profiles.pet_profiles_insert")
@pytest.mark.parametrize("role", ROLES)
async def test_pet_profiles_insert_by_role(pg, a, role):
    actor = a.members[role]
    if may(role, "add a pet"):
        assert await run_as(pg, actor, _NEW_PET, u(a.family), u(actor)) == "INSERT 0 1"
    else:
        await refused_as(pg, actor, _NEW_PET, u(a.family), u(actor))


@covers("public.pet_profiles.pet_profiles_insert")
async def test_pet_profiles_insert_into_own_family_only(pg, a, b):
    await refused_as(pg, b.members["adult"], _NEW_PET, u(a.family), u(b.members["adult"]))


@covers("public.pet_profiles.pet_profiles_delete")
@pytest.mark.parametrize("role", ROLES)
async def test_pet_profiles_delete_by_role(pg, a, role):
    status = await run_as(
        pg, a.members[role], "delete from public.pet_profiles where id = $1", a.pet
    )
    assert status == done(1 if may(role, "remove a pet") else 0, "DELETE")


@covers("public.pet_profiles.pet_profiles_delete")
async def test_pet_profiles_delete_not_another_familys(pg, a, b):
    status = await run_as(
        pg, b.members["adult"], "delete from public.pet_profiles where id = $1", a.pet
    )
    assert status == done(0, "DELETE")


# --- invitations -------------------------------------------------------------------------------


@covers("public.invitations.invitations_select")
@pytest.mark.parametrize("role", ROLES)
async def test_invitations_select_by_role(pg, a, role):
    query = "select count(*) from public.invitations where id = $1"
    seen = await count_as(pg, a.members[role], query, a.invite)
    assert seen == (1 if may(role, "see and revoke invites") else 0)


@covers("public.invitations.invitations_select")
async def test_invitations_select_not_another_familys(pg, a, b):
    query = "select count(*) from public.invitations where id = $1"
    assert await count_as(pg, b.members["adult"], query, a.invite) == 0


# No expires_at: the server's to set (members' grants do not cover it).
_NEW_INVITE = (
    "insert into public.invitations (family_unit_id, email, role, token_hash, invited_by)"
    " values ($1, $2, $3, $4, $5)"
)


async def _invite_as(
    pg: asyncpg.Pool, actor: str, *, family: str, role: str, invited_by: str | None = None
) -> bool:
    """True if the member may insert this invitation."""
    async with transaction(pg) as conn:
        await become(conn, actor)
        try:
            await conn.execute(
                _NEW_INVITE,
                u(family),
                f"new-{uuid.uuid4().hex[:10]}@example.com",
                role,
                uuid.uuid4().hex,
                u(invited_by or actor),
            )
        except asyncpg.InsufficientPrivilegeError:
            return False
    return True


@covers("public.invitations.invitations_insert")
@pytest.mark.parametrize("inviter", ROLES)
@pytest.mark.parametrize("invited", ROLES)
async def test_invitations_insert_by_role_and_invited_role(pg, a, inviter, invited):
    allowed = await _invite_as(pg, a.members[inviter], family=a.family, role=invited)
    assert allowed == (invited in INVITABLE[inviter])


@covers("public.invitations.invitations_insert")
async def test_invitations_insert_into_own_family_only(pg, a, b):
    assert not await _invite_as(pg, b.members["adult"], family=a.family, role="teen")


@covers("public.invitations.invitations_insert")
async def test_invitations_insert_in_ones_own_name_only(pg, a):
    adult, grandparent = a.members["adult"], a.members["grandparent"]
    assert not await _invite_as(pg, adult, family=a.family, role="teen", invited_by=grandparent)


@covers("public.invitations.invitations_insert")
@pytest.mark.parametrize("status", ["accepted", "revoked", "expired"])
async def test_invitations_insert_pending_only(pg, a, status):
    # Refused first by the column grant (status is not the member's to write), and the policy
    # would refuse it too: belt and braces.
    await refused_as(
        pg,
        a.members["adult"],
        "insert into public.invitations (family_unit_id, email, role, token_hash, invited_by,"
        " status) values ($1, 'x@example.com', 'teen', $2, $3, $4)",
        u(a.family),
        uuid.uuid4().hex,
        u(a.members["adult"]),
        status,
    )


_REVOKE_INVITE = "update public.invitations set status = $2 where id = $1"


@covers("public.invitations.invitations_revoke")
@pytest.mark.parametrize("role", ROLES)
async def test_invitations_revoke_by_role(pg, a, role):
    status = await run_as(pg, a.members[role], _REVOKE_INVITE, a.invite, "revoked")
    assert status == done(1 if may(role, "see and revoke invites") else 0)


@covers("public.invitations.invitations_revoke")
@pytest.mark.parametrize(
    "role", [role for role in ROLES if not may(role, "see and revoke invites")]
)
async def test_invitations_revoke_with_no_where_clause_by_role(pg, a, role):
    # No WHERE clause: one reading columns would bring in invitations_select, whose own role
    # check would hide the rows.
    statement = "update public.invitations set status = 'revoked'"
    assert await run_as(pg, a.members[role], statement) == done(0)


@covers("public.invitations.invitations_revoke")
async def test_invitations_revoke_not_another_familys(pg, a, b):
    assert await run_as(pg, b.members["adult"], _REVOKE_INVITE, a.invite, "revoked") == done(0)


@covers("public.invitations.invitations_revoke")
@pytest.mark.parametrize("status", ["accepted", "pending"])
async def test_invitations_revoke_only_to_revoked_or_expired(pg, a, status):
    await refused_as(pg, a.members["adult"], _REVOKE_INVITE, a.invite, status)


# --- login sessions ----------------------------------------------------------------------------


@covers("app.auth_sessions.auth_sessions_own")
async def test_auth_sessions_select_own_only(pg, a):
    query = "select count(*) from app.auth_sessions where user_id = $1"
    assert await count_as(pg, a.members["teen"], query, u(a.members["teen"])) >= 1
    assert await count_as(pg, a.members["adult"], query, u(a.members["teen"])) == 0


@covers("app.refresh_tokens.refresh_tokens_own")
async def test_refresh_tokens_select_own_only(pg, a):
    sessions = [
        row["id"]
        for row in await pg.fetch(
            "select id from app.auth_sessions where user_id = $1", u(a.members["teen"])
        )
    ]
    query = "select count(*) from app.refresh_tokens where session_id = any($1::uuid[])"
    total = await pg.fetchval(query, sessions)
    assert total >= 1
    assert await count_as(pg, a.members["teen"], query, sessions) == total
    assert await count_as(pg, a.members["adult"], query, sessions) == 0


@covers("app.auth_sessions.auth_sessions_revoke_own")
async def test_auth_sessions_revoke_own_only(pg, a):
    statement = (
        "update app.auth_sessions set revoked_at = now(), revoked_reason = 'x' where user_id = $1"
    )
    assert await run_as(pg, a.members["adult"], statement, u(a.members["teen"])) == done(0)
    own = await run_as(pg, a.members["teen"], statement, u(a.members["teen"]))
    assert own != done(0)


# --- memories ----------------------------------------------------------------------------------


@covers("public.memories.memories_select")
@pytest.mark.parametrize("role", ROLES)
async def test_memories_select_family_and_drafts(pg, a, b, role):
    query = "select count(*) from public.memories where id = $1"
    actor = a.members[role]
    other = a.other_than(role)
    assert await count_as(pg, actor, query, a.published[other]) == 1
    assert await count_as(pg, actor, query, a.drafts[role]) == 1  # own draft
    assert await count_as(pg, actor, query, a.drafts[other]) == 0  # another's draft
    assert await count_as(pg, actor, query, b.published["adult"]) == 0  # another family


_NEW_MEMORY = "insert into public.memories (family_unit_id, user_id, title) values ($1, $2, 't')"


@covers("public.memories.memories_insert")
@pytest.mark.parametrize("role", ROLES)
async def test_memories_insert_own_in_own_family(pg, a, role):
    actor = a.members[role]
    assert await run_as(pg, actor, _NEW_MEMORY, u(a.family), u(actor)) == "INSERT 0 1"


@covers("public.memories.memories_insert")
async def test_memories_insert_not_into_another_family(pg, a, b):
    actor = b.members["adult"]
    await refused_as(pg, actor, _NEW_MEMORY, u(a.family), u(actor))


@covers("public.memories.memories_insert")
async def test_memories_insert_not_in_anothers_name(pg, a):
    await refused_as(pg, a.members["adult"], _NEW_MEMORY, u(a.family), u(a.members["teen"]))


_EDIT_MEMORY = "update public.memories set title = 'edited' where id = $1"


@covers("public.memories.memories_update")
@pytest.mark.parametrize("role", ROLES)
async def test_memories_update_own_by_every_role(pg, a, role):
    actor = a.members[role]
    assert may(role, "edit own memory")
    assert await run_as(pg, actor, _EDIT_MEMORY, a.published[role]) == done(1)
    assert await run_as(pg, actor, _EDIT_MEMORY, a.drafts[role]) == done(1)


@covers("public.memories.memories_update")
@pytest.mark.parametrize("role", ROLES)
async def test_memories_update_anothers_by_role(pg, a, role):
    target = a.published[a.other_than(role)]
    expected = 1 if may(role, "edit anyone's memory") else 0
    assert await run_as(pg, a.members[role], _EDIT_MEMORY, target) == done(expected)


@covers("public.memories.memories_update")
async def test_memories_update_not_anothers_draft(pg, a):
    # An adult may edit anyone's memory, but a draft is its author's alone.
    assert await run_as(pg, a.members["adult"], _EDIT_MEMORY, a.drafts["teen"]) == done(0)


@covers("public.memories.memories_update")
async def test_memories_update_not_another_familys(pg, a, b):
    assert await run_as(pg, b.members["adult"], _EDIT_MEMORY, a.published["adult"]) == done(0)


@covers("public.memories.memories_update")
async def test_memories_update_cannot_move_a_memory_to_another_family(pg, a, b):
    await refused_as(
        pg,
        a.members["adult"],
        "update public.memories set family_unit_id = $2 where id = $1",
        a.published["adult"],
        u(b.family),
    )


_DELETE_MEMORY = "delete from public.memories where id = $1"


@covers("public.memories.memories_delete")
@pytest.mark.parametrize("role", ROLES)
async def test_memories_delete_own_by_role(pg, a, role):
    expected = 1 if may(role, "delete own memory") else 0
    status = await run_as(pg, a.members[role], _DELETE_MEMORY, a.published[role])
    assert status == done(expected, "DELETE")


@covers("public.memories.memories_delete")
@pytest.mark.parametrize("role", ROLES)
async def test_memories_delete_anothers_by_role(pg, a, role):
    # A child (or teen, or grandparent) deleting someone else's memory: refused by the
    # database itself, whatever the service layer lets through.
    target = a.published[a.other_than(role)]
    expected = 1 if may(role, "delete anyone's memory") else 0
    assert await run_as(pg, a.members[role], _DELETE_MEMORY, target) == done(expected, "DELETE")


@covers("public.memories.memories_delete")
async def test_memories_delete_not_anothers_draft(pg, a):
    assert await run_as(pg, a.members["adult"], _DELETE_MEMORY, a.drafts["teen"]) == "DELETE 0"


@covers("public.memories.memories_delete")
async def test_memories_delete_not_another_familys(pg, a, b):
    assert await run_as(pg, b.members["adult"], _DELETE_MEMORY, a.published["teen"]) == "DELETE 0"


# --- media -------------------------------------------------------------------------------------


async def _media_row(
    conn: asyncpg.Connection, memory: uuid.UUID, family: str, media: uuid.UUID | None = None
) -> uuid.UUID:
    """A media row as the superuser (before `become`)."""
    media = media or uuid.uuid4()
    await conn.execute(
        "insert into public.memory_media (id, memory_id, family_unit_id, storage_path,"
        " file_name, mime_type, file_size) values ($1, $2, $3, $4, 'p.jpg', 'image/jpeg', 10)",
        media,
        memory,
        u(family),
        f"{family}/{memory}/{media}.jpg",
    )
    return media


@covers("public.memory_media.memory_media_select")
async def test_memory_media_select_with_its_memory(pg, a, b):
    async with transaction(pg) as conn:
        published = await _media_row(conn, a.published["adult"], a.family)
        draft = await _media_row(conn, a.drafts["adult"], a.family)
        await become(conn, a.members["child"])
        query = "select count(*) from public.memory_media where id = $1"
        assert await conn.fetchval(query, published) == 1
        assert await conn.fetchval(query, draft) == 0  # another's draft
    async with transaction(pg) as conn:
        published = await _media_row(conn, a.published["adult"], a.family)
        await become(conn, b.members["adult"])
        assert await conn.fetchval(query, published) == 0  # another family


_NEW_MEDIA = (
    "insert into public.memory_media (id, memory_id, family_unit_id, storage_path, file_name,"
    " mime_type, file_size) values ($1, $2, $3, $4, 'p.jpg', 'image/jpeg', 10)"
)


def _media_args(memory: uuid.UUID, family: str) -> tuple[Any, ...]:
    media = uuid.uuid4()
    return (media, memory, u(family), f"{family}/{memory}/{media}.jpg")


@covers("public.memory_media.memory_media_insert")
@pytest.mark.parametrize("role", ROLES)
async def test_memory_media_insert_by_who_may_edit_the_memory(pg, a, role):
    actor = a.members[role]
    own = _media_args(a.published[role], a.family)
    assert await run_as(pg, actor, _NEW_MEDIA, *own) == "INSERT 0 1"
    anothers = _media_args(a.published[a.other_than(role)], a.family)
    if may(role, "edit anyone's memory"):
        assert await run_as(pg, actor, _NEW_MEDIA, *anothers) == "INSERT 0 1"
    else:
        await refused_as(pg, actor, _NEW_MEDIA, *anothers)


@covers("public.memory_media.memory_media_insert")
async def test_memory_media_insert_stamped_with_another_family_is_refused(pg, a, b):
    # B's adult, on B's own memory, but with family A's id (and a path in A's folder).
    memory = b.published["adult"]
    media = uuid.uuid4()
    args = (media, memory, u(a.family), f"{a.family}/{memory}/{media}.jpg")
    await refused_as(pg, b.members["adult"], _NEW_MEDIA, *args)


@covers("public.memory_media.memory_media_insert")
async def test_memory_media_insert_not_on_another_familys_memory(pg, a, b):
    # Stamped with B's own family, but onto A's memory.
    memory = a.published["adult"]
    media = uuid.uuid4()
    args = (media, memory, u(b.family), f"{b.family}/{memory}/{media}.jpg")
    await refused_as(pg, b.members["adult"], _NEW_MEDIA, *args)


@covers("public.memory_media.memory_media_delete")
@pytest.mark.parametrize("role", ROLES)
async def test_memory_media_delete_by_who_may_edit_the_memory(pg, a, role):
    for author, expected in (
        (role, 1),
        (a.other_than(role), 1 if may(role, "edit anyone's memory") else 0),
    ):
        async with transaction(pg) as conn:
            media = await _media_row(conn, a.published[author], a.family)
            await become(conn, a.members[role])
            status = await conn.execute("delete from public.memory_media where id = $1", media)
        assert status == done(expected, "DELETE"), author


@covers("public.memory_media.memory_media_delete")
async def test_memory_media_delete_not_another_familys(pg, a, b):
    async with transaction(pg) as conn:
        media = await _media_row(conn, a.published["adult"], a.family)
        await become(conn, b.members["adult"])
        assert await conn.execute("delete from public.memory_media where id = $1", media) == (
            "DELETE 0"
        )


# --- reactions ---------------------------------------------------------------------------------


async def _reaction_row(conn: asyncpg.Connection, memory: uuid.UUID, family: str, user: str):
    reaction: uuid.UUID = await conn.fetchval(
        "insert into public.memory_reactions (memory_id, family_unit_id, user_id, emoji)"
        " values ($1, $2, $3, '🎉') returning id",
        memory,
        u(family),
        u(user),
    )
    return reaction


@covers("public.memory_reactions.memory_reactions_select")
async def test_memory_reactions_select_with_its_memory(pg, a, b):
    query = "select count(*) from public.memory_reactions where id = $1"
    async with transaction(pg) as conn:
        on_published = await _reaction_row(conn, a.published["adult"], a.family, a.members["adult"])
        on_draft = await _reaction_row(conn, a.drafts["adult"], a.family, a.members["adult"])
        await become(conn, a.members["teen"])
        assert await conn.fetchval(query, on_published) == 1
        assert await conn.fetchval(query, on_draft) == 0
    async with transaction(pg) as conn:
        on_published = await _reaction_row(conn, a.published["adult"], a.family, a.members["adult"])
        await become(conn, b.members["adult"])
        assert await conn.fetchval(query, on_published) == 0


_NEW_REACTION = (
    "insert into public.memory_reactions (memory_id, family_unit_id, user_id, emoji)"
    " values ($1, $2, $3, '👍')"
)


@covers("public.memory_reactions.memory_reactions_insert")
@pytest.mark.parametrize("role", ROLES)
async def test_memory_reactions_insert_by_every_role(pg, a, role):
    actor = a.members[role]
    memory = a.published[a.other_than(role)]
    assert await run_as(pg, actor, _NEW_REACTION, memory, u(a.family), u(actor)) == "INSERT 0 1"


@covers("public.memory_reactions.memory_reactions_insert")
async def test_memory_reactions_insert_stamped_with_another_family_is_refused(pg, a, b):
    # The family check alone: B's member, B's own (visible) memory, A's family id.
    actor = b.members["teen"]
    await refused_as(pg, actor, _NEW_REACTION, b.published["adult"], u(a.family), u(actor))


@covers("public.memory_reactions.memory_reactions_insert")
async def test_memory_reactions_insert_not_in_anothers_name(pg, a):
    actor, other = a.members["teen"], a.members["adult"]
    await refused_as(pg, actor, _NEW_REACTION, a.published["adult"], u(a.family), u(other))


@covers("public.memory_reactions.memory_reactions_insert")
async def test_memory_reactions_insert_not_on_an_invisible_memory(pg, a):
    actor = a.members["teen"]
    await refused_as(pg, actor, _NEW_REACTION, a.drafts["adult"], u(a.family), u(actor))


@covers("public.memory_reactions.memory_reactions_delete")
async def test_memory_reactions_delete_own_only(pg, a):
    for owner, expected in (("teen", 1), ("adult", 0)):
        async with transaction(pg) as conn:
            reaction = await _reaction_row(
                conn, a.published["grandparent"], a.family, a.members[owner]
            )
            await become(conn, a.members["teen"])
            status = await conn.execute(
                "delete from public.memory_reactions where id = $1", reaction
            )
        assert status == done(expected, "DELETE"), owner


@covers("public.memory_reactions.memory_reactions_delete")
async def test_memory_reactions_delete_not_on_an_invisible_memory(pg, a):
    # The teen's own reaction, left on a memory the teen cannot see (another's draft).
    # No WHERE clause: one reading `id` would bring in the select policy, which hides it too.
    async with transaction(pg) as conn:
        await _reaction_row(conn, a.drafts["adult"], a.family, a.members["teen"])
        await become(conn, a.members["teen"])
        status = await conn.execute("delete from public.memory_reactions")
    assert status == "DELETE 0"


# --- comments ----------------------------------------------------------------------------------


async def _comment_row(conn: asyncpg.Connection, memory: uuid.UUID, family: str, user: str):
    comment: uuid.UUID = await conn.fetchval(
        "insert into public.memory_comments (memory_id, family_unit_id, user_id, content)"
        " values ($1, $2, $3, 'hello') returning id",
        memory,
        u(family),
        u(user),
    )
    return comment


@covers("public.memory_comments.memory_comments_select")
async def test_memory_comments_select_with_its_memory(pg, a, b):
    query = "select count(*) from public.memory_comments where id = $1"
    async with transaction(pg) as conn:
        on_published = await _comment_row(conn, a.published["adult"], a.family, a.members["adult"])
        on_draft = await _comment_row(conn, a.drafts["adult"], a.family, a.members["adult"])
        await become(conn, a.members["child"])
        assert await conn.fetchval(query, on_published) == 1
        assert await conn.fetchval(query, on_draft) == 0
    async with transaction(pg) as conn:
        on_published = await _comment_row(conn, a.published["adult"], a.family, a.members["adult"])
        await become(conn, b.members["adult"])
        assert await conn.fetchval(query, on_published) == 0


_NEW_COMMENT = (
    "insert into public.memory_comments (memory_id, family_unit_id, user_id, content)"
    " values ($1, $2, $3, 'hi')"
)


@covers("public.memory_comments.memory_comments_insert")
@pytest.mark.parametrize("role", ROLES)
async def test_memory_comments_insert_by_every_role(pg, a, role):
    actor = a.members[role]
    memory = a.published[a.other_than(role)]
    assert await run_as(pg, actor, _NEW_COMMENT, memory, u(a.family), u(actor)) == "INSERT 0 1"


@covers("public.memory_comments.memory_comments_insert")
async def test_memory_comments_insert_stamped_with_another_family_is_refused(pg, a, b):
    # The family check alone: B's member, B's own (visible) memory, A's family id. Let through,
    # the comment would count in family A's analytics.
    actor = b.members["teen"]
    await refused_as(pg, actor, _NEW_COMMENT, b.published["adult"], u(a.family), u(actor))


@covers("public.memory_comments.memory_comments_insert")
async def test_memory_comments_insert_not_in_anothers_name(pg, a):
    actor, other = a.members["teen"], a.members["adult"]
    await refused_as(pg, actor, _NEW_COMMENT, a.published["adult"], u(a.family), u(other))


@covers("public.memory_comments.memory_comments_insert")
async def test_memory_comments_insert_not_on_an_invisible_memory(pg, a):
    actor = a.members["teen"]
    await refused_as(pg, actor, _NEW_COMMENT, a.drafts["adult"], u(a.family), u(actor))


_SOFT_DELETE = "update public.memory_comments set deleted_at = now() where id = $1"
_EDIT_COMMENT = "update public.memory_comments set content = 'changed' where id = $1"


async def _update_comment_as(
    pg: asyncpg.Pool, actor: str, author: str, memory: uuid.UUID, family: str, statement: str
) -> str:
    async with transaction(pg) as conn:
        comment = await _comment_row(conn, memory, family, author)
        await become(conn, actor)
        status: str = await conn.execute(statement, comment)
        return status


@covers("public.memory_comments.memory_comments_update")
@pytest.mark.parametrize("role", ROLES)
async def test_memory_comments_update_anothers_by_role(pg, a, role):
    # The policy lets through the author and adults/grandparents; for anyone else the row is
    # not there to update (UPDATE 0, not an error from the guard trigger behind it).
    other = a.members[a.other_than(role)]
    status = await _update_comment_as(
        pg, a.members[role], other, a.published["adult"], a.family, _SOFT_DELETE
    )
    assert status == done(1 if may(role, "delete anyone's comment") else 0)


@covers("public.memory_comments.memory_comments_update")
@pytest.mark.parametrize("role", ROLES)
async def test_memory_comments_update_own_by_every_role(pg, a, role):
    actor = a.members[role]
    status = await _update_comment_as(
        pg, actor, actor, a.published["adult"], a.family, _EDIT_COMMENT
    )
    assert status == done(1)


@covers("public.memory_comments.memory_comments_update")
async def test_memory_comments_update_not_on_an_invisible_memory(pg, a):
    # The teen's own comment on a memory the teen cannot see; no WHERE clause (one reading `id`
    # would bring in the select policy, which hides it too).
    actor = a.members["teen"]
    async with transaction(pg) as conn:
        await _comment_row(conn, a.drafts["adult"], a.family, actor)
        await become(conn, actor)
        status = await conn.execute("update public.memory_comments set content = 'changed'")
    assert status == done(0)


@covers("public.memory_comments.memory_comments_update")
async def test_memory_comments_update_not_another_familys(pg, a, b):
    status = await _update_comment_as(
        pg, b.members["adult"], a.members["adult"], a.published["adult"], a.family, _SOFT_DELETE
    )
    assert status == done(0)


@pytest.mark.parametrize("role", ROLES)
async def test_comment_guard_lets_only_some_roles_delete_their_own(pg, a, role):
    # Not a policy: the guard trigger behind memory_comments_update.
    actor = a.members[role]
    if may(role, "delete own comment"):
        status = await _update_comment_as(
            pg, actor, actor, a.published["adult"], a.family, _SOFT_DELETE
        )
        assert status == done(1)
    else:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await _update_comment_as(pg, actor, actor, a.published["adult"], a.family, _SOFT_DELETE)


# --- counts and analytics ----------------------------------------------------------------------


@covers("app.family_memory_counts.family_memory_counts_select")
async def test_family_memory_counts_select_own_family_only(pg, a, b):
    query = "select count(*) from app.family_memory_counts where family_unit_id = $1"
    assert await count_as(pg, a.members["child"], query, u(a.family)) == 1
    assert await count_as(pg, a.members["adult"], query, u(b.family)) == 0


@covers("app.memory_changes.memory_changes_select")
async def test_memory_changes_select_own_family_only(pg, a, b):
    # Every memory's creation is logged, so each family has rows.
    query = "select count(*) from app.memory_changes where family_unit_id = $1"
    assert await count_as(pg, a.members["child"], query, u(a.family)) > 0
    assert await count_as(pg, b.members["adult"], query, u(a.family)) == 0


@covers("app.memory_changes.memory_changes_select")
@pytest.mark.parametrize("role", ROLES)
async def test_memory_changes_show_only_memories_the_member_may_see(pg, a, role):
    # The log of another member's draft would tell that it exists, and its memory_date.
    query = "select count(*) from app.memory_changes where memory_id = $1"
    other = a.other_than(role)
    assert await count_as(pg, a.members[role], query, a.drafts[role]) > 0
    assert await count_as(pg, a.members[role], query, a.published[other]) > 0
    assert await count_as(pg, a.members[role], query, a.drafts[other]) == 0


@covers(
    "public.analytics_events.analytics_events_select",
    "public.analytics_metrics.analytics_metrics_select",
)
@pytest.mark.parametrize("table", ["public.analytics_events", "public.analytics_metrics"])
@pytest.mark.parametrize("role", ROLES)
async def test_analytics_select_by_role(pg, a, table, role):
    query = f"select count(*) from {table} where family_unit_id = $1"
    seen = await count_as(pg, a.members[role], query, u(a.family))
    assert (seen > 0) == may(role, "read analytics")


@covers(
    "public.analytics_events.analytics_events_select",
    "public.analytics_metrics.analytics_metrics_select",
)
@pytest.mark.parametrize("table", ["public.analytics_events", "public.analytics_metrics"])
async def test_analytics_select_not_another_familys(pg, a, b, table):
    total = await pg.fetchval(
        f"select count(*) from {table} where family_unit_id = $1", u(a.family)
    )
    assert total > 0
    query = f"select count(*) from {table} where family_unit_id = $1"
    assert await count_as(pg, b.members["adult"], query, u(a.family)) == 0


# --- pets' profiles and avatars -----------------------------------------------------------------


@covers("public.pet_profiles.pet_profiles_update")
@pytest.mark.parametrize("role", ROLES)
async def test_pet_profiles_update_by_role(pg, a, role):
    statement = (
        "update public.pet_profiles set avatar_url = 'https://x.example/p.png' where id = $1"
    )
    expected = done(1 if may(role, "change a pet's profile") else 0)
    assert await run_as(pg, a.members[role], statement, a.pet) == expected


@covers("public.pet_profiles.pet_profiles_update")
async def test_pet_profiles_update_with_no_where_clause(pg, a, b):
    statement = "update public.pet_profiles set avatar_url = null"
    # B's adult reaches B's own pet only, never A's.
    assert await run_as(pg, b.members["adult"], statement) == done(1)
    assert await run_as(pg, b.members["adult"], f"{statement} where id = $1", a.pet) == done(0)


_NEW_AVATAR = (
    "insert into public.memory_media (id, memory_id, family_unit_id, purpose, storage_path,"
    " file_name, mime_type, file_size) values ($1, null, $2, 'avatar', $3, 'me.jpg',"
    " 'image/jpeg', 10)"
)


def _avatar_row(family: str) -> tuple[uuid.UUID, uuid.UUID, str]:
    media = uuid.uuid4()
    return media, u(family), f"{family}/avatars/{media}.jpg"


@covers("public.memory_media.memory_media_insert_avatar")
@pytest.mark.parametrize("role", ROLES)
async def test_memory_media_insert_avatar_by_any_member_of_the_family(pg, a, role):
    statement_status = await run_as(pg, a.members[role], _NEW_AVATAR, *_avatar_row(a.family))
    assert statement_status == "INSERT 0 1"


@covers("public.memory_media.memory_media_insert_avatar")
async def test_memory_media_insert_avatar_into_own_family_only(pg, a, b):
    await refused_as(pg, b.members["adult"], _NEW_AVATAR, *_avatar_row(a.family))


# --- imports ------------------------------------------------------------------------------------
# Adults and grandparents bring a family's past in; an import writes its records in the importing
# member's own session. Each table: seen only by those roles of the family, written only by them,
# only for their own family, and only pointing at their own family's rows.

_IMPORT = "export and import the archive"


async def _import_rows(pg: asyncpg.Pool, seeded: Seeded) -> tuple[uuid.UUID, uuid.UUID]:
    """A job, and a media row of the family's adult's published memory (superuser, kept)."""
    fid = u(seeded.family)
    job = await pg.fetchval(
        "insert into public.family_imports (family_unit_id, created_by, source_name)"
        " values ($1, $2, 'takeout.zip') returning id",
        fid,
        u(seeded.members["adult"]),
    )
    media = await pg.fetchval(
        "insert into public.memory_media (id, memory_id, family_unit_id, storage_path, file_name,"
        " mime_type, file_size) values ($1, $2, $3, $4, 'a.jpg', 'image/jpeg', 10) returning id",
        uuid.uuid4(),
        seeded.published["adult"],
        fid,
        f"{fid}/{seeded.published['adult']}/{uuid.uuid4()}.jpg",
    )
    await pg.execute(
        "insert into public.import_items (family_unit_id, sha256, media_id) values ($1, $2, $3)",
        fid,
        uuid.uuid4().hex * 2,
        media,
    )
    await pg.execute(
        "insert into public.import_memories (family_unit_id, import_key, memory_id)"
        " values ($1, $2, $3)",
        fid,
        f"album:{uuid.uuid4()}",
        seeded.published["adult"],
    )
    return job, media


@pytest.fixture(scope="module")
async def imported(pg, families) -> dict[str, tuple[uuid.UUID, uuid.UUID]]:
    a_rows, b_rows = await _import_rows(pg, families[0]), await _import_rows(pg, families[1])
    return {"a": a_rows, "b": b_rows}


_IMPORT_TABLES = ("family_imports", "import_items", "import_memories")


@covers(
    "public.family_imports.family_imports_select",
    "public.import_items.import_items_select",
    "public.import_memories.import_memories_select",
)
@pytest.mark.parametrize("role", ROLES)
async def test_import_tables_select_own_family_by_role(pg, a, imported, role):
    for table in _IMPORT_TABLES:
        query = f"select count(*) from public.{table}"
        expected = 1 if may(role, _IMPORT) else 0
        assert await count_as(pg, a.members[role], query) == expected, table


_NEW_IMPORT = (
    "insert into public.family_imports (family_unit_id, created_by, source_name)"
    " values ($1, $2, 'x.zip')"
)


@covers("public.family_imports.family_imports_insert")
@pytest.mark.parametrize("role", ROLES)
async def test_family_imports_insert_by_role(pg, a, role):
    member = a.members[role]
    if may(role, _IMPORT):
        assert await run_as(pg, member, _NEW_IMPORT, u(a.family), u(member)) == "INSERT 0 1"
    else:
        await refused_as(pg, member, _NEW_IMPORT, u(a.family), u(member))


@covers("public.family_imports.family_imports_insert")
async def test_family_imports_insert_own_family_and_own_name_only(pg, a, b):
    adult, grandparent = a.members["adult"], a.members["grandparent"]
    await refused_as(pg, b.members["adult"], _NEW_IMPORT, u(a.family), u(b.members["adult"]))
    await refused_as(pg, adult, _NEW_IMPORT, u(a.family), u(grandparent))


_NEW_ITEM = "insert into public.import_items (family_unit_id, sha256, media_id) values ($1, $2, $3)"
_NEW_IMPORT_MEMORY = (
    "insert into public.import_memories (family_unit_id, import_key, memory_id) values ($1, $2, $3)"
)


@covers("public.import_items.import_items_insert", "public.import_memories.import_memories_insert")
@pytest.mark.parametrize("role", ROLES)
async def test_import_records_insert_by_role(pg, a, imported, role):
    member, media = a.members[role], imported["a"][1]
    item = (u(a.family), uuid.uuid4().hex * 2, media)
    memory = (u(a.family), "day:2019-06-14", a.published["adult"])
    if may(role, _IMPORT):
        assert await run_as(pg, member, _NEW_ITEM, *item) == "INSERT 0 1"
        assert await run_as(pg, member, _NEW_IMPORT_MEMORY, *memory) == "INSERT 0 1"
    else:
        await refused_as(pg, member, _NEW_ITEM, *item)
        await refused_as(pg, member, _NEW_IMPORT_MEMORY, *memory)


@covers("public.import_items.import_items_insert", "public.import_memories.import_memories_insert")
async def test_import_records_point_at_own_family_rows_only(pg, a, b, imported):
    adult = b.members["adult"]
    # Stamped with B's own family, but naming A's media and A's memory: refused (the family
    # check on the row pointed at, alone).
    await refused_as(pg, adult, _NEW_ITEM, u(b.family), uuid.uuid4().hex * 2, imported["a"][1])
    await refused_as(pg, adult, _NEW_IMPORT_MEMORY, u(b.family), "k", a.published["adult"])
    # Stamped with A's family: refused too.
    await refused_as(pg, adult, _NEW_ITEM, u(a.family), uuid.uuid4().hex * 2, imported["a"][1])
    await refused_as(pg, adult, _NEW_IMPORT_MEMORY, u(a.family), "k", a.published["adult"])


# --- the family archive ------------------------------------------------------------------------

_QUEUE_EXPORT = "insert into public.archive_exports (family_unit_id, requested_by) values ($1, $2)"


async def _export_of(conn: asyncpg.Connection, family: Seeded) -> uuid.UUID:
    """An export of the family (as the service role writes it), inside the open transaction."""
    export_id: uuid.UUID = await conn.fetchval(
        "insert into public.archive_exports (family_unit_id, requested_by, status)"
        " values ($1, $2, 'failed') returning id",
        u(family.family),
        u(family.members["adult"]),
    )
    return export_id


@covers("public.archive_exports.archive_exports_select")
@pytest.mark.parametrize("role", ROLES)
async def test_archive_exports_select_by_role(pg, a, role):
    async with transaction(pg) as conn:
        export_id = await _export_of(conn, a)
        await become(conn, a.members[role])
        seen = await conn.fetchval(
            "select count(*) from public.archive_exports where id = $1", export_id
        )
    assert seen == (1 if may(role, "export and import the archive") else 0)


@covers("public.archive_exports.archive_exports_select")
async def test_archive_exports_select_not_another_familys(pg, a, b):
    async with transaction(pg) as conn:
        await _export_of(conn, a)
        await become(conn, b.members["adult"])
        seen = await conn.fetchval(
            "select count(*) from public.archive_exports where family_unit_id = $1", u(a.family)
        )
    assert seen == 0


@covers("public.archive_exports.archive_exports_insert")
@pytest.mark.parametrize("role", ROLES)
async def test_archive_exports_insert_by_role(pg, a, role):
    member = a.members[role]
    if may(role, "export and import the archive"):
        status = await run_as(pg, member, _QUEUE_EXPORT, u(a.family), u(member))
        assert status == "INSERT 0 1"
    else:
        await refused_as(pg, member, _QUEUE_EXPORT, u(a.family), u(member))


@covers("public.archive_exports.archive_exports_insert")
async def test_archive_exports_insert_not_into_another_family(pg, a, b):
    adult = b.members["adult"]
    await refused_as(pg, adult, _QUEUE_EXPORT, u(a.family), u(adult))


@covers("public.archive_exports.archive_exports_insert")
async def test_archive_exports_insert_not_in_another_members_name(pg, a):
    await refused_as(pg, a.members["adult"], _QUEUE_EXPORT, u(a.family), u(a.members["teen"]))
