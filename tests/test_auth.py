"""Every auth flow of docs/api.md, against the real app and database."""

import asyncio
import base64
import json
import time
import uuid

import pytest
from jose import jwt

from app.adapters import tokens
from app.errors import Unauthorized
from tests.helpers import API
from tests.helpers.factories import PASSWORD, unique_email
from tests.helpers.sessions import end_reuse_interval

SECRET = "test-secret-key-that-is-long-enough-0123456789"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def assert_401(client, headers: dict[str, str], path: str = f"{API}/auth/me") -> None:
    response = await client.get(path, headers=headers)
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    assert isinstance(response.json()["detail"], str)


# Registration -------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["adult", "teen", "grandparent"])
async def test_register_founds_a_family(client, pg, role):
    email = unique_email(role)
    response = await client.post(
        f"{API}/auth/register/{role}",
        json={"email": email, "password": PASSWORD, "display_name": "Ann", "family_name": "Oaks"},
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["role"] == role
    assert body["email"] == email
    tokens = body["tokens"]
    assert tokens["token_type"] == "bearer"
    assert tokens["expires_in"] == 900
    claims = jwt.decode(tokens["access_token"], SECRET, algorithms=["HS256"])
    assert claims["sub"] == body["user_id"]
    assert claims["role"] == role
    assert claims["family_unit_id"] == body["family_unit_id"]
    assert claims["type"] == "access"
    assert claims["exp"] - claims["iat"] == 900
    assert claims["jti"]
    family = await pg.fetchrow(
        "select name, created_by::text from public.family_units where id = $1",
        uuid.UUID(body["family_unit_id"]),
    )
    assert family["name"] == "Oaks"
    assert family["created_by"] == body["user_id"]


async def test_register_child_directly_is_not_a_route(client):
    response = await client.post(
        f"{API}/auth/register/child",
        json={"email": unique_email(), "password": PASSWORD, "display_name": "Kid"},
    )
    assert response.status_code == 422  # a child needs an invite_token


async def test_default_family_name(client):
    response = await client.post(
        f"{API}/auth/register/adult",
        json={"email": unique_email(), "password": PASSWORD, "display_name": "Maria"},
    )
    family = await client.get(
        f"{API}/families/me", headers=bearer(response.json()["tokens"]["access_token"])
    )
    assert family.json()["name"] == "Maria's family"


async def test_passwords_are_stored_as_argon2id(client, pg):
    member = await _register(client)
    stored = await pg.fetchval(
        "select encrypted_password from auth.users where id = $1", uuid.UUID(member["user_id"])
    )
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored


async def _register(client, role: str = "adult", email: str | None = None) -> dict:
    response = await client.post(
        f"{API}/auth/register/{role}",
        json={"email": email or unique_email(), "password": PASSWORD, "display_name": "X"},
    )
    assert response.status_code == 201, response.text
    return response.json()


# Login --------------------------------------------------------------------------------


async def test_login_with_email_any_case(client):
    email = unique_email()
    await _register(client, email=email)
    response = await client.post(
        f"{API}/auth/login", json={"email": email.upper(), "password": PASSWORD}
    )
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"access_token", "refresh_token", "token_type", "expires_in"}


async def test_wrong_password_and_unknown_user_get_the_same_answer(client):
    email = unique_email()
    await _register(client, email=email)
    wrong = await client.post(
        f"{API}/auth/login", json={"email": email, "password": "not the password"}
    )
    unknown = await client.post(
        f"{API}/auth/login", json={"email": unique_email(), "password": PASSWORD}
    )
    assert wrong.status_code == unknown.status_code == 401
    wrong_body, unknown_body = wrong.json(), unknown.json()
    assert wrong_body.pop("request_id") != unknown_body.pop("request_id")
    assert wrong_body == unknown_body


