"""Scale benchmarks (not timed tests): S8, the driver flat in object count, and S1/S6 on the Ray executor.

    python -m bench.scale s8 [--counts 2000,20000,200000]      local executor, 1 KiB objects bucket to bucket
    python -m bench.scale status [--rows 1000000]              `rekey status` on a synthetic checkpoint
    python -m bench.scale ray [--objects 2000] [--actors 2] [--scenarios S1,S6]
                                                                S1 and S6, local next to Ray; Ray start-up

S8 seeds each count once into its own bucket (reused by later invocations of the same sandbox workdir),
runs `rekey run` bucket to bucket to SSE-S3, and reports wall time, objects/s, client CPU per object, the
driver's peak RSS and how long `rekey status` takes on the checkpoint the run left. The Ray runs (S1: 8 KiB
bucket to bucket to SSE-S3; S6: 1 KiB in place to SSE-KMS) measure the CPU of every process of the run
(driver, Ray's own processes and the actors), sampled from /proc, and Ray's start-up as a run with nothing
to do, which the CPU per object is also given net of.
Results are printed as Markdown rows for bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from bench.run import _hwm_kib, _tree, boto_client

TICK = os.sysconf("SC_CLK_TCK")
SEED_CONCURRENCY = 64


@dataclass(slots=True)
class Sampled:
    code: int
    wall: float
    cpu: float          # user + system of every process of the tree, summed
    rss_mib: float      # the biggest VmHWM of one process of the tree (the driver for local runs)
    driver_rss_mib: float


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except (OSError, IndexError, ValueError):
        return -1.0


def sample(argv: list[str], env: dict[str, str], cwd: Path) -> Sampled:
    """Run a command; sample CPU and peak RSS of it and every descendant every 50 ms."""
    start = time.monotonic()
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    cpu: dict[int, float] = {}
    hwm: dict[int, int] = {}
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        for p in _tree(proc.pid):
            seen = _cpu_seconds(p)
            if seen >= 0:
                cpu[p] = seen
            hwm[p] = max(hwm.get(p, 0), _hwm_kib(p))
        time.sleep(0.05)
    wall = time.monotonic() - start
    cpu[proc.pid] = usage.ru_utime + usage.ru_stime
    err = proc.stderr.read().decode() if proc.stderr else ""
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 1):
        print(err, file=sys.stderr)
    return Sampled(code, wall, sum(cpu.values()), max(hwm.values(), default=0) / 1024,
                   hwm.get(proc.pid, 0) / 1024)


def seed(info: Any, client: Any, bucket: str, count: int, size: int) -> None:
    """`count` objects of `size` bytes in `bucket`, unless it already holds them; a seed cut short goes on
    from where it stopped (keys are PUT roughly in order, so from SEED_CONCURRENCY keys below the last)."""
    try:
        client.create_bucket(Bucket=bucket)
    except client.exceptions.BucketAlreadyOwnedByYou:
        pass
    have = seeded_up_to(client, bucket, count)
    if have == count:
        return
    os.environ.update(info.env())   # rekey's own S3 client takes the sandbox's credentials from the chain
    anyio.run(_put_all, info.s3_http, info.region, bucket, max(0, have - SEED_CONCURRENCY), count, os.urandom(size))


def seeded_up_to(client: Any, bucket: str, count: int) -> int:
    """1 + the highest i < count whose data/{i} exists (a binary search with HEAD), 0 when none does."""
    def exists(i: int) -> bool:
        try:
            client.head_object(Bucket=bucket, Key=f"data/{i:09d}")
        except client.exceptions.ClientError:
            return False
        return True

    lo, hi = 0, count   # data/{i} exists for some i < lo (or lo == 0); none at or past hi
    while lo < hi:
        mid = (lo + hi) // 2
        if exists(mid):
            lo = mid + 1
        else:
            hi = mid
    return lo


async def _put_all(endpoint_url: str, region: str, bucket: str, start: int, count: int, body: bytes) -> None:
    """PUT data/000000000.. with rekey's own S3 client (its fast transport), 64 at once: a tenth of
    boto3's client CPU per request, which matters for the 1,000,000-object seed on 2 cores."""
    from workers.s3 import S3, Endpoint, PutRequest
    keys = iter(range(start, count))

    async def putter(s3: S3) -> None:
        for i in keys:
            await s3.put(PutRequest(bucket, f"data/{i:09d}", body))

    async with S3.open(Endpoint(endpoint_url=endpoint_url, region=region)) as s3, anyio.create_task_group() as tg:
        for _ in range(SEED_CONCURRENCY):
            tg.start_soon(putter, s3)


