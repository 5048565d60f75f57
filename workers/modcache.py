"""The module cache of the console script: the compiled code of every Python module a process imported, kept
in one file and handed to the import system by a finder, so that a later process skips finding and reading
each module's own `.pyc`.

A run imports some 490 modules before its first request (botocore, urllib3, asyncio, anyio, rekey's own).
Besides executing them, the import system spends about a fifth of that time finding each one along
`sys.path` and reading its `.pyc` (some 50 ms of CPU on the 2-core machine measured). `ModuleCache` answers
`find_spec` for the modules it holds with the spec the path finder makes (`spec_from_file_location`, the
same origin, package path and cached path) and a `SourceFileLoader` whose `get_code` returns the code from
this file, so a module's `__file__`, `__spec__`, resources and tracebacks are what they are without it.

A module is served only where the import system would find the very file the cache holds it for:

- the file's key matches this process: the interpreter build (`workers.startup._tag`), the bytecode magic
  number, `sys.path` (each entry made absolute) and the meta path finders' names;
- the directory the module was found in has the modification time it had when the cache was written (a file
  added beside it, which could shadow it, changes that), and for a top-level module so has every `sys.path`
  directory (a new file earlier on the path changes its directory's time);
- the search path the import system passes (a package's `__path__`) is the one recorded;
- its source file has the modification time and size it had, the rule of Python's own `.pyc` files.

Anything else goes to the import system as usual. At exit (`save`), when this process imported any module
the usual way, the file is rewritten whole (atomically) with the code of every module then loaded, taken
through `SourceFileLoader.get_code` (a valid `.pyc`, else compiled from the source as the import system
compiles it). One file per key, `modules-<tag>-<digest>.bin` in `workers.startup.cache_root()`; the three
newest are kept. A file that cannot be read is passed over; one that cannot be written is left alone.
"""

from __future__ import annotations

import _imp
import contextlib
import marshal
import mmap
import os
import sys
import zlib
from collections.abc import Iterator, Sequence
from importlib.machinery import ModuleSpec, SourceFileLoader
from importlib.util import MAGIC_NUMBER, spec_from_file_location
from pathlib import Path
from types import CodeType, ModuleType
from typing import Any

from workers.startup import build_tag, cache_root, write_private

__all__ = ["ModuleCache", "install", "save"]

_KEEP_FILES = 3
_MAX_BYTES = 64 * 1024 * 1024
_FORMAT = 1

# name -> (origin, package search locations or None, search path given to find_spec (None: sys.path),
#          source mtime (seconds, as a .pyc keeps it), source size, offset, length)
_Entry = tuple[str, tuple[str, ...] | None, tuple[str, ...] | None, int, int, int, int]


def _search_path() -> tuple[str, ...]:
    return tuple(os.path.abspath(p or os.curdir) for p in sys.path if isinstance(p, str))


def _finder_names() -> tuple[str, ...]:
    return tuple(f"{getattr(f, '__module__', type(f).__module__)}.{getattr(f, '__qualname__', type(f).__qualname__)}"
                 for f in sys.meta_path if not isinstance(f, ModuleCache))


def _key() -> tuple[Any, ...]:
    return (_FORMAT, build_tag(), MAGIC_NUMBER, _search_path(), _finder_names())


def _cache_file(key: tuple[Any, ...]) -> Path:
    digest = zlib.crc32(repr(key).encode())   # the whole key is checked in the file too
    return cache_root() / f"modules-{build_tag()}-{digest:08x}.bin"


