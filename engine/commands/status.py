"""`rekey status -c FILE [--json]`: progress recorded in the checkpoint."""

from __future__ import annotations

import argparse
import json
from typing import Any

from engine.commands.common import EXIT_OK, load, with_config


def cmd_status(args: argparse.Namespace) -> int:
    from engine.checkpoint import open_checkpoint
    from engine.report import build_report, failures, summary_text
    config = load(args)
    cp = open_checkpoint(config, create=False, read_only=True)
    try:   # aggregates and a few rows: no scan of the objects, whatever their number
        report = build_report(config, cp, None, with_objects=False)
        failed = failures(cp)
        position, done = cp.listing_position()
        uploads = cp.upload_count()
        runs = cp.run_count()
    finally:
        cp.close()
    if args.json:
        report["listing"] = {"position": position, "complete": done}
        report["open_uploads"] = uploads
        report["runs"] = runs
        print(json.dumps(report, indent=2))
        return EXIT_OK
    print(summary_text(report, failed))
    print(f"listing: {'complete' if done else 'in progress, after ' + repr(position)}; "
          f"{uploads} multipart upload(s) open; {runs} run(s) so far")
    return EXIT_OK


def register(sub: Any) -> None:
    p = with_config(sub, "status", "progress recorded in the checkpoint")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_status)
