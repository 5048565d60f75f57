"""`rekey audit`: how a bucket is encrypted, per mode and key (see engine.audit)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from engine.commands.common import EXIT_FAILED, EXIT_OK, run_async
from workers.errors import ConfigError


def cmd_audit(args: argparse.Namespace) -> int:
    from engine.audit import audit_objects, scope_from_args, summarize, table_text, write_chart, write_csv
    if args.concurrency < 1:
        raise ConfigError("audit.concurrency: must be at least 1")
    if args.json and args.csv:
        raise ConfigError("audit: --json and --csv are exclusive")
    if (args.before or args.after) and not args.chart:
        raise ConfigError("audit: --before/--after need --chart FILE.png")
    if args.chart and args.before and args.after and not (args.config or args.bucket):
        write_chart(args.chart, before=args.before, after=args.after, current=None)
        print(f"chart written to {args.chart}", file=sys.stderr)
        return EXIT_OK
    scope = scope_from_args(args)
    notes = []
    if scope.sse_c_key is not None and scope.endpoint.is_plain_http:
        notes.append("SSE-C key not tried: customer keys are only sent over HTTPS")
    records, markers = run_async(lambda: audit_objects(scope))
    summary = summarize(scope, records, markers, notes=notes)
    if args.json:
        print(json.dumps(summary, indent=2))
    elif args.csv:
        write_csv(records, sys.stdout)
    else:
        print(table_text(summary))
    if args.chart:
        write_chart(args.chart, before=args.before, after=args.after, current=summary)
        print(f"chart written to {args.chart}", file=sys.stderr)
    if args.fail_unless_target:
        if scope.target is None:
            raise ConfigError("audit: --fail-unless-target needs a config with [target]")
        if summary["not_in_target"] or summary["errors"]:
            return EXIT_FAILED
    return EXIT_OK


def register(sub: Any) -> None:
    p = sub.add_parser("audit", help="count objects and bytes per encryption mode and key (read-only)")
    p.add_argument("-c", "--config", help="TOML config: audits [source] (keys, filters) against [target]")
    p.add_argument("--destination", action="store_true", help="audit the config's [destination] instead")
    p.add_argument("--bucket", help="bucket to audit (overrides the config)")
    p.add_argument("--prefix", help="key prefix (overrides the config)")
    p.add_argument("--endpoint-url", help="S3 endpoint, e.g. https://127.0.0.1:8433")
    p.add_argument("--ca-bundle", metavar="PEM", help="CA bundle to verify the endpoint's certificate")
    p.add_argument("--region")
    p.add_argument("--concurrency", type=int, default=32, help="HeadObject requests in flight (default 32)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="JSON summary (by_mode, by_key, not_in_target, ...)")
    out.add_argument("--csv", action="store_true", help="one CSV row per object version")
    p.add_argument("--versions", action="store_true", help="also audit noncurrent versions (shown apart)")
    p.add_argument("--chart", metavar="FILE.png", help="draw bytes per mode (before/after) as a PNG")
    p.add_argument("--before", metavar="A.json", help="an earlier `audit --json` output for the chart")
    p.add_argument("--after", metavar="B.json", help="a later `audit --json` output (default: this audit)")
    p.add_argument("--fail-unless-target", action="store_true",
                   help="exit 1 when some object is not in the config's target mode")
    p.set_defaults(handler=cmd_audit)
