"""Accounts: registration, provisioned children and the member's own profile.

Anonymous operations (registration, invite acceptance) open an
explicitly named system session; everything a signed-in member does runs on the
member's RLS connection handed in by the router.
"""

import dataclasses
import secrets
import unicodedata
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg

from app.adapters.auth.provider import AuthProvider
from app.adapters.storage.base import StorageBackend
from app.config import Settings
from app.db.postgres import Connection, Database, service_role_within
from app.errors import Conflict, Unauthorized
from app.models import rbac
from app.models.identity import Actor, Role
from app.models.rbac import Permission
from app.schemas.auth import Profile, ProfileUpdate, ProvisionedChild, Registered
from app.services import avatar_service, media_urls, session_service
from app.services.avatar_service import AvatarChange


@dataclass(frozen=True)
class NewMember:
    """A profile to create once the account exists."""

    family_unit_id: UUID | None  # None: found a new family
    role: Role
    display_name: str
    email: str | None
    username: str | None = None
    family_name: str | None = None


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
    """Whether any member anywhere has `email`: as the service, since members' grants show
    no email (and their policies only their own family)."""
    if not email:
        return
    async with service_role_within(db) as privileged:
        taken = await privileged.fetchval(_EMAIL_TAKEN, email)
    if taken:
        raise Conflict("An account with this email already exists")


async def create_member(
    provider: AuthProvider,
    member: NewMember,
    password: str,
    db: Connection,
) -> UUID:
    """Create the account, then the profile on `db`; undo the account if that fails.

    `db` is the caller's transaction: a system session for registration, the
    inviting adult's RLS session for provisioning (whose policy then decides). The built-in
    provider writes the account on it too (app.adapters.auth.local), so it commits or rolls
    back with the profile; Supabase's is a remote call that `delete_user` undoes.
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
) -> Registered:
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
        founder = dataclasses.replace(member, family_unit_id=family_id)
        return await registration_for_new_member(creation.db, settings, user_id, founder)


async def registration_for_new_member(
    db: Connection, settings: Settings, user_id: UUID, member: NewMember
) -> Registered:
    """The new member's first login, and what the client is told about their account."""
    assert member.family_unit_id is not None
    signed_in = await session_service.issue_tokens(
        db, settings, user_id=user_id, role=member.role, family_unit_id=member.family_unit_id
    )
    return Registered(
        user_id=user_id,
        email=member.email,
        role=member.role,
        family_unit_id=member.family_unit_id,
        tokens=signed_in.tokens,
        username=member.username,
    )


# Provisioned children -----------------------------------------------------------------


_USERNAME_TAKEN = "select exists (select 1 from public.user_profiles where username = $1)"


def _username_base(display_name: str) -> str:
    ascii_name = unicodedata.normalize("NFKD", display_name).encode("ascii", "ignore").decode()
    letters = "".join(ch for ch in ascii_name.lower() if ch.isalnum())
    return (letters or "child")[:20]


async def new_child_username(db: Connection, display_name: str) -> str:
    """A readable name like `lea.0412`; the unique index settles any race.

    Checked on the caller's connection `db` (as service role: every family's names count),
    never on a second pooled one (docs/security.md, "account creations ... the pool").
    """
    username = ""
    async with service_role_within(db) as privileged:
        for _ in range(5):
            username = f"{_username_base(display_name)}.{secrets.randbelow(10_000):04d}"
            if not await privileged.fetchval(_USERNAME_TAKEN, username):
                break
    return username


async def provision_child(
    db: Connection,
    provider: AuthProvider,
    actor: Actor,
    *,
    display_name: str,
    email: str | None,
) -> ProvisionedChild:
    rbac.require(actor, Permission.PROVISION_CHILD)
    username = await new_child_username(db, display_name)
    password = secrets.token_urlsafe(12)
    member = NewMember(
        family_unit_id=actor.family_unit_id,
        role=Role.CHILD,
        display_name=display_name,
        email=normalize_email(email),
        username=username,
    )
    user_id = await create_member(provider, member, password, db)
    return ProvisionedChild(
        user_id=user_id,
        username=username,
        password=password,
        display_name=display_name,
        family_unit_id=actor.family_unit_id,
    )


# Members' grants show no email, not even their own: app.current_member_email() reads it.
_PROFILE = """
select id, app.current_member_email() as email, username, display_name, avatar_url, role,
       family_unit_id, created_at, app.avatar_path(avatar_media_id) as avatar_path
from public.user_profiles where id = $1
"""
# $4: the avatar changes (to the URL $3 or the uploaded avatar $5, one of them null).
_UPDATE_PROFILE = """
update public.user_profiles
set display_name = coalesce($2, display_name),
    avatar_url = case when $4 then $3 else avatar_url end,
    avatar_media_id = case when $4 then $5 else avatar_media_id end,
    updated_at = now()
where id = $1
"""


@dataclass(frozen=True)
class ProfileUpdated:
    """The profile, and the avatar work to do after the commit."""

    profile: Profile
    avatar: AvatarChange


async def get_profile(db: Connection, actor: Actor, storage: StorageBackend) -> Profile:
    row = await db.fetchrow(_PROFILE, actor.id)
    if row is None:  # the actor was loaded in this very transaction
        raise Unauthorized("Token has been revoked")
    profile: dict[str, Any] = dict(row)
    await media_urls.shape_authors(storage, [profile])
    return Profile.model_validate(profile)


async def update_profile(
    db: Connection,
    actor: Actor,
    changes: ProfileUpdate,
    storage: StorageBackend,
    settings: Settings,
) -> ProfileUpdated:
    """Only the fields sent change; `avatar_url: null` clears the avatar, and
    `avatar_storage_path` makes an uploaded picture the avatar."""
    avatar_changes = changes.model_fields_set & {"avatar_url", "avatar_storage_path"}
    removed: list[str] = []
    media_id = None
    if avatar_changes:
        removed = await avatar_service.current_files(db, "member", actor.id)
        if changes.avatar_storage_path is not None:
            media_id = await avatar_service.register(
                db, actor, storage, settings, changes.avatar_storage_path
            )
    await db.execute(
        _UPDATE_PROFILE,
        actor.id,
        changes.display_name,
        changes.avatar_url,
        bool(avatar_changes),
        media_id,
    )
    return ProfileUpdated(
        profile=await get_profile(db, actor, storage),
        avatar=AvatarChange(media_id=media_id, removed_paths=removed),
    )