def config(tmp: Path, info: Any, src: str, dst: str | None, target: dict[str, Any], *, executor: str = "local",
           actors: int | None = None, concurrency: int = 64) -> Path:
    lines = [f'[source]\nbucket = "{src}"\nendpoint_url = "{info.s3_http}"\nregion = "{info.region}"\n']
    if dst:
        lines.append(f'[destination]\nbucket = "{dst}"\n')
    lines.append("[target]\n" + "".join(f'{k} = "{v}"\n' for k, v in target.items()))
    lines.append(f'[kms]\nendpoint_url = "{info.kms_url}"\nregion = "{info.region}"\n')
    lines.append(f'[run]\ncheckpoint = "{tmp / "cp.sqlite"}"\nconcurrency = {concurrency}\nexecutor = "{executor}"\n')
    if actors:
        lines.append(f"[ray]\nactors = {actors}\n")
    path = tmp / "rekey.toml"
    path.write_text("\n".join(lines))
    return path


def env_for(info: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and not k.lower().endswith("_proxy")}
    env.update(info.env())
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    return env


def rekey(*args: str) -> list[str]:
    return [sys.executable, "-m", "engine.launch", *args]


STATUS_WORK = """
import sys, time
t0 = time.perf_counter()
from engine.cli import main
import engine.commands.status, engine.pipeline, engine.report
t1 = time.perf_counter()
code = main(["status", "-c", sys.argv[1]])
t2 = time.perf_counter()
print(f"STATUS-TIMES {t1 - t0:.4f} {t2 - t1:.4f}", file=sys.stderr)
sys.exit(code)
"""


def status_times(cfg: Path, env: dict[str, str], repeats: int = 3) -> tuple[float, float, float]:
    """(best wall of `rekey status` as a command, best of its imports, best of the status work itself):
    the command's time on a small machine is mostly the interpreter and imports, so the work is timed apart."""
    walls, imports, works = [], [], []
    for _ in range(repeats):
        started = time.monotonic()
        st = subprocess.run(rekey("status", "-c", str(cfg)), env=env, capture_output=True, check=False)
        walls.append(time.monotonic() - started)
        assert st.returncode == 0, st.stderr
        inner = subprocess.run([sys.executable, "-c", STATUS_WORK, str(cfg)], env=env, capture_output=True,
                               check=False, text=True)
        assert inner.returncode == 0, inner.stderr
        line = next(x for x in inner.stderr.splitlines() if x.startswith("STATUS-TIMES"))
        imported, work = (float(v) for v in line.split()[1:])
        imports.append(imported)
        works.append(work)
    return min(walls), min(imports), min(works)


@contextlib.contextmanager
def _run_dir(prefix: str, workdir: str | None) -> Iterator[Path]:
    """A fresh folder for one run: under `workdir` and kept when one is given, else a temporary one."""
    if workdir:
        yield Path(tempfile.mkdtemp(prefix=prefix, dir=workdir))
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as d:
        yield Path(d)


