"""Invitations: create, list, look up, accept, revoke.

Tokens are 32 random bytes shown once; only their SHA-256 is stored. A pending
invite past `expires_at` is reported (and, when touched, stored) as `expired`.
"""

from datetime import UTC, datetime
from urllib.parse import urlencode
from uuid import UUID

import asyncpg

from app.adapters.auth.provider import AuthProvider
from app.adapters.cursors import CursorCodec, InvalidCursor
from app.adapters.tokens import hash_token, new_opaque_token
from app.config import Settings
from app.db.postgres import Connection, Database, service_role_within
from app.errors import INVITE_INVALID, Conflict, Invalid, NotFound
from app.models import rbac
from app.models.identity import Actor, Role
from app.schemas.auth import Registered
from app.schemas.families import Invite, InviteCreated, InviteLookup, InvitePage
from app.services import account_service, mail_templates
from app.services.account_service import NewMember
from app.services.mail_outbox import MailOutbox, new_message_id

_EXPIRE_STALE_FOR_EMAIL = """
update public.invitations set status = 'expired'
where family_unit_id = $1 and email = $2 and status = 'pending' and expires_at <= now()
"""
_NEW_INVITE = """
insert into public.invitations (family_unit_id, email, role, token_hash, invited_by)
values ($1, $2, $3, $4, $5)
returning id
"""
# The lifetime is the server's: members' grants do not cover expires_at (an invite that never
# expires, written through the Data API), so it is set as the service, in the same transaction.
_SET_EXPIRY = """
update public.invitations set expires_at = created_at + make_interval(days => $2)
where id = $1
returning id, email, role, expires_at, created_at, app.invite_status(status, expires_at) as status
"""
_LIST_INVITES = """
select id, email, role, expires_at, created_at, app.invite_status(status, expires_at) as status
from public.invitations
where family_unit_id = (select app.current_family_id())
  and ($1::text is null or app.invite_status(status, expires_at) = $1)
order by created_at desc, id
"""
# A scroll's page: the first $4 invites after the position ($2 created_at, $3 id), newest
# first. Keyset from invitations_family_idx (family, created_at desc): no OFFSET.
_SCROLL_INVITES = """
select id, email, role, expires_at, created_at, app.invite_status(status, expires_at) as status
from public.invitations
where family_unit_id = (select app.current_family_id())
  and ($1::text is null or app.invite_status(status, expires_at) = $1)
  and created_at <= $2 and (created_at < $2 or id > $3)
order by created_at desc, id
limit $4
"""
# What cursors of this list are bound to (app.adapters.cursors), and where it starts.
CURSOR_KIND = "invites"
_START = (datetime.fromisoformat("9999-12-31T00:00:00+00:00"), UUID(int=0))
_REVOKE = """
update public.invitations set status = 'revoked'
where id = $1 and status = 'pending' and expires_at > now()
returning id
"""
_VISIBLE_INVITE_STATUS = """
select app.invite_status(status, expires_at) from public.invitations where id = $1
"""
# Both read the inviter as the database knows them now: an invite admits someone only while
# the member who sent it is still an active member of that family allowed to invite that role.
_BY_TOKEN = """
select i.id, i.email, i.role, i.expires_at, f.name as family_name,
       app.invite_status(i.status, i.expires_at) as status,
       p.role as inviter_role,
       (p.family_unit_id = i.family_unit_id and p.removed_at is null) as inviter_active
from public.invitations i
join public.family_units f on f.id = i.family_unit_id
left join public.user_profiles p on p.id = i.invited_by
where i.token_hash = $1
"""
# Who is in a family is decided under the family's row lock, taken before anything else
# (removal and departure lock it, then revoke the leaver's invites). An acceptance takes it
# first too, then the invite's: in the other order it deadlocked with a departure that held
# the family and waited for the invite. FOR SHARE: acceptances into one family do not wait
# for one another, while a removal or departure (FOR NO KEY UPDATE / FOR UPDATE) waits for
# them, or they for it.
_LOCK_FAMILY_OF_INVITE = """
select f.id from public.family_units f
where f.id = (select family_unit_id from public.invitations where token_hash = $1)
for share of f
"""
_LOCK_BY_TOKEN = """
select i.id, i.email, i.role, i.family_unit_id,
       app.invite_status(i.status, i.expires_at) as status,
       p.role as inviter_role,
       (p.family_unit_id = i.family_unit_id and p.removed_at is null) as inviter_active
from public.invitations i left join public.user_profiles p on p.id = i.invited_by
where i.token_hash = $1
for update of i
"""
_MARK_ACCEPTED = """
update public.invitations set status = 'accepted', accepted_at = now(), accepted_by = $2
where id = $1
"""

