"""Local verification of Supabase access tokens, with real keys and a mocked JWKS endpoint."""

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio
import respx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jose import jwt

from app.adapters.supabase import tokens as supabase_tokens
from app.adapters.supabase.tokens import (
    ExpiredSupabaseToken,
    InvalidSupabaseToken,
    SupabaseClaims,
    SupabaseTokenVerifier,
    SupabaseUnavailable,
    looks_like_supabase_token,
)

SUPABASE_URL = "https://abcdefghijklmnopqrst.supabase.co"
ISSUER = f"{SUPABASE_URL}/auth/v1"
JWKS_URL = f"{SUPABASE_URL}/auth/v1/.well-known/jwks.json"
LEGACY_SECRET = "legacy-project-jwt-secret-at-least-32-characters-long"
USER_ID = uuid.UUID("8f3c2b8e-1d2a-4c55-9a77-0c4b7c1e2f10")
SESSION_ID = "5b9e6f0c-3a1d-4b7e-8f2a-9c6d1e0b4a73"


# --- keys ---------------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_uint(value: int) -> str:
    return _b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


@dataclass(frozen=True)
class SigningKey:
    kid: str
    alg: str
    private_pem: str
    public_pem: str
    public_jwk: dict[str, Any]


def _pems(private_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> tuple[str, str]:
    private_pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public_pem = (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private_pem, public_pem


def make_ec_key(kid: str) -> SigningKey:
    private_key = ec.generate_private_key(ec.SECP256R1())
    numbers = private_key.public_key().public_numbers()
    private_pem, public_pem = _pems(private_key)
    # Shape of one entry of GET {SUPABASE_URL}/auth/v1/.well-known/jwks.json, as documented in
    # Supabase Auth docs "JWT Signing Keys" and served by GoTrue's Jwks handler
    # (internal/api/jwks.go), which publishes each asymmetric key's public JWK.
    jwk = {
        "kty": "EC",
        "crv": "P-256",
        "x": _b64url(numbers.x.to_bytes(32, "big")),
        "y": _b64url(numbers.y.to_bytes(32, "big")),
        "kid": kid,
        "alg": "ES256",
        "use": "sig",
        "key_ops": ["verify"],
        "ext": True,
    }
    return SigningKey(kid, "ES256", private_pem, public_pem, jwk)


def make_rsa_key(kid: str) -> SigningKey:
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    numbers = private_key.public_key().public_numbers()
    private_pem, public_pem = _pems(private_key)
    jwk = {
        "kty": "RSA",
        "n": _b64url_uint(numbers.n),
        "e": _b64url_uint(numbers.e),
        "kid": kid,
        "alg": "RS256",
        "use": "sig",
        "key_ops": ["verify"],
        "ext": True,
    }
    return SigningKey(kid, "RS256", private_pem, public_pem, jwk)


@pytest.fixture(scope="module")
def ec_key() -> SigningKey:
    return make_ec_key("0b5d7d2e-5d4c-4c1c-9a4e-3c2f1e0d9b8a")


@pytest.fixture(scope="module")
def rsa_key() -> SigningKey:
    return make_rsa_key("7e1f3a2b-6c5d-4e8f-a0b1-c2d3e4f5a6b7")


@pytest.fixture(scope="module")
def rotated_key() -> SigningKey:
    return make_ec_key("c4a1e9f0-2b3c-4d5e-8f6a-7b8c9d0e1f2a")


def jwks(*keys: SigningKey) -> dict[str, Any]:
    return {"keys": [key.public_jwk for key in keys]}


def jwks_response(*keys: SigningKey) -> httpx.Response:
    return httpx.Response(200, json=jwks(*keys))


# --- tokens ---------------------------------------------------------------------------------

# Passed as a claim value to leave that claim out of the token.
_DROP = object()


def claims(**overrides: Any) -> dict[str, Any]:
    """A payload shaped like a real Supabase access token (see the JWT Claims Reference)."""
    now = int(time.time())
    payload: dict[str, Any] = {
        "iss": ISSUER,
        "sub": str(USER_ID),
        "aud": "authenticated",
        "exp": now + 3600,
        "iat": now,
        "email": "grandma@example.com",
        "phone": "",
        "app_metadata": {"provider": "email", "providers": ["email"]},
        "user_metadata": {"email_verified": True, "full_name": "Rose"},
        "role": "authenticated",
        "aal": "aal1",
        "amr": [{"method": "password", "timestamp": now}],
        "session_id": SESSION_ID,
        "is_anonymous": False,
    }
    for name, value in overrides.items():
        if value is _DROP:
            payload.pop(name, None)
        else:
            payload[name] = value
    return payload


def sign(payload: dict[str, Any], key: SigningKey, *, kid: str | None = None) -> str:
    return jwt.encode(payload, key.private_pem, algorithm=key.alg, headers={"kid": kid or key.kid})


def raw_token(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    """Builds a token by hand, for headers and signatures a JWT library refuses to produce."""
    signing_input = (
        f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(payload).encode())}"
    )
    return f"{signing_input}.{_b64url(signature)}"


def hs256(payload: dict[str, Any], secret: bytes, **header: Any) -> str:
    head = {"alg": "HS256", "typ": "JWT", **header}
    unsigned = raw_token(head, payload).rsplit(".", 1)[0]
    signature = hmac.new(secret, unsigned.encode(), hashlib.sha256).digest()
    return f"{unsigned}.{_b64url(signature)}"


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    # assert_all_mocked (the default) turns any request that escapes the mock into an error,
    # so no test can reach a real Supabase.
    with respx.mock(assert_all_called=False) as mock:
        yield mock


@pytest_asyncio.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


MakeVerifier = Callable[..., SupabaseTokenVerifier]


@pytest.fixture
def make_verifier(http: httpx.AsyncClient) -> MakeVerifier:
    def make(**overrides: Any) -> SupabaseTokenVerifier:
        options: dict[str, Any] = {"jwt_secret": None, "http": http}
        options.update(overrides)
        return SupabaseTokenVerifier(SUPABASE_URL, **options)

    return make


class FakeClock:
    def __init__(self) -> None:
        self.now = 10_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(supabase_tokens, "monotonic", fake)
    return fake


async def assert_rejected(verifier: SupabaseTokenVerifier, token: str) -> None:
    with pytest.raises(InvalidSupabaseToken) as excinfo:
        await verifier.verify(token)
    # The message may reach logs or a response body; the credential must never be in it.
    if token:
        assert token not in str(excinfo.value)


# --- valid tokens ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_es256_token_is_accepted(router, make_verifier, ec_key) -> None:
    route = router.get(JWKS_URL).mock(return_value=jwks_response(ec_key))
    payload = claims()

    result = await make_verifier().verify(sign(payload, ec_key))

    assert result == SupabaseClaims(
        user_id=USER_ID,
        email="grandma@example.com",
        role="authenticated",
        session_id=SESSION_ID,
        expires_at=payload["exp"],
    )
    assert route.call_count == 1


@pytest.mark.asyncio
async def test_rs256_token_is_accepted(router, make_verifier, rsa_key) -> None:
    route = router.get(JWKS_URL).mock(return_value=jwks_response(rsa_key))

    result = await make_verifier().verify(sign(claims(), rsa_key))

    assert result.user_id == USER_ID
    assert route.call_count == 1


@pytest.mark.asyncio
async def test_jwks_is_fetched_once_and_cached(router, make_verifier, ec_key, rsa_key) -> None:
    route = router.get(JWKS_URL).mock(return_value=jwks_response(ec_key, rsa_key))
    verifier = make_verifier()

    for _ in range(3):
        await verifier.verify(sign(claims(), ec_key))
        await verifier.verify(sign(claims(), rsa_key))

    assert route.call_count == 1


@pytest.mark.asyncio
async def test_hs256_token_is_accepted_with_legacy_secret(router, make_verifier) -> None:
    route = router.get(JWKS_URL).mock(return_value=httpx.Response(200, json={"keys": []}))
    payload = claims()
    token = jwt.encode(payload, LEGACY_SECRET, algorithm="HS256")

    result = await make_verifier(jwt_secret=LEGACY_SECRET).verify(token)

    assert result.user_id == USER_ID
    assert result.expires_at == payload["exp"]
    # Symmetric tokens never need Supabase to be reachable.
    assert route.call_count == 0


@pytest.mark.asyncio
async def test_phone_only_user_has_no_email(router, make_verifier, ec_key) -> None:
    router.get(JWKS_URL).mock(return_value=jwks_response(ec_key))

    result = await make_verifier().verify(sign(claims(email="", phone="33612345678"), ec_key))

    assert result.email is None


@pytest.mark.asyncio
async def test_verifier_owning_its_http_client_works_and_closes(router, ec_key) -> None:
    route = router.get(JWKS_URL).mock(return_value=jwks_response(ec_key))
    verifier = SupabaseTokenVerifier(SUPABASE_URL + "/", jwt_secret=None)
    try:
        assert (await verifier.verify(sign(claims(), ec_key))).user_id == USER_ID
    finally:
        await verifier.aclose()
    assert route.call_count == 1


# --- HS256 ----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_hs256_token_is_rejected_when_no_secret_is_configured(router, make_verifier) -> None:
    route = router.get(JWKS_URL).mock(return_value=httpx.Response(200, json={"keys": []}))
    token = jwt.encode(claims(), LEGACY_SECRET, algorithm="HS256")

    await assert_rejected(make_verifier(jwt_secret=None), token)
    assert route.call_count == 0


@pytest.mark.asyncio
async def test_hs256_token_signed_with_another_secret_is_rejected(make_verifier) -> None:
    token = jwt.encode(claims(), "another-project-secret-also-32-characters-long", "HS256")

    await assert_rejected(make_verifier(jwt_secret=LEGACY_SECRET), token)


@pytest.mark.parametrize("secret_source", ["public_pem", "public_jwk_json", "jwks_json"])
@pytest.mark.parametrize("jwt_secret", [None, LEGACY_SECRET])
@pytest.mark.asyncio
async def test_hs256_signed_with_public_key_text_is_rejected(
    router, make_verifier, ec_key, secret_source, jwt_secret
) -> None:
    # Algorithm confusion: everything an attacker knows about our public key, used as an HMAC
    # secret, with the kid pointing at that very key.
    router.get(JWKS_URL).mock(return_value=jwks_response(ec_key))
    secret = {
        "public_pem": ec_key.public_pem,
        "public_jwk_json": json.dumps(ec_key.public_jwk),
        "jwks_json": json.dumps(jwks(ec_key)),
    }[secret_source]
    verifier = make_verifier(jwt_secret=jwt_secret)
    await verifier.verify(sign(claims(), ec_key))  # the key is known and cached

    await assert_rejected(verifier, hs256(claims(), secret.encode(), kid=ec_key.kid))


@pytest.mark.asyncio
async def test_pem_shaped_jwt_secret_is_refused_at_construction(ec_key) -> None:
    with pytest.raises(ValueError):
        SupabaseTokenVerifier(SUPABASE_URL, jwt_secret=ec_key.public_pem)


# --- key rotation and rate limiting ---------------------------------------------------------


@pytest.mark.asyncio
async def test_key_rotation_refetches_once_then_rate_limits(
    router, make_verifier, ec_key, rotated_key
) -> None:
    route = router.get(JWKS_URL).mock(
        side_effect=[jwks_response(ec_key), jwks_response(ec_key, rotated_key)]
    )
    verifier = make_verifier(refetch_interval=30.0)
    await verifier.verify(sign(claims(), ec_key))
    assert route.call_count == 1

    # Supabase rotated: the new kid is not cached, so exactly one refetch finds it.
    assert (await verifier.verify(sign(claims(), rotated_key))).user_id == USER_ID
    assert route.call_count == 2

    # Another unknown kid within refetch_interval: refused without asking Supabase again.
    unknown = make_ec_key("ffffffff-0000-4000-8000-000000000000")
    await assert_rejected(verifier, sign(claims(), unknown))
    assert route.call_count == 2
    # The keys we already trust keep working.
    await verifier.verify(sign(claims(), ec_key))
    await verifier.verify(sign(claims(), rotated_key))
    assert route.call_count == 2


@pytest.mark.asyncio
async def test_unknown_kid_may_refetch_again_after_refetch_interval(
    router, make_verifier, clock, ec_key, rotated_key
) -> None:
    route = router.get(JWKS_URL).mock(
        side_effect=[jwks_response(ec_key), jwks_response(ec_key), jwks_response(rotated_key)]
    )
    verifier = make_verifier(refetch_interval=30.0)
    token = sign(claims(), rotated_key)

    await assert_rejected(verifier, token)  # cold fetch: kid not published yet
    assert route.call_count == 1
    clock.now += 1
    await assert_rejected(verifier, token)  # the one refetch: still not published
    assert route.call_count == 2
    clock.now += 29.9
    await assert_rejected(verifier, token)  # rationed: no fetch
    assert route.call_count == 2
    clock.now += 0.1
    assert (await verifier.verify(token)).user_id == USER_ID
    assert route.call_count == 3


@pytest.mark.asyncio
async def test_spraying_random_kids_causes_at_most_one_refetch(
    router, make_verifier, ec_key
) -> None:
    route = router.get(JWKS_URL).mock(return_value=jwks_response(ec_key))
    verifier = make_verifier()
    await verifier.verify(sign(claims(), ec_key))

    tokens = [sign(claims(), ec_key, kid=str(uuid.uuid4())) for _ in range(20)]
    results = await asyncio.gather(*(verifier.verify(t) for t in tokens), return_exceptions=True)

    assert all(isinstance(r, InvalidSupabaseToken) for r in results)
    assert route.call_count == 2


@pytest.mark.asyncio
async def test_concurrent_verifies_with_cold_cache_fetch_once(
    router, make_verifier, ec_key
) -> None:
    async def slow_jwks(request: httpx.Request) -> httpx.Response:
        # Yield to the loop so every verify is waiting on the cache at the same time.
        await asyncio.sleep(0.05)
        return jwks_response(ec_key)

    route = router.get(JWKS_URL).mock(side_effect=slow_jwks)
    verifier = make_verifier()
    tokens = [sign(claims(sub=str(uuid.uuid4())), ec_key) for _ in range(25)]

    results = await asyncio.gather(*(verifier.verify(t) for t in tokens))

    assert len({r.user_id for r in results}) == 25
    assert route.call_count == 1


@pytest.mark.asyncio
async def test_revoked_key_stops_verifying_after_cache_ttl(
    router, make_verifier, clock, ec_key, rotated_key
) -> None:
    route = router.get(JWKS_URL).mock(
        side_effect=[jwks_response(ec_key), jwks_response(rotated_key)]
    )
    verifier = make_verifier(cache_ttl=600.0)
    token = sign(claims(), ec_key)
    await verifier.verify(token)

    clock.now += 599
    await verifier.verify(token)
    assert route.call_count == 1
    clock.now += 1
    await assert_rejected(verifier, token)  # no longer published: revoked
    assert route.call_count == 2


@pytest.mark.asyncio
async def test_stale_keys_keep_working_while_supabase_is_down(
    router, make_verifier, clock, ec_key
) -> None:
    route = router.get(JWKS_URL).mock(
        side_effect=[jwks_response(ec_key), httpx.ConnectTimeout("timed out")]
    )
    verifier = make_verifier(cache_ttl=600.0)
    token = sign(claims(), ec_key)
    await verifier.verify(token)

    clock.now += 601
    assert (await verifier.verify(token)).user_id == USER_ID
    assert route.call_count == 2


# --- claims ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "audience",
    [pytest.param("anon", id="anon"), pytest.param(["other"], id="list"), pytest.param(_DROP)],
)
@pytest.mark.asyncio
async def test_wrong_audience_is_rejected(router, make_verifier, ec_key, audience) -> None:
    router.get(JWKS_URL).mock(return_value=jwks_response(ec_key))

    await assert_rejected(make_verifier(), sign(claims(aud=audience), ec_key))


