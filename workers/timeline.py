"""When this process reached a run's milestones, in seconds since the process began (before Python's own
start-up and imports): `report.run.timeline`, and what `bench/` reports as a run's fixed cost.

    main            the command line parsed (interpreter start and imports behind it)
    first_request   the first S3 request sent
    first_object    the first object's outcome recorded
    last_object     the last object's outcome recorded
    done            the run finished (the report and summary come after)
"""

from __future__ import annotations

import gc
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


_collector_paused = False


def pause_collector() -> None:
    """Pause the cyclic garbage collector for the process's start-up. Imports and botocore's first client
    make some 10^6 objects that live as long as the process; the collector, run over them again and again
    while they are made, costs 40 ms or more of a small run. `started` resumes it."""
    global _collector_paused
    if gc.isenabled():
        gc.disable()
        _collector_paused = True


def started() -> None:
    """Start-up is over (the first request goes out): what is alive now is moved out of the collector's view
    for good (`gc.freeze`: it would only walk it again), and the collector runs as usual from here on."""
    global _collector_paused
    if _collector_paused:
        _collector_paused = False
        gc.freeze()
        gc.enable()


def mark_latest(name: str) -> None:
    """The latest time `name` happened."""
    _marks[name] = _now()


def since_start() -> dict[str, float]:
    return {name: round(at - _BEGAN, 3) for name, at in sorted(_marks.items(), key=lambda kv: kv[1])}
