"""Accounts, logins and tokens: registration, login, refresh rotation, logout, profile.

Anonymous operations (register, login, refresh, invite acceptance) open an
explicitly named system session; everything a signed-in member does runs on the
member's RLS connection handed in by the router.
"""

import secrets
import unicodedata
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg

from app.config import Settings
from app.db.postgres import Connection, Database
from app.errors import Conflict, Unauthorized
from app.models.identity import Actor, Role
from app.services import rbac
from app.services.auth_providers import AuthProvider
from app.services.rbac import Permission
from app.services.tokens import AccessClaims, hash_token, issue_access_token, new_opaque_token

INVALID_LOGIN = "Invalid email/username or password"
INVALID_REFRESH = "Invalid or expired refresh token"


@dataclass(frozen=True)
class IssuedTokens:
    access_token: str
    refresh_token: str
    expires_in: int
    user_id: UUID
    family_unit_id: UUID


@dataclass(frozen=True)
class Registration:
    user_id: UUID
    email: str | None
    role: Role
    family_unit_id: UUID
    tokens: IssuedTokens
    # Set for a child who joined without an email: what they log in with from now on.
    username: str | None = None


@dataclass(frozen=True)
class NewMember:
    """A profile to create once the account exists."""

    family_unit_id: UUID | None  # None: found a new family
    role: Role
    display_name: str
    email: str | None
    username: str | None = None
    family_name: str | None = None


# Sessions and tokens ----------------------------------------------------------------

_NEW_SESSION = "insert into app.auth_sessions (user_id) values ($1) returning id"
_NEW_REFRESH_TOKEN = """
insert into app.refresh_tokens (session_id, token_hash, expires_at) values ($1, $2, $3)
"""


async def _issue_tokens(
    db: Connection,
    settings: Settings,
    *,
    user_id: UUID,
    role: Role,
    family_unit_id: UUID,
    session_id: UUID | None = None,
) -> IssuedTokens:
    if session_id is None:
        session_id = await db.fetchval(_NEW_SESSION, user_id)
    refresh_token = new_opaque_token()
    expires_at = datetime.now(UTC) + timedelta(seconds=settings.refresh_token_ttl_seconds)
    await db.execute(_NEW_REFRESH_TOKEN, session_id, hash_token(refresh_token), expires_at)
    access_token = issue_access_token(
        secret=settings.jwt_secret,
        ttl_seconds=settings.access_token_ttl_seconds,
        user_id=user_id,
        role=role,
        family_unit_id=family_unit_id,
        session_id=session_id,
    )
    return IssuedTokens(
        access_token,
        refresh_token,
        settings.access_token_ttl_seconds,
        user_id=user_id,
        family_unit_id=family_unit_id,
    )


# Registration ------------------------------------------------------------------------

_FAMILY_OF = "select family_unit_id from public.user_profiles where id = $1"
_EMAIL_TAKEN = "select exists (select 1 from public.user_profiles where email = $1)"
_NEW_FAMILY = "insert into public.family_units (name, created_by) values ($1, $2) returning id"
_NEW_PROFILE = """
insert into public.user_profiles (id, family_unit_id, role, display_name, email, username)
values ($1, $2, $3, $4, $5, $6)
"""


def normalize_email(email: str | None) -> str | None:
    return email.strip().lower() if email else None


async def ensure_email_free(db: Connection, email: str | None) -> None:
    if email and await db.fetchval(_EMAIL_TAKEN, email):
        raise Conflict("An account with this email already exists")


async def create_member(
    provider: AuthProvider,
    member: NewMember,
    password: str,
    db: Connection,
) -> UUID:
    """Create the account, then the profile on `db`; undo the account if that fails.

    `db` is the caller's transaction: a system session for registration, the
    inviting adult's RLS session for provisioning (whose policy then decides).
    """
    await ensure_email_free(db, member.email)
    user_id = await provider.create_user(
        email=member.email, username=member.username, password=password
    )
    try:
        async with db.transaction():  # a savepoint: a failure leaves the caller's tx usable
            family_id = member.family_unit_id
            if family_id is None:
                name = member.family_name or f"{member.display_name}'s family"
                family_id = await db.fetchval(_NEW_FAMILY, name, user_id)
            await db.execute(
                _NEW_PROFILE,
                user_id,
                family_id,
                member.role.value,
                member.display_name,
                member.email,
                member.username,
            )
    except asyncpg.UniqueViolationError:
        await provider.delete_user(user_id)
        raise Conflict("An account with this email already exists") from None
    except BaseException:
        await provider.delete_user(user_id)
        raise
    return user_id


