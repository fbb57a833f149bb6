"""The backend's own tokens: JWT access tokens and opaque refresh/invite tokens."""

import hashlib
import secrets
import time
from dataclasses import dataclass
from functools import lru_cache
from uuid import UUID, uuid4

from jose import ExpiredSignatureError, JWTError, jwk, jwt
from jose.backends.base import Key

from app.errors import TOKEN_EXPIRED, Unauthorized
from app.models.identity import Role

ALGORITHM = "HS256"
ACCESS_TYPE = "access"
# Clocks of servers differ a little; a token "issued" later than this ahead is not valid yet.
MAX_CLOCK_SKEW_SECONDS = 30


@dataclass(frozen=True, slots=True)
class AccessClaims:
    user_id: UUID
    # None for Supabase Auth tokens, which carry neither: `auth_service.load_actor` always
    # takes role and family from the profile, for our own tokens too.
    role: Role | None
    family_unit_id: UUID | None
    session_id: UUID | None
    jti: str
    expires_at: int

    def database_claims(self) -> dict[str, str]:
        """What the RLS session publishes as request.jwt.claims (Supabase's shape)."""
        return {"sub": str(self.user_id), "role": "authenticated"}


def issue_access_token(
    *,
    secret: str,
    ttl_seconds: int,
    user_id: UUID,
    role: Role,
    family_unit_id: UUID,
    session_id: UUID,
) -> str:
    now = int(time.time())
    claims = {
        "sub": str(user_id),
        "role": role.value,
        "family_unit_id": str(family_unit_id),
        "sid": str(session_id),
        "iat": now,
        "exp": now + ttl_seconds,
        "jti": uuid4().hex,
        "type": ACCESS_TYPE,
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


@lru_cache(maxsize=4)
def _verification_key(secret: str) -> Key:
    """The HMAC key, built once: given the secret as text, python-jose first tries to read
    it as a JSON key set (an exception each time) and then builds a key object, per token."""
    return jwk.construct(secret, ALGORITHM)


# Tokens whose signature, type and claims were checked, by (secret, token). A client sends the
# same token with each request for the token's lifetime, and checking it again (base64, JSON,
# HMAC in python-jose) was a tenth of `/auth/me`'s CPU. Expiry is checked on every use; a
# revoked login is refused by the member's session, which reads the login on each request.
_verified: dict[tuple[str, str], AccessClaims] = {}
_MAX_VERIFIED = 10_000  # ~3 MB at most; when full it starts afresh


def decode_access_token(token: str, *, secret: str) -> AccessClaims:
    """Verify signature, expiry and type; any failure is one 401 that reveals nothing."""
    key = (secret, token)
    claims = _verified.get(key)
    if claims is not None and time.time() < claims.expires_at:
        return claims
    claims = _verify(token, secret)  # an expired one raises here
    if len(_verified) >= _MAX_VERIFIED:
        _verified.clear()
    _verified[key] = claims
    return claims


def _verify(token: str, secret: str) -> AccessClaims:
    try:
        # `algorithms` refuses any other `alg` in the header (none, HS512, RS256, ...).
        claims = jwt.decode(
            token,
            _verification_key(secret),
            algorithms=[ALGORITHM],
            options={"require_iat": True, "require_exp": True},
        )
        issued_at = float(claims["iat"])
    except ExpiredSignatureError:
        # Told apart from the rest (docs/api.md): the client refreshes and retries.
        raise Unauthorized("Token has expired", code=TOKEN_EXPIRED) from None
    except JWTError:
        raise Unauthorized("Invalid token") from None
    except (TypeError, ValueError, OverflowError):  # a time claim of the wrong shape
        raise Unauthorized("Invalid token") from None
    # `not <=` also refuses NaN.
    if not issued_at <= time.time() + MAX_CLOCK_SKEW_SECONDS:
        raise Unauthorized("Invalid token")
    if claims.get("type") != ACCESS_TYPE:
        raise Unauthorized("Invalid token")
    try:
        return AccessClaims(
            user_id=UUID(claims["sub"]),
            role=Role(claims["role"]),
            family_unit_id=UUID(claims["family_unit_id"]),
            session_id=UUID(claims["sid"]) if claims.get("sid") else None,
            jti=str(claims["jti"]),
            expires_at=int(claims["exp"]),
        )
    except (KeyError, ValueError, TypeError):
        raise Unauthorized("Invalid token") from None


def new_opaque_token() -> str:
    """32 random bytes, URL-safe: refresh tokens and invite tokens."""
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """Only this hash is stored, so a database leak does not leak usable tokens."""
    return hashlib.sha256(token.encode()).hexdigest()
