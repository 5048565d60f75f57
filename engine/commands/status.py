"""`rekey status -c FILE [--json]`: progress recorded in the checkpoint."""

from __future__ import annotations

import argparse
import json
from typing import Any

from engine.commands.common import EXIT_OK, load, with_config


def cmd_status(args: argparse.Namespace) -> int:
    from engine.pipeline import open_checkpoint
    from engine.report import build_report, summary_text
    config = load(args)
    cp = open_checkpoint(config, create=False, read_only=True)
    try:
        report = build_report(config, cp, None)
        position, done = cp.listing_position()
        uploads = cp.uploads()
        runs = cp.runs()
    finally:
        cp.close()
    if args.json:
        report["listing"] = {"position": position, "complete": done}
        report["open_uploads"] = len(uploads)
        report["runs"] = len(runs)
        del report["objects"]
        print(json.dumps(report, indent=2))
        return EXIT_OK
    print(summary_text(report))
    print(f"listing: {'complete' if done else 'in progress, after ' + repr(position)}; "
          f"{len(uploads)} multipart upload(s) open; {len(runs)} run(s) so far")
    return EXIT_OK


def register(sub: Any) -> None:
    p = with_config(sub, "status", "progress recorded in the checkpoint")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_status)
