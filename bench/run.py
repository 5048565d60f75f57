"""`python -m bench.run [--quick] [--scenarios S1,S3] [--runs N] [--tools rekey,rclone] [--profile]`.

Starts the local sandbox (SeaweedFS + moto KMS), and for each scenario and tool: seeds fresh buckets, runs the
tool as a child process (wall time, CPU and peak RSS from wait4), checks every result with HeadObject and byte
comparison, and keeps the median of N runs. Writes JSON, a markdown table and a PNG chart into bench/results/.
Run it in a private network namespace when others use the machine: SeaweedFS's ports are fixed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench import peers
from bench.scenarios import MiB, Scenario, delete_bucket, make_bucket, scenarios, seed, verify

RESULTS = Path(__file__).resolve().parent / "results"
TIMEOUT = 3600.0


@dataclass(slots=True)
class Measured:
    """One child process: wall seconds, CPU seconds (user + system), peak RSS of it or a waited descendant."""

    code: int
    wall: float
    cpu: float
    rss_mib: float


def measure(argv: list[str], env: dict[str, str], log: Path) -> Measured:
    full_env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    full_env.update(env)
    with open(log, "wb") as out:
        start = time.monotonic()
        proc = subprocess.Popen(argv, env=full_env, stdout=out, stderr=subprocess.STDOUT, cwd=log.parent)
        deadline = start + TIMEOUT
        peak: dict[int, int] = {}
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
            for p in _tree(proc.pid):
                peak[p] = max(peak.get(p, 0), _hwm_kib(p))
            time.sleep(0.02)
        wall = time.monotonic() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    # ru_maxrss would include the parent's RSS at fork; VmHWM of the biggest process of the tree does not.
    return Measured(proc.returncode, wall, usage.ru_utime + usage.ru_stime, max(peak.values(), default=0) / 1024)


def _tree(pid: int) -> list[int]:
    """`pid` and its descendants, from /proc/PID/task/*/children."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            try:
                todo += [int(c) for c in task.read_text().split()]
            except OSError:
                pass
    return found


def _hwm_kib(pid: int) -> int:
    """Peak resident set of one process (VmHWM), 0 if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def compile_rekey() -> None:
    """Byte-compile rekey's own modules, as pip does for the peers' packages when it installs them: rekey
    runs from the work tree, and with PYTHONDONTWRITEBYTECODE set (or a fresh tree) every run of it would
    otherwise compile its modules from source at start-up (0.2-0.4 s of CPU on the 2-core machine)."""
    import compileall
    for package in ("engine", "workers"):
        compileall.compile_dir(str(peers.ROOT / package), quiet=1)


def boto_client(info: Any) -> Any:
    import botocore.config
    import botocore.session
    cfg = botocore.config.Config(s3={"addressing_style": "path"}, max_pool_connections=64,
                                 request_checksum_calculation="when_required",
                                 response_checksum_validation="when_required", retries={"max_attempts": 8})
    return botocore.session.get_session().create_client(
        "s3", endpoint_url=info.s3_http, region_name=info.region, aws_access_key_id=info.access_key,
        aws_secret_access_key=info.secret_key, config=cfg)


def cse_digests(ctx: peers.Ctx, bucket: str) -> dict[str, str]:
    r = subprocess.run([peers.tools_python(), str(Path(__file__).with_name("s3ec_tool.py")), "digests", bucket,
                        ctx.kms_arn], env={**os.environ, **ctx.aws_env(), "BENCH_S3_URL": ctx.s3_url,
                                           "BENCH_KMS_URL": ctx.kms_url}, capture_output=True, text=True)
    if r.returncode != 0:
        return {"error": r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "failed"}
    return dict(json.loads(r.stdout))


def one_run(info: Any, client: Any, sc: Scenario, tool: peers.Tool, n: int, keys: tuple[str, str],
            scratch: Path) -> dict[str, Any]:
    slug = "".join(c if c.isalnum() else "-" for c in tool.name.lower())
    src = f"{sc.name.lower()}-{slug}-{n}-src"
    dst = src if sc.in_place else f"{sc.name.lower()}-{slug}-{n}-dst"
    work = scratch / f"{sc.name}-{slug}-{n}"
    work.mkdir(parents=True, exist_ok=True)
    ctx = peers.Ctx(s3_url=info.s3_http, kms_url=info.kms_url, access_key=info.access_key,
                    secret_key=info.secret_key, region=info.region, src=src, dst=dst, kms_key=keys[0],
                    kms_arn=keys[1], workdir=work)
    cmd = tool.build(sc, ctx)
    if isinstance(cmd, str):
        return {"unsupported": cmd}
    for b in {src, dst}:
        delete_bucket(client, b)
        make_bucket(client, b)
    if dst != src:   # SeaweedFS allocates a bucket's volumes on its first write (0.2 s): not the tool's work
        client.put_object(Bucket=dst, Key="bench-warm", Body=b"x")
        client.delete_object(Bucket=dst, Key="bench-warm")
    expected = seed(client, src, sc)
    m = measure(cmd.argv, cmd.env, work / "output.log")
    # The no-crypto ceiling writes plaintext on purpose: it is checked byte for byte, not for an envelope.
    vsc = replace(sc, target="plain") if tool.family == "ceiling" else sc
    digests = cse_digests(ctx, dst) if vsc.target == "cse" and m.code == 0 else None
    check = verify(client, dst, vsc, expected, kms_key=keys[0], cse_digests=digests)
    run: dict[str, Any] = {"exit_code": m.code, "wall": round(m.wall, 3), "cpu": round(m.cpu, 3),
                           "rss_mib": round(m.rss_mib, 1), "check": check.to_json(),
                           "ok": m.code == 0 and check.ok}
    if m.code != 0:
        run["output_tail"] = (work / "output.log").read_text(errors="replace")[-800:]
    if cmd.report and cmd.report.exists():
        rep = json.loads(cmd.report.read_text())
        run["requests"] = rep.get("run", {}).get("requests")
        marks = rep.get("run", {}).get("timeline") or {}
        if "last_object" in marks:   # seconds since the process began; the exit is when wait4 returned
            run["fixed"] = {"first_request": marks.get("first_request"), "first_object": marks.get("first_object"),
                            "after_last_object": round(m.wall - marks["last_object"], 3)}
        run["by_action"] = {k: v["objects"] for k, v in rep["summary"]["by_action"].items()}
    for b in {src, dst}:
        delete_bucket(client, b)
    if run["ok"]:
        shutil.rmtree(work, ignore_errors=True)
    return run


def summarize(sc: Scenario, tool: peers.Tool, runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in runs if r.get("ok")]
    row: dict[str, Any] = {"scenario": sc.name, "tool": tool.name, "family": tool.family, "runs": runs,
                           "ok": bool(runs) and len(ok) == len(runs)}
    basis = ok or runs
    wall = statistics.median(r["wall"] for r in basis)
    row.update(wall=round(wall, 3), objects_per_s=round(sc.count / wall, 1),
               mib_per_s=round(sc.total_bytes / MiB / wall, 1),
               cpu=round(statistics.median(r["cpu"] for r in basis), 3),
               rss_mib=round(statistics.median(r["rss_mib"] for r in basis), 1))
    row["cpu_ms_per_object"] = round(1000 * row["cpu"] / sc.count, 3)
    reqs = [r["requests"] for r in basis if r.get("requests")]
    if reqs:
        row["requests_per_object"] = round(statistics.median(reqs) / sc.count, 2)
    fixed = [r["fixed"] for r in basis if r.get("fixed")]
    if fixed:
        row["fixed"] = {name: round(statistics.median(f[name] for f in fixed if f.get(name) is not None), 3)
                        for name in ("first_request", "first_object", "after_last_object")
                        if any(f.get(name) is not None for f in fixed)}
    kept = [r["check"]["metadata_kept"] for r in basis]
    row["metadata_kept"] = None if None in kept else all(kept)
    return row


def profile_rekey(info: Any, client: Any, sc: Scenario, keys: tuple[str, str], scratch: Path) -> str:
    """Run rekey on `sc` under cProfile; return a text summary (top functions, self time by package)."""
    import pstats
    out = scratch / "rekey-S1.prof"

    def build(s: Scenario, ctx: peers.Ctx) -> peers.Command | str:
        cmd = peers.TOOLS[0].build(s, ctx)
        assert isinstance(cmd, peers.Command)
        exe = str(peers.ROOT / ".venv" / "bin" / "python")
        # engine.cli's console entry ends in os._exit, which would lose `python -m cProfile`'s output.
        code = ("import cProfile, sys, engine.cli as c; p = cProfile.Profile(); "
                "code = p.runcall(c.main, sys.argv[2:]); p.dump_stats(sys.argv[1]); sys.exit(code)")
        return peers.Command([exe, "-c", code, str(out), *cmd.argv[1:]], cmd.env, cmd.report)

    run = one_run(info, client, sc, peers.Tool("rekey (cProfile)", "rekey", build), 0, keys, scratch)
    stats = pstats.Stats(str(out))
    total = stats.total_tt  # type: ignore[attr-defined]
    by_pkg: dict[str, float] = {}
    rows = []
    for (file, line, fn), (_cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        pkg = _package(file)
        by_pkg[pkg] = by_pkg.get(pkg, 0.0) + tt
        rows.append((tt, ct, nc, f"{pkg}:{Path(file).name}:{line}({fn})"))
    lines = [f"rekey on {sc.name} ({sc.count} objects) under cProfile: wall {run['wall']} s, "
             f"{run.get('requests')} requests ({(run.get('requests') or 0) / sc.count:.2f} per object), "
             f"profiled CPU {total:.2f} s ({1000 * total / sc.count:.2f} ms per object), check ok={run['ok']}",
             "", "self time by package:"]
    lines += [f"  {100 * t / total:5.1f}%  {p}" for p, t in sorted(by_pkg.items(), key=lambda x: -x[1])[:14]]
    lines += ["", "top functions by self time (tottime s, cumtime s, calls):"]
    lines += [f"  {tt:6.3f} {ct:7.3f} {nc:8d}  {name}" for tt, ct, nc, name in sorted(rows, reverse=True)[:30]]
    lines += ["", "top functions by cumulative time:"]
    lines += [f"  {ct:7.3f} {100 * ct / total:5.1f}% {nc:8d}  {name}"
              for tt, ct, nc, name in sorted(rows, key=lambda r: -r[1])[:45]]
    return "\n".join(lines)


def _package(file: str) -> str:
    if file.startswith("~") or file.startswith("<"):
        return "builtins"
    parts = Path(file).parts
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1].split(".")[0]
    for name in ("engine", "workers"):
        if name in parts:
            return name
    return "stdlib:" + Path(file).stem


def markdown(results: dict[str, Any]) -> str:
    lines = [f"Run {results['started']} on {results['machine']} ({results['mode']}, median of {results['runs']}).",
             "", "| scenario | tool | result | obj/s | MiB/s | wall s | client CPU s | CPU ms/obj | peak RSS MiB "
             "| req/obj | metadata kept |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    scs = results["scenarios"]
    for row in results["rows"]:
        sc = scs[row["scenario"]]
        label = f"{row['scenario']}: {sc['count']:,} x {_size(sc['size'])}"
        if "unsupported" in row:
            lines.append(f"| {label} | {row['tool']} | n/a: {row['unsupported']} | | | | | | | | |")
            continue
        res = "ok" if row["ok"] else "FAILED"
        kept = {None: "", True: "yes", False: "no"}[row.get("metadata_kept")]
        lines.append(f"| {label} | {row['tool']} | {res} | {row['objects_per_s']} | {row['mib_per_s']} | "
                     f"{row['wall']} | {row['cpu']} | {row['cpu_ms_per_object']} | {row['rss_mib']} | "
                     f"{row.get('requests_per_object', '')} | {kept} |")
    lines += fixed_cost(results)
    lines += ["", "Ratios (same run):", ""] + [f"- {r}" for r in results["ratios"]]
    return "\n".join(lines) + "\n"


def fixed_cost(results: dict[str, Any]) -> list[str]:
    """rekey's fixed cost per scenario, from its report's timeline: launch to the first request and to the first
    finished object, and from the last finished object to the process's exit (median seconds)."""
    rows = [r for r in results["rows"] if r.get("fixed")]
    if not rows:
        return []
    lines = ["", "Fixed cost (rekey's timeline, median s): launch -> first request, launch -> first object done, "
             "last object done -> exit", "", "| scenario | tool | first request | first object | after last object |",
             "|---|---|---|---|---|"]
    for row in rows:
        f = row["fixed"]
        lines.append(f"| {row['scenario']} | {row['tool']} | {f.get('first_request', '')} | "
                     f"{f.get('first_object', '')} | {f.get('after_last_object', '')} |")
    return lines


def _size(n: int) -> str:
    return f"{n // MiB} MiB" if n >= MiB else f"{n // 1024} KiB"


def ratios(rows: list[dict[str, Any]]) -> list[str]:
    get = {(r["scenario"], r["tool"]): r for r in rows if "unsupported" not in r}
    out = []

    def ratio(sc: str, a: str, b: str, what: str = "objects_per_s", label: str = "") -> None:
        ra, rb = get.get((sc, a)), get.get((sc, b))
        if ra and rb and rb[what]:
            flag = "" if ra["ok"] and rb["ok"] else " (a run FAILED its check)"
            out.append(f"{sc}: {a} / {b} {label or what} = {ra[what] / rb[what]:.2f}x{flag}")

    for sc in ("S1", "S2"):
        ratio(sc, "rekey", "rclone 64/64")
        ratio(sc, "rekey c=16", "rclone 64/64")
    ratio("S3", "rekey", "rclone 64/64", "mib_per_s")   # 8 objects: objects/s is rounded to nothing
    ratio("S3", "rekey c=16", "rclone 64/64", "mib_per_s")
    for sc in ("S1", "S2"):
        ra, rb = get.get((sc, "rekey")), get.get((sc, "rclone 64/64"))
        if ra and rb:
            out.append(f"{sc}: client CPU per object: rekey {ra['cpu_ms_per_object']} ms, "
                       f"rclone 64/64 {rb['cpu_ms_per_object']} ms")
    ratio("S3", "rekey", "rclone", "mib_per_s")
    ratio("S4", "rekey", "aws-cli 64")
    ratio("S4", "rekey", "aws-cli")
    ratio("S5", "rekey", "s3ec official", "mib_per_s")
    ratio("S5", "rekey", "boto3 no-crypto ceiling", "mib_per_s")
    for tool in ("rekey", "rekey c=16"):
        a, b = get.get(("S6", tool)), get.get(("S6a", tool))
        if a and b:
            out.append(f"S6: {tool} objects/s at the large count / at the small count (S6a) = "
                       f"{a['objects_per_s']} / {b['objects_per_s']} = {a['objects_per_s'] / b['objects_per_s']:.2f}")
    for tool in ("rekey", "s3ec official", "boto3 no-crypto ceiling"):
        r = get.get(("S7", tool))
        if r:
            out.append(f"S7: {tool} peak RSS {r['rss_mib']} MiB")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="about 10x fewer objects, smaller large objects, 1 run")
    ap.add_argument("--scenarios", help="comma-separated, e.g. S1,S3 (default: all)")
    ap.add_argument("--tools", help="comma-separated tool names or families (default: all)")
    ap.add_argument("--runs", type=int, help="runs per tool and scenario (default 3, quick 1)")
    ap.add_argument("--profile", action="store_true", help="also profile rekey on S1 with cProfile")
    ap.add_argument("--no-install", action="store_true", help="do not install peers (use what is there)")
    args = ap.parse_args(argv)
    runs = args.runs or (1 if args.quick else 3)
    all_sc = scenarios(args.quick)
    chosen = [all_sc[s.strip()] for s in args.scenarios.split(",")] if args.scenarios else list(all_sc.values())
    if any(s.name == "S6" for s in chosen) and "S6a" not in [s.name for s in chosen]:
        chosen.insert([s.name for s in chosen].index("S6"), all_sc["S6a"])
    wanted = {t.strip() for t in args.tools.split(",")} if args.tools else None
    tools = [t for t in peers.TOOLS
             if (not t.opt_in and (t.quick or not args.quick) if wanted is None
                 else (t.name in wanted or t.family in wanted))]
    if not args.no_install:
        peers.install()
    compile_rekey()
    from engine.sandbox import Sandbox, create_kms_key
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    results: dict[str, Any] = {
        "started": stamp, "mode": "quick" if args.quick else "full", "runs": runs,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_implementation()} "
                   f"{platform.python_version()}, SeaweedFS weed mini + moto KMS on loopback (shared cores)",
        "versions": peers.versions(),
        "scenarios": {s.name: {"count": s.count, "size": s.size, "target": s.target, "in_place": s.in_place,
                               "title": s.title} for s in chosen},
        "rows": [],
    }
    scratch = Path(tempfile.mkdtemp(prefix="rekey-bench-"))
    with Sandbox() as info:
        os.environ.update(info.env())
        kms = create_kms_key(info, "bench")
        keys = (kms, f"arn:aws:kms:{info.region}:123456789012:key/{kms}")
        client = boto_client(info)
        for sc in chosen:
            # Runs are interleaved (run 1 of every tool, then run 2, ...): the server's state drifts over a
            # scenario (deleted buckets being reclaimed), and this spreads the drift over every tool alike.
            eligible = [t for t in tools if not (sc.rekey_only and t.family != "rekey")
                        and not (sc.target == "cse" and t.family not in ("rekey", "s3ec", "ceiling"))
                        and not (sc.target != "cse" and t.family in ("s3ec", "ceiling"))]
            done: dict[str, list[dict[str, Any]]] = {t.name: [] for t in eligible}
            unsupported: dict[str, str] = {}
            for n in range(runs):
                for tool in eligible:
                    if tool.name in unsupported:
                        continue
                    r = one_run(info, client, sc, tool, n, keys, scratch)
                    if "unsupported" in r:
                        unsupported[tool.name] = r["unsupported"]
                        continue
                    done[tool.name].append(r)
                    print(f"{sc.name} {tool.name} run {n + 1}: {sc.count / r['wall']:.1f} obj/s "
                          f"{sc.total_bytes / MiB / r['wall']:.1f} MiB/s cpu {r['cpu']:.2f}s rss {r['rss_mib']:.0f}MiB "
                          f"{'ok' if r['ok'] else 'FAILED ' + str(r['check']['problems'][:2])}"
                          f"{' exit ' + str(r['exit_code']) if r['exit_code'] else ''}", flush=True)
            for tool in eligible:
                if tool.name in unsupported:
                    results["rows"].append({"scenario": sc.name, "tool": tool.name, "family": tool.family,
                                            "unsupported": unsupported[tool.name], "ok": False})
                elif done[tool.name]:
                    results["rows"].append(summarize(sc, tool, done[tool.name]))
        if args.profile:
            text = profile_rekey(info, client, all_sc["S1"], keys, scratch)
            (RESULTS / f"profile-S1-{stamp}.txt").write_text(text + "\n", encoding="utf-8")
            results["profile"] = f"profile-S1-{stamp}.txt"
            print(text)
    results["ratios"] = ratios(results["rows"])
    path = RESULTS / f"bench-{stamp}.json"
    path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    md = markdown(results)
    (RESULTS / f"bench-{stamp}.md").write_text(md, encoding="utf-8")
    png = RESULTS / f"bench-{stamp}.png"
    subprocess.run([peers.tools_python(), str(Path(__file__).with_name("chart.py")), str(path), str(png)],
                   check=False)
    shutil.rmtree(scratch, ignore_errors=True)
    print(md)
    print(f"results: {path}, {png}")
    return 0 if all(r["ok"] or "unsupported" in r for r in results["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
