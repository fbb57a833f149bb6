"""Object-level authorization: every id-taking endpoint × another family's ids × every role.

docs/api.md: "A resource in another family is indistinguishable from a missing one: 404, never 403,
never its data." So for each endpoint with an id in its path (enumerated from the app's own
OpenAPI document, so a new endpoint is covered, or fails `test_every_id_taking_endpoint_is_
mapped` until it is), every role of family A presents family B's real ids and must get:

* 404 — or 403 only where the role is refused before any lookup, which is shown by the same
  role getting 403 on its *own* family's resource too (so the 403 says nothing about B);
* exactly the answer it gets for random ids that exist nowhere (status and body);
* no text of family B in the answer;
* and family B's rows and stored files are byte-for-byte unchanged afterwards.

Then B's own member sends the very same request and it succeeds: the ids were live, so the
refusals above were the authorization at work and not a typo in a URL.

Endpoints with two ids are also attacked with A's own parent and B's child (your memory,
their comment). The signed-object routes take a URL signature instead of a bearer token;
they are attacked with no signature and with signatures A legitimately holds for its own
objects. Ids that travel in a query or a body (`storage_path`, `memory_id`, `user_id`,
`parent_comment_id`, `invite_token`) have their own tests at the end.
"""

import re
import secrets
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from jose import jwt

from tests.attacks.helpers import (
    API,
    ROLES,
    World,
    build_world,
    openapi_schema,
    operations,
    snapshot,
)
from tests.helpers import media_samples as samples
from tests.helpers.factories import PASSWORD

SCHEMA = openapi_schema()
SIGNED_OBJECTS = f"{API}/storage/objects/{{bucket}}/{{path}}"
ID_OPERATIONS = [(m, p) for m, p in operations(SCHEMA) if "{" in p and p != SIGNED_OBJECTS]
OBJECT_METHODS = [m for m, p in operations(SCHEMA) if p == SIGNED_OBJECTS]


def params(path: str) -> list[str]:
    return re.findall(r"{(\w+)}", path)


# A real id of each kind, from a world. An invite token is itself a permission (whoever holds
# it may look the invite up and accept it: docs/api.md), so the attack puts the invite's *id* where
# the token goes — what a member of another family might learn — and the control the token.
ID_OF: dict[str, Callable[[World, bool], str]] = {
    "memory_id": lambda world, control: world.memory["id"],
    "media_id": lambda world, control: world.media["id"],
    "user_id": lambda world, control: world.member("teen").id,
    "invite_id": lambda world, control: world.invite["id"],
    "reaction_id": lambda world, control: world.reaction["id"],
    "comment_id": lambda world, control: world.comment["id"],
    "import_id": lambda world, control: world.import_job["id"],
    "export_id": lambda world, control: world.export["id"],
    "token": lambda world, control: world.invite["token"] if control else world.invite["id"],
    # The adult's login: the `sid` its access token carries.
    "session_id": lambda world, control: jwt.get_unverified_claims(world.adult.access_token)["sid"],
    "pet_id": lambda world, control: world.pet_id,
}


def missing_id(name: str) -> str:
    return secrets.token_urlsafe(32) if name == "token" else str(uuid.uuid4())


async def _fresh_upload(client: httpx.AsyncClient, world: World) -> dict[str, Any]:
    """A MediaRef for a file uploaded into the world's memory but not yet registered."""
    data = samples.jpeg((32, 32))
    ticket = await samples.upload_url(
        client, world.adult, world.memory["id"], "image/jpeg", file_size=len(data)
    )
    assert ticket.status_code == 200, ticket.text
    sent = await samples.send_bytes(client, ticket.json(), data)
    assert sent.status_code == 201, sent.text
    return {
        "storage_path": ticket.json()["storage_path"],
        "file_name": "photo.jpg",
        "mime_type": "image/jpeg",
        "file_size": len(data),
    }


async def _const(value: dict[str, Any]) -> dict[str, Any]:
    return value


# A valid body per request schema, so that validation passes and the lookup is what answers.
BODIES: dict[str, Callable[[httpx.AsyncClient, World], Awaitable[dict[str, Any]]]] = {
    "ReactionCreate": lambda client, world: _const({"emoji": "👍"}),
    "CommentCreate": lambda client, world: _const({"content": "Found you"}),
    "CommentUpdate": lambda client, world: _const({"content": "Edited by a stranger"}),
    "MemoryUpdate": lambda client, world: _const({"title": "Edited by a stranger"}),
    "MediaRef": _fresh_upload,
    "PetUpdate": lambda client, world: _const({"avatar_url": "https://example.com/stranger.png"}),
    "AcceptInviteRequest": lambda client, world: _const(
        {"email": world.invite["email"], "password": PASSWORD, "display_name": "Intruder"}
    ),
}


