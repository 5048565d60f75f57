"""`rekey run -c FILE`: run or resume a migration, then print the summary and write the report."""

from __future__ import annotations

import argparse
from typing import Any

from engine.commands.common import load, run_async, with_config


def cmd_run(args: argparse.Namespace) -> int:
    from engine.pipeline import run_migration
    from engine.progress import Progress
    from engine.report import build_report, summary_text, write_json
    config = load(args)
    progress = Progress(enabled=False if args.quiet else None)
    result = run_async(lambda: run_migration(config, progress,
                                             confirm_delete_noncurrent=args.confirm_delete_noncurrent))
    from engine.pipeline import open_checkpoint
    cp = open_checkpoint(config, create=False)
    try:
        report = build_report(config, cp, result)
    finally:
        cp.close()
    if args.report:
        write_json(args.report, report)
    if not args.quiet or result.exit_code:
        print(summary_text(report))
    return result.exit_code


def run_args(*, config: str, report: str | None = None, quiet: bool = False) -> argparse.Namespace:
    """The arguments of `rekey run -c CONFIG [--report FILE] [-q]`, for callers that run it in-process."""
    return argparse.Namespace(config=config, report=report, quiet=quiet, confirm_delete_noncurrent=False)


def register(sub: Any) -> None:
    p = with_config(sub, "run", "run or resume a migration")
    p.add_argument("--report", metavar="FILE.json", help="write the JSON completion report here")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars; summary only on failure")
    p.add_argument("--confirm-delete-noncurrent", action="store_true",
                   help='with [run] noncurrent = "delete": allow deleting old versions once their copies are verified')
    p.set_defaults(handler=cmd_run)
