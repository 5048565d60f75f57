"""The per-object completion report, streamed as objects finish: JSON Lines or CSV, one line per outcome.

Like S3 Batch Operations' completion reports: a line is appended once the outcome is committed to the
checkpoint, so the file never claims more than the checkpoint holds. A resumed run appends to the same
file; an object done again (failed before, or changed) has a later line, and the last line of a key wins.
Lines carry no key material (outcomes hold none).
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from workers.errors import ConfigError
from workers.model import Outcome

FIELDS = ("bucket", "key", "version_id", "state", "action", "source_mode", "target_mode", "bytes_copied",
          "bytes_through_client", "retries", "error", "error_kind", "actor", "finished_at")
FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}


def report_format(path: str) -> str:
    """jsonl or csv, from the file name; anything else is a usage error."""
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise ConfigError(f"--completion-report: {path}: name it .jsonl (JSON Lines) or .csv")
    return fmt


def entry(outcome: Outcome, *, bucket: str, actor: str | None, finished_at: str) -> dict[str, Any]:
    return {
        "bucket": bucket, "key": outcome.key, "version_id": outcome.version_id, "state": outcome.state.value,
        "action": outcome.action.value if outcome.action else None,
        "source_mode": outcome.source_mode.value if outcome.source_mode else None,
        "target_mode": outcome.target_mode.value if outcome.target_mode else None,
        "bytes_copied": outcome.bytes_copied, "bytes_through_client": outcome.bytes_through_client,
        "retries": outcome.retries, "error": outcome.error, "error_kind": outcome.error_kind,
        "actor": actor, "finished_at": finished_at,
    }


class CompletionReport:
    """An append-only file of outcomes; `write` is called by the checkpoint writer after each commit."""

    def __init__(self, path: str, bucket: str) -> None:
        self.path = path
        self.format = report_format(path)
        self._bucket = bucket
        self._file: IO[str] | None = None

    def open(self) -> None:
        target = Path(self.path)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fresh = not target.exists() or target.stat().st_size == 0
            fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)  # owner only
            self._file = os.fdopen(fd, "a", encoding="utf-8", newline="")
        except OSError as exc:
            raise ConfigError(f"--completion-report: cannot write {self.path}: {exc.strerror}") from None
        if fresh and self.format == "csv":
            self._file.write(",".join(FIELDS) + "\r\n")

    def write(self, outcomes: Sequence[Outcome], actors: Sequence[str | None]) -> None:
        """Lines for outcomes just committed to the checkpoint, each with the actor that finished it."""
        if self._file is None:
            return
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        entries = [entry(o, bucket=self._bucket, actor=a, finished_at=stamp)
                   for o, a in zip(outcomes, actors, strict=True)]
        if self.format == "jsonl":
            text = "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in entries)
        else:
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=FIELDS)
            writer.writerows({k: "" if v is None else v for k, v in e.items()} for e in entries)
            text = buf.getvalue()
        self._file.write(text)
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
