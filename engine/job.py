"""A run's job, made from its config: the S3 and KMS clients, the client-side keyrings, the `Job` the
workers share (workers.job) and the executor that runs them (this process, or Ray actors)."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncIterator
from dataclasses import replace

from engine.config import Config, CseKeyring
from engine.executor import Executor, ItemContext, WorkerContext
from engine.executor.local import LocalExecutor
from engine.journal import AsyncCheckpoint
from engine.retry import Retrier, Throttle, retrier_for
from workers.capabilities import CapabilityHook, LocalCapabilities
from workers.cse import CseFormat
from workers.errors import ConfigError
from workers.job import CseSettings, Hooks, Job, ObjectJournal, PartJournal, Policy, Route
from workers.memory import SLACK, BufferPool, MemoryBudget
from workers.model import Mode
from workers.s3 import S3, Endpoint, Kms

STREAM_BUFFERS = 6      # part buffers read-and-not-yet-written, and as many waiting to upload, for the whole run


def check_transport(config: Config) -> None:
    """SSE-C keys never travel over plain HTTP (AWS refuses it; rekey refuses it everywhere), KMS data keys
    not over plain HTTP to another machine; the environment's endpoint variables count (engine.transport)."""
    from engine.transport import refuse_plain_http_kms, refuse_plain_http_sse_c
    if config.source.sse_c_key is not None:
        refuse_plain_http_sse_c("source", config.source.endpoint)
    if config.target.mode == Mode.SSE_C:
        which = "destination" if config.destination.endpoint is not config.source.endpoint else "source"
        refuse_plain_http_sse_c(which, config.destination.endpoint)
    if needs_kms(config):
        refuse_plain_http_kms(config.kms or Endpoint(region=config.source.endpoint.region))


@contextlib.asynccontextmanager
async def open_clients(config: Config, retry: Retrier | None = None) -> AsyncIterator[tuple[S3, S3, Kms | None]]:
    """Source, destination (the same client when they share the endpoint) and KMS when client-side
    encryption may be involved; every request retried under `retry` (by default one of the run's settings)."""
    retry = retry or retrier_for(config.run.max_retries, config.run.concurrency)
    async with contextlib.AsyncExitStack() as stack:
        source = await stack.enter_async_context(S3.open(config.source.endpoint, retry=retry))
        dest = source
        if config.destination.endpoint is not config.source.endpoint:
            dest = await stack.enter_async_context(S3.open(config.destination.endpoint, retry=retry))
        kms = None
        if needs_kms(config):
            endpoint = config.kms or Endpoint(region=config.source.endpoint.region)
            kms = await stack.enter_async_context(Kms.open(endpoint, retry=retry))
        # What exists now (modules, botocore's service models: some 150,000 objects) lives as long as the run:
        # out of the cyclic collector's sight, each full collection no longer walks it (0.1-0.15 s each).
        gc.freeze()
        yield source, dest, kms


def needs_kms(config: Config) -> bool:
    t = config.target
    return t.mode == Mode.CSE or t.allow_client_side_decrypt or config.kms is not None


