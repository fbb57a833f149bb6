"""Test doubles for a Supabase project: GoTrue over respx, signing keys, a Supabase-like database.

`FakeGoTrue` answers the four Supabase Auth endpoints the backend uses with the request and
response shapes of the real service, and writes `auth.users` in our database as the real one
does (GoTrue and the backend share the project's Postgres; the profile's foreign key needs the
row). Sources of the shapes, all in github.com/supabase/auth:

- `POST /admin/users` (internal/api/admin.go, adminUserCreate): body `AdminUserParams`
  (`email`, `password`, `email_confirm`, `user_metadata`, `app_metadata`); answers 200 with the
  user object (internal/models/user.go: `id`, `aud`, `role`, `email`, `email_confirmed_at`,
  `app_metadata`, `user_metadata`, `identities`, `created_at`, ...). A taken address is 422
  `{"code": 422, "error_code": "email_exists", "msg": "A user with this email address has
  already been registered"}` (internal/api/errors.go HTTPError, apierrors/errorcode.go).
- `DELETE /admin/users/{id}` (adminUserDelete): 200 `{}`; unknown id 404 `user_not_found`.
- `POST /token?grant_type=password` (internal/api/token.go): 200 `AccessTokenResponse`
  (`access_token`, `token_type`, `expires_in`, `expires_at`, `refresh_token`, `user`); wrong
  credentials 400 `{"code": 400, "error_code": "invalid_credentials", "msg": "Invalid login
  credentials"}` (older versions: `{"error": "invalid_grant", "error_description": ...}`).
- `POST /logout?scope=local|global` (internal/api/logout.go): 204.
- `PUT /admin/users/{id}` (adminUserUpdate): body `AdminUserParams` (`password`); 200 with the
  user object.
- `DELETE /admin/users/{id}` with `{"should_soft_delete": true}` (adminUserDelete, models.User
  SoftDeleteUser): the row stays, email obfuscated, password cleared, sessions gone; 200 `{}`.
- `POST /recover` (internal/api/recover.go): body `RecoverParams` (`email`), `redirect_to` in
  the query; 200 `{}` whether or not the address has an account; 429
  `over_email_send_rate_limit` when asked again within a minute (known accounts only).
- `PUT /user` (internal/api/user.go UserUpdate) with the recovery link's access token: body
  `{"password": ...}`; 200 with the user object; 422 `weak_password` or `same_password`; an
  unknown or expired token 401 (`bad_jwt`, `session_not_found`).
- `GET /.well-known/jwks.json` (internal/api/jwks.go): `{"keys": [<public JWK>]}`.
- A missing or wrong API key is refused by the API gateway before GoTrue: 401
  `{"message": "Invalid API key"}`.

Storage's own double is `FakeSupabaseStorage` in tests/test_storage_backends.py; `started`
here answers only the bucket check an app makes at start-up (github.com/supabase/storage,
src/http/routes/bucket/getBucket.ts: `GET /bucket/{id}` → the bucket row).
"""

import base64
import json
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import respx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import FastAPI
from jose import jwt

SUPABASE_URL = "https://timelesstest.supabase.co"
AUTH_URL = f"{SUPABASE_URL}/auth/v1"
ISSUER = AUTH_URL
# Fake values: long and distinctive, so a test can prove they never reach a log or a response.
SERVICE_ROLE_KEY = "service-role-key-" + "S" * 40
ANON_KEY = "anon-key-" + "A" * 40

STORAGE_URL = f"{SUPABASE_URL}/storage/v1"
# The default SUPABASE_STORAGE_BUCKET, which SUPABASE_SETTINGS keep.
BUCKET = "memories"


def bucket_row(bucket: str = BUCKET) -> dict[str, object]:
    """`GET /bucket/{id}` as Storage answers it for supabase/migrations' bucket."""
    return {
        "id": bucket,
        "name": bucket,
        "owner": "",
        "public": False,
        "file_size_limit": 52428800,
        "allowed_mime_types": ["image/jpeg", "image/png", "video/mp4"],
        "created_at": "2025-01-05T00:00:00.000Z",
        "updated_at": "2025-01-05T00:00:00.000Z",
    }


@asynccontextmanager
async def started(
    application: FastAPI, bucket: httpx.Response | None = None
) -> AsyncIterator[None]:
    """Run the app's lifespan; Storage answers its start-up bucket check with `bucket`.

    Nothing else may reach the network while it starts; afterwards each test mocks its own.
    """
    answer = bucket if bucket is not None else httpx.Response(200, json=bucket_row())
    async with AsyncExitStack() as stack:
        with respx.mock(assert_all_called=False, assert_all_mocked=True) as router:
            router.get(f"{STORAGE_URL}/bucket/{BUCKET}").mock(return_value=answer)
            await stack.enter_async_context(application.router.lifespan_context(application))
        yield


