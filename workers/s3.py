"""The S3 client boundary: one aiobotocore client per endpoint, every error classified here once."""

from __future__ import annotations

import contextlib
import datetime as dt
import email.utils
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import anyio
from aiobotocore.config import AioConfig
from aiobotocore.parsers import AioResponseParserFactory
from aiobotocore.session import AioSession
from botocore.utils import parse_timestamp as botocore_parse_timestamp

from workers import sse
from workers.errors import RetryableError, classify_attempt, classify_s3_error
from workers.lean import LeanClient, supports
from workers.model import Encryption, Mode, ObjectHead, ObjectRef, PartResult

log = logging.getLogger("rekey.s3")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """How to reach one S3 endpoint. Credentials come from the AWS chain (environment, profile)."""

    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    ca_bundle: str | None = None
    max_connections: int = 64
    max_attempts: int = 5           # botocore's own retries (connection errors, 5xx, throttles)
    connect_timeout: float = 10.0
    read_timeout: float = 120.0
    extra: Mapping[str, str] = field(default_factory=dict)
    lean: bool = True                # HeadObject/CopyObject through workers.lean (an endpoint_url is needed)

    @property
    def is_plain_http(self) -> bool:
        return bool(self.endpoint_url) and str(self.endpoint_url).lower().startswith("http://")


# Told about every failed attempt botocore retries by itself (throttles above all), which would otherwise
# never reach the engine's throttle. Set by the engine's retrier around each request it sends.
sdk_retry_listener: ContextVar[Callable[[RetryableError], None] | None] = ContextVar(
    "sdk_retry_listener", default=None)


def _on_attempt(response: Any = None, caught_exception: BaseException | None = None,
                operation: Any = None, **_: Any) -> None:
    """botocore `needs-retry` handler: report a retryable failed attempt; never changes botocore's decision."""
    listener = sdk_retry_listener.get()
    if listener is None:
        return
    parsed = response[1] if isinstance(response, tuple) and len(response) == 2 else None
    error = classify_attempt(parsed, caught_exception, op=str(getattr(operation, "name", "") or ""))
    if isinstance(error, RetryableError):
        listener(error)


@contextlib.contextmanager
def _connect_errors() -> Iterator[None]:
    """Setting up a client (e.g. a profile that does not exist) fails as a classified `connect` error."""
    try:
        yield
    except anyio.get_cancelled_exc_class():
        raise
    except Exception as exc:
        raise classify_s3_error(exc, op="connect") from None


