"""The engine's retry policy and throttle control: capped jittered backoff, AIMD concurrency, rate cap.

The one owner of retries: botocore makes one attempt, and the S3 boundary (`workers.s3.S3`) sends each
request again through `Retrier` for errors classified retryable, at most `max_retries` times (so no
request is tried more than `max_retries + 1` times), honouring a server's Retry-After; every throttle
narrows the window of objects in flight, and a throttle that outlasts a couple of tries pauses the run.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import anyio

from workers.errors import EndpointError, RetryableError
from workers.job import count_retry

T = TypeVar("T")
DECREASE_INTERVAL = 0.5  # seconds between two multiplicative decreases of the window


@dataclass(frozen=True, slots=True)
class ThrottleStats:
    throttles: int
    retries: int
    window: int
    min_window: int


class Throttle:
    """Additive-increase / multiplicative-decrease window on objects in flight, plus an optional
    request-rate cap. Workers hold a slot per object; requests pass `gate()` first."""

    def __init__(self, max_window: int, *, max_rps: float | None = None) -> None:
        self.max_window = max(1, max_window)
        self.window = self.max_window
        self.min_window_seen = self.window
        self._in_flight = 0
        self._waiting = 0   # tasks in acquire's slow path
        self._cond = anyio.Condition()
        self._successes = 0
        self._max_rps = max_rps
        self._next_slot = 0.0
        self._pause_until = 0.0
        self._last_decrease = -DECREASE_INTERVAL
        self.throttles = 0
        self.retries = 0

    async def acquire(self) -> None:
        """A slot; without waiting (and without the condition's lock) while the window has room and nobody
        waits: on one event loop, nothing runs between the check and the count."""
        if self._waiting == 0 and self._in_flight < self.window:
            self._in_flight += 1
            return
        async with self._cond:
            self._waiting += 1
            try:
                while self._in_flight >= self.window:
                    await self._cond.wait()
            finally:
                self._waiting -= 1
            self._in_flight += 1

    async def release(self) -> None:
        self._in_flight -= 1
        if self._waiting:   # a waiter is inside the condition (or about to wait on it, holding its lock)
            with anyio.CancelScope(shield=True):
                async with self._cond:
                    self._cond.notify_all()

    async def gate(self) -> None:
        """Wait for a pause after a throttle, and for the rate cap, before one request."""
        now = time.monotonic()
        if self._pause_until > now:
            await anyio.sleep(self._pause_until - now)
        if self._max_rps:
            now = time.monotonic()
            slot = max(now, self._next_slot)
            self._next_slot = slot + 1.0 / self._max_rps
            if slot > now:
                await anyio.sleep(slot - now)

    def on_success(self) -> None:
        self._successes += 1
        if self.window < self.max_window and self._successes >= self.window:
            self._successes = 0
            self.window += 1

    def on_throttle(self, retry_after: float | None) -> None:
        """Halve the window, at most once per DECREASE_INTERVAL (like TCP, once per round trip): the
        throttles of requests already in flight are one signal, not many. `retry_after` pauses every
        request: pass it only for a throttle that outlasted botocore's own retries."""
        self.throttles += 1
        self._successes = 0
        now = time.monotonic()
        if now - self._last_decrease >= DECREASE_INTERVAL:
            self._last_decrease = now
            self.window = max(1, self.window // 2)
            self.min_window_seen = min(self.min_window_seen, self.window)
        if retry_after:
            self._pause_until = max(self._pause_until, time.monotonic() + min(retry_after, 60.0))

    def statistics(self) -> ThrottleStats:
        return ThrottleStats(self.throttles, self.retries, self.window, self.min_window_seen)


PAUSE_AFTER_TRIES = 2


class Retrier:
    """Retry one request on `RetryableError` (and a lost endpoint) with capped, jittered backoff.

    Implements `workers.s3.RetryPolicy`."""

    def __init__(self, throttle: Throttle, *, max_retries: int = 6, base: float = 0.2, cap: float = 20.0,
                 endpoint_wait: float = 60.0) -> None:
        self.throttle = throttle
        self.max_retries = max_retries
        self.base = base
        self.cap = cap
        self.endpoint_wait = endpoint_wait
        self._answered = False   # some request succeeded: an endpoint lost after that is waited for
        self._rng = random.Random()

    def backoff(self, attempt: int, retry_after: float | None) -> float:
        delay = self._rng.uniform(0, min(self.cap, self.base * (2 ** attempt)))
        return max(delay, retry_after or 0.0)

    async def __call__(self, what: str, fn: Callable[[], Awaitable[T]], *, refused_only: bool = False) -> T:
        """`fn` (one attempt of one request), again after a retryable error, at most `max_retries` more
        times; with `refused_only`, again only when the server certainly did not act on it (a throttle)."""
        attempt = 0
        lost_since: float | None = None
        while True:
            await self.throttle.gate()
            try:
                result = await fn()
            except RetryableError as exc:
                if exc.throttled:
                    # Narrow the window on every throttle; pause everyone only for one that outlasted
                    # a couple of tries: one throttled request among many is not an outage.
                    self.throttle.on_throttle(exc.retry_after if attempt >= PAUSE_AFTER_TRIES else None)
                if attempt >= self.max_retries or (refused_only and not exc.throttled):
                    raise
                self.throttle.retries += 1
                count_retry()
                await anyio.sleep(self.backoff(attempt, exc.retry_after))
                attempt += 1
                continue
            except EndpointError:
                # The server went away (restart, network): wait for it a while instead of failing
                # every object; past endpoint_wait the run stops cleanly. One never reached is not waited
                # for: a wrong endpoint_url fails at once.
                if not self._answered:
                    raise
                now = time.monotonic()
                lost_since = lost_since or now
                if now - lost_since > self.endpoint_wait:
                    raise
                self.throttle.retries += 1
                count_retry()
                await anyio.sleep(min(2.0, self.backoff(attempt, None) + 0.5))
                attempt = min(attempt + 1, 6)
                continue
            self._answered = True
            self.throttle.on_success()
            return result


def retrier_for(max_retries: int = 6, concurrency: int = 64) -> Retrier:
    """A retrier with its own throttle, for commands without a run's pipeline (audit, policy, bench)."""
    return Retrier(Throttle(concurrency), max_retries=max_retries)
