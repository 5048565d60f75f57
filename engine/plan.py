"""`rekey plan`: what a run would do and what it would cost, per source mode and action, reading S3 only.

The plan takes the objects the run would take (the listing paired with instruction files, or the
manifest; every version a versioned run would touch), learns each one as the run does
(`workers.core.learn`) and decides with the run's function (`workers.core.decide`) and the capabilities
the checkpoint has learned, so the action it shows for an object is the run's first strategy. Costs are
what that strategy sends when it succeeds: requests to S3, calls rekey itself makes to KMS (client-side
keyrings; a server-side SSE-KMS target's KMS calls are the server's), and bytes through rekey.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from engine import capabilities
from engine.checkpoint import Checkpoint
from engine.config import Config, Noncurrent
from engine.job import check_transport, make_job, open_clients
from engine.listing import DestinationIndex, KeyFilter, list_objects
from engine.manifest import manifest_pages
from engine.terminal import shown
from engine.versions import version_groups
from workers.capabilities import Capabilities, LocalCapabilities
from workers.core import copy_first
from workers.core.decide import Decision, Strategy, decide
from workers.core.learn import Learned, head_source, learn
from workers.cse import KmsKeyring, WrapAlg
from workers.errors import CheckpointError, FatalError, ObjectGoneError, RekeyError
from workers.job import Job
from workers.model import ObjectRef
from workers.parts import adjust_part_size
from workers.probes import check_bucket
from workers.versions import plan_history

Item = ObjectRef | list[ObjectRef]


@dataclass(frozen=True, slots=True)
class Cost:
    """What one object's migration sends, when its first strategy succeeds."""

    requests: int = 0
    kms_calls: int = 0
    bytes_through_rekey: int = 0

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.requests + other.requests, self.kms_calls + other.kms_calls,
                    self.bytes_through_rekey + other.bytes_through_rekey)


@dataclass(frozen=True, slots=True)
class PlannedObject:
    key: str
    version_id: str | None
    source_mode: str
    action: str
    strategies: tuple[str, ...]
    size: int
    cost: Cost


@dataclass(slots=True)
class PlanSummary:
    """Objects, bytes and costs per (source mode, action); every object's decision; what could not be planned."""

    objects: list[PlannedObject] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)

    def add(self, planned: PlannedObject) -> None:
        self.objects.append(planned)

    def rows(self) -> dict[tuple[str, str], list[int]]:
        rows: dict[tuple[str, str], list[int]] = {}
        for o in self.objects:
            slot = rows.setdefault((o.source_mode, o.action), [0, 0, 0, 0, 0])
            for i, v in enumerate((1, o.size, o.cost.bytes_through_rekey, o.cost.requests, o.cost.kms_calls)):
                slot[i] += v
        return rows

    def to_json(self) -> dict[str, Any]:
        rows = self.rows()
        keys = ("objects", "bytes", "bytes_through_rekey", "requests", "kms_calls")
        out: dict[str, Any] = {
            "plan": [{"source_mode": m, "action": a, **dict(zip(keys, v, strict=True))}
                     for (m, a), v in sorted(rows.items())],
        }
        for i, name in enumerate(keys):
            out[name] = sum(v[i] for v in rows.values())
        out["decisions"] = [{"key": o.key, "version_id": o.version_id, "source_mode": o.source_mode,
                             "action": o.action, "strategies": list(o.strategies), "bytes": o.size}
                            for o in sorted(self.objects, key=lambda o: (o.key, o.version_id or ""))]
        out["errors"] = [{"key": k, "error": e} for k, e in self.errors]
        return out


def learned_capabilities(config: Config) -> Capabilities:
    """What the checkpoint of this config has learned about the endpoint (nothing if there is none)."""
    try:
        cp = Checkpoint.open(config.run.checkpoint, fingerprint=config.fingerprint(), description="", create=False,
                             read_only=True)
    except CheckpointError:
        return Capabilities()
    try:
        return capabilities.load(cp)
    finally:
        cp.close()


