"""Client-side rate limits: requests and tokens per minute, shared by every extraction.

Token buckets refill continuously; a request takes one request token and an estimate of its
tokens, and settles the estimate with the real usage afterwards. A 429 pauses everyone, not
just the request that got it. The provider's rate-limit headers tighten the buckets when the
server knows better (another process spending the same budget, say).
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Mapping
from datetime import datetime

import anyio

__all__ = ["RateLimiter", "TokenBucket", "parse_duration"]

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(text: str) -> float | None:
    """`"6m0s"`, `"1.5s"`, `"20ms"`, `"1h2m"` (OpenAI's reset headers) -> seconds."""
    parts = _DURATION.findall(text.strip())
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        return None
    return sum(float(n) * _UNITS[u] for n, u in parts)


def _reset_seconds(value: str, now: float) -> float | None:
    """A reset header as seconds from now: a duration, or an RFC 3339 / HTTP date."""
    seconds = parse_duration(value)
    if seconds is not None:
        return seconds
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value).timestamp()
        except (TypeError, ValueError):
            return None
    return max(0.0, when - now)


class TokenBucket:
    """`rate` units a second, holding at most `capacity`; the level may go below zero (debt)."""

    __slots__ = ("capacity", "level", "rate", "updated")

    def __init__(self, per_minute: float, *, burst_seconds: float = 1.0) -> None:
        if per_minute <= 0:
            raise ValueError(f"a rate limit must be positive, not {per_minute}")
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * burst_seconds)
        self.level = self.capacity
        self.updated: float | None = None

    def refill(self, now: float) -> None:
        if self.updated is not None:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now

    def wait_time(self, amount: float, now: float) -> float:
        """Seconds until `amount` can be taken (an amount over capacity needs a full bucket)."""
        self.refill(now)
        need = min(amount, self.capacity)
        return 0.0 if self.level >= need else (need - self.level) / self.rate


class RateLimiter:
    """Requests-per-minute and tokens-per-minute limits, fair (first come, first served).

    `burst_seconds` is how much unused budget may be saved up: with the default of one
    second, no window of `w` seconds sees more than `rate * (w + 1)` requests.
    """

    def __init__(
        self,
        *,
        rpm: float | None = None,
        tpm: float | None = None,
        burst_seconds: float = 1.0,
    ) -> None:
        self._burst = burst_seconds
        self.requests = TokenBucket(rpm, burst_seconds=burst_seconds) if rpm else None
        self.tokens = TokenBucket(tpm, burst_seconds=burst_seconds) if tpm else None
        self._lock = anyio.Lock()
        self._paused_until = 0.0
        #: How many times a 429 paused everyone.
        self.backoffs = 0

    async def acquire(self, tokens: float = 0.0) -> None:
        """Wait until one request costing about `tokens` tokens may be sent, and take it."""
        # acquire/release, not `async with`: two objects fewer for the collector to walk per
        # document queued here (after a 429, most of a fan-out is).
        lock = self._lock
        await lock.acquire()
        try:
            while True:
                now = anyio.current_time()
                wait = self._paused_until - now
                if self.requests is not None:
                    wait = max(wait, self.requests.wait_time(1, now))
                if self.tokens is not None and tokens:
                    wait = max(wait, self.tokens.wait_time(tokens, now))
                if wait <= 0:
                    break
                await anyio.sleep(wait)
            if self.requests is not None:
                self.requests.level -= 1
            if self.tokens is not None:
                self.tokens.level -= tokens
        finally:
            lock.release()

    def settle(self, estimate: float, actual: float) -> None:
        """Correct a request's token estimate with the tokens it really used."""
        if self.tokens is not None:
            self.tokens.level += estimate - actual

    def backoff(self, seconds: float) -> None:
        """Pause every request for `seconds` (after a 429)."""
        self.backoffs += 1
        self._paused_until = max(self._paused_until, anyio.current_time() + seconds)

    def observe(self, headers: Mapping[str, str]) -> None:
        """Tighten the buckets from the provider's rate-limit headers (OpenAI's, Anthropic's)."""
        for kind in ("requests", "tokens"):
            remaining = _first(
                headers, f"x-ratelimit-remaining-{kind}", f"anthropic-ratelimit-{kind}-remaining"
            )
            if remaining is None:
                continue
            limit = _first(
                headers, f"x-ratelimit-limit-{kind}", f"anthropic-ratelimit-{kind}-limit"
            )
            bucket = self.requests if kind == "requests" else self.tokens
            if bucket is None and limit:
                bucket = TokenBucket(limit, burst_seconds=self._burst)
                if kind == "requests":
                    self.requests = bucket
                else:
                    self.tokens = bucket
            if bucket is None:
                continue
            now = anyio.current_time()
            bucket.refill(now)
            if remaining >= 1:
                bucket.level = min(bucket.level, remaining)
                continue
            reset = headers.get(f"x-ratelimit-reset-{kind}") or headers.get(
                f"anthropic-ratelimit-{kind}-reset"
            )
            seconds = _reset_seconds(reset, time.time()) if reset else None
            bucket.level = min(bucket.level, 0.0)
            if seconds:
                self._paused_until = max(self._paused_until, now + seconds)


def _first(headers: Mapping[str, str], *names: str) -> float | None:
    for name in names:
        value = headers.get(name)
        if value:
            try:
                return float(value)
            except ValueError:
                return None
    return None
