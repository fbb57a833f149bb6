"""What the whole suite saw, held to the contract. Named to run after every other module.

`tests/helpers/responses.py` records each response of the shared `client`. Here:

- every status a route answered is declared in its OpenAPI operation (so a typed client
  knows every answer it can get);
- every error answered has the one shape of docs/api.md ("Errors"): a string `detail`, a
  `code` from the table with the table's status, the response's `request_id`, and for a 422
  the `errors` list.

Run alone, nothing has been recorded and both skip; `pytest` runs them last, after the rest.
"""

import re
from typing import Any

import pytest

from tests.helpers import api_docs
from tests.helpers.responses import RESPONSES, SeenError

OBJECTS = "/api/v1/storage/objects/{bucket}/{path}"
HOW_TO_DECLARE = (
    "declare it on the route with `responses=error_responses({status})` "
    "(app/schemas/common.py); a status every route of a kind answers (401, 413, 422, 429, "
    "500, 503) is declared in app/api/openapi.py"
)


def _recorded(what: str, items: Any) -> None:
    if not items:
        pytest.skip(f"no {what} recorded: this module checks what the rest of the suite saw")


def test_every_status_a_route_answered_is_declared_in_its_operation(app):
    seen = [s for s in RESPONSES.statuses.values() if s.template is not None]
    _recorded("responses", seen)
    document = app.openapi()
    undeclared = []
    for answer in sorted(seen, key=lambda s: (s.template or "", s.method, s.status)):
        operation = document["paths"].get(answer.template, {}).get(answer.method.lower())
        if operation is None:  # HEAD, or a route kept out of the schema (/docs)
            continue
        if str(answer.status) not in operation["responses"]:
            undeclared.append(
                f"{answer.method} {answer.template} answered {answer.status} "
                f"(first in {answer.test}), but its operation {operation['operationId']} "
                f"does not declare {answer.status}: " + HOW_TO_DECLARE.format(status=answer.status)
            )
    assert not undeclared, "\n".join(undeclared)


def _exempt(error: SeenError) -> bool:
    """The two answers docs/api.md names as not using the error shape."""
    seen = error.seen
    range_error = seen.template == OBJECTS and seen.status in (400, 416)
    if range_error and error.content_type.startswith("text/plain"):
        return True
    return seen.template == "/health/ready" and seen.status == 503


def shape_problems(error: SeenError, documented: dict[str, api_docs.ErrorCode]) -> list[str]:
    body, status = error.body, error.seen.status
    if not isinstance(body, dict):
        return [f"the body is not a JSON object ({error.content_type}): {str(body)[:100]!r}"]
    problems = []
    if not error.content_type.startswith("application/json"):
        problems.append(f"Content-Type is {error.content_type!r}")
    if not isinstance(body.get("detail"), str) or not body["detail"]:
        problems.append(f"`detail` is not a sentence: {body.get('detail')!r}"[:200])
    code = body.get("code")
    if not isinstance(code, str) or not re.fullmatch(r"[a-z]+(_[a-z]+)*", code):
        problems.append(f"`code` is not a snake_case name: {code!r}")
    elif code not in documented:
        problems.append(f"`code` {code!r} is not in docs/api.md's error table")
    elif status not in documented[code].statuses:
        statuses = sorted(documented[code].statuses)
        problems.append(f"`code` {code!r} is documented for {statuses} in docs/api.md")
    if body.get("request_id") != error.headers.get("x-request-id"):
        problems.append("`request_id` is not the response's X-Request-ID")
    if status == 422:
        items = body.get("errors")
        if not isinstance(items, list) or not items:
            problems.append("a 422 without `errors`")
        elif not all(
            isinstance(i, dict)
            and isinstance(i.get("loc"), list)
            and isinstance(i.get("msg"), str)
            and isinstance(i.get("type"), str)
            for i in items
        ):
            problems.append(f"`errors` entries are not {{loc, msg, type}}: {items[:2]!r}"[:200])
    return problems


def test_every_error_the_suite_saw_has_the_one_shape():
    _recorded("error responses", RESPONSES.errors)
    documented = api_docs.error_codes()
    failures: dict[str, str] = {}
    for error in RESPONSES.errors:
        if _exempt(error):
            continue
        for problem in shape_problems(error, documented):
            where = f"{error.seen.method} {error.seen.template or error.path} → {error.seen.status}"
            # One line per kind of problem and place is enough to find it.
            failures.setdefault(f"{where}: {problem}", error.seen.test)
    report = [f"{problem} (first in {test})" for problem, test in sorted(failures.items())]
    assert not report, "\n".join(report[:30])
