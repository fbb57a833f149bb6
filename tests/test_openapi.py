"""An OpenAPI document a typed client is happy with, and docs/api.md in step with it.

The document validates as OpenAPI 3.1; operation ids read like a person wrote them and are
unique; every operation declares the errors it can answer with the one error schema, and the
headers it sends. docs/api.md lists every endpoint the app serves and every error code the
app can answer. (That every status the suite saw is declared: tests/test_zz_contract.py.)
"""

import re
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate

from app import errors
from app.api.openapi import api_routes
from app.exception_handlers import HTTP_ERROR_CODES
from tests.helpers import api_docs

OPERATION_ID = re.compile(r"^[a-z]+(_[a-z]+)*$")
APP_SOURCE = Path(__file__).resolve().parents[1] / "app"
ERROR_SCHEMAS = {"#/components/schemas/ErrorOut", "#/components/schemas/ValidationErrorOut"}
OBJECTS = "/api/v1/storage/objects/{bucket}/{path}"


@pytest.fixture(scope="module")
def document(app) -> dict[str, Any]:
    return dict(app.openapi())


def each_operation(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]


def test_the_document_is_valid_openapi(document):
    assert document["openapi"].startswith("3.1")
    validate(document)


def test_operation_ids_read_like_names_and_are_unique(document):
    ids = [op["operationId"] for _, _, op in each_operation(document)]
    unreadable = [i for i in ids if not OPERATION_ID.match(i)]
    assert not unreadable, f"operation ids must match {OPERATION_ID.pattern}: {unreadable}"
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    assert not duplicates, duplicates
    for expected in ("feed_list", "memories_create", "reactions_delete", "objects_download"):
        assert expected in ids


def test_every_error_response_has_the_one_error_schema(document):
    wrong = []
    for method, path, operation in each_operation(document):
        for status, response in operation["responses"].items():
            if int(status) < 400:
                continue
            schema = response.get("content", {}).get("application/json", {}).get("schema", {})
            # Documented exceptions: readiness has its own body, range errors are plain text.
            own_body = (path, status) in {("/health/ready", "503"), (OBJECTS, "416")}
            if schema.get("$ref") not in ERROR_SCHEMAS and not own_body:
                wrong.append(f"{method} {path} {status}: {schema}")
            if status == "422" and schema.get("$ref") != "#/components/schemas/ValidationErrorOut":
                wrong.append(f"{method} {path} 422 is not ValidationErrorOut")
    assert not wrong, "\n".join(wrong)


def test_the_error_schemas_are_exact(document):
    schemas = document["components"]["schemas"]
    error = schemas["ErrorOut"]
    assert set(error["required"]) == {"detail", "code", "request_id"}
    assert error["properties"]["detail"]["type"] == "string"
    validation = schemas["ValidationErrorOut"]
    assert set(validation["required"]) == {"detail", "code", "request_id", "errors"}
    item = schemas["ValidationErrorItem"]
    assert set(item["required"]) == {"loc", "msg", "type"}
    # FastAPI's own validation shape is never answered, so it is not in the document.
    assert "HTTPValidationError" not in schemas


