"""Shared by the attack suites: a family with one of everything, and a snapshot of its rows.

`build_world` makes a family (adult founder, teen, child, grandparent) through the real API,
with a published memory carrying a processed photo, a draft, a reaction, a comment and a
reply, a pending invite and a pet: one real id for every kind of path parameter. The
snapshot reads every row (and stored file) of a family with the superuser pool, so a test
can show that an attack changed nothing.
"""

import functools
import hashlib
import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from app.main import create_app
from tests.conftest import make_settings
from tests.helpers import API
from tests.helpers import media_samples as samples
from tests.helpers.factories import Factory, Family, Member

ROLES = ("adult", "teen", "child", "grandparent")


@functools.cache
def openapi_schema() -> dict[str, Any]:
    """The app's OpenAPI document, for parametrizing tests at collection time.

    The app is only built, never started (no database); tests compare it with the live one.
    """
    placeholder = make_settings("postgresql://unused@localhost/unused", Path("/nonexistent"))
    return create_app(placeholder).openapi()


def operations(schema: dict[str, Any]) -> list[tuple[str, str]]:
    """Every (METHOD, path) of the schema, sorted."""
    return sorted(
        (method.upper(), path) for path, item in schema["paths"].items() for method in item
    )


@dataclass
class World:
    family: Family
    pet_id: str
    memory: dict[str, Any]  # published, by the adult, with one processed photo
    draft: dict[str, Any]  # a draft by the adult
    media: dict[str, Any]
    reaction: dict[str, Any]  # the adult's ❤️ on `memory`
    comment: dict[str, Any]  # the adult's top-level comment on `memory`
    reply: dict[str, Any]  # the teen's reply to `comment`
    invite: dict[str, Any]  # pending teen invite (with its token)
    import_job: dict[str, Any]  # a queued import (of an empty zip) started by the adult
    export: dict[str, Any]  # the adult's archive export (queued)
    tag: str  # in every text of this world, so its data is recognisable anywhere

    @property
    def id(self) -> str:
        return self.family.id

    @property
    def secrets(self) -> list[str]:
        """Texts only this family may ever see."""
        return [
            self.tag,
            self.memory["title"],
            self.draft["title"],
            self.comment["content"],
            self.reply["content"],
            self.invite["email"],
        ]

    def member(self, role: str) -> Member:
        return self.family.by_role(role)

    @property
    def adult(self) -> Member:
        return self.family.adult


async def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, f"{response.request.url}: {response.text}"
    return response.json() if response.content else None


async def build_world(client: httpx.AsyncClient, *, photo: bool = True) -> World:
    factory = Factory(client)
    tag = f"tag{uuid.uuid4().hex[:10]}"
    family = await factory.family(list(ROLES))
    adult, teen = family.adult, family.by_role("teen")
    pet = await ok(
        await client.post(
            f"{API}/auth/register/pet", json={"display_name": f"Rex {tag}"}, headers=adult.headers
        ),
        201,
    )
    memory = await samples.create_memory(
        client, adult, title=f"Summer at the lake {tag}", status="published", tags=[tag]
    )
    media: dict[str, Any] = {}
    if photo:
        uploaded = await samples.upload(
            client, adult, memory["id"], samples.jpeg((64, 48)), "image/jpeg", "lake.jpg"
        )
        media = await samples.wait_for_media(client, adult, memory["id"], uploaded["id"])
        assert media["processing_status"] == "completed", media
    draft = await samples.create_memory(client, adult, title=f"Secret plans {tag}", status="draft")
    reaction = await ok(
        await client.post(
            f"{API}/feed/memories/{memory['id']}/reactions",
            json={"emoji": "❤️"},
            headers=adult.headers,
        ),
        201,
    )
    comment = await ok(
        await client.post(
            f"{API}/feed/memories/{memory['id']}/comments",
            json={"content": f"What a day {tag}"},
            headers=adult.headers,
        ),
        201,
    )
    reply = await ok(
        await client.post(
            f"{API}/feed/memories/{memory['id']}/comments",
            json={"content": f"The best {tag}", "parent_comment_id": comment["id"]},
            headers=teen.headers,
        ),
        201,
    )
    invite = await factory.invite(adult, "teen")
    import_job = await _queued_import(client, adult)
    export = await ok(await client.post(f"{API}/families/me/exports", headers=adult.headers), 202)
    return World(
        family=family,
        pet_id=pet["pet_id"],
        memory=memory,
        draft=draft,
        media=media,
        reaction=reaction,
        comment=comment,
        reply=reply,
        invite=invite,
        import_job=import_job,
        export=export,
        tag=tag,
    )


# An empty zip: just the end of its central directory.
EMPTY_ZIP = b"PK\x05\x06" + bytes(18)


async def _queued_import(client: httpx.AsyncClient, adult: Member) -> Any:
    ticket = await ok(
        await client.post(
            f"{API}/storage/upload-url",
            json={"purpose": "import", "file_name": "t.zip", "mime_type": "application/zip"},
            headers=adult.headers,
        )
    )
    await ok(await client.put(ticket["upload_url"], content=EMPTY_ZIP), 201)
    return await ok(
        await client.post(
            f"{API}/families/me/imports",
            json={"storage_path": ticket["storage_path"]},
            headers=adult.headers,
        ),
        202,
    )


# Snapshots ------------------------------------------------------------------------------

_FAMILY_TABLES = (
    "public.user_profiles",
    "public.pet_profiles",
    "public.invitations",
    "public.memories",
    "public.memory_media",
    "public.memory_reactions",
    "public.memory_comments",
)


async def snapshot(pg: asyncpg.Pool, family_id: str, bucket_dir: Path | None = None) -> dict:
    """Every row of the family (and its members' sessions and accounts), and its files."""
    fid = uuid.UUID(family_id)
    state: dict[str, Any] = {
        "family_units": await _rows(pg, "select * from public.family_units where id = $1", fid)
    }
    for table in _FAMILY_TABLES:
        state[table] = await _rows(pg, f"select * from {table} where family_unit_id = $1", fid)
    state["sessions"] = await _rows(
        pg,
        "select s.* from app.auth_sessions s join public.user_profiles p on p.id = s.user_id"
        " where p.family_unit_id = $1",
        fid,
    )
    state["refresh_tokens"] = await _rows(
        pg,
        "select t.* from app.refresh_tokens t join app.auth_sessions s on s.id = t.session_id"
        " join public.user_profiles p on p.id = s.user_id where p.family_unit_id = $1",
        fid,
    )
    state["users"] = await _rows(
        pg,
        "select u.id from auth.users u join public.user_profiles p on p.id = u.id"
        " where p.family_unit_id = $1",
        fid,
    )
    if bucket_dir is not None:
        folder = bucket_dir / family_id
        state["files"] = (
            sorted(
                (str(p.relative_to(folder)), hashlib.sha256(p.read_bytes()).hexdigest())
                for p in folder.rglob("*")
                if p.is_file()
            )
            if folder.exists()
            else []
        )
    return state


async def _rows(pg: asyncpg.Pool, sql: str, *args: Any) -> list[str]:
    rows = await pg.fetch(sql, *args)
    return sorted(json.dumps(dict(row), default=str, sort_keys=True) for row in rows)
