"""`rekey run -c FILE`: run or resume a migration, then print the summary and write the report.

The run holds the checkpoint's lock from start to end (a second run on it exits 3 naming the holder).
SIGINT and SIGTERM stop it gently: no more objects are taken, those in flight finish and are recorded, the
summary and the report are written, and the exit code is 130 or 143. A second signal stops at once (the
checkpoint stays consistent either way: every write to it is one transaction).
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import TYPE_CHECKING, Any

import anyio

from engine.commands.common import EXIT_INTERRUPTED, load, run_async, with_config
from engine.lock import CheckpointLock

if TYPE_CHECKING:
    from engine.config import Config
    from engine.pipeline import RunResult
    from engine.progress import Progress

EXIT_TERMINATED = 128 + signal.SIGTERM


class Stopping:
    """The signal that asked the run to stop, if any."""

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.signum: int | None = None

    @property
    def exit_code(self) -> int:
        return EXIT_TERMINATED if self.signum == signal.SIGTERM else EXIT_INTERRUPTED

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else "interrupt"


async def run_until_stopped(config: Config, progress: Progress, stopping: Stopping, *,
                            confirm_delete_noncurrent: bool, completion_report: str | None = None) -> RunResult | None:
    """run_migration, with SIGINT/SIGTERM turned into a gentle stop (None: stopped at once by a second one)."""
    from engine.pipeline import run_migration
    stopping.event = anyio.Event()
    result: RunResult | None = None
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    if stopping.event.is_set():
                        tg.cancel_scope.cancel()
                        return
                    stopping.signum = int(signum)
                    stopping.event.set()
                    if sys.stderr.isatty():
                        print(f"\nrekey: {stopping.name}: finishing the objects in flight, then stopping "
                              "(again to stop at once)", file=sys.stderr)

        tg.start_soon(watch)
        result = await run_migration(config, progress, confirm_delete_noncurrent=confirm_delete_noncurrent,
                                     stop=stopping.event, completion_report=completion_report)
        tg.cancel_scope.cancel()
    return result


def cmd_run(args: argparse.Namespace) -> int:
    from engine.checkpoint import open_checkpoint
    from engine.completion import report_format
    from engine.progress import Progress
    from engine.report import build_report, failures, summary_text, write_json
    config = load(args)
    completion = args.completion_report
    if completion:
        report_format(completion)
    stopping = Stopping()
    with CheckpointLock(config.run.checkpoint):
        progress = Progress(enabled=False if args.quiet else None, lines=not args.quiet,
                            interval=config.run.progress_interval)
        result = run_async(lambda: run_until_stopped(config, progress, stopping,
                                                     confirm_delete_noncurrent=args.confirm_delete_noncurrent,
                                                     completion_report=completion))
        cp = open_checkpoint(config, create=False, read_only=True)
        try:
            report = build_report(config, cp, result, completion_report=completion, with_objects=bool(args.report))
            failed = failures(cp)
        finally:
            cp.close()
        if args.report:
            write_json(args.report, report)
    code = result.exit_code if result is not None else stopping.exit_code
    if stopping.signum is not None:
        code = stopping.exit_code
    if not args.quiet or code:
        print(summary_text(report, failed))
    if stopping.signum is not None:
        print(f"rekey: stopped by {stopping.name}; the checkpoint is consistent: run the same command again "
              "to resume", file=sys.stderr)
    return code


def run_args(*, config: str, report: str | None = None, quiet: bool = False) -> argparse.Namespace:
    """The arguments of `rekey run -c CONFIG [--report FILE] [-q]`, for callers that run it in-process."""
    return argparse.Namespace(config=config, report=report, quiet=quiet, confirm_delete_noncurrent=False,
                              completion_report=None)


def register(sub: Any) -> None:
    p = with_config(sub, "run", "run or resume a migration")
    p.add_argument("--report", metavar="FILE.json",
                   help="write the JSON report here (objects listed up to 10,000; beyond, see --completion-report)")
    p.add_argument("--completion-report", metavar="FILE",
                   help="stream one line per finished object to FILE (.jsonl or .csv), appended on resume")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars; summary only on failure")
    p.add_argument("--confirm-delete-noncurrent", action="store_true",
                   help='with [run] noncurrent = "delete": allow deleting old versions once their copies are verified')
    p.set_defaults(handler=cmd_run)
