"""`rekey sandbox [--workdir DIR]`: local S3 (SeaweedFS) and KMS (moto) on 127.0.0.1 until Ctrl-C."""

from __future__ import annotations

import argparse
from typing import Any


def cmd_sandbox(args: argparse.Namespace) -> int:
    from engine.sandbox import run_sandbox_command
    return run_sandbox_command(workdir=args.workdir, quiet=False)


def register(sub: Any) -> None:
    p = sub.add_parser("sandbox", help="start local S3 (SeaweedFS) and KMS (moto) on 127.0.0.1 until Ctrl-C")
    p.add_argument("--workdir", help="keep data here (default: a temporary folder, removed on exit)")
    p.set_defaults(handler=cmd_sandbox)
