"""The checkpoint's rows as the engine reads them: objects, multipart uploads, and totals."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from workers.model import Action, Mode, ObjectRef, State


@dataclass(frozen=True, slots=True)
class ObjectRow:
    """One object as the checkpoint knows it."""

    key: str
    version_id: str
    size: int
    etag: str
    source_mode: Mode | None
    target_mode: Mode | None
    action: Action | None
    state: State
    attempts: int
    retries: int
    last_error: str | None
    error_kind: str | None
    new_etag: str | None
    bytes_copied: int
    bytes_through_client: int
    plaintext_sha256: str | None
    actor: str | None = None

    def ref(self) -> ObjectRef:
        return ObjectRef(self.key, self.size, self.etag, self.version_id or None)


@dataclass(frozen=True, slots=True)
class UploadRow:
    """A multipart upload rekey started and has not finished or aborted."""

    key: str
    version_id: str
    upload_id: str
    dest_bucket: str
    dest_key: str
    part_size: int
    source_etag: str
    kind: str
    created_at: float = 0.0


def row_of(r: sqlite3.Row) -> ObjectRow:
    return ObjectRow(
        key=r["key"], version_id=r["version_id"], size=r["size"], etag=r["etag"],
        source_mode=Mode(r["source_mode"]) if r["source_mode"] else None,
        target_mode=Mode(r["target_mode"]) if r["target_mode"] else None,
        action=Action(r["action"]) if r["action"] else None,
        state=State(r["state"]), attempts=r["attempts"], retries=r["retries"],
        last_error=r["last_error"], error_kind=r["error_kind"], new_etag=r["new_etag"],
        bytes_copied=r["bytes_copied"], bytes_through_client=r["bytes_through_client"],
        plaintext_sha256=r["plaintext_sha256"], actor=r["actor"] if "actor" in r.keys() else None,  # noqa: SIM118 (Row: in = values)
    )


@dataclass(frozen=True, slots=True)
class Totals:
    """Objects and bytes of one group of rows, from the aggregates."""

    objects: int = 0
    bytes: int = 0
    bytes_copied: int = 0
    bytes_through_client: int = 0
    retries: int = 0
