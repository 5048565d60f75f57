"""A process's start-up: where rekey keeps what it caches between processes, and the compiled code of the
dataclasses' generated methods kept there.

`dataclasses` writes the source of each class's `__init__`, `__repr__`, `__eq__`, `__hash__`,
`__setattr__` and `__delattr__` and compiles it with `exec`, once per method and process. rekey's
modules define some 85 dataclasses: a run compiles about 480 such functions before its first request,
some 50-90 ms of CPU on the 2-core machine measured (a tenth of a 200-object run). `cache_dataclasses`
has `dataclasses` execute the code compiled from the same source by an earlier process instead:

- the code is what `exec` compiles from that source (`compile(source, "<string>", "exec")`, inheriting no
  `__future__` flags, as `dataclasses`' own module has none), so a class is made exactly as without the
  cache; only the compiling is skipped;
- the cache is one `marshal` file per Python build and optimisation level, read once, and rewritten
  atomically at exit only when this process compiled something new (`save`); a file that cannot be read
  or written is passed over, and one that would grow past `_MAX_ENTRIES` keeps only what this process used;
- it is installed by the console script only (`engine.launch`), not on import: code that imports rekey
  as a library gets the standard library's behaviour.
"""

from __future__ import annotations

import builtins
import contextlib
import marshal
import os
import sys
import tempfile
import types
from pathlib import Path
from typing import Any

__all__ = ["DataclassCodeCache", "cache_dataclasses", "cache_root", "save"]

_MAX_ENTRIES = 4000


def cache_root() -> Path:
    """`REKEY_CACHE_DIR`, else `$XDG_CACHE_HOME/rekey`, else `~/.cache/rekey`."""
    base = os.environ.get("REKEY_CACHE_DIR") or \
        os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "rekey")
    return Path(base)


class DataclassCodeCache:
    """Compiled code by source text, loaded from and saved to `path`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.codes = self._load(path)
        self.used: set[str] = set()
        self.compiled = 0

    @staticmethod
    def _load(path: Path) -> dict[str, types.CodeType]:
        with contextlib.suppress(OSError, EOFError, ValueError, TypeError):
            data = marshal.loads(path.read_bytes())
            if isinstance(data, dict) and all(isinstance(k, str) and isinstance(v, types.CodeType)
                                              for k, v in data.items()):
                return data
        return {}

    def exec(self, source: Any, globals_: dict[str, Any] | None = None,
             locals_: dict[str, Any] | None = None, /) -> None:
        """`exec` as `dataclasses` calls it; a source string's code comes from the cache when it is there."""
        if isinstance(source, str):
            code = self.codes.get(source)
            if code is None:
                code = self.codes[source] = compile(source, "<string>", "exec", dont_inherit=True)
                self.compiled += 1
            self.used.add(source)
            source = code
        builtins.exec(source, globals_, locals_)

    def save(self) -> None:
        """Write the cache if this process compiled something it did not hold (atomically; errors passed over)."""
        if not self.compiled:
            return
        codes = self.codes if len(self.codes) <= _MAX_ENTRIES else {k: self.codes[k] for k in self.used}
        with contextlib.suppress(OSError, ValueError):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".dataclasses-")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(marshal.dumps(codes))
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        self.compiled = 0


_installed: DataclassCodeCache | None = None


def cache_dataclasses(directory: Path | None = None) -> DataclassCodeCache:
    """Have `dataclasses` run cached code for the methods it generates (see the module doc)."""
    global _installed
    if _installed is None:
        import dataclasses
        tag = f"{sys.implementation.cache_tag}-{sys.hexversion:x}-O{sys.flags.optimize}"
        _installed = DataclassCodeCache((directory or cache_root()) / f"dataclasses-{tag}.marshal")
        dataclasses.exec = _installed.exec  # type: ignore[attr-defined]
    return _installed


def save() -> None:
    """Write the installed cache, if there is one and it grew."""
    if _installed is not None:
        _installed.save()
