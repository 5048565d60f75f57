"""What every command shares: exit codes, loading the config, one-line errors, running a coroutine.

Exit codes: 0 every object done or already right; 1 some objects failed (listed); 2 usage or
config error; 3 the run could not proceed (credentials, missing bucket, endpoint, checkpoint);
130 interrupted by SIGINT, 143 by SIGTERM (the checkpoint is consistent: run again to resume).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio

from engine.config import Config, load_config
from engine.terminal import shown
from workers.errors import ConfigError, FatalError, RekeyError, leaves

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_FATAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
T = TypeVar("T")


def run_async(fn: Callable[[], Awaitable[T]]) -> T:
    """anyio.run on uvloop where available (falls back to the default loop)."""
    try:
        import uvloop  # noqa: F401
        return anyio.run(fn, backend="asyncio", backend_options={"use_uvloop": True})
    except ImportError:
        return anyio.run(fn)


def err(message: str) -> None:
    print(f"rekey: error: {shown(message)}", file=sys.stderr)


def load(args: argparse.Namespace) -> Config:
    """The config named by `-c`, with a warning for each key file other users can read."""
    config = load_config(args.config)
    from workers.keys import key_file_is_private
    for path in key_files(config):
        if not key_file_is_private(path):
            print(f"rekey: warning: key file {path} is readable by other users (chmod 600 it)", file=sys.stderr)
    return config


def key_files(config: Config) -> list[str]:
    """Key file paths named in the config (for the permission warning); keys remember their file."""
    keys = [config.source.sse_c_key, config.target.encryption.sse_c_key,
            config.target.cse.aes_key if config.target.cse else None, *config.source.cse.aes_keys]
    files = [k.source for k in keys if k is not None and k.source]
    return files + list(config.source.cse.rsa_private_key_files)


def exit_code(command: Callable[[], int]) -> int:
    """Run a command; map rekey's errors to their exit code and one line on stderr (also from inside an
    exception group, as task groups raise them)."""
    try:
        return command()
    except BaseExceptionGroup as group:
        leaf = first_handled(group)
        if leaf is None:
            raise
        return _report(leaf)
    except (RekeyError, KeyboardInterrupt, OSError) as exc:
        return _report(exc)


def first_handled(exc: BaseException) -> BaseException | None:
    """The first error in a (nested) exception group that has an exit code, rekey's own errors first."""
    handled = [e for e in leaves(exc) if isinstance(e, (RekeyError, KeyboardInterrupt, OSError))]
    handled.sort(key=lambda e: not isinstance(e, FatalError))
    return handled[0] if handled else None


def _report(exc: BaseException) -> int:
    if isinstance(exc, KeyboardInterrupt):
        err("interrupted; run the same command again to resume")
        return EXIT_INTERRUPTED
    if isinstance(exc, OSError):  # a file rekey writes (report, chart, backup): full disk, read-only folder
        where = f"{exc.filename}: " if exc.filename else ""
        err(f"{where}{exc.strerror or exc}")
        return EXIT_FATAL
    err(str(exc))
    return EXIT_USAGE if isinstance(exc, ConfigError) else EXIT_FATAL


def with_config(sub: Any, name: str, help_: str) -> argparse.ArgumentParser:
    """A subcommand parser with the required `-c/--config`."""
    p: argparse.ArgumentParser = sub.add_parser(name, help=help_)
    p.add_argument("-c", "--config", required=True, help="TOML config file")
    return p