async def test_provisioned_child_logs_in_with_username(client, factory):
    family = await factory.family(["adult"])
    response = await client.post(
        f"{API}/auth/provision/child",
        json={"display_name": "Léa"},
        headers=family.adult.headers,
    )
    assert response.status_code == 201, response.text
    child = response.json()
    assert child["username"].startswith("lea.")
    assert len(child["password"]) >= 10
    assert child["family_unit_id"] == family.id
    tokens = await factory.login(child["username"].upper(), child["password"])
    me = await client.get(f"{API}/auth/me", headers=bearer(tokens["access_token"]))
    assert me.json()["role"] == "child"
    assert me.json()["username"] == child["username"]
    assert me.json()["email"] is None


async def test_child_registers_with_a_child_invite(client, factory):
    family = await factory.family(["adult"])
    invite = await factory.invite(family.adult, "child")
    response = await client.post(
        f"{API}/auth/register/child",
        json={"invite_token": invite["token"], "password": PASSWORD, "display_name": "Tom"},
    )
    assert response.status_code == 201, response.text
    assert response.json()["role"] == "child"
    assert response.json()["family_unit_id"] == family.id


async def test_register_child_refuses_a_non_child_invite(client, factory, pg):
    family = await factory.family(["adult"])
    invite = await factory.invite(family.adult, "teen")
    response = await client.post(
        f"{API}/auth/register/child",
        json={"invite_token": invite["token"], "password": PASSWORD, "display_name": "Tom"},
    )
    assert response.status_code == 400
    status = await pg.fetchval(
        "select status from public.invitations where id = $1", uuid.UUID(invite["id"])
    )
    assert status == "pending"


# Refresh rotation and reuse detection ----------------------------------------------------


async def test_refresh_rotates_and_old_token_is_single_use(client):
    first = (await _register(client))["tokens"]
    response = await client.post(
        f"{API}/auth/refresh", json={"refresh_token": first["refresh_token"]}
    )
    assert response.status_code == 200, response.text
    second = response.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    me = await client.get(f"{API}/auth/me", headers=bearer(second["access_token"]))
    assert me.status_code == 200


async def test_reusing_a_rotated_refresh_token_kills_its_descendants(client, pg):
    first = (await _register(client))["tokens"]
    second = (
        await client.post(f"{API}/auth/refresh", json={"refresh_token": first["refresh_token"]})
    ).json()
    third = (
        await client.post(f"{API}/auth/refresh", json={"refresh_token": second["refresh_token"]})
    ).json()
    # An attacker replays the first refresh token, after the reuse interval for tabs.
    await end_reuse_interval(pg, first["refresh_token"])
    replay = await client.post(
        f"{API}/auth/refresh", json={"refresh_token": first["refresh_token"]}
    )
    assert replay.status_code == 401
    # Every token descended from that login is now dead, access tokens included.
    for token in (second["access_token"], third["access_token"]):
        await assert_401(client, bearer(token))
    latest = await client.post(
        f"{API}/auth/refresh", json={"refresh_token": third["refresh_token"]}
    )
    assert latest.status_code == 401


async def test_reuse_detection_does_not_touch_other_logins(client, pg):
    email = unique_email()
    registered = await _register(client, email=email)
    other_login = (
        await client.post(f"{API}/auth/login", json={"email": email, "password": PASSWORD})
    ).json()
    first = registered["tokens"]
    await client.post(f"{API}/auth/refresh", json={"refresh_token": first["refresh_token"]})
    await end_reuse_interval(pg, first["refresh_token"])
    replay = await client.post(
        f"{API}/auth/refresh", json={"refresh_token": first["refresh_token"]}
    )
    assert replay.status_code == 401
    me = await client.get(f"{API}/auth/me", headers=bearer(other_login["access_token"]))
    assert me.status_code == 200


