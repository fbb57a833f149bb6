"""Schema fuzzing: every operation of the app's own OpenAPI document, as every role.

Schemathesis generates requests from the schema (its Python API; Hypothesis underneath);
each request is sent by every role of a family through the session's `client`, i.e. into
the app whose lifespan is already running (Schemathesis' own ASGI transport would start a
second lifespan on another event loop, which the app's database pool cannot share). Each
response must pass Schemathesis' checks: no 5xx, a documented status code, a body matching
the documented schema, and the documented content type.

Per operation, three bounded, derandomized groups of cases:

* positive, with generated path parameters (mostly ids that exist nowhere → 404s);
* positive, with real ids of the family's own resources in the path, so bodies and queries
  reach the real code paths (updates, deletions, uploads, comments, …);
* negative (schema-violating data in the body, query, path or headers) → a documented 4xx.

The signed-object routes (`/storage/objects/...`) are fuzzed too, but their permission is a
signature in the query string that is not part of the schema, so they can only answer
400/403/404 here; the signed happy path is covered by tests/test_storage.py and
tests/attacks/test_uploads.py.
"""

import asyncio
import contextlib
import re
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from jose import jwt
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.attacks.helpers import ROLES, World, build_world, openapi_schema, operations
from tests.helpers import media_samples as samples

DOCUMENT = openapi_schema()
SCHEMA = schemathesis.openapi.from_dict(DOCUMENT)
OPERATIONS = operations(DOCUMENT)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    response_schema_conformance,
    content_type_conformance,
]

# Examples per operation and group; every example is sent once per role (4×).
POSITIVE_EXAMPLES = 5
REAL_ID_EXAMPLES = 5
NEGATIVE_EXAMPLES = 4

_REQUEST_ARGS = ("method", "url", "headers", "params", "json", "data", "files", "cookies")


def real_path_parameters(world: World, path: str) -> dict[str, str]:
    """The family's own ids for each path parameter of `path`."""
    ids = {
        "memory_id": world.memory["id"],
        "media_id": world.media["id"],
        "user_id": world.member("teen").id,
        "invite_id": world.invite["id"],
        "token": world.invite["token"],
        "reaction_id": world.reaction["id"],
        "comment_id": world.comment["id"],
        "export_id": world.export["id"],
        "bucket": "memories",
        "path": world.media["storage_path"],
        # The adult's login (the `sid` of its access token): theirs to end, no one else's.
        "session_id": jwt.get_unverified_claims(world.adult.access_token)["sid"],
        "pet_id": world.pet_id,
        "import_id": world.import_job["id"],
    }
    return {name: ids[name] for name in re.findall(r"{(\w+)}", path)}


def generate(strategy: Any, max_examples: int) -> list[Any]:
    """Draw up to `max_examples` cases, the same ones on every run."""
    cases: list[Any] = []

    @given(strategy)
    @settings(
        max_examples=max_examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def collect(case: Any) -> None:
        cases.append(case)

    # Unsatisfiable: e.g. no way to make an operation without parameters "negative".
    with contextlib.suppress(Unsatisfiable):
        collect()
    return cases


def cases_for(method: str, path: str, world: World) -> list[Any]:
    operation = SCHEMA[path][method]
    cases = generate(operation.as_strategy(GenerationMode.POSITIVE), POSITIVE_EXAMPLES)
    ids = real_path_parameters(world, path)
    if ids:
        strategy = operation.as_strategy(GenerationMode.POSITIVE, path_parameters=ids)
        cases += generate(strategy, REAL_ID_EXAMPLES)
    cases += generate(operation.as_strategy(GenerationMode.NEGATIVE), NEGATIVE_EXAMPLES)
    return cases


async def send(client: httpx.AsyncClient, case: Any, token: str) -> httpx.Response:
    """Serialize the case exactly as Schemathesis would (via requests), send it into the app."""
    kwargs = case.as_transport_kwargs(base_url=str(client.base_url))
    kwargs["headers"] = {**kwargs.get("headers", {}), "Authorization": f"Bearer {token}"}
    prepared = requests.Request(**{k: v for k, v in kwargs.items() if k in _REQUEST_ARGS}).prepare()
    headers = [
        (name.encode("latin-1", "replace"), str(value).encode("latin-1", "replace"))
        for name, value in prepared.headers.items()
        if name.lower() not in ("connection", "content-length")
    ]
    body = prepared.body.encode() if isinstance(prepared.body, str) else prepared.body
    return await client.request(prepared.method, prepared.url, headers=headers, content=body)


class LeaveStreamsAfterTheFirstChunk:
    """The app, seen by a client that reads the first chunk of an event stream and leaves.

    GET /events never ends by itself, and an ASGI transport waits for the whole response:
    for that path only, the first chunk ends the response for the client and the app is
    told the client disconnected (as when a browser closes its EventSource).
    """

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].endswith("/events"):
            await self.app(scope, receive, send)
            return
        left = asyncio.Event()
        request_read = False

        async def receive_until_left() -> Any:
            nonlocal request_read
            if not request_read:
                message = await receive()
                request_read = message["type"] != "http.request" or not message.get("more_body")
                return message
            await left.wait()
            return {"type": "http.disconnect"}

        async def send_until_left(message: Any) -> None:
            if left.is_set():
                return
            if message["type"] == "http.response.body" and message.get("more_body"):
                await send({**message, "more_body": False})
                left.set()
                return
            await send(message)

        await self.app(scope, receive_until_left, send_until_left)