@pytest.mark.asyncio
async def test_audience_is_configurable(router, make_verifier, ec_key) -> None:
    router.get(JWKS_URL).mock(return_value=jwks_response(ec_key))
    verifier = make_verifier(audience="family-app")

    await verifier.verify(sign(claims(aud=["family-app", "other"]), ec_key))
    await assert_rejected(verifier, sign(claims(), ec_key))


@pytest.mark.asyncio
async def test_expired_token_is_rejected(router, make_verifier, ec_key) -> None:
    router.get(JWKS_URL).mock(return_value=jwks_response(ec_key))
    now = int(time.time())
    just_expired = sign(claims(iat=now - 3610, exp=now - 10), ec_key)

    await assert_rejected(make_verifier(), just_expired)
    with pytest.raises(ExpiredSupabaseToken):  # told apart: the client refreshes and retries
        await make_verifier().verify(just_expired)
    # Leeway absorbs clock skew, and no more than that.
    assert (await make_verifier(leeway=30).verify(just_expired)).user_id == USER_ID
    long_expired = sign(claims(iat=now - 3700, exp=now - 100), ec_key)
    await assert_rejected(make_verifier(leeway=30), long_expired)


@pytest.mark.parametrize("missing", ["exp", "iat", "sub", "iss"])
@pytest.mark.asyncio
async def test_token_missing_a_required_claim_is_rejected(
    router, make_verifier, ec_key, missing
) -> None:
    router.get(JWKS_URL).mock(return_value=jwks_response(ec_key))

    await assert_rejected(make_verifier(), sign(claims(**{missing: _DROP}), ec_key))


