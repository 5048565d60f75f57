"""The subcommands of `rekey`, one module each; `register_all` adds their parsers in the order `--help` lists them.

Each command module has `register(subparsers)`, which adds its parser and sets `handler` (a function of the
parsed arguments returning the exit code). Shared pieces (config loading, exit codes, one-line errors, the
event loop) live in `common`; no command imports another's privates.
"""

from __future__ import annotations

import importlib
from typing import Any

COMMAND_MODULES = ("run", "plan", "status", "sandbox", "demo", "verify", "cleanup", "audit", "policy", "bench")


def register_all(sub: Any) -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(f"engine.commands.{name}").register(sub)
