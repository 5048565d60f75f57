"""Progress while a run goes: tqdm bars for objects and bytes (only on a terminal), and live counters."""

from __future__ import annotations

import sys
from collections import Counter
from typing import Any

from workers.model import Outcome, State


class Progress:
    """The only place that touches counters and tqdm. Workers return outcomes; the writer calls `finished`."""

    def __init__(self, *, enabled: bool | None = None) -> None:
        if enabled is None:
            enabled = sys.stderr.isatty()
        self.enabled = enabled
        self.states: Counter[str] = Counter()
        self.actions: Counter[str] = Counter()
        self.bytes_done = 0
        self.objects_seen = 0
        self.bytes_seen = 0
        self._objects: Any = None
        self._bytes: Any = None
        if enabled:
            from tqdm import tqdm
            self._objects = tqdm(total=0, unit="obj", desc="objects", position=0, leave=True, file=sys.stderr)
            self._bytes = tqdm(total=0, unit="B", unit_scale=True, unit_divisor=1024, desc="bytes  ",
                               position=1, leave=True, file=sys.stderr)

    def discovered(self, objects: int, nbytes: int) -> None:
        self.objects_seen += objects
        self.bytes_seen += nbytes
        if self._objects is not None:
            self._objects.total = self.objects_seen
            self._bytes.total = self.bytes_seen
            self._objects.refresh()

    def finished(self, outcome: Outcome, size: int | None = None) -> None:
        self.states[outcome.state.value] += 1
        self.actions[outcome.action.value] += 1
        moved = outcome.bytes_copied or outcome.bytes_through_client // 2
        self.bytes_done += moved
        if self._objects is not None:
            self._objects.update(1)
            self._bytes.update(moved)
            failed = self.states[State.FAILED.value] + self.states[State.CHANGED.value]
            self._objects.set_postfix(done=self.states[State.DONE.value],
                                      skipped=self.states[State.SKIPPED.value], failed=failed, refresh=False)

    def close(self) -> None:
        for bar in (self._objects, self._bytes):
            if bar is not None:
                bar.close()
        self._objects = self._bytes = None
