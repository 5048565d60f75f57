"""The end of a run in words and JSON: summary by state and mode (from the checkpoint's aggregates), and the
objects, listed up to REPORT_OBJECTS_MAX (beyond, the streamed completion report has them: engine/completion.py)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.checkpoint import Checkpoint, ObjectRow, Totals
from engine.config import Config
from engine.terminal import shown
from workers.model import State

if TYPE_CHECKING:
    from engine.pipeline import RunResult

REPORT_VERSION = 1


REPORT_OBJECTS_MAX = 10_000  # objects listed in the JSON report; beyond, see the completion report


def object_entry(r: ObjectRow) -> dict[str, Any]:
    return {
        "key": r.key,
        "version_id": r.version_id or None,
        "source_mode": r.source_mode.value if r.source_mode else None,
        "target_mode": r.target_mode.value if r.target_mode else None,
        "action": r.action.value if r.action else None,
        "state": r.state.value,
        "bytes": r.size,
        "bytes_copied": r.bytes_copied,
        "bytes_through_client": r.bytes_through_client,
        "attempts": r.attempts,
        "retries": r.retries,
        "error": r.last_error,
        "actor": r.actor,
    }


def object_entries(cp: Checkpoint) -> list[dict[str, Any]]:
    return [object_entry(r) for r in cp.rows()]


def _slots(totals: dict[str, Totals]) -> dict[str, dict[str, int]]:
    return {k: {"objects": t.objects, "bytes": t.bytes} for k, t in sorted(totals.items())}


def summary_of(cp: Checkpoint) -> dict[str, Any]:
    """The report's summary from the checkpoint's aggregates (no scan of the object rows)."""
    by_state = cp.totals_by("state")
    by_action = _slots(cp.totals_by("action"))
    if "unknown" in by_action:   # objects not done yet have no action
        by_action["none"] = by_action.pop("unknown")
    return {
        "objects": sum(t.objects for t in by_state.values()),
        "by_state": {k: t.objects for k, t in sorted(by_state.items())},
        "by_source_mode": _slots(cp.totals_by("source_mode")),
        "by_action": by_action,
        "bytes_copied": sum(t.bytes_copied for t in by_state.values()),
        "bytes_through_client": sum(t.bytes_through_client for t in by_state.values()),
        "retries": sum(t.retries for t in by_state.values()),
    }


def build_report(config: Config, cp: Checkpoint, result: RunResult | None, *,
                 objects_max: int = REPORT_OBJECTS_MAX, completion_report: str | None = None,
                 with_objects: bool = True) -> dict[str, Any]:
    """The JSON report. Its `objects` list is there up to `objects_max` objects; beyond, it is left out
    and `objects_left_out` says how many and where the streamed completion report is."""
    summary = summary_of(cp)
    report: dict[str, Any] = {
        "version": REPORT_VERSION,
        "config": config.path,
        "source": f"s3://{config.source.location.bucket}/{config.source.location.prefix}",
        "destination": f"s3://{config.destination.location.bucket}/{config.destination.location.prefix}",
        "target": config.describe_target(),
        "checkpoint": str(config.run.checkpoint),
        "summary": summary,
    }
    if with_objects and summary["objects"] <= objects_max:
        report["objects"] = object_entries(cp)
    elif with_objects:
        report["objects_left_out"] = {
            "objects": summary["objects"], "limit": objects_max, "completion_report": completion_report,
            "why": f"more than {objects_max} objects: one line per object is in the completion report "
                   "(rekey run --completion-report FILE.jsonl or .csv), every row in the checkpoint",
        }
    if result is not None:
        report["run"] = {
            "exit_code": result.exit_code,
            "elapsed_seconds": round(result.elapsed, 3),
            "requests": result.requests,
            "requests_by_transport": result.requests_by_transport,
            "timeline": result.timeline,
            "throttles": result.throttles,
            "retries": result.retries,
            "min_concurrency": result.min_window,
            "capabilities": result.capabilities,
            # Write paths whose first objects were read back byte for byte: how many this run, and whether
            # the path is now trusted (true), turned off (false) or still calibrating (null).
            "calibrated": {
                name.removeprefix("readback_"): {"read_back": result.read_back.get(name, 0),
                                                 "trusted": result.capabilities.get(name)}
                for name in sorted({*result.read_back, *(c for c in result.capabilities
                                                         if c.startswith("readback_"))})},
            "objects_this_run": result.objects_done,
            "bytes_this_run": result.bytes_done,
            "objects_per_second": round(result.objects_done / result.elapsed, 1) if result.elapsed else 0.0,
            "bytes_per_second": round(result.bytes_done / result.elapsed) if result.elapsed else 0,
            "this_run": result.counts,
        }
        ex = result.executor
        report["executor"] = {"kind": ex.kind, "actors": ex.actors, "actors_lost": ex.actors_lost}
        if ex.batches_retried:
            report["executor"].update(batches_retried=ex.batches_retried, uploads_carried=ex.uploads_carried)
    return report


def failures(cp: Checkpoint, limit: int = 20) -> list[dict[str, Any]]:
    """A few failed or changed objects for the summary (the full list is in the reports)."""
    return [object_entry(r) for r in cp.sample((State.FAILED, State.CHANGED), limit)]


def write_json(path: str | Path, data: Any) -> None:
    """Write atomically: a half-written report is never left behind."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".report-", dir=str(target.parent))
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(dumps(data))
        f.write("\n")
    os.replace(tmp, target)