@pytest.mark.asyncio
async def test_not_yet_valid_nbf_is_rejected(router, make_verifier, ec_key) -> None:
    router.get(JWKS_URL).mock(return_value=jwks_response(ec_key))
    now = int(time.time())

    await assert_rejected(make_verifier(), sign(claims(nbf=now + 300), ec_key))
    assert (await make_verifier().verify(sign(claims(nbf=now - 1), ec_key))).user_id == USER_ID


@pytest.mark.asyncio
async def test_future_iat_is_rejected_beyond_leeway(router, make_verifier, ec_key) -> None:
    router.get(JWKS_URL).mock(return_value=jwks_response(ec_key))
    now = int(time.time())
    slightly_ahead = sign(claims(iat=now + 10), ec_key)

    await assert_rejected(make_verifier(leeway=30), sign(claims(iat=now + 3600), ec_key))
    await assert_rejected(make_verifier(), slightly_ahead)
    assert (await make_verifier(leeway=30).verify(slightly_ahead)).user_id == USER_ID


@pytest.mark.parametrize(
    "issuer",
    [
        "https://zyxwvutsrqponmlkjihg.supabase.co/auth/v1",
        f"{ISSUER}/",
        SUPABASE_URL,
        "supabase",
    ],
)
@pytest.mark.asyncio
async def test_wrong_issuer_is_rejected(router, make_verifier, ec_key, issuer) -> None:
    router.get(JWKS_URL).mock(return_value=jwks_response(ec_key))

    await assert_rejected(make_verifier(), sign(claims(iss=issuer), ec_key))


