"""One run: preflight, then lister -> bounded stream -> N workers -> result stream -> one checkpoint writer."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from engine.capabilities import CapabilityStore
from engine.checkpoint import open_checkpoint
from engine.completion import CompletionReport
from engine.config import Config, Noncurrent
from engine.executor import Batch, Executor, ExecutorStats, Finished, Item
from engine.executor import process_one as process_one  # re-exported: the per-object entry point
from engine.job import check_transport, make_executor, make_job, open_clients
from engine.journal import AsyncCheckpoint
from engine.listing import DestinationIndex, KeyFilter, list_objects
from engine.manifest import data_file_pages, data_files, manifest_pages
from engine.preflight import check_buckets, preflight, probe_tags_beside
from engine.progress import Progress
from engine.ranges import Listed, file_ranges, key_range_pages, learn_ranges, list_ranges
from engine.retry import Retrier, Throttle
from engine.versions import key_versions, version_groups
from workers import timeline
from workers.errors import ConfigError, first_fatal
from workers.job import Job, UploadResume
from workers.model import KeyRange, ObjectRef, Outcome, State

FLUSH_EVERY = 64        # outcomes per checkpoint transaction
FLUSH_SECONDS = 0.5
log = logging.getLogger("rekey.pipeline")


@dataclass(slots=True)
class RunResult:
    """What a run did, for the summary, the report and the exit code."""

    exit_code: int
    counts: dict[str, int] = field(default_factory=dict)
    elapsed: float = 0.0
    requests: int = 0
    requests_by_transport: dict[str, int] = field(default_factory=dict)   # "fast", "botocore"
    throttles: int = 0
    retries: int = 0
    min_window: int = 0
    interrupted: bool = False   # a stop (SIGINT/SIGTERM) came: in-flight objects were settled, others left
    objects_done: int = 0       # outcomes this run recorded (every state)
    bytes_done: int = 0         # their bytes
    fatal: str | None = None
    capabilities: dict[str, bool] = field(default_factory=dict)
    executor: ExecutorStats = field(default_factory=lambda: ExecutorStats("local", 1))
    read_back: dict[str, int] = field(default_factory=dict)   # readback_<path>: objects read back right here
    timeline: dict[str, float] = field(default_factory=dict)  # milestone -> seconds since the process began


class Run:
    """The task graph of one run."""

    def __init__(self, config: Config, job: Job, acp: AsyncCheckpoint, executor: Executor,
                 progress: Progress, *, completion: CompletionReport | None = None,
                 stop: anyio.Event | None = None) -> None:
        self.executor = executor
        self.completion = completion
        self.stop = stop or anyio.Event()   # set: take no more objects; those in flight finish and are recorded
        self.versioned = (config.run.noncurrent != Noncurrent.KEEP and not config.source.manifest
                          and job.in_place)
        self.config = config
        self.job = job
        self.acp = acp
        self.progress = progress
        self.key_filter = KeyFilter.from_config(config)
        self.had_uploads: set[tuple[str, str]] = set()
        self.objects_done = 0
        self.bytes_done = 0

    def _pages(self, position: str) -> AsyncIterator[tuple[list[ObjectRef], str, bool]]:
        if self.config.source.manifest:
            return manifest_pages(self.config.source.manifest, self.key_filter, bucket=self.job.src.bucket,
                                  start_after=position)
        return list_objects(self.job.source, self.job.src.bucket, self.key_filter, start_after=position)

    async def produce(self, send: MemoryObjectSendStream[Item]) -> None:
        cp = self.acp.sync
        self.had_uploads = await self.acp.run(cp.upload_keys)
        async with send:
            await self._resend_unfinished(send)
            position, done = await self.acp.run(cp.listing_position)
            if done:
                position = ""  # a new pass: picks up new or changed objects; done ones cost nothing
            if self.versioned:
                await self._list_versions(send, position)
            elif self.config.source.manifest:
                await self._list_manifest(send, position, new_pass=done)
            else:
                await self._list_in_ranges(send, position, new_pass=done)
            self.progress.listing_done()

    async def _list_versions(self, send: MemoryObjectSendStream[Item], position: str) -> None:
        cp = self.acp.sync
        async for groups, pos, last in version_groups(self.job.source, self.job.src.bucket,
                                                      self.key_filter, start_after=position):
            flat = [r for g in groups for r in g]
            todo = await self.acp.run(lambda r=flat, p=pos, d=last: cp.add_listed(r, position=p, done=d))
            keys = {r.key for r in todo}
            keys -= await self.acp.run(cp.queued_keys, keys)
            for group in groups:
                if group[0].key in keys:
                    self.progress.discovered(len(group), sum(r.size for r in group))
                    await send.send(group)

    def _index(self, position: str) -> DestinationIndex | None:
        """Bucket to bucket: the destination listing merged with the source's (one per range)."""
        if self.job.in_place:
            return None
        return DestinationIndex(self.job.dest, self.job.dst.bucket, self.job.src.prefix, self.job.dst.prefix,
                                start_after=position)

    async def _send_todo(self, send: MemoryObjectSendStream[Item], todo: list[ObjectRef],
                         index: DestinationIndex | None) -> None:
        if index is not None:
            todo = await index.annotate(todo)
        for ref in todo:
            self.progress.discovered(1, ref.size)
            await send.send(ref)

    async def _list_pages(self, send: MemoryObjectSendStream[Item], position: str) -> None:
        cp = self.acp.sync
        index = self._index(position)
        async for refs, pos, last in self._pages(position):
            todo = await self.acp.run(lambda r=refs, p=pos, d=last: cp.add_listed(r, position=p, done=d))
            await self._send_todo(send, todo, index)

    async def _list_in_ranges(self, send: MemoryObjectSendStream[Item], position: str, *, new_pass: bool) -> None:
        """The bucket listed in key ranges at once (engine/ranges.py), each resuming from its own position."""
        cp = self.acp.sync
        ranges = await self.acp.run(cp.key_ranges)
        listed = Listed()   # the pages learn_ranges lists, handed out again rather than listed twice
        first: DestinationIndex | None = None
        if not ranges or new_pass:
            if ranges and new_pass:   # the same ranges again, from their start
                ranges = [KeyRange(r.lo, r.hi, r.lo) for r in ranges]
            elif position:            # an earlier version's listing, stopped at `position`: go on from there
                ranges = [KeyRange("", None, position)]
            else:
                ranges, first = await self._learn_ranges(listed)
            await self.acp.run(cp.set_key_ranges, ranges)
        source, bucket = self.job.source, self.job.src.bucket
        await self._list_ranges(send, ranges, lambda r: key_range_pages(source, bucket, self.key_filter, r, listed),
                                first)

    async def _learn_ranges(self, listed: Listed) -> tuple[list[KeyRange], DestinationIndex | None]:
        """A first listing's key ranges, with the destination's first page fetched meanwhile (for the range
        that starts the bucket)."""
        first = self._index("")
        async with anyio.create_task_group() as tg:
            if first is not None:
                tg.start_soon(first.prefetch)
            ranges = await learn_ranges(self.job.source, self.job.src.bucket, self.key_filter.prefix, listed)
        return ranges, first

    async def _list_manifest(self, send: MemoryObjectSendStream[Item], position: str, *, new_pass: bool) -> None:
        """A manifest.json of several data files: one range per file, listed at once; else in one sequence."""
        manifest = self.config.source.manifest
        assert manifest is not None
        files = await anyio.to_thread.run_sync(data_files, manifest)
        cp = self.acp.sync
        ranges = await self.acp.run(cp.key_ranges)
        if len(files) < 2 or (position and not ranges):   # one file, or an earlier version's single sequence
            await self._list_pages(send, position)
            return
        if not ranges or new_pass:
            ranges = file_ranges(files)
            await self.acp.run(cp.set_key_ranges, ranges)
        by_range = dict(zip((r.lo for r in file_ranges(files)), files, strict=True))
        await self._list_ranges(send, ranges, lambda r: data_file_pages(
            manifest, by_range[r.lo], self.key_filter, bucket=self.job.src.bucket, start_after=r.position))

    async def _list_ranges(self, send: MemoryObjectSendStream[Item], ranges: list[KeyRange],
                           pages_of: Callable[[KeyRange], AsyncIterator[tuple[list[ObjectRef], str, bool]]],
                           first: DestinationIndex | None = None) -> None:
        """`first`: the destination index of the range that starts the bucket from its start, if made already."""
        cp = self.acp.sync
        indexes = {r.lo: first if first is not None and not r.lo and not r.position else self._index(r.position)
                   for r in ranges if not r.done}

        async def on_page(key_range: KeyRange, refs: list[ObjectRef], pos: str, last: bool) -> None:
            todo = await self.acp.run(lambda: cp.add_listed(refs, position=pos, done=last, key_range=key_range))
            await self._send_todo(send, todo, indexes[key_range.lo])

        async def on_start(key_range: KeyRange) -> None:
            index = indexes[key_range.lo]
            if index is not None:
                await index.prefetch()

        await list_ranges(ranges, pages_of, on_page, on_start)

    async def _resend_unfinished(self, send: MemoryObjectSendStream[Item]) -> None:
        """Objects an earlier run listed and did not finish, page by page (marked queued in the checkpoint,
        so the listing that follows skips them): nothing per object is kept here."""
        cp = self.acp.sync
        after: tuple[str, str, str] | None = None
        while True:
            rows = await self.acp.run(lambda a=after: cp.take_unfinished(a, by_key=self.versioned))
            if not rows:
                return
            after = (rows[-1].state.value, rows[-1].key, rows[-1].version_id)
            if not self.versioned:
                for row in rows:
                    self.progress.discovered(1, row.size)
                    await send.send(row.ref())
                continue
            for key in dict.fromkeys(row.key for row in rows):  # a key left unfinished is done again whole
                group = await key_versions(self.job.source, self.job.src.bucket, key)
                if group:
                    self.progress.discovered(len(group), sum(r.size for r in group))
                    await send.send(group)

    async def work(self, recv: MemoryObjectReceiveStream[Item],
                   out: MemoryObjectSendStream[Finished]) -> None:
        """One lane: take up to a batch of items as they come, hand them to the executor, pass the
        outcomes on to the writer."""
        async with recv, out:
            async for first in recv:
                if self.stop.is_set():
                    break   # what is left in the stream stays pending in the checkpoint
                items = [first]
                while len(items) < self.executor.batch_size:
                    try:
                        items.append(recv.receive_nowait())
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                batch = Batch(items, await self._resumes(items), self.job.caps.current.to_flags())
                await out.send(await self.executor.migrate_batch(batch))

    async def _resumes(self, items: list[Item]) -> dict[tuple[str, str], UploadResume]:
        """The uploads the checkpoint holds for these objects: all of them when the executor can lose work
        mid-run (an actor's uploads), else only those known at the start of the run."""
        refs = [i for i in items if not isinstance(i, list)]
        if not self.executor.looks_up_resumes:
            refs = [r for r in refs if (r.key, r.version_id or "") in self.had_uploads]
        if not refs:
            return {}
        found: dict[tuple[str, str], UploadResume] = {}
        for ref in refs:
            point = await self.acp.resume_point(ref)
            if point is not None:
                found[(ref.key, ref.version_id or "")] = point
        return found

    async def write(self, recv: MemoryObjectReceiveStream[Finished]) -> None:
        """The checkpoint's one writer: outcomes in transactions of up to FLUSH_EVERY, then the
        completion report (so it never holds more than the checkpoint)."""
        cp = self.acp.sync
        batch: list[Outcome] = []
        actors: list[str] = []
        last = time.monotonic()

        async def flush() -> None:
            await self.acp.run(cp.record_outcomes, batch, actors)
            if self.completion is not None:
                self.completion.write(batch, actors)

        async with recv:
            async for finished in recv:
                for outcome in finished.outcomes:
                    batch.append(outcome)
                    actors.append(finished.actor)
                    self.progress.finished(outcome)
                    self.objects_done += 1
                    self.bytes_done += outcome.size or 0
                if finished.outcomes:
                    timeline.mark("first_object")
                    timeline.mark_latest("last_object")
                if len(batch) >= FLUSH_EVERY or time.monotonic() - last > FLUSH_SECONDS:
                    await flush()
                    batch, actors, last = [], [], time.monotonic()
            if batch:
                await flush()

    async def run(self, before_work: Callable[[], Awaitable[None]] | None = None,
                  beside_work: Callable[[], Coroutine[Any, Any, None]] | None = None) -> None:
        """Listing starts at once; the workers, which write, only once `before_work` (the preflight
        probes) has passed. Its error cancels the listing. `beside_work` starts with the workers."""
        lanes = self.executor.lanes
        send, recv = anyio.create_memory_object_stream[Item](max(self.config.run.concurrency,
                                                                  lanes * self.executor.batch_size))
        out_send, out_recv = anyio.create_memory_object_stream[Finished](lanes * 4)
        async with anyio.create_task_group() as tg:
            lister, watcher = anyio.CancelScope(), anyio.CancelScope()
            tg.start_soon(self._list_until_stopped, lister, send)
            tg.start_soon(self._on_stop, lister, watcher)
            if before_work is not None:
                await before_work()
            if beside_work is not None:
                tg.start_soon(beside_work)
            for _ in range(lanes):
                tg.start_soon(self.work, recv.clone(), out_send.clone())
            recv.close()
            out_send.close()
            tg.start_soon(self._write_then_unwatch, out_recv, watcher)

    async def _list_until_stopped(self, scope: anyio.CancelScope, send: MemoryObjectSendStream[Item]) -> None:
        with scope:
            try:
                await self.produce(send)
            except anyio.BrokenResourceError:
                if not self.stop.is_set():
                    raise   # every worker left because of the stop: the rest stays pending

    async def _on_stop(self, lister: anyio.CancelScope, watcher: anyio.CancelScope) -> None:
        with watcher:
            await self.stop.wait()
            lister.cancel()

    async def _write_then_unwatch(self, recv: MemoryObjectReceiveStream[Finished],
                                  watcher: anyio.CancelScope) -> None:
        await self.write(recv)
        watcher.cancel()   # every outcome is recorded: nothing is left to stop


