"""The `rekey` console script's first module: what must be in place before rekey's own modules load.

The cyclic garbage collector is paused for the imports (workers.timeline.pause_collector), modules come
from the module cache (workers.modcache), the dataclasses' generated methods and the regular expressions
from the compiled-code caches (workers.startup), then engine.cli runs.
"""

from __future__ import annotations

from workers import modcache, startup, timeline


def entry() -> None:
    timeline.pause_collector()   # until the first request (workers.timeline.started)
    modcache.install()
    startup.cache_compiled()
    from engine.cli import entry as cli_entry
    cli_entry()


if __name__ == "__main__":   # `python -m engine.launch ARGS`: the console script, as the tests run it
    entry()