def dumps(data: Any) -> str:
    """Indented JSON, with each entry of a long "objects" list on one line. json's C encoder only runs
    without indent, and the indenting pure-Python one took 0.4 s for a 20,000-object report."""
    objects = data.get("objects") if isinstance(data, dict) else None
    if not isinstance(objects, list) or len(objects) < 2:
        return json.dumps(data, indent=2)
    marker = "\x00objects\x00"
    text = json.dumps({**data, "objects": marker}, indent=2)
    rows = ",\n    ".join(json.dumps(o) for o in objects)
    return text.replace(json.dumps(marker), f"[\n    {rows}\n  ]", 1)


def summary_text(report: dict[str, Any], failed: list[dict[str, Any]] | None = None) -> str:
    """The summary in words; `failed`: a sample of failed objects (else taken from the report's list)."""
    s = report["summary"]
    lines = [shown(f"{report['source']} -> {report['destination']} as {report['target']}")]
    states = ", ".join(f"{k} {v}" for k, v in s["by_state"].items()) or "no objects"
    lines.append(f"objects: {s['objects']} ({states})")
    by_src = ", ".join(f"{k} {v['objects']}" for k, v in sorted(s["by_source_mode"].items()))
    if by_src:
        lines.append(f"source modes: {by_src}")
    by_act = ", ".join(f"{k} {v['objects']}" for k, v in sorted(s["by_action"].items()))
    if by_act:
        lines.append(f"actions: {by_act}")
    lines.append(f"bytes copied server-side: {_human(s['bytes_copied'])}; "
                 f"through rekey: {_human(s['bytes_through_client'])}")
    run = report.get("run")
    if run:
        lines.append(f"elapsed {run['elapsed_seconds']:.1f}s, {run['requests']} requests, "
                     f"{run['retries']} retries, {run['throttles']} throttles; this run {run['objects_this_run']} "
                     f"objects, {run['objects_per_second']:.0f} obj/s, {_human(run['bytes_per_second'])}/s")
    if failed is None:
        failed = [o for o in report.get("objects", []) if o["state"] in (State.FAILED.value, State.CHANGED.value)]
    for o in failed[:20]:
        lines.append(f"  {o['state']}: {shown(o['key'])}: {shown(str(o['error']))}")
    n_failed = s["by_state"].get(State.FAILED.value, 0) + s["by_state"].get(State.CHANGED.value, 0)
    if n_failed > 20:
        lines.append(f"  ... and {n_failed - 20} more (see the report)")
    return "\n".join(lines)


def _human(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{int(value)} B"
        value /= 1024
    return f"{n} B"