@dataclass
class AccountCreation:
    """One account being created inside a system transaction (see `account_creation`)."""

    db: Connection
    provider: AuthProvider
    user_id: UUID | None = None

    async def create(self, member: NewMember, password: str) -> UUID:
        self.user_id = await create_member(self.provider, member, password, self.db)
        return self.user_id


@asynccontextmanager
async def account_creation(
    database: Database, provider: AuthProvider
) -> AsyncIterator[AccountCreation]:
    """The one home of "a new account ends with its profile committed, or not at all".

    Whatever fails after the account exists — the profile, tokens, marking an invite,
    the commit itself — the account is deleted again, so neither side keeps an orphan.
    """
    creation: AccountCreation | None = None
    try:
        async with database.system_session() as db:
            creation = AccountCreation(db, provider)
            yield creation
    except BaseException:
        # (create_member undoes the account itself when the profile fails; user_id is
        # None then.)
        if creation is not None and creation.user_id is not None:
            await provider.delete_user(creation.user_id)
        raise


async def register_founder(
    database: Database,
    provider: AuthProvider,
    settings: Settings,
    *,
    role: Role,
    email: str,
    password: str,
    display_name: str,
    family_name: str | None,
) -> Registration:
    email_normalized = normalize_email(email)
    member = NewMember(
        family_unit_id=None,
        role=role,
        display_name=display_name,
        email=email_normalized,
        family_name=family_name,
    )
    async with account_creation(database, provider) as creation:
        user_id = await creation.create(member, password)
        family_id = await creation.db.fetchval(_FAMILY_OF, user_id)
        tokens = await _issue_tokens(
            creation.db, settings, user_id=user_id, role=role, family_unit_id=family_id
        )
    return Registration(user_id, email_normalized, role, family_id, tokens)


async def registration_for_new_member(
    db: Connection, settings: Settings, user_id: UUID, member: NewMember
) -> Registration:
    assert member.family_unit_id is not None
    tokens = await _issue_tokens(
        db, settings, user_id=user_id, role=member.role, family_unit_id=member.family_unit_id
    )
    return Registration(
        user_id, member.email, member.role, member.family_unit_id, tokens, member.username
    )


# Provisioned children -----------------------------------------------------------------


@dataclass(frozen=True)
class ProvisionedChild:
    user_id: UUID
    username: str
    password: str
    display_name: str
    family_unit_id: UUID


_USERNAME_TAKEN = "select exists (select 1 from public.user_profiles where username = $1)"


def _username_base(display_name: str) -> str:
    ascii_name = unicodedata.normalize("NFKD", display_name).encode("ascii", "ignore").decode()
    letters = "".join(ch for ch in ascii_name.lower() if ch.isalnum())
    return (letters or "child")[:20]


async def new_child_username(database: Database, display_name: str) -> str:
    """A readable name like `lea.0412`; the unique index settles any race."""
    username = ""
    for _ in range(5):
        username = f"{_username_base(display_name)}.{secrets.randbelow(10_000):04d}"
        async with database.system_session() as db:
            if not await db.fetchval(_USERNAME_TAKEN, username):
                break
    return username


async def provision_child(
    db: Connection,
    database: Database,
    provider: AuthProvider,
    actor: Actor,
    *,
    display_name: str,
    email: str | None,
) -> ProvisionedChild:
    rbac.require(actor, Permission.PROVISION_CHILD)
    username = await new_child_username(database, display_name)
    password = secrets.token_urlsafe(12)
    member = NewMember(
        family_unit_id=actor.family_unit_id,
        role=Role.CHILD,
        display_name=display_name,
        email=normalize_email(email),
        username=username,
    )
    user_id = await create_member(provider, member, password, db)
    return ProvisionedChild(user_id, username, password, display_name, actor.family_unit_id)


# Login, refresh, logout -----------------------------------------------------------------

_LOGIN_CANDIDATE = """
select id, email, username, family_unit_id, role, removed_at
from public.user_profiles
where email = $1 or username = $1
"""


async def login(
    database: Database, provider: AuthProvider, settings: Settings, *, login: str, password: str
) -> IssuedTokens:
    identifier = login.strip().lower()
    async with database.system_session() as db:
        candidate = await db.fetchrow(_LOGIN_CANDIDATE, identifier)
    ok = await provider.check_password(
        user_id=candidate["id"] if candidate else None,
        email=candidate["email"] if candidate else None,
        username=candidate["username"] if candidate else None,
        password=password,
    )
    if not ok or candidate is None or candidate["removed_at"] is not None:
        raise Unauthorized(INVALID_LOGIN)
    async with database.system_session() as db:
        return await _issue_tokens(
            db,
            settings,
            user_id=candidate["id"],
            role=Role(candidate["role"]),
            family_unit_id=candidate["family_unit_id"],
        )