async def run_migration(config: Config, progress: Progress, *, confirm_delete_noncurrent: bool = False,
                        stop: anyio.Event | None = None, completion_report: str | None = None) -> RunResult:
    """Run or resume a migration. Fatal errors are raised; per-object errors end up in the checkpoint."""
    check_transport(config)
    if config.run.noncurrent == Noncurrent.DELETE and not confirm_delete_noncurrent:
        raise ConfigError('run.noncurrent: "delete" deletes old versions once their re-encrypted copies are '
                          "verified: run again with --confirm-delete-noncurrent")
    started = time.monotonic()
    cp = await anyio.to_thread.run_sync(open_checkpoint, config)
    acp = AsyncCheckpoint(cp, on_part=progress.part_done)
    run_id = await acp.run(cp.begin_run)
    throttle = Throttle(config.run.concurrency, max_rps=config.run.max_requests_per_second)
    retrier = Retrier(throttle, max_retries=config.run.max_retries)
    result = RunResult(exit_code=0)
    completion = CompletionReport(completion_report, config.destination.location.bucket) \
        if completion_report else None
    store = CapabilityStore(acp)
    flow: Run | None = None
    try:
        if completion is not None:
            completion.open()
        async with open_clients(config, retrier) as (source, dest, kms):
            job = make_job(config, source, dest, acp, kms, store)
            executor = make_executor(config, job, throttle, confirm_delete_noncurrent=confirm_delete_noncurrent)
            try:
                await check_buckets(job)
                async with executor.session():
                    flow = Run(config, job, acp, executor, progress, completion=completion, stop=stop)
                    await flow.run(lambda: preflight(config, job), lambda: probe_tags_beside(config, job))
            except BaseException as exc:
                fatal = first_fatal(exc)
                if fatal is not None:
                    raise fatal from None
                raise
            finally:
                clients = [source] if dest is source else [source, dest]
                result.requests = sum(c.requests for c in clients)
                result.executor = executor.statistics()
                result.requests += result.executor.requests
                # this process's clients and the Ray actors' (a local executor's are this process's)
                result.requests_by_transport = {
                    name: sum(c.requests_by_transport[name] for c in clients)
                    + result.executor.requests_by_transport.get(name, 0) for name in ("fast", "botocore")}
                # Objects read back per path by this process's workers (Ray actors keep their own counts;
                # the verdicts reach the capabilities either way).
                result.read_back = {k: v for k, v in job.calibration.items() if k.startswith("readback_")}
                if flow is not None:
                    result.objects_done, result.bytes_done = flow.objects_done, flow.bytes_done
    finally:
        progress.close()
        if completion is not None:
            completion.close()
        counts = await acp.run(cp.counts)
        result.counts = {k: v["objects"] for k, v in counts.items()}
        result.elapsed = time.monotonic() - started
        timeline.mark("done")
        result.timeline = timeline.since_start()
        stats = throttle.statistics()
        result.throttles, result.retries, result.min_window = stats.throttles, stats.retries, stats.min_window
        result.capabilities = store.flags
        todo = sum(result.counts.get(s.value, 0) for s in (State.FAILED, State.CHANGED, State.PENDING,
                                                             State.IN_PROGRESS))
        result.exit_code = 1 if todo else 0
        result.interrupted = stop is not None and stop.is_set()
        summary: dict[str, Any] = {"counts": result.counts, "requests": result.requests,
                                   "elapsed": round(result.elapsed, 3)}
        await acp.run(cp.end_run, run_id, result.exit_code, summary)
        await acp.run(cp.close)
    return result
