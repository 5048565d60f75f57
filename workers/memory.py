"""A byte budget for buffers in flight: reserve before reading, release after writing."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import anyio


class MemoryBudget:
    """A weighted semaphore over bytes. A reservation larger than the whole budget waits for all of it,
    so one huge buffer never deadlocks but also never runs beside others."""

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self._used = 0
        self._peak = 0
        self._cond = anyio.Condition()

    @property
    def used(self) -> int:
        return self._used

    @property
    def peak(self) -> int:
        return self._peak

    def _clamp(self, nbytes: int) -> int:
        return min(max(nbytes, 0), self.capacity)

    async def acquire(self, nbytes: int) -> None:
        """Wait until `nbytes` (at most the whole budget) are free, and take them."""
        want = self._clamp(nbytes)
        async with self._cond:
            while self._used + want > self.capacity:
                await self._cond.wait()
            self._used += want
            self._peak = max(self._peak, self._used)

    async def release(self, nbytes: int) -> None:
        with anyio.CancelScope(shield=True):
            async with self._cond:
                self._used -= self._clamp(nbytes)
                self._cond.notify_all()

    @contextlib.asynccontextmanager
    async def reserve(self, nbytes: int) -> AsyncIterator[None]:
        await self.acquire(nbytes)
        try:
            yield
        finally:
            await self.release(nbytes)
