"""`rekey verify -c FILE [--deep]`: check every object the checkpoint calls done (see engine.verify)."""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from engine.commands.common import EXIT_FAILED, EXIT_OK, load, run_async
from engine.terminal import shown
from workers.model import State

if TYPE_CHECKING:
    from engine.verify import Finding


def cmd_verify(args: argparse.Namespace) -> int:
    from engine.checkpoint import open_checkpoint
    from engine.report import write_json
    from engine.verify import verify_run
    from workers.errors import first_fatal
    config = load(args)
    cp = open_checkpoint(config, create=False, read_only=True)
    try:
        # An object deleted from the source since it was listed is skipped with nothing to check.
        rows = [r for r in cp.rows([State.DONE, State.SKIPPED]) if r.error_kind != "ObjectGoneError"]
        counts = cp.counts()
        _, listed = cp.listing_position()
    finally:
        cp.close()
    not_done = {state: c["objects"] for state, c in sorted(counts.items())
                if state not in (State.DONE.value, State.SKIPPED.value)}

    def show(f: Finding) -> None:
        if f.problem is not None:
            print(shown(f"mismatch: s3://{config.destination.location.bucket}/{f.dest_key}: {f.problem}"))

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
    incomplete = not_done_line(not_done, total=len(rows) + sum(not_done.values()), listed=listed)
    if incomplete:
        print(incomplete)
    return EXIT_FAILED if bad or incomplete else EXIT_OK


def not_done_line(not_done: dict[str, int], *, total: int, listed: bool) -> str | None:
    """Why the migration is not verified as a whole, beyond the objects checked (None: nothing)."""
    if total == 0:
        return "not verified: the checkpoint holds no objects (run `rekey run` first)"
    if not_done:
        states = ", ".join(f"{state} {n}" for state, n in not_done.items())
        return f"not verified: {sum(not_done.values())} object(s) in scope are not done ({states}); run again"
    if not listed:
        return "not verified: the listing has not finished; run again"
    return None


def register(sub: Any) -> None:
    p = sub.add_parser("verify", help="check every object the checkpoint calls done (--deep: read it back)")
    p.add_argument("-c", "--config", required=True, help="TOML config file")
    p.add_argument("--deep", action="store_true", help="also read each object and compare a recorded checksum")
    p.add_argument("--report", metavar="FILE.json", help="write the findings here as JSON")
    p.set_defaults(handler=cmd_verify)