def body_schema(method: str, path: str) -> str | None:
    body = SCHEMA["paths"][path][method.lower()].get("requestBody")
    if body is None:
        return None
    schema = body["content"]["application/json"]["schema"]
    refs = [schema.get("$ref")] + [item.get("$ref") for item in schema.get("anyOf", [])]
    return next(ref for ref in refs if ref).rsplit("/", 1)[-1]


def url_of(template: str, ids: dict[str, str]) -> str:
    for name, value in ids.items():
        template = template.replace("{" + name + "}", value)
    return template


async def send(
    client: httpx.AsyncClient,
    method: str,
    template: str,
    ids: dict[str, str],
    body: dict[str, Any] | None,
    headers: dict[str, str],
) -> httpx.Response:
    extra: dict[str, Any] = {} if body is None else {"json": body}
    return await client.request(method, url_of(template, ids), headers=headers, **extra)


def assert_reveals_nothing(response: httpx.Response, victims: World) -> None:
    for text in victims.secrets:
        assert text not in response.text, f"{response.request.url} showed {text!r}"


def assert_same_answer(response: httpx.Response, missing: httpx.Response) -> None:
    """Indistinguishable from a resource that does not exist (but for its own request id)."""

    def body(answer: httpx.Response) -> object:
        payload = answer.json()
        if isinstance(payload, dict):
            payload.pop("request_id", None)
        return payload

    assert (response.status_code, body(response)) == (missing.status_code, body(missing)), (
        f"{response.request.method} {response.request.url}: foreign id answered "
        f"{response.status_code} {response.text}, a missing one {missing.status_code} "
        f"{missing.text}"
    )


@pytest.fixture(scope="module")
async def attackers(client) -> World:
    """Family A, whose every member attacks; shared by the tests of this module."""
    return await build_world(client)


@pytest.fixture
def bucket_dir(settings) -> Path:
    return settings.storage_root / "memories"


def test_every_id_taking_endpoint_is_mapped(app):
    """The enumeration is real, matches the running app, and every id has a source."""
    assert operations(app.openapi()) == operations(SCHEMA)
    assert len(ID_OPERATIONS) >= 15, ID_OPERATIONS
    assert OBJECT_METHODS == ["GET", "POST", "PUT"]
    for method, path in ID_OPERATIONS:
        unknown = [name for name in params(path) if name not in ID_OF]
        assert not unknown, f"{method} {path}: map {unknown} to a real id in ID_OF"
        schema = body_schema(method, path)
        assert schema is None or schema in BODIES, f"{method} {path}: add {schema} to BODIES"
    # The resources the contract singles out are all among them.
    covered = {path for _, path in ID_OPERATIONS}
    for needle in (
        "/memories/{memory_id}",
        "/media/{media_id}",
        "/reactions/{reaction_id}",
        "/comments/{comment_id}",
        "/invites/{invite_id}",
        "/members/{user_id}",
        "/storage/media/{media_id}/url",
        "/feed/memories/{memory_id}/reactions",
    ):
        assert any(needle in path for path in covered), needle


CASES = [
    pytest.param(method, path, mixed, id=f"{method} {path}" + (" [own parent]" if mixed else ""))
    for method, path in ID_OPERATIONS
    for mixed in ((False, True) if len(params(path)) > 1 else (False,))
]


@pytest.mark.parametrize(("method", "path", "own_parent"), CASES)
async def test_another_familys_ids_are_indistinguishable_from_missing_ones(
    client, pg, bucket_dir, attackers, method, path, own_parent
):
    victims = await build_world(client)
    names = params(path)
    schema = body_schema(method, path)
    body = await BODIES[schema](client, victims) if schema else None
    foreign = {name: ID_OF[name](victims, False) for name in names}
    missing = {name: missing_id(name) for name in names}
    own = {name: ID_OF[name](attackers, False) for name in names}
    if own_parent:  # A's own memory, B's comment / reaction / media
        foreign[names[0]] = missing[names[0]] = own[names[0]]
    before = await snapshot(pg, victims.id, bucket_dir)

    for role in ROLES:
        attacker = attackers.member(role)
        response = await send(client, method, path, foreign, body, attacker.headers)
        assert response.status_code in (403, 404), f"{role}: {response.status_code} {response.text}"
        assert_reveals_nothing(response, victims)
        assert_same_answer(
            response, await send(client, method, path, missing, body, attacker.headers)
        )
        if response.status_code == 403:
            # Acceptable only as a refusal of the role itself, whatever the resource.
            own_body = await BODIES[schema](client, attackers) if schema else None
            mine = await send(client, method, path, own, own_body, attacker.headers)
            assert mine.status_code == 403, (
                f"{role} gets 403 for another family's resource but {mine.status_code} for "
                "its own: the 403 reveals that the foreign resource exists"
            )

    assert await snapshot(pg, victims.id, bucket_dir) == before, "family B was changed"

    # Control: the ids were live; B's adult (author of its reaction and comment, and allowed
    # everything else) succeeds with the very same request.
    owner = victims.adult
    live = {name: ID_OF[name](victims, True) for name in names}
    response = await send(client, method, path, live, body, owner.headers)
    assert 200 <= response.status_code < 300, f"control: {response.status_code} {response.text}"


