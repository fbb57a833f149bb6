"""Who may do what with memories, from the contract's table; and one family against another.

The expectations come from the contract's permission table, transcribed below as text. The
test never reads `app.models.rbac`, so a wrong table there makes these tests fail.
"""

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import media_samples as samples
from tests.helpers.factories import Family, Member
from tests.helpers.media_samples import API

# From docs/api.md, "Roles and permissions" — the memory rows, columns as in docs/api.md.
CONTRACT_TABLE = """
| Operation | adult | teen | child | grandparent |
|---|---|---|---|---|
| View family memories (published, archived) | yes | yes | yes | yes |
| Create memory | yes | yes | yes | yes |
| Edit own memory | yes | yes | yes | yes |
| Edit any memory in family | yes | no | no | yes |
| Delete own memory | yes | yes | no | yes |
| Delete any memory in family | yes | no | no | no |
"""


def _parse(table: str) -> dict[str, dict[str, bool]]:
    lines = [line.strip().strip("|") for line in table.strip().splitlines()]
    roles = [cell.strip() for cell in lines[0].split("|")[1:]]
    allowed = {}
    for line in lines[2:]:
        operation, *cells = (cell.strip() for cell in line.split("|"))
        allowed[operation] = {role: cell == "yes" for role, cell in zip(roles, cells, strict=True)}
    return allowed


ALLOWED = _parse(CONTRACT_TABLE)
ROLES = ("adult", "teen", "child", "grandparent")


async def _published(client, member: Member, title: str = "Shared") -> dict[str, Any]:
    return await samples.create_memory(client, member, title=title, status="published")


def _other_author(family: Family, actor: Member) -> Member:
    """Someone else in the family who may edit their own memories and add media."""
    return family.by_role("teen") if actor.role == "adult" else family.adult


async def _snapshot(client, member: Member, memory_id: str) -> dict[str, Any] | None:
    response = await client.get(f"{API}/memories/{memory_id}", headers=member.headers)
    if response.status_code == 404:
        return None
    body: dict[str, Any] = response.json()
    return body


# One function per contract row: does the operation, returns (statuses, memory to re-check).
Operation = Callable[[Any, Family, Member], Awaitable[tuple[list[int], str | None]]]


async def view(client, family: Family, actor: Member) -> tuple[list[int], str | None]:
    author = _other_author(family, actor)
    published = await _published(client, author)
    archived = await _published(client, author)
    await client.put(
        f"{API}/memories/{archived['id']}", json={"status": "archived"}, headers=author.headers
    )
    codes = [
        (await client.get(f"{API}/memories/{m['id']}", headers=actor.headers)).status_code
        for m in (published, archived)
    ]
    listed = await client.get(f"{API}/memories", headers=actor.headers)
    seen = {m["id"] for m in listed.json()} if listed.status_code == 200 else set()
    codes.append(200 if {published["id"], archived["id"]} <= seen else 403)
    return codes, None


async def create(client, family: Family, actor: Member) -> tuple[list[int], str | None]:
    response = await client.post(f"{API}/memories", json={"title": "Mine"}, headers=actor.headers)
    return [response.status_code], None


async def _edit(client, actor: Member, author: Member) -> tuple[list[int], str | None]:
    memory = await _published(client, author)
    # Media the author uploaded, for the actor to register or remove.
    ticket = (await samples.upload_url(client, author, memory["id"], "image/webp")).json()
    await samples.send_bytes(client, ticket, samples.webp((30, 20)))
    existing = await samples.upload(
        client, author, memory["id"], samples.webp((20, 10)), "image/webp"
    )
    codes = [
        (
            await client.put(
                f"{API}/memories/{memory['id']}", json={"title": "Edited"}, headers=actor.headers
            )
        ).status_code,
        (await samples.upload_url(client, actor, memory["id"], "image/jpeg")).status_code,
        (
            await samples.register(client, actor, memory["id"], ticket, mime_type="image/webp")
        ).status_code,
        (
            await client.delete(
                f"{API}/memories/{memory['id']}/media/{existing['id']}", headers=actor.headers
            )
        ).status_code,
    ]
    return codes, memory["id"]


async def edit_own(client, family: Family, actor: Member) -> tuple[list[int], str | None]:
    return await _edit(client, actor, actor)


async def edit_any(client, family: Family, actor: Member) -> tuple[list[int], str | None]:
    return await _edit(client, actor, _other_author(family, actor))


async def _delete(client, actor: Member, author: Member) -> tuple[list[int], str | None]:
    memory = await _published(client, author)
    await samples.upload(client, author, memory["id"], samples.webp((20, 10)), "image/webp")
    response = await client.delete(f"{API}/memories/{memory['id']}", headers=actor.headers)
    return [response.status_code], memory["id"]


