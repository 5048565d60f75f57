"""The `rekey` command line: parse, validate, call the engine, map errors to exit codes.

Exit codes: 0 every object done or already right; 1 some objects failed (listed); 2 usage or
config error; 3 the run could not proceed (credentials, missing bucket, endpoint, checkpoint);
130 interrupted (the checkpoint is consistent: run again to resume).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import anyio

from engine.config import Config, load_config
from workers.errors import ConfigError, FatalError, RekeyError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_FATAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
T = TypeVar("T")
log = logging.getLogger("rekey")


def run_async(fn: Callable[[], Awaitable[T]]) -> T:
    """anyio.run on uvloop where available (falls back to the default loop)."""
    try:
        import uvloop  # noqa: F401
        return anyio.run(fn, backend="asyncio", backend_options={"use_uvloop": True})
    except ImportError:
        return anyio.run(fn)


def _err(message: str) -> None:
    print(f"rekey: error: {message}", file=sys.stderr)


def _load(args: argparse.Namespace) -> Config:
    config = load_config(args.config)
    from workers.keys import key_file_is_private
    for path in _key_files(config, args.config):
        if not key_file_is_private(path):
            print(f"rekey: warning: key file {path} is readable by other users (chmod 600 it)", file=sys.stderr)
    return config


def _key_files(config: Config, config_path: str) -> list[str]:
    """Key file paths named in the config (for the permission warning); keys remember their file."""
    keys = [config.source.sse_c_key, config.target.encryption.sse_c_key,
            config.target.cse.aes_key if config.target.cse else None, *config.source.cse.aes_keys]
    files = [k.source for k in keys if k is not None and k.source]
    return files + list(config.source.cse.rsa_private_key_files)


def cmd_run(args: argparse.Namespace) -> int:
    from engine.pipeline import run_migration
    from engine.progress import Progress
    from engine.report import build_report, summary_text, write_json
    config = _load(args)
    progress = Progress(enabled=False if args.quiet else None)
    result = run_async(lambda: run_migration(config, progress,
                                             confirm_delete_noncurrent=args.confirm_delete_noncurrent))
    from engine.pipeline import open_checkpoint
    cp = open_checkpoint(config, create=False)
    try:
        report = build_report(config, cp, result)
    finally:
        cp.close()
    if args.report:
        write_json(args.report, report)
    if not args.quiet or result.exit_code:
        print(summary_text(report))
    return result.exit_code


def cmd_plan(args: argparse.Namespace) -> int:
    from engine.plan import plan_run, plan_text
    config = _load(args)
    summary = run_async(lambda: plan_run(config))
    if args.json:
        print(json.dumps(summary.to_json(), indent=2))
    else:
        print(plan_text(summary))
    return EXIT_FAILED if summary.errors else EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from engine.pipeline import open_checkpoint
    from engine.report import build_report, summary_text
    config = _load(args)
    cp = open_checkpoint(config, create=False)
    try:
        report = build_report(config, cp, None)
        position, done = cp.listing_position()
        uploads = cp.uploads()
        runs = cp.runs()
    finally:
        cp.close()
    if args.json:
        report["listing"] = {"position": position, "complete": done}
        report["open_uploads"] = len(uploads)
        report["runs"] = len(runs)
        del report["objects"]
        print(json.dumps(report, indent=2))
        return EXIT_OK
    print(summary_text(report))
    print(f"listing: {'complete' if done else 'in progress, after ' + repr(position)}; "
          f"{len(uploads)} multipart upload(s) open; {len(runs)} run(s) so far")
    return EXIT_OK


def cmd_sandbox(args: argparse.Namespace) -> int:
    from engine.sandbox import run_sandbox_command
    return run_sandbox_command(workdir=args.workdir, quiet=False)


def cmd_demo(args: argparse.Namespace) -> int:
    from engine.demo import run_demo
    return run_demo(objects=args.objects, workdir=args.workdir)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run, "plan": cmd_plan, "status": cmd_status, "sandbox": cmd_sandbox, "demo": cmd_demo,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rekey", description="Re-encrypt S3 objects in bulk, resumably.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log requests and decisions")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(name: str, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_)
        p.add_argument("-c", "--config", required=True, help="TOML config file")
        return p

    p = with_config("run", "run or resume a migration")
    p.add_argument("--report", metavar="FILE.json", help="write the JSON completion report here")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars; summary only on failure")
    p.add_argument("--confirm-delete-noncurrent", action="store_true",
                   help='with [run] noncurrent = "delete": allow deleting old versions once their copies are verified')
    p = with_config("plan", "what a run would do, without writing anything")
    p.add_argument("--json", action="store_true")
    p = with_config("status", "progress recorded in the checkpoint")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("sandbox", help="start local S3 (SeaweedFS) and KMS (moto) on 127.0.0.1 until Ctrl-C")
    p.add_argument("--workdir", help="keep data here (default: a temporary folder, removed on exit)")
    p = sub.add_parser("demo", help="seed a sandbox, migrate it to SSE-KMS, show before and after")
    p.add_argument("--objects", type=int, default=200)
    p.add_argument("--workdir")
    extend_parser(sub)
    return parser


# Modules that add commands: each has `register(subparsers, commands)` adding its parser and handler.
COMMAND_MODULES = ("engine.verify", "engine.cleanup", "engine.audit", "engine.policy", "engine.benchcmd")


def extend_parser(sub: Any) -> None:
    import importlib
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue  # not built yet
        module.register(sub, COMMANDS)


_SECRET_HEADER = re.compile(
    r"(x-amz-server-side-encryption-customer-key|x-amz-copy-source-server-side-encryption-customer-key|"
    r"SSECustomerKey|CopySourceSSECustomerKey|Plaintext)(['\"]?\s*[:=]\s*b?['\"]?)[^'\",}\s]+",
    re.IGNORECASE)


class RedactSecrets(logging.Filter):
    """Blanks SSE-C keys and KMS plaintexts in any log record (a second line of defence)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _SECRET_HEADER.sub(lambda m: f"{m.group(1)}{m.group(2)}<redacted>", message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def configure_logging(*, verbose: bool) -> None:
    """rekey's own decisions at DEBUG with -v; botocore never below INFO (its DEBUG prints request headers,
    which carry SSE-C keys)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactSecrets())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)
    for name in ("botocore", "aiobotocore", "urllib3", "aiohttp", "s3transfer"):
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.CRITICAL)


def pin_malloc_threshold() -> None:
    """Part buffers are many megabytes. glibc raises its mmap threshold after the first such buffer is
    freed, so later ones come from per-thread heap arenas and stay in RSS after being freed; a fixed
    threshold (which turns that adjustment off) keeps every big buffer mmapped and returned on free."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1024 * 1024)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass  # not glibc: nothing to tune


def main(argv: Sequence[str] | None = None) -> int:
    pin_malloc_threshold()
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(verbose=args.verbose)
    try:
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        _err(str(exc))
        return EXIT_USAGE
    except FatalError as exc:
        _err(str(exc))
        return EXIT_FATAL
    except RekeyError as exc:
        _err(str(exc))
        return EXIT_FATAL
    except KeyboardInterrupt:
        _err("interrupted; run the same command again to resume")
        return EXIT_INTERRUPTED


def entry() -> None:
    """The `rekey` console script: main(), then exit without the interpreter's teardown, which after a
    large run spends 0.1 s or more freeing memory. Everything rekey writes is closed by then."""
    code = main()
    logging.shutdown()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (BrokenPipeError, ValueError):
        pass
    os._exit(code)


if __name__ == "__main__":
    entry()
