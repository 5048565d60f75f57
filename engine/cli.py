"""The `rekey` command line: the parser of every subcommand (engine/commands/), logging, the console script.

Exit codes: 0 every object done or already right; 1 some objects failed (listed); 2 usage or
config error; 3 the run could not proceed (credentials, missing bucket, endpoint, checkpoint);
130 interrupted by SIGINT, 143 by SIGTERM (the checkpoint is consistent: run again to resume).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from engine.commands import register_all
from engine.commands.common import exit_code
from engine.logs import RedactSecrets, configure_logging
from workers import modcache, startup, timeline

__all__ = ["RedactSecrets", "build_parser", "configure_logging", "entry", "main"]

log = logging.getLogger("rekey")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rekey", description="Re-encrypt S3 objects in bulk, resumably.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log requests and decisions")
    parser.add_argument("--version", action=_Version, help="show the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    register_all(sub)
    for command in sub.choices.values():
        # `-v` after the command too; SUPPRESS keeps a `-v` given before it
        command.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                             help="log requests and decisions")
    return parser


class _Version(argparse.Action):
    """`--version`, its version looked up only when asked for (importlib.metadata: some 30 ms of start-up)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        kwargs.setdefault("default", argparse.SUPPRESS)
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(f"rekey {version()}")
        parser.exit()


def version() -> str:
    """The installed package's version (the source tree's pyproject when run from a checkout)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed
    try:
        return installed("s3-rekey")
    except PackageNotFoundError:
        return "unknown"


def pin_malloc_threshold() -> None:
    """Part buffers are many megabytes. Left to itself, glibc raises its mmap threshold after the first such
    buffer is freed, and later ones come from per-thread heap arenas where they stay in RSS after being freed.
    Fixed thresholds turn that adjustment off: buffers up to 32 MiB (a GetObject's body, a part) come from the
    main heap, and a freed one is handed out again while still resident instead of being unmapped and faulted
    in anew, page by page (a fresh 16 MiB buffer cost about 30 ms of CPU on the 2-core machine measured); the
    part buffers the ciphers write are lent from a pool on the event loop thread (workers.memory.BufferPool),
    so worker threads allocate nothing large and their arenas stay small."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 * 1024 * 1024)  # M_MMAP_THRESHOLD (glibc's largest)
        libc.mallopt(-1, 64 * 1024 * 1024)  # M_TRIM_THRESHOLD: keep up to 64 MiB of freed heap mapped
    except (OSError, AttributeError):
        pass  # not glibc: nothing to tune


def main(argv: Sequence[str] | None = None) -> int:
    timeline.mark("main")
    pin_malloc_threshold()
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(verbose=args.verbose)
    return exit_code(lambda: args.handler(args))


def entry() -> None:
    """The `rekey` console script: main(), then exit without the interpreter's teardown, which after a
    large run spends 0.1 s or more freeing memory. Everything rekey writes is closed by then."""
    timeline.pause_collector()   # until the first request (workers.timeline.started)
    code = main()
    startup.save()   # the compiled-code caches, if this process compiled anything new (engine.launch)
    modcache.save()  # the module cache, if this process imported modules it did not hold
    logging.shutdown()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (BrokenPipeError, ValueError):
        pass
    os._exit(code)


if __name__ == "__main__":
    entry()
