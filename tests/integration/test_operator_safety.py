"""Issue 13 on SeaweedFS: one run per checkpoint, SIGTERM/SIGINT stop gently, private files, honest messages."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import stat
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from engine.sandbox import SandboxInfo
from tests.cli_helpers import (
    CliResult,
    checkpoint_rows,
    load_report,
    popen_rekey,
    run_rekey,
    source_section,
    write_config,
)

OBJECTS = 60


def seed_small(s3: Any, bucket: str, n: int = OBJECTS) -> None:
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: s3.put_object(Bucket=bucket, Key=f"o/{i:03d}", Body=os.urandom(100 + i)),
                      range(n)))


def slow_config(tmp_path: Path, sandbox: SandboxInfo, bucket: str, kms_key: str, name: str = "rekey.toml",
                rate: int = 8) -> Path:
    """About `rate` requests a second, 2 at a time: a run of OBJECTS objects lasts half a minute (stopped early)."""
    return write_config(tmp_path, {
        "source": source_section(sandbox, bucket),
        "target": {"mode": "sse-kms", "kms_key_id": kms_key},
        "run": {"checkpoint": str(tmp_path / "cp" / "rekey.sqlite"), "concurrency": 2,
                "max_requests_per_second": rate},
    }, name)


def done_count(checkpoint: Path) -> int:
    if not checkpoint.exists():
        return 0
    try:
        return int(checkpoint_rows(checkpoint, "SELECT COUNT(*) FROM objects WHERE state = 'done'")[0][0])
    except sqlite3.Error:  # not created yet
        return 0


def wait_until_done(checkpoint: Path, n: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while done_count(checkpoint) < n:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.1)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def finish(proc: subprocess.Popen[bytes]) -> CliResult:
    out, err = proc.communicate(timeout=120)
    return CliResult(proc.returncode, out.decode(), err.decode(), 0.0)


def test_one_run_per_checkpoint_and_gentle_stops(sandbox: SandboxInfo, s3: Any, bucket: str, kms_key: str,
                                                 tmp_path: Path) -> None:
    seed_small(s3, bucket)
    config = slow_config(tmp_path, sandbox, bucket, kms_key)
    checkpoint = tmp_path / "cp" / "rekey.sqlite"
    report = tmp_path / "reports" / "first.json"
    first = popen_rekey(sandbox, "run", "-c", str(config), "--report", str(report))
    wait_until_done(checkpoint, 3, first)

    # Every file of the checkpoint is private while the run writes it.
    for suffix in ("", "-wal", "-shm", ".lock"):
        path = checkpoint.with_name(checkpoint.name + suffix)
        assert mode_of(path) == 0o600, (path, oct(mode_of(path)))

    # A second run on the same checkpoint is refused, naming the process that holds it.
    second = run_rekey(sandbox, "run", "-q", "-c", str(config))
    assert second.returncode == 3, second.describe()
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and f"pid@host {first.pid}@{socket.gethostname()}" in lines[0], second.describe()

    # cleanup would abort the run's uploads under it: it needs the lock too.
    cleanup = run_rekey(sandbox, "cleanup", "-c", str(config))
    assert cleanup.returncode == 3 and f"{first.pid}@" in cleanup.stderr, cleanup.describe()

    # status reads without the lock, while the run goes on.
    status = run_rekey(sandbox, "status", "--json", "-c", str(config))
    assert status.returncode == 0, status.describe()
    assert json.loads(status.stdout)["summary"]["by_state"].get("done", 0) >= 3

    # SIGTERM: in-flight objects settle, summary and report are written, exit 143.
    first.send_signal(signal.SIGTERM)
    stopped = finish(first)
    assert stopped.returncode == 143, stopped.describe()
    assert stopped.stderr.strip().splitlines()[-1] == (
        "rekey: stopped by SIGTERM; the checkpoint is consistent: run the same command again to resume")
    assert "Traceback" not in stopped.stderr
    assert "objects: " in stopped.stdout and "pending" in stopped.stdout, stopped.describe()  # the summary
    data = load_report(report)
    assert data["run"]["exit_code"] == 1  # objects left: they are pending, not failed
    states = data["summary"]["by_state"]
    assert states.get("done", 0) >= 3 and "failed" not in states and "in_progress" not in states, states
    assert mode_of(report) == 0o600

    # SIGINT: the same, exit 130.
    again = popen_rekey(sandbox, "run", "-c", str(config), "--report", str(tmp_path / "reports" / "second.json"))
    before = done_count(checkpoint)
    wait_until_done(checkpoint, before + 2, again)
    again.send_signal(signal.SIGINT)
    interrupted = finish(again)
    assert interrupted.returncode == 130, interrupted.describe()
    assert "stopped by SIGINT" in interrupted.stderr.strip().splitlines()[-1]
    assert load_report(tmp_path / "reports" / "second.json")["summary"]["by_state"].get("in_progress", 0) == 0

    # A run killed outright leaves its lock file, but not its lock: the next run finishes the job.
    killed = popen_rekey(sandbox, "run", "-q", "-c", str(config))
    wait_until_done(checkpoint, done_count(checkpoint) + 1, killed)
    killed.send_signal(signal.SIGKILL)
    killed.communicate(timeout=60)
    assert checkpoint.with_name("rekey.sqlite.lock").exists()
    fast = slow_config(tmp_path, sandbox, bucket, kms_key, "fast.toml", rate=1000)  # same checkpoint
    completion = tmp_path / "reports" / "done.jsonl"
    last = run_rekey(sandbox, "run", "-q", "-c", str(fast), "--report", str(report),
                     "--completion-report", str(completion))
    assert last.returncode == 0, last.describe()
    states = load_report(report)["summary"]["by_state"]
    # skipped: copied by the killed run before its checkpoint recorded it, found already right
    assert set(states) <= {"done", "skipped"} and sum(states.values()) == OBJECTS, states
    for path in (checkpoint, report, completion, checkpoint.with_name("rekey.sqlite.lock")):
        assert mode_of(path) == 0o600, (path, oct(mode_of(path)))


def run_in_mount_ns(sandbox: SandboxInfo, setup: str, *args: str) -> CliResult:
    """`rekey ARGS` in a private mount namespace after the shell commands `setup` (read-only binds, a tiny
    tmpfs); nothing is mounted outside it."""
    import shlex
    import sys

    from tests.cli_helpers import REPO, rekey_env
    command = f"{setup} && exec {shlex.quote(sys.executable)} -m engine.cli {shlex.join(args)}"
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c", command],
                          capture_output=True, text=True, env=rekey_env(sandbox), cwd=str(REPO), timeout=180,
                          check=False)
    return CliResult(proc.returncode, proc.stdout, proc.stderr, 0.0)


def quick_config(tmp_path: Path, sandbox: SandboxInfo, bucket: str, kms_key: str, checkpoint: Path,
                 name: str = "quick.toml") -> Path:
    return write_config(tmp_path, {
        "source": source_section(sandbox, bucket),
        "target": {"mode": "sse-kms", "kms_key_id": kms_key},
        "run": {"checkpoint": str(checkpoint), "concurrency": 4},
    }, name)


def test_read_only_folder_other_config_and_full_disk(sandbox: SandboxInfo, s3: Any, bucket: str, kms_key: str,
                                                     tmp_path: Path) -> None:
    seed_small(s3, bucket, 40)
    folder = tmp_path / "state"
    folder.mkdir()
    config = quick_config(tmp_path, sandbox, bucket, kms_key, folder / "rekey.sqlite")
    s3.put_object(Bucket=bucket, Key="o/late", Body=b"added after the first run")
    first = run_rekey(sandbox, "run", "-q", "-c", str(config))
    assert first.returncode == 0, first.describe()
    s3.put_object(Bucket=bucket, Key="o/later", Body=b"one more")
    read_only = f"mount --bind {folder} {folder} && mount -o remount,bind,ro {folder} {folder}"

    # status only reads: it works in a read-only folder.
    status = run_in_mount_ns(sandbox, read_only, "status", "--json", "-c", str(config))
    assert status.returncode == 0, status.describe()
    assert json.loads(status.stdout)["summary"]["by_state"] == {"done": 41}
    # run cannot write there: one line that keeps the resume state.
    refused = run_in_mount_ns(sandbox, read_only, "run", "-q", "-c", str(config))
    assert refused.returncode == 3, refused.describe()
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "make" in lines[0] and "writable" in lines[0], refused.describe()
    assert "aside" not in lines[0] and "afresh" not in lines[0]

    # Another configuration on the same checkpoint: the message names the setting that differs.
    other_key = s3_kms_key(sandbox)
    other = write_config(tmp_path, {
        "source": source_section(sandbox, bucket),
        "target": {"mode": "sse-kms", "kms_key_id": other_key},
        "run": {"checkpoint": str(folder / "rekey.sqlite"), "concurrency": 4},
    }, "other.toml")
    differs = run_rekey(sandbox, "run", "-q", "-c", str(other))
    assert differs.returncode == 3, differs.describe()
    assert f'target.kms_key_id differs ("{kms_key}" then, "{other_key}" now)' in differs.stderr, differs.describe()
    assert len(differs.stderr.strip().splitlines()) == 1

    # A full disk under the checkpoint: one line, exit 3, no sqlite traceback.
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    full_config = quick_config(tmp_path, sandbox, bucket, kms_key, tiny / "rekey.sqlite", "full.toml")
    full = run_in_mount_ns(sandbox, f"mount -t tmpfs -o size=48k tmpfs {tiny}", "run", "-q", "-c", str(full_config))
    assert full.returncode == 3, full.describe()
    lines = full.stderr.strip().splitlines()
    assert len(lines) == 1 and "disk is full" in lines[0] and "Traceback" not in full.stderr, full.describe()


def s3_kms_key(sandbox: SandboxInfo) -> str:
    from engine.sandbox import create_kms_key
    return create_kms_key(sandbox, description="another key")


def test_unknown_kms_key_and_missing_bucket_are_one_line(sandbox: SandboxInfo, s3: Any, bucket: str,
                                                         tmp_path: Path) -> None:
    s3.put_object(Bucket=bucket, Key="a", Body=b"a")
    missing_key = "0d1f2b5e-0000-4000-8000-000000000000"
    config = write_config(tmp_path, {
        "source": source_section(sandbox, bucket),
        "target": {"mode": "sse-kms", "kms_key_id": missing_key},
        "run": {"checkpoint": str(tmp_path / "cp.sqlite"), "max_retries": 1},
    })
    result = run_rekey(sandbox, "run", "-q", "-c", str(config))
    assert result.returncode == 3, result.describe()
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"rekey: error: probe put s3://{bucket}: target.kms_key_id: the server cannot encrypt with KMS key "
        f"{missing_key}"), result.describe()
    assert s3.head_object(Bucket=bucket, Key="a").get("ServerSideEncryption") is None  # nothing written

    audit = run_rekey(sandbox, "audit", "--bucket", "no-such-bucket-here", "--endpoint-url", sandbox.s3_http)
    assert audit.returncode == 3, audit.describe()
    assert audit.stderr.strip().splitlines() == [
        "rekey: error: list_objects_v2 s3://no-such-bucket-here: bucket does not exist"], audit.describe()


def test_probes_leave_no_version_or_marker_in_a_versioned_bucket(sandbox: SandboxInfo, s3: Any, bucket: str,
                                                                 kms_key: str, tmp_path: Path) -> None:
    from tests.cli_helpers import write_key_file
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=bucket, Key="data/a", Body=b"a")
    sse_c = write_key_file(tmp_path, "c.key", os.urandom(32))
    for name, target in (("kms", {"mode": "sse-kms", "kms_key_id": kms_key}),
                         ("ssec", {"mode": "sse-c", "sse_c_key_file": str(sse_c)})):
        config = write_config(tmp_path, {
            "source": source_section(sandbox, bucket), "target": target,
            "run": {"checkpoint": str(tmp_path / f"{name}.sqlite")},
        }, f"{name}.toml")
        result = run_rekey(sandbox, "run", "-q", "-c", str(config))
        assert result.returncode == 0, result.describe()
    listed = s3.list_object_versions(Bucket=bucket)
    left = [v["Key"] for v in [*listed.get("Versions", []), *listed.get("DeleteMarkers", [])]
            if ".rekey-probe-" in v["Key"]]
    assert left == []
    assert {v["Key"] for v in listed.get("Versions", [])} == {"data/a"}


def test_keys_are_escaped_on_the_terminal_and_exact_in_the_report(sandbox: SandboxInfo, s3: Any, bucket: str,
                                                                  kms_key: str, tmp_path: Path) -> None:
    from tests.helpers import sse_c_params
    evil = "bad\x1b[31mred\nfailed: fake/line: everything fine"
    s3.put_object(Bucket=bucket, Key=evil, Body=b"needs a key", **sse_c_params(os.urandom(32)))
    s3.put_object(Bucket=bucket, Key="fine", Body=b"ok")
    config = quick_config(tmp_path, sandbox, bucket, kms_key, tmp_path / "cp.sqlite")
    report = tmp_path / "report.json"
    result = run_rekey(sandbox, "run", "-c", str(config), "--report", str(report))
    assert result.returncode == 1, result.describe()
    assert "\x1b" not in result.stdout + result.stderr
    assert not any(line.startswith("failed: fake/line") for line in result.stdout.splitlines())
    assert "bad\\x1b[31mred\\nfailed: fake/line: everything fine" in result.stdout, result.describe()
    assert {o["key"] for o in load_report(report)["objects"]} == {evil, "fine"}
    status = run_rekey(sandbox, "status", "-c", str(config))
    assert "\x1b" not in status.stdout and "bad\\x1b[31mred\\n" in status.stdout, status.describe()


def test_verify_fails_unless_everything_is_done_and_deep_compares_metadata_and_tags(
        sandbox: SandboxInfo, s3: Any, bucket_factory: Any, kms_key: str, tmp_path: Path) -> None:
    from tests.helpers import sse_c_params
    src, dst = bucket_factory("vsrc"), bucket_factory("vdst")
    empty = quick_config(tmp_path, sandbox, src, kms_key, tmp_path / "empty.sqlite", "empty.toml")
    assert run_rekey(sandbox, "run", "-q", "-c", str(empty)).returncode == 0
    nothing = run_rekey(sandbox, "verify", "-c", str(empty))
    assert nothing.returncode == 1, nothing.describe()
    assert "not verified: the checkpoint holds no objects" in nothing.stdout

    s3.put_object(Bucket=src, Key="meta", Body=b"m", Metadata={"colour": "blue"}, ContentType="text/plain")
    s3.put_object(Bucket=src, Key="tagged", Body=b"t", Tagging="team=a")
    s3.put_object(Bucket=src, Key="locked", Body=b"no key for it", **sse_c_params(os.urandom(32)))
    config = write_config(tmp_path, {
        "source": source_section(sandbox, src),
        "destination": {"bucket": dst},
        "target": {"mode": "sse-kms", "kms_key_id": kms_key},
        "run": {"checkpoint": str(tmp_path / "b2b.sqlite")},
    }, "b2b.toml")
    assert run_rekey(sandbox, "run", "-q", "-c", str(config)).returncode == 1  # "locked" fails
    failed = run_rekey(sandbox, "verify", "-c", str(config))
    assert failed.returncode == 1, failed.describe()
    assert "not verified: 1 object(s) in scope are not done (failed 1); run again" in failed.stdout

    # Everything done and right: exit 0, also --deep.
    s3.delete_object(Bucket=src, Key="locked")
    assert run_rekey(sandbox, "run", "-q", "-c", str(config)).returncode == 0
    deep = run_rekey(sandbox, "verify", "--deep", "-c", str(config))
    assert deep.returncode == 0, deep.describe()

    # A tag changed on the copy, user metadata changed on the source: --deep names both.
    s3.put_object_tagging(Bucket=dst, Key="tagged", Tagging={"TagSet": [{"Key": "team", "Value": "b"}]})
    s3.copy_object(Bucket=src, Key="meta", CopySource={"Bucket": src, "Key": "meta"}, Metadata={"colour": "red"},
                   MetadataDirective="REPLACE", ContentType="text/plain")
    shallow = run_rekey(sandbox, "verify", "-c", str(config))
    assert shallow.returncode == 0, shallow.describe()  # HEAD of the copies only: they are as written
    deep = run_rekey(sandbox, "verify", "--deep", "-c", str(config))
    assert deep.returncode == 1, deep.describe()
    assert f"mismatch: s3://{dst}/meta: user metadata differs from the source's" in deep.stdout
    assert f"mismatch: s3://{dst}/tagged: tags differ from the source's" in deep.stdout


def test_no_unkeyed_plaintext_digest_and_deep_verify_still_proves_it(sandbox: SandboxInfo, s3: Any,
                                                                     bucket_factory: Any, kms_key: str,
                                                                     tmp_path: Path) -> None:
    import hashlib

    from tests.cli_helpers import write_key_file
    src, dst = bucket_factory("dsrc"), bucket_factory("ddst")
    body = b"guessable plaintext\n" * 50
    s3.put_object(Bucket=src, Key="doc.txt", Body=body)
    aes = write_key_file(tmp_path, "aes.key", os.urandom(32))
    to_cse = write_config(tmp_path, {
        "source": source_section(sandbox, src),
        "target": {"mode": "cse", "keyring": "aes", "key_file": str(aes)},
        "run": {"checkpoint": str(tmp_path / "cse.sqlite")},
    }, "cse.toml")
    back = write_config(tmp_path, {
        "source": {**source_section(sandbox, src), "cse": {"aes_key_files": [str(aes)]}},
        "destination": {"bucket": dst},
        "target": {"mode": "sse-kms", "kms_key_id": kms_key, "allow_client_side_decrypt": True},
        "run": {"checkpoint": str(tmp_path / "back.sqlite")},
    }, "back.toml")
    for config, checkpoint in ((to_cse, "cse.sqlite"), (back, "back.sqlite")):
        result = run_rekey(sandbox, "run", "-q", "-c", str(config))
        assert result.returncode == 0, result.describe()
        stored = checkpoint_rows(tmp_path / checkpoint, "SELECT plaintext_sha256 FROM objects")[0][0]
        assert stored.startswith("hmac-sha256:") and hashlib.sha256(body).hexdigest() not in stored
        assert hashlib.sha256(body).hexdigest().encode() not in (tmp_path / checkpoint).read_bytes()
        deep = run_rekey(sandbox, "verify", "--deep", "-c", str(config))
        assert deep.returncode == 0 and "0 mismatch(es); sha256 1" in deep.stdout, deep.describe()


def test_progress_lines_without_a_terminal_and_binary_bars_on_one(sandbox: SandboxInfo, s3: Any, bucket: str,
                                                                  kms_key: str, tmp_path: Path) -> None:
    import re

    big = os.urandom(26 * 1024 * 1024)
    s3.put_object(Bucket=bucket, Key="big.bin", Body=big)
    seed_small(s3, bucket, 8)
    run = {"concurrency": 1, "part_size": "5MiB", "multipart_threshold": "5MiB", "max_requests_per_second": 2,
           "progress_interval": 1}
    config = write_config(tmp_path, {
        "source": source_section(sandbox, bucket), "target": {"mode": "sse-kms", "kms_key_id": kms_key},
        "run": {"checkpoint": str(tmp_path / "lines.sqlite"), **run},
    }, "lines.toml")
    result = run_rekey(sandbox, "run", "-c", str(config))
    assert result.returncode == 0, result.describe()
    pattern = re.compile(r"^rekey: progress: (\d+) of (\d+)(\+?) objects \(done \d+, skipped \d+, failed \d+\), "
                         r"(\d+(?:\.\d)? (?:B|KiB|MiB|GiB)) of \d+(?:\.\d)? (?:B|KiB|MiB|GiB)\+?, "
                         r"\d+(?:\.\d)? (?:B|KiB|MiB|GiB)/s, \d+\.\d objects/s$")
    lines = [line for line in result.stderr.splitlines() if line.startswith("rekey: progress:")]
    assert len(lines) >= 2, result.describe()
    parsed = [pattern.match(line) for line in lines]
    assert all(parsed), lines
    # Once the total is fixed it stays fixed; bytes move while the big object (first in the listing) is
    # still in flight, as its parts complete.
    fixed = [m for m in parsed if m and not m.group(3)]
    assert fixed and len({m.group(2) for m in fixed}) == 1 and fixed[-1].group(2) == "9"
    assert any(m and m.group(1) == "0" and m.group(4) != "0 B" for m in parsed), lines
    assert " MB" not in result.stderr and " kB" not in result.stderr

    # On a terminal: tqdm bars in binary units, the total marked as growing while the listing runs.
    import pty
    import subprocess
    import sys

    from tests.cli_helpers import REPO, rekey_env
    fast = write_config(tmp_path, {
        "source": source_section(sandbox, bucket), "target": {"mode": "sse-s3"},
        "run": {"checkpoint": str(tmp_path / "tty.sqlite"), "part_size": "5MiB", "multipart_threshold": "5MiB"},
    }, "tty.toml")
    import fcntl
    import struct
    import termios
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a terminal 120 columns wide
    proc = subprocess.Popen([sys.executable, "-m", "engine.launch", "run", "-c", str(fast)], stdout=subprocess.PIPE,
                            stderr=slave, env=rekey_env(sandbox), cwd=str(REPO))
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.communicate(timeout=120)
    os.close(master)
    screen = b"".join(chunks).decode("utf-8", "replace")
    assert proc.returncode == 0, screen
    assert "(listing)" in screen and "100%" in screen, screen
    assert re.search(r"bytes  : 100%\|[^|]+\| 26\.0 MiB/26\.0 MiB", screen), screen
    assert not re.search(r"\d(?:kB|MB|GB)\b", screen), screen
    assert "Traceback" not in screen and "ERROR" not in screen, screen


def test_legacy_client_side_objects_need_allow_legacy(sandbox: SandboxInfo, s3: Any, bucket: str,
                                                      tmp_path: Path) -> None:
    from tests.cli_helpers import write_key_file
    from tests.legacy_cse import v1_object
    wrap = os.urandom(32)
    body, md = v1_object(b"written by a 2015 client", wrap)
    s3.put_object(Bucket=bucket, Key="old.bin", Body=body, Metadata=md)
    key_file = write_key_file(tmp_path, "wrap.key", wrap)

    def config(name: str, **cse: Any) -> Path:
        return write_config(tmp_path, {
            "source": {**source_section(sandbox, bucket), "cse": {"aes_key_files": [str(key_file)], **cse}},
            "target": {"mode": "sse-s3", "allow_client_side_decrypt": True},
            "run": {"checkpoint": str(tmp_path / f"{name}.sqlite")},
        }, f"{name}.toml")

    report = tmp_path / "refused.json"
    refused = run_rekey(sandbox, "run", "-q", "-c", str(config("refused")), "--report", str(report))
    assert refused.returncode == 1, refused.describe()
    (entry,) = load_report(report)["objects"]
    assert entry["state"] == "failed" and entry["error"].endswith(
        "unauthenticated legacy client-side format (V1 AES-CBC content carries no authentication): refused; "
        "set [source.cse] allow_legacy = true to read it"), entry
    assert s3.head_object(Bucket=bucket, Key="old.bin")["Metadata"] == md  # untouched

    # With the switch the object is read, decrypted and verified against the plaintext size the decryption
    # counted (CBC padding hides it in the ciphertext's size): the run passes.
    allowed = run_rekey(sandbox, "run", "-q", "-c", str(config("allowed", allow_legacy=True)))
    assert allowed.returncode == 0, allowed.describe()
    assert "allow_legacy" not in allowed.stdout, allowed.describe()
    got = s3.get_object(Bucket=bucket, Key="old.bin")
    assert got["Body"].read() == b"written by a 2015 client" and got["ServerSideEncryption"] == "AES256"


def test_no_sse_c_key_over_http_from_the_environment_and_no_kms_over_http_to_another_host(
        sandbox: SandboxInfo, bucket: str, kms_key: str, tmp_path: Path) -> None:
    import sys

    from tests.cli_helpers import REPO, rekey_env, write_key_file
    key = write_key_file(tmp_path, "c.key", os.urandom(32))
    no_url = write_config(tmp_path, {
        "source": {"bucket": bucket, "region": sandbox.region, "sse_c_key_file": str(key)},
        "target": {"mode": "sse-s3"}, "run": {"checkpoint": str(tmp_path / "a.sqlite")},
    }, "env.toml")
    env = {**rekey_env(sandbox), "AWS_ENDPOINT_URL_S3": sandbox.s3_http}
    for command in ("run", "plan"):
        proc = subprocess.run([sys.executable, "-m", "engine.launch", command, "-c", str(no_url)], capture_output=True,
                              text=True, env=env, cwd=str(REPO), timeout=120, check=False)
        assert proc.returncode == 2, (proc.stdout, proc.stderr)
        assert proc.stderr.strip().splitlines() == [
            "rekey: error: source.endpoint_url (from $AWS_ENDPOINT_URL_S3): SSE-C keys are only sent over HTTPS "
            f"({sandbox.s3_http} is plain http; AWS refuses SSE-C over HTTP)"], proc.stderr

    remote_kms = write_config(tmp_path, {
        "source": source_section(sandbox, bucket),
        "target": {"mode": "cse", "keyring": "kms", "kms_key_id": kms_key},
        "kms": {"endpoint_url": "http://192.0.2.10:8080", "region": sandbox.region},
        "run": {"checkpoint": str(tmp_path / "b.sqlite")},
    }, "kms.toml")
    refused = run_rekey(sandbox, "run", "-q", "-c", str(remote_kms))
    assert refused.returncode == 2, refused.describe()
    assert refused.stderr.strip().splitlines() == [
        "rekey: error: kms.endpoint_url: http://192.0.2.10:8080 is plain http to another host: KMS data keys would "
        "cross the network in clear; use https (plain http is accepted on loopback only)"]
    assert not (tmp_path / "b.sqlite").exists()  # refused before anything was opened or sent


def test_read_only_credentials_are_not_reported_as_a_wrong_sse_c_key(sandbox: SandboxInfo, s3: Any, bucket: str,
                                                                      tmp_path: Path) -> None:
    from tests.cli_helpers import write_key_file
    from tests.helpers import sse_c_params
    raw = os.urandom(32)
    s3.put_object(Bucket=bucket, Key="c.bin", Body=b"customer keyed", **sse_c_params(raw))
    config = write_config(tmp_path, {
        "source": source_section(sandbox, bucket, sse_c_key_file=str(write_key_file(tmp_path, "c.key", raw))),
        "target": {"mode": "sse-s3"}, "run": {"checkpoint": str(tmp_path / "ro.sqlite")},
    })
    report = tmp_path / "ro.json"
    result = run_rekey(sandbox, "run", "-q", "-c", str(config), "--report", str(report), limited=True)
    assert result.returncode == 1, result.describe()
    (entry,) = load_report(report)["objects"]
    assert "SSE-C key refused" not in entry["error"] and "access denied" in entry["error"], entry


def test_policy_backup_goes_next_to_the_config_owner_only(sandbox: SandboxInfo, s3_http: Any, bucket: str,
                                                          tmp_path: Path) -> None:
    conf, elsewhere = tmp_path / "conf", tmp_path / "elsewhere"
    conf.mkdir()
    elsewhere.mkdir()
    config = write_config(conf, {"source": {"bucket": bucket, "endpoint_url": sandbox.s3_http,
                                            "region": sandbox.region},
                                 "target": {"mode": "sse-s3"}}, "policy.toml")
    applied = run_rekey(sandbox, "policy", "-c", str(config), "--apply", cwd=elsewhere)
    assert applied.returncode == 0, applied.describe()
    (backup,) = conf.glob(f"rekey-policy-backup-{bucket}-*.json")
    assert list(elsewhere.iterdir()) == []
    assert mode_of(backup) == 0o600
    assert f"previous policy saved to {backup}" in applied.stderr
    restored = run_rekey(sandbox, "policy", "-c", str(config), "--restore", str(backup))
    assert restored.returncode == 0, restored.describe()
    s3_http.put_object(Bucket=bucket, Key="plain", Body=b"x")  # the enforcing policy is gone again


def test_an_oversized_instruction_file_is_not_read(sandbox: SandboxInfo, s3: Any, bucket: str,
                                                   tmp_path: Path) -> None:
    import base64

    from tests.cli_helpers import write_key_file
    b64 = base64.b64encode
    s3.put_object(Bucket=bucket, Key="v3.bin", Body=os.urandom(64),
                  Metadata={"x-amz-c": "115", "x-amz-d": b64(os.urandom(28)).decode(),
                            "x-amz-i": b64(os.urandom(28)).decode()})
    s3.put_object(Bucket=bucket, Key="v3.bin.instruction", Body=b'{"x-amz-3": "' + b"A" * 100_000 + b'"}')
    key_file = write_key_file(tmp_path, "wrap.key", os.urandom(32))
    config = write_config(tmp_path, {
        "source": {**source_section(sandbox, bucket), "cse": {"aes_key_files": [str(key_file)]}},
        "target": {"mode": "sse-s3", "allow_client_side_decrypt": True},
        "run": {"checkpoint": str(tmp_path / "big.sqlite")},
    })
    report = tmp_path / "big.json"
    result = run_rekey(sandbox, "run", "-q", "-c", str(config), "--report", str(report))
    assert result.returncode == 1, result.describe()
    errors = {o["key"]: o["error"] for o in load_report(report)["objects"]}
    assert "instruction file is 100015 bytes, over the 65536-byte limit of an envelope: not read" in \
        errors["v3.bin"], errors


def test_rsa_public_key_target_in_place_needs_its_private_key(sandbox: SandboxInfo, s3: Any, bucket: str,
                                                              tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from tests.cli_helpers import write_key_file

    def pem_pair(name: str) -> tuple[Path, Path]:
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = tmp_path / f"{name}.pub.pem"
        public.write_bytes(private.public_key().public_bytes(serialization.Encoding.PEM,
                                                             serialization.PublicFormat.SubjectPublicKeyInfo))
        return public, write_key_file(tmp_path, f"{name}.pem", private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))

    public, private = pem_pair("right")
    _, other_private = pem_pair("other")
    s3.put_object(Bucket=bucket, Key="doc", Body=b"keep me readable")
    for name, privates in (("public-only", []), ("wrong-private", [str(other_private)])):
        config = write_config(tmp_path, {
            "source": {**source_section(sandbox, bucket), "cse": {"rsa_private_key_files": privates}},
            "target": {"mode": "cse", "keyring": "rsa", "public_key_file": str(public)},
            "run": {"checkpoint": str(tmp_path / f"{name}.sqlite")},
        }, f"{name}.toml")
        refused = run_rekey(sandbox, "run", "-q", "-c", str(config))
        assert refused.returncode == 2, refused.describe()
        assert refused.stderr.strip().splitlines() == [
            "rekey: error: target.public_key_file: in place, objects wrapped for a wrong public key could never be "
            "opened again: list its private key in [source.cse] rsa_private_key_files (used only to check every "
            "wrap), or write to another bucket or prefix"], refused.describe()
    assert s3.get_object(Bucket=bucket, Key="doc")["Body"].read() == b"keep me readable"
    checked = write_config(tmp_path, {
        "source": {**source_section(sandbox, bucket), "cse": {"rsa_private_key_files": [str(private)]}},
        "target": {"mode": "cse", "keyring": "rsa", "public_key_file": str(public)},
        "run": {"checkpoint": str(tmp_path / "checked.sqlite")},
    }, "checked.toml")
    result = run_rekey(sandbox, "run", "-q", "-c", str(checked))
    assert result.returncode == 0, result.describe()
    assert run_rekey(sandbox, "verify", "--deep", "-c", str(checked)).returncode == 0


def test_audit_chart_has_a_scale_the_bucket_and_counts(sandbox: SandboxInfo, s3: Any, bucket: str,
                                                       tmp_path: Path) -> None:
    from engine.chart import AFTER_COLOR, HEIGHT, WIDTH, Series, bytes_by_mode, draw_chart
    for i in range(3):
        s3.put_object(Bucket=bucket, Key=f"p{i}", Body=os.urandom(1000))
    s3.put_object(Bucket=bucket, Key="s", Body=os.urandom(3000), ServerSideEncryption="AES256")
    chart = tmp_path / "chart.png"
    result = run_rekey(sandbox, "audit", "--bucket", bucket, "--endpoint-url", sandbox.s3_http, "--json",
                       "--chart", str(chart))
    assert result.returncode == 0, result.describe()
    summary = json.loads(result.stdout)
    png = chart.read_bytes()
    assert png.startswith(b"\x89PNG") and int.from_bytes(png[16:20], "big") == WIDTH
    assert int.from_bytes(png[20:24], "big") == HEIGHT
    canvas = draw_chart([Series("now", bytes_by_mode(summary), AFTER_COLOR, bytes_by_mode(summary, "objects"))],
                        title=f"{bucket}: bytes per mode")
    assert canvas.to_png() == png  # what the file shows is this drawing
    labels = canvas.labels
    assert labels[0] == f"{bucket}: bytes per mode".upper()
    assert [t for t in labels if t.endswith("B")][:5] == ["0 B", "1.0 KIB", "2.0 KIB", "3.0 KIB", "4.0 KIB"]
    assert "3 OBJ" in labels and "2.9 KIB" in labels and "1 OBJ" in labels  # none: 3 objects; sse-s3: 1


def test_untrusted_certificate_names_ca_bundle_and_an_empty_one_is_an_error(sandbox: SandboxInfo, s3: Any,
                                                                            bucket: str, tmp_path: Path) -> None:
    from engine.sandbox import write_self_signed_cert
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    (tmp_path / "other").mkdir()
    wrong_ca, _ = write_self_signed_cert(tmp_path / "other")
    untrusted = ("the endpoint's TLS certificate is not trusted (CERTIFICATE_VERIFY_FAILED); set ca_bundle "
                 "([source], [destination] or [kms]; audit and bench: --ca-bundle) to the PEM of the CA that signed it")
    for name, extra in (("wrong", {"ca_bundle": str(wrong_ca)}), ("system", {})):
        config = write_config(tmp_path, {
            "source": {"bucket": bucket, "endpoint_url": sandbox.s3_https, "region": sandbox.region, **extra},
            "target": {"mode": "sse-s3"}, "run": {"checkpoint": str(tmp_path / f"{name}.sqlite")},
        }, f"{name}.toml")
        result = run_rekey(sandbox, "run", "-q", "-c", str(config))
        assert result.returncode == 3, result.describe()
        assert result.stderr.strip().splitlines() == [f"rekey: error: head_bucket s3://{bucket}: {untrusted}"]
    empty = write_config(tmp_path, {
        "source": {"bucket": bucket, "endpoint_url": sandbox.s3_https, "ca_bundle": ""},
        "target": {"mode": "sse-s3"}, "run": {"checkpoint": str(tmp_path / "empty.sqlite")},
    }, "empty.toml")
    result = run_rekey(sandbox, "run", "-q", "-c", str(empty))
    assert result.returncode == 2, result.describe()
    assert result.stderr.strip().splitlines() == [
        "rekey: error: source.ca_bundle: empty: give the PEM file of the CA, or leave the key out to trust the "
        "system's CAs"]
