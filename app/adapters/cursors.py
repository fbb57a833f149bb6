"""Opaque, signed pagination cursors (docs/api.md, "Pagination").

A cursor is `<payload>.<signature>`, both base64url: the payload is compact JSON of what a
list needs to go on (its position, and for the feed the snapshot the scroll began with);
the signature is HMAC-SHA256 with a key derived from the JWT secret for cursors only. Each
cursor is bound to

- the list it came from (`kind`: feed, memories, comments, invites),
- the member it was given to,
- the filters and ordering of its scroll (a hash of them, so the cursor stays short),
- the time its scroll began: it is refused 24 hours later. Scrolls that follow the order
  they began with need the history of changes since then, and that history is kept a
  little longer than a day, no more.

Anything else (a changed byte, another member's cursor, other filters, an expired scroll)
is `400 invalid_cursor`. What the payload holds is the services' business; this module only
seals and opens it. The clock is injectable so tests can age a cursor without sleeping.
"""

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from app.errors import Invalid
from app.schemas.common import MAX_CURSOR_LENGTH

MAX_AGE_SECONDS = 24 * 3600
CODE = "invalid_cursor"


class InvalidCursor(Invalid):
    default_detail = "Invalid cursor; start a new scroll"
    default_code = CODE


@dataclass(frozen=True)
class Opened:
    """A verified cursor: where its list goes on, and when its scroll began."""

    state: dict[str, Any]
    started_at: float


class CursorCodec:
    # Domain separation: this key signs cursors only, never tokens or storage URLs.
    _CONTEXT = b"timeless-love/cursor/v1"

    def __init__(
        self,
        secret: str,
        *,
        max_age_seconds: int = MAX_AGE_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key = hmac.new(secret.encode(), self._CONTEXT, hashlib.sha256).digest()
        self.max_age_seconds = max_age_seconds
        self.clock = clock

    def now(self) -> float:
        return self.clock()

    def seal(
        self,
        *,
        kind: str,
        user_id: UUID,
        binding: object,
        state: dict[str, Any],
        started_at: float,
    ) -> str:
        """A cursor that goes on with `state`, for this member, list and filters."""
        payload = {
            "k": kind,
            "u": str(user_id),
            "b": _binding_hash(binding),
            "t": round(started_at, 3),
            "s": state,
        }
        body = _b64encode(json.dumps(payload, separators=(",", ":")).encode())
        return f"{body}.{self._sign(body)}"

    def open(self, cursor: str, *, kind: str, user_id: UUID, binding: object) -> Opened:
        """Verify a cursor; InvalidCursor (400) for anything but our own, fresh, matching one."""
        body, _, signature = cursor.partition(".")
        # Ours are short and ASCII (base64url); anything else is refused before any HMAC.
        if (
            not body
            or len(cursor) > MAX_CURSOR_LENGTH
            or not cursor.isascii()
            or not hmac.compare_digest(self._sign(body), signature)
        ):
            raise InvalidCursor("This cursor is not valid (it was changed or is not a cursor)")
        try:
            payload = json.loads(_b64decode(body))
            started_at = float(payload["t"])
            state = payload["s"]
            owner, bound_kind, bound = payload["u"], payload["k"], payload["b"]
        except (ValueError, KeyError, TypeError, binascii.Error):
            # Signed by us but unreadable: only a change of this code could do that.
            raise InvalidCursor(
                "This cursor is not valid (it was changed or is not a cursor)"
            ) from None
        if not isinstance(state, dict):
            raise InvalidCursor("This cursor is not valid (it was changed or is not a cursor)")
        if owner != str(user_id):
            raise InvalidCursor("This cursor belongs to another member; start a new scroll")
        if bound_kind != kind:
            raise InvalidCursor("This cursor belongs to another list; start a new scroll")
        if bound != _binding_hash(binding):
            raise InvalidCursor(
                "This cursor was made for other filters or another ordering; send the same "
                "ones as the first page, or start a new scroll"
            )
        if self.clock() - started_at > self.max_age_seconds:
            raise InvalidCursor("This cursor has expired (after 24 hours); start a new scroll")
        return Opened(state=state, started_at=started_at)

    def _sign(self, body: str) -> str:
        return _b64encode(hmac.digest(self._key, body.encode(), "sha256"))


def _binding_hash(binding: object) -> str:
    canonical = json.dumps(binding, sort_keys=True, separators=(",", ":"), default=str)
    return _b64encode(hashlib.sha256(canonical.encode()).digest()[:16])


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
