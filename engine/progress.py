"""Progress while a run goes: tqdm bars on a terminal, a plain line every `progress_interval` seconds otherwise.

The object total grows while the listing runs and is shown so (`120+ objects`, no percentage) until the
listing ends; then it is fixed. Bytes advance as multipart parts complete, not only when an object
finishes. Units are binary throughout (KiB, MiB, GiB), as in the summary.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from typing import Any, TextIO

from workers.model import Outcome, State

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def human_bytes(n: float) -> str:
    """`1.5 MiB`; whole bytes below 1 KiB."""
    value = float(n)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


_LISTING_FORMAT = "{desc}: {n_shown} of {seen_shown}+ (listing) [{elapsed}, {rate_shown}]"
_FIXED_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_shown}/{total_shown} [{elapsed}<{remaining}, {rate_shown}]"


def _bar(*, desc: str, binary: bool, out: TextIO) -> Any:
    """A tqdm bar showing its counts our way: binary sizes (tqdm's unit_scale prints kB/MB even with divisor
    1024), and while the listing runs, the growing total as `N+` without a percentage."""
    from tqdm import tqdm

    class Bar(tqdm):  # type: ignore[misc]
        seen = 0   # the total so far (while listing)

        @property
        def format_dict(self) -> dict[str, Any]:
            d: dict[str, Any] = super().format_dict
            shown = human_bytes if binary else (lambda v: f"{int(v)}")
            elapsed = d.get("elapsed") or 0
            rate = d["n"] / elapsed if elapsed else 0.0
            d.update(n_shown=shown(d["n"]), seen_shown=shown(self.seen),
                     total_shown=shown(d["total"] or 0),
                     rate_shown=f"{human_bytes(rate)}/s" if binary else f"{rate:.1f} obj/s")
            return d

    return Bar(total=None, desc=desc, bar_format=_LISTING_FORMAT, position=0 if not binary else 1, leave=True,
               file=out)


class Progress:
    """The only place that touches counters and tqdm. Workers return outcomes; the writer calls `finished`.

    `enabled`: bars (None: when stderr is a terminal). `lines`: without bars, a plain line every `interval`
    seconds (rekey run -q turns both off).
    """

    def __init__(self, *, enabled: bool | None = None, lines: bool = True, interval: float = 30.0,
                 out: TextIO | None = None) -> None:
        self.out = out or sys.stderr
        if enabled is None:
            enabled = self.out.isatty()
        self.enabled = enabled
        self.states: Counter[str] = Counter()
        self.actions: Counter[str] = Counter()
        self.bytes_done = 0
        self.objects_seen = 0
        self.bytes_seen = 0
        self.listing = True
        self.started = time.monotonic()
        self._credited: dict[str, int] = {}   # bytes of parts already counted, per key still in flight
        self._lock = threading.Lock()
        self._objects: Any = None
        self._bytes: Any = None
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        if enabled:
            self._objects = _bar(desc="objects", binary=False, out=self.out)
            self._bytes = _bar(desc="bytes  ", binary=True, out=self.out)
        elif lines:
            self._ticker = threading.Thread(target=self._tick, args=(max(1.0, interval),), daemon=True,
                                            name="rekey-progress")
            self._ticker.start()

    # --- events ----------------------------------------------------------------------------------------

    def discovered(self, objects: int, nbytes: int) -> None:
        with self._lock:
            self.objects_seen += objects
            self.bytes_seen += nbytes
        if self._objects is not None:
            if self.listing:
                self._objects.seen, self._bytes.seen = self.objects_seen, self.bytes_seen
            else:   # objects left over from an earlier run, found after the listing ended
                self._objects.total, self._bytes.total = self.objects_seen, self.bytes_seen
            self._objects.refresh()

    def listing_done(self) -> None:
        """The listing ended: from now on the totals are fixed and shown as such."""
        self.listing = False
        if self._objects is not None:
            for bar, total in ((self._objects, self.objects_seen), (self._bytes, self.bytes_seen)):
                bar.total = total
                bar.bar_format = _FIXED_FORMAT
                bar.refresh()

    def part_done(self, key: str, nbytes: int) -> None:
        """A multipart part of `key` was written: its bytes count now."""
        with self._lock:
            self._credited[key] = self._credited.get(key, 0) + nbytes
            self.bytes_done += nbytes
        if self._bytes is not None:
            self._bytes.update(nbytes)

    def finished(self, outcome: Outcome, size: int | None = None) -> None:
        moved = outcome.bytes_copied or outcome.bytes_through_client // 2
        with self._lock:
            self.states[outcome.state.value] += 1
            self.actions[outcome.action.value if outcome.action else "none"] += 1
            rest = max(0, moved - self._credited.pop(outcome.key, 0))
            self.bytes_done += rest
        if self._objects is not None:
            self._objects.update(1)
            self._bytes.update(rest)
            failed = self.states[State.FAILED.value] + self.states[State.CHANGED.value]
            self._objects.set_postfix(done=self.states[State.DONE.value],
                                      skipped=self.states[State.SKIPPED.value], failed=failed, refresh=False)

    # --- plain lines -----------------------------------------------------------------------------------

    def line(self) -> str:
        """`rekey: progress: 12 of 60+ objects (done 10, skipped 1, failed 1), 1.5 MiB of 40.0 MiB+, 2.1 MiB/s`."""
        with self._lock:
            finished = sum(self.states.values())
            failed = self.states[State.FAILED.value] + self.states[State.CHANGED.value]
            done, skipped = self.states[State.DONE.value], self.states[State.SKIPPED.value]
            nbytes, seen_objects, seen_bytes = self.bytes_done, self.objects_seen, self.bytes_seen
        more = "+" if self.listing else ""
        elapsed = max(time.monotonic() - self.started, 1e-6)
        return (f"rekey: progress: {finished} of {seen_objects}{more} objects (done {done}, skipped {skipped}, "
                f"failed {failed}), {human_bytes(nbytes)} of {human_bytes(seen_bytes)}{more}, "
                f"{human_bytes(nbytes / elapsed)}/s, {finished / elapsed:.1f} objects/s")

    def _tick(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                print(self.line(), file=self.out, flush=True)
            except (OSError, ValueError):
                return  # stderr closed

    def close(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=5)
            self._ticker = None
        for bar in (self._objects, self._bytes):
            if bar is not None:
                bar.close()
        self._objects = self._bytes = None
