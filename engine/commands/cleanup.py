"""`rekey cleanup -c FILE [--dry-run]`: abort the incomplete multipart uploads rekey started (see engine.cleanup)."""

from __future__ import annotations

import argparse
from typing import Any

from engine.commands.common import EXIT_OK, load, run_async
from engine.lock import CheckpointLock
from engine.terminal import shown


def cmd_cleanup(args: argparse.Namespace) -> int:
    from engine.checkpoint import open_checkpoint
    from engine.cleanup import abort_uploads
    config = load(args)
    dst = config.destination.location
    # A run's own uploads must not be aborted under it: cleanup takes the run's lock (exit 3 while one runs).
    with CheckpointLock(config.run.checkpoint):
        cp = open_checkpoint(config, create=False)
        try:
            rows = [r for r in cp.uploads() if r.dest_bucket == dst.bucket and r.dest_key.startswith(dst.prefix)]
            lines, others = run_async(lambda: abort_uploads(config, rows, dry_run=args.dry_run))
            if not args.dry_run:
                for r in rows:
                    cp.finish_upload(r.key, r.version_id, r.upload_id)
        finally:
            cp.close()
    for line in lines:
        print(shown(line))
    verb = "to abort or forget" if args.dry_run else "aborted or forgotten"
    print(f"{len(rows)} upload(s) started by rekey under s3://{dst.bucket}/{dst.prefix} {verb}; "
          f"{others} other incomplete upload(s) there left alone")
    return EXIT_OK


def register(sub: Any) -> None:
    p = sub.add_parser("cleanup", help="abort incomplete multipart uploads this checkpoint's runs started")
    p.add_argument("-c", "--config", required=True, help="TOML config file")
    p.add_argument("--dry-run", action="store_true", help="list what would be aborted; change nothing")
    p.set_defaults(handler=cmd_cleanup)
