"""docs/api.md read as data: its error codes, its endpoint tables and its code blocks.

The tests that keep the contract page true (tests/test_zz_contract.py, tests/test_openapi.py,
tests/test_docs_examples.py) read it through these, so the page's format lives in one place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

API_MD = Path(__file__).resolve().parents[2] / "docs" / "api.md"
IN_PROGRESS = "**(in progress)**"
API_PREFIX = "/api/v1"


def text() -> str:
    return API_MD.read_text(encoding="utf-8")


def section(title: str, level: int = 2) -> str:
    """The body of the `## title` section, up to the next heading of that level or higher
    (a `#` line inside a code block is a comment, not a heading)."""
    lines = text().splitlines(keepends=True)
    body: list[str] | None = None
    fenced = False
    for line in lines:
        if line.startswith("```"):
            fenced = not fenced
        heading = re.match(r"(#+) (.*?)\s*$", line) if not fenced else None
        if body is None:
            if heading and len(heading.group(1)) == level and heading.group(2) == title:
                body = []
            continue
        if heading and len(heading.group(1)) <= level:
            break
        body.append(line)
    assert body is not None, f"docs/api.md has no section {'#' * level} {title}"
    return "".join(body)


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


@dataclass(frozen=True)
class ErrorCode:
    code: str
    statuses: frozenset[int]  # usually one; a row may say "401, 400"
    in_progress: bool


def error_codes() -> dict[str, ErrorCode]:
    """The table of the "Errors" section: code → its statuses, and whether it is coming."""
    codes: dict[str, ErrorCode] = {}
    for line in section("Errors").splitlines():
        match = re.match(r"\|\s*`([a-z_]+)`\s*\|\s*(\d{3}(?:,\s*\d{3})*)\s*\|(.*)\|\s*$", line)
        if match:
            code, statuses, when = match.groups()
            assert code not in codes, f"docs/api.md lists the error code {code} twice"
            numbers = frozenset(int(n) for n in re.findall(r"\d{3}", statuses))
            codes[code] = ErrorCode(code, numbers, when.strip().startswith(IN_PROGRESS))
    assert codes, "docs/api.md's error table was not found"
    return codes


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # as served: under /api/v1 unless an operations endpoint at the root
    in_progress: bool
    line: str


def endpoints() -> list[Endpoint]:
    """Every (method, path) of the tables under "Endpoints" (one row may name several)."""
    found: list[Endpoint] = []
    body = section("Endpoints")
    parts = re.split(r"^### (.+)$", body, flags=re.MULTILINE)
    for title, content in zip(parts[1::2], parts[2::2], strict=True):
        whole_section_coming = content.lstrip().startswith(IN_PROGRESS)
        root = title.strip() == "Operations"
        for line in content.splitlines():
            if not line.startswith("| ") or line.startswith(("| Method", "|---")):
                continue
            first = _cells(line)[0]
            methods = re.match(r"((?:[A-Z]+)(?:,\s*[A-Z]+)*)\s", first)
            if not methods:
                continue
            coming = whole_section_coming or IN_PROGRESS in first
            for method in re.split(r",\s*", methods.group(1)):
                for path in re.findall(r"`(/[^`]*)`", first):
                    path = path.split("?", 1)[0]
                    full = path if root else API_PREFIX + path
                    found.append(Endpoint(method, full, coming, line))
    assert found, "docs/api.md's endpoint tables were not found"
    return found


def operation_ids() -> dict[tuple[str, str], str]:
    """The "Operation ids" table: (METHOD, full path) → operationId."""
    rows = re.findall(
        r"^\|\s*`([a-z_]+)`\s*\|\s*([A-Z]+) `([^`]+)`\s*\|\s*$",
        section("Operation ids", level=3),
        re.MULTILINE,
    )
    assert rows, "docs/api.md's operation id table was not found"
    return {(method, path): operation_id for operation_id, method, path in rows}


@dataclass(frozen=True)
class Block:
    language: str
    code: str
    line: int  # where it starts in docs/api.md, for messages


def code_blocks(language: str, within: str | None = None) -> list[Block]:
    """The fenced blocks of `language`, in order (of one section when `within` names it)."""
    page = text()
    start = 0
    if within is not None:
        start = page.index(section(within))
    blocks = []
    for match in re.finditer(r"^```(\w+)\n(.*?)^```", page, re.MULTILINE | re.DOTALL):
        if match.group(1) == language and match.start() >= start:
            if within is not None and match.start() >= start + len(section(within)):
                break
            blocks.append(Block(language, match.group(2), page.count("\n", 0, match.start()) + 1))
    return blocks