def _mtime_ns(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


class _CachedLoader(SourceFileLoader):
    """SourceFileLoader whose code comes from the cache while the source is the one cached."""

    def __init__(self, fullname: str, path: str, cache: ModuleCache) -> None:
        super().__init__(fullname, path)
        self._cache = cache

    def get_code(self, fullname: str) -> CodeType | None:
        code = self._cache.code(fullname, self.path)
        if code is None:
            return super().get_code(fullname)
        return code


class ModuleCache:
    """A meta path finder over one cache file (see the module doc)."""

    def __init__(self, path: Path, key: tuple[Any, ...]) -> None:
        self.path = path
        self.key = key                       # this process's at start-up (see the module doc)
        self._sys_path = list(sys.path)
        self._before = set(sys.modules)      # loaded before this finder was installed
        self.entries: dict[str, _Entry] = {}
        self.dirs: dict[str, int] = {}       # directory -> mtime_ns when written
        self._changed: set[str] = set()      # directories found changed since the file was written
        self._blob: memoryview | None = None
        self.served: set[str] = set()
        with contextlib.suppress(OSError, EOFError, ValueError, TypeError, KeyError, IndexError):
            self._open()

    def _open(self) -> None:
        with open(self.path, "rb") as f:
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        size = int.from_bytes(mapped[:8], "little")
        head = marshal.loads(mapped[8:8 + size])
        if head["key"] != self.key or not _well_formed(head["modules"], head["dirs"]):
            return
        self.entries, self.dirs = head["modules"], head["dirs"]
        self._blob = memoryview(mapped)[8 + size:]

    def _unchanged(self, directory: str) -> bool:
        """Asked at every import, as the path finder does (a file added mid-process counts); once changed, a
        directory stays changed for this process."""
        if directory in self._changed:
            return False
        if self.dirs.get(directory, -1) == _mtime_ns(directory):
            return True
        self._changed.add(directory)
        return False

    def _resolves(self, entry: _Entry) -> bool:
        """Whether the import system would still find the entry's file: its directory unchanged and, for a
        top-level module, `sys.path` and its directories."""
        origin, locations, search = entry[0], entry[1], entry[2]
        if not self._unchanged(os.path.dirname(locations[0] if locations else origin)):
            return False
        return search is not None or (sys.path == self._sys_path and all(self._unchanged(d) for d in self.key[3]))

    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        entry = self.entries.get(fullname)
        if entry is None or target is not None:
            return None
        origin, locations, search = entry[0], entry[1], entry[2]
        if (None if path is None else tuple(path)) != search or not self._resolves(entry):
            return None
        return spec_from_file_location(fullname, origin, loader=_CachedLoader(fullname, origin, self),
                                       submodule_search_locations=list(locations) if locations else None)

    def code(self, fullname: str, origin: str) -> CodeType | None:
        """The cached code of `fullname` when its source is still the one cached."""
        entry = self.entries.get(fullname)
        if entry is None or entry[0] != origin or self._blob is None:
            return None
        try:
            st = os.stat(origin)
            if (int(st.st_mtime) & 0xFFFFFFFF, st.st_size) != (entry[3], entry[4]):
                return None
            code = marshal.loads(self._blob[entry[5]:entry[5] + entry[6]])
        except (OSError, EOFError, ValueError, TypeError):   # a file cut short or overwritten: the usual way
            return None
        if not isinstance(code, CodeType):
            return None
        _imp._fix_co_filename(code, origin)  # type: ignore[attr-defined]
        self.served.add(fullname)
        return code

    def invalidate_caches(self) -> None:
        self._changed.clear()

    def _holds(self, name: str, origin: str) -> bool:
        """Whether the file holds the code of `name` from `origin` as that source is now."""
        entry = self.entries.get(name)
        if entry is None or entry[0] != origin:
            return False
        if name in self.served:
            return True
        try:
            st = os.stat(origin)
        except OSError:
            return False
        return (int(st.st_mtime) & 0xFFFFFFFF, st.st_size) == (entry[3], entry[4])

    def stale(self) -> bool:
        """Whether this process imported a module the usual way that the file should hold."""
        for name, module in list(sys.modules.items()):
            spec = _own_spec(name, module)
            if spec is None:
                continue
            if name not in self._before and type(spec.loader) is SourceFileLoader:
                return True
            if not self._holds(name, spec.origin or ""):
                return True
        return False

    def _kept(self, name: str, origin: str) -> tuple[tuple[Any, ...], bytes] | None:
        """An entry of the file and its code, when it still holds for the source at `origin`."""
        if self._blob is None or not self._holds(name, origin):
            return None
        entry = self.entries[name]
        return entry[:5], bytes(self._blob[entry[5]:entry[5] + entry[6]])

    def _contents(self) -> Iterator[tuple[str, tuple[tuple[Any, ...], bytes]]]:
        """What the rewritten file holds: every module loaded from source now, then the file's other entries
        whose source is unchanged (another command's modules)."""
        loaded = set()
        for name, module in list(sys.modules.items()):
            spec = _own_spec(name, module)
            if spec is None:
                continue
            found = (self._kept(name, spec.origin) if isinstance(spec.origin, str) else None) \
                or _module_code(name, module)
            if found is not None:
                loaded.add(name)
                yield name, found
        for name, entry in list(self.entries.items()):
            if name not in loaded and self._resolves(entry):
                found = self._kept(name, entry[0])
                if found is not None:
                    yield name, found

    def save(self) -> None:
        """Rewrite the file with every module now loaded from source, if any came the usual way."""
        if not self.stale():
            return
        modules, chunks, dirs = {}, [], {}
        offset = 0
        for name, found in self._contents():
            entry, data = found
            modules[name] = (*entry, offset, len(data))
            chunks.append(data)
            offset += len(data)
            directory = os.path.dirname(entry[1][0] if entry[1] else entry[0])
            dirs[directory] = _mtime_ns(directory)
            if offset > _MAX_BYTES:
                break
        for directory in self.key[3]:
            dirs[directory] = _mtime_ns(directory)
        head = marshal.dumps({"key": self.key, "modules": modules, "dirs": dirs})
        _write(self.path, [len(head).to_bytes(8, "little"), head, *chunks])


def _module_code(name: str, module: ModuleType) -> tuple[tuple[Any, ...], bytes] | None:
    """(origin, locations, search path, mtime, size) and the marshalled code of a module loaded from source."""
    spec = _own_spec(name, module)
    if spec is None:
        return None
    origin = spec.origin
    parent = name.rpartition(".")[0]
    parent_path = getattr(sys.modules.get(parent), "__path__", None) if parent else None
    if not isinstance(origin, str) or (parent and parent_path is None):
        return None
    locations = tuple(spec.submodule_search_locations) if spec.submodule_search_locations is not None else None
    search = tuple(parent_path) if parent_path is not None else None
    try:
        before = os.stat(origin)
        code = SourceFileLoader(name, origin).get_code(name)
        after = os.stat(origin)
    except (OSError, ImportError, SyntaxError, ValueError, AttributeError):
        return None
    if code is None or (before.st_mtime_ns, before.st_size) != (after.st_mtime_ns, after.st_size):
        return None
    return (origin, locations, search, int(before.st_mtime) & 0xFFFFFFFF, before.st_size), marshal.dumps(code)


def _well_formed(modules: Any, dirs: Any) -> bool:
    """The index as `save` writes it (a file of the right key but other contents is passed over)."""
    return (isinstance(modules, dict) and isinstance(dirs, dict)
            and all(isinstance(e, tuple) and len(e) == 7 and isinstance(e[0], str)
                    and (e[1] is None or isinstance(e[1], tuple)) and (e[2] is None or isinstance(e[2], tuple))
                    and all(isinstance(v, int) for v in e[3:]) for e in modules.values()))


def _own_spec(name: str, module: Any) -> ModuleSpec | None:
    """The spec of a module loaded from a source file under its own name; None for anything else (builtins,
    extensions, namespace packages, and aliases, such as the names requests.packages gives urllib3's modules)."""
    spec = getattr(module, "__spec__", None)
    if (not isinstance(spec, ModuleSpec) or spec.name != name or not isinstance(spec.loader, SourceFileLoader)
            or not spec.has_location):
        return None
    return spec


def _write(path: Path, parts: list[bytes]) -> None:
    """Write `path` (workers.startup.write_private); keep the newest few module caches beside it."""
    with contextlib.suppress(OSError):
        write_private(path, parts)
        others = sorted(path.parent.glob("modules-*.bin"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in others[_KEEP_FILES:]:
            old.unlink()


_installed: ModuleCache | None = None


def install() -> ModuleCache | None:
    """Put the cache first on `sys.meta_path` (once per process); None when it cannot be (imports as usual)."""
    global _installed
    if _installed is None:
        try:
            key = _key()
            _installed = ModuleCache(_cache_file(key), key)
        except Exception:   # a cache is never a reason for a command to fail
            return None
        sys.meta_path.insert(0, _installed)
    return _installed


def save() -> None:
    """Rewrite the installed cache if this process imported modules it did not hold."""
    if _installed is not None:
        with contextlib.suppress(Exception):   # whatever else this process put in sys.modules: never a failure
            _installed.save()
