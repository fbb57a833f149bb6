"""Attacks on bearer tokens: forged, confused, stale, replayed and orphaned tokens → 401.

Every refusal is the contract's 401: `WWW-Authenticate: Bearer` and a string `detail`. Each
forged token is checked to be otherwise well-formed, so that the one thing wrong with it is
what the test is about (the `control_*` tests show the same recipe with the real key works).
"""

import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from jose import jwt

from tests.attacks.helpers import API
from tests.helpers.factories import Factory, Member
from tests.helpers.sessions import end_reuse_interval

ME = f"{API}/auth/me"


# Building tokens by hand --------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: dict[str, Any]) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode())


def claims_of(member: Member, **overrides: Any) -> dict[str, Any]:
    """The claims the app itself puts in an access token for `member`."""
    issued = jwt.get_unverified_claims(member.access_token)
    now = int(time.time())
    claims = {**issued, "iat": now, "exp": now + 900, "jti": uuid.uuid4().hex}
    claims.update(overrides)
    return {key: value for key, value in claims.items() if value is not None}


def hs256(claims: dict[str, Any], key: bytes, **header: Any) -> str:
    """An HS256 JWT signed by hand with any bytes as the HMAC key."""
    signing_input = f"{b64json({'alg': 'HS256', 'typ': 'JWT', **header})}.{b64json(claims)}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def assert_refused(client, token: str, path: str = ME) -> None:
    response = await client.get(path, headers=bearer(token))
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    assert isinstance(response.json()["detail"], str)


async def assert_accepted(client, token: str, member: Member) -> None:
    response = await client.get(ME, headers=bearer(token))
    assert response.status_code == 200, response.text
    assert response.json()["id"] == member.id


@pytest.fixture
async def member(factory: Factory) -> Member:
    return await factory.register("adult")


@pytest.fixture
def secret(settings) -> bytes:
    return settings.jwt_secret.encode()


# Controls: the hand-made recipe is right, so each refusal below is about one flaw ----------


async def test_control_hand_signed_token_with_the_real_secret_is_accepted(client, member, secret):
    await assert_accepted(client, hs256(claims_of(member), secret), member)


async def test_control_token_issued_a_few_seconds_ahead_is_tolerated_as_clock_skew(
    client, member, secret
):
    ahead = int(time.time()) + 10
    await assert_accepted(client, hs256(claims_of(member, iat=ahead), secret), member)


# Algorithm confusion ---------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
async def test_alg_none_unsigned_token_is_refused(client, member, alg):
    token = f"{b64json({'alg': alg, 'typ': 'JWT'})}.{b64json(claims_of(member))}."
    await assert_refused(client, token)


async def test_alg_none_header_with_a_valid_hs256_signature_is_refused(client, member, secret):
    # The signature is right for the payload, but the header asks for no verification.
    signed = hs256(claims_of(member), secret)
    _, payload, signature = signed.split(".")
    await assert_refused(client, f"{b64json({'alg': 'none'})}.{payload}.{signature}")


