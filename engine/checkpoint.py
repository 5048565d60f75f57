"""The SQLite checkpoint: run identity, listing position, one row per object, multipart uploads and parts.

All access goes through one connection used from one thread at a time (the engine's checkpoint
limiter), so there is a single writer. Rows hold no key material: only key MD5s, fingerprints, and the
wrapped (encrypted) data keys of envelopes waiting for their instruction file.

`totals` holds objects and bytes per (state, source mode, action), kept by triggers in the same
transaction as every write to `objects`: `rekey status` and the report's summary read it instead of
scanning a row per object.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.checkpoint_db import (
    ADDED_COLUMNS,
    REBUILD_TOTALS,
    SCHEMA_AFTER_COLUMNS,
    SCHEMA_VERSION,
    Transaction,
    connect,
    connect_read_only,
    database_error_message,
)
from engine.checkpoint_rows import ObjectRow, Totals, UploadRow, row_of
from engine.lock import unwritable_message
from workers.errors import CheckpointError
from workers.model import KeyRange, Mode, ObjectRef, Outcome, PartResult, PendingEnvelope, State

if TYPE_CHECKING:
    from engine.config import Config

__all__ = ["Checkpoint", "ObjectRow", "Totals", "UploadRow", "database_error_message", "open_checkpoint",
           "settings_differ"]

UNFINISHED_PAGE = 1000  # rows per read of unfinished objects

TODO_STATES = (State.PENDING.value, State.IN_PROGRESS.value, State.FAILED.value, State.CHANGED.value)


# The object read or listed with this ETag is rekey's journaled write and the source's ETag is known: the
# row keeps the source's size and ETag (a manifest without ETags leaves them to what was read).
_OURS = "new_etag = {0} AND etag IS NOT NULL AND etag != ''"


class Checkpoint:
    """Synchronous checkpoint API; the engine calls it from one worker thread at a time."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path
        self.run_id = 0  # the run that has this checkpoint open (begin_run), 0 when only read

    # --- opening -----------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path, *, fingerprint: str, description: str, create: bool = True,
             read_only: bool = False, settings: Mapping[str, Any] | None = None) -> Checkpoint:
        """Open or create; refuse a checkpoint written under a config with another fingerprint, naming the
        settings that differ. `read_only` never writes (and works in a read-only folder)."""
        exists = path.exists()
        if not exists and (not create or read_only):
            raise CheckpointError(f"{path}: no checkpoint here (run `rekey run` first)")
        if exists and path.is_dir():
            raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
        try:
            conn = connect_read_only(path) if read_only else connect(path, exists=exists)
            cp = cls(conn, path)
            if not read_only:
                cp._upgrade()
            stored = cp.get_meta("fingerprint")
        except sqlite3.DatabaseError as exc:
            raise CheckpointError(database_error_message(path, exc)) from None
        except OSError as exc:
            raise CheckpointError(unwritable_message(path, exc.strerror or str(exc))) from None
        if stored is None and not read_only:
            with cp._tx():
                cp._set_meta("fingerprint", fingerprint)
                cp._set_meta("schema", SCHEMA_VERSION)
                cp._set_meta("config", description)
                cp._set_meta("created_at", str(time.time()))
                if settings is not None:
                    cp._set_meta("settings", json.dumps(dict(settings), sort_keys=True))
        elif stored is not None and stored != fingerprint:
            old = cp.get_meta("config") or "?"
            differs = settings_differ(cp.get_json("settings"), settings)
            conn.close()
            written = f"{old}: {differs}" if differs else old
            raise CheckpointError(
                f"{path}: checkpoint was written for another configuration ({written}); "
                f"use the original config, or another [run] checkpoint path to start afresh")
        return cp

    def _upgrade(self) -> None:
        """Bring a checkpoint written by an earlier version up to this schema (columns, index, totals)."""
        have = {r[1] for r in self._conn.execute("PRAGMA table_info(objects)")}
        with self._tx():
            for name, decl in ADDED_COLUMNS:
                if name not in have:
                    self._conn.execute(f"ALTER TABLE objects ADD COLUMN {name} {decl}")
        self._conn.executescript(SCHEMA_AFTER_COLUMNS)
        if self.get_meta("totals") != "1":   # older checkpoint: totals from one scan, then kept by triggers
            with self._tx():
                for statement in REBUILD_TOTALS.strip().split(";\n"):
                    self._conn.execute(statement)
                self._set_meta("totals", "1")

    def close(self) -> None:
        self._conn.close()

    def _tx(self) -> Transaction:
        return Transaction(self._conn)

    # --- meta ----------------------------------------------------------------------------------------

    def get_meta(self, name: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def _set_meta(self, name: str, value: str) -> None:
        self._conn.execute("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", (name, value))

    def set_meta(self, name: str, value: str) -> None:
        with self._tx():
            self._set_meta(name, value)

    def get_json(self, name: str) -> Any:
        raw = self.get_meta(name)
        return None if raw is None else json.loads(raw)

    def set_json(self, name: str, value: Any) -> None:
        self.set_meta(name, json.dumps(value, sort_keys=True))

    # --- listing -------------------------------------------------------------------------------------

    def listing_position(self) -> tuple[str, bool]:
        """(last key listed, whether the listing finished) of the current pass."""
        return self.get_meta("listing_position") or "", self.get_meta("listing_done") == "1"

    def start_new_pass(self) -> None:
        with self._tx():
            self._set_meta("listing_position", "")
            self._set_meta("listing_done", "0")

    def add_listed(self, refs: Iterable[ObjectRef], *, position: str, done: bool,
                   key_range: KeyRange | None = None) -> list[ObjectRef]:
        """Record a listed page and the listing position (of its range, when the listing is in ranges) in one
        transaction.

        Returns the refs that need work: new ones, and known ones not done for this ETag, except those this
        run already queued from its unfinished rows (see take_unfinished).
        """
        with self._tx():
            todo = self._add_refs(refs)
            if key_range is None:
                self._set_meta("listing_position", position)
                self._set_meta("listing_done", "1" if done else "0")
            else:
                self._conn.execute("UPDATE listing_ranges SET position = ?, done = ? WHERE lo = ?",
                                   (position, int(done), key_range.lo))
                self._sum_up_ranges()
        return todo

    def _sum_up_ranges(self) -> None:
        """listing_position/listing_done of the whole listing from its ranges (for status and new passes)."""
        row = self._conn.execute("SELECT MIN(CASE WHEN done = 0 THEN position END), MIN(done) "
                                 "FROM listing_ranges").fetchone()
        self._set_meta("listing_position", row[0] or "")
        self._set_meta("listing_done", "1" if row[1] == 1 else "0")

    def key_ranges(self) -> list[KeyRange]:
        return [KeyRange(r[0], r[1], r[2], bool(r[3])) for r in self._conn.execute(
            "SELECT lo, hi, position, done FROM listing_ranges ORDER BY lo")]

    def set_key_ranges(self, ranges: Iterable[KeyRange]) -> None:
        """The ranges of a new pass (learned, or the recorded ones reset to their start)."""
        with self._tx():
            self._conn.execute("DELETE FROM listing_ranges")
            self._conn.executemany("INSERT INTO listing_ranges (lo, hi, position, done) VALUES (?, ?, ?, ?)",
                                   [(r.lo, r.hi, r.position, int(r.done)) for r in ranges])
            self._sum_up_ranges()

    def _add_refs(self, refs: Iterable[ObjectRef]) -> list[ObjectRef]:
        now = time.time()
        todo: list[ObjectRef] = []
        for ref in refs:
            vid = ref.version_id or ""
            inserted = self._conn.execute(
                "INSERT INTO objects (key, version_id, size, etag, state, listed_at) "
                "VALUES (?, ?, ?, ?, 'pending', ?) ON CONFLICT (key, version_id) DO NOTHING",
                (ref.key, vid, ref.size, ref.etag, now)).rowcount
            if inserted:  # new: one statement, no lookup first
                todo.append(ref)
                continue
            row = self._conn.execute(
                "SELECT state, etag, new_etag, queued_run FROM objects WHERE key = ? AND version_id = ?",
                (ref.key, vid)).fetchone()
            if self.run_id and row["queued_run"] == self.run_id:
                continue  # already on its way in this run
            ours = ref.etag in (row["etag"], row["new_etag"])
            if row["state"] in (State.DONE.value, State.SKIPPED.value) and ours:
                continue  # finished in an earlier pass and unchanged since
            # Someone else's write since: the source mode seen before is not this object's. rekey's own write
            # (its ETag journaled, its outcome not yet recorded): the source's size and ETag stay, as proof.
            self._conn.execute(
                f"UPDATE objects SET size = CASE WHEN {_OURS.format('?')} THEN size ELSE ? END, "
                f"etag = CASE WHEN {_OURS.format('?')} THEN etag ELSE ? END, state = 'pending', listed_at = ?, "
                "source_mode = CASE WHEN ? THEN source_mode END WHERE key = ? AND version_id = ?",
                (ref.etag, ref.size, ref.etag, ref.etag, now, ours, ref.key, vid))
            todo.append(ref)
        return todo

    def take_unfinished(self, after: tuple[str, str, str] | None, *, by_key: bool = False,
                        limit: int = UNFINISHED_PAGE) -> list[ObjectRow]:
        """The next page of objects listed earlier and not finished (pending, interrupted, failed, changed),
        state by state in key order after `after` = (state, key, version id); each is marked queued by this
        run so the listing does not hand it out again. `by_key`: every version of a key is marked."""
        state, key, vid = after or (TODO_STATES[0], "", "")
        rows: list[ObjectRow] = []
        for s in TODO_STATES[TODO_STATES.index(state):]:
            cur = self._conn.execute(
                "SELECT * FROM objects WHERE state = ? AND (key, version_id) > (?, ?) "
                "AND queued_run IS NOT ? ORDER BY key, version_id LIMIT ?",
                (s, key, vid, self.run_id, limit - len(rows)))
            rows += [row_of(r) for r in cur]
            if len(rows) >= limit:
                break
            key, vid = "", ""
        if rows:
            with self._tx():
                if by_key:
                    self._conn.executemany("UPDATE objects SET queued_run = ? WHERE key = ?",
                                           [(self.run_id, k) for k in dict.fromkeys(r.key for r in rows)])
                else:
                    self._conn.executemany("UPDATE objects SET queued_run = ? WHERE key = ? AND version_id = ?",
                                           [(self.run_id, r.key, r.version_id) for r in rows])
        return rows

    def queued_keys(self, keys: Iterable[str]) -> set[str]:
        """Those of `keys` this run already queued (versioned runs: a key is one group)."""
        found: set[str] = set()
        for key in dict.fromkeys(keys):
            if self._conn.execute("SELECT 1 FROM objects WHERE key = ? AND queued_run = ? LIMIT 1",
                                  (key, self.run_id)).fetchone():
                found.add(key)
        return found

    def unfinished(self) -> list[ObjectRow]:
        """Every unfinished row, in key order (small checkpoints and tests; runs page with take_unfinished)."""
        cur = self._conn.execute(
            f"SELECT * FROM objects WHERE state IN ({','.join('?' * len(TODO_STATES))}) ORDER BY key",
            TODO_STATES)
        return [row_of(r) for r in cur]

    # --- objects -------------------------------------------------------------------------------------

    def mark_started(self, keys: Iterable[tuple[str, str]]) -> None:
        now = time.time()
        with self._tx():
            self._conn.executemany(
                "UPDATE objects SET state = 'in_progress', attempts = attempts + 1, started_at = ? "
                "WHERE key = ? AND version_id = ?", [(now, k, v) for k, v in keys])

    def record_outcomes(self, outcomes: Sequence[Outcome], actors: Sequence[str | None] = ()) -> None:
        """Outcomes, each with the name of the actor that finished it (the executor's, "local" when local)."""
        now = time.time()
        who = list(actors) + [None] * (len(outcomes) - len(actors))
        with self._tx():
            self._conn.executemany(
                # The source mode is the first one seen for this object (an in-place write replaces it).
                "UPDATE objects SET state = ?, action = ?, source_mode = COALESCE(source_mode, ?), "
                "target_mode = ?, last_error = ?, error_kind = ?, new_etag = COALESCE(?, new_etag), "
                "bytes_copied = ?, bytes_through_client = ?, retries = retries + ?, attempts = attempts + 1, "
                "plaintext_sha256 = COALESCE(?, plaintext_sha256), finished_at = ?, actor = ?, "
                # what was read is rekey's journaled write (a resumed run): the source's size and ETag stay
                f"size = CASE WHEN {_OURS.format('?15')} THEN size ELSE COALESCE(?14, size) END, "
                f"etag = CASE WHEN {_OURS.format('?15')} THEN etag ELSE COALESCE(?15, etag) END "
                "WHERE key = ?16 AND version_id = ?17",
                [(o.state.value, o.action.value if o.action else None,
                  o.source_mode.value if o.source_mode else None,
                  o.target_mode.value if o.target_mode else None,
                  o.error, o.error_kind, o.new_etag, o.bytes_copied, o.bytes_through_client, o.retries,
                  o.plaintext_sha256, now, actor, o.size, o.etag or None, o.key, o.version_id or "")
                 for o, actor in zip(outcomes, who, strict=True)])

    def record_written(self, key: str, version_id: str, etag: str) -> None:
        """In place, the ETag of rekey's write, before its outcome (see ObjectJournal.written)."""
        with self._tx():
            self._journal_written(key, version_id, etag)

    def _journal_written(self, key: str, version_id: str, etag: str) -> None:
        self._conn.execute("UPDATE objects SET new_etag = ? WHERE key = ? AND version_id = ?", (etag, key, version_id))

    def record_source_mode(self, key: str, version_id: str, mode: Mode) -> None:
        """The source mode as found, before a write that replaces the object (kept if one is known)."""
        with self._tx():
            self._conn.execute("UPDATE objects SET source_mode = COALESCE(source_mode, ?), started_at = ? "
                               "WHERE key = ? AND version_id = ?", (mode.value, time.time(), key, version_id))

    # --- envelopes waiting for their instruction file ---------------------------------------------------

    def put_envelope(self, key: str, version_id: str, dest_key: str, old_etag: str,
                     instruction: dict[str, str]) -> None:
        with self._tx():
            self._conn.execute(
                "INSERT OR REPLACE INTO envelopes (key, version_id, dest_key, old_etag, instruction, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)", (key, version_id, dest_key, old_etag,
                                              json.dumps(instruction, sort_keys=True), time.time()))

    def drop_envelope(self, key: str, version_id: str) -> None:
        with self._tx():
            self._conn.execute("DELETE FROM envelopes WHERE key = ? AND version_id = ?", (key, version_id))

    def envelope_for(self, key: str, version_id: str) -> PendingEnvelope | None:
        r = self._conn.execute("SELECT dest_key, old_etag, instruction FROM envelopes WHERE key = ? AND "
                               "version_id = ?", (key, version_id)).fetchone()
        if r is None:
            return None
        return PendingEnvelope(r[0], r[1], {str(k): str(v) for k, v in json.loads(r[2]).items()})

    def envelope_keys(self) -> list[tuple[str, str]]:
        """(key, version id) of every envelope still waiting for its instruction file."""
        return [(r[0], r[1]) for r in self._conn.execute("SELECT key, version_id FROM envelopes")]

    def envelopes(self) -> list[tuple[str, str]]:
        """(key, destination key) of every envelope still waiting for its instruction file."""
        return [(r[0], r[1]) for r in self._conn.execute("SELECT key, dest_key FROM envelopes ORDER BY key")]

    def get(self, key: str, version_id: str = "") -> ObjectRow | None:
        r = self._conn.execute("SELECT * FROM objects WHERE key = ? AND version_id = ?",
                               (key, version_id)).fetchone()
        return None if r is None else row_of(r)

    def rows(self, states: Iterable[State] | None = None) -> Iterator[ObjectRow]:
        if states is None:
            cur = self._conn.execute("SELECT * FROM objects ORDER BY key, version_id")
        else:
            values = [s.value for s in states]
            cur = self._conn.execute(
                f"SELECT * FROM objects WHERE state IN ({','.join('?' * len(values))}) "
                "ORDER BY key, version_id", values)
        for r in cur:
            yield row_of(r)

    def counts(self) -> dict[str, dict[str, int]]:
        """{state: {"objects": n, "bytes": b}} over all rows, from the aggregates."""
        return {k: {"objects": t.objects, "bytes": t.bytes} for k, t in self.totals_by("state").items()}

    def counts_by(self, column: str) -> dict[str, dict[str, int]]:
        return {k: {"objects": t.objects, "bytes": t.bytes} for k, t in self.totals_by(column).items()}

    def totals_by(self, column: str) -> dict[str, Totals]:
        """Aggregates grouped by state, source_mode or action ("" -> "unknown"); groups now empty left out."""
        if column not in ("source_mode", "action", "state"):
            raise ValueError(column)
        out: dict[str, Totals] = {}
        source = "totals" if self.get_meta("totals") == "1" else (   # read-only and older: one scan
            "(SELECT state, COALESCE(source_mode, '') AS source_mode, COALESCE(action, '') AS action, "
            "1 AS objects, size AS bytes, bytes_copied, bytes_through_client, retries FROM objects)")
        for r in self._conn.execute(
                f"SELECT {column}, SUM(objects), SUM(bytes), SUM(bytes_copied), SUM(bytes_through_client), "
                f"SUM(retries) FROM {source} GROUP BY 1 HAVING SUM(objects) > 0"):
            out[r[0] or "unknown"] = Totals(*(int(v) for v in r[1:]))
        return out

    def sample(self, states: Iterable[State], limit: int) -> list[ObjectRow]:
        """Up to `limit` rows in these states, in key order per state (the summary's list of failures)."""
        rows: list[ObjectRow] = []
        for s in states:
            rows += [row_of(r) for r in self._conn.execute(
                "SELECT * FROM objects WHERE state = ? ORDER BY key, version_id LIMIT ?", (s.value, limit))]
        return sorted(rows, key=lambda r: (r.key, r.version_id))[:limit]

    # --- multipart uploads ------------------------------------------------------------------------------

    def start_upload(self, row: UploadRow) -> None:
        with self._tx():
            self._conn.execute(
                "INSERT OR REPLACE INTO uploads (key, version_id, upload_id, dest_bucket, dest_key, part_size, "
                "source_etag, kind, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (row.key, row.version_id, row.upload_id, row.dest_bucket, row.dest_key, row.part_size,
                 row.source_etag, row.kind, time.time()))

    def upload_for(self, key: str, version_id: str = "") -> UploadRow | None:
        r = self._conn.execute("SELECT * FROM uploads WHERE key = ? AND version_id = ?",
                               (key, version_id)).fetchone()
        if r is None:
            return None
        return UploadRow(r["key"], r["version_id"], r["upload_id"], r["dest_bucket"], r["dest_key"],
                         r["part_size"], r["source_etag"], r["kind"], r["created_at"])

    def uploads(self) -> list[UploadRow]:
        return [UploadRow(r["key"], r["version_id"], r["upload_id"], r["dest_bucket"], r["dest_key"],
                          r["part_size"], r["source_etag"], r["kind"], r["created_at"])
                for r in self._conn.execute("SELECT * FROM uploads ORDER BY key")]

    def record_parts(self, upload_id: str, parts: Iterable[PartResult]) -> None:
        with self._tx():
            self._conn.executemany(
                "INSERT OR REPLACE INTO parts (upload_id, part_number, etag, size) VALUES (?, ?, ?, ?)",
                [(upload_id, p.part_number, p.etag, p.size) for p in parts])

    def parts_for(self, upload_id: str) -> list[PartResult]:
        return [PartResult(r[0], r[1], r[2]) for r in self._conn.execute(
            "SELECT part_number, etag, size FROM parts WHERE upload_id = ? ORDER BY part_number", (upload_id,))]

    def finish_upload(self, key: str, version_id: str, upload_id: str, etag: str | None = None) -> None:
        """Forget an upload (or an upload intent, id "") once completed or aborted; `etag`: in place, the
        completed object's, journaled as rekey's write (see record_written)."""
        with self._tx():
            if etag:
                self._journal_written(key, version_id, etag)
            if upload_id:
                self._conn.execute("DELETE FROM parts WHERE upload_id = ?", (upload_id,))
            self._conn.execute("DELETE FROM uploads WHERE key = ? AND version_id = ? AND upload_id = ?",
                               (key, version_id, upload_id))

    def upload_count(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM uploads").fetchone()[0])

    def upload_keys(self) -> set[tuple[str, str]]:
        """(key, version id) of objects with a recorded upload or upload intent."""
        return {(r[0], r[1]) for r in self._conn.execute("SELECT key, version_id FROM uploads")}

    # --- run history ----------------------------------------------------------------------------------

    def begin_run(self) -> int:
        with self._tx():
            cur = self._conn.execute("INSERT INTO runs (started_at) VALUES (?)", (time.time(),))
            self.run_id = int(cur.lastrowid or 0)
            return self.run_id

    def end_run(self, run_id: int, exit_code: int, summary: dict[str, Any]) -> None:
        with self._tx():
            self._conn.execute("UPDATE runs SET finished_at = ?, exit_code = ?, summary = ? WHERE id = ?",
                               (time.time(), exit_code, json.dumps(summary, sort_keys=True), run_id))

    def run_count(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0])

    def runs(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self._conn.execute("SELECT * FROM runs ORDER BY id")]


def settings_differ(stored: Any, current: Mapping[str, Any] | None) -> str:
    """`target.kms_key_id differs ('a' then, 'b' now), ...`, or "" when either side is unknown."""
    if not isinstance(stored, dict) or current is None:
        return ""
    names = sorted(n for n in set(stored) | set(current) if stored.get(n) != current.get(n))

    def shown(value: Any) -> str:
        text = json.dumps(value, sort_keys=True)
        return text if len(text) <= 60 else text[:57] + "..."
    return "; ".join(f"{n} differs ({shown(stored.get(n))} then, {shown(current.get(n))} now)" for n in names)


def open_checkpoint(config: Config, *, create: bool = True, read_only: bool = False) -> Checkpoint:
    """The run's checkpoint; `read_only` for commands that only read it (status, verify, the report)."""
    return Checkpoint.open(config.run.checkpoint, fingerprint=config.fingerprint(),
                           description=f"{config.source.location.bucket}/{config.source.location.prefix} -> "
                                       f"{config.describe_target()}", create=create, read_only=read_only,
                           settings=config.settings())