@pytest.mark.parametrize("subject", ["not-a-uuid", "", "12345", None])
@pytest.mark.asyncio
async def test_subject_that_is_not_a_uuid_is_rejected(
    router, make_verifier, ec_key, subject
) -> None:
    router.get(JWKS_URL).mock(return_value=jwks_response(ec_key))

    await assert_rejected(make_verifier(), sign(claims(sub=subject), ec_key))


@pytest.mark.parametrize("field", ["exp", "iat"])
@pytest.mark.parametrize("value", [None, "soon", {"at": 1}, True])
@pytest.mark.asyncio
async def test_time_claim_of_the_wrong_type_is_rejected(
    router, make_verifier, ec_key, field, value
) -> None:
    router.get(JWKS_URL).mock(return_value=jwks_response(ec_key))

    await assert_rejected(make_verifier(), sign(claims(**{field: value}), ec_key))


# --- forged and malformed tokens ------------------------------------------------------------


@pytest.mark.asyncio
async def test_token_signed_by_another_projects_key_with_same_kid_is_rejected(
    router, make_verifier, ec_key
) -> None:
    route = router.get(JWKS_URL).mock(return_value=jwks_response(ec_key))
    verifier = make_verifier()
    await verifier.verify(sign(claims(), ec_key))
    impostor = make_ec_key(ec_key.kid)

    await assert_rejected(verifier, sign(claims(), impostor))
    # A known kid with a bad signature is a forgery, not a rotation: no refetch.
    assert route.call_count == 1


