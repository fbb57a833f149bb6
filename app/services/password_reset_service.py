"""Password reset by email: a single-use link, valid PASSWORD_RESET_TTL_SECONDS (30 minutes).

Asking (`request_reset`) must not tell whether an address has an account, neither by the
answer nor by the time it takes. So both cases do the same work: a token is drawn and
hashed and the mail rendered either way, then **one** statement inserts the token and the
mail into the outbox, and inserts nothing when no member has this address. Nothing waits on
a mail server: the outbox sends later (`mail_outbox`). A provisioned child without an email
has no address to match, so a request can never reach them (an adult provisions a new
login for a child who forgot theirs).

Confirming (`confirm_reset`) spends the token, ends every login of the account, and then
sets the password. That order fails safe: if setting the password failed after the commit,
the old password still works, no old login survives, and a new link is needed.

With Supabase Auth the reset is Supabase's (`ExternalRecovery`): it mails the link and keeps
the token; the confirm endpoint sets the password through it and ends our logins.
"""

from typing import Protocol
from urllib.parse import urlencode
from uuid import UUID

from app.adapters.auth.provider import AuthProvider
from app.adapters.tokens import hash_token, new_opaque_token
from app.config import Settings
from app.db.postgres import Database
from app.errors import Invalid
from app.services import mail_templates, session_service
from app.services.mail_outbox import MailOutbox, new_message_id

RESET_TOKEN_INVALID = "This password-reset link is not valid: it is unknown, used or expired"


class ExternalRecovery(Protocol):
    """Password reset run by an outside sign-in service (Supabase Auth)."""

    async def request(self, email: str, redirect_to: str) -> None: ...

    async def confirm(self, token: str, password: str) -> UUID | None: ...


def reset_link(settings: Settings, token: str | None = None) -> str:
    base = f"{settings.frontend_url.rstrip('/')}/reset-password"
    return f"{base}?{urlencode({'token': token})}" if token else base


# Token and mail in one statement: nothing at all when no member has the address.
_REQUEST = """
with account as (
  select id from public.user_profiles where email = $1 and removed_at is null
), token as (
  insert into app.password_reset_tokens (user_id, token_hash, expires_at)
  select id, $2, now() + make_interval(secs => $3) from account
  returning user_id
)
insert into app.mail_outbox (message_id, kind, to_address, subject, text_body, html_body,
                             send_before)
select $4, 'password_reset', $1, $5, $6, $7, now() + make_interval(secs => $3) from token
"""


async def request_reset(
    database: Database,
    settings: Settings,
    outbox: MailOutbox,
    external: ExternalRecovery | None,
    *,
    email: str,
) -> None:
    """Queue a reset link if a member has this address; the same work if none has."""
    address = email.strip().lower()
    if external is not None:
        await external.request(address, reset_link(settings))
        return
    outbox.require_available()  # production without SMTP_URL: 503 for every address alike
    token = new_opaque_token()
    ttl = settings.password_reset_ttl_seconds
    mail = mail_templates.password_reset(link=reset_link(settings, token), minutes=ttl // 60)
    async with database.system_session() as db:
        await db.execute(
            _REQUEST,
            address,
            hash_token(token),
            ttl,
            new_message_id(settings),
            mail.subject,
            mail.text,
            mail.html,
        )


_SPEND = """
update app.password_reset_tokens t set used_at = now()
from public.user_profiles p
where t.token_hash = $1 and t.used_at is null and t.expires_at > now()
  and p.id = t.user_id and p.removed_at is null
returning t.user_id
"""
# Any other link of the account dies with this one.
_SPEND_OTHERS = """
update app.password_reset_tokens set used_at = now() where user_id = $1 and used_at is null
"""


async def confirm_reset(
    database: Database,
    provider: AuthProvider,
    external: ExternalRecovery | None,
    *,
    token: str,
    new_password: str,
) -> None:
    if external is not None:
        user_id = await external.confirm(token, new_password)
        if user_id is None:
            raise Invalid(RESET_TOKEN_INVALID, code="reset_token_invalid")
        async with database.system_session() as db:
            await session_service.end_all_sessions(db, user_id, reason="password reset")
        return
    async with database.system_session() as db:
        user_id = await db.fetchval(_SPEND, hash_token(token))
        if user_id is None:
            raise Invalid(RESET_TOKEN_INVALID, code="reset_token_invalid")
        await db.execute(_SPEND_OTHERS, user_id)
        await session_service.end_all_sessions(db, user_id, reason="password reset")
    await provider.set_password(user_id, new_password)
