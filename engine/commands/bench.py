"""`rekey bench`: PUT/GET/COPY throughput and latency per encryption mode (see engine.benchcmd)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any

from engine.commands.common import run_async
from workers.errors import ConfigError


def _executor(args: argparse.Namespace) -> tuple[str, str | None, int | None]:
    """--executor, else the config's [run] executor; the Ray address and actors from flags, else [ray]."""
    if args.config and (args.executor is None or args.executor == "ray"):
        from engine.config import load_config
        config = load_config(args.config)
        return (args.executor or config.run.executor, args.ray_address or config.ray.address,
                args.actors or config.ray.actors)
    return args.executor or "local", args.ray_address, args.actors


# the modes `--modes` defaults to (engine.benchcmd.MODES, which imports the S3 stack: not at start-up)
DEFAULT_MODES = "none,sse-s3,sse-kms,dsse-kms,sse-c,cse"


def cmd_bench(args: argparse.Namespace) -> int:
    from engine.benchcmd import run_bench, settings_from_args, table
    settings = settings_from_args(args)
    executor, address, actors = _executor(args)
    if actors is not None and actors < 1:
        raise ConfigError("bench: --actors must be at least 1")
    per_actor: list[tuple[str, list[Any]]] = []
    if executor == "ray":
        from engine.executor.ray_bench import run_on_ray
        cluster = run_on_ray(settings, address=address, actors=actors)
        results, per_actor = cluster.total, cluster.per_actor
    else:
        results = run_async(lambda: run_bench(settings))
    if args.json:
        out: dict[str, Any] = {
            "settings": {"endpoint": settings.endpoint.endpoint_url, "bucket": settings.bucket,
                         "prefix": settings.prefix, "size": settings.size, "count": settings.count,
                         "concurrency": settings.concurrency},
            "executor": {"kind": executor, "actors": len(per_actor) or 1},
            "modes": [asdict(r) for r in results]}
        if per_actor:
            out["actors"] = [{"actor": name, "modes": [asdict(r) for r in rs]} for name, rs in per_actor]
        print(json.dumps(out, indent=2))
    else:
        if per_actor:
            print(f"{len(per_actor)} Ray actors at once, summed (latency: the worst actor's)")
        print(table(results, settings))
        for name, rs in per_actor:
            print(f"\n{name}\n{table(rs, settings)}")
    failed = any(p.failed for r in results for p in r.phases) or any(r.applied is False for r in results)
    return 1 if failed else 0


def register(sub: Any) -> None:
    p = sub.add_parser("bench", help="measure PUT/GET/COPY throughput and latency per encryption mode")
    p.add_argument("-c", "--config", help="TOML config: its destination endpoint, bucket and KMS key are used")
    p.add_argument("--endpoint-url", help="S3 endpoint (default: the config's, else AWS)")
    p.add_argument("--bucket", help="bucket for scratch objects (default: the config's destination bucket)")
    p.add_argument("--prefix", default="rekey-bench", help="scratch key prefix (a unique folder is added)")
    p.add_argument("--region")
    p.add_argument("--ca-bundle", help="PEM bundle to verify the endpoint's TLS certificate")
    p.add_argument("--kms-key-id", help="KMS key for sse-kms, dsse-kms and (with a KMS endpoint) cse")
    p.add_argument("--kms-endpoint-url", help="KMS endpoint for cse's keyring (default: the config's [kms]; "
                   "AWS KMS only when the S3 endpoint is AWS; otherwise cse uses a random local AES key)")
    p.add_argument("--size", default="1MiB", help="object size, e.g. 8KiB, 16MiB (default 1MiB)")
    p.add_argument("--count", type=int, default=100, help="objects per mode (default 100)")
    p.add_argument("--concurrency", type=int, default=16, help="requests in flight (default 16)")
    p.add_argument("--modes", default=DEFAULT_MODES,
                   help="comma-separated: none, sse-s3, sse-kms, dsse-kms, sse-c, cse (default: all)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--executor", choices=("local", "ray"),
                   help="ray: every Ray actor runs the benchmark at once, results summed and per actor "
                        "(default: the config's [run] executor, else local)")
    p.add_argument("--actors", type=int, help="Ray actors (default: the config's [ray] actors, else the CPUs)")
    p.add_argument("--ray-address", help="Ray cluster (default: the config's [ray] address, else a local Ray)")
    p.set_defaults(handler=cmd_bench)