@pytest.mark.asyncio
async def test_token_from_another_project_is_rejected(router, make_verifier, ec_key) -> None:
    router.get(JWKS_URL).mock(return_value=jwks_response(ec_key))
    other_key = make_ec_key("11111111-2222-4333-8444-555555555555")
    other_issuer = "https://zyxwvutsrqponmlkjihg.supabase.co/auth/v1"

    await assert_rejected(make_verifier(), sign(claims(iss=other_issuer), other_key))


@pytest.mark.asyncio
async def test_algorithm_not_matching_the_key_type_is_rejected(
    router, make_verifier, ec_key, rsa_key
) -> None:
    router.get(JWKS_URL).mock(return_value=jwks_response(ec_key, rsa_key))

    # An RS256 signature presented under the EC key's kid, and the other way round.
    await assert_rejected(make_verifier(), sign(claims(), rsa_key, kid=ec_key.kid))
    await assert_rejected(make_verifier(), sign(claims(), ec_key, kid=rsa_key.kid))


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
@pytest.mark.parametrize("signature", [b"", b"\x00" * 64])
@pytest.mark.asyncio
async def test_alg_none_is_rejected(router, make_verifier, ec_key, alg, signature) -> None:
    router.get(JWKS_URL).mock(return_value=jwks_response(ec_key))
    verifier = make_verifier(jwt_secret=LEGACY_SECRET)
    token = raw_token({"alg": alg, "typ": "JWT", "kid": ec_key.kid}, claims(), signature)

    await assert_rejected(verifier, token)


