"""A process's start-up: where rekey keeps what it caches between processes, and two caches of compiled
code kept there, installed by the console script only (`engine.launch`), not on import: code that imports
rekey as a library gets the standard library's behaviour.

**The dataclasses' generated methods.** `dataclasses` writes the source of each class's `__init__`,
`__repr__`, `__eq__`, `__hash__`, `__setattr__` and `__delattr__` and compiles it with `exec`, once per
method and process. rekey's modules define some 85 dataclasses: a run compiles about 480 such functions
before its first request, some 50-90 ms of CPU on the 2-core machine measured (a tenth of a 200-object run).
`DataclassCodeCache` has `dataclasses` execute the code compiled from the same source by an earlier process:
the code `exec` compiles from that text (`compile(source, "<string>", "exec")`, inheriting no `__future__`
flags, as `dataclasses`' own module has none), so a class is made exactly as without the cache.

**Regular expressions.** The modules a run loads (urllib3's URL grammar, botocore's, the standard library's)
compile some 60 patterns at import, about 40 ms. `RegexCache` keeps, per pattern and flags, what `re`'s
compiler hands to `_sre.compile` (the code, groups and flags) and makes the pattern from it. A new entry is
kept only when the pattern made from it equals the one `re` compiled (`Pattern.__eq__` compares the pattern,
flags and code); patterns compiled with `re.DEBUG`, or that are not plain text or bytes, are left to `re`.

Both caches are one `marshal` file each per Python build and optimisation level, read once, and rewritten
atomically at exit only when this process compiled something new (`save`); a file that cannot be read or
written is passed over, and one that would grow past `_MAX_ENTRIES` keeps only what this process used.
"""

from __future__ import annotations

import _sre  # type: ignore[import-not-found]
import _thread
import builtins
import contextlib
import marshal
import os
import re
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["DataclassCodeCache", "RegexCache", "build_tag", "cache_compiled", "cache_root", "save",
           "write_private"]

_MAX_ENTRIES = 4000


def cache_root() -> Path:
    """`REKEY_CACHE_DIR`, else `$XDG_CACHE_HOME/rekey`, else `~/.cache/rekey`."""
    base = os.environ.get("REKEY_CACHE_DIR") or \
        os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "rekey")
    return Path(base)


def write_private(path: Path, parts: list[bytes]) -> None:
    """Write a cache file atomically, readable by its owner only: a temporary file beside it (named by process
    and thread), renamed into place, so a reader sees a whole file or none. Errors are the caller's."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{_thread.get_ident()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.writelines(parts)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def build_tag() -> str:
    """What cached code depends on: the interpreter's build and its optimisation level."""
    return f"{sys.implementation.cache_tag}-{sys.hexversion:x}-O{sys.flags.optimize}"


class _MarshalCache:
    """A dict kept in a marshal file: loaded whole, written whole when it grew (see the module doc)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[Any, Any] = {}
        with contextlib.suppress(OSError, EOFError, ValueError, TypeError):
            data = marshal.loads(path.read_bytes())
            if isinstance(data, dict) and all(self._valid(k, v) for k, v in data.items()):
                self.entries = data
        self.used: set[Any] = set()
        self.compiled = 0   # entries added since the last save

    @staticmethod
    def _valid(key: Any, value: Any) -> bool:
        raise NotImplementedError

    def save(self) -> None:
        """Write the cache if this process compiled something it did not hold (atomically; errors passed over)."""
        if not self.compiled:
            return
        entries = self.entries if len(self.entries) <= _MAX_ENTRIES else {k: self.entries[k] for k in self.used}
        with contextlib.suppress(OSError, ValueError):
            write_private(self.path, [marshal.dumps(entries)])
        self.compiled = 0


class DataclassCodeCache(_MarshalCache):
    """Compiled code by source text: `exec` as `dataclasses` calls it."""

    @staticmethod
    def _valid(key: Any, value: Any) -> bool:
        return isinstance(key, str) and isinstance(value, types.CodeType)

    def exec(self, source: Any, globals_: dict[str, Any] | None = None,
             locals_: dict[str, Any] | None = None, /) -> None:
        """`exec`; a source string's code comes from the cache when it is there."""
        if isinstance(source, str):
            code = self.entries.get(source)
            if code is None:
                code = self.entries[source] = compile(source, "<string>", "exec", dont_inherit=True)
                self.compiled += 1
            self.used.add(source)
            source = code
        builtins.exec(source, globals_, locals_)


_Compiled = tuple[int, list[int], int, dict[str, int], tuple[str | None, ...]]


class RegexCache(_MarshalCache):
    """What `re`'s compiler hands to `_sre.compile`, by (pattern, flags): `re._compiler.compile` as `re` calls it."""

    def __init__(self, path: Path, compile_: Callable[[Any, int], re.Pattern[Any]]) -> None:
        super().__init__(path)
        self._compile = compile_   # re's own

    @staticmethod
    def _valid(key: Any, value: Any) -> bool:
        return isinstance(key, tuple) and len(key) == 2 and isinstance(value, tuple) and len(value) == 5

    def compile(self, pattern: Any, flags: int = 0) -> re.Pattern[Any]:
        if not isinstance(pattern, str | bytes) or flags & re.DEBUG:
            return self._compile(pattern, flags)
        key = (pattern, int(flags))
        hit = self.entries.get(key)
        if hit is not None:
            with contextlib.suppress(Exception):
                made: re.Pattern[Any] = _sre.compile(pattern, *hit)
                self.used.add(key)
                return made
        compiled = self._compile(pattern, flags)
        with contextlib.suppress(Exception):
            parts = _parts(pattern, int(flags))
            if _sre.compile(pattern, *parts) == compiled:
                self.entries[key] = parts
                self.used.add(key)
                self.compiled += 1
        return compiled


def _parts(pattern: str | bytes, flags: int) -> _Compiled:
    """re._compiler.compile's arguments to _sre.compile, in plain types (marshal's)."""
    from re import _compiler, _parser  # type: ignore[attr-defined]
    parsed = _parser.parse(pattern, flags)
    code = [int(op) for op in _compiler._code(parsed, flags)]
    groupindex = dict(parsed.state.groupdict)
    indexgroup: list[str | None] = [None] * parsed.state.groups
    for name, i in groupindex.items():
        indexgroup[i] = name
    return int(flags | parsed.state.flags), code, parsed.state.groups - 1, groupindex, tuple(indexgroup)


_installed: tuple[DataclassCodeCache, RegexCache] | None = None


def cache_compiled(directory: Path | None = None) -> tuple[DataclassCodeCache, RegexCache]:
    """Install both caches (once per process; see the module doc)."""
    global _installed
    if _installed is None:
        import dataclasses
        from re import _compiler  # type: ignore[attr-defined]
        where = directory or cache_root()
        code = DataclassCodeCache(where / f"dataclasses-{build_tag()}.marshal")
        regex = RegexCache(where / f"regex-{build_tag()}.marshal", _compiler.compile)
        dataclasses.exec = code.exec  # type: ignore[attr-defined]
        _compiler.compile = regex.compile
        _installed = (code, regex)
    return _installed


def save() -> None:
    """Write the installed caches that grew."""
    for cache in _installed or ():
        with contextlib.suppress(Exception):   # at exit, after the command's work: a cache never fails it
            cache.save()