SUPABASE_SETTINGS: dict[str, object] = {
    "supabase_url": SUPABASE_URL,
    "supabase_service_role_key": SERVICE_ROLE_KEY,
    "supabase_anon_key": ANON_KEY,
}


# --- signing keys and Supabase access tokens --------------------------------------------------


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass(frozen=True)
class SigningKey:
    """An ES256 key as Supabase's asymmetric JWT signing keys are."""

    kid: str
    private_pem: str
    public_jwk: dict[str, Any]

    @classmethod
    def generate(cls) -> "SigningKey":
        private_key = ec.generate_private_key(ec.SECP256R1())
        numbers = private_key.public_key().public_numbers()
        kid = uuid.uuid4().hex
        pem = private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        jwk = {
            "kty": "EC",
            "crv": "P-256",
            "x": _b64url_uint(numbers.x),
            "y": _b64url_uint(numbers.y),
            "kid": kid,
            "alg": "ES256",
            "use": "sig",
            "key_ops": ["verify"],
        }
        return cls(kid, pem, jwk)

    def token(self, sub: uuid.UUID | str, *, expires_in: int = 3600, **claims: Any) -> str:
        """A Supabase Auth access token (claims as GoTrue's AccessTokenClaims)."""
        now = int(time.time())
        payload = {
            "iss": ISSUER,
            "sub": str(sub),
            "aud": "authenticated",
            "exp": now + expires_in,
            "iat": now - 5,
            "email": "",
            "phone": "",
            "role": "authenticated",
            "aal": "aal1",
            "session_id": str(uuid.uuid4()),
            "is_anonymous": False,
            **claims,
        }
        return jwt.encode(payload, self.private_pem, algorithm="ES256", headers={"kid": self.kid})


# --- GoTrue ------------------------------------------------------------------------------------


@dataclass
class FakeUser:
    id: uuid.UUID
    email: str
    password: str
    user_metadata: dict[str, Any]
    app_metadata: dict[str, Any]
    email_confirmed: bool
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    def as_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "aud": "authenticated",
            "role": "authenticated",
            "email": self.email,
            "email_confirmed_at": self.created_at if self.email_confirmed else None,
            "phone": "",
            "confirmed_at": self.created_at if self.email_confirmed else None,
            "last_sign_in_at": None,
            "app_metadata": {"provider": "email", "providers": ["email"], **self.app_metadata},
            "user_metadata": self.user_metadata,
            "identities": [],
            "created_at": self.created_at,
            "updated_at": self.created_at,
            "is_anonymous": False,
        }


def gotrue_error(status: int, error_code: str, msg: str) -> httpx.Response:
    return httpx.Response(status, json={"code": status, "error_code": error_code, "msg": msg})


