"""`rekey policy -c FILE [--apply | --restore FILE]`: the bucket policy enforcing the target (see engine.policy)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

from engine.commands.common import EXIT_FAILED, EXIT_OK, run_async
from engine.config import load_config
from workers.errors import ConfigError, FatalError, RekeyError


def cmd_policy(args: argparse.Namespace) -> int:
    from engine.job import check_transport
    from engine.policy import apply_plan, load_saved, plan_for, restore
    config = load_config(args.config)
    if args.restore:
        if args.apply:
            raise ConfigError("policy: --apply and --restore are exclusive")
        saved = load_saved(Path(args.restore), config.destination.location.bucket)
        for line in run_async(lambda: restore(config, saved)):
            print(line)
        return EXIT_OK
    plan = run_async(lambda: plan_for(config))
    print(json.dumps(plan.to_json(), indent=2))
    if not args.apply:
        return EXIT_OK
    check_transport(config)  # an sse-c check would send the customer key
    bucket = plan.bucket
    # By default next to the config (not wherever the shell happens to be), readable by its owner only.
    save = Path(args.save_previous or Path(args.config).resolve().parent / f"rekey-policy-backup-{bucket}-"
                f"{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%SZ')}.json")
    try:
        checks = run_async(lambda: apply_plan(config, plan, save))
    except FatalError:
        raise
    except RekeyError as exc:
        print(f"rekey: error: {exc} (the previous policy is saved in {save}; "
              f"`rekey policy -c {args.config} --restore {save}` puts it back)", file=sys.stderr)
        return EXIT_FAILED
    print(f"previous policy saved to {save}", file=sys.stderr)
    for check in checks:
        print(f"check {check.name}: {'ok' if check.ok else 'FAILED'}: {check.detail}", file=sys.stderr)
    return EXIT_OK if all(c.ok for c in checks) else EXIT_FAILED


def register(sub: Any) -> None:
    p = sub.add_parser("policy", help="print (or apply) the bucket policy enforcing the target mode")
    p.add_argument("-c", "--config", required=True, help="TOML config ([destination] or [source], [target])")
    p.add_argument("--apply", action="store_true",
                   help="merge into the bucket policy, set default encryption, then check with scratch PUTs")
    p.add_argument("--save-previous", metavar="PATH",
                   help="where --apply saves the previous policy (default: rekey-policy-backup-BUCKET-TIME.json "
                   "next to the config)")
    p.add_argument("--restore", metavar="PATH", help="put back a policy saved by --apply")
    p.set_defaults(handler=cmd_policy)
