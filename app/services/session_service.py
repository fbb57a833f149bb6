"""Logins: issuing tokens, login, refresh rotation, logout, and who a request's token is.

A login is a row in `app.auth_sessions`; its refresh tokens rotate on every use, and the
access tokens it issues name it (`sid`), so ending the session ends them all at once.
Anonymous operations (login, refresh) open an explicitly named system session.
"""

from datetime import UTC, datetime, timedelta
from uuid import UUID

from app.adapters.auth.provider import AuthProvider
from app.adapters.tokens import AccessClaims, hash_token, issue_access_token, new_opaque_token
from app.config import Settings
from app.db.postgres import Connection, Database
from app.errors import Unauthorized
from app.models.identity import Actor, Role
from app.schemas.auth import SignedIn, Tokens

INVALID_LOGIN = "Invalid email/username or password"
INVALID_REFRESH = "Invalid or expired refresh token"


# Sessions and tokens ----------------------------------------------------------------

_NEW_SESSION = "insert into app.auth_sessions (user_id) values ($1) returning id"
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
) -> SignedIn:
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


async def login(
    database: Database, provider: AuthProvider, settings: Settings, *, login: str, password: str
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
        raise Unauthorized(INVALID_LOGIN)
    async with database.system_session() as db:
        return await issue_tokens(
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


async def refresh(database: Database, settings: Settings, *, refresh_token: str) -> SignedIn:
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
                return await issue_tokens(
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