def test_every_operation_declares_what_follows_from_how_it_is_built(app, document):
    problems = []
    for route in api_routes(app):
        if not route.include_in_schema:
            continue
        for method in route.methods or ():
            operation = document["paths"][route.path_format][method.lower()]
            declared = set(operation["responses"])
            name = f"{method} {route.path_format}"
            if not {"422", "500"} <= declared:
                problems.append(f"{name}: no 422/500")
            takes_body = method in ("POST", "PUT", "PATCH")
            if ("413" in declared) != takes_body:
                problems.append(
                    f"{name}: 413 declared {'413' in declared}, takes a body {takes_body}"
                )
            if "401" in declared:
                headers = operation["responses"]["401"].get("headers", {})
                if "WWW-Authenticate" not in headers:
                    problems.append(f"{name}: 401 without WWW-Authenticate")
            for status in ("429", "503"):
                response = operation["responses"].get(status)
                own_body = route.path_format == "/health/ready"
                if response and not own_body and "Retry-After" not in response.get("headers", {}):
                    problems.append(f"{name}: {status} without Retry-After")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("path", "method", "expected"),
    [
        ("/api/v1/auth/me", "get", {"401", "503"}),
        ("/api/v1/auth/login", "post", {"401", "413", "429", "503"}),
        ("/api/v1/invites/{token}", "get", {"404", "429", "503"}),
        ("/api/v1/feed", "get", {"401", "503"}),
        ("/api/v1/memories/{memory_id}/media", "post", {"413", "415"}),
    ],
)
def test_operations_declare_their_statuses(document, path, method, expected):
    assert expected <= set(document["paths"][path][method]["responses"])


def test_what_cannot_happen_is_not_declared(document):
    paths = document["paths"]
    assert "401" not in paths["/api/v1/auth/register/adult"]["post"]["responses"]
    assert "503" not in paths["/health"]["get"]["responses"]  # touches no database
    assert "503" not in paths["/metrics"]["get"]["responses"]
    # A signed download reads the family's signing epoch from the database: it may be 503.
    assert "503" in paths[OBJECTS]["get"]["responses"]
    for path, item in paths.items():
        for method in ("get", "delete"):
            if method in item:
                assert "413" not in item[method]["responses"], (method, path)


def _headers(document: dict[str, Any], path: str, method: str, status: str) -> set[str]:
    return set(document["paths"][path][method]["responses"][status].get("headers", {}))


def test_response_headers_are_declared(document):
    assert "X-Total-Count" in _headers(document, "/api/v1/memories", "get", "200")
    assert "Location" in _headers(document, "/api/v1/memories", "post", "201")
    assert "Retry-After" in _headers(document, "/api/v1/auth/login", "post", "429")
    for status in ("200", "206", "304"):
        assert {"ETag", "Cache-Control"} <= _headers(document, OBJECTS, "get", status)
    for path, status in [("/api/v1/auth/login", "200"), ("/api/v1/invites", "201")]:
        assert {"Cache-Control", "Pragma"} <= _headers(document, path, "post", status)


def test_media_metadata_and_readiness_are_typed(document):
    schemas = document["components"]["schemas"]
    media = schemas["Media"]["properties"]["metadata"]
    assert media == {"$ref": "#/components/schemas/MediaMetadata"}
    metadata = schemas["MediaMetadata"]
    assert {"error", "codec", "frame_count"} <= set(metadata["properties"])
    assert metadata.get("additionalProperties") is True  # newer servers may add keys
    ready = document["paths"]["/health/ready"]["get"]["responses"]
    for status in ("200", "503"):
        schema = ready[status]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/Readiness"}
    health = document["paths"]["/health"]["get"]["responses"]["200"]["content"]
    assert health["application/json"]["schema"] == {"$ref": "#/components/schemas/Health"}


