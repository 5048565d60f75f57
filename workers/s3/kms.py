"""The KMS boundary: the four KMS operations rekey sends, typed, failures classified like S3's."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import anyio

from workers.endpoint import Endpoint
from workers.errors import ConfigError, FatalError, RekeyError, classify_s3_error
from workers.s3.boundary import RetryPolicy
from workers.s3.settings import connect_errors


class KmsOp(StrEnum):
    ENCRYPT = "encrypt"
    DECRYPT = "decrypt"
    GENERATE_DATA_KEY = "generate_data_key"
    DESCRIBE_KEY = "describe_key"


@dataclass(frozen=True, slots=True)
class DataKey:
    """A data key from GenerateDataKey or Decrypt: the plaintext (secret) and the KMS key that wrapped it."""

    plaintext: bytes = field(repr=False)
    ciphertext: bytes = b""
    key_id: str = ""


class Kms:
    """One botocore KMS client, made on the first request (a run that never asks KMS, an SSE-S3 target with
    a [kms] section say, does not pay for it). Use as `async with Kms.open(endpoint) as kms:`.

    The client is botocore's own, sync (workers.s3.sdk_sync), each request sent in a worker thread: a run
    asks KMS once per object at most, and this way a client-side run does not import aiobotocore and
    aiohttp (0.3-0.4 s of its start-up) for it. botocore makes one attempt; `retry` owns the rest."""

    def __init__(self, client: Any, retry: RetryPolicy | None = None,
                 connect: Callable[[], Awaitable[Any]] | None = None) -> None:
        self._client = client
        self._retry = retry
        self._connect = connect
        self._connecting = anyio.Lock()
        self.requests = 0

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, endpoint: Endpoint, *, retry: RetryPolicy | None = None) -> AsyncIterator[Kms]:
        async def connect() -> Any:
            try:
                from workers.s3.sdk_sync import sync_client  # botocore: only a run that asks KMS loads it
                with connect_errors():
                    return await anyio.to_thread.run_sync(sync_client, endpoint, "kms")
            except RekeyError as exc:   # no KMS client, no KMS request of this run can succeed
                if isinstance(exc, FatalError):
                    raise
                raise ConfigError(f"kms: no client could be made: {exc}", op="connect") from None
        kms = cls(None, retry, connect)
        try:
            yield kms
        finally:
            if kms._client is not None:
                kms._client.close()   # its connection pool

    async def _ready(self) -> Any:
        if self._client is None:
            async with self._connecting:
                if self._client is None and self._connect is not None:
                    self._client = await self._connect()
        return self._client

    async def _send(self, op: KmsOp, key: str, **params: Any) -> dict[str, Any]:
        """One KMS request (every one of them is safe to resend), retried under the policy."""
        if self._retry is None:
            return await self._attempt(op, key, params)
        return await self._retry(f"kms:{op.value} {key}", lambda: self._attempt(op, key, params))

    async def _attempt(self, op: KmsOp, key: str, params: dict[str, Any]) -> dict[str, Any]:
        self.requests += 1
        try:
            client = await self._ready()
            result: dict[str, Any] = await anyio.to_thread.run_sync(functools.partial(getattr(client, op.value),
                                                                                      **params))
            return result
        except anyio.get_cancelled_exc_class():
            raise
        except Exception as exc:
            raise classify_s3_error(exc, op=f"kms:{op.value}", key=key) from None

    async def encrypt(self, key_id: str, plaintext: bytes, context: Mapping[str, str]) -> bytes:
        """The ciphertext blob of `plaintext` under `key_id` and `context`."""
        resp = await self._send(KmsOp.ENCRYPT, key_id, KeyId=key_id, Plaintext=plaintext,
                                EncryptionContext=dict(context))
        return bytes(resp["CiphertextBlob"])

    async def generate_data_key(self, key_id: str, context: Mapping[str, str]) -> DataKey:
        """A new AES-256 data key, in the clear and wrapped."""
        resp = await self._send(KmsOp.GENERATE_DATA_KEY, key_id, KeyId=key_id, KeySpec="AES_256",
                                EncryptionContext=dict(context))
        return DataKey(bytes(resp["Plaintext"]), bytes(resp["CiphertextBlob"]), str(resp.get("KeyId") or ""))

    async def decrypt(self, ciphertext: bytes, context: Mapping[str, str], key_id: str = "") -> DataKey:
        """Unwrap a ciphertext blob (`key_id` empty: the blob names its key)."""
        extra = {"KeyId": key_id} if key_id else {}
        resp = await self._send(KmsOp.DECRYPT, key_id, CiphertextBlob=ciphertext,
                                EncryptionContext=dict(context), **extra)
        return DataKey(bytes(resp["Plaintext"]), ciphertext, str(resp.get("KeyId") or ""))

    async def key_arn(self, key_id: str) -> str | None:
        """DescribeKey: the key's ARN."""
        resp = await self._send(KmsOp.DESCRIBE_KEY, key_id, KeyId=key_id)
        arn = (resp.get("KeyMetadata") or {}).get("Arn")
        return str(arn) if arn else None
