"""Every example in docs/api.md runs, so the page a frontend developer starts from cannot drift.

- The `bash` blocks of "First calls" run as the page says: in order, in one shell, from a
  scratch folder, with curl, against a real server (uvicorn with the app factory, as
  `timeless serve` runs it, rate limits on) on the built-in PostgreSQL.
- Each `json` block after a command is the shape of what that command printed: every key
  it shows is in the real answer ("…" stands for what was left out).
- The TypeScript client example names paths, methods, parameters, body fields and schemas
  that the OpenAPI document has.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from app.db.migrate import migrate
from tests.faults.server import ApiServer, EmbeddedPostgres
from tests.helpers import api_docs

FIRST_CALLS = "First calls"
SCRIPT_TIMEOUT_SECONDS = 180
MARK = "@@docs-block@@"


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[str]:
    """A server of its own, on a PostgreSQL of its own: its media processor picks up the
    unfinished media of its whole database at start, which must not be other tests' rows."""
    # Short path: PostgreSQL's Unix socket lives in it.
    folder = Path(tempfile.mkdtemp(prefix="tld-"))
    try:
        with EmbeddedPostgres(folder) as postgres:
            await migrate(postgres.dsn)
            env = {"RATE_LIMIT_ENABLED": "true"}
            with ApiServer(postgres.dsn, folder / "app", env=env) as api:
                yield api.url
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _script(blocks: list[api_docs.Block]) -> str:
    lines = ["set -euo pipefail"]
    for index, block in enumerate(blocks):
        lines.append(f"echo '{MARK} {index}'")
        lines.append(f"echo 'docs/api.md line {block.line}' >&2")
        lines.append(block.code)
    return "\n".join(lines) + "\n"


def _outputs(stdout: str) -> dict[int, str]:
    """What each block printed, by block index."""
    parts = re.split(rf"^{MARK} (\d+)$", stdout, flags=re.MULTILINE)
    return {int(index): text for index, text in zip(parts[1::2], parts[2::2], strict=True)}


@pytest.fixture(scope="module")
def first_calls(server: str, tmp_path_factory: pytest.TempPathFactory) -> dict[int, str]:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed: docs/api.md's First calls are curl commands")
    blocks = api_docs.code_blocks("bash", within=FIRST_CALLS)
    assert len(blocks) >= 10, "docs/api.md's First calls lost their bash blocks"
    scratch = tmp_path_factory.mktemp("first-calls")
    # python3 on PATH is this interpreter, whatever the machine's default.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    result = subprocess.run(
        ["bash", "-c", _script(blocks)],
        cwd=scratch,
        env={**os.environ, "BASE": server, "PATH": path},
        capture_output=True,
        text=True,
        timeout=SCRIPT_TIMEOUT_SECONDS,
        check=False,
    )
    failed_at = result.stderr.strip().splitlines()[-5:] if result.stderr else []
    assert result.returncode == 0, (
        f"the First calls stopped (exit {result.returncode}); last lines of stderr: "
        f"{failed_at}\nstdout:\n{result.stdout[-3000:]}"
    )
    return _outputs(result.stdout)


def test_the_first_calls_run_as_written(first_calls):
    printed = "\n".join(first_calls.values())
    assert "processing_status: completed" in printed
    assert "First picnic" in printed
    assert re.search(r"^304$", printed, re.MULTILINE), "the ETag step did not get a 304"
    assert "after logout: 401" in printed


def _json_objects(text: str) -> list[Any]:
    found = []
    for line in text.splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            found.append(value)
    return found


def _missing_keys(example: Any, actual: Any, where: str = "") -> list[str]:
    """Keys the example shows that the real answer lacks ("…" stands for what was left out)."""
    if isinstance(example, dict) and isinstance(actual, dict):
        missing = [f"{where}.{key}" for key in example if key != "…" and key not in actual]
        for key, value in example.items():
            if key in actual:
                missing += _missing_keys(value, actual[key], f"{where}.{key}")
        return missing
    if isinstance(example, list) and isinstance(actual, list) and example and actual:
        return _missing_keys(example[0], actual[0], f"{where}[0]")
    return []


def _examples_after_each_block() -> list[tuple[int, api_docs.Block]]:
    """(index of the bash block it follows, json block) for each json block of First calls."""
    bash = api_docs.code_blocks("bash", within=FIRST_CALLS)
    pairs = []
    for example in api_docs.code_blocks("json", within=FIRST_CALLS):
        before = [i for i, block in enumerate(bash) if block.line < example.line]
        pairs.append((before[-1], example))
    return pairs


def test_each_json_example_is_the_shape_of_what_its_command_printed(first_calls):
    checked = 0
    problems = []
    for index, example in _examples_after_each_block():
        shown = json.loads(example.code)  # a json block must be JSON
        printed = _json_objects(first_calls.get(index, ""))
        if not printed:
            continue  # the command prints a summary, not the JSON (the feed)
        checked += 1
        gaps = [_missing_keys(shown, actual) for actual in printed]
        if all(gaps):
            problems.append(f"docs/api.md line {example.line}: not in the answer: {min(gaps)}")
    assert not problems, "\n".join(problems)
    assert checked >= 6, f"only {checked} json examples could be compared"


def test_the_feed_example_is_the_shape_of_a_feed_page(app):
    """The feed step prints a summary; its json example is checked against the schema."""
    document = app.openapi()
    schemas = document["components"]["schemas"]
    feed_example = next(
        json.loads(block.code)
        for block in api_docs.code_blocks("json", within=FIRST_CALLS)
        if '"feed_score"' in block.code
    )
    page = schemas["FeedPage"]["properties"]
    item = schemas["FeedItem"]["properties"]
    media = schemas["FeedMedia"]["properties"]
    assert set(feed_example) <= set(page)
    first = feed_example["items"][0]
    assert set(first) - {"…"} <= set(item)
    assert set(first["media"][0]) - {"…"} <= set(media)


# The TypeScript example ----------------------------------------------------------------------


def test_the_typed_client_example_names_what_the_document_has(app):
    document = app.openapi()
    (example,) = api_docs.code_blocks("ts", within="Generating a typed client")
    calls = re.findall(
        r'api\.(GET|POST|PUT|PATCH|DELETE)\("([^"]+)",\s*\{(.*?)\}\);', example.code, re.S
    )
    assert len(calls) >= 3
    schemas = document["components"]["schemas"]
    for method, path, options in calls:
        operation = document["paths"][path][method.lower()]
        query = re.search(r"query:\s*\{([^}]*)\}", options)
        if query:
            names = {p["name"] for p in operation.get("parameters", [])}
            used = set(re.findall(r"(\w+):", query.group(1)))
            assert used <= names, (path, used - names)
        body = re.search(r"body:\s*\{([^}]*)\}", options)
        if body:
            ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            fields = set(schemas[ref.rsplit("/", 1)[-1]]["properties"])
            used = set(re.findall(r"(\w+):", body.group(1)))
            assert used <= fields, (path, used - fields)
    for name in re.findall(r'components\["schemas"\]\["(\w+)"\]', example.code):
        assert name in schemas
    assert "display_name" in schemas["MemoryAuthor"]["properties"]
