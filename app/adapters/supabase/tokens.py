"""Local verification of Supabase Auth access tokens.

A React app signed in with supabase-js sends its Supabase access token as a bearer token. We
verify it here without a round trip to Supabase: asymmetric tokens (ES256 / RS256) against the
project's JWKS, legacy HS256 tokens against the project's JWT secret.

The accepted algorithm is always derived from the key we hold (EC P-256 -> ES256, RSA ->
RS256, the shared secret -> HS256), never from the token alone: a token cannot talk us into
checking an HMAC against a public key's text, nor into `alg: none`.
"""

import asyncio
import logging
import math
from dataclasses import dataclass
from time import monotonic, time
from typing import Any
from uuid import UUID

import httpx
from jose import jwk, jwt
from jose.backends.base import Key
from jose.exceptions import ExpiredSignatureError, JOSEError

logger = logging.getLogger(__name__)

JWKS_PATH = "/auth/v1/.well-known/jwks.json"

# Real access tokens are well under this; refusing bigger input up front bounds the base64 and
# JSON work an anonymous caller can make us do.
_MAX_TOKEN_CHARS = 16 * 1024

# Once a fetch has failed, retry sooner than refetch_interval: a blip at start-up should not
# turn every Supabase sign-in into a 503 for half a minute, yet the lock plus this pause still
# keeps a flood of requests from turning into a flood of fetches.
_RETRY_AFTER_FAILURE_SECONDS = 5.0

# The only pairings Supabase signing keys use; anything else in a JWKS is not for us.
_ALGORITHM_FOR_KEY: dict[tuple[Any, Any], str] = {("EC", "P-256"): "ES256", ("RSA", None): "RS256"}
_HMAC_ALGORITHM = "HS256"


class InvalidSupabaseToken(Exception):
    """The bearer token is not a valid access token of this Supabase project."""

    def __init__(self, reason: str = "invalid token") -> None:
        # Only fixed reasons from this module end up here, never token text: the message may
        # be logged or returned to the caller.
        super().__init__(reason)


class ExpiredSupabaseToken(InvalidSupabaseToken):
    """A valid token of this project, past its `exp`: the client refreshes and retries."""

    def __init__(self) -> None:
        super().__init__("token has expired")


class SupabaseUnavailable(Exception):
    """The project's signing keys are needed but could not be fetched."""


@dataclass(frozen=True)
class SupabaseClaims:
    user_id: UUID
    email: str | None
    role: str | None
    session_id: str | None
    expires_at: int


@dataclass(frozen=True)
class _VerificationKey:
    key: Key
    algorithm: str


def _issuer_for(supabase_url: str) -> str:
    return f"{supabase_url.rstrip('/')}/auth/v1"


def looks_like_supabase_token(token: str, supabase_url: str) -> bool:
    """Unverified peek: does the token claim to come from this project's Auth server?

    Only for routing a bearer token to the right verifier; the answer proves nothing.
    """
    if not isinstance(token, str) or len(token) > _MAX_TOKEN_CHARS:
        return False
    try:
        claims = jwt.get_unverified_claims(token)
    except (JOSEError, ValueError, TypeError):
        return False
    return isinstance(claims, dict) and claims.get("iss") == _issuer_for(supabase_url)


def _verification_key(jwk_dict: Any) -> tuple[str, _VerificationKey] | None:
    """Turn one JWKS entry into (kid, key), or None if it is not a usable signing key."""
    if not isinstance(jwk_dict, dict):
        return None
    kid = jwk_dict.get("kid")
    kty = jwk_dict.get("kty")
    if not isinstance(kid, str) or not kid:
        return None
    algorithm = _ALGORITHM_FOR_KEY.get((kty, jwk_dict.get("crv") if kty == "EC" else None))
    if algorithm is None:
        return None
    # A key published for another purpose or another algorithm must not verify our tokens.
    if jwk_dict.get("alg", algorithm) != algorithm or jwk_dict.get("use", "sig") != "sig":
        return None
    key_ops = jwk_dict.get("key_ops")
    if key_ops is not None and (not isinstance(key_ops, list) or "verify" not in key_ops):
        return None
    try:
        key = jwk.construct(jwk_dict, algorithm)
    except (JOSEError, ValueError, TypeError):
        logger.warning("Ignoring malformed Supabase signing key %r", kid)
        return None
    if not key.is_public():
        # A private key in a public key set is a leak on Supabase's side; refuse to rely on it.
        return None
    return kid, _VerificationKey(key, algorithm)


