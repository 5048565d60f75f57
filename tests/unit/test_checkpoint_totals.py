"""The checkpoint's aggregates equal a scan of its rows after every kind of write; status and the report read
them; unfinished rows are handed out page by page and not again by the listing; the report's object list
is left out beyond its limit."""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path

from engine.checkpoint import Checkpoint
from engine.completion import CompletionReport
from engine.config import parse_config
from engine.report import build_report, summary_of
from workers.model import Action, Mode, ObjectRef, Outcome, State


def open_cp(path: Path) -> Checkpoint:
    return Checkpoint.open(path, fingerprint="f", description="test")


def scanned(path: Path) -> dict[str, tuple[int, int, int, int]]:
    conn = sqlite3.connect(path)
    try:
        return {r[0]: (r[1], r[2], r[3], r[4]) for r in conn.execute(
            "SELECT state, COUNT(*), SUM(size), SUM(bytes_copied), SUM(retries) FROM objects GROUP BY state")}
    finally:
        conn.close()


def from_totals(cp: Checkpoint) -> dict[str, tuple[int, int, int, int]]:
    return {k: (t.objects, t.bytes, t.bytes_copied, t.retries) for k, t in cp.totals_by("state").items()}


def outcome(key: str, state: State, *, copied: int = 0, retries: int = 0) -> Outcome:
    return Outcome(key=key, state=state, action=Action.COPY if state == State.DONE else Action.SKIP,
                   source_mode=Mode.NONE, target_mode=Mode.SSE_S3, bytes_copied=copied, retries=retries)


def test_totals_follow_inserts_updates_and_relisting(tmp_path: Path) -> None:
    path = tmp_path / "cp.sqlite"
    cp = open_cp(path)
    cp.begin_run()
    rng = random.Random(7)
    refs = [ObjectRef(f"k{i:04d}", rng.randrange(1, 5000), f"e{i}") for i in range(300)]
    cp.add_listed(refs, position=refs[-1].key, done=True)
    assert from_totals(cp) == scanned(path)
    states = [State.DONE, State.FAILED, State.SKIPPED, State.CHANGED]
    cp.record_outcomes([outcome(r.key, rng.choice(states), copied=r.size, retries=rng.randrange(3)) for r in refs],
                       ["actor-1"] * len(refs))
    assert from_totals(cp) == scanned(path)
    # a second pass: some objects changed (new ETag), some failed again
    relisted = [ObjectRef(r.key, r.size + 1, r.etag + "x") if i % 5 == 0 else r for i, r in enumerate(refs)]
    cp.add_listed(relisted, position=refs[-1].key, done=True)
    cp.record_outcomes([outcome(r.key, State.DONE, copied=r.size) for r in refs[:40]])
    assert from_totals(cp) == scanned(path)
    assert sum(v[0] for v in from_totals(cp).values()) == 300
    assert cp.get("k0299") is not None and cp.get("k0299").actor == "actor-1"  # type: ignore[union-attr]
    cp.close()


def test_an_older_checkpoint_gets_its_totals_from_one_scan(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    cp = open_cp(path)
    cp.add_listed([ObjectRef(f"k{i}", 10, "e") for i in range(5)], position="k4", done=True)
    cp.close()
    conn = sqlite3.connect(path)   # as an earlier version left it: no aggregates
    conn.executescript("DROP TRIGGER totals_insert; DROP TRIGGER totals_update; DROP TRIGGER totals_delete; "
                       "DROP TABLE totals; DELETE FROM meta WHERE name = 'totals';")
    conn.execute("UPDATE objects SET state = 'done' WHERE key = 'k0'")
    conn.commit()
    conn.close()
    cp = open_cp(path)
    assert from_totals(cp) == scanned(path) == {"done": (1, 10, 0, 0), "pending": (4, 40, 0, 0)}
    cp.close()


def test_unfinished_rows_are_paged_and_not_listed_again(tmp_path: Path) -> None:
    path = tmp_path / "cp.sqlite"
    cp = open_cp(path)
    refs = [ObjectRef(f"k{i:03d}", 1, "e") for i in range(25)]
    cp.add_listed(refs, position="k024", done=False)
    cp.record_outcomes([outcome(r.key, State.FAILED) for r in refs[:5]])
    cp.record_outcomes([outcome(r.key, State.DONE) for r in refs[5:10]])
    cp.begin_run()
    seen: list[str] = []
    after = None
    while rows := cp.take_unfinished(after, limit=4):
        seen += [r.key for r in rows]
        after = (rows[-1].state.value, rows[-1].key, rows[-1].version_id)
    assert sorted(seen) == [r.key for r in refs[:5] + refs[10:]] and len(seen) == len(set(seen))
    # the listing of this run hands out only what it did not already queue
    new = ObjectRef("k100", 1, "e")
    assert cp.add_listed([*refs, new], position="k100", done=True) == [new]
    cp.close()


def config_for(tmp_path: Path) -> object:
    return parse_config({"source": {"bucket": "b"}, "target": {"mode": "sse-s3"},
                         "run": {"checkpoint": str(tmp_path / "cp.sqlite")}}, base=tmp_path)


def test_report_lists_objects_up_to_its_limit_then_points_at_the_completion_report(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    cp = open_cp(tmp_path / "cp.sqlite")
    refs = [ObjectRef(f"k{i}", 100, "e") for i in range(6)]
    cp.add_listed(refs, position="k5", done=True)
    cp.record_outcomes([outcome(r.key, State.DONE, copied=100) for r in refs], ["a"] * 6)
    small = build_report(config, cp, None, objects_max=6)  # type: ignore[arg-type]
    assert [o["actor"] for o in small["objects"]] == ["a"] * 6
    big = build_report(config, cp, None, objects_max=5, completion_report="c.jsonl")  # type: ignore[arg-type]
    assert "objects" not in big
    assert big["objects_left_out"]["objects"] == 6 and big["objects_left_out"]["completion_report"] == "c.jsonl"
    assert big["summary"] == small["summary"] == summary_of(cp)
    assert big["summary"]["by_state"] == {"done": 6} and big["summary"]["bytes_copied"] == 600
    cp.close()


def test_completion_report_appends_jsonl_and_csv(tmp_path: Path) -> None:
    for name in ("c.jsonl", "c.csv"):
        for _ in range(2):   # a resumed run appends; the CSV header is written once
            rep = CompletionReport(str(tmp_path / name), "dst")
            rep.open()
            rep.write([outcome("a", State.DONE), outcome("b", State.FAILED)], ["local", "local"])
            rep.close()
    lines = (tmp_path / "c.jsonl").read_text().splitlines()
    assert [json.loads(line)["key"] for line in lines] == ["a", "b", "a", "b"]
    assert json.loads(lines[1])["state"] == "failed" and json.loads(lines[0])["bucket"] == "dst"
    rows = (tmp_path / "c.csv").read_text().splitlines()
    assert rows[0].startswith("bucket,key,version_id,state") and len(rows) == 5


def test_ranges_cover_the_key_space_once() -> None:
    from engine.ranges import BELOW, ranges_from_cuts
    cuts = ["a" + BELOW, "`" + BELOW, "p/" + BELOW]
    ranges = ranges_from_cuts(cuts)
    assert [r.lo for r in ranges] == ["", "`" + BELOW, "a" + BELOW, "p/" + BELOW] and ranges[-1].hi is None
    for key in ["", " ", "!", "a", "a/1", "`x", "b", "p/", "p/0", "zz", "\u00e9", "\U0010FFFF"]:
        assert sum(r.holds(key) for r in ranges) == (0 if key == "" else 1), key
