"""Flat in object count: the completion report streamed per object (JSON Lines, CSV, appended on resume),
`rekey status` from the checkpoint's aggregates, the JSON report's executor section, and nothing of Ray
imported by a local run."""

from __future__ import annotations

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from engine.sandbox import SandboxInfo
from tests.cli_helpers import (
    REPO,
    checkpoint_rows,
    load_report,
    popen_rekey,
    rekey_env,
    run_rekey,
    small_run_section,
    source_section,
    write_config,
)


def completion_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_completion_report_status_and_executor_section(sandbox: SandboxInfo, s3: Any, bucket: str,
                                                       tmp_path: Path) -> None:
    keys = [f"d/{i:03d}" for i in range(30)]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    config = write_config(tmp_path, {"source": source_section(sandbox, bucket), "target": {"mode": "sse-s3"},
                                     "run": small_run_section(tmp_path / "cp.sqlite")})
    jsonl, csv_path, report = tmp_path / "done.jsonl", tmp_path / "done.csv", tmp_path / "r.json"
    first = run_rekey(sandbox, "run", "-q", "-c", str(config), "--completion-report", str(jsonl),
                      "--report", str(report))
    assert first.returncode == 0, first.describe()
    lines = completion_lines(jsonl)
    assert sorted(e["key"] for e in lines) == keys
    assert {(e["state"], e["action"], e["target_mode"], e["actor"], e["bucket"]) for e in lines} == {
        ("done", "copy", "sse-s3", "local", bucket)}
    rep = load_report(report)
    assert rep["executor"] == {"kind": "local", "actors": 1, "actors_lost": 0}
    assert {o["actor"] for o in rep["objects"]} == {"local"} and len(rep["objects"]) == 30
    assert all(s3.head_object(Bucket=bucket, Key=k)["ServerSideEncryption"] == "AES256" for k in keys)

    # status answers from the aggregates, which agree with the rows
    status = run_rekey(sandbox, "status", "--json", "-c", str(config))
    assert status.returncode == 0, status.describe()
    st = json.loads(status.stdout)
    assert st["summary"]["by_state"] == {"done": 30} and st["summary"]["by_action"] == {
        "copy": {"objects": 30, "bytes": sum(len(k) for k in keys)}}
    assert "objects" not in st
    totals = checkpoint_rows(tmp_path / "cp.sqlite", "SELECT state, objects FROM totals WHERE objects > 0")
    assert [(r[0], r[1]) for r in totals] == [("done", 30)]

    # new objects, a CSV report: only they get lines; the earlier JSON Lines file is untouched
    for key in ("e/1", "e/2"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"new")
    second = run_rekey(sandbox, "run", "-q", "-c", str(config), "--completion-report", str(csv_path))
    assert second.returncode == 0, second.describe()
    with csv_path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["key"] for r in rows) == ["e/1", "e/2"] and {r["state"] for r in rows} == {"done"}
    assert len(completion_lines(jsonl)) == 30

    bad = run_rekey(sandbox, "run", "-q", "-c", str(config), "--completion-report", str(tmp_path / "x.txt"))
    assert bad.returncode == 2 and "--completion-report" in bad.stderr, bad.describe()


def test_completion_report_after_sigkill_holds_only_what_the_checkpoint_holds(
        sandbox: SandboxInfo, s3: Any, bucket: str, tmp_path: Path) -> None:
    keys = [f"k/{i:04d}" for i in range(400)]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    cp = tmp_path / "cp.sqlite"
    config = write_config(tmp_path, {"source": source_section(sandbox, bucket), "target": {"mode": "sse-s3"},
                                     "run": small_run_section(cp, concurrency=4)})
    jsonl = tmp_path / "done.jsonl"
    proc = popen_rekey(sandbox, "run", "-q", "-c", str(config), "--completion-report", str(jsonl))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not jsonl.exists() or len(jsonl.read_bytes().splitlines()) < 20):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = {e["key"] for e in completion_lines(jsonl)}
    done = {r[0] for r in checkpoint_rows(cp, "SELECT key FROM objects WHERE state = 'done'")}
    assert written and written <= done
    again = run_rekey(sandbox, "run", "-q", "-c", str(config), "--completion-report", str(jsonl))
    assert again.returncode == 0, again.describe()
    assert {e["key"] for e in completion_lines(jsonl)} == set(keys)


def test_a_local_run_imports_nothing_of_ray(sandbox: SandboxInfo, s3: Any, bucket: str, tmp_path: Path) -> None:
    s3.put_object(Bucket=bucket, Key="one", Body=b"1")
    config = write_config(tmp_path, {"source": source_section(sandbox, bucket), "target": {"mode": "sse-s3"},
                                     "run": small_run_section(tmp_path / "cp.sqlite")})
    code = ("import sys\nfrom engine.cli import main\n"
            f"rc = main(['run', '-q', '-c', {str(config)!r}])\n"
            "print(rc, sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))\n")
    env = rekey_env(sandbox)
    env.pop("PYTHONWARNINGS", None)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=str(REPO),
                          timeout=120, check=False)
    assert proc.stdout.split() == ["0", "[]"], proc.stdout + proc.stderr
    assert os.path.exists(tmp_path / "cp.sqlite")