class S3:
    """A thin async wrapper over one aiobotocore S3 client.

    Each method is one S3 request; failures come out as `RekeyError` subclasses naming bucket, key
    and operation. Use as `async with S3.open(endpoint) as s3:`.
    """

    def __init__(self, client: Callable[[], Awaitable[Any]], endpoint: Endpoint) -> None:
        self._make_client = client
        self._client: Any = None               # the aiobotocore client, made on first use (see raw_client)
        self._client_lock = anyio.Lock()
        self._lean: LeanClient | None = None  # the hot requests without botocore (workers.lean)
        self.endpoint = endpoint
        self.requests = 0  # requests sent, for reports and benchmarks

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, endpoint: Endpoint, *, service: str = "s3") -> AsyncIterator[S3]:
        session = AioSession(profile=endpoint.profile) if endpoint.profile else AioSession()
        # Listing timestamps are ISO 8601: parse them without dateutil (5% of a small-object run's CPU).
        parsers = AioResponseParserFactory()
        parsers.set_parser_defaults(timestamp_parser=parse_timestamp)
        session.register_component("response_parser_factory", parsers)
        config = AioConfig(
            max_pool_connections=endpoint.max_connections,
            retries={"mode": "standard", "total_max_attempts": endpoint.max_attempts},
            connect_timeout=endpoint.connect_timeout,
            read_timeout=endpoint.read_timeout,
            # Every body rekey sends carries Content-MD5, which the server checks; without this, botocore
            # SHA-256-hashes each upload body on the event loop over plain HTTP.
            s3={"addressing_style": "path", "payload_signing_enabled": False},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            tcp_keepalive=True,
            parameter_validation=False,  # requests are built by code, not users: save the CPU per request
        )
        kwargs: dict[str, Any] = {"config": config, "region_name": endpoint.region or "us-east-1"}
        if endpoint.endpoint_url:
            kwargs["endpoint_url"] = endpoint.endpoint_url
        if endpoint.ca_bundle:
            kwargs["verify"] = endpoint.ca_bundle
        async with contextlib.AsyncExitStack() as stack:

            async def make_client() -> Any:
                # On first use, not at open: loading botocore's service model costs 0.06-0.08 s of CPU,
                # which then runs while the first lean requests (bucket checks, the target probe) wait.
                with _connect_errors():
                    client = await stack.enter_async_context(session.create_client(service, **kwargs))
                client.meta.events.register(f"needs-retry.{service}", _on_attempt)
                return client

            lean = None
            if service == "s3" and endpoint.lean and endpoint.endpoint_url:
                with _connect_errors():
                    credentials = await session.get_credentials()
                if credentials is not None:
                    lean = LeanClient(endpoint.endpoint_url, endpoint.region or "us-east-1", credentials,
                                      ca_bundle=endpoint.ca_bundle, max_connections=endpoint.max_connections,
                                      timeout=endpoint.read_timeout)
                    stack.push_async_callback(lean.close)
            s3 = cls(make_client, endpoint)
            s3._lean = lean
            yield s3  # errors of the caller's block pass through untouched

    async def raw_client(self) -> Any:
        """The aiobotocore client (made on first use), for the few calls this wrapper does not cover."""
        if self._client is None:
            async with self._client_lock:
                if self._client is None:
                    self._client = await self._make_client()
        return self._client

    async def call(self, op: str, *, bucket: str = "", key: str = "", sse_c: bool = False,
                   **params: Any) -> dict[str, Any]:
        """Send one request; classify any failure. `op` is the botocore method name."""
        self.requests += 1
        if log.isEnabledFor(logging.DEBUG):  # names only: parameters may carry SSE-C keys
            log.debug("%s s3://%s/%s", op, bucket, key)
        try:
            if self._lean is not None and supports(op, params):
                result: dict[str, Any] = await getattr(self._lean, op)(params)
            else:
                result = await getattr(await self.raw_client(), op)(**params)
            return result
        except anyio.get_cancelled_exc_class():
            raise
        except Exception as exc:
            raise classify_s3_error(exc, op=op, bucket=bucket, key=key, sse_c=sse_c) from None

    # --- listing -------------------------------------------------------------------------------

    async def list_pages(self, bucket: str, prefix: str = "", start_after: str = "",
                         page_size: int = 1000) -> AsyncIterator[list[ObjectRef]]:
        """ListObjectsV2 page by page, starting after `start_after` (for resume)."""
        token: str | None = None
        while True:
            params: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": page_size}
            if token:
                params["ContinuationToken"] = token
            elif start_after:
                params["StartAfter"] = start_after
            page = await self.call("list_objects_v2", bucket=bucket, key=prefix, **params)
            refs = [
                ObjectRef(
                    key=item["Key"],
                    size=int(item.get("Size", 0)),
                    etag=str(item.get("ETag", "")),
                    last_modified=item["LastModified"].timestamp() if item.get("LastModified") else None,
                    storage_class=_listed_class(item.get("StorageClass")),
                )
                for item in page.get("Contents", []) or []
            ]
            yield refs
            if not page.get("IsTruncated"):
                return
            token = page.get("NextContinuationToken")
            if not token:  # some servers omit it: fall back to StartAfter
                if not refs:
                    return
                start_after, token = refs[-1].key, None
                params.pop("ContinuationToken", None)

    # --- objects ---------------------------------------------------------------------------------

    async def head(self, bucket: str, key: str, *, read_enc: Encryption | None = None,
                   version_id: str | None = None, if_match: str | None = None) -> ObjectHead:
        params: dict[str, Any] = {"Bucket": bucket, "Key": key, **sse.read_params(read_enc)}
        if version_id:
            params["VersionId"] = version_id
        if if_match:
            params["IfMatch"] = if_match
        is_sse_c = read_enc is not None and read_enc.mode == Mode.SSE_C
        resp = await self.call("head_object", bucket=bucket, key=key, sse_c=is_sse_c, **params)
        return head_from_response(key, resp)

    async def get_tags(self, bucket: str, key: str, version_id: str | None = None) -> dict[str, str]:
        params: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if version_id:
            params["VersionId"] = version_id
        resp = await self.call("get_object_tagging", bucket=bucket, key=key, **params)
        return {t["Key"]: t["Value"] for t in resp.get("TagSet", []) or []}

    async def get_range(self, bucket: str, key: str, start: int, end: int, *,
                        read_enc: Encryption | None = None, if_match: str | None = None,
                        version_id: str | None = None) -> bytes:
        """Bytes [start, end] inclusive. The body is read fully; a short read is retryable."""
        data, _ = await self._get(bucket, key, read_enc=read_enc, version_id=version_id, if_match=if_match,
                                  byte_range=f"bytes={start}-{end}")
        want = end - start + 1
        if len(data) != want:
            raise RetryableError(f"short read: got {len(data)} of {want} bytes at offset {start}",
                                 bucket=bucket, key=key, op="get_object")
        return data

    async def get_all(self, bucket: str, key: str, *, read_enc: Encryption | None = None,
                      version_id: str | None = None) -> tuple[bytes, dict[str, Any]]:
        """Whole body and response (for small objects: instruction files, tests)."""
        return await self._get(bucket, key, read_enc=read_enc, version_id=version_id)

    async def _get(self, bucket: str, key: str, *, read_enc: Encryption | None, version_id: str | None,
                   if_match: str | None = None, byte_range: str | None = None) -> tuple[bytes, dict[str, Any]]:
        """One GetObject, its body read fully; a failure while reading is classified like the request's."""
        params: dict[str, Any] = {"Bucket": bucket, "Key": key, **sse.read_params(read_enc)}
        for name, value in (("VersionId", version_id), ("IfMatch", if_match), ("Range", byte_range)):
            if value:
                params[name] = value
        is_sse_c = read_enc is not None and read_enc.mode == Mode.SSE_C
        resp = await self.call("get_object", bucket=bucket, key=key, sse_c=is_sse_c, **params)
        try:
            async with resp["Body"] as body:
                data: bytes = await body.read()
        except anyio.get_cancelled_exc_class():
            raise
        except Exception as exc:
            raise classify_s3_error(exc, op="get_object", bucket=bucket, key=key) from None
        return data, resp

    # --- multipart ---------------------------------------------------------------------------------

    async def abort_upload(self, bucket: str, key: str, upload_id: str) -> None:
        await self.call("abort_multipart_upload", bucket=bucket, key=key,
                        Bucket=bucket, Key=key, UploadId=upload_id)

    async def list_parts(self, bucket: str, key: str, upload_id: str) -> list[PartResult]:
        parts: list[PartResult] = []
        marker = 0
        while True:
            resp = await self.call("list_parts", bucket=bucket, key=key, Bucket=bucket, Key=key,
                                   UploadId=upload_id, PartNumberMarker=marker)
            for p in resp.get("Parts", []) or []:
                parts.append(PartResult(int(p["PartNumber"]), str(p["ETag"]), int(p.get("Size", 0))))
            if not resp.get("IsTruncated"):
                return parts
            marker = int(resp.get("NextPartNumberMarker") or 0)
            if not marker:
                return parts

    async def list_uploads(self, bucket: str, prefix: str = "") -> list[tuple[str, str, float | None]]:
        """(key, upload id, initiated epoch) of incomplete multipart uploads under a prefix."""
        out: list[tuple[str, str, float | None]] = []
        params: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
        while True:
            resp = await self.call("list_multipart_uploads", bucket=bucket, key=prefix, **params)
            for u in resp.get("Uploads", []) or []:
                init = u.get("Initiated")
                out.append((u["Key"], u["UploadId"], init.timestamp() if init else None))
            if not resp.get("IsTruncated"):
                return out
            params["KeyMarker"] = resp.get("NextKeyMarker")
            params["UploadIdMarker"] = resp.get("NextUploadIdMarker")
            if not params["KeyMarker"]:
                return out