def cse_settings(config: Config, kms: Kms | None) -> CseSettings | None:
    """Keyrings for a run: the target's, and every configured key that may open a client-side source."""
    t = config.target
    if not needs_kms(config) and not config.source.cse.aes_keys and not config.source.cse.rsa_private_keys_pem:
        return None
    # the keyrings load cryptography: a run without client-side encryption never imports them
    from workers.cse import AesKeyring, Keyring, KmsKeyring, MultiKeyring, RsaKeyring
    target: Keyring | None = None
    if t.cse is not None:
        if t.cse.keyring == CseKeyring.KMS:
            if kms is None:
                raise ConfigError("kms: a KMS endpoint is needed for keyring = \"kms\"")
            target = KmsKeyring(kms, t.cse.kms_key_id or "", dict(t.cse.encryption_context))
        elif t.cse.keyring == CseKeyring.AES:
            assert t.cse.aes_key is not None
            target = AesKeyring(t.cse.aes_key, dict(t.cse.material_description) or None)
        else:
            target = RsaKeyring(t.cse.public_key_pem, t.cse.check_key_pem, dict(t.cse.material_description) or None)
    src = config.source.cse
    sources: list[Keyring] = []
    if kms is not None:
        ctx = dict(src.encryption_context) if src.encryption_context is not None else None
        sources.append(KmsKeyring(kms, "", ctx))
    sources += [AesKeyring(k) for k in src.aes_keys]
    sources += [RsaKeyring(None, pem) for pem in src.rsa_private_keys_pem]
    if isinstance(target, AesKeyring):
        sources.append(target)
    fmt = CseFormat(t.cse.format) if t.cse else CseFormat.V3
    return CseSettings(target=target, target_format=fmt, instruction_file=bool(t.cse and t.cse.instruction_file),
                       source=MultiKeyring(sources, allow_legacy=src.allow_legacy) if sources else None,
                       allow_decrypt=t.allow_client_side_decrypt)


def make_job(config: Config, source: S3, dest: S3, acp: AsyncCheckpoint | None, kms: Kms | None = None,
             caps: CapabilityHook | None = None) -> Job:
    """The job of a run (`acp` set) or of `rekey plan` (no checkpoint writes: `acp` None)."""
    run = config.run
    route = Route(source=source, dest=dest, src=config.source.location, dst=config.destination.location,
                  in_place=config.destination.in_place, same_endpoint=config.same_endpoint)
    policy = Policy(
        target=config.target.encryption, source_sse_c_key=config.source.sse_c_key, cse=cse_settings(config, kms),
        part_size=run.part_size, multipart_threshold=run.multipart_threshold,
        part_concurrency=max(2, min(16, run.concurrency)), verify=run.verify.value != "none",
        verify_auto=run.verify.value == "auto", copy_first=run.copy_first)
    hooks = Hooks(memory=MemoryBudget(run.part_size * STREAM_BUFFERS),
                  write_memory=MemoryBudget(run.part_size * STREAM_BUFFERS),
                  buffers=BufferPool(keep_bytes=(run.part_size + SLACK) * STREAM_BUFFERS),
                  journal=acp, objects=acp, caps=caps or LocalCapabilities())
    return Job(route, policy, hooks)


@contextlib.asynccontextmanager
async def worker_context(config: Config, hooks: PartJournal, caps: CapabilityHook, *,
                         confirm_delete_noncurrent: bool,
                         objects: ObjectJournal | None = None) -> AsyncIterator[WorkerContext]:
    """What a worker away from the driver (a Ray actor) needs: its own clients, throttle and retries, and the
    driver's journal and capabilities behind `hooks`/`caps`. Handed to the executor (not imported by it) so
    that the executor package never imports the pipeline."""
    throttle = Throttle(config.run.concurrency, max_rps=config.run.max_requests_per_second)
    retrier = Retrier(throttle, max_retries=config.run.max_retries)
    async with open_clients(config, retrier) as (source, dest, kms):
        job = make_job(config, source, dest, None, kms, caps)
        job = replace(job, hooks=replace(job.hooks, journal=hooks, objects=objects))
        yield WorkerContext(ItemContext.of(config, job, confirm_delete_noncurrent=confirm_delete_noncurrent),
                            throttle)


def make_executor(config: Config, job: Job, throttle: Throttle, *, confirm_delete_noncurrent: bool) -> Executor:
    """`[run] executor`: this process, or Ray actors (Ray imported only then)."""
    ctx = ItemContext.of(config, job, confirm_delete_noncurrent=confirm_delete_noncurrent)
    if config.run.executor == "ray":
        from engine.executor.ray import RayExecutor
        return RayExecutor(config, ctx, open_worker=worker_context)
    return LocalExecutor(ctx, throttle, concurrency=config.run.concurrency)
