"""Rate limits for the endpoints an attacker would hammer: login, registration, refresh,
invite lookup and acceptance, password reset and change. Counted per client IP and per account.

Fixed windows: a counter per (rule, subject, window start) that expires with the
window. In-process by default; with REDIS_URL set the counters live in Redis, so
every server process shares them.
"""

import asyncio
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from app.errors import RateLimited


@dataclass(frozen=True)
class Limit:
    requests: int
    per_seconds: int


class CounterStore(Protocol):
    async def increment(self, key: str, window_seconds: int) -> int:
        """Add one to the counter for `key` in the current window; return the new count."""

    async def decrement(self, key: str) -> None:
        """Take one back from a live counter (never below 0, never bringing back an expired one)."""

    async def current(self, key: str) -> int: ...


# Seconds as a float. Injectable so tests decide where the window boundaries fall.
Clock = Callable[[], float]


class MemoryCounterStore:
    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._counts: dict[str, tuple[int, float]] = {}
        self._lock = asyncio.Lock()
        self._clock = clock

    async def increment(self, key: str, window_seconds: int) -> int:
        async with self._lock:
            now = self._clock()
            count, expires = self._counts.get(key, (0, now + window_seconds))
            if expires <= now:
                count, expires = 0, now + window_seconds
            self._counts[key] = (count + 1, expires)
            if len(self._counts) > 100_000:  # bound memory under a flood of new subjects
                self._counts = {k: v for k, v in self._counts.items() if v[1] > now}
            return count + 1

    async def decrement(self, key: str) -> None:
        async with self._lock:
            count, expires = self._counts.get(key, (0, 0.0))
            if count > 0 and expires > time.monotonic():
                self._counts[key] = (count - 1, expires)

    async def current(self, key: str) -> int:
        count, expires = self._counts.get(key, (0, 0.0))
        return count if expires > self._clock() else 0


# Atomic in Redis: a key that expired meanwhile is not brought back (as -1, without expiry).
_DECREMENT_LIVE = """
if redis.call('get', KEYS[1]) and tonumber(redis.call('get', KEYS[1])) > 0 then
  return redis.call('decr', KEYS[1])
end
return 0
"""


class RedisCounterStore:
    def __init__(self, url: str):
        from redis.asyncio import Redis  # optional dependency: the [redis] extra

        self._redis = Redis.from_url(url)

    async def increment(self, key: str, window_seconds: int) -> int:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, window_seconds, nx=True)
            count, _ = await pipe.execute()
        return int(count)

    async def decrement(self, key: str) -> None:
        await self._redis.eval(_DECREMENT_LIVE, 1, key)  # type: ignore[misc]

    async def current(self, key: str) -> int:
        value = await self._redis.get(key)
        return int(value or 0)

    async def close(self) -> None:
        await self._redis.aclose()


def _subject(value: str) -> str:
    # Keys never hold an email or token in clear (they may end up in Redis dumps).
    return hashlib.sha256(value.strip().lower().encode()).hexdigest()[:32]


class RateLimiter:
    def __init__(self, store: CounterStore, *, enabled: bool = True, clock: Clock = time.time):
        self.store = store
        self.enabled = enabled
        # Wall time: window numbers must agree across processes sharing a Redis store.
        self._clock = clock

    def _key(self, rule: str, subject: str, limit: Limit) -> tuple[str, int]:
        now = self._clock()
        window = int(now // limit.per_seconds)
        retry_after = (window + 1) * limit.per_seconds - int(now)
        return f"rl:{rule}:{_subject(subject)}:{window}", retry_after

    async def hit(self, rule: str, subject: str, limit: Limit) -> None:
        """Count one request; 429 with Retry-After once the window's allowance is spent."""
        if not self.enabled:
            return
        key, retry_after = self._key(rule, subject, limit)
        if await self.store.increment(key, limit.per_seconds) > limit.requests:
            raise RateLimited(retry_after)

    async def reserve(self, rule: str, subject: str, limit: Limit) -> str | None:
        """Count an attempt before it runs, atomically: 429 once the window's allowance is
        spent, so however many arrive at once, at most `limit.requests` of them run.

        Returns the counter's key, for `give_back` when the attempt turns out not to count
        (it succeeded); None when limits are off.
        """
        if not self.enabled:
            return None
        key, retry_after = self._key(rule, subject, limit)
        if await self.store.increment(key, limit.per_seconds) > limit.requests:
            raise RateLimited(retry_after)
        return key

    async def give_back(self, key: str | None) -> None:
        """Return a reserved attempt to the window it was taken from."""
        if key is not None:
            await self.store.decrement(key)


# The rules: generous for people, tight for scripts.
PER_IP = {
    "login": Limit(30, 60),
    "register": Limit(10, 3600),
    "refresh": Limit(60, 60),
    "invite_lookup": Limit(30, 60),
    "invite_accept": Limit(10, 600),
    "password_reset": Limit(20, 3600),
    "password_reset_confirm": Limit(10, 600),
    # Provisioning a child creates an account like registration does, and its 409 for a
    # taken email would otherwise test addresses for accounts at any speed.
    "provision_child": Limit(10, 3600),
}
# Per signed-in member, whatever IP they come from.
PER_MEMBER = {
    "provision_child": Limit(10, 3600),
}
# Failed logins per account: after 10 in 15 minutes the account is held for the window,
# whoever tries; the same answer for an account that does not exist.
FAILED_LOGINS_PER_ACCOUNT = Limit(10, 900)
# Reset links asked for one address (counted whether or not it has an account, so the
# answer is the same for both); wrong current passwords per account (password guessing
# with a stolen access token is held like failed logins).
RESETS_PER_EMAIL = Limit(5, 3600)
FAILED_PASSWORD_CHANGES_PER_ACCOUNT = Limit(10, 900)
# Attempts per invite token (guessing a token is hopeless, but replays are not).
ACCEPTS_PER_INVITE = Limit(5, 600)