@pytest.fixture(scope="module")
async def fuzz_client(app) -> Any:
    transport = httpx.ASGITransport(app=LeaveStreamsAfterTheFirstChunk(app))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


def test_every_operation_is_fuzzed(app):
    """The collected operations are the running app's, and there are plenty of them."""
    assert operations(app.openapi()) == OPERATIONS
    assert len(OPERATIONS) >= 40
    labels = {op.ok().label for op in SCHEMA.get_all_operations()}
    assert labels == {f"{method} {path}" for method, path in OPERATIONS}


@pytest.mark.parametrize(
    ("method", "path"), OPERATIONS, ids=[f"{method} {path}" for method, path in OPERATIONS]
)
async def test_operation_conforms_to_its_schema_as_every_role(client, fuzz_client, method, path):
    world = await build_world(client)
    cases = cases_for(method, path, world)
    assert cases, "nothing generated"
    failures: list[str] = []
    for role in ROLES:
        member = world.member(role)
        for case in cases:
            response = await send(fuzz_client, case, member.access_token)
            try:
                case.validate_response(response, checks=CHECKS)
            except FailureGroup as group:
                failures.append(
                    f"[{role}] {response.request.method} {response.request.url} → "
                    f"{response.status_code} {response.text[:300]}\n{group}"
                )
    assert not failures, "\n\n".join(failures[:5])


# Answers the fuzzer cannot reach ------------------------------------------------------------
# Signed objects need a signature the schema does not describe, and the middleware's 413 and
# URL checks need requests no schema-driven generator makes: build those requests by hand
# and hold their responses to the same checks.

OBJECTS = "/api/v1/storage/objects/{bucket}/{path}"


def conforms(method: str, template: str, response: httpx.Response, **path_parameters: str) -> None:
    case = SCHEMA[template][method].Case(path_parameters=path_parameters or None)
    case.validate_response(response, checks=CHECKS)


async def test_signed_download_answers_are_documented(client):
    world = await build_world(client)
    url = await client.get(
        f"/api/v1/storage/media/{world.media['id']}/url", headers=world.adult.headers
    )
    signed = url.json()["access_url"]
    full = await client.get(signed)
    answers = {
        200: full,
        206: await client.get(signed, headers={"Range": "bytes=0-9"}),
        304: await client.get(signed, headers={"If-None-Match": full.headers["etag"]}),
        400: await client.get(signed, headers={"Range": "bytes=9-1"}),
        416: await client.get(signed, headers={"Range": "bytes=999999999-"}),
        403: await client.get(signed.replace("signature=", "signature=x")),
    }
    for status, response in answers.items():
        assert response.status_code == status, (status, response.text)
        conforms("GET", OBJECTS, response, bucket="memories", path=world.media["storage_path"])


async def test_signed_upload_answers_are_documented(client):
    world = await build_world(client)
    adult, memory = world.adult, world.memory["id"]

    async def ticket(mime: str = "image/jpeg") -> dict[str, Any]:
        response = await samples.upload_url(client, adult, memory, mime)
        assert response.status_code == 200, response.text
        return dict(response.json())

    photo = samples.jpeg((20, 20))
    first = await ticket()
    answers = {
        201: await samples.send_bytes(client, first, photo),
        409: await samples.send_bytes(client, first, photo),
        415: await samples.send_bytes(client, await ticket(), samples.png_with_alpha()),
        400: await samples.send_bytes(client, await ticket(), b""),
        413: await samples.send_bytes(client, await ticket("image/png"), samples.png_bomb()),
    }
    for status, response in answers.items():
        assert response.status_code == status, (status, response.text)
        conforms("PUT", OBJECTS, response, bucket="memories", path=first["storage_path"])


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/api/v1/auth/me"), ("POST", "/api/v1/memories"), ("GET", "/health")],
)
async def test_middleware_answers_are_documented_on_every_operation(client, app, method, path):
    world = await build_world(client, photo=False)
    headers = {**world.adult.headers, "Content-Type": "application/json"}
    too_large = await client.request(
        method, path, content=b'{"title": "' + b"x" * (1024 * 1024) + b'"}', headers=headers
    )
    takes_a_body = method == "POST"
    # A GET never reads a body, so it is never refused for one (and declares no 413).
    assert (too_large.status_code == 413) == takes_a_body, too_large.text
    conforms(method, path, too_large)
    not_utf8 = await client.request(method, f"{path}?q=%FF", headers=headers)
    assert not_utf8.status_code == 422
    conforms(method, path, not_utf8)
    for document in (DOCUMENT, app.openapi()):
        responses = document["paths"][path][method.lower()]["responses"]
        assert "422" in responses
        assert ("413" in responses) == takes_a_body
