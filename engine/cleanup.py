"""`rekey cleanup -c FILE [--dry-run]`: abort the incomplete multipart uploads rekey itself started.

An upload is rekey's when its id is in the checkpoint's `uploads` table and it lies under the destination
bucket and prefix of this config, or when the checkpoint recorded the intent to create an upload on exactly
that key (a crash came before the id was recorded) and the upload was initiated after that intent;
everything else in ListMultipartUploads (someone else's uploads, other
prefixes) is counted and left alone. Each of rekey's uploads still open on the server is aborted and
forgotten in the checkpoint, so the next run starts that object's upload afresh; one the server no longer
knows is only forgotten. Run it when no `rekey run` is using the same checkpoint: a running upload would
be aborted under it (its object then fails and the next run redoes it).
"""

from __future__ import annotations

from engine.checkpoint import UploadRow
from engine.config import Config
from workers.errors import ObjectChangedError
from workers.multipart import INTENT_SKEW


async def abort_uploads(config: Config, rows: list[UploadRow], *, dry_run: bool) -> tuple[list[str], int]:
    """(lines describing what was done to each of rekey's uploads, count of other uploads left alone)."""
    from engine.job import open_clients
    dst = config.destination.location
    lines: list[str] = []
    async with open_clients(config) as (_, dest, _kms):
        listed = await dest.list_uploads(dst.bucket, dst.prefix)
        on_server = {u.upload_id: u.key for u in listed}
        ours = {r.upload_id for r in rows}
        for row in rows:
            if not row.upload_id:
                # An intent: killed between CreateMultipartUpload and recording its id. The uploads of
                # exactly that key initiated after the intent are rekey's.
                found = [u.upload_id for u in listed if u.key == row.dest_key
                         and (u.initiated is None or u.initiated >= row.created_at - INTENT_SKEW)]
                ours.update(found)
                for upload_id in found:
                    if not dry_run:
                        try:
                            await dest.abort_upload(row.dest_bucket, row.dest_key, upload_id)
                        except ObjectChangedError:
                            pass
                    lines.append(f"{'would abort' if dry_run else 'aborted'} s3://{row.dest_bucket}/"
                                 f"{row.dest_key} upload {upload_id} (started just before a crash)")
                continue
            where = f"s3://{row.dest_bucket}/{row.dest_key} upload {row.upload_id}"
            if row.upload_id not in on_server:
                lines.append(f"{'would forget' if dry_run else 'forgot'} {where} (no longer on the server)")
                continue
            if not dry_run:
                try:
                    await dest.abort_upload(row.dest_bucket, row.dest_key, row.upload_id)
                except ObjectChangedError:
                    pass  # NoSuchUpload: gone between the listing and the abort
            lines.append(f"{'would abort' if dry_run else 'aborted'} {where}")
    return lines, len(set(on_server) - ours)