async def plan_run(config: Config) -> PlanSummary:
    check_transport(config)
    summary = PlanSummary()
    async with open_clients(config) as (source, dest, kms):
        job = make_job(config, source, dest, None, kms, LocalCapabilities(learned_capabilities(config)))
        await check_bucket(source, job.src.bucket, "source")
        planner = Planner(config, job, summary)

        async def worker(recv: MemoryObjectReceiveStream[Item]) -> None:
            async with recv:
                async for item in recv:
                    await planner.one(item)

        send, recv = anyio.create_memory_object_stream[Item](config.run.concurrency)
        async with anyio.create_task_group() as tg:
            for _ in range(config.run.concurrency):
                tg.start_soon(worker, recv.clone())
            recv.close()
            async with send:
                async for item in planner.items():
                    await send.send(item)
    return summary


class Planner:
    """Plans objects as the run would take them."""

    def __init__(self, config: Config, job: Job, summary: PlanSummary) -> None:
        self.config = config
        self.job = job
        self.summary = summary
        self.key_filter = KeyFilter.from_config(config)
        self.versioned = (config.run.noncurrent != Noncurrent.KEEP and not config.source.manifest
                          and job.in_place)

    async def items(self) -> AsyncIterator[Item]:
        job = self.job
        if self.versioned:
            async for groups, _pos, _last in version_groups(job.source, job.src.bucket, self.key_filter):
                for group in groups:
                    yield group
            return
        index = None
        if not job.in_place:
            index = DestinationIndex(job.dest, job.dst.bucket, job.src.prefix, job.dst.prefix)
        pages = (manifest_pages(self.config.source.manifest, self.key_filter, bucket=job.src.bucket)
                 if self.config.source.manifest else list_objects(job.source, job.src.bucket, self.key_filter))
        async for refs, _pos, _last in pages:
            for ref in await index.annotate(refs) if index is not None else refs:
                yield ref

    async def one(self, item: Item) -> None:
        refs = item if isinstance(item, list) else [item]
        try:
            if isinstance(item, list):
                await self._versions(item)
            else:
                await self._object(item)
        except FatalError:
            raise
        except RekeyError as exc:
            for ref in refs:
                self.summary.errors.append((ref.key, str(exc)))

    async def _object(self, ref: ObjectRef) -> None:
        job = self.job
        if copy_first.applies(job, ref):
            self._add(ref, "unknown", Decision((Strategy.COPY,), "copied before it is read"), ref.size,
                      Cost(requests=2))
            return
        try:
            head = await head_source(job, ref)
        except ObjectGoneError as exc:
            if not self.config.source.manifest:
                return   # deleted since the listing: the run would skip it too
            self.summary.errors.append((ref.key, f"{exc.where()}: listed in the manifest but does not exist"))
            return
        learned = await learn(job, ref, head)
        if learned.instruction_file_of_another:
            return   # travels with its object
        decision = decide(learned.state, job.policy.decide_target, job.route.kind, job.caps.current)
        self._add(ref, learned.state.mode.value, decision, head.size,
                  price(job, learned, decision.first, head.size))

    async def _versions(self, group: list[ObjectRef]) -> None:
        """Every version a versioned run would touch: with reencrypt/delete, the history it re-creates."""
        job = self.job
        noncurrent = self.config.run.noncurrent
        stack = [(ref, await head_source(job, ref)) for ref in group]
        todo, made = plan_history(stack, job)
        recreate = {r.version_id for r, _ in todo if r.version_id not in made}
        if noncurrent in (Noncurrent.REPORT, Noncurrent.KEEP) or not any(r.is_latest for r in group):
            current = next((r for r in reversed(group) if r.is_latest), None)
            if current is not None:
                await self._object(current)
            return
        action = "recreate-delete" if noncurrent == Noncurrent.DELETE else "recreate"
        for ref, head in stack:
            if ref.version_id in recreate:
                cost = Cost(requests=3)   # CopyObject guarded twice, then HEAD of the new version
                self.summary.add(PlannedObject(ref.key, ref.version_id, head.encryption.mode.value, action,
                                               (action,), head.size, cost))
            else:
                self.summary.add(PlannedObject(ref.key, ref.version_id, head.encryption.mode.value, "skip",
                                               ("skip",), head.size, Cost(requests=1)))

    def _add(self, ref: ObjectRef, mode: str, decision: Decision, size: int, cost: Cost) -> None:
        self.summary.add(PlannedObject(ref.key, ref.version_id, mode, decision.action.value,
                                       tuple(s.value for s in decision.strategies), size, cost))