class FakeGoTrue:
    """Supabase Auth as respx routes; see the module docstring for where each shape comes from."""

    def __init__(self, router: respx.MockRouter, pg: asyncpg.Pool, key: SigningKey) -> None:
        self.pg = pg
        self.key = key
        self.users: dict[uuid.UUID, FakeUser] = {}
        # When False, a created account is not written to auth.users (see the FK test).
        self.writes_auth_users = True
        self.create = router.post(f"{AUTH_URL}/admin/users").mock(side_effect=self._create)
        self.delete = router.delete(url__regex=rf"^{re.escape(AUTH_URL)}/admin/users/[^/]+$")
        self.delete.mock(side_effect=self._delete)
        self.token = router.post(f"{AUTH_URL}/token", params={"grant_type": "password"})
        self.token.mock(side_effect=self._token)
        self.logout = router.post(f"{AUTH_URL}/logout").mock(side_effect=self._logout)
        self.jwks = router.get(f"{AUTH_URL}/.well-known/jwks.json").mock(side_effect=self._jwks)
        self.update = router.put(url__regex=rf"^{re.escape(AUTH_URL)}/admin/users/[^/]+$")
        self.update.mock(side_effect=self._update)
        self.recover = router.post(f"{AUTH_URL}/recover").mock(side_effect=self._recover)
        self.user_update = router.put(f"{AUTH_URL}/user").mock(side_effect=self._user_update)
        # What a recovery link would carry: access token -> user (see recovery_token_for).
        self.recovery_tokens: dict[str, uuid.UUID] = {}
        self.recovered: list[str] = []

    def by_email(self, email: str) -> FakeUser | None:
        return next((u for u in self.users.values() if u.email == email.lower()), None)

    @staticmethod
    def _refused_key(request: httpx.Request, *, admin: bool) -> httpx.Response | None:
        apikey = request.headers.get("apikey")
        if admin:
            ok = apikey == SERVICE_ROLE_KEY and (
                request.headers.get("authorization") == f"Bearer {SERVICE_ROLE_KEY}"
            )
        else:
            ok = apikey in (ANON_KEY, SERVICE_ROLE_KEY)
        return None if ok else httpx.Response(401, json={"message": "Invalid API key"})

    async def _create(self, request: httpx.Request) -> httpx.Response:
        if (refused := self._refused_key(request, admin=True)) is not None:
            return refused
        body = json.loads(request.content)
        email = body["email"].lower()
        if self.by_email(email) is not None:
            return gotrue_error(
                422, "email_exists", "A user with this email address has already been registered"
            )
        user = FakeUser(
            id=uuid.uuid4(),
            email=email,
            password=body["password"],
            user_metadata=body.get("user_metadata") or {},
            app_metadata=body.get("app_metadata") or {},
            email_confirmed=bool(body.get("email_confirm")),
        )
        self.users[user.id] = user
        if self.writes_auth_users:
            await self.pg.execute(
                "insert into auth.users (id, email, encrypted_password, raw_user_meta_data)"
                " values ($1, $2, '$2a$10$fake', $3::jsonb)",
                user.id,
                email,
                json.dumps(user.user_metadata),
            )
        return httpx.Response(200, json=user.as_json())

    def recovery_token_for(self, email: str) -> str:
        """The access token the recovery link mailed to `email` signs its holder in with."""
        user = self.by_email(email)
        assert user is not None
        token = self.key.token(user.id, email=user.email, amr=[{"method": "recovery"}])
        self.recovery_tokens[token] = user.id
        return token

    async def _update(self, request: httpx.Request) -> httpx.Response:
        if (refused := self._refused_key(request, admin=True)) is not None:
            return refused
        user = self.users.get(uuid.UUID(request.url.path.rsplit("/", 1)[1]))
        if user is None:
            return gotrue_error(404, "user_not_found", "User not found")
        body = json.loads(request.content)
        if "password" in body:
            user.password = body["password"]
        return httpx.Response(200, json=user.as_json())

    async def _recover(self, request: httpx.Request) -> httpx.Response:
        if (refused := self._refused_key(request, admin=False)) is not None:
            return refused
        self.recovered.append(json.loads(request.content)["email"])
        return httpx.Response(200, json={})

    async def _user_update(self, request: httpx.Request) -> httpx.Response:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        user = self.users.get(self.recovery_tokens.get(token, uuid.UUID(int=0)))
        if user is None:
            return gotrue_error(401, "bad_jwt", "invalid JWT: unable to parse or verify signature")
        password = json.loads(request.content).get("password", "")
        if len(password) < 6:
            return gotrue_error(422, "weak_password", "Password should be at least 6 characters.")
        if password == user.password:
            return gotrue_error(
                422, "same_password", "New password should be different from the old password."
            )
        user.password = password
        return httpx.Response(200, json=user.as_json())

    async def _delete(self, request: httpx.Request) -> httpx.Response:
        if (refused := self._refused_key(request, admin=True)) is not None:
            return refused
        try:
            user_id = uuid.UUID(request.url.path.rsplit("/", 1)[1])
        except ValueError:
            return gotrue_error(400, "validation_failed", "user_id must be an UUID")
        if request.content and json.loads(request.content).get("should_soft_delete"):
            user = self.users.get(user_id)
            if user is None:
                return gotrue_error(404, "user_not_found", "User not found")
            user.email, user.password = f"deleted-{user_id.hex}@obfuscated.invalid", ""
            await self.pg.execute(
                "update auth.users set email = $2, encrypted_password = '' where id = $1",
                user_id,
                user.email,
            )
            return httpx.Response(200, json={})
        if self.users.pop(user_id, None) is None:
            return gotrue_error(404, "user_not_found", "User not found")
        await self.pg.execute("delete from auth.users where id = $1", user_id)
        return httpx.Response(200, json={})

    async def _token(self, request: httpx.Request) -> httpx.Response:
        if (refused := self._refused_key(request, admin=False)) is not None:
            return refused
        body = json.loads(request.content)
        user = self.by_email(body.get("email", ""))
        if user is None or not secrets.compare_digest(user.password, body.get("password", "")):
            return gotrue_error(400, "invalid_credentials", "Invalid login credentials")
        if not user.email_confirmed:
            return gotrue_error(400, "email_not_confirmed", "Email not confirmed")
        now = int(time.time())
        return httpx.Response(
            200,
            json={
                "access_token": self.key.token(user.id, email=user.email),
                "token_type": "bearer",
                "expires_in": 3600,
                "expires_at": now + 3600,
                "refresh_token": secrets.token_urlsafe(9),
                "user": user.as_json(),
            },
        )

    async def _logout(self, request: httpx.Request) -> httpx.Response:
        if not request.headers.get("authorization", "").startswith("Bearer "):
            return gotrue_error(401, "no_authorization", "This endpoint requires a Bearer token")
        return httpx.Response(204)

    def _jwks(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"keys": [self.key.public_jwk]})


