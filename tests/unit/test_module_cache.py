"""The module cache of the console script (workers.modcache): a later process imports modules from it with
the same files, specs, resources and tracebacks as without it; a changed source, a module shadowed by a
new file, another search path or a broken cache file make the import system find modules as usual. Each
case runs in fresh interpreters, the cache in a temporary folder."""

from __future__ import annotations

import json
import marshal
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Imports a small package from `lib` (beside the standard library and rekey's), then reports what the
# import system made of it, and how many modules came from the cache.
SCRIPT = r'''
import json, sys, traceback
from workers import modcache
cache = modcache.install()
import json as _json, email.utils, shapes, shapes.circle
from importlib import resources
try:
    shapes.circle.fail()
except ZeroDivisionError as exc:
    where = traceback.extract_tb(exc.__traceback__)[-1]
    trace = [where.filename, where.lineno, where.line]
# An alias, as requests.packages makes for urllib3's modules: under a name not its own, below a parent that
# is no package. The cache passes it over.
import types
sys.modules["alias_pkg"] = types.ModuleType("alias_pkg")
sys.modules["alias_pkg.circle"] = shapes.circle
spec = shapes.circle.__spec__
out = {"value": shapes.circle.VALUE, "file": shapes.circle.__file__, "cached": shapes.circle.__cached__,
       "origin": spec.origin, "package_path": list(shapes.__path__), "parent": spec.parent,
       "resource": resources.files("shapes").joinpath("data.txt").read_text(), "trace": trace,
       "email": email.utils.formataddr(("A", "a@example.com")),
       "served": sorted(n for n in cache.served if n.startswith("shapes")), "served_count": len(cache.served)}
modcache.save()
print(json.dumps(out))
'''


def _package(lib: Path, value: str = "1") -> None:
    pkg = lib / "shapes"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text("NAME = 'shapes'\n")
    (pkg / "circle.py").write_text(f"VALUE = {value}\n\ndef fail():\n    return 1 / 0\n")
    (pkg / "data.txt").write_text("resource text")


def _run(lib: Path, cache: Path, *extra_path: Path) -> dict[str, object]:
    path = os.pathsep.join(str(p) for p in (*extra_path, lib, ROOT))
    env = {**os.environ, "REKEY_CACHE_DIR": str(cache), "PYTHONPATH": path, "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=60,
                          check=True)
    return json.loads(done.stdout.splitlines()[-1])


def _without_counts(out: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in out.items() if k not in ("served", "served_count")}


def test_a_later_process_imports_from_the_cache_what_the_import_system_would(tmp_path: Path) -> None:
    _package(tmp_path / "lib")
    first = _run(tmp_path / "lib", tmp_path / "c")
    assert first["served"] == [] and first["served_count"] == 0
    assert list((tmp_path / "c").glob("modules-*.bin"))
    second = _run(tmp_path / "lib", tmp_path / "c")
    assert second["served"] == ["shapes", "shapes.circle"]
    assert isinstance(second["served_count"], int) and second["served_count"] > 20   # email, json, ... too
    assert _without_counts(second) == _without_counts(first)
    assert second["trace"] == [str(tmp_path / "lib" / "shapes" / "circle.py"), 4, "return 1 / 0"]
    assert second["resource"] == "resource text"


def test_a_changed_source_is_imported_as_changed(tmp_path: Path) -> None:
    _package(tmp_path / "lib")
    _run(tmp_path / "lib", tmp_path / "c")
    circle = tmp_path / "lib" / "shapes" / "circle.py"
    _package(tmp_path / "lib", value="22")   # another size
    assert _run(tmp_path / "lib", tmp_path / "c")["value"] == 22
    _run(tmp_path / "lib", tmp_path / "c")
    circle.write_text(circle.read_text().replace("22", "33"))   # the same size: its time tells
    later = time.time() + 5
    os.utime(circle, (later, later))
    got = _run(tmp_path / "lib", tmp_path / "c")
    assert got["value"] == 33 and "shapes.circle" not in got["served"]


def test_a_module_shadowed_by_a_new_file_is_found_as_without_the_cache(tmp_path: Path) -> None:
    _package(tmp_path / "lib")
    early = tmp_path / "early"
    early.mkdir()
    _run(tmp_path / "lib", tmp_path / "c", early)
    _run(tmp_path / "lib", tmp_path / "c", early)
    shadow = early / "shapes"   # earlier on sys.path than lib: it wins from now on
    shadow.mkdir()
    (shadow / "__init__.py").write_text("")
    (shadow / "circle.py").write_text("VALUE = 7\n\ndef fail():\n    return 1 / 0\n")
    (shadow / "data.txt").write_text("shadow")
    got = _run(tmp_path / "lib", tmp_path / "c", early)
    assert got["value"] == 7 and got["resource"] == "shadow" and got["served"] == []


def test_another_search_path_has_its_own_cache(tmp_path: Path) -> None:
    _package(tmp_path / "lib")
    _run(tmp_path / "lib", tmp_path / "c")
    other = tmp_path / "other"
    _package(other, value="5")
    got = _run(other, tmp_path / "c")
    assert got["value"] == 5 and got["served"] == []
    assert len(list((tmp_path / "c").glob("modules-*.bin"))) == 2


def test_a_broken_cache_file_is_passed_over_and_written_anew(tmp_path: Path) -> None:
    _package(tmp_path / "lib")
    plain = _run(tmp_path / "lib", tmp_path / "c")
    for content in (b"", b"\x10\x00\x00\x00\x00\x00\x00\x00not marshal", b"\xff" * 64):
        for path in (tmp_path / "c").glob("modules-*.bin"):
            path.write_bytes(content)
        assert _without_counts(_run(tmp_path / "lib", tmp_path / "c")) == _without_counts(plain)
        assert _run(tmp_path / "lib", tmp_path / "c")["served"] == ["shapes", "shapes.circle"]


def test_an_unwritable_cache_folder_leaves_imports_as_usual(tmp_path: Path) -> None:
    _package(tmp_path / "lib")
    blocked = tmp_path / "file"
    blocked.write_text("a file where the folder would be")
    got = _run(tmp_path / "lib", blocked / "sub")
    assert got["value"] == 1 and got["served"] == []


def test_the_console_script_writes_the_module_cache(tmp_path: Path) -> None:
    env = {**os.environ, "REKEY_CACHE_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-c", "import sys; sys.argv = ['rekey'] + sys.argv[1:]\n"
            "from engine.launch import entry\nentry()", "plan", "-c", str(tmp_path / "missing.toml")]
    for _ in range(2):
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
        assert done.returncode == 2 and "missing.toml" in done.stderr
    (cache,) = tmp_path.glob("modules-*.bin")
    assert cache.stat().st_size > 100_000 and cache.stat().st_mode & 0o077 == 0


def test_a_process_that_imported_nothing_new_leaves_the_file_alone(tmp_path: Path) -> None:
    _package(tmp_path / "lib")
    _run(tmp_path / "lib", tmp_path / "c")
    (cache,) = (tmp_path / "c").glob("modules-*.bin")
    written = cache.stat().st_mtime_ns
    for _ in range(2):
        assert _run(tmp_path / "lib", tmp_path / "c")["served"] == ["shapes", "shapes.circle"]
    assert cache.stat().st_mtime_ns == written   # the alias in sys.modules does not make it stale


def test_a_file_cut_short_gives_the_usual_imports(tmp_path: Path) -> None:
    _package(tmp_path / "lib")
    plain = _run(tmp_path / "lib", tmp_path / "c")
    (cache,) = (tmp_path / "c").glob("modules-*.bin")
    data = cache.read_bytes()
    cache.write_bytes(data[:len(data) // 2])   # the index whole, the code of half the modules gone
    got = _run(tmp_path / "lib", tmp_path / "c")
    assert _without_counts(got) == _without_counts(plain)


def test_a_file_of_this_key_with_another_index_is_passed_over(tmp_path: Path) -> None:
    _package(tmp_path / "lib")
    plain = _run(tmp_path / "lib", tmp_path / "c")
    (cache,) = (tmp_path / "c").glob("modules-*.bin")
    data = cache.read_bytes()
    size = int.from_bytes(data[:8], "little")
    head = marshal.loads(data[8:8 + size])
    head["modules"] = {name: entry[:3] for name, entry in head["modules"].items()}   # entries cut short
    forged = marshal.dumps(head)
    cache.write_bytes(len(forged).to_bytes(8, "little") + forged + data[8 + size:])
    got = _run(tmp_path / "lib", tmp_path / "c")
    assert _without_counts(got) == _without_counts(plain) and got["served_count"] == 0