class SupabaseTokenVerifier:
    """Verifies Supabase access tokens locally; one instance per process, shared by requests.

    `leeway` is the clock skew, in seconds, tolerated on `exp`, `nbf` and `iat`. `cache_ttl`
    bounds how long a fetched key set is trusted, so that a key revoked in the Supabase
    dashboard stops verifying tokens (Supabase itself serves the JWKS with a ten-minute cache
    lifetime); None trusts it until a token with an unknown `kid` shows up.
    """

    def __init__(
        self,
        supabase_url: str,
        *,
        jwt_secret: str | None,
        audience: str = "authenticated",
        http: httpx.AsyncClient | None = None,
        refetch_interval: float = 30.0,
        timeout: float = 5.0,
        leeway: int = 0,
        cache_ttl: float | None = 600.0,
    ) -> None:
        base_url = supabase_url.rstrip("/")
        self._jwks_url = f"{base_url}{JWKS_PATH}"
        self._issuer = _issuer_for(base_url)
        self._audience = audience
        self._leeway = leeway
        self._refetch_interval = refetch_interval
        self._cache_ttl = cache_ttl
        self._timeout = timeout
        self._owns_http = http is None
        self._http = http if http is not None else httpx.AsyncClient(timeout=timeout)
        self._secret_key: Key | None = None
        if jwt_secret:
            # Built explicitly so jose never guesses what kind of key a string is (it would
            # parse a JSON-looking string as a JWK set).
            try:
                self._secret_key = jwk.construct(jwt_secret, _HMAC_ALGORITHM)
            except JOSEError:
                raise ValueError("jwt_secret is not usable as an HS256 secret") from None

        self._keys: dict[str, _VerificationKey] = {}
        self._retry_after_failure = min(refetch_interval, _RETRY_AFTER_FAILURE_SECONDS)
        self._fetched_at: float | None = None
        self._last_refetch_at: float | None = None
        self._failed_at: float | None = None
        self._lock = asyncio.Lock()

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def verify(self, token: str) -> SupabaseClaims:
        if not isinstance(token, str) or not token or len(token) > _MAX_TOKEN_CHARS:
            raise InvalidSupabaseToken("malformed token")
        try:
            header = jwt.get_unverified_header(token)
        except (JOSEError, ValueError, TypeError):
            raise InvalidSupabaseToken("malformed token") from None
        if not isinstance(header, dict):
            raise InvalidSupabaseToken("malformed token")

        alg = header.get("alg")
        if alg == _HMAC_ALGORITHM:
            if self._secret_key is None:
                raise InvalidSupabaseToken("unsupported signing algorithm")
            verification = _VerificationKey(self._secret_key, _HMAC_ALGORITHM)
        elif alg in _ALGORITHM_FOR_KEY.values():
            kid = header.get("kid")
            if not isinstance(kid, str) or not kid:
                raise InvalidSupabaseToken("unknown signing key")
            verification = await self._key_for(kid)
            if verification.algorithm != alg:
                raise InvalidSupabaseToken("signing algorithm does not match the key")
        else:
            # Covers "none" in any spelling, and every algorithm Supabase does not sign with.
            raise InvalidSupabaseToken("unsupported signing algorithm")

        return self._decode(token, verification)

    def _decode(self, token: str, verification: _VerificationKey) -> SupabaseClaims:
        try:
            claims = jwt.decode(
                token,
                verification.key,
                algorithms=[verification.algorithm],
                audience=self._audience,
                issuer=self._issuer,
                options={
                    "leeway": self._leeway,
                    # jose skips aud/iss/exp checks when the claim is absent unless required.
                    "require_aud": True,
                    "require_iss": True,
                    "require_exp": True,
                    "require_iat": True,
                    "require_sub": True,
                },
            )
        except ExpiredSignatureError:
            raise ExpiredSupabaseToken() from None
        except JOSEError:
            raise InvalidSupabaseToken("token failed verification") from None
        except (ValueError, TypeError):
            # jose lets odd claim types (e.g. "exp": null) escape as plain Python errors.
            raise InvalidSupabaseToken("token failed verification") from None

        # jose only checks that iat is a number; a token minted in the future is as suspect as
        # one not yet valid.
        iat = claims.get("iat")
        if not _is_number(iat) or iat > time() + self._leeway:
            raise InvalidSupabaseToken("token issued in the future")

        exp = claims.get("exp")
        if not _is_number(exp):
            raise InvalidSupabaseToken("token failed verification")
        try:
            user_id = UUID(claims["sub"])
        except (ValueError, TypeError, AttributeError):
            raise InvalidSupabaseToken("subject is not a user id") from None

        return SupabaseClaims(
            user_id=user_id,
            # Supabase sends "" for users who signed up with a phone number only.
            email=_optional_str(claims.get("email")),
            role=_optional_str(claims.get("role")),
            session_id=_optional_str(claims.get("session_id")),
            expires_at=int(exp),
        )

    async def _key_for(self, kid: str) -> _VerificationKey:
        cached = self._keys.get(kid)
        if cached is not None and self._is_fresh(monotonic()):
            return cached

        async with self._lock:
            # Whoever held the lock before us may have just fetched what we need.
            now = monotonic()
            cached = self._keys.get(kid)
            fresh = self._is_fresh(now)
            if cached is not None and fresh:
                return cached

            if fresh:
                # A current key set without this kid: a rotation, or a made-up kid. Only the
                # former deserves a fetch, and we cannot tell them apart, so ration refetches.
                may_fetch = (
                    self._last_refetch_at is None
                    or now - self._last_refetch_at >= self._refetch_interval
                )
                if may_fetch:
                    self._last_refetch_at = now
            else:
                # No key set yet, or one past its TTL: fetch unless a fetch has just failed.
                may_fetch = (
                    self._failed_at is None or now - self._failed_at >= self._retry_after_failure
                )

            if may_fetch:
                try:
                    await self._refresh()
                except SupabaseUnavailable:
                    if cached is None:
                        raise
                    # The key was valid when last seen; a Supabase outage should not sign out
                    # every user, so keep trusting it until Supabase says otherwise.
                    return cached
                found = self._keys.get(kid)
                if found is None:
                    raise InvalidSupabaseToken("unknown signing key")
                return found

            if cached is not None:
                return cached
            if self._failed_at is not None:
                raise SupabaseUnavailable("Supabase signing keys are unavailable")
            raise InvalidSupabaseToken("unknown signing key")

    def _is_fresh(self, now: float) -> bool:
        if self._fetched_at is None:
            return False
        return self._cache_ttl is None or now - self._fetched_at < self._cache_ttl

    async def _refresh(self) -> None:
        started = monotonic()
        try:
            keys = await self._fetch_keys()
        except SupabaseUnavailable:
            self._failed_at = started
            raise
        # Replace rather than merge, so keys Supabase no longer publishes (revoked) are dropped.
        self._keys = keys
        self._fetched_at = started
        self._failed_at = None

    async def _fetch_keys(self) -> dict[str, _VerificationKey]:
        try:
            response = await self._http.get(self._jwks_url, timeout=self._timeout)
        except httpx.HTTPError as exc:
            logger.warning("Fetching Supabase JWKS failed: %s", type(exc).__name__)
            raise SupabaseUnavailable("Supabase signing keys are unavailable") from None
        if response.status_code != httpx.codes.OK:
            logger.warning("Fetching Supabase JWKS returned HTTP %s", response.status_code)
            raise SupabaseUnavailable("Supabase signing keys are unavailable")
        try:
            body = response.json()
        except ValueError:
            body = None
        entries = body.get("keys") if isinstance(body, dict) else None
        if not isinstance(entries, list):
            logger.warning("Supabase JWKS response is not a key set")
            raise SupabaseUnavailable("Supabase signing keys are unavailable")

        keys: dict[str, _VerificationKey] = {}
        for entry in entries:
            parsed = _verification_key(entry)
            if parsed is not None:
                keys[parsed[0]] = parsed[1]
        return keys


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _optional_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
