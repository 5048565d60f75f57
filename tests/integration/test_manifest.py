"""A migration driven by an S3 Inventory-style CSV (URL-encoded keys with spaces and unicode) on SeaweedFS.

The functional test feeds `engine.manifest.manifest_pages` to `workers.core.migrate.migrate_object` directly; the
CLI test states the intended `rekey run` behaviour once `[source] manifest` replaces the listing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import anyio

from engine.listing import KeyFilter
from engine.manifest import manifest_pages
from engine.sandbox import SandboxInfo
from tests.cli_helpers import load_report, run_rekey, source_section, write_config
from workers.core.migrate import migrate_object
from workers.job import Job
from workers.model import Encryption, Location, Mode, Outcome, State
from workers.s3 import S3, Endpoint

LISTED = ["reports/Q1 summary.pdf", "reports/café €/menu+prices.txt", "plain"]
NOT_LISTED = ["reports/other.txt", "reports/café €/not me.txt"]


def inventory(tmp_path: Path, bucket: str) -> Path:
    """An Inventory CSV in AWS's default (current versions) order, keys encoded as Inventory does."""
    rows = [f'"{bucket}","{quote_plus(k)}","4","2024-05-01T10:00:00.000Z","x","STANDARD","false","","NOT-SSE"'
            for k in LISTED]
    path = tmp_path / "inventory.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def seed(s3: Any, bucket: str) -> None:
    for key in LISTED + NOT_LISTED:
        s3.put_object(Bucket=bucket, Key=key, Body=b"data")


def sse_of(s3: Any, bucket: str) -> dict[str, str | None]:
    return {k: s3.head_object(Bucket=bucket, Key=k).get("ServerSideEncryption") for k in LISTED + NOT_LISTED}


def test_manifest_pages_drive_exactly_the_listed_objects(sandbox: SandboxInfo, s3_http: Any, bucket: str,
                                                         tmp_path: Path) -> None:
    seed(s3_http, bucket)
    path = inventory(tmp_path, bucket)

    async def main() -> list[Outcome]:
        async with S3.open(Endpoint(endpoint_url=sandbox.s3_http, region=sandbox.region)) as s3:
            job = Job.of(source=s3, dest=s3, src=Location(bucket), dst=Location(bucket), in_place=True,
                      same_endpoint=True, target=Encryption(Mode.SSE_S3))
            return [await migrate_object(job, ref)
                    async for refs, _, _ in manifest_pages(path, KeyFilter("", (), ()), bucket=bucket, page_size=2)
                    for ref in refs]
    outcomes = anyio.run(main)
    assert sorted(o.key for o in outcomes) == sorted(LISTED)
    assert {o.state for o in outcomes} == {State.DONE}
    assert sse_of(s3_http, bucket) == {**{k: "AES256" for k in LISTED}, **{k: None for k in NOT_LISTED}}


def test_cli_run_from_an_inventory_manifest(sandbox: SandboxInfo, s3_http: Any, bucket: str, tmp_path: Path) -> None:
    seed(s3_http, bucket)
    cfg = write_config(tmp_path, {
        "source": source_section(sandbox, bucket, https=False, manifest=str(inventory(tmp_path, bucket))),
        "target": {"mode": "sse-s3"},
        "run": {"checkpoint": str(tmp_path / "cp.sqlite")},
    })
    report = tmp_path / "report.json"
    result = run_rekey(sandbox, "run", "-c", str(cfg), "--report", str(report), "-q")
    assert result.returncode == 0, result.describe()
    assert sorted(o["key"] for o in load_report(report)["objects"]) == sorted(LISTED)
    assert sse_of(s3_http, bucket) == {**{k: "AES256" for k in LISTED}, **{k: None for k in NOT_LISTED}}


def test_cli_manifest_of_another_bucket_is_a_config_error(sandbox: SandboxInfo, s3_http: Any, bucket: str,
                                                          tmp_path: Path) -> None:
    seed(s3_http, bucket)
    cfg = write_config(tmp_path, {
        "source": source_section(sandbox, bucket, https=False, manifest=str(inventory(tmp_path, "other-bucket"))),
        "target": {"mode": "sse-s3"},
        "run": {"checkpoint": str(tmp_path / "cp.sqlite")},
    })
    result = run_rekey(sandbox, "run", "-c", str(cfg), "-q")
    assert result.returncode == 2 and "source.manifest: line 1: row is for bucket 'other-bucket'" in result.stderr
    assert set(sse_of(s3_http, bucket).values()) == {None}