def test_the_signed_object_routes_are_described(document):
    item = document["paths"][OBJECTS]
    upload, form, download = item["put"], item["post"], item["get"]
    upload_query = {p["name"] for p in upload["parameters"] if p["in"] == "query"}
    assert upload_query == {"expires", "type", "max_bytes", "signature"}
    assert {p["name"] for p in form["parameters"] if p["in"] == "query"} == upload_query
    download_query = {p["name"] for p in download["parameters"] if p["in"] == "query"}
    assert download_query == {"expires", "signature"}
    raw = upload["requestBody"]["content"]
    assert {"image/jpeg", "video/mp4", "application/octet-stream"} <= set(raw)
    assert raw["image/jpeg"]["schema"] == {"type": "string", "format": "binary"}
    multipart = form["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert multipart["required"] == ["file"]
    assert multipart["properties"]["file"]["format"] == "binary"
    ok = download["responses"]["200"]["content"]
    assert ok["image/png"]["schema"] == {"type": "string", "format": "binary"}
    assert upload["responses"]["201"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/UploadedObject"
    }


# docs/api.md in step with the app ---------------------------------------------------------------


def _normalized(path: str) -> str:
    return re.sub(r"{[^}]+}", "{}", path)


def test_docs_list_every_endpoint_the_app_serves(app):
    served = {
        (method, _normalized(route.path_format))
        for route in api_routes(app)
        for method in route.methods or ()
    } | {("GET", "/openapi.json")}
    documented = {(e.method, _normalized(e.path)) for e in api_docs.endpoints()}
    missing = sorted(served - documented)
    assert not missing, (
        f"served but not in docs/api.md's endpoint tables (add a row under Endpoints): {missing}"
    )


def test_docs_list_no_endpoint_that_is_neither_served_nor_in_progress(app):
    served = {
        (method, _normalized(route.path_format))
        for route in api_routes(app)
        for method in route.methods or ()
    } | {("GET", "/openapi.json")}
    phantom = [
        f"{e.method} {e.path}"
        for e in api_docs.endpoints()
        if (e.method, _normalized(e.path)) not in served and not e.in_progress
    ]
    assert not phantom, f"in docs/api.md but not served (nor marked in progress): {phantom}"


def test_docs_list_every_operation_id_exactly(document):
    served = {(method, path): op["operationId"] for method, path, op in each_operation(document)}
    documented = api_docs.operation_ids()
    missing = {key: value for key, value in served.items() if documented.get(key) != value}
    assert not missing, (
        "docs/api.md's Operation ids table (under Generating a typed client) should have "
        + ", ".join(f"| `{op}` | {method} `{path}` |" for (method, path), op in missing.items())
    )
    stale = sorted(set(documented) - set(served))
    assert not stale, f"in docs/api.md's Operation ids table but not served: {stale}"


def _codes_the_app_defines() -> set[str]:
    classes = [errors.DomainError]
    for cls in classes:
        classes.extend(cls.__subclasses__())
    codes = {cls.default_code for cls in classes}
    codes |= {
        value for name, value in vars(errors).items() if name.isupper() and isinstance(value, str)
    }
    return codes | set(HTTP_ERROR_CODES.values()) | {"internal_error"}


def test_docs_document_every_error_code_the_app_defines():
    documented = api_docs.error_codes()
    missing = sorted(_codes_the_app_defines() - set(documented))
    assert not missing, f"add these codes to docs/api.md's error table: {missing}"
    for name, status in [("not_found", 404), ("validation_failed", 422), ("token_expired", 401)]:
        assert documented[name].statuses == {status}


def test_every_documented_code_is_answered_somewhere_or_in_progress():
    source = "\n".join(p.read_text() for p in sorted(APP_SOURCE.rglob("*.py")))
    unanswered = [
        code.code
        for code in api_docs.error_codes().values()
        if not code.in_progress and f'"{code.code}"' not in source
    ]
    assert not unanswered, (
        f"docs/api.md documents codes no code answers (mark them **(in progress)**): {unanswered}"
    )


def test_member_operations_declare_the_bearer_scheme(document):
    # `deps.user_session` calls the bearer scheme itself (not as a sub-dependency FastAPI
    # would declare); `app.api.openapi` declares it instead, as FastAPI did.
    assert document["components"]["securitySchemes"]["HTTPBearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "Access token from /auth/login.",
    }
    secured = {
        (path, method)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if operation.get("security") == [{"HTTPBearer": []}]
    }
    assert ("/api/v1/auth/me", "get") in secured
    assert ("/api/v1/feed", "get") in secured
    assert ("/api/v1/events", "get") in secured  # a bearer token or a ticket
    assert ("/api/v1/auth/login", "post") not in secured
    assert len(secured) > 40
