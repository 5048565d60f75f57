"""`rekey verify -c FILE [--deep]`: check every object the checkpoint calls done (see engine.verify)."""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from typing import Any

from engine.commands.common import EXIT_FAILED, EXIT_OK, load, run_async
from engine.verify import Finding, verify_run
from workers.model import State


def cmd_verify(args: argparse.Namespace) -> int:
    from engine.pipeline import first_fatal, open_checkpoint
    from engine.report import write_json
    config = load(args)
    cp = open_checkpoint(config, create=False, read_only=True)
    try:
        rows = list(cp.rows([State.DONE, State.SKIPPED]))
    finally:
        cp.close()

    def show(f: Finding) -> None:
        if f.problem is not None:
            print(f"mismatch: s3://{config.destination.location.bucket}/{f.dest_key}: {f.problem}")

    started = time.monotonic()
    try:
        findings = run_async(lambda: verify_run(config, rows, deep=args.deep, on_finding=show))
    except BaseExceptionGroup as group:
        fatal = first_fatal(group)
        if fatal is None:
            raise
        raise fatal from None
    bad = sorted((f for f in findings if f.problem), key=lambda f: f.key)
    proofs = {p: sum(1 for f in findings if f.proof == p and not f.problem)
              for p in ("head", "sha256", "md5", "tag", "size_only")}
    deep = " (deep)" if args.deep else ""
    print(f"verified {len(findings)} done or skipped object(s){deep}: {len(bad)} mismatch(es); "
          + ", ".join(f"{p} {n}" for p, n in proofs.items() if n))
    if args.report:
        write_json(args.report, {
            "deep": bool(args.deep), "checked": len(findings), "mismatches": [asdict(f) for f in bad],
            "proven_by": proofs,
            "size_only": sorted(f.key for f in findings if f.proof == "size_only" and not f.problem),
            "elapsed_seconds": round(time.monotonic() - started, 3),
        })
    return EXIT_FAILED if bad else EXIT_OK


def register(sub: Any) -> None:
    p = sub.add_parser("verify", help="check every object the checkpoint calls done (--deep: read it back)")
    p.add_argument("-c", "--config", required=True, help="TOML config file")
    p.add_argument("--deep", action="store_true", help="also read each object and compare a recorded checksum")
    p.add_argument("--report", metavar="FILE.json", help="write the findings here as JSON")
    p.set_defaults(handler=cmd_verify)
