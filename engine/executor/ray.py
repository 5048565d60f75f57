"""The Ray executor: batches run on async Ray actors across a cluster; the driver keeps everything durable.

    driver (rekey run)                                 actor i (one per CPU by default, spread over nodes)
      listing, batches, checkpoint (its one writer)      parses the config text itself, loads the key
      migrate_batch(batch) -> actor.migrate_batch   ->   files named in it on its own node, opens its own
                                                          clients; `[run] concurrency` objects at once
      journal pump: relay.take -> checkpoint -> ack  <-  upload ids, parts, capabilities: sent through
                                                          the relay and acknowledged before the request
                                                          they guard is sent

An actor that is lost (its process or node died) loses only what the checkpoint can rebuild: its batch is
handed to another actor with the uploads the checkpoint now holds for it, so an upload it left is
continued or aborted exactly as after a local SIGKILL. Likewise an envelope waiting for its instruction file
(a killed run's, or a lost actor's) goes out with the batch of its object, and the actor puts the file as a
local run does (workers.core.pending). Nothing is recorded done that an actor did not hand back. Key
material never travels as a task argument: the actors read the key files themselves (an envelope holds
only wrapped data keys).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import anyio
import ray
from ray.exceptions import RayActorError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from engine.config import Config
from engine.executor.base import Batch, ExecutorStats, Finished, Item, ResumeKey
from engine.executor.items import ItemContext, WorkerContext
from workers import errors as rekey_errors
from workers.capabilities import Capabilities, Fact, parse_fact
from workers.errors import FatalError, first_fatal
from workers.job import UploadResume
from workers.model import Mode, ObjectRef, Outcome, PartResult, PendingEnvelope

log = logging.getLogger("rekey.ray")
# engine.job.worker_context, handed in by the driver (and pickled by reference to the actors)
OpenWorker = Callable[..., contextlib.AbstractAsyncContextManager[WorkerContext]]
BATCHES_PER_ACTOR = 2       # one running, one queued behind it: an actor never waits for the driver
JOURNAL_POLL_SECONDS = 0.5
ACTOR_START_SECONDS = 300   # actors that cannot all be placed by then (too few free CPUs) stop the run


class ActorsLostError(FatalError):
    """Every actor of the run is gone."""


@runtime_checkable
class EnvelopeIndex(Protocol):
    """The driver's ObjectJournal (the checkpoint) lists the envelopes waiting for their instruction file."""

    async def pending_envelope_keys(self) -> list[ResumeKey]: ...


# --- the relay: journal events from actors to the driver, each acknowledged once written ----------------


@ray.remote(num_cpus=0)
class JournalRelay:
    """Holds each event until the driver has written it to the checkpoint, then releases its sender."""

    def __init__(self) -> None:
        self._events: list[tuple[int, str, tuple[Any, ...]]] = []
        self._waiting: dict[int, asyncio.Future[None]] = {}
        self._wake = asyncio.Event()
        self._next = 0

    async def put(self, actor: str, event: tuple[Any, ...]) -> None:
        self._next += 1
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[self._next] = done
        self._events.append((self._next, actor, event))
        self._wake.set()
        await done

    async def take(self, wait_seconds: float) -> list[tuple[int, str, tuple[Any, ...]]]:
        if not self._events:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait_seconds)
        events, self._events = self._events, []
        self._wake.clear()
        return events

    def ack(self, ids: Sequence[int]) -> None:
        for i in ids:
            done = self._waiting.pop(i, None)
            if done is not None and not done.done():
                done.set_result(None)


# --- the actor -------------------------------------------------------------------------------------------


