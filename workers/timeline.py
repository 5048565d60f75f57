"""When this process reached a run's milestones, in seconds since the process began (before Python's own
start-up and imports): `report.run.timeline`, and what `bench/` reports as a run's fixed cost.

    main            the command line parsed (interpreter start and imports behind it)
    first_request   the first S3 request sent
    first_object    the first object's outcome recorded
    last_object     the last object's outcome recorded
    done            the run finished (the report and summary come after)
"""

from __future__ import annotations

import os
import time

_marks: dict[str, float] = {}


def _now() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def _process_began() -> float:
    """Seconds since boot at which this process began (Linux: /proc/self/stat); else when this was imported."""
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return _now()


_BEGAN = _process_began()


def mark(name: str) -> None:
    """The first time `name` happened."""
    if name not in _marks:
        _marks[name] = _now()


def mark_latest(name: str) -> None:
    """The latest time `name` happened."""
    _marks[name] = _now()


def since_start() -> dict[str, float]:
    return {name: round(at - _BEGAN, 3) for name, at in sorted(_marks.items(), key=lambda kv: kv[1])}
