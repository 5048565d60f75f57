"""`rekey demo`: seed a sandbox, migrate it to SSE-KMS, show before and after."""

from __future__ import annotations

import argparse
from typing import Any

from engine.commands import run
from engine.commands.common import exit_code


def run_in_process(config: str, report: str, quiet: bool) -> int:
    """`rekey run -c CONFIG --report REPORT [-q]` in this process, with the exit code the CLI would give."""
    args = run.run_args(config=config, report=report, quiet=quiet)
    return exit_code(lambda: run.cmd_run(args))


def cmd_demo(args: argparse.Namespace) -> int:
    from engine.demo import run_demo
    return run_demo(objects=args.objects, workdir=args.workdir, run_command=run_in_process)


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="seed a sandbox, migrate it to SSE-KMS, show before and after")
    p.add_argument("--objects", type=int, default=200)
    p.add_argument("--workdir")
    p.set_defaults(handler=cmd_demo)