class ActorHooks:
    """The actor's PartJournal and Capabilities: every write goes to the driver through the relay and is
    acknowledged before the worker goes on; reads come from what the driver handed out with the batches."""

    def __init__(self, relay: Any, name: str) -> None:
        self._relay = relay
        self._name = name
        self._resumes: dict[ResumeKey, UploadResume] = {}
        self._envelopes: dict[ResumeKey, PendingEnvelope] = {}
        self._caps = Capabilities()

    def take_batch(self, resumes: Mapping[ResumeKey, UploadResume], caps: Mapping[str, bool],
                   envelopes: Mapping[ResumeKey, PendingEnvelope]) -> None:
        self._resumes.update(resumes)
        self._envelopes.update(envelopes)
        self._caps = Capabilities.from_flags({**self._caps.to_flags(), **caps})

    async def _send(self, *event: Any) -> None:
        await self._relay.put.remote(self._name, event)

    async def upload_started(self, ref: ObjectRef, *, upload_id: str, dest_bucket: str, dest_key: str,
                             part_size: int, source_etag: str, kind: str) -> None:
        await self._send("upload_started", ref, upload_id, dest_bucket, dest_key, part_size, source_etag, kind)
        self._resumes[(ref.key, ref.version_id or "")] = UploadResume(
            upload_id, part_size, source_etag, kind, [], dest_bucket, dest_key, time.time())

    async def parts_done(self, upload_id: str, parts: Sequence[PartResult]) -> None:
        await self._send("parts_done", upload_id, list(parts))

    async def upload_ended(self, ref: ObjectRef, upload_id: str, etag: str | None = None) -> None:
        await self._send("upload_ended", ref, upload_id, etag)
        key = (ref.key, ref.version_id or "")
        if key in self._resumes and self._resumes[key].upload_id == upload_id:
            del self._resumes[key]

    async def resume_point(self, ref: ObjectRef) -> UploadResume | None:
        return self._resumes.get((ref.key, ref.version_id or ""))

    # --- CapabilityHook: the record the driver handed out, facts sent to the driver's store ---------

    @property
    def current(self) -> Capabilities:
        return self._caps

    async def learn(self, fact: Fact) -> None:
        if self._caps.knows(fact):
            return
        self._caps = self._caps.learned(fact)
        await self._send("learn", fact.name, fact.value)

    # --- ObjectJournal: writes go to the driver's checkpoint ------------------------------------------

    async def source_seen(self, ref: ObjectRef, mode: Mode) -> None:
        await self._send("source_seen", ref, mode)

    async def envelope_pending(self, ref: ObjectRef, *, dest_key: str, old_etag: str,
                               instruction: Mapping[str, str]) -> None:
        await self._send("envelope_pending", ref, dest_key, old_etag, dict(instruction))

    async def envelope_written(self, ref: ObjectRef) -> None:
        await self._send("envelope_written", ref)
        self._envelopes.pop((ref.key, ref.version_id or ""), None)

    async def pending_envelope(self, ref: ObjectRef) -> PendingEnvelope | None:
        return self._envelopes.get((ref.key, ref.version_id or ""))

    async def written(self, ref: ObjectRef, etag: str) -> None:
        await self._send("written", ref, etag)


@dataclass(frozen=True, slots=True)
class ActorAnswer:
    """What an actor hands back for one batch."""

    outcomes: Sequence[Outcome] = ()
    requests: int = 0                       # requests this actor has sent so far
    fatal: tuple[str, str] | None = None    # (error class name, one-line message): the run must stop
    by_transport: Mapping[str, int] = field(default_factory=dict)   # of those requests, per transport


@ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0)
class MigrationActor:
    """Runs the per-object migration for the driver's batches, `[run] concurrency` objects at once."""

    def __init__(self, config_text: str, base: str, path: str, name: str, relay: Any,
                 open_worker: OpenWorker, confirm_delete_noncurrent: bool) -> None:
        self.name = name
        self._text, self._base, self._path = config_text, base, path
        self._open_worker = open_worker
        self._confirm = confirm_delete_noncurrent
        self._worker: WorkerContext | None = None
        self._stack = contextlib.AsyncExitStack()
        self._hooks = ActorHooks(relay, name)
        self._opening = asyncio.Lock()

    async def _context(self) -> WorkerContext:
        async with self._opening:
            if self._worker is None:
                import tomllib

                from engine.config import parse_config
                from engine.logs import configure_logging
                configure_logging(verbose=False)   # botocore never logs (its DEBUG has SSE-C headers)
                # Key files are read here, on this node: key material is never a task argument.
                config = parse_config(tomllib.loads(self._text), base=Path(self._base), path=self._path)
                self._worker = await self._stack.enter_async_context(self._open_worker(
                    config, self._hooks, self._hooks, confirm_delete_noncurrent=self._confirm, objects=self._hooks))
        return self._worker

    def node(self) -> str:
        return str(ray.get_runtime_context().get_node_id())

    async def migrate_batch(self, items: Sequence[Item], resumes: Mapping[ResumeKey, UploadResume],
                            caps: Mapping[str, bool], envelopes: Mapping[ResumeKey, PendingEnvelope]) -> ActorAnswer:
        from engine.executor.items import migrate_item
        try:
            worker = await self._context()
            ctx, throttle = worker.items, worker.throttle
            self._hooks.take_batch(resumes, caps, envelopes)
            results: list[list[Outcome]] = [[] for _ in items]

            async def one(i: int, item: Item) -> None:
                await throttle.acquire()
                try:
                    had = not isinstance(item, list) and (item.key, item.version_id or "") in resumes
                    results[i] = await migrate_item(ctx, item, had_upload=had)
                finally:
                    await throttle.release()

            async with anyio.create_task_group() as tg:
                for i, item in enumerate(items):
                    tg.start_soon(one, i, item)
        except BaseException as exc:  # a fatal error stops the run: handed back as words, never a traceback
            fatal = first_fatal(exc)
            if fatal is None:
                raise
            return ActorAnswer(fatal=(type(fatal).__name__, str(fatal)))
        return ActorAnswer([o for r in results for o in r], worker.requests,
                           by_transport=worker.requests_by_transport)