def price(job: Job, learned: Learned, strategy: Strategy, size: int) -> Cost:
    """Requests, KMS calls and bytes through rekey of one object by `strategy` (learning included)."""
    env = learned.envelope
    learning = Cost(requests=1 + (env is not None and env.from_instruction_file)
                    + (learned.state.dest is not None or (not job.in_place and learned.state.client_side is None)),
                    kms_calls=_kms_unwraps(env) if job.cse and job.cse.target else 0)
    verify = 1 if job.verify else 0
    parts = max(1, math.ceil(size / adjust_part_size(max(size, 1), job.part_size)))
    written: dict[Strategy, Cost] = {
        Strategy.SKIP: Cost(), Strategy.REFUSE: Cost(),
        Strategy.UPDATE: Cost(requests=1 + 1),
        Strategy.COPY: Cost(requests=1 + verify),
        Strategy.MULTIPART_COPY: Cost(requests=1 + 2 + parts + verify),   # tags, create, parts, complete
    }
    if strategy in written:
        return learning + written[strategy]
    return learning + _through_rekey(job, learned, strategy, size, parts, verify)


def _through_rekey(job: Job, learned: Learned, strategy: Strategy, size: int, parts: int, verify: int) -> Cost:
    env = learned.envelope
    cse = job.cse
    file_out = bool(cse and cse.target and cse.instruction_file)
    one_put = size <= (job.policy.single_put_max if strategy == Strategy.STREAM else job.policy.cse_single_put_max)
    writes = 2 if one_put else 2 + parts          # PUT, or create + parts + complete
    reads = 1 + (1 if one_put else parts)         # tags + ranged GETs
    kms_wrap = 2 if cse is not None and isinstance(cse.target, KmsKeyring) else 0   # wrap, then unwrap check
    verify_cse = verify * (1 + file_out)
    if strategy == Strategy.STREAM:
        return Cost(requests=reads + writes - 1 + verify, bytes_through_rekey=2 * size)
    if strategy == Strategy.CSE_ENCRYPT:
        # The written envelope's data key was unwrapped before the write: verifying it needs no KMS call.
        return Cost(requests=reads + writes - 1 + file_out + verify_cse, kms_calls=kms_wrap,
                    bytes_through_rekey=2 * size)
    unwrap = _kms_unwraps(env)
    if strategy == Strategy.CSE_DECRYPT:
        return Cost(requests=reads + writes - 1 + verify, kms_calls=unwrap, bytes_through_rekey=2 * size)
    if strategy == Strategy.CSE_REENCRYPT:
        return Cost(requests=reads + writes - 1 + file_out + verify_cse,
                    kms_calls=unwrap + kms_wrap, bytes_through_rekey=2 * size)
    # REWRAP / CSE_COPY: a new wrapping of the data key and a metadata copy; the data is not read.
    return Cost(requests=file_out + 1 + verify_cse, kms_calls=unwrap + kms_wrap // 2 + verify * (kms_wrap // 2))


def _kms_unwraps(env: Any) -> int:
    return 1 if env is not None and env.wrap_alg in (WrapAlg.KMS_CONTEXT, WrapAlg.KMS) else 0


def plan_text(summary: PlanSummary) -> str:
    data = summary.to_json()
    lines = [f"{'source mode':<12} {'action':<16} {'objects':>9} {'bytes':>16} {'through rekey':>16} "
             f"{'requests':>10} {'kms calls':>10}"]
    for r in data["plan"]:
        lines.append(f"{r['source_mode']:<12} {r['action']:<16} {r['objects']:>9} {r['bytes']:>16} "
                     f"{r['bytes_through_rekey']:>16} {r['requests']:>10} {r['kms_calls']:>10}")
    lines.append(f"{'total':<29} {data['objects']:>9} {data['bytes']:>16} {data['bytes_through_rekey']:>16} "
                 f"{data['requests']:>10} {data['kms_calls']:>10}")
    for err in data["errors"][:20]:
        lines.append(f"  cannot plan {shown(err['key'])}: {shown(err['error'])}")
    return "\n".join(lines)
