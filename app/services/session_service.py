"""Logins: issuing tokens, login, refresh rotation, logout, and who a request's token is.

A login is a row in `app.auth_sessions`; its refresh tokens rotate on every use, and the
access tokens it issues name it (`sid`), so ending the session ends them all at once.
Anonymous operations (login, refresh) open an explicitly named system session.
"""

from datetime import UTC, datetime, timedelta
from functools import partial
from uuid import UUID

from app.adapters.auth.provider import AuthProvider
from app.adapters.tokens import AccessClaims, hash_token, issue_access_token, new_opaque_token
from app.config import Settings
from app.db.postgres import Connection, Database, MemberSession, Record
from app.errors import INVALID_CREDENTIALS, TOKEN_REVOKED, Invalid, NotFound, Unauthorized
from app.models.identity import Actor, Role
from app.schemas.auth import Session, SignedIn, Tokens

INVALID_LOGIN = "Invalid email/username or password"
INVALID_REFRESH = "Invalid or expired refresh token"
WRONG_CURRENT_PASSWORD = "The current password is not right"
SESSION_NOT_FOUND = "Login not found"
# Kept as sent, cut to what the column holds.
MAX_USER_AGENT = 512


# Sessions and tokens ----------------------------------------------------------------

_NEW_SESSION = """
insert into app.auth_sessions (user_id, user_agent) values ($1, $2) returning id
"""
_NEW_REFRESH_TOKEN = """
insert into app.refresh_tokens (session_id, token_hash, expires_at) values ($1, $2, $3)
"""


async def issue_tokens(
    db: Connection,
    settings: Settings,
    *,
    user_id: UUID,
    role: Role,
    family_unit_id: UUID,
    session_id: UUID | None = None,
    user_agent: str | None = None,
) -> SignedIn:
    if session_id is None:
        session_id = await db.fetchval(_NEW_SESSION, user_id, clean_user_agent(user_agent))
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
    tokens = Tokens(
        access_token=access_token,
        refresh_token=refresh_token,
        expires_in=settings.access_token_ttl_seconds,
    )
    return SignedIn(tokens=tokens, user_id=user_id, family_unit_id=family_unit_id)


# Login, refresh, logout -----------------------------------------------------------------

_LOGIN_CANDIDATE = """
select id, email, username, family_unit_id, role, removed_at
from public.user_profiles
where email = $1 or username = $1
"""


def clean_user_agent(user_agent: str | None) -> str | None:
    """What GET /auth/sessions shows: printable, at most MAX_USER_AGENT characters."""
    if not user_agent:
        return None
    printable = "".join(ch for ch in user_agent if ch.isprintable())
    return printable[:MAX_USER_AGENT] or None


async def login(
    database: Database,
    provider: AuthProvider,
    settings: Settings,
    *,
    login: str,
    password: str,
    user_agent: str | None = None,
) -> SignedIn:
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
        raise Unauthorized(INVALID_LOGIN, code=INVALID_CREDENTIALS)
    async with database.system_session() as db:
        return await issue_tokens(
            db,
            settings,
            user_id=candidate["id"],
            role=Role(candidate["role"]),
            family_unit_id=candidate["family_unit_id"],
            user_agent=user_agent,
        )


_REFRESH_TOKEN_FOR_UPDATE = """
select t.id, t.session_id, t.expires_at, t.rotated_at, s.revoked_at, s.user_id,
       p.role, p.family_unit_id, p.removed_at,
       t.rotated_at > now() - make_interval(secs => $2) as within_reuse_interval
from app.refresh_tokens t
join app.auth_sessions s on s.id = t.session_id
join public.user_profiles p on p.id = s.user_id
where t.token_hash = $1
for update of t, s
"""
_ROTATE = "update app.refresh_tokens set rotated_at = now() where id = $1"
_TOUCH_ON_REFRESH = """
update app.auth_sessions set last_used_at = now(), user_agent = coalesce($2, user_agent)
where id = $1
"""
_REVOKE_SESSION = """
update app.auth_sessions set revoked_at = now(), revoked_reason = $2
where id = $1 and revoked_at is null
"""


async def refresh(
    database: Database, settings: Settings, *, refresh_token: str, user_agent: str | None = None
) -> SignedIn:
    """Exchange a refresh token for a new pair, once.

    Presenting a token that was already exchanged means two parties hold it: the
    whole login session is revoked (every token descended from it) and committed
    before the 401 is raised. Except within `refresh_reuse_interval_seconds` of its
    rotation: several tabs of one browser share one refresh token and refresh at the
    same moment, so each of them gets its own valid pair for the same login (the row
    lock makes them take turns; the first rotates, the others find it just rotated).
    """
    reused = False
    async with database.system_session() as db:
        row = await db.fetchrow(
            _REFRESH_TOKEN_FOR_UPDATE,
            hash_token(refresh_token),
            float(settings.refresh_reuse_interval_seconds),
        )
        if row is not None and row["revoked_at"] is None and row["removed_at"] is None:
            if row["rotated_at"] is not None and not row["within_reuse_interval"]:
                await db.execute(_REVOKE_SESSION, row["session_id"], "refresh token reuse")
                reused = True
            elif row["expires_at"] > datetime.now(UTC):
                if row["rotated_at"] is None:
                    await db.execute(_ROTATE, row["id"])
                await db.execute(_TOUCH_ON_REFRESH, row["session_id"], clean_user_agent(user_agent))
                return await issue_tokens(
                    db,
                    settings,
                    user_id=row["user_id"],
                    role=Role(row["role"]),
                    family_unit_id=row["family_unit_id"],
                    session_id=row["session_id"],
                )
    if reused:
        raise Unauthorized("Refresh token reuse detected; please sign in again", code=TOKEN_REVOKED)
    if row is not None and (row["revoked_at"] is not None or row["removed_at"] is not None):
        raise Unauthorized("This login has ended; please sign in again", code=TOKEN_REVOKED)
    raise Unauthorized(INVALID_REFRESH)


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