async def delete_own(client, family: Family, actor: Member) -> tuple[list[int], str | None]:
    return await _delete(client, actor, actor)


async def delete_any(client, family: Family, actor: Member) -> tuple[list[int], str | None]:
    return await _delete(client, actor, _other_author(family, actor))


OPERATIONS: dict[str, Operation] = {
    "View family memories (published, archived)": view,
    "Create memory": create,
    "Edit own memory": edit_own,
    "Edit any memory in family": edit_any,
    "Delete own memory": delete_own,
    "Delete any memory in family": delete_any,
}
SUCCESS = {200, 201, 204}


def test_every_memory_row_of_the_table_is_tested():
    assert set(OPERATIONS) == set(ALLOWED)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("operation", list(OPERATIONS))
async def test_permission_table(client, factory, operation, role):
    family = await factory.family(list(ROLES))
    actor = family.by_role(role)

    codes, memory_id = await OPERATIONS[operation](client, family, actor)

    if ALLOWED[operation][role]:
        assert set(codes) <= SUCCESS, codes
        return
    assert set(codes) == {403}, codes
    if memory_id is not None:
        # Refused means nothing changed: the memory and its media are all still there.
        owner = _other_author(family, actor) if "any" in operation else actor
        after = await _snapshot(client, owner, memory_id)
        assert after is not None
        assert after["title"] == "Shared"
        assert after["modified_by"] is None
        assert len(after["media"]) == 1


# One family against another --------------------------------------------------------------------


async def test_another_family_sees_and_changes_nothing(client, factory, settings):
    a = await factory.family(["adult", "teen"])
    memory = await _published(client, a.adult, title="Family A only")
    media = await samples.upload(client, a.adult, memory["id"], samples.jpeg(), "image/jpeg")
    media = await samples.wait_for_media(client, a.adult, memory["id"], media["id"])
    spare = (await samples.upload_url(client, a.adult, memory["id"], "image/jpeg")).json()
    await samples.send_bytes(client, spare, samples.jpeg())
    before = (await client.get(f"{API}/memories/{memory['id']}", headers=a.adult.headers)).json()

    b = await factory.family(["adult", "teen"])
    b_memory = await samples.create_memory(client, b.adult)
    mid, media_id = memory["id"], media["id"]
    for member in b.members:
        h = member.headers
        attempts = {
            "get": await client.get(f"{API}/memories/{mid}", headers=h),
            "put": await client.put(f"{API}/memories/{mid}", json={"title": "x"}, headers=h),
            "delete": await client.delete(f"{API}/memories/{mid}", headers=h),
            "add media": await samples.register(client, member, mid, spare, mime_type="image/jpeg"),
            "remove media": await client.delete(
                f"{API}/memories/{mid}/media/{media_id}", headers=h
            ),
            "upload url": await samples.upload_url(client, member, mid, "image/jpeg"),
            "access url": await client.get(
                f"{API}/storage/access-url",
                params={"storage_path": media["storage_path"]},
                headers=h,
            ),
            "thumbnail access url": await client.get(
                f"{API}/storage/access-url",
                params={"storage_path": media["thumbnail_path"]},
                headers=h,
            ),
            "media url": await client.get(f"{API}/storage/media/{media_id}/url", headers=h),
            "thumbnail url": await client.get(
                f"{API}/storage/media/{media_id}/url", params={"variant": "thumbnail"}, headers=h
            ),
        }
        for name, response in attempts.items():
            assert response.status_code == 404, (member.role, name, response.text)
            assert "Family A" not in response.text
        listed = await client.get(f"{API}/memories", headers=h)
        assert mid not in {m["id"] for m in listed.json()}

    # A's files cannot be pulled into B's memory either.
    stolen = await samples.register(client, b.adult, b_memory["id"], spare, mime_type="image/jpeg")
    assert stolen.status_code == 400
    # Nor can B sign an upload into A's memory's folder.
    b_ticket = (await samples.upload_url(client, b.adult, b_memory["id"], "image/jpeg")).json()
    forged = b_ticket["upload_url"].replace(f"{b.id}/{b_memory['id']}", f"{a.id}/{mid}")
    assert (
        await samples.send_bytes(client, {**b_ticket, "upload_url": forged}, samples.jpeg())
    ).status_code == 403

    after = (await client.get(f"{API}/memories/{mid}", headers=a.adult.headers)).json()
    assert after == before
    bucket = Path(settings.storage_root) / "memories"
    assert (bucket / media["storage_path"]).is_file()
    assert (bucket / media["thumbnail_path"]).is_file()
    assert (bucket / spare["storage_path"]).is_file()
