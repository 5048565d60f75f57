"""`rekey plan`: what a run would do, per source mode and action, reading S3 only (no writes anywhere)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from engine.config import Config
from engine.listing import KeyFilter, list_objects
from engine.pipeline import check_transport, make_job, open_clients
from engine.terminal import shown
from workers.cse import detect_format, is_instruction_file, needs_instruction_file
from workers.errors import FatalError, RekeyError
from workers.job import Job
from workers.migrate import head_dest, head_source, plan_object
from workers.model import Action, Mode, ObjectHead, ObjectRef
from workers.probes import check_bucket


@dataclass(slots=True)
class PlanSummary:
    """Objects and bytes per (source mode, action), and objects that could not be planned."""

    rows: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    errors: list[tuple[str, str]] = field(default_factory=list)

    def add(self, mode: str, action: str, size: int) -> None:
        slot = self.rows.setdefault((mode, action), [0, 0])
        slot[0] += 1
        slot[1] += size

    def to_json(self) -> dict[str, Any]:
        return {
            "plan": [{"source_mode": m, "action": a, "objects": n, "bytes": b}
                     for (m, a), (n, b) in sorted(self.rows.items())],
            "objects": sum(n for n, _ in self.rows.values()),
            "bytes": sum(b for _, b in self.rows.values()),
            "errors": [{"key": k, "error": e} for k, e in self.errors],
        }


async def plan_run(config: Config) -> PlanSummary:
    check_transport(config)
    summary = PlanSummary()
    async with open_clients(config) as (source, dest, kms):
        job = make_job(config, source, dest, None, kms)
        await check_bucket(source, job.src.bucket, "source")

        async def one(ref: ObjectRef) -> None:
            try:
                head = await head_source(job, ref)
                if is_instruction_file(head.metadata):
                    return
                client_side = detect_format(head.metadata) is not None or needs_instruction_file(head.metadata)
                dst = None if job.in_place or client_side else await head_dest(job, ref)
            except FatalError:
                raise
            except RekeyError as exc:
                summary.add("unknown", "fail", ref.size)
                summary.errors.append((ref.key, str(exc)))
                return
            mode, action = plan_one(job, head, dst, client_side)
            summary.add(mode, action, head.size)

        async def worker(recv: MemoryObjectReceiveStream[ObjectRef]) -> None:
            async with recv:
                async for ref in recv:
                    await one(ref)

        send, recv = anyio.create_memory_object_stream[ObjectRef](config.run.concurrency)
        async with anyio.create_task_group() as tg:
            for _ in range(config.run.concurrency):
                tg.start_soon(worker, recv.clone())
            recv.close()
            async with send:
                async for refs, _pos, _last in list_objects(source, job.src.bucket, KeyFilter.from_config(config)):
                    for ref in refs:
                        await send.send(ref)
    return summary


def plan_one(job: Job, head: ObjectHead, dst: ObjectHead | None, client_side: bool) -> tuple[str, str]:
    """(source mode, action) for the plan table; client-side decisions are named without unwrapping keys."""
    cse = job.cse
    if client_side:
        if cse is None or cse.target is None:
            return Mode.CSE.value, (Action.STREAM if cse and cse.allow_decrypt else Action.REFUSE).value
        return Mode.CSE.value, "rewrap-or-skip"
    if cse is not None and cse.target is not None:
        return head.encryption.mode.value, Action.STREAM.value
    plan = plan_object(head, target=job.target, in_place=job.in_place, same_endpoint=job.same_endpoint,
                       multipart_threshold=job.multipart_threshold, dest=dst)
    return head.encryption.mode.value, plan.action.value


def plan_text(summary: PlanSummary) -> str:
    data = summary.to_json()
    lines = [f"{'source mode':<12} {'action':<16} {'objects':>9} {'bytes':>16}"]
    for row in data["plan"]:
        lines.append(f"{row['source_mode']:<12} {row['action']:<16} {row['objects']:>9} {row['bytes']:>16}")
    lines.append(f"{'total':<29} {data['objects']:>9} {data['bytes']:>16}")
    for err in data["errors"][:20]:
        lines.append(f"  cannot plan {shown(err['key'])}: {shown(err['error'])}")
    return "\n".join(lines)