# --- a database prepared like a Supabase project's ----------------------------------------------


def dsn_for_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{database}"))


# Roles Supabase's image creates (supabase/postgres migrations/db/init-scripts). Roles are shared
# by the whole server: the fixture drops again only those it created.
SUPABASE_ROLES = {
    "supabase_admin": "nologin",
    "supabase_auth_admin": "nologin noinherit createrole",
    "supabase_storage_admin": "nologin noinherit createrole",
    "anon": "nologin noinherit",
    "authenticated": "nologin noinherit",
    "service_role": "nologin noinherit bypassrls",
}

# auth.uid() exactly as Supabase's auth migrations define it today; the test compares the stored
# source with this text to prove our bootstrap did not replace it.
SUPABASE_AUTH_UID_BODY = """
  select
  coalesce(
    nullif(current_setting('request.jwt.claim.sub', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
  )::uuid
"""

SUPABASE_LIKE_SCHEMA = (
    """
-- What Supabase installs before any project migration runs.

-- pgcrypto lives in `extensions` on Supabase. The built-in server has no pgcrypto, so seed.sql's
-- two calls are stood in for (the hash is never checked here: no GoTrue reads it).
create schema extensions;
grant usage on schema extensions to anon, authenticated, service_role;
create function extensions.gen_salt(text) returns text language sql
  as $f$ select '$2a$10$stubsaltstubsaltstubsa' $f$;
create function extensions.crypt(text, text) returns text language sql
  as $f$ select $2 || md5($1) $f$;

-- auth: the schema, auth.users and auth.identities with Supabase Auth's real columns (a dump of
-- a current project; supabase/auth migrations), and the claim functions.
create schema auth authorization supabase_auth_admin;
grant usage on schema auth to anon, authenticated, service_role;

create table auth.users (
  instance_id uuid,
  id uuid not null primary key,
  aud varchar(255),
  role varchar(255),
  email varchar(255),
  encrypted_password varchar(255),
  email_confirmed_at timestamptz,
  invited_at timestamptz,
  confirmation_token varchar(255),
  confirmation_sent_at timestamptz,
  recovery_token varchar(255),
  recovery_sent_at timestamptz,
  email_change_token_new varchar(255),
  email_change varchar(255),
  email_change_sent_at timestamptz,
  last_sign_in_at timestamptz,
  raw_app_meta_data jsonb,
  raw_user_meta_data jsonb,
  is_super_admin boolean,
  created_at timestamptz,
  updated_at timestamptz,
  phone text unique default null,
  phone_confirmed_at timestamptz,
  phone_change text default '',
  phone_change_token varchar(255) default '',
  phone_change_sent_at timestamptz,
  confirmed_at timestamptz generated always as (least(email_confirmed_at, phone_confirmed_at))
    stored,
  email_change_token_current varchar(255) default '',
  email_change_confirm_status smallint default 0
    check (email_change_confirm_status >= 0 and email_change_confirm_status <= 2),
  banned_until timestamptz,
  reauthentication_token varchar(255) default '',
  reauthentication_sent_at timestamptz,
  is_sso_user boolean not null default false,
  deleted_at timestamptz,
  is_anonymous boolean not null default false
);
create unique index users_email_partial_key on auth.users (email) where is_sso_user = false;
alter table auth.users owner to supabase_auth_admin;
alter table auth.users enable row level security;

create table auth.identities (
  provider_id text not null,
  user_id uuid not null references auth.users (id) on delete cascade,
  identity_data jsonb not null,
  provider text not null,
  last_sign_in_at timestamptz,
  created_at timestamptz,
  updated_at timestamptz,
  email text generated always as (lower(identity_data ->> 'email')) stored,
  id uuid not null default gen_random_uuid() primary key,
  constraint identities_provider_id_provider_unique unique (provider_id, provider)
);
alter table auth.identities owner to supabase_auth_admin;
alter table auth.identities enable row level security;

create function auth.uid() returns uuid language sql stable as $f$"""
    + SUPABASE_AUTH_UID_BODY
    + """$f$;
create function auth.role() returns text language sql stable as $f$
  select coalesce(
    nullif(current_setting('request.jwt.claim.role', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
  )::text
$f$;
create function auth.jwt() returns jsonb language sql stable as $f$
  select coalesce(
    nullif(current_setting('request.jwt.claim', true), ''),
    nullif(current_setting('request.jwt.claims', true), '')
  )::jsonb
$f$;
alter function auth.uid() owner to supabase_auth_admin;
alter function auth.role() owner to supabase_auth_admin;
alter function auth.jwt() owner to supabase_auth_admin;
grant execute on function auth.uid(), auth.role(), auth.jwt() to anon, authenticated, service_role;

-- storage: buckets and objects as supabase/storage's tenant migrations leave them, owned by
-- supabase_storage_admin, row level security on, and the API roles granted everything (the
-- schema's default privileges), so only policies decide.
create schema storage authorization supabase_storage_admin;
grant usage on schema storage to anon, authenticated, service_role;
create type storage.buckettype as enum ('STANDARD', 'ANALYTICS', 'VECTOR');

create table storage.buckets (
  id text not null primary key,
  name text not null,
  owner uuid,
  created_at timestamptz default now(),
  updated_at timestamptz default now(),
  public boolean default false,
  avif_autodetection boolean default false,
  file_size_limit bigint,
  allowed_mime_types text[],
  owner_id text,
  type storage.buckettype not null default 'STANDARD'
);
create unique index bname on storage.buckets (name);

create table storage.objects (
  id uuid not null default gen_random_uuid() primary key,
  bucket_id text references storage.buckets (id),
  name text,
  owner uuid,
  created_at timestamptz default now(),
  updated_at timestamptz default now(),
  last_accessed_at timestamptz default now(),
  metadata jsonb,
  path_tokens text[] generated always as (string_to_array(name, '/')) stored,
  version text,
  owner_id text,
  user_metadata jsonb,
  level integer
);
create unique index bucketid_objname on storage.objects (bucket_id, name);

create function storage.foldername(name text) returns text[] language plpgsql as $f$
declare
_parts text[];
begin
	select string_to_array(name, '/') into _parts;
	return _parts[1:array_length(_parts,1)-1];
end
$f$;

alter table storage.buckets owner to supabase_storage_admin;
alter table storage.objects owner to supabase_storage_admin;
alter function storage.foldername(text) owner to supabase_storage_admin;
alter table storage.buckets enable row level security;
alter table storage.objects enable row level security;
grant all on storage.buckets, storage.objects to anon, authenticated, service_role;
grant execute on function storage.foldername(text) to anon, authenticated, service_role;

-- Supabase's default privileges in `public`: every table the migrating role creates is granted
-- to the API roles in full (supabase/postgres init-scripts; the Data API relies on it).
alter default privileges in schema public grant all on tables to anon, authenticated, service_role;
alter default privileges in schema public grant all on sequences
  to anon, authenticated, service_role;
alter default privileges in schema public grant all on functions
  to anon, authenticated, service_role;
"""
)


@dataclass
class SupabaseLikeDatabase:
    dsn: str
    name: str
    created_roles: list[str]


async def create_supabase_like_database(server_dsn: str) -> SupabaseLikeDatabase:
    """A new database on the test server, prepared as a fresh Supabase project's is."""
    name = f"tl_supabase_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(server_dsn)
    try:
        created = []
        for role, options in SUPABASE_ROLES.items():
            if not await admin.fetchval("select 1 from pg_roles where rolname = $1", role):
                await admin.execute(f"create role {role} {options}")
                created.append(role)
        await admin.execute(f"create database {name}")
    finally:
        await admin.close()
    dsn = dsn_for_database(server_dsn, name)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(SUPABASE_LIKE_SCHEMA)
    finally:
        await conn.close()
    return SupabaseLikeDatabase(dsn=dsn, name=name, created_roles=created)


async def drop_supabase_like_database(server_dsn: str, database: SupabaseLikeDatabase) -> None:
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f"drop database if exists {database.name} with (force)")
        # supabase_admin above all: while it exists, every database looks like Supabase to
        # app.db.migrate and would skip the bootstrap.
        for role in reversed(database.created_roles):
            await admin.execute(f"drop role if exists {role}")
    finally:
        await admin.close()