# Signed objects (no bearer token: the URL signature is the permission) ----------------------


def query_of(url: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}


async def _access_url(client: httpx.AsyncClient, member, storage_path: str) -> str:
    response = await client.get(
        f"{API}/storage/access-url", params={"storage_path": storage_path}, headers=member.headers
    )
    assert response.status_code == 200, response.text
    url: str = response.json()["access_url"]
    return url


async def _upload_ticket(client: httpx.AsyncClient, world: World) -> dict[str, Any]:
    response = await samples.upload_url(client, world.adult, world.memory["id"], "image/jpeg")
    assert response.status_code == 200, response.text
    ticket: dict[str, Any] = response.json()
    return ticket


async def _object_request(
    client: httpx.AsyncClient, method: str, storage_path: str, query: dict[str, str], data: bytes
) -> httpx.Response:
    url = f"{API}/storage/objects/memories/{storage_path}"
    if method == "GET":
        return await client.get(url, params=query)
    if method == "PUT":
        return await client.put(
            url, params=query, content=data, headers={"Content-Type": "image/jpeg"}
        )
    return await client.post(url, params=query, files={"file": ("x.jpg", data, "image/jpeg")})


@pytest.mark.parametrize("method", OBJECT_METHODS)
async def test_another_familys_stored_objects_are_refused_like_missing_ones(
    client, pg, bucket_dir, attackers, method
):
    victims = await build_world(client)
    data = samples.jpeg((40, 40))
    targets = [victims.media["storage_path"], victims.media["thumbnail_path"]]
    # Signatures family A legitimately holds, for its own objects.
    signatures = {
        "unsigned": {},
        "A's download signature": query_of(
            await _access_url(client, attackers.adult, attackers.media["storage_path"])
        ),
        "A's upload signature": query_of((await _upload_ticket(client, attackers))["upload_url"]),
    }
    before = await snapshot(pg, victims.id, bucket_dir)

    for _role in ROLES:  # the routes take no bearer token: each role is just another stranger
        for label, query in signatures.items():
            for target in targets:
                response = await _object_request(client, method, target, query, data)
                thumbnail = target.endswith("_thumb.jpg")
                # Thumbnails are written by the server only: no upload URL names one (400).
                expected = 400 if thumbnail and method != "GET" else 403
                assert response.status_code == expected, f"{label} {target}: {response.text}"
                assert_reveals_nothing(response, victims)
                nowhere = f"{uuid.uuid4()}/{uuid.uuid4()}/{uuid.uuid4()}"
                nowhere += "_thumb.jpg" if thumbnail else ".jpg"
                missing = await _object_request(client, method, nowhere, query, data)
                assert_same_answer(response, missing)

    assert await snapshot(pg, victims.id, bucket_dir) == before, "family B was changed"

    # Control: with B's own signature the same request works.
    if method == "GET":
        url = await _access_url(client, victims.adult, victims.media["storage_path"])
        response = await client.get(url)
        assert response.status_code == 200
        stored = bucket_dir / victims.media["storage_path"]
        assert response.content == stored.read_bytes()
    else:
        ticket = await _upload_ticket(client, victims)
        response = await _object_request(
            client, method, ticket["storage_path"], query_of(ticket["upload_url"]), data
        )
        assert response.status_code == 201, response.text


# Ids in queries and bodies ------------------------------------------------------------------


async def _assert_like_missing_for_every_role(
    client: httpx.AsyncClient,
    pg,
    bucket_dir: Path,
    attackers: World,
    victims: World,
    request: Callable[[dict[str, str], bool], Awaitable[httpx.Response]],
) -> None:
    """`request(headers, foreign)` with B's id, then with a missing one: the same answer."""
    before = await snapshot(pg, victims.id, bucket_dir)
    for role in ROLES:
        headers = attackers.member(role).headers
        response = await request(headers, True)
        assert 400 <= response.status_code < 500, f"{role}: {response.text}"
        assert_reveals_nothing(response, victims)
        assert_same_answer(response, await request(headers, False))
    assert await snapshot(pg, victims.id, bucket_dir) == before, "family B was changed"