# Every login of an account ----------------------------------------------------------------

# The caller's logins that can still be used: not ended, and with a refresh token alive.
_SESSIONS = """
select s.id, s.created_at, s.last_used_at, s.user_agent
from app.auth_sessions s
where s.user_id = (select auth.uid()) and s.revoked_at is null
  and exists (select 1 from app.refresh_tokens t
              where t.session_id = s.id and t.rotated_at is null and t.expires_at > now())
order by s.created_at desc, s.id
"""
# The RLS policy limits these to the caller's own sessions as well.
_END_OWN_SESSION = """
update app.auth_sessions set revoked_at = now(), revoked_reason = 'ended by its owner'
where id = $1 and user_id = (select auth.uid()) and revoked_at is null
returning id
"""
_END_ALL_SESSIONS = """
update app.auth_sessions set revoked_at = now(), revoked_reason = $3
where user_id = $1 and revoked_at is null and ($2::uuid is null or id <> $2)
"""
# The caller's own (members' grants show no email; app.current_member_email() reads it).
_PROFILE_LOGIN = """
select app.current_member_email() as email, username from public.user_profiles where id = $1
"""


async def list_sessions(db: Connection, actor: Actor) -> list[Session]:
    rows = await db.fetch(_SESSIONS)
    return [
        Session.model_validate({**dict(row), "current": row["id"] == actor.session_id})
        for row in rows
    ]


async def end_session(db: Connection, actor: Actor, session_id: UUID) -> None:
    """End one of the caller's logins (maybe this one); another member's is a 404."""
    if await db.fetchval(_END_OWN_SESSION, session_id) is None:
        raise NotFound(SESSION_NOT_FOUND)


async def end_all_sessions(
    db: Connection, user_id: UUID, *, reason: str, keep: UUID | None = None
) -> None:
    """End every login of the account (but `keep`): its access and refresh tokens die."""
    await db.execute(_END_ALL_SESSIONS, user_id, keep, reason)


async def logout_all(db: Connection, actor: Actor) -> None:
    await end_all_sessions(db, actor.id, reason="logout everywhere")


async def change_password(
    db: Connection,
    provider: AuthProvider,
    actor: Actor,
    *,
    current_password: str,
    new_password: str,
) -> None:
    """Replace the password; every other login ends, this one stays.

    A wrong current password is a 400 (`invalid_credentials`), not a 401: the session that
    asked is fine, and a client must not take it for one that ended.
    """
    profile = await db.fetchrow(_PROFILE_LOGIN, actor.id)
    ok = await provider.check_password(
        user_id=actor.id,
        email=profile["email"] if profile else None,
        username=profile["username"] if profile else None,
        password=current_password,
    )
    if not ok:
        raise Invalid(WRONG_CURRENT_PASSWORD, code=INVALID_CREDENTIALS)
    await provider.set_password(actor.id, new_password)
    # A Supabase token names no login of ours: then every one of ours ends.
    await end_all_sessions(db, actor.id, reason="password changed", keep=actor.session_id)


# The signed-in member ----------------------------------------------------------------------

# The member as the database knows them now, in the statement that opens the request's
# transaction as `authenticated` (supabase/migrations/..._member_session.sql holds the lookup:
# not removed, the login not ended, last_used_at moved on at most once per $3 seconds).
_ENTER_AS_MEMBER = (
    "select id, family_unit_id, role, display_name from app.enter_member_session($1, $2, $3)"
)


def member_session(
    database: Database, claims: AccessClaims, *, touch_after_seconds: float = 300
) -> MemberSession[Actor]:
    """One request's transaction as the member (row level security applies), and the member;
    401 if removed or logged out. Commits when the block ends without an exception."""
    return database.member_session(
        claims.database_claims(),
        _ENTER_AS_MEMBER,
        claims.session_id,
        touch_after_seconds,
        member=partial(_actor, claims=claims),
    )


async def load_member(database: Database, claims: AccessClaims) -> Actor:
    """The member alone, in a short transaction of its own (a stream must not hold one)."""
    async with member_session(database, claims) as (_, actor):
        return actor


def _actor(row: Record | None, *, claims: AccessClaims) -> Actor:
    if row is None:
        if claims.session_id is not None:
            # Our own token: its login ended (logout, reuse) or its member was removed.
            raise Unauthorized("Token has been revoked", code=TOKEN_REVOKED)
        # No session id: a Supabase Auth token, whose account has no (or no longer a) profile;
        # row level security hides a removed member's profile, so the two read alike.
        raise Unauthorized("No member profile for this account")
    return Actor(
        id=row["id"],
        family_unit_id=row["family_unit_id"],
        role=Role(row["role"]),
        display_name=row["display_name"],
        session_id=claims.session_id,
    )
