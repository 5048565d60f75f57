"""`rekey bench`: PUT, GET and CopyObject throughput and latency per encryption mode against one endpoint.

For users sizing a migration on their own endpoint: for each mode it PUTs `count` scratch objects of `size`
bytes, GETs them, copies each to a new key under the same mode, and reads one back with HeadObject to say
whether the endpoint really applied the mode. Every scratch object is deleted afterwards, also on errors.

Client-side (`cse`): PUT is a new data key, its wrapping (KMS when a KMS endpoint is known, else a random
local AES key), AES-GCM (S3EC v3) and PutObject with the envelope; GET is GetObject, unwrapping and
decryption, checked against the bytes put; COPY is a server-side copy of the ciphertext and its envelope.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio

from engine.config import Config, load_config, parse_size
from engine.retry import retrier_for
from workers import sse
from workers.cse import (
    AesKeyring,
    ContentDecryptor,
    ContentEncryptor,
    CseFormat,
    Keyring,
    KmsKeyring,
    detect_format,
    envelope_to_metadata,
    new_data_key,
    parse_envelope,
)
from workers.cse.envelope import TAG_LEN
from workers.errors import ConfigError, CorruptObjectError, RekeyError
from workers.model import Encryption, Mode, SecretKey
from workers.s3 import S3, Attributes, CopyRequest, Directive, Endpoint, Kms, PutRequest, Source

MiB = 1024 * 1024
MODES = (Mode.NONE, Mode.SSE_S3, Mode.SSE_KMS, Mode.DSSE_KMS, Mode.SSE_C, Mode.CSE)
MAX_ERRORS = 5  # a phase stops after this many failed requests (a mode the endpoint refuses fails fast)


@dataclass(frozen=True, slots=True)
class Phase:
    """One operation measured for one mode: successes, failures, rates and latency percentiles."""

    op: str
    ok: int
    failed: int
    seconds: float
    objects_per_s: float
    mib_per_s: float
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    first_error: str | None = None


@dataclass(frozen=True, slots=True)
class ModeResult:
    """All phases for one encryption mode; `applied` is what HeadObject said (None when not checked)."""

    mode: str
    applied: bool | None
    note: str | None = None
    phases: tuple[Phase, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class BenchSettings:
    endpoint: Endpoint
    bucket: str
    prefix: str
    size: int
    count: int
    concurrency: int
    modes: tuple[Mode, ...]
    kms_key_id: str | None
    kms: Endpoint | None = None      # client-side mode: KMS for the keyring (None: a random local AES key)


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return round(values[0] * 1000, 2)
    return round(statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] * 1000, 2)


async def _phase(op: str, count: int, concurrency: int, size: int,
                 request: Callable[[int], Awaitable[None]]) -> Phase:
    """Run `request(i)` for i in range(count) with `concurrency` in flight; time each call."""
    latencies: list[float] = []
    errors: list[str] = []
    todo = iter(range(count))

    async def worker() -> None:
        for i in todo:  # one shared iterator: each index is taken by exactly one worker
            if len(errors) >= MAX_ERRORS:
                return
            started = time.perf_counter()
            try:
                await request(i)
            except RekeyError as exc:
                errors.append(str(exc))
                continue
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(max(1, min(concurrency, count))):
            tg.start_soon(worker)
    seconds = time.perf_counter() - started
    ok = len(latencies)
    return Phase(op=op, ok=ok, failed=len(errors), seconds=round(seconds, 3),
                 objects_per_s=round(ok / seconds, 1) if seconds else 0.0,
                 mib_per_s=round(ok * size / MiB / seconds, 2) if seconds else 0.0,
                 p50_ms=_percentile(latencies, 50), p90_ms=_percentile(latencies, 90),
                 p99_ms=_percentile(latencies, 99), first_error=errors[0] if errors else None)


def _encryption(mode: Mode, kms_key_id: str | None) -> Encryption:
    if mode == Mode.SSE_C:
        return Encryption(mode, sse_c_key=SecretKey(secrets.token_bytes(32), "rekey bench (random)"))
    return Encryption(mode, kms_key_id=kms_key_id if mode in (Mode.SSE_KMS, Mode.DSSE_KMS) else None)


def _skip_reason(mode: Mode, settings: BenchSettings) -> str | None:
    if mode in (Mode.SSE_KMS, Mode.DSSE_KMS) and not settings.kms_key_id:
        return "needs --kms-key-id"
    if mode == Mode.SSE_C and settings.endpoint.is_plain_http:
        return "SSE-C keys are only sent over HTTPS"
    return None


class CseCodec:
    """Client-side encryption of whole bench objects with one keyring (S3EC v3)."""

    def __init__(self, keyring: Keyring, note: str) -> None:
        self.keyring = keyring
        self.note = note

    async def seal(self, body: bytes) -> tuple[bytes, dict[str, str]]:
        data_key = new_data_key()
        encryptor = ContentEncryptor(data_key, CseFormat.V3)
        wrapped = await self.keyring.wrap(data_key, CseFormat.V3)
        data = await _off_loop(lambda: encryptor.update(body) + encryptor.finalize(), len(body))
        metadata, _ = envelope_to_metadata(encryptor.envelope(wrapped), instruction_file=False)
        return data, metadata

    async def open(self, data: bytes, metadata: dict[str, str]) -> bytes:
        env = parse_envelope({str(k).lower(): str(v) for k, v in metadata.items()})
        decryptor = ContentDecryptor.for_envelope(await self.keyring.unwrap(env), env)
        return await _off_loop(lambda: decryptor.update(data) + decryptor.finalize(), len(data))


async def _off_loop(fn: Callable[[], bytes], size: int) -> bytes:
    return await anyio.to_thread.run_sync(fn) if size > 256 * 1024 else fn()


async def _bench_cse(s3: S3, settings: BenchSettings, codec: CseCodec, body: bytes) -> ModeResult:
    bucket, base = settings.bucket, f"{settings.prefix}{Mode.CSE.value}/"
    put_keys = [f"{base}put-{i:06d}" for i in range(settings.count)]
    copy_keys = [f"{base}copy-{i:06d}" for i in range(settings.count)]

    async def put(i: int) -> None:
        data, metadata = await codec.seal(body)
        await s3.put(PutRequest(bucket, put_keys[i], data, attributes=Attributes(metadata=metadata)))

    async def get(i: int) -> None:
        got = await s3.get(bucket, put_keys[i])
        if await codec.open(got.data, dict(got.head.metadata)) != body:
            raise CorruptObjectError("decrypted bytes differ from the bytes put", bucket=bucket, key=put_keys[i],
                                     op="decrypt")

    async def copy(i: int) -> None:
        await s3.copy(CopyRequest(bucket=bucket, key=copy_keys[i], source=Source(bucket, put_keys[i]),
                                  metadata_directive=Directive.COPY))

    phases: list[Phase] = []
    applied: bool | None = None
    note = codec.note
    try:
        n, c, size = settings.count, settings.concurrency, settings.size
        phases.append(await _phase("PUT", n, c, size, put))
        if phases[0].ok:
            head = await s3.head(bucket, put_keys[0])
            applied = detect_format(head.metadata) is not None and head.size == size + TAG_LEN
            if not applied:
                note = f"stored {head.size} bytes without a readable envelope"
            phases.append(await _phase("GET", n, c, size, get))
            phases.append(await _phase("COPY", n, c, size, copy))
    finally:
        with anyio.CancelScope(shield=True):
            await _delete(s3, bucket, put_keys + copy_keys)
    return ModeResult(Mode.CSE.value, applied, note, tuple(phases))


async def _bench_mode(s3: S3, settings: BenchSettings, mode: Mode, body: bytes,
                      codec: CseCodec | None = None) -> ModeResult:
    skip = _skip_reason(mode, settings)
    if skip:
        return ModeResult(mode.value, None, skip)
    if mode == Mode.CSE:
        assert codec is not None
        return await _bench_cse(s3, settings, codec, body)
    enc = _encryption(mode, settings.kms_key_id)
    bucket, base = settings.bucket, f"{settings.prefix}{mode.value}/"
    put_keys = [f"{base}put-{i:06d}" for i in range(settings.count)]
    copy_keys = [f"{base}copy-{i:06d}" for i in range(settings.count)]
    read = enc if mode == Mode.SSE_C else None

    async def put(i: int) -> None:
        await s3.put(PutRequest(bucket, put_keys[i], body, encryption=enc))

    async def get(i: int) -> None:
        await s3.get(bucket, put_keys[i], read_enc=read)

    async def copy(i: int) -> None:
        await s3.copy(CopyRequest(bucket=bucket, key=copy_keys[i], encryption=enc, metadata_directive=Directive.COPY,
                                  source=Source(bucket, put_keys[i], encryption=read)))

    phases: list[Phase] = []
    applied: bool | None = None
    note = None
    try:
        n, c, size = settings.count, settings.concurrency, settings.size
        phases.append(await _phase("PUT", n, c, size, put))
        if phases[0].ok:
            head = await s3.head(bucket, put_keys[0], read_enc=read)
            note = sse.mismatch(head.encryption, enc)
            applied = note is None
            phases.append(await _phase("GET", n, c, size, get))
            phases.append(await _phase("COPY", n, c, size, copy))
    finally:
        with anyio.CancelScope(shield=True):
            await _delete(s3, bucket, put_keys + copy_keys)
    return ModeResult(mode.value, applied, note, tuple(phases))


async def _delete(s3: S3, bucket: str, keys: list[str]) -> None:
    """Delete scratch objects, 1,000 per request; keys that were never written are ignored by S3."""
    for start in range(0, len(keys), 1000):
        try:
            await s3.delete_many(bucket, keys[start:start + 1000])
        except RekeyError as exc:
            print(f"rekey bench: warning: could not delete scratch objects: {exc}", file=sys.stderr)


async def run_bench(settings: BenchSettings) -> list[ModeResult]:
    body = os.urandom(settings.size)
    async with contextlib.AsyncExitStack() as stack:
        retry = retrier_for(concurrency=settings.concurrency)
        s3 = await stack.enter_async_context(S3.open(settings.endpoint, retry=retry))
        codec = None
        if Mode.CSE in settings.modes:
            if settings.kms is not None and settings.kms_key_id:
                kms = await stack.enter_async_context(Kms.open(settings.kms, retry=retry))
                codec = CseCodec(KmsKeyring(kms, settings.kms_key_id), f"KMS keyring, key {settings.kms_key_id}")
            else:
                codec = CseCodec(AesKeyring(SecretKey(secrets.token_bytes(32), "rekey bench (random)")),
                                 "local AES keyring (random key); --kms-key-id and a KMS endpoint for KMS")
        return [await _bench_mode(s3, settings, mode, body, codec) for mode in settings.modes]


def table(results: list[ModeResult], settings: BenchSettings) -> str:
    lines = [f"{settings.count} x {settings.size} B objects, {settings.concurrency} in flight, "
             f"s3://{settings.bucket}/{settings.prefix} on {settings.endpoint.endpoint_url or 'AWS'}",
             f"{'mode':<9} {'op':<5} {'ok':>6} {'failed':>6} {'obj/s':>9} {'MiB/s':>9} {'p50 ms':>8} "
             f"{'p90 ms':>8} {'p99 ms':>8}  note"]
    for r in results:
        if not r.phases:
            lines.append(f"{r.mode:<9} {'-':<5} {'':>6} {'':>6} {'':>9} {'':>9} {'':>8} {'':>8} {'':>8}  "
                         f"skipped: {r.note}")
            continue
        for p in r.phases:
            note = ""
            if p.op == "PUT" and r.applied is False:
                note = f"NOT APPLIED: {r.note}"
            if p.first_error:
                note = (note + "; " if note else "") + p.first_error
            lines.append(f"{r.mode:<9} {p.op:<5} {p.ok:>6} {p.failed:>6} {p.objects_per_s:>9.1f} "
                         f"{p.mib_per_s:>9.2f} {_ms(p.p50_ms):>8} {_ms(p.p90_ms):>8} {_ms(p.p99_ms):>8}  {note}")
    return "\n".join(lines)


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def settings_from_args(args: argparse.Namespace) -> BenchSettings:
    config: Config | None = load_config(args.config) if args.config else None
    bucket = args.bucket or (config.destination.location.bucket if config else None)
    if not bucket:
        raise ConfigError("bench: give --bucket, or -c CONFIG (its destination bucket is used)")
    if config is not None:
        base = config.destination.endpoint
        kms_key = args.kms_key_id or config.target.encryption.kms_key_id
    else:
        base, kms_key = Endpoint(), args.kms_key_id
    endpoint = Endpoint(endpoint_url=args.endpoint_url or base.endpoint_url, region=args.region or base.region,
                        profile=base.profile, ca_bundle=args.ca_bundle or base.ca_bundle,
                        max_connections=args.concurrency * 2 + 8)
    if args.count < 1 or args.concurrency < 1:
        raise ConfigError("bench: --count and --concurrency must be at least 1")
    try:
        modes = tuple(Mode(m.strip()) for m in args.modes.split(",") if m.strip())
    except ValueError:
        raise ConfigError(f"bench: --modes: one of {', '.join(m.value for m in MODES)}, got {args.modes!r}") from None
    kms: Endpoint | None = None
    if args.kms_endpoint_url:
        kms = Endpoint(endpoint_url=args.kms_endpoint_url, region=endpoint.region, ca_bundle=endpoint.ca_bundle)
    elif config is not None and config.kms is not None:
        kms = config.kms
    elif endpoint.endpoint_url is None:   # AWS S3: AWS KMS in the same region
        kms = Endpoint(region=endpoint.region, profile=endpoint.profile)
    prefix = args.prefix.rstrip("/") + f"/{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}/"
    return BenchSettings(endpoint=endpoint, bucket=bucket, prefix=prefix.lstrip("/"),
                         size=parse_size(args.size, "bench: --size"), count=args.count,
                         concurrency=args.concurrency, modes=modes, kms_key_id=kms_key, kms=kms)
