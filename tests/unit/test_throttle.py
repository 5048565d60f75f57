"""The throttle's window bounds the objects in flight, with and without waiters (engine.retry.Throttle)."""

from __future__ import annotations

import anyio
import anyio.lowlevel

from engine.retry import Throttle


def _run(window: int, tasks: int, narrow_at: int | None = None) -> tuple[int, int, int]:
    """(most slots held at once, slots held when a narrowed window was in force at most, tasks finished)."""
    throttle = Throttle(window)
    held = peak = peak_after = done = 0
    narrowed = False

    async def one(i: int) -> None:
        nonlocal held, peak, peak_after, done, narrowed
        await throttle.acquire()
        try:
            held += 1
            peak = max(peak, held)
            if narrowed:   # a slot given after the window halved: only while fewer than half are held
                peak_after = max(peak_after, held)
            await anyio.sleep(0.001 * (i % 3))
            if i == narrow_at:
                throttle.on_throttle(None)
                narrowed = True
        finally:
            held -= 1
            await throttle.release()
            done += 1

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for i in range(tasks):
                tg.start_soon(one, i)
                if i % 7 == 0:
                    await anyio.lowlevel.checkpoint()

    anyio.run(main)
    return peak, peak_after, done


def test_the_window_bounds_slots_and_every_waiter_gets_one() -> None:
    peak, _, done = _run(window=4, tasks=200)
    assert peak == 4 and done == 200


def test_a_narrowed_window_holds_for_later_slots() -> None:
    peak, peak_after, done = _run(window=8, tasks=300, narrow_at=20)
    assert peak == 8 and 0 < peak_after <= 4 and done == 300
