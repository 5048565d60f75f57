"""Client CPU per request of each S3 transport (fast and botocore), against a local SeaweedFS sandbox.

    python -m bench.transport_cpu [--requests N] [--concurrency C]

Starts a sandbox (SeaweedFS on 127.0.0.1), then for each transport sends N HeadObject, N PutObject of 8 KiB
and N CopyObject (to SSE-S3) through the boundary, C in flight, and prints the process CPU time (user + system
of this process only, so the server's and other programs' CPU is not counted) per request, on uvloop as
`rekey run` is. Wall time depends
on the machine's other load; CPU per request much less so.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Awaitable, Callable

import anyio

from engine.commands.common import run_async
from engine.sandbox import Sandbox
from workers.model import Encryption, Mode
from workers.s3 import S3, CopyRequest, Endpoint, PutRequest, Source


async def _phase(n: int, concurrency: int, one: Callable[[int], Awaitable[object]]) -> tuple[float, float]:
    limiter = anyio.CapacityLimiter(concurrency)
    cpu, wall = time.process_time(), time.monotonic()

    async def run(i: int) -> None:
        async with limiter:
            await one(i)

    async with anyio.create_task_group() as tg:
        for i in range(n):
            tg.start_soon(run, i)
    return time.process_time() - cpu, time.monotonic() - wall


async def measure(endpoint: Endpoint, bucket: str, n: int, concurrency: int) -> dict[str, tuple[float, float]]:
    body = os.urandom(8192)
    out: dict[str, tuple[float, float]] = {}
    async with S3.open(endpoint) as s3:
        await s3.head_bucket(bucket)   # the client (and botocore's model) made before timing
        tag = "fast" if endpoint.lean else "botocore"
        out["PutObject"] = await _phase(n, concurrency, lambda i: s3.put(PutRequest(bucket, f"{tag}/{i}", body)))
        out["HeadObject"] = await _phase(n, concurrency, lambda i: s3.head(bucket, f"{tag}/{i}"))
        out["CopyObject"] = await _phase(n, concurrency, lambda i: s3.copy(CopyRequest(
            bucket, f"{tag}/c{i}", Source(bucket, f"{tag}/{i}"), encryption=Encryption(Mode.SSE_S3))))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    with Sandbox() as info:
        os.environ.update(info.env())
        import boto3
        boto3.client("s3", endpoint_url=info.s3_http, region_name=info.region).create_bucket(Bucket="cpu")
        print(f"{args.requests} requests per operation, {args.concurrency} in flight; CPU ms per request (wall s)")
        for lean in (True, False, True, False):   # alternated: a busy moment falls on both
            endpoint = Endpoint(endpoint_url=info.s3_http, region=info.region, lean=lean)
            got = run_async(lambda e=endpoint: measure(e, "cpu", args.requests, args.concurrency))  # uvloop, as runs
            cells = "  ".join(f"{op} {1000 * cpu / args.requests:.3f} ({wall:.1f}s)" for op, (cpu, wall) in got.items())
            print(f"{'fast' if lean else 'botocore':<9} {cells}")


if __name__ == "__main__":
    main()