async def test_expired_refresh_token_is_refused(client, pg):
    tokens = (await _register(client))["tokens"]
    await pg.execute(
        "update app.refresh_tokens set expires_at = now() - interval '1 second'"
        " where token_hash = encode(sha256(convert_to($1, 'utf8')), 'hex')",
        tokens["refresh_token"],
    )
    response = await client.post(
        f"{API}/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert response.status_code == 401


async def test_unknown_refresh_token_is_refused(client):
    response = await client.post(f"{API}/auth/refresh", json={"refresh_token": "nope" * 10})
    assert response.status_code == 401


# Logout ---------------------------------------------------------------------------------


async def test_logout_kills_access_and_refresh_token_at_once(client):
    tokens = (await _register(client))["tokens"]
    response = await client.post(
        f"{API}/auth/logout",
        json={"refresh_token": tokens["refresh_token"]},
        headers=bearer(tokens["access_token"]),
    )
    assert response.status_code == 204
    await assert_401(client, bearer(tokens["access_token"]))
    refreshed = await client.post(
        f"{API}/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert refreshed.status_code == 401


async def test_logout_without_body_still_ends_the_session(client):
    tokens = (await _register(client))["tokens"]
    response = await client.post(f"{API}/auth/logout", headers=bearer(tokens["access_token"]))
    assert response.status_code == 204
    await assert_401(client, bearer(tokens["access_token"]))
    refreshed = await client.post(
        f"{API}/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert refreshed.status_code == 401


async def test_logout_cannot_end_someone_elses_session(client):
    mine = (await _register(client))["tokens"]
    theirs = (await _register(client))["tokens"]
    await client.post(
        f"{API}/auth/logout",
        json={"refresh_token": theirs["refresh_token"]},
        headers=bearer(mine["access_token"]),
    )
    me = await client.get(f"{API}/auth/me", headers=bearer(theirs["access_token"]))
    assert me.status_code == 200


# Bad tokens ------------------------------------------------------------------------------


def _claims(member: dict, **overrides: object) -> dict:
    now = int(time.time())
    claims = {
        "sub": member["user_id"],
        "role": member["role"],
        "family_unit_id": member["family_unit_id"],
        "iat": now,
        "exp": now + 900,
        "jti": uuid.uuid4().hex,
        "type": "access",
    }
    claims.update(overrides)
    return claims


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def test_missing_token(client):
    await assert_401(client, {})


async def test_garbage_token(client):
    await assert_401(client, bearer("not-a-jwt"))


async def test_expired_token(client):
    member = await _register(client)
    token = jwt.encode(
        _claims(member, iat=int(time.time()) - 2000, exp=int(time.time()) - 1000),
        SECRET,
        algorithm="HS256",
    )
    await assert_401(client, bearer(token))


async def test_a_token_used_before_stops_working_when_it_expires(client):
    # Checked tokens are kept (app.adapters.tokens), but never past their expiry.
    member = await _register(client)
    now = int(time.time())
    token = jwt.encode(_claims(member, iat=now, exp=now + 2), SECRET, algorithm="HS256")
    assert (await client.get(f"{API}/auth/me", headers=bearer(token))).status_code == 200
    await asyncio.sleep(now + 3.1 - time.time())  # python-jose counts whole seconds
    expired = await client.get(f"{API}/auth/me", headers=bearer(token))
    assert expired.status_code == 401
    assert expired.json()["code"] == "token_expired"


def test_a_token_checked_with_one_secret_is_not_taken_with_another():
    now = int(time.time())
    member = {"user_id": str(uuid.uuid4()), "role": "adult", "family_unit_id": str(uuid.uuid4())}
    claims = _claims(member, sid=str(uuid.uuid4()), iat=now)
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    assert str(tokens.decode_access_token(token, secret=SECRET).user_id) == member["user_id"]
    with pytest.raises(Unauthorized):
        tokens.decode_access_token(token, secret="another-secret-entirely-0123456789")


async def test_tampered_payload(client):
    member = await _register(client)
    header, _, signature = member["tokens"]["access_token"].split(".")
    forged = _b64(_claims(member, role="adult", family_unit_id=str(uuid.uuid4())))
    await assert_401(client, bearer(f"{header}.{forged}.{signature}"))


async def test_wrong_secret(client):
    member = await _register(client)
    token = jwt.encode(_claims(member), "another-secret-entirely-0123456789", algorithm="HS256")
    await assert_401(client, bearer(token))


async def test_alg_none(client):
    member = await _register(client)
    token = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims(member))}."
    await assert_401(client, bearer(token))


async def test_refresh_token_as_access_token(client):
    member = await _register(client)
    await assert_401(client, bearer(member["tokens"]["refresh_token"]))


async def test_token_of_another_type(client):
    member = await _register(client)
    token = jwt.encode(_claims(member, type="refresh"), SECRET, algorithm="HS256")
    await assert_401(client, bearer(token))


async def test_valid_signature_for_unknown_user(client):
    member = await _register(client)
    token = jwt.encode(_claims(member, sub=str(uuid.uuid4())), SECRET, algorithm="HS256")
    await assert_401(client, bearer(token))


async def test_removed_member_loses_access_at_once(client, factory):
    family = await factory.family(["adult", "teen"])
    teen = family.by_role("teen")
    response = await client.delete(
        f"{API}/families/me/members/{teen.id}", headers=family.adult.headers
    )
    assert response.status_code == 204
    await assert_401(client, teen.headers)
    refreshed = await client.post(f"{API}/auth/refresh", json={"refresh_token": teen.refresh_token})
    assert refreshed.status_code == 401
    login = await client.post(f"{API}/auth/login", json={"email": teen.email, "password": PASSWORD})
    assert login.status_code == 401


# Profile -----------------------------------------------------------------------------------


async def test_me_and_update_me(client):
    member = await _register(client)
    headers = bearer(member["tokens"]["access_token"])
    me = (await client.get(f"{API}/auth/me", headers=headers)).json()
    assert set(me) == {
        "id",
        "email",
        "username",
        "display_name",
        "avatar_url",
        "role",
        "family_unit_id",
        "created_at",
    }
    response = await client.patch(
        f"{API}/auth/me",
        json={"display_name": "  New Name ", "avatar_url": "https://example.com/a.png"},
        headers=headers,
    )
    assert response.status_code == 200
    assert response.json()["display_name"] == "New Name"
    assert response.json()["avatar_url"] == "https://example.com/a.png"
    cleared = await client.patch(f"{API}/auth/me", json={"avatar_url": None}, headers=headers)
    assert cleared.json()["avatar_url"] is None
    assert cleared.json()["display_name"] == "New Name"


async def test_role_and_family_are_immutable_by_their_holder(client, pg):
    member = await _register(client, role="teen")
    headers = bearer(member["tokens"]["access_token"])
    response = await client.patch(
        f"{API}/auth/me",
        json={"role": "adult", "family_unit_id": str(uuid.uuid4()), "display_name": "T"},
        headers=headers,
    )
    assert response.status_code == 200
    row = await pg.fetchrow(
        "select role, family_unit_id::text from public.user_profiles where id = $1",
        uuid.UUID(member["user_id"]),
    )
    assert row["role"] == "teen"
    assert row["family_unit_id"] == member["family_unit_id"]


async def test_pet_profile(client, factory):
    family = await factory.family(["adult"])
    response = await client.post(
        f"{API}/auth/register/pet",
        json={"display_name": "Rex", "avatar_url": "https://example.com/rex.png"},
        headers=family.adult.headers,
    )
    assert response.status_code == 201, response.text
    pet = response.json()
    members = (await client.get(f"{API}/families/me", headers=family.adult.headers)).json()
    listed = [m for m in members["members"] if m["id"] == pet["pet_id"]]
    assert listed == [
        {
            "id": pet["pet_id"],
            "display_name": "Rex",
            "role": "pet",
            "avatar_url": "https://example.com/rex.png",
            "username": None,
        }
    ]
    # Pets never log in: nothing in auth.users to log in with.
    login = await client.post(f"{API}/auth/login", json={"email": "Rex", "password": PASSWORD})
    assert login.status_code == 401