@pytest.mark.parametrize("alg", ["HS512", "ES384", "PS256", "EdDSA", None, 256])
@pytest.mark.asyncio
async def test_unsupported_algorithm_is_rejected(router, make_verifier, ec_key, alg) -> None:
    router.get(JWKS_URL).mock(return_value=jwks_response(ec_key))
    header = {"alg": alg, "typ": "JWT", "kid": ec_key.kid}

    await assert_rejected(make_verifier(jwt_secret=LEGACY_SECRET), raw_token(header, claims()))


@pytest.mark.asyncio
async def test_tampered_payload_is_rejected(router, make_verifier, ec_key) -> None:
    router.get(JWKS_URL).mock(return_value=jwks_response(ec_key))
    verifier = make_verifier()
    header, _, signature = sign(claims(), ec_key).split(".")
    forged_payload = _b64url(
        json.dumps(claims(sub=str(uuid.uuid4()), role="service_role")).encode()
    )

    await assert_rejected(verifier, f"{header}.{forged_payload}.{signature}")


@pytest.mark.asyncio
async def test_tampered_hs256_payload_is_rejected(make_verifier) -> None:
    header, _, signature = jwt.encode(claims(), LEGACY_SECRET, algorithm="HS256").split(".")
    forged_payload = _b64url(json.dumps(claims(sub=str(uuid.uuid4()))).encode())

    await assert_rejected(
        make_verifier(jwt_secret=LEGACY_SECRET), f"{header}.{forged_payload}.{signature}"
    )


@pytest.mark.parametrize(
    "token",
    [
        "",
        "garbage",
        "a.b.c",
        "....",
        "eyJhbGciOiJFUzI1NiJ9",
        "eyJhbGciOiJFUzI1NiJ9.!!!.???",
        "Bearer eyJhbGciOiJFUzI1NiJ9.e30.",
        "😀.😀.😀",
        raw_token({"alg": "ES256"}, {}).replace(".", "", 1),
        _b64url(b"[1,2]") + ".e30.",
        "x" * 100_000,
    ],
)
@pytest.mark.asyncio
async def test_garbage_is_rejected(router, make_verifier, token) -> None:
    route = router.get(JWKS_URL).mock(return_value=httpx.Response(200, json={"keys": []}))

    await assert_rejected(make_verifier(jwt_secret=LEGACY_SECRET), token)
    assert route.call_count == 0


@pytest.mark.asyncio
async def test_oversized_token_is_rejected_before_any_work(router, make_verifier, ec_key) -> None:
    route = router.get(JWKS_URL).mock(return_value=jwks_response(ec_key))
    token = sign(claims(user_metadata={"bio": "x" * 20_000}), ec_key)

    await assert_rejected(make_verifier(), token)
    assert not looks_like_supabase_token(token, SUPABASE_URL)
    assert route.call_count == 0


@pytest.mark.asyncio
async def test_es256_token_without_kid_is_rejected(router, make_verifier, ec_key) -> None:
    router.get(JWKS_URL).mock(return_value=jwks_response(ec_key))
    token = jwt.encode(claims(), ec_key.private_pem, algorithm="ES256")

    await assert_rejected(make_verifier(), token)


@pytest.mark.parametrize(
    "change",
    [{"use": "enc"}, {"alg": "RS256"}, {"key_ops": ["encrypt"]}, {"crv": "P-384"}],
    ids=["use-enc", "alg-mismatch", "key-ops", "curve"],
)
@pytest.mark.asyncio
async def test_jwks_entry_not_meant_for_signatures_is_ignored(
    router, make_verifier, ec_key, change
) -> None:
    router.get(JWKS_URL).mock(
        return_value=httpx.Response(200, json={"keys": [{**ec_key.public_jwk, **change}]})
    )

    await assert_rejected(make_verifier(), sign(claims(), ec_key))