_NOT_VALID_REASONS = {
    "accepted": "This invite has already been used",
    "expired": "This invite has expired",
    "revoked": "This invite has been revoked",
}


def _status(invite: asyncpg.Record) -> str:
    """The invite's status, where a pending invite whose inviter can no longer invite that
    role (removed, gone, or never allowed) counts as revoked."""
    status: str = invite["status"]
    if status == "pending" and not (
        invite["inviter_active"]
        and rbac.may_invite(Role(invite["inviter_role"]), Role(invite["role"]))
    ):
        return "revoked"
    return status


def mask_email(email: str) -> str:
    """`gina@example.com` → `g***@example.com`: enough to recognise one's own address."""
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}"


def invite_link(settings: Settings, token: str) -> str:
    return f"{settings.frontend_url.rstrip('/')}/accept-invite?{urlencode({'token': token})}"


async def create(
    db: Connection,
    settings: Settings,
    actor: Actor,
    *,
    email: str,
    role: Role,
    outbox: MailOutbox | None = None,
) -> InviteCreated:
    """Create an invite; with an `outbox`, also mail it (queued in this same transaction)."""
    rbac.require_can_invite(actor, role)
    if outbox is not None:
        outbox.require_available()  # refused before anything is written
    email = email.strip().lower()
    token = new_opaque_token()
    await db.execute(_EXPIRE_STALE_FOR_EMAIL, actor.family_unit_id, email)
    try:
        async with db.transaction():
            invite_id = await db.fetchval(
                _NEW_INVITE, actor.family_unit_id, email, role.value, hash_token(token), actor.id
            )
    except asyncpg.UniqueViolationError:
        raise Conflict("A pending invite for this email already exists") from None
    async with service_role_within(db) as privileged:
        row = await privileged.fetchrow(_SET_EXPIRY, invite_id, settings.invite_ttl_days)
    created = InviteCreated.model_validate(
        {**dict(row), "token": token, "invite_link": invite_link(settings, token)}
    )
    if outbox is not None:
        await _queue_invite_mail(db, settings, actor, created)
    return created


_FAMILY_NAME = "select name from public.family_units where id = (select app.current_family_id())"
_QUEUE_INVITE_MAIL = "select app.queue_invite_mail($1, $2, $3, $4, $5)"


async def _queue_invite_mail(
    db: Connection, settings: Settings, actor: Actor, created: InviteCreated
) -> None:
    mail = mail_templates.invite(
        inviter=actor.display_name,
        family=await db.fetchval(_FAMILY_NAME),
        role=created.role,
        link=created.invite_link,
        expires=created.expires_at.astimezone(UTC).strftime("%d %B %Y, %H:%M UTC"),
    )
    # Only the service may queue it (a member's token could otherwise mail text of its own):
    # as service role, still inside this member's transaction, whose claims it checks.
    async with service_role_within(db) as privileged:
        queued = await privileged.fetchval(
            _QUEUE_INVITE_MAIL,
            created.id,
            new_message_id(settings),
            mail.subject,
            mail.text,
            mail.html,
        )
    if not queued:  # the invite was made in this very transaction: a bug if so
        raise RuntimeError("the invite just created could not be mailed")


async def list_invites(db: Connection, actor: Actor, *, status: str | None) -> list[Invite]:
    rbac.require(actor, rbac.Permission.INVITE_MEMBERS)
    return [Invite.model_validate(dict(row)) for row in await db.fetch(_LIST_INVITES, status)]


