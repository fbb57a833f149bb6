"""Supabase Auth behind the `AuthProvider` seam, and Supabase access tokens as bearer tokens.

Accounts and passwords live in Supabase Auth (GoTrue); profiles, families and the backend's own
tokens stay where they are. These GoTrue REST endpoints are used:

    POST   /auth/v1/admin/users                 create a confirmed account   (service-role key)
    DELETE /auth/v1/admin/users/{id}            remove it again; with {"should_soft_delete":
                                                true}, close a departed member's account
    PUT    /auth/v1/admin/users/{id}            set a new password           (service-role key)
    POST   /auth/v1/token?grant_type=password   check a password             (public key)
    POST   /auth/v1/logout?scope=local|global   close the session that check opened; end
                                                every session after a reset
    POST   /auth/v1/recover                     mail a password-reset link   (public key)
    PUT    /auth/v1/user                        set the password with the link's token

Why plain httpx rather than the `supabase` package's Auth client: its sign-in methods are
stateful (they store the session in the client and, in `supabase.Client`, switch the headers the
other sub-clients send to the signed-in user's token), which is wrong for one server-side client
shared by every request; and we must tell "Supabase is down" (503) from "Supabase said no" (a 4xx
of ours) precisely, which the package folds into AuthRetryableError / AuthApiError. A few
endpoints with explicit status handling are simpler than working around both. Storage is plain
httpx too, over the same client (`app.adapters.storage.supabase`); the package is not a dependency.

Error bodies come in two shapes depending on the GoTrue version, and both are understood:
`{"code": 422, "error_code": "email_exists", "msg": "..."}` (and with the 2024-01-01 API version
`{"code": "email_exists", "message": "..."}`), and the OAuth form of older versions,
`{"error": "invalid_grant", "error_description": "Invalid login credentials"}`.
"""

import asyncio
import logging
import secrets
import uuid
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import httpx

from app.adapters.supabase.client import Supabase
from app.adapters.supabase.tokens import (
    ExpiredSupabaseToken,
    InvalidSupabaseToken,
    SupabaseTokenVerifier,
    SupabaseUnavailable,
    looks_like_supabase_token,
)
from app.adapters.tokens import AccessClaims
from app.errors import (
    TOKEN_EXPIRED,
    Conflict,
    ServiceUnavailable,
    Unauthorized,
    UnprocessableInput,
)

logger = logging.getLogger(__name__)

# Supabase Auth needs an email (or a phone) for every account. A provisioned child without one
# gets an address under a reserved top-level domain (RFC 2606 `.invalid`): it can never receive
# mail, so no password-reset or notice can reach a stranger. It is derived from the username at
# login time and never stored in our profile or shown to anyone.
CHILD_EMAIL_DOMAIN = "children.timeless.invalid"
# Generated usernames are `letters.0000`; a hyphen never occurs in one, so this address cannot
# be a member's. An unknown login is checked against it so that it costs what a wrong password
# costs: GoTrue refuses an address it does not know before hashing anything, so the address
# is a real account — the decoy — created once with a random password that is discarded at
# once: GoTrue then hashes the password given, as for a member, and nobody can ever sign in.
_DECOY_ACCOUNT = f"no-such-member@{CHILD_EMAIL_DOMAIN}"

# Marks accounts this backend created (app_metadata is writable only with the service-role key),
# so an operator can tell them from any created in the dashboard; see docs/supabase.md.
MANAGED_BY = {"managed_by": "timeless-love"}
_DECOY_METADATA = {**MANAGED_BY, "decoy": True}

UNAVAILABLE = "The sign-in service is temporarily unavailable; please retry"
_RETRY_AFTER = {"Retry-After": "5"}
_EMAIL_TAKEN_CODES = frozenset({"email_exists", "user_already_exists"})
# The address (or another field) is not acceptable to Supabase: the client's to fix.
_REFUSED_INPUT_CODES = frozenset({"email_address_invalid", "validation_failed"})
# Supabase Auth is set up so that email + password sign-in cannot work: the operator's to fix.
_MISCONFIGURED_CODES = frozenset({"email_provider_disabled", "provider_disabled"})


