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
from collections.abc import Iterable
from contextlib import nullcontext
from contextvars import ContextVar
from typing import Any, TextIO, cast

import orjson

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
user_id_var: ContextVar[str | None] = ContextVar("user_id", default=None)
family_id_var: ContextVar[str | None] = ContextVar("family_id", default=None)
# The client's address as believed (app.proxy: a trusted proxy's X-Forwarded-For, else the peer).
client_ip_var: ContextVar[str | None] = ContextVar("client_ip", default=None)

# What every line written while serving a request carries, in this order.
_CONTEXT = (
    ("request_id", request_id_var),
    ("user_id", user_id_var),
    ("family_id", family_id_var),
    ("client_ip", client_ip_var),
)
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
        # What the call passed as `extra`, in the order given (the set difference is taken in
        # C; walking every attribute of the record in Python cost as much as the rest).
        fields = vars(record)
        given = fields.keys() - _STANDARD_ATTRS
        keys = sorted(given, key=list(fields).index) if len(given) > 1 else given
        exception = self.formatException(record.exc_info) if record.exc_info else None
        return self.line(
            record.created,
            record.levelname,
            record.name,
            record.getMessage(),
            [(key, fields[key]) for key in keys],
            exception,
        )

    def line(
        self,
        created: float,
        level: str,
        logger: str,
        message: str,
        extra: Iterable[tuple[str, Any]],
        exception: str | None = None,
    ) -> str:
        """The JSON object of one line: the record's own fields, the request's context, then
        what the call passed as `extra`, every text redacted."""
        entry: dict[str, Any] = {
            "ts": self._timestamps.format(created),
            "level": level.lower(),
            "logger": logger,
            "message": redact(message),
        }
        for key, var in _CONTEXT:
            value = var.get()
            if value is not None:
                entry[key] = value
        for key, value in extra:
            if not key.startswith("_"):
                entry[key] = redact(value) if isinstance(value, str) else value
        if exception is not None:
            entry["exception"] = redact(exception)
        return _dumps(entry)


# The handler configure_logging installed on the root logger (None until it runs).
_installed: logging.StreamHandler[TextIO] | None = None


def log_info(logger: logging.Logger, message: str, fields: dict[str, Any]) -> None:
    """`logger.info(message, extra=fields)`, for a line written on every request.

    When the line would reach nothing but the handler `configure_logging` installed (the
    server's case), it is formatted and written to that handler's stream here: the same line,
    at a quarter of the cost of `logging`'s way (a LogRecord of some twenty attributes, the
    walk up the logger tree, the handler's checks), which was the largest part of what
    `/health` costs beyond the framework. Any other handler, filter or level on the way (a
    test's capture, an operator's own configuration) and it goes through `logging`.
    """
    if not logger.isEnabledFor(logging.INFO):
        return
    handler = _sole_handler(logger)
    if handler is not None:
        formatter = cast(JsonFormatter, handler.formatter)
        line = formatter.line(time.time(), "INFO", logger.name, message, fields.items())
        try:
            with handler.lock or nullcontext():
                handler.stream.write(line + handler.terminator)
                handler.stream.flush()
            return
        except Exception:  # noqa: S110 - logging's own path below reports it (handleError)
            pass
    logger.info(message, extra=fields)


def _sole_handler(logger: logging.Logger) -> logging.StreamHandler[TextIO] | None:
    """The installed handler, if an INFO line of `logger` would reach it and nothing else:
    the handlers `logging` would call (`Logger.callHandlers`), with no filter on the way."""
    handler = _installed
    if (
        handler is None
        or logger.filters
        or handler.filters
        or handler.level > logging.INFO
        or not isinstance(handler.formatter, JsonFormatter)
    ):
        return None
    reached = 0
    node: logging.Logger | None = logger
    while node is not None:
        for each in node.handlers:
            if each is not handler:
                return None
            reached += 1
        if not node.propagate:
            break
        node = node.parent
    return handler if reached == 1 else None


def configure_logging(level: str) -> None:
    # What a record would look up on every line and no line shows: the caller's file and line
    # (a walk up the stack), the thread's and the process's names. The logging HOWTO's
    # "Optimization" section names these switches; each access line is cheaper by about half.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    global _installed
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    _installed = handler
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
