"""`rekey plan -c FILE [--json]`: what a run would do, without writing anything."""

from __future__ import annotations

import argparse
import json
from typing import Any

from engine.commands.common import EXIT_FAILED, EXIT_OK, load, run_async, with_config


def cmd_plan(args: argparse.Namespace) -> int:
    from engine.plan import plan_run, plan_text
    config = load(args)
    summary = run_async(lambda: plan_run(config))
    if args.json:
        print(json.dumps(summary.to_json(), indent=2))
    else:
        print(plan_text(summary))
    return EXIT_FAILED if summary.errors else EXIT_OK


def register(sub: Any) -> None:
    p = with_config(sub, "plan", "what a run would do, without writing anything")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_plan)