def s8(info: Any, counts: list[int], workdir: str | None) -> None:
    client = boto_client(info)
    print("| objects | wall s | objects/s | client CPU ms/object | driver peak RSS MiB | `rekey status` s "
          "(command) | of it imports s | status work s |")
    print("|---|---|---|---|---|---|---|---|")
    for n in counts:
        src = f"s8-src-{n}"
        started = time.monotonic()
        seed(info, client, src, n, 1024)
        print(f"<!-- {src}: seeded or found in {time.monotonic() - started:.0f} s -->", flush=True)
        # the checkpoint of a large run needs disk: next to the sandbox's data when a workdir is given, and
        # kept there (its path printed) so that `rekey status` can be timed on it again later
        with _run_dir("s8-", workdir) as tmp:
            dst = f"s8-dst-{n}-{int(time.time())}"
            client.create_bucket(Bucket=dst)
            cfg = config(tmp, info, src, dst, {"mode": "sse-s3"})
            run = sample(rekey("run", "-q", "-c", str(cfg)), env_for(info), tmp)
            assert run.code == 0, f"rekey run exited {run.code}"
            status_s, imports_s, work_s = status_times(cfg, env_for(info))
            if workdir:
                print(f"<!-- checkpoint kept: {cfg} -->", flush=True)
            print(f"| {n:,} | {run.wall:.1f} | {n / run.wall:.0f} | {1000 * run.cpu / n:.2f} | "
                  f"{run.driver_rss_mib:.0f} | {status_s:.2f} | {imports_s:.2f} | {work_s:.3f} |", flush=True)


@dataclass(frozen=True, slots=True)
class RayScenario:
    """S1 or S6 of bench/scenarios.py as the Ray comparison runs it."""

    name: str
    size: int
    target: str
    in_place: bool

    def title(self, objects: int) -> str:
        where = "in place" if self.in_place else "bucket to bucket"
        return f"{self.name}: {objects:,} x {self.size // 1024} KiB {where} to {self.target.upper()}"


RAY_SCENARIOS = {"S1": RayScenario("S1", 8 * 1024, "sse-s3", in_place=False),
                 "S6": RayScenario("S6", 1024, "sse-kms", in_place=True)}


def ray_env(info: Any) -> dict[str, str]:
    """Ray starts its workers at nice 15; here they run at the driver's niceness, so local and Ray compete
    alike with whatever else runs on the machine."""
    return {**env_for(info), "RAY_worker_niceness": "0"}


def ray_runs(info: Any, objects: int, actors: int, names: list[str]) -> None:
    """Each scenario local next to Ray with `actors` actors (Ray started locally by the run), then Ray's
    start-up as a run over an empty bucket; CPU per object net of that start-up is derived from both."""
    from engine.sandbox import create_kms_key
    client = boto_client(info)
    startup = ray_startup(info, client, actors)
    print(f"Ray start-up (a run over an empty bucket): {startup[0].wall:.1f} s wall, {startup[0].cpu:.1f} s CPU "
          f"with Ray; {startup[1].wall:.1f} s, {startup[1].cpu:.1f} s CPU local\n")
    print("| scenario | executor | wall s | objects/s | client CPU ms/object (all processes) | of it net of "
          "start-up | peak RSS MiB (biggest) |")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        sc = RAY_SCENARIOS[name]
        target = {"mode": sc.target} | ({"kms_key_id": create_kms_key(info, f"bench {name}")}
                                        if sc.target == "sse-kms" else {})
        src = f"{name.lower()}-src-{objects}"
        if not sc.in_place:
            seed(info, client, src, objects, sc.size)
        for executor in ("local", "ray"):
            if sc.in_place:   # the run changes its bucket: a fresh one each time
                src = f"{name.lower()}-{executor}-{objects}-{int(time.time())}"
                seed(info, client, src, objects, sc.size)
            with tempfile.TemporaryDirectory(prefix=f"{name}-") as d:
                tmp = Path(d)
                dst = None if sc.in_place else f"{name.lower()}-dst-{executor}-{int(time.time())}"
                if dst:
                    client.create_bucket(Bucket=dst)
                    client.put_object(Bucket=dst, Key="warm", Body=b"x")   # the volume allocation, not measured
                cfg = config(tmp, info, src, dst, target, executor=executor,
                             actors=actors if executor == "ray" else None)
                run = sample(rekey("run", "-q", "-c", str(cfg)), ray_env(info), tmp)
                assert run.code == 0, f"{name} {executor}: rekey run exited {run.code}"
                base = startup[0 if executor == "ray" else 1].cpu
                label = f"ray, {actors} actors" if executor == "ray" else "local"
                print(f"| {sc.title(objects)} | {label} | {run.wall:.1f} | {objects / run.wall:.0f} | "
                      f"{1000 * run.cpu / objects:.2f} | {1000 * (run.cpu - base) / objects:.2f} | "
                      f"{run.rss_mib:.0f} |", flush=True)


