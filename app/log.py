"""Structured JSON logs: one object per line, with the request's context attached.

Request id, user id, family id and the client's address travel in context variables set by
the request middleware, so every line written while serving a request carries them. Nothing
here ever receives a token, password or signed URL: the access log records the
route template and path without the query string.
"""

import json
import logging
import re
import sys
import time
from contextvars import ContextVar
from typing import Any

import orjson

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
user_id_var: ContextVar[str | None] = ContextVar("user_id", default=None)
family_id_var: ContextVar[str | None] = ContextVar("family_id", default=None)
# The client's address as believed (app.proxy: a trusted proxy's X-Forwarded-For, else the peer).
client_ip_var: ContextVar[str | None] = ContextVar("client_ip", default=None)

_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
# Belt and braces: if a secret-looking value ever reaches a message, mask it.
_SECRET_PATTERNS = [
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"),
    re.compile(r"(?i)((?:password|token|secret|signature|sig)[\"']?\s*[:=]\s*[\"']?)[^\s\"'&,}]+"),
    re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+"),
]


# Each pattern above needs one of these words to match at all: text holding none of them
# (every access line) is searched once instead of three times.
_SECRET_MARKER = re.compile(r"(?i)bearer|password|token|secret|sig|eyj")


def redact(text: str) -> str:
    if _SECRET_MARKER.search(text) is None:
        return text
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + "[REDACTED]", text)
    return text


class _Timestamps:
    """`2026-01-02T03:04:05.678+00:00` (what datetime's isoformat gives), the seconds cached:
    every line of the same second shares them."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def format(self, created: float) -> str:
        second = int(created)
        micros = round((created - second) * 1_000_000)
        if micros >= 1_000_000:  # rounded up into the next second, as datetime does
            second, micros = second + 1, micros - 1_000_000
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._prefix}.{micros // 1000:03d}+00:00"


def _dumps(entry: dict[str, Any]) -> str:
    try:
        return orjson.dumps(entry, default=str).decode()
    except (TypeError, orjson.JSONEncodeError):  # e.g. an integer past 64 bits
        return json.dumps(entry, default=str, ensure_ascii=False)


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._timestamps = _Timestamps()

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self._timestamps.format(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for key, var in (
            ("request_id", request_id_var),
            ("user_id", user_id_var),
            ("family_id", family_id_var),
            ("client_ip", client_ip_var),
        ):
            value = var.get()
            if value is not None:
                entry[key] = value
        # What the call passed as `extra`, in the order given (the set difference is taken in
        # C; walking every attribute of the record in Python cost as much as the rest).
        fields = vars(record)
        given = fields.keys() - _STANDARD_ATTRS
        for key in sorted(given, key=list(fields).index) if len(given) > 1 else given:
            if not key.startswith("_"):
                value = fields[key]
                entry[key] = redact(value) if isinstance(value, str) else value
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return _dumps(entry)


def configure_logging(level: str) -> None:
    # What a record would look up on every line and no line shows: the caller's file and line
    # (a walk up the stack), the thread's and the process's names. The logging HOWTO's
    # "Optimization" section names these switches; each access line is cheaper by about half.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # Our middleware writes the access log; uvicorn's own would repeat each request. With no
    # handler to reach, uvicorn does not even build its line (client address, quoted path)
    # for every response only to drop it.
    access = logging.getLogger("uvicorn.access")
    access.handlers[:] = []
    access.propagate = False
    access.disabled = True
    # httpx logs every request URL at INFO; Supabase signed URLs carry tokens in them.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