def parse_timestamp(value: Any) -> dt.datetime:
    """botocore's timestamp parser, fast for the ISO 8601 and epoch forms S3 sends, botocore's otherwise."""
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            parsed = None
        if parsed is not None:
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    result: dt.datetime = botocore_parse_timestamp(value)
    return result


def _http_date(value: Any) -> str | None:
    if value is None:
        return None
    if hasattr(value, "timetuple"):
        return email.utils.format_datetime(value, usegmt=True)
    return str(value)


def head_from_response(key: str, resp: Mapping[str, Any]) -> ObjectHead:
    """An `ObjectHead` from a HeadObject (or GetObject) response."""
    metadata = {str(k).lower(): str(v) for k, v in (resp.get("Metadata") or {}).items()}
    expires = resp.get("ExpiresString") or _http_date(resp.get("Expires"))
    size = resp.get("ContentLength", 0)
    content_range = resp.get("ContentRange")
    if content_range and "/" in str(content_range):  # a ranged GET: total size after the slash
        size = int(str(content_range).rsplit("/", 1)[1])
    return ObjectHead(
        key=key,
        size=int(size),
        etag=str(resp.get("ETag", "")),
        encryption=sse.observed(resp),
        version_id=resp.get("VersionId"),
        content_type=resp.get("ContentType"),
        content_encoding=resp.get("ContentEncoding"),
        content_disposition=resp.get("ContentDisposition"),
        content_language=resp.get("ContentLanguage"),
        cache_control=resp.get("CacheControl"),
        expires=expires,
        website_redirect=resp.get("WebsiteRedirectLocation"),
        storage_class=resp.get("StorageClass"),
        metadata=metadata,
        parts_count=resp.get("PartsCount"),
        tag_count=resp.get("TagCount"),
        last_modified=resp["LastModified"].timestamp() if resp.get("LastModified") else None,
    )


def carried_params(head: ObjectHead, *, metadata: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The system and user metadata a copy with REPLACE, a PutObject or a CreateMultipartUpload re-sends."""
    params: dict[str, Any] = {"Metadata": dict(head.metadata if metadata is None else metadata)}
    for name, value in (
        ("ContentType", head.content_type),
        ("ContentEncoding", head.content_encoding),
        ("ContentDisposition", head.content_disposition),
        ("ContentLanguage", head.content_language),
        ("CacheControl", head.cache_control),
        ("WebsiteRedirectLocation", head.website_redirect),
    ):
        if value:
            params[name] = value
    if head.expires:
        parsed = email.utils.parsedate_to_datetime(head.expires) if "," in head.expires else None
        if parsed is not None:
            params["Expires"] = parsed
    if head.storage_class and head.storage_class != "STANDARD":
        params["StorageClass"] = head.storage_class
    return params


def _listed_class(value: Any) -> str | None:
    """A listing's StorageClass, None for STANDARD (a copy's default) or when not shown."""
    text = str(value or "")
    return text if text and text != "STANDARD" else None