def _rsa_public_pem() -> tuple[rsa.RSAPrivateKey, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key, pem


def _ec_public_pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


async def test_hs256_signed_with_an_rsa_public_key_pem_as_secret_is_refused(client, member):
    _, pem = _rsa_public_pem()
    await assert_refused(client, hs256(claims_of(member), pem))


async def test_hs256_signed_with_an_ec_public_key_pem_as_secret_is_refused(client, member):
    await assert_refused(client, hs256(claims_of(member), _ec_public_pem()))


async def test_rs256_token_signed_with_an_attackers_key_is_refused(client, member):
    key, _ = _rsa_public_pem()
    token = jwt.encode(claims_of(member), key, algorithm="RS256")
    await assert_refused(client, token)


async def test_rs256_token_carrying_its_own_jwk_in_the_header_is_refused(client, member):
    # "Embedded JWK" (CVE-2018-0114 style): the token names the key to check it with.
    key, _ = _rsa_public_pem()
    numbers = key.public_key().public_numbers()
    jwk = {
        "kty": "RSA",
        "n": b64(numbers.n.to_bytes(256, "big")),
        "e": b64(numbers.e.to_bytes(3, "big")),
    }
    signing_input = (
        f"{b64json({'alg': 'RS256', 'typ': 'JWT', 'jwk': jwk})}.{b64json(claims_of(member))}"
    )
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    await assert_refused(client, f"{signing_input}.{b64(signature)}")


async def test_hs512_signed_with_the_real_secret_is_refused(client, member, secret):
    # Right key, other algorithm: only HS256 is ever accepted.
    signing_input = f"{b64json({'alg': 'HS512', 'typ': 'JWT'})}.{b64json(claims_of(member))}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha512).digest()
    await assert_refused(client, f"{signing_input}.{b64(signature)}")


async def test_hs256_with_a_kid_header_pointing_elsewhere_is_still_checked_with_our_key(
    client, member
):
    token = hs256(claims_of(member), b"", kid="../../../../dev/null")
    await assert_refused(client, token)


# Time ------------------------------------------------------------------------------------


async def test_expired_access_token_is_refused(client, member, secret):
    now = int(time.time())
    await assert_refused(client, hs256(claims_of(member, iat=now - 1000, exp=now - 1), secret))


async def test_token_without_expiry_is_refused(client, member, secret):
    claims = claims_of(member)
    del claims["exp"]
    await assert_refused(client, hs256(claims, secret))


async def test_token_issued_far_in_the_future_is_refused(client, member, secret):
    # A token "issued" tomorrow would outlive its 15 minutes (a stolen key minting tokens
    # ahead of time, or a server with a broken clock): it is not valid yet.
    tomorrow = int(time.time()) + 86_400
    token = hs256(claims_of(member, iat=tomorrow, exp=tomorrow + 900), secret)
    await assert_refused(client, token)


async def test_token_issued_a_minute_ahead_is_refused(client, member, secret):
    ahead = int(time.time()) + 60
    await assert_refused(client, hs256(claims_of(member, iat=ahead), secret))


async def test_token_with_not_before_in_the_future_is_refused(client, member, secret):
    later = int(time.time()) + 3600
    await assert_refused(client, hs256(claims_of(member, nbf=later), secret))


async def test_token_without_issued_at_is_refused(client, member, secret):
    claims = claims_of(member)
    del claims["iat"]
    await assert_refused(client, hs256(claims, secret))


@pytest.mark.parametrize("value", ["soon", None, [1], {"at": 1}, "NaN"])
@pytest.mark.parametrize("claim", ["exp", "iat", "nbf"])
async def test_token_with_a_malformed_time_claim_is_refused(client, member, secret, claim, value):
    # Signed with the real key, so only the claim's shape is wrong: a 401, never a 500.
    claims = claims_of(member)
    claims[claim] = float("nan") if value == "NaN" else value
    await assert_refused(client, hs256(claims, secret))


# Tampering ------------------------------------------------------------------------------


async def test_payload_tampered_to_adult_role_and_other_family_is_refused(client, factory):
    teen = (await factory.family(["adult", "teen"])).by_role("teen")
    header, _, signature = teen.access_token.split(".")
    forged = b64json(claims_of(teen, role="adult", family_unit_id=str(uuid.uuid4())))
    await assert_refused(client, f"{header}.{forged}.{signature}")


async def test_signature_with_one_flipped_bit_is_refused(client, member):
    header, payload, signature = member.access_token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[0] ^= 0x01
    await assert_refused(client, f"{header}.{payload}.{b64(bytes(raw))}")


async def test_token_with_the_signature_stripped_is_refused(client, member):
    header, payload, _ = member.access_token.split(".")
    await assert_refused(client, f"{header}.{payload}.")


async def test_token_signed_with_another_secret_is_refused(client, member):
    await assert_refused(client, hs256(claims_of(member), b"another-secret-entirely-0123456789"))


async def test_signed_role_and_family_claims_are_not_trusted(client, factory, secret):
    """Even a correctly signed token cannot lift a teen: role and family come from the DB."""
    family = await factory.family(["adult", "teen"])
    teen, adult = family.by_role("teen"), family.adult
    other_family = (await factory.register("adult")).family_id
    token = hs256(claims_of(teen, role="adult", family_unit_id=other_family), secret)
    me = await client.get(ME, headers=bearer(token))
    assert me.status_code == 200
    assert (me.json()["role"], me.json()["family_unit_id"]) == ("teen", family.id)
    removal = await client.delete(f"{API}/families/me/members/{adult.id}", headers=bearer(token))
    assert removal.status_code == 403
    assert (await client.get(ME, headers=adult.headers)).status_code == 200


async def test_token_naming_another_users_session_is_refused(client, factory, secret):
    mine, theirs = await factory.register("adult"), await factory.register("adult")
    their_session = jwt.get_unverified_claims(theirs.access_token)["sid"]
    await assert_refused(client, hs256(claims_of(mine, sid=their_session), secret))


async def test_token_for_an_unknown_user_is_refused(client, member, secret):
    await assert_refused(client, hs256(claims_of(member, sub=str(uuid.uuid4())), secret))


# Wrong kind of token --------------------------------------------------------------------


@pytest.mark.parametrize("token_type", ["refresh", "invite", "ACCESS", ""])
async def test_token_of_the_wrong_type_is_refused(client, member, secret, token_type):
    await assert_refused(client, hs256(claims_of(member, type=token_type), secret))


async def test_token_without_a_type_is_refused(client, member, secret):
    claims = claims_of(member)
    del claims["type"]
    await assert_refused(client, hs256(claims, secret))


async def test_refresh_token_presented_as_bearer_is_refused(client, member):
    await assert_refused(client, member.refresh_token)


async def test_invite_token_presented_as_bearer_is_refused(client, factory, member):
    invite = await factory.invite(member, "teen")
    await assert_refused(client, invite["token"])


async def test_access_token_presented_as_refresh_token_is_refused(client, member):
    response = await client.post(f"{API}/auth/refresh", json={"refresh_token": member.access_token})
    assert response.status_code == 401


@pytest.mark.parametrize("scheme", ["Basic", "Token", "JWT", ""])
async def test_access_token_under_another_auth_scheme_is_refused(client, member, scheme):
    response = await client.get(
        ME, headers={"Authorization": f"{scheme} {member.access_token}".strip()}
    )
    assert response.status_code == 401


# Revoked, reused, orphaned ---------------------------------------------------------------


async def test_access_token_is_revoked_by_logout(client, member):
    response = await client.post(
        f"{API}/auth/logout",
        json={"refresh_token": member.refresh_token},
        headers=member.headers,
    )
    assert response.status_code == 204
    await assert_refused(client, member.access_token)
    refresh = await client.post(f"{API}/auth/refresh", json={"refresh_token": member.refresh_token})
    assert refresh.status_code == 401


async def test_a_new_token_for_a_logged_out_session_is_refused(client, member, secret):
    """Logout ends the session, not just one token: a fresh signature on it is dead too."""
    await client.post(f"{API}/auth/logout", headers=member.headers)
    await assert_refused(client, hs256(claims_of(member), secret))


async def test_reused_refresh_token_is_refused_and_revokes_the_whole_login(client, member, pg):
    first = await client.post(f"{API}/auth/refresh", json={"refresh_token": member.refresh_token})
    assert first.status_code == 200
    rotated = first.json()
    # Past the few seconds in which tabs of one browser may present it again.
    await end_reuse_interval(pg, member.refresh_token)
    replay = await client.post(f"{API}/auth/refresh", json={"refresh_token": member.refresh_token})
    assert replay.status_code == 401
    await assert_refused(client, rotated["access_token"])
    later = await client.post(
        f"{API}/auth/refresh", json={"refresh_token": rotated["refresh_token"]}
    )
    assert later.status_code == 401


async def test_tokens_of_a_removed_member_are_refused(client, factory):
    family = await factory.family(["adult", "teen"])
    teen = family.by_role("teen")
    await assert_accepted(client, teen.access_token, teen)
    removal = await client.delete(
        f"{API}/families/me/members/{teen.id}", headers=family.adult.headers
    )
    assert removal.status_code == 204
    await assert_refused(client, teen.access_token)
    refresh = await client.post(f"{API}/auth/refresh", json={"refresh_token": teen.refresh_token})
    assert refresh.status_code == 401
    login = await client.post(
        f"{API}/auth/login", json={"email": teen.email, "password": teen.password}
    )
    assert login.status_code == 401


async def test_tokens_of_a_deleted_user_are_refused(client, factory, pg, secret):
    family = await factory.family(["adult", "teen"])
    teen = family.by_role("teen")
    await assert_accepted(client, teen.access_token, teen)
    deleted = await pg.execute("delete from auth.users where id = $1", uuid.UUID(teen.id))
    assert deleted == "DELETE 1"
    await assert_refused(client, teen.access_token)
    await assert_refused(client, hs256(claims_of(teen), secret))
    refresh = await client.post(f"{API}/auth/refresh", json={"refresh_token": teen.refresh_token})
    assert refresh.status_code == 401
    login = await client.post(
        f"{API}/auth/login", json={"email": teen.email, "password": teen.password}
    )
    assert login.status_code == 401
    # The family goes on without them.
    await assert_accepted(client, family.adult.access_token, family.adult)