def run_in_ranges(sandbox: SandboxInfo, config: Path, split_above: int) -> subprocess.CompletedProcess[str]:
    """`rekey run` in a subprocess with the listing split above `split_above` keys (a page is 1,000)."""
    code = ("import sys, engine.ranges\n"
            f"engine.ranges.SPLIT_ABOVE = {split_above}\n"
            "from engine.cli import main\n"
            f"sys.exit(main(['run', '-q', '-c', {str(config)!r}]))\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=rekey_env(sandbox),
                          cwd=str(REPO), timeout=180, check=False)


def test_listing_in_ranges_covers_every_key_once_and_resumes_per_range(sandbox: SandboxInfo, s3: Any,
                                                                         bucket: str, tmp_path: Path) -> None:
    keys = [f"{top}/{i:02d}" for top in ("a", "b", "k", "x") for i in range(12)] + ["!first", "zz", "~last"]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    cp = tmp_path / "cp.sqlite"
    config = write_config(tmp_path, {"source": source_section(sandbox, bucket), "target": {"mode": "sse-s3"},
                                     "run": small_run_section(cp)})
    first = run_in_ranges(sandbox, config, 5)
    assert first.returncode == 0, first.stdout + first.stderr
    ranges = checkpoint_rows(cp, "SELECT lo, hi, position, done FROM listing_ranges ORDER BY lo")
    assert len(ranges) >= 4 and all(r["done"] == 1 for r in ranges), [tuple(r) for r in ranges]
    rows = checkpoint_rows(cp, "SELECT key, state FROM objects")
    assert sorted(r["key"] for r in rows) == sorted(keys)
    assert {r["state"] for r in rows} == {"done"}, [tuple(r) for r in checkpoint_rows(
        cp, "SELECT key, state, last_error FROM objects WHERE state != 'done'")]
    assert all(s3.head_object(Bucket=bucket, Key=k)["ServerSideEncryption"] == "AES256" for k in keys)

    # a pass stopped midway: one range has listed up to b/05, the others are done; the next run lists only
    # the rest of that range, and new keys in any range are found by the pass after
    b_range = next(r for r in ranges if r["lo"] <= "b/05" and (r["hi"] is None or r["hi"] >= "b/05"))
    conn = sqlite3.connect(cp)
    conn.execute("UPDATE listing_ranges SET position = 'b/05', done = 0 WHERE lo = ?", (b_range["lo"],))
    conn.execute("UPDATE meta SET value = '0' WHERE name = 'listing_done'")
    conn.commit()
    conn.close()
    for i in range(6, 12):   # written again in plaintext: a new ETag the listing of that range must find
        s3.put_object(Bucket=bucket, Key=f"b/{i:02d}", Body=b"again")
    s3.put_object(Bucket=bucket, Key="k/new", Body=b"new")
    second = run_in_ranges(sandbox, config, 5)
    assert second.returncode == 0, second.stdout + second.stderr
    states = {r["key"]: r["state"] for r in checkpoint_rows(cp, "SELECT key, state FROM objects")}
    assert "k/new" not in states   # its range was done in this pass
    assert all(states[f"b/{i:02d}"] == "done" for i in range(12))
    assert all(s3.head_object(Bucket=bucket, Key=f"b/{i:02d}")["ServerSideEncryption"] == "AES256"
               for i in range(6, 12))
    third = run_in_ranges(sandbox, config, 5)
    assert third.returncode == 0, third.stdout + third.stderr
    assert s3.head_object(Bucket=bucket, Key="k/new")["ServerSideEncryption"] == "AES256"


def test_an_inventory_manifest_is_split_by_its_data_files(sandbox: SandboxInfo, s3: Any, bucket: str,
                                                          tmp_path: Path) -> None:
    inv = tmp_path / "inventory"
    (inv / "data").mkdir(parents=True)
    files = []
    keys = [f"f{f}/{i:02d}" for f in range(3) for i in range(5)]
    for f in range(3):
        name = f"part-{f}.csv"
        rows = [f'"{bucket}","f{f}/{i:02d}","1"' for i in range(5)]
        (inv / "data" / name).write_text("\n".join(rows) + "\n", encoding="utf-8")
        files.append({"key": f"inventory/data/{name}", "size": 1})
    (inv / "manifest.json").write_text(json.dumps({"fileSchema": "Bucket, Key, Size", "files": files}))
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    s3.put_object(Bucket=bucket, Key="not-in-the-manifest", Body=b"x")
    cp = tmp_path / "cp.sqlite"
    config = write_config(tmp_path, {
        "source": source_section(sandbox, bucket, manifest=str(inv / "manifest.json")),
        "target": {"mode": "sse-s3"}, "run": small_run_section(cp)})
    done = run_rekey(sandbox, "run", "-q", "-c", str(config))
    assert done.returncode == 0, done.describe()
    ranges = checkpoint_rows(cp, "SELECT lo, position, done FROM listing_ranges ORDER BY lo")
    assert [(r["lo"].split(":")[1], int(r["position"]), r["done"]) for r in ranges] == [
        (f"part-{f}.csv", 5, 1) for f in range(3)]
    states = {r["key"]: r["state"] for r in checkpoint_rows(cp, "SELECT key, state FROM objects")}
    assert states == dict.fromkeys(keys, "done")
    assert "ServerSideEncryption" not in s3.head_object(Bucket=bucket, Key="not-in-the-manifest")