async def test_access_url_for_another_familys_file_is_refused(client, pg, bucket_dir, attackers):
    victims = await build_world(client)
    for kind in ("storage_path", "thumbnail_path"):
        path = victims.media[kind]

        async def request(headers, foreign, path=path):
            target = path if foreign else f"{victims.id}/{uuid.uuid4()}/{uuid.uuid4()}.jpg"
            return await client.get(
                f"{API}/storage/access-url", params={"storage_path": target}, headers=headers
            )

        await _assert_like_missing_for_every_role(
            client, pg, bucket_dir, attackers, victims, request
        )
        assert (await request(victims.adult.headers, True)).status_code == 200


async def test_upload_url_into_another_familys_memory_is_refused(client, pg, bucket_dir, attackers):
    victims = await build_world(client)

    async def request(headers, foreign):
        memory_id = victims.memory["id"] if foreign else str(uuid.uuid4())
        return await client.post(
            f"{API}/storage/upload-url",
            json={"memory_id": memory_id, "file_name": "x.jpg", "mime_type": "image/jpeg"},
            headers=headers,
        )

    await _assert_like_missing_for_every_role(client, pg, bucket_dir, attackers, victims, request)
    assert (await request(victims.adult.headers, True)).status_code == 200


async def test_registering_another_familys_upload_into_ones_own_memory_is_refused(
    client, pg, bucket_dir, attackers
):
    victims = await build_world(client)
    stolen = await _fresh_upload(client, victims)
    own_memory = attackers.memory["id"]

    async def request(headers, foreign):
        path = stolen["storage_path"]
        if not foreign:
            path = f"{victims.id}/{victims.memory['id']}/{uuid.uuid4()}.jpg"
        return await client.post(
            f"{API}/memories/{own_memory}/media",
            json={**stolen, "storage_path": path},
            headers=headers,
        )

    await _assert_like_missing_for_every_role(client, pg, bucket_dir, attackers, victims, request)
    registered = await client.post(
        f"{API}/memories/{victims.memory['id']}/media", json=stolen, headers=victims.adult.headers
    )
    assert registered.status_code == 201, registered.text


async def test_replying_in_ones_own_memory_to_another_familys_comment_is_refused(
    client, pg, bucket_dir, attackers
):
    victims = await build_world(client)
    own_memory = attackers.memory["id"]

    async def request(headers, foreign):
        parent = victims.comment["id"] if foreign else str(uuid.uuid4())
        return await client.post(
            f"{API}/feed/memories/{own_memory}/comments",
            json={"content": "Hello there", "parent_comment_id": parent},
            headers=headers,
        )

    await _assert_like_missing_for_every_role(client, pg, bucket_dir, attackers, victims, request)


async def test_feed_filtered_by_another_familys_member_shows_nothing(
    client, pg, bucket_dir, attackers
):
    victims = await build_world(client)
    before = await snapshot(pg, victims.id, bucket_dir)
    for role in ROLES:
        for user in (victims.adult.id, str(uuid.uuid4())):
            response = await client.get(
                f"{API}/feed", params={"user_id": user}, headers=attackers.member(role).headers
            )
            assert response.status_code == 200, response.text
            assert response.json()["items"] == [] and response.json()["total_count"] == 0
            assert_reveals_nothing(response, victims)
    assert await snapshot(pg, victims.id, bucket_dir) == before
    mine = await client.get(
        f"{API}/feed", params={"user_id": victims.adult.id}, headers=victims.adult.headers
    )
    assert mine.json()["total_count"] == 1


async def test_child_registration_with_another_familys_invite_id_is_refused(
    client, pg, bucket_dir, attackers
):
    victims = await build_world(client)

    async def request(headers, foreign):
        token = victims.invite["id"] if foreign else secrets.token_urlsafe(32)
        return await client.post(
            f"{API}/auth/register/child",
            json={"invite_token": token, "password": PASSWORD, "display_name": "Kid"},
            headers=headers,
        )

    await _assert_like_missing_for_every_role(client, pg, bucket_dir, attackers, victims, request)


async def test_removing_another_familys_pet_is_refused(client, pg, bucket_dir, attackers):
    victims = await build_world(client)
    path = f"{API}/families/me/members/{{user_id}}"
    before = await snapshot(pg, victims.id, bucket_dir)
    for role in ROLES:
        headers = attackers.member(role).headers
        response = await send(client, "DELETE", path, {"user_id": victims.pet_id}, None, headers)
        missing = await send(client, "DELETE", path, {"user_id": str(uuid.uuid4())}, None, headers)
        assert response.status_code == (404 if role == "adult" else 403)
        assert_same_answer(response, missing)
    assert await snapshot(pg, victims.id, bucket_dir) == before
    control = await send(
        client, "DELETE", path, {"user_id": victims.pet_id}, None, victims.adult.headers
    )
    assert control.status_code == 204