def child_login_email(username: str) -> str:
    """The Supabase Auth address of a provisioned child who has no email of their own."""
    return f"{username}@{CHILD_EMAIL_DOMAIN}"


@dataclass(frozen=True)
class GoTrueError:
    status: int
    code: str | None
    message: str


def gotrue_error(response: httpx.Response) -> GoTrueError:
    """The status, machine code and message of a GoTrue error response, whatever its shape."""
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return GoTrueError(response.status_code, None, "")
    code = body.get("error_code")
    if not isinstance(code, str):
        # 2024-01-01 API version: "code" is the string; before, it is the HTTP status.
        code = body.get("code") if isinstance(body.get("code"), str) else body.get("error")
    message = body.get("msg") or body.get("message") or body.get("error_description") or ""
    return GoTrueError(
        response.status_code,
        code if isinstance(code, str) else None,
        message if isinstance(message, str) else "",
    )


class SupabaseAuthProvider:
    """Accounts in Supabase Auth; see the module docstring for the endpoints and error shapes.

    Only the compensating delete is retried: creating an account is not idempotent (a retry
    after a lost response would meet our own account and report a false conflict), and a
    password check that fails is reported at once rather than spending Supabase's rate limit.
    """

    # Pauses between attempts to delete an account again; the delete is idempotent.
    delete_retry_delays: tuple[float, ...] = (0.2, 1.0)

    def __init__(self, supabase: Supabase) -> None:
        self._config = supabase.config
        self._http = supabase.http
        self._decoy_ready = False
        self._decoy_lock = asyncio.Lock()

    async def create_user(self, *, email: str | None, username: str | None, password: str) -> UUID:
        if email:
            address = email
        elif username:
            address = child_login_email(username)
        else:
            # Neither to sign in with: mirror the built-in provider, which stores no email.
            address = f"{uuid.uuid4().hex}@{CHILD_EMAIL_DOMAIN}"
        body = {
            "email": address,
            "password": password,
            # The family vouches for the address (or it is a child's synthetic one): no mail.
            "email_confirm": True,
            "user_metadata": {"username": username} if username else {},
            "app_metadata": MANAGED_BY,
        }
        response = await self._send(
            "POST", "/admin/users", "create an account", json=body, headers=self._admin
        )
        if response.is_success:
            return _user_id(response, "create an account")

        error = gotrue_error(response)
        if error.code in _EMAIL_TAKEN_CODES or (
            error.status == 422 and "already" in error.message.lower()  # before error codes
        ):
            # Our own email check passed, so no profile has this address: Supabase holds an
            # account no member owns (docs/supabase.md, "When something is wrong").
            logger.warning("Supabase Auth already has an account for an unused email")
            raise Conflict("An account with this email already exists")
        if error.code == "weak_password":
            raise UnprocessableInput(
                f"Password rejected: {error.message or 'too weak'}", loc=("body", "password")
            )
        if error.code in _REFUSED_INPUT_CODES:
            raise UnprocessableInput(
                f"The sign-in service refused this account: {error.message or error.code}"
            )
        raise self._unavailable(error, "create an account")

    async def delete_user(self, user_id: UUID) -> None:
        attempts = (0.0, *self.delete_retry_delays)
        outcome = ""
        for pause in attempts:
            if pause:
                await asyncio.sleep(pause)
            try:
                response = await self._http.delete(
                    f"{self._config.auth_url}/admin/users/{user_id}", headers=self._admin
                )
            except httpx.HTTPError as exc:
                outcome = type(exc).__name__
                continue
            if response.is_success or response.status_code == 404:  # 404: already gone
                return
            outcome = f"HTTP {response.status_code}"
            if response.status_code < 500 and response.status_code != 429:
                break  # a refusal that retrying will not change
        # The account outlives its failed registration. Its id is not a secret; the operator
        # needs it to remove the account (docs/supabase.md, "When something is wrong").
        logger.error(
            "Could not delete Supabase Auth user %s after a failed registration",
            user_id,
            extra={"outcome": outcome},
        )
        raise ServiceUnavailable(UNAVAILABLE, headers=_RETRY_AFTER)

    async def set_password(self, user_id: UUID, password: str) -> None:
        response = await self._send(
            "PUT",
            f"/admin/users/{user_id}",
            "set a password",
            json={"password": password},
            headers=self._admin,
        )
        if response.is_success:
            return
        error = gotrue_error(response)
        if error.code == "weak_password" or (error.status == 422 and "password" in error.message):
            raise UnprocessableInput(f"Password rejected: {error.message or 'too weak'}")
        raise self._unavailable(error, "set a password")

    async def close_account(self, user_id: UUID) -> None:
        # GoTrue's soft delete (internal/api/admin.go adminUserDelete, models.User
        # SoftDeleteUser): email and phone obfuscated, password, tokens, identities, sessions
        # and refresh tokens gone, deleted_at set; the row stays for the profile's key.
        response = await self._send(
            "DELETE",
            f"/admin/users/{user_id}",
            "close an account",
            json={"should_soft_delete": True},
            headers=self._admin,
        )
        if response.is_success or response.status_code == 404:  # 404: already gone
            return
        raise self._unavailable(gotrue_error(response), "close an account")

    async def check_password(
        self, *, user_id: UUID | None, email: str | None, username: str | None, password: str
    ) -> bool:
        address = email or (child_login_email(username) if username else None)
        if user_id is None or address is None:
            # No such member. Ask anyway, about the decoy account (see _DECOY_ACCOUNT), so that
            # an unknown login takes as long as a wrong password and reveals no member.
            await self._ensure_decoy()
            address = _DECOY_ACCOUNT
        response = await self._send(
            "POST",
            "/token",
            "check a password",
            params={"grant_type": "password"},
            json={"email": address, "password": password},
            headers=self._config.public_headers(),
        )
        if not response.is_success:
            error = gotrue_error(response)
            if error.status in (400, 422) and error.code not in _MISCONFIGURED_CODES:
                # GoTrue's "no": wrong password or unknown address (invalid_credentials, or
                # invalid_grant before error codes), unconfirmed email, malformed address: all
                # one answer. A bad API key is a 401 from the gateway and is not among them.
                return False
            raise self._unavailable(error, "check a password")

        session = _json_object(response, "check a password")
        await self._close_session(session.get("access_token"))
        signed_in = _user_id_from(session.get("user"))
        if user_id is None or signed_in != user_id:
            if user_id is not None:
                # The profile's address belongs to another Supabase account: refuse, loudly.
                logger.error("Supabase Auth signed in a different account than the profile's")
            return False
        return True

    async def _ensure_decoy(self) -> None:
        """Create the decoy account once per process (it may exist already: fine)."""
        if self._decoy_ready:
            return
        async with self._decoy_lock:
            if self._decoy_ready:
                return
            body = {
                "email": _DECOY_ACCOUNT,
                # Never stored, logged or returned: nobody can sign in as the decoy.
                "password": secrets.token_urlsafe(48),
                "email_confirm": True,
                "app_metadata": _DECOY_METADATA,
            }
            try:
                response = await self._send(
                    "POST",
                    "/admin/users",
                    "create the decoy account",
                    json=body,
                    headers=self._admin,
                )
            except ServiceUnavailable:
                return  # try again at the next unknown login; this one is refused as usual
            error = None if response.is_success else gotrue_error(response)
            if error is None or error.code in _EMAIL_TAKEN_CODES or error.status == 422:
                self._decoy_ready = True
            else:
                logger.warning(
                    "Could not create the Supabase Auth decoy account; unknown logins are "
                    "answered faster than wrong passwords until it exists",
                    extra={"status": error.status, "error_code": error.code},
                )

    # --- plumbing ---------------------------------------------------------------------------

    @property
    def _admin(self) -> dict[str, str]:
        return self._config.service_headers()

    async def _send(self, method: str, path: str, operation: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._http.request(method, f"{self._config.auth_url}{path}", **kwargs)
        except httpx.HTTPError as exc:  # timeouts, refused connections, TLS failures
            logger.warning(
                "Supabase Auth unreachable",
                extra={"operation": operation, "error": type(exc).__name__},
            )
            raise ServiceUnavailable(UNAVAILABLE, headers=_RETRY_AFTER) from None

    async def _close_session(self, access_token: object) -> None:
        """The password grant opened a Supabase session nobody will use; end it (best effort)."""
        if not isinstance(access_token, str) or not access_token:
            return
        headers = {**self._config.public_headers(), "Authorization": f"Bearer {access_token}"}
        try:
            response = await self._http.post(
                f"{self._config.auth_url}/logout", params={"scope": "local"}, headers=headers
            )
        except httpx.HTTPError as exc:
            logger.info("Could not close a Supabase session", extra={"error": type(exc).__name__})
            return
        if not response.is_success:
            logger.info(
                "Could not close a Supabase session", extra={"status": response.status_code}
            )

    def _unavailable(self, error: GoTrueError, operation: str) -> ServiceUnavailable:
        """Any answer we cannot act on: the client gets a 503, the log says why."""
        extra = {"operation": operation, "status": error.status, "error_code": error.code}
        if error.code in _MISCONFIGURED_CODES:
            logger.error(
                "Supabase Auth has email sign-in turned off; turn the Email provider on",
                extra=extra,
            )
        elif error.status in (401, 403):
            logger.error(
                "Supabase Auth refused the configured API key; check SUPABASE_SERVICE_ROLE_KEY "
                "and SUPABASE_ANON_KEY",
                extra=extra,
            )
        elif error.status == 429:
            logger.warning(
                "Supabase Auth rate limit reached; every sign-in comes from this server's "
                "address, so raise the project's limits (docs/supabase.md)",
                extra=extra,
            )
        else:
            logger.warning("Supabase Auth failed", extra=extra)
        return ServiceUnavailable(UNAVAILABLE, headers=_RETRY_AFTER)


def _json_object(response: httpx.Response, operation: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        logger.warning("Supabase Auth sent an unreadable answer", extra={"operation": operation})
        raise ServiceUnavailable(UNAVAILABLE, headers=_RETRY_AFTER)
    return body


def _user_id_from(user: object) -> UUID | None:
    if not isinstance(user, dict):
        return None
    try:
        return UUID(str(user.get("id")))
    except ValueError:
        return None


def _user_id(response: httpx.Response, operation: str) -> UUID:
    body = _json_object(response, operation)
    # The admin API answers with the user object itself; some versions wrap it in {"user": ...}.
    user_id = _user_id_from(body) or _user_id_from(body.get("user"))
    if user_id is None:
        logger.warning("Supabase Auth answered without a user id", extra={"operation": operation})
        raise ServiceUnavailable(UNAVAILABLE, headers=_RETRY_AFTER)
    return user_id


class SupabaseRecovery:
    """Password reset by Supabase Auth: it mails the link and keeps the token.

    `request` asks GoTrue to mail a recovery link (`POST /recover`, which answers 200 `{}`
    for unknown addresses too, internal/api/recover.go). The link signs the person in to
    Supabase and lands on `redirect_to` with a recovery access token, which the client sends
    to our confirm endpoint; `confirm` sets the password with it (`PUT /user`,
    internal/api/user.go UserUpdate) and then ends every Supabase session of the account
    (`POST /logout?scope=global`). Our own logins are ended by the caller.
    """

    def __init__(self, supabase: Supabase) -> None:
        self._config = supabase.config
        self._http = supabase.http

    async def request(self, email: str, redirect_to: str) -> None:
        if email.endswith(f"@{CHILD_EMAIL_DOMAIN}"):
            return  # a provisioned child's synthetic address: nobody reads it
        response = await self._send(
            "POST",
            "/recover",
            params={"redirect_to": redirect_to},
            json={"email": email},
            headers=self._config.public_headers(),
        )
        if response.is_success:
            return
        error = gotrue_error(response)
        if error.status < 500 and error.status not in (401, 403):
            # A refusal about this address (429 over_email_send_rate_limit exists only for
            # known accounts; 422 for an address GoTrue finds invalid): the caller's answer
            # must not differ, so it is logged and swallowed.
            logger.info(
                "Supabase Auth did not send a recovery mail",
                extra={"status": error.status, "error_code": error.code},
            )
            return
        raise _recovery_unavailable(error)

    async def confirm(self, token: str, password: str) -> UUID | None:
        """The account whose password is now `password`; None for a token GoTrue refuses."""
        headers = {**self._config.public_headers(), "Authorization": f"Bearer {token}"}
        response = await self._send("PUT", "/user", json={"password": password}, headers=headers)
        if not response.is_success:
            error = gotrue_error(response)
            if error.code == "weak_password":
                raise UnprocessableInput(f"Password rejected: {error.message or 'too weak'}")
            if error.code == "same_password":
                raise UnprocessableInput("Choose a password different from the current one")
            if error.status in (400, 401, 403, 404):
                return None  # bad_jwt, session_not_found, user_not_found, ...
            raise _recovery_unavailable(error)
        user_id = _user_id(response, "set a password")
        try:
            await self._http.post(
                f"{self._config.auth_url}/logout", params={"scope": "global"}, headers=headers
            )
        except httpx.HTTPError as exc:
            logger.warning("Could not end Supabase sessions", extra={"error": type(exc).__name__})
        return user_id

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._http.request(method, f"{self._config.auth_url}{path}", **kwargs)
        except httpx.HTTPError as exc:
            logger.warning("Supabase Auth unreachable", extra={"error": type(exc).__name__})
            raise ServiceUnavailable(UNAVAILABLE, headers=_RETRY_AFTER) from None


def _recovery_unavailable(error: GoTrueError) -> ServiceUnavailable:
    logger.warning(
        "Supabase Auth failed a password reset",
        extra={"status": error.status, "error_code": error.code},
    )
    return ServiceUnavailable(UNAVAILABLE, headers=_RETRY_AFTER)


class SupabaseAccessTokens:
    """`context.external_tokens`: a Supabase access token as a bearer token.

    Returns None for tokens that do not claim to come from this project's Auth server, so the
    backend's own decoder handles them. A Supabase token is verified locally (JWKS or the legacy
    secret); role and family are left to `auth_service.load_actor`, which reads them from the
    profile in the request's own transaction; a valid token without a profile is a 401 there.
    """

    def __init__(self, verifier: SupabaseTokenVerifier, supabase_url: str) -> None:
        self._verifier = verifier
        self._supabase_url = supabase_url

    async def __call__(self, token: str) -> AccessClaims | None:
        if not looks_like_supabase_token(token, self._supabase_url):
            return None
        try:
            claims = await self._verifier.verify(token)
        except ExpiredSupabaseToken:
            raise Unauthorized("Token has expired", code=TOKEN_EXPIRED) from None
        except InvalidSupabaseToken:
            raise Unauthorized("Invalid token") from None
        except SupabaseUnavailable:
            logger.warning("Supabase signing keys unavailable; refusing a Supabase token")
            raise ServiceUnavailable(UNAVAILABLE, headers=_RETRY_AFTER) from None
        return AccessClaims(
            user_id=claims.user_id,
            role=None,
            family_unit_id=None,
            # Our login sessions do not exist for Supabase tokens: load_actor skips that check.
            session_id=None,
            jti=claims.session_id or "",
            expires_at=claims.expires_at,
        )

    async def aclose(self) -> None:
        await self._verifier.aclose()