def _raise_fatal(name: str, message: str) -> None:
    cls = getattr(rekey_errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, FatalError)):
        cls = FatalError
    raise cls(message)


# --- the driver's side -------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Actor:
    handle: Any
    name: str
    in_flight: int = 0
    lost: bool = False
    requests: int = 0
    by_transport: dict[str, int] = field(default_factory=dict)


class RayExecutor:
    """Batches of `[run] concurrency` objects, BATCHES_PER_ACTOR of them per actor at once."""

    kind = "ray"
    looks_up_resumes = True

    def __init__(self, config: Config, ctx: ItemContext, *, open_worker: OpenWorker) -> None:
        self._config = config
        self._ctx = ctx
        self._open_worker = open_worker
        self._actors: list[_Actor] = []
        self._relay: Any = None
        self.batch_size = max(1, config.run.concurrency)
        self.lanes = 1
        self.lost = 0
        self.retried = 0
        self.carried = 0
        self._started_ray = False
        # (key, version id) of envelopes waiting for their instruction file: a killed run's, and those the
        # actors journal (dropped once written). Only these objects' batches look in the checkpoint.
        self._pending: set[ResumeKey] = set()

    # --- session ----------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[None]:
        try:
            self._start()   # blocks the loop for Ray's start-up, before anything else of the run is going
            objects = self._ctx.job.hooks.objects
            if isinstance(objects, EnvelopeIndex):
                self._pending = set(await objects.pending_envelope_keys())
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._pump)
                try:
                    yield
                finally:
                    tg.cancel_scope.cancel()
        finally:
            self._stop()

    def session(self) -> contextlib.AbstractAsyncContextManager[None]:
        return self._session()

    def _start(self) -> None:
        settings = self._config.ray
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"namespace": "rekey", "log_to_driver": False, "logging_level": logging.ERROR,
                                      "configure_logging": False}
            if settings.address is None:   # a new local Ray on this machine, never one found lying around
                kwargs["include_dashboard"] = False
            try:
                ray.init(address=settings.address or "local", **kwargs)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise rekey_errors.EndpointError(
                    f"ray.address: cannot connect to Ray at {settings.address or 'a new local instance'}: "
                    f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
            self._started_ray = True
        count = settings.actors or max(1, int(ray.cluster_resources().get("CPU", 1)))
        here = ray.get_runtime_context().get_node_id()
        self._relay = JournalRelay.options(  # type: ignore[attr-defined]
            scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False)).remote()
        base = str(Path(self._config.path).resolve().parent) if self._config.path else str(Path.cwd())
        for i in range(count):
            name = f"actor-{i}"
            handle = MigrationActor.options(  # type: ignore[attr-defined]
                scheduling_strategy="SPREAD", name=None).remote(
                self._config.text, base, self._config.path, name, self._relay, self._open_worker,
                self._ctx.confirm_delete_noncurrent)
            self._actors.append(_Actor(handle, name))
        try:
            nodes = ray.get([a.handle.node.remote() for a in self._actors], timeout=ACTOR_START_SECONDS)
        except ray.exceptions.GetTimeoutError:
            free = ray.available_resources().get("CPU", 0)
            raise ActorsLostError(f"ray.actors: {count} actors of one CPU each did not all start within "
                                  f"{ACTOR_START_SECONDS} s ({free:g} CPUs free on the cluster); lower "
                                  "[ray] actors or add nodes") from None
        for actor, node in zip(self._actors, nodes, strict=True):
            actor.name = f"{actor.name}@{node[:8]}"
        self.lanes = count * BATCHES_PER_ACTOR

    def _stop(self) -> None:
        for actor in self._actors:
            with contextlib.suppress(Exception):
                ray.kill(actor.handle)
        if self._relay is not None:
            with contextlib.suppress(Exception):
                ray.kill(self._relay)
        if self._started_ray:
            ray.shutdown()

    # --- the journal pump: the driver writes what actors journal, then lets them go on -------------------

    async def _pump(self) -> None:
        while True:
            events = await self._relay.take.remote(JOURNAL_POLL_SECONDS)
            ids = []
            for event_id, actor, event in events:
                if self._is_lost(actor):
                    continue  # never acknowledged: the request it guards was never sent
                await self._apply(event)
                ids.append(event_id)
            if ids:
                await self._relay.ack.remote(ids)

    async def _apply(self, event: tuple[Any, ...]) -> None:
        journal, caps = self._ctx.job.journal, self._ctx.job.caps
        assert journal is not None and caps is not None
        kind, *args = event
        if kind == "upload_started":
            ref, upload_id, bucket, key, part_size, etag, upload_kind = args
            await journal.upload_started(ref, upload_id=upload_id, dest_bucket=bucket, dest_key=key,
                                         part_size=part_size, source_etag=etag, kind=upload_kind)
        elif kind == "parts_done":
            await journal.parts_done(*args)
        elif kind == "upload_ended":
            await journal.upload_ended(*args)
        elif kind == "learn":
            fact = parse_fact(*args)
            if fact is not None:
                await caps.learn(fact)
        else:
            await self._apply_object_event(kind, args)

    async def _apply_object_event(self, kind: str, args: list[Any]) -> None:
        objects = self._ctx.job.hooks.objects
        if objects is None:
            return
        if kind == "source_seen":
            await objects.source_seen(*args)
        elif kind == "written":
            await objects.written(*args)
        elif kind == "envelope_pending":
            ref, dest_key, old_etag, instruction = args
            await objects.envelope_pending(ref, dest_key=dest_key, old_etag=old_etag, instruction=instruction)
            self._pending.add((ref.key, ref.version_id or ""))
        elif kind == "envelope_written":
            ref = args[0]
            await objects.envelope_written(ref)
            self._pending.discard((ref.key, ref.version_id or ""))

    def _is_lost(self, name: str) -> bool:
        return any(a.lost for a in self._actors if a.name.split("@")[0] == name)

    # --- batches ----------------------------------------------------------------------------------------------

    def _pick(self) -> _Actor:
        alive = [a for a in self._actors if not a.lost]
        if not alive:
            raise ActorsLostError(f"every Ray actor of this run was lost ({self.lost}); run again to resume")
        return min(alive, key=lambda a: a.in_flight)

    async def _fresh_resumes(self, items: Sequence[Item]) -> dict[ResumeKey, UploadResume]:
        """After a loss: the uploads the checkpoint now holds for these objects (the lost actor's too)."""
        journal = self._ctx.job.journal
        assert journal is not None
        found: dict[ResumeKey, UploadResume] = {}
        for item in items:
            if isinstance(item, list):
                continue
            point = await journal.resume_point(item)
            if point is not None:
                found[(item.key, item.version_id or "")] = point
        return found

    async def _envelopes_for(self, items: Sequence[Item]) -> dict[ResumeKey, PendingEnvelope]:
        """The envelopes the checkpoint holds for these objects, so an actor puts the instruction file a
        killed run (or a lost actor) meant to write, as a local run does (workers.core.pending). Wrapped
        data keys only, no secret: they may travel as task arguments."""
        objects = self._ctx.job.hooks.objects
        found: dict[ResumeKey, PendingEnvelope] = {}
        if objects is None or not self._pending:
            return found
        for item in items:
            for ref in item if isinstance(item, list) else [item]:
                key = (ref.key, ref.version_id or "")
                if key in self._pending and (envelope := await objects.pending_envelope(ref)) is not None:
                    found[key] = envelope
        return found

    async def migrate_batch(self, batch: Batch) -> Finished:
        resumes = dict(batch.resumes)
        envelopes = await self._envelopes_for(batch.items)
        while True:
            actor = self._pick()
            actor.in_flight += 1
            try:
                answer: ActorAnswer = await actor.handle.migrate_batch.remote(
                    list(batch.items), resumes, dict(batch.capabilities), envelopes)
            except RayActorError as exc:
                self._mark_lost(actor, exc)
                resumes = await self._fresh_resumes(batch.items)
                envelopes = await self._envelopes_for(batch.items)
                self.retried += 1
                self.carried += len(resumes)
                continue
            finally:
                actor.in_flight -= 1
            if answer.fatal is not None:
                _raise_fatal(*answer.fatal)
            actor.requests = max(actor.requests, answer.requests)
            for name, count in answer.by_transport.items():   # counts so far: the latest is the largest
                actor.by_transport[name] = max(actor.by_transport.get(name, 0), count)
            return Finished(answer.outcomes, actor.name)

    def _mark_lost(self, actor: _Actor, exc: BaseException) -> None:
        if actor.lost:
            return
        actor.lost = True
        self.lost += 1
        log.warning("Ray actor %s lost (%s); its batches go to the others", actor.name, type(exc).__name__)
        with contextlib.suppress(Exception):
            ray.kill(actor.handle)

    @property
    def requests(self) -> int:
        return sum(a.requests for a in self._actors)

    def statistics(self) -> ExecutorStats:
        by_transport = {name: sum(a.by_transport.get(name, 0) for a in self._actors) for name in ("fast", "botocore")}
        return ExecutorStats(self.kind, len(self._actors), self.lost, self.requests, self.retried, self.carried,
                             by_transport)