def ray_startup(info: Any, client: Any, actors: int) -> tuple[Sampled, Sampled]:
    """(Ray, local): a run with nothing to do, so what is measured is the executor's start and stop."""
    with tempfile.TemporaryDirectory(prefix="ray-empty-") as d:
        tmp = Path(d)
        client.create_bucket(Bucket="ray-empty")
        cfg = config(tmp, info, "ray-empty", None, {"mode": "sse-s3"}, executor="ray", actors=actors)
        empty = sample(rekey("run", "-q", "-c", str(cfg)), ray_env(info), tmp)
        cfg = config(tmp, info, "ray-empty", None, {"mode": "sse-s3"})
        (tmp / "cp.sqlite").unlink()
        local = sample(rekey("run", "-q", "-c", str(cfg)), ray_env(info), tmp)
    return empty, local


def synthetic_status(rows: int, workdir: str | None) -> None:
    """`rekey status` on a checkpoint of `rows` done objects written directly (no server, no run): what the
    status costs at a count too large to migrate on this machine."""
    from engine.checkpoint import open_checkpoint
    from engine.config import load_config
    from workers.model import Action, Mode, ObjectRef, Outcome, State
    with tempfile.TemporaryDirectory(prefix="status-", dir=workdir) as d:
        tmp = Path(d)
        cfg = tmp / "rekey.toml"
        cfg.write_text(f'[source]\nbucket = "synthetic"\nendpoint_url = "http://127.0.0.1:9"\n'
                       f'[destination]\nbucket = "synthetic-dst"\n[target]\nmode = "sse-s3"\n'
                       f'[run]\ncheckpoint = "{tmp / "cp.sqlite"}"\n')
        cp = open_checkpoint(load_config(str(cfg)))
        started = time.monotonic()
        for lo in range(0, rows, 1000):
            refs = [ObjectRef(f"data/{i:09d}", 1024, f"etag-{i}") for i in range(lo, min(rows, lo + 1000))]
            cp.add_listed(refs, position=refs[-1].key, done=lo + 1000 >= rows)
            cp.record_outcomes([Outcome(r.key, State.DONE, Action.COPY, Mode.NONE, Mode.SSE_S3, bytes_copied=1024,
                                        new_etag=r.etag) for r in refs], ["local"] * len(refs))
        cp.close()
        built = time.monotonic() - started
        status_s, imports_s, work_s = status_times(cfg, {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)})
        size = (tmp / "cp.sqlite").stat().st_size / 2**20
        print(f"| {rows:,} (synthetic, built in {built:.0f} s, {size:.0f} MiB) | {status_s:.2f} | {imports_s:.2f} | "
              f"{work_s:.3f} |", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=("s8", "ray", "status"))
    ap.add_argument("--rows", type=int, default=1_000_000, help="status: rows of the synthetic checkpoint")
    ap.add_argument("--counts", default="2000,20000")
    ap.add_argument("--objects", type=int, default=2000)
    ap.add_argument("--actors", type=int, default=2)
    ap.add_argument("--scenarios", default="S1,S6", help="ray: which of S1, S6 (comma-separated)")
    ap.add_argument("--workdir", help="sandbox data kept here (seeded buckets are reused)")
    args = ap.parse_args(argv)
    if args.what == "status":
        synthetic_status(args.rows, args.workdir)
        return 0
    from engine.sandbox import Sandbox
    sandbox = Sandbox(workdir=args.workdir) if args.workdir else Sandbox()
    info = sandbox.start()
    try:
        if args.what == "s8":
            s8(info, [int(c) for c in args.counts.split(",")], args.workdir)
        else:
            ray_runs(info, args.objects, args.actors, args.scenarios.split(","))
    finally:
        sandbox.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