@pytest.mark.asyncio
async def test_malformed_jwks_entries_do_not_hide_good_keys(router, make_verifier, ec_key) -> None:
    body = {
        "keys": [
            "not a key",
            {"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "BBBB", "kid": "broken"},
            {"kty": "oct", "k": _b64url(b"secret"), "kid": "hmac"},
            {**ec_key.public_jwk, "kid": ""},
            ec_key.public_jwk,
        ]
    }
    router.get(JWKS_URL).mock(return_value=httpx.Response(200, json=body))

    assert (await make_verifier().verify(sign(claims(), ec_key))).user_id == USER_ID


# --- Supabase unreachable -------------------------------------------------------------------


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(httpx.ConnectTimeout("timed out"), id="connect-timeout"),
        pytest.param(httpx.ConnectError("refused"), id="connect-error"),
        pytest.param(httpx.Response(503, text="upstream unavailable"), id="http-503"),
        pytest.param(httpx.Response(404, json={"message": "not found"}), id="http-404"),
        # Only a 200 is a key set, whatever an error page happens to contain.
        pytest.param(httpx.Response(500, json={"keys": []}), id="http-500-with-key-set"),
        pytest.param(httpx.Response(200, text="<html>maintenance</html>"), id="not-json"),
        pytest.param(httpx.Response(200, json={"keys": "nope"}), id="not-a-key-set"),
    ],
)
@pytest.mark.asyncio
async def test_jwks_endpoint_down_raises_supabase_unavailable(
    router, make_verifier, ec_key, failure
) -> None:
    route = router.get(JWKS_URL)
    if isinstance(failure, httpx.Response):
        route.mock(return_value=failure)
    else:
        route.mock(side_effect=failure)

    with pytest.raises(SupabaseUnavailable):
        await make_verifier().verify(sign(claims(), ec_key))
    assert route.call_count == 1


@pytest.mark.asyncio
async def test_jwks_outage_backs_off_then_recovers(router, make_verifier, clock, ec_key) -> None:
    route = router.get(JWKS_URL).mock(
        side_effect=[httpx.ConnectTimeout("timed out"), jwks_response(ec_key)]
    )
    verifier = make_verifier(refetch_interval=30.0)
    token = sign(claims(), ec_key)

    with pytest.raises(SupabaseUnavailable):
        await verifier.verify(token)
    # Right after a failure we do not hammer Supabase, and still say it is unavailable.
    with pytest.raises(SupabaseUnavailable):
        await verifier.verify(token)
    assert route.call_count == 1

    clock.now += 5
    assert (await verifier.verify(token)).user_id == USER_ID
    assert route.call_count == 2


@pytest.mark.asyncio
async def test_hs256_still_works_while_jwks_is_down(router, make_verifier) -> None:
    route = router.get(JWKS_URL).mock(side_effect=httpx.ConnectTimeout("timed out"))
    token = jwt.encode(claims(), LEGACY_SECRET, algorithm="HS256")

    assert (await make_verifier(jwt_secret=LEGACY_SECRET).verify(token)).user_id == USER_ID
    assert route.call_count == 0


# --- routing peek ---------------------------------------------------------------------------


def test_looks_like_supabase_token_recognises_this_project(ec_key) -> None:
    token = sign(claims(), ec_key)

    assert looks_like_supabase_token(token, SUPABASE_URL)
    assert looks_like_supabase_token(token, SUPABASE_URL + "/")


@pytest.mark.parametrize(
    "token",
    [
        # The backend's own access tokens carry no iss.
        jwt.encode({"sub": str(USER_ID), "exp": 2_000_000_000}, "backend-secret", "HS256"),
        jwt.encode({"iss": "timeless-love", "sub": str(USER_ID)}, "backend-secret", "HS256"),
        jwt.encode({"iss": "https://zyxwvutsrqponmlkjihg.supabase.co/auth/v1"}, "secret", "HS256"),
        "garbage",
        "",
        "a.b.c",
        raw_token({"alg": "none"}, ["not", "an", "object"]),  # type: ignore[arg-type]
    ],
)
def test_looks_like_supabase_token_rejects_other_tokens(token) -> None:
    assert not looks_like_supabase_token(token, SUPABASE_URL)
