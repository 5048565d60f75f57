"""The compiled-code caches of the console script (workers.startup): dataclasses and regular expressions
made from cached code behave as the standard library makes them; each cache is written once, read by later
processes, and a broken one is passed over. Each case runs in a fresh interpreter (the caches patch
`dataclasses` and `re`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Every kind of generated method: __init__ with defaults and factories, kw_only, __repr__, __eq__, order,
# __hash__ of a frozen class, frozen __setattr__/__delattr__, slots, replace(), fields(), asdict().
CLASSES = '''
import dataclasses, json, sys
from dataclasses import dataclass, field

@dataclass(frozen=True, slots=True)
class Frozen:
    name: str
    size: int = 0
    tags: tuple = field(default_factory=tuple)

@dataclass(order=True)
class Ordered:
    a: int
    b: str = "x"
    c: list = field(default_factory=list, compare=False)
    d: int = field(default=3, kw_only=True)

f = Frozen("k", 2)
out = {"repr": [repr(f), repr(Ordered(1, c=[1], d=4))], "eq": f == Frozen("k", 2, ()),
       "hash": hash(f) == hash(Frozen("k", 2)), "lt": Ordered(1) < Ordered(2),
       "replace": repr(dataclasses.replace(f, size=5)), "asdict": dataclasses.asdict(Ordered(1)),
       "fields": [x.name for x in dataclasses.fields(Frozen)], "slots": Frozen.__slots__}
try:
    f.size = 3
except dataclasses.FrozenInstanceError as exc:
    out["frozen"] = type(exc).__name__
try:
    Ordered()
except TypeError as exc:
    out["missing"] = str(exc)
import re
texts = ["Key-12.bin", "http://user@host:9000/a?b#c", b"\\x00abc", "MiXeD"]
patterns = [(r"(?P<stem>[A-Za-z-]+)(?P<n>\\d+)\\.(bin|txt)$", 0), (r"^(?:([a-z]+)://)?(?:[^@/]*@)?([^:/?#]*)", 0),
            (rb"\\x00(a|b)+", 0), (r"mixed", re.I), ("(?x) m i  # spaced out\\n x", re.I)]
found = []
for pattern, flags in patterns:
    compiled = re.compile(pattern, flags)
    for text in texts:
        if isinstance(text, bytes) == isinstance(pattern, bytes):
            m = compiled.search(text)
            found.append(None if m is None else [repr(m.group(0)), repr(m.groups()), m.span()])
    found.append([compiled.groups, sorted(compiled.groupindex.items()), int(compiled.flags)])
out["regex"] = found
print(json.dumps(out, sort_keys=True))
'''


def _run(cache: Path | None, env_dir: Path) -> tuple[dict[str, object], dict[str, int]]:
    install = ("from pathlib import Path\nfrom workers import startup\n"
               f"c, r = startup.cache_compiled(Path({str(cache)!r}))\n" if cache else "")
    report = ("stats = {'compiled': c.compiled, 'held': len(c.entries), 'regex': r.compiled,"
              " 'patterns': len(r.entries)}\nstartup.save()\nprint(json.dumps(stats))\n" if cache else "print('{}')\n")
    script = install + CLASSES + report
    env = {**os.environ, "REKEY_CACHE_DIR": str(env_dir), "PYTHONPATH": str(ROOT)}
    got = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60,
                         check=True).stdout.splitlines()
    return json.loads(got[0]), json.loads(got[1])


def _cache_files(directory: Path) -> list[Path]:
    return sorted([*directory.glob("dataclasses-*.marshal"), *directory.glob("regex-*.marshal")])


def test_classes_from_cached_code_behave_as_the_standard_librarys(tmp_path: Path) -> None:
    plain, _ = _run(None, tmp_path)
    first, stats1 = _run(tmp_path / "c", tmp_path / "c")
    assert first == plain
    assert stats1["compiled"] > 10 and stats1["regex"] >= 5   # every generated method and pattern compiled...
    assert len(_cache_files(tmp_path / "c")) == 2
    again, stats2 = _run(tmp_path / "c", tmp_path / "c")
    assert again == plain
    assert stats2["compiled"] == 0 and stats2["regex"] == 0  # ...and read from the caches by the next process
    assert stats2["held"] == stats1["held"] and stats2["patterns"] == stats1["patterns"]


@pytest.mark.parametrize("content", [b"", b"not marshal data", b"\xe9\x00\x00\x00\x00"])
def test_a_broken_cache_is_passed_over_and_written_anew(tmp_path: Path, content: bytes) -> None:
    plain, _ = _run(None, tmp_path)
    _run(tmp_path, tmp_path)
    for path in _cache_files(tmp_path):
        path.write_bytes(content)
    got, stats = _run(tmp_path, tmp_path)
    assert got == plain
    assert stats["compiled"] > 10 and stats["regex"] >= 5
    _, again = _run(tmp_path, tmp_path)
    assert again["compiled"] == 0 and again["regex"] == 0


def test_an_unwritable_cache_folder_costs_nothing_but_the_compiling(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("a file where the folder would be")
    plain, _ = _run(None, tmp_path)
    got, stats = _run(blocked, blocked / "sub")
    assert got == plain and stats["compiled"] > 10


def test_the_console_script_installs_the_cache_and_writes_it(tmp_path: Path) -> None:
    env = {**os.environ, "REKEY_CACHE_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    config = tmp_path / "missing.toml"
    done = subprocess.run([sys.executable, "-c", "import sys; sys.argv = ['rekey'] + sys.argv[1:]\n"
                           "from engine.launch import entry\nentry()", "plan", "-c", str(config)],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 2 and "missing.toml" in done.stderr   # a config error, one line
    assert len(_cache_files(tmp_path)) == 2