_REFRESH_TOKEN_FOR_UPDATE = """
select t.id, t.session_id, t.expires_at, t.rotated_at, s.revoked_at, s.user_id,
       p.role, p.family_unit_id, p.removed_at
from app.refresh_tokens t
join app.auth_sessions s on s.id = t.session_id
join public.user_profiles p on p.id = s.user_id
where t.token_hash = $1
for update of t, s
"""
_ROTATE = "update app.refresh_tokens set rotated_at = now() where id = $1"
_REVOKE_SESSION = """
update app.auth_sessions set revoked_at = now(), revoked_reason = $2
where id = $1 and revoked_at is null
"""


async def refresh(database: Database, settings: Settings, *, refresh_token: str) -> IssuedTokens:
    """Exchange a refresh token for a new pair, once.

    Presenting a token that was already exchanged means two parties hold it: the
    whole login session is revoked (every token descended from it) and committed
    before the 401 is raised.
    """
    reused = False
    async with database.system_session() as db:
        row = await db.fetchrow(_REFRESH_TOKEN_FOR_UPDATE, hash_token(refresh_token))
        if row is not None and row["revoked_at"] is None and row["removed_at"] is None:
            if row["rotated_at"] is not None:
                await db.execute(_REVOKE_SESSION, row["session_id"], "refresh token reuse")
                reused = True
            elif row["expires_at"] > datetime.now(UTC):
                await db.execute(_ROTATE, row["id"])
                return await _issue_tokens(
                    db,
                    settings,
                    user_id=row["user_id"],
                    role=Role(row["role"]),
                    family_unit_id=row["family_unit_id"],
                    session_id=row["session_id"],
                )
    raise Unauthorized(
        "Refresh token reuse detected; please sign in again" if reused else INVALID_REFRESH
    )


_REVOKE_SESSION_OF_REFRESH_TOKEN = """
update app.auth_sessions set revoked_at = now(), revoked_reason = 'logout'
where revoked_at is null
  and id = (select session_id from app.refresh_tokens where token_hash = $1)
"""


async def logout(db: Connection, actor: Actor, *, refresh_token: str | None) -> None:
    """End the caller's session; the RLS policy limits this to the caller's own sessions."""
    if actor.session_id is not None:
        await db.execute(_REVOKE_SESSION, actor.session_id, "logout")
    if refresh_token:
        await db.execute(_REVOKE_SESSION_OF_REFRESH_TOKEN, hash_token(refresh_token))


# The signed-in member ----------------------------------------------------------------------

_LOAD_ACTOR = """
select p.id, p.family_unit_id, p.role, p.display_name
from public.user_profiles p
where p.id = (select auth.uid())
  and p.removed_at is null
  and ($1::uuid is null or exists (
        select 1 from app.auth_sessions s
        where s.id = $1 and s.user_id = p.id and s.revoked_at is null))
"""


async def load_actor(db: Connection, claims: AccessClaims) -> Actor:
    """The member as the database knows them now; 401 if removed or logged out."""
    row = await db.fetchrow(_LOAD_ACTOR, claims.session_id)
    if row is None:
        # No session id: a Supabase Auth token, whose account has no (or no longer a) profile.
        raise Unauthorized(
            "Token has been revoked" if claims.session_id else "No member profile for this account"
        )
    return Actor(
        id=row["id"],
        family_unit_id=row["family_unit_id"],
        role=Role(row["role"]),
        display_name=row["display_name"],
        session_id=claims.session_id,
    )


_PROFILE = """
select id, email, username, display_name, avatar_url, role, family_unit_id, created_at
from public.user_profiles where id = $1
"""
_UPDATE_PROFILE = """
update public.user_profiles
set display_name = coalesce($2, display_name),
    avatar_url = case when $4 then $3 else avatar_url end,
    updated_at = now()
where id = $1
"""


async def get_profile(db: Connection, actor: Actor) -> dict[str, Any]:
    row = await db.fetchrow(_PROFILE, actor.id)
    if row is None:  # the actor was loaded in this very transaction
        raise Unauthorized("Token has been revoked")
    return dict(row)


async def update_profile(db: Connection, actor: Actor, changes: dict[str, Any]) -> dict[str, Any]:
    """Only the fields sent change; `avatar_url: null` clears the avatar."""
    await db.execute(
        _UPDATE_PROFILE,
        actor.id,
        changes.get("display_name"),
        changes.get("avatar_url"),
        "avatar_url" in changes,
    )
    return await get_profile(db, actor)