async def scroll_invites(
    db: Connection,
    actor: Actor,
    *,
    status: str | None,
    limit: int,
    cursor: str,
    cursors: CursorCodec,
) -> InvitePage:
    """One page of a scroll of the family's invites (`cursor` empty to start), newest first.

    Invites made during the scroll come before its position and wait for the next scroll;
    a revoked or accepted one keeps its place (with `status` filtered, it leaves the list).
    """
    rbac.require(actor, rbac.Permission.INVITE_MEMBERS)
    binding = {"status": status}
    started_at, position = cursors.now(), _START
    if cursor:
        opened = cursors.open(cursor, kind=CURSOR_KIND, user_id=actor.id, binding=binding)
        started_at = opened.started_at
        try:
            created, invite_id = opened.state["p"]
            position = (datetime.fromisoformat(created), UUID(invite_id))
        except (KeyError, TypeError, ValueError):
            raise InvalidCursor() from None
    rows = await db.fetch(_SCROLL_INVITES, status, *position, limit + 1)
    invites = [Invite.model_validate(dict(row)) for row in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = invites[-1]
        next_cursor = cursors.seal(
            kind=CURSOR_KIND,
            user_id=actor.id,
            binding=binding,
            state={"p": [last.created_at.isoformat(), str(last.id)]},
            started_at=started_at,
        )
    return InvitePage(items=invites, next_cursor=next_cursor)


async def revoke(db: Connection, actor: Actor, invite_id: UUID) -> None:
    rbac.require(actor, rbac.Permission.INVITE_MEMBERS)
    if await db.fetchval(_REVOKE, invite_id) is not None:
        return
    current_status = await db.fetchval(_VISIBLE_INVITE_STATUS, invite_id)
    if current_status is None:
        raise NotFound("Invite not found")
    raise Conflict(f"Only a pending invite can be revoked; this one is {current_status}")


async def lookup(database: Database, token: str) -> InviteLookup:
    async with database.system_session() as db:
        row = await db.fetchrow(_BY_TOKEN, hash_token(token))
    if row is None:
        raise NotFound("Invite not found")
    # No sign-in here: whoever holds the link learns the family's name and the invite's role,
    # but only enough of the address to recognise their own.
    preview = {key: row[key] for key in ("id", "role", "family_name", "expires_at")}
    preview["email"] = mask_email(row["email"])
    status = preview["status"] = _status(row)
    if status != "pending":
        reason = _NOT_VALID_REASONS[status]
        return InviteLookup.model_validate({"valid": False, "invite": preview, "reason": reason})
    return InviteLookup.model_validate({"valid": True, "invite": preview})


async def accept(
    database: Database,
    provider: AuthProvider,
    settings: Settings,
    *,
    token: str,
    email: str | None,
    password: str,
    display_name: str,
    require_role: Role | None = None,
) -> Registered:
    """Join the inviting family. Single use: the invite row is locked until done.

    `email` must match the invite's; a child registering may leave it out.
    """
    async with account_service.account_creation(database, provider) as creation:
        db = creation.db
        await db.execute(_LOCK_FAMILY_OF_INVITE, hash_token(token))
        invite = await db.fetchrow(_LOCK_BY_TOKEN, hash_token(token))
        if invite is None:
            raise NotFound("Invite not found")
        # Checked under the invite's row lock: a removal revoking it waits for this
        # transaction, or this one sees it revoked (or its inviter removed).
        status = _status(invite)
        if status != "pending":
            raise Invalid(_NOT_VALID_REASONS[status], code=INVITE_INVALID)
        role = Role(invite["role"])
        if require_role is not None and role is not require_role:
            raise Invalid(
                f"This invite is for a {role.value}, not a {require_role.value}",
                code=INVITE_INVALID,
            )
        given_email = account_service.normalize_email(email)
        if given_email is not None and given_email != invite["email"]:
            raise Invalid("Email does not match the invitation", code=INVITE_INVALID)
        if given_email is None and role is not Role.CHILD:
            raise Invalid("Email is required", code=INVITE_INVALID)
        # A child joining without an email logs in with a username, as provisioned ones do.
        username = (
            await account_service.new_child_username(db, display_name)
            if given_email is None
            else None
        )
        member = NewMember(
            family_unit_id=invite["family_unit_id"],
            role=role,
            display_name=display_name,
            email=given_email,
            username=username,
        )
        user_id = await creation.create(member, password)
        await db.execute(_MARK_ACCEPTED, invite["id"], user_id)
        return await account_service.registration_for_new_member(db, settings, user_id, member)
