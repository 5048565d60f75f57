"""botocore's model loader, with the two costs of a process's first client taken off its start-up.

Every rekey process makes its first botocore client before its first request. botocore then lists each of
its some 400 service folders (to check that "s3" is one: 0.9k listdir and 2.6k stat calls), and parses S3's
model, its endpoint rules and endpoints.json from JSON (some 0.1 s of CPU together on the 2-core machine
measured, a tenth of a 200-object run). Here:

- "is this a service" is answered for the service asked about (its API versions listed), not by listing all;
- each data file, once parsed, is kept in a per-user cache as `marshal` data (stdlib, 5x faster to read than
  JSON), keyed by the file's path, size and modification time and botocore's version, written atomically.
  A cache that cannot be read or written is passed over: the file is parsed as botocore parses it.

The data is botocore's, unchanged, as plain dicts and lists (botocore's JSON loader makes OrderedDicts:
ordered the same way, read by botocore through the mapping interface only).
"""

from __future__ import annotations

import contextlib
import hashlib
import marshal
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore
from botocore.exceptions import DataNotFoundError
from botocore.loaders import JSONFileLoader, Loader

from workers.startup import cache_root, write_private

__all__ = ["CachedLoader", "cache_dir"]

_EXTENSIONS = (".json", ".json.gz")   # botocore's order (botocore.loaders._JSON_OPEN_METHODS)


def cache_dir() -> Path:
    """`REKEY_CACHE_DIR`, else `$XDG_CACHE_HOME/rekey`, else `~/.cache/rekey`; one folder per botocore version."""
    return cache_root() / f"botocore-{botocore.__version__}"


def _plain(value: Any) -> Any:
    """JSON data with its OrderedDicts as dicts (what marshal writes)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


class CachedFileLoader(JSONFileLoader):  # type: ignore[misc]
    """botocore's JSON file loader, reading each file's parsed data from the cache when it is there."""

    def __init__(self, directory: Path) -> None:
        self._dir = directory

    def load_file(self, file_path: str) -> Any:
        found = self._found(file_path)
        if found is None:
            return None
        entry = self._entry(*found)
        with contextlib.suppress(OSError, EOFError, ValueError, TypeError):
            return marshal.loads(entry.read_bytes())
        data = _plain(super().load_file(file_path))
        if data is not None:
            self._store(entry, data)
        return data

    @staticmethod
    def _found(file_path: str) -> tuple[str, os.stat_result] | None:
        for ext in _EXTENSIONS:
            with contextlib.suppress(OSError):
                return file_path + ext, os.stat(file_path + ext)
        return None

    def _entry(self, path: str, stat: os.stat_result) -> Path:
        key = f"{os.path.abspath(path)}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()
        return self._dir / f"{hashlib.sha256(key).hexdigest()[:32]}.marshal"

    def _store(self, entry: Path, data: Any) -> None:
        """Write atomically (workers.startup.write_private): a reader sees a whole entry or none."""
        try:
            write_private(entry, [marshal.dumps(data)])
        except (OSError, ValueError):
            pass   # no cache here: the next process parses the file again


class _Services:
    """The services a loader knows, asked one at a time ("s3" in it): that service's API versions are listed,
    not every service folder. Iterated, it is botocore's whole listing."""

    def __init__(self, loader: CachedLoader, type_name: str) -> None:
        self._loader = loader
        self._type_name = type_name

    def __contains__(self, name: object) -> bool:
        try:
            return bool(self._loader.list_api_versions(str(name), self._type_name))
        except DataNotFoundError:
            return False

    def __iter__(self) -> Iterator[str]:
        return iter(self._loader.all_services(self._type_name))

    def __len__(self) -> int:
        return len(self._loader.all_services(self._type_name))


class CachedLoader(Loader):  # type: ignore[misc]
    """botocore's Loader over `CachedFileLoader`, answering "is this a service" per service (see module doc)."""

    def __init__(self, extra_search_paths: list[str] | None = None, directory: Path | None = None) -> None:
        super().__init__(extra_search_paths=extra_search_paths,
                         file_loader=CachedFileLoader(directory or cache_dir()))

    def list_available_services(self, type_name: str) -> _Services:
        return _Services(self, type_name)

    def all_services(self, type_name: str) -> list[str]:
        services: list[str] = Loader.list_available_services(self, type_name)
        return services


def create_loader(search_path_string: str | None = None) -> CachedLoader:
    """botocore's `create_loader`, making a `CachedLoader`."""
    if search_path_string is None:
        return CachedLoader()
    paths = [os.path.expanduser(os.path.expandvars(p)) for p in search_path_string.split(os.pathsep)]
    return CachedLoader(extra_search_paths=paths)
