"""The S3 boundary: one typed method per operation rekey sends, every failure classified here once.

Above this class nothing builds or reads botocore dicts, and nothing names an operation by a string:
callers pass records (`workers.s3.records`, `workers.model`) and get records back. Below it, two
transports: botocore (one aiobotocore client) for every operation, and the fast one (`workers.s3.fast`,
whose requests a sync botocore client builds and signs) for the hot ones, on every endpoint unless
`[run] lean_requests = false`; with it, both send over one connection pool per endpoint
(`workers.s3.pool`), without it botocore's own. For a plain setup (`workers.s3.native`) the calls of the
hot operations that rekey can build itself exactly as botocore would are built and signed there and sent
on the same pool. Each client is made on its first request: a run whose requests are all hot never
imports aiobotocore or aiohttp, and one whose calls the builder takes never imports botocore's client,
signer or serializer. The boundary owns retries
(one attempt each from botocore, aiohttp and the pool) and region redirects: a bucket answered from
another region is learned once, for both transports.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import anyio

from workers import timeline
from workers.endpoint import Endpoint
from workers.errors import ObjectChangedError, RetryableError, classify_s3_error
from workers.model import Encryption, ObjectHead, ObjectRef, PartResult
from workers.s3 import convert as cv
from workers.s3.answers import answer_for
from workers.s3.native import Native
from workers.s3.ops import HOT_OPS, RESEND, Op, Resend
from workers.s3.pool import route_botocore, send_on, wire_of
from workers.s3.records import (
    CopyRequest,
    CreateUpload,
    Deleted,
    DeleteFailure,
    Fetched,
    ObjectPage,
    PutRequest,
    Source,
    Upload,
    VersionPage,
    Written,
)
from workers.s3.settings import connect_errors

if TYPE_CHECKING:
    from workers.s3.fast import FastTransport

log = logging.getLogger("rekey.s3")


T = TypeVar("T")


class RetryPolicy(Protocol):
    """The engine's retry policy (engine.retry.Retrier): send `fn` again on a retryable error, with backoff.

    `refused_only`: only when the server certainly did not act (a throttle, no connection)."""

    async def __call__(self, what: str, fn: Callable[[], Awaitable[T]], *, refused_only: bool = False) -> T: ...


class S3:
    """The operations rekey sends to one S3 endpoint. Use as `async with S3.open(endpoint) as s3:`.

    Each method is one request (listings: one per page), sent again under `retry` when it fails with a
    retryable error and the operation is safe to resend (`workers.s3.ops.RESEND`); botocore itself makes
    one attempt. Failures come out as `RekeyError` subclasses naming bucket, key and operation.
    """

    def __init__(self, client: Callable[[], Awaitable[Any]], endpoint: Endpoint,
                 retry: RetryPolicy | None = None) -> None:
        self._make_client = client
        self._client: Any = None               # the aiobotocore client, made on first use
        self._client_lock = anyio.Lock()
        self._fast: FastTransport | None = None   # the hot requests (workers.s3.fast), on first use
        self._fast_lock = anyio.Lock()
        # rekey's own request builder (workers.s3.native) and its wire, for a plain setup: botocore is then
        # imported only for a call it does not build
        self._native = Native.of(endpoint)
        self._wire = wire_of(endpoint, self._native.ca_bundle) if self._native is not None else None
        self.regions: dict[str, str] = {}      # bucket -> region learned from a redirect
        self.endpoint = endpoint
        self.retry = retry
        self.requests = 0  # requests sent (every attempt), for reports and benchmarks
        self.requests_by_transport = {"fast": 0, "botocore": 0}

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, endpoint: Endpoint, *, retry: RetryPolicy | None = None) -> AsyncIterator[S3]:
        async with contextlib.AsyncExitStack() as stack:

            async def make_client() -> Any:
                # aiobotocore, and so aiohttp, only now, and imported in a thread: 0.3-0.4 s of CPU during
                # which the event loop still serves the requests in flight
                sdk = await anyio.to_thread.run_sync(importlib.import_module, "workers.s3.sdk")
                with connect_errors():
                    made = sdk.new_session(endpoint).create_client("s3", **sdk.client_kwargs(endpoint))
                    client = await stack.enter_async_context(made)
                client.meta.events.register("before-endpoint-resolution.s3", s3._learned_region)
                return client

            s3 = cls(make_client, endpoint, retry)
            stack.callback(s3._close_fast)
            yield s3  # errors of the caller's block pass through untouched

    def _close_fast(self) -> None:
        if self._fast is not None:
            self._fast.close()
        elif self._wire is not None:
            self._wire.close()

    def _learned_region(self, builtins: dict[str, Any], params: Mapping[str, Any], **_: Any) -> None:
        """Endpoint rules see the region learned for a bucket, for both transports (as botocore's redirector)."""
        region = self.regions.get(str(params.get("Bucket", "")))
        if region:
            builtins["AWS::Region"] = region

    async def _botocore(self) -> Any:
        """The botocore transport's client, made on first use; with the fast transport on, its HTTP session
        sends over the fast transport's pool (workers.s3.pool)."""
        if self._client is None:
            fast = await self._fast_transport()
            async with self._client_lock:
                if self._client is None:
                    client = await self._make_client()
                    if fast is not None:
                        route_botocore(client._endpoint.http_session, fast.wire)
                    self._client = client
        return self._client

    async def _fast_transport(self) -> FastTransport | None:
        """The fast transport (`[run] lean_requests`), made on first use: its sync botocore client is made in a
        thread, since resolving credentials may block (a profile's process, SSO, IMDS)."""
        if self._fast is None and self.endpoint.lean:
            async with self._fast_lock:
                if self._fast is None:
                    from workers.s3.fast import FastTransport
                    from workers.s3.sdk_sync import fast_client
                    with connect_errors():
                        client = await anyio.to_thread.run_sync(fast_client, self.endpoint)
                    client.meta.events.register("before-endpoint-resolution.s3", self._learned_region)
                    self._fast = FastTransport(client, self.regions, self._proxied, wire=self._wire)
        return self._fast

    async def _proxied(self) -> Any:
        """The botocore transport's HTTP session, which sends the fast transport's requests through a proxy."""
        return (await self._botocore())._endpoint.http_session

    async def _send(self, op: Op, params: dict[str, Any], *, bucket: str, key: str = "",
                    sse_c: bool = False, length: int | None = None) -> dict[str, Any]:
        """One operation: sent, and sent again under the retry policy when that is safe; classified.

        A GetObject's body is read within the attempt (into "Data"), so a failure while reading it, or a
        body shorter than `length`, is retried like a failed request."""
        def attempt() -> Awaitable[dict[str, Any]]:
            return self._attempt(op, params, bucket=bucket, key=key, sse_c=sse_c, length=length)
        if self.retry is None:
            return await attempt()
        refused_only = RESEND[op] == Resend.REFUSED_ONLY and not params.get("VersionId")
        return await self.retry(f"{op.value} s3://{bucket}/{key}", attempt, refused_only=refused_only)

    async def _attempt(self, op: Op, params: dict[str, Any], *, bucket: str, key: str,
                       sse_c: bool, length: int | None) -> dict[str, Any]:
        """Send one request once; classify any failure."""
        if log.isEnabledFor(logging.DEBUG):  # names only: parameters may carry SSE-C keys
            log.debug("%s s3://%s/%s", op.value, bucket, key)
        try:
            try:
                result = await self._transport(op, params)
            except Exception as exc:
                if not await self._learn_region(bucket, exc):
                    raise
                result = await self._transport(op, params)   # once more, to the bucket's region
            if op == Op.GET_OBJECT:
                async with result["Body"] as body:
                    result["Data"] = await body.read()
        except anyio.get_cancelled_exc_class():
            raise
        except Exception as exc:
            raise classify_s3_error(exc, op=op.value, bucket=bucket, key=key, sse_c=sse_c) from None
        if length is not None and len(result["Data"]) != length:
            raise RetryableError(f"short read: got {len(result['Data'])} of {length} bytes",
                                 bucket=bucket, key=key, op=op.value)
        return result

    async def _transport(self, op: Op, params: dict[str, Any]) -> dict[str, Any]:
        """One request built here (workers.s3.native), over the fast transport (hot operations) or botocore."""
        if self._native is not None and self._wire is not None:
            bucket = str(params.get("Bucket", ""))
            prepared = self._native.prepare(op, params, learned_region=bucket in self.regions)
            if prepared is not None:
                self._count("fast")
                got = await send_on(self._wire, prepared.method, prepared.url, prepared.headers, prepared.body)
                return answer_for(op, got.status, got.headers, got.body, prepared.url_encoded_keys)
        fast = await self._fast_transport() if op in HOT_OPS else None
        client = None if fast is not None else await self._botocore()
        if fast is not None:
            self._count("fast")
            return await fast.send(op, params)
        self._count("botocore")
        result: dict[str, Any] = await getattr(client, op.value)(**params)
        return result

    def _count(self, transport: str) -> None:
        if not self.requests:
            timeline.mark("first_request")
            timeline.started()
        self.requests += 1
        self.requests_by_transport[transport] += 1

    async def _learn_region(self, bucket: str, exc: Exception) -> bool:
        """An answer from another region (301/307, or 400 naming the bucket's region) teaches it, once:
        True when the request should go again, now to that region. A redirect that names no region is
        asked about with a HeadBucket, whose answer says it (`x-amz-bucket-region`), as botocore does."""
        region = redirect_region(exc)
        if region is None and bucket and bucket not in self.regions and is_redirect(exc):
            region = await self._ask_region(bucket)
        used = self.regions.get(bucket) or self.endpoint.region or "us-east-1"
        if not bucket or region is None or region == used:
            return False
        log.info("s3://%s is in region %s (configured: %s): sending its requests there", bucket, region,
                 self.endpoint.region or "us-east-1")
        self.regions[bucket] = region
        return True

    async def _ask_region(self, bucket: str) -> str | None:
        """The bucket's region from a HeadBucket's answer (200 or 301: S3 names the region in both)."""
        try:
            answer = await self._transport(Op.HEAD_BUCKET, {"Bucket": bucket})
            region = answer.get("BucketRegion") or \
                ((answer.get("ResponseMetadata") or {}).get("HTTPHeaders") or {}).get("x-amz-bucket-region")
        except anyio.get_cancelled_exc_class():
            raise
        except Exception as exc:
            region = redirect_region(exc)
        return str(region) if region else None

    # --- objects -----------------------------------------------------------------------------------

    async def head(self, bucket: str, key: str, *, read_enc: Encryption | None = None,
                   version_id: str | None = None, if_match: str | None = None) -> ObjectHead:
        """HeadObject; `read_enc` carries an SSE-C key."""
        params = {"Bucket": bucket, "Key": key, **cv.key_params(read_enc),
                  **cv.optional(VersionId=version_id, IfMatch=if_match)}
        resp = await self._send(Op.HEAD_OBJECT, params, bucket=bucket, key=key,
                                sse_c=cv.carries_customer_key(read_enc))
        return cv.head_from_response(key, resp)

    async def get_range(self, bucket: str, key: str, start: int, end: int, *,
                        read_enc: Encryption | None = None, if_match: str | None = None,
                        version_id: str | None = None) -> bytes:
        """Bytes [start, end] inclusive. The body is read fully; a short read is retried."""
        resp = await self._get(bucket, key, read_enc=read_enc, version_id=version_id, if_match=if_match,
                               byte_range=(start, end))
        data: bytes = resp["Data"]
        return data

    async def get(self, bucket: str, key: str, *, read_enc: Encryption | None = None,
                  version_id: str | None = None, if_match: str | None = None) -> Fetched:
        """A whole GetObject (small objects: instruction files, versions re-created, tests)."""
        resp = await self._get(bucket, key, read_enc=read_enc, version_id=version_id, if_match=if_match)
        return Fetched(data=resp["Data"], head=cv.head_from_response(key, resp))

    async def _get(self, bucket: str, key: str, *, read_enc: Encryption | None, version_id: str | None,
                   if_match: str | None = None, byte_range: tuple[int, int] | None = None) -> dict[str, Any]:
        """One GetObject, its body read fully (into "Data")."""
        range_header = f"bytes={byte_range[0]}-{byte_range[1]}" if byte_range is not None else None
        params = {"Bucket": bucket, "Key": key, **cv.key_params(read_enc),
                  **cv.optional(VersionId=version_id, IfMatch=if_match, Range=range_header)}
        return await self._send(Op.GET_OBJECT, params, bucket=bucket, key=key,
                                sse_c=cv.carries_customer_key(read_enc),
                                length=byte_range[1] - byte_range[0] + 1 if byte_range is not None else None)

    async def put(self, req: PutRequest) -> Written:
        """PutObject of a body in memory."""
        resp = await self._send(Op.PUT_OBJECT, cv.put_params(req), bucket=req.bucket, key=req.key,
                                sse_c=cv.carries_customer_key(req.encryption))
        return cv.written(resp)

    async def copy(self, req: CopyRequest) -> Written:
        """CopyObject (a 200 answer with an error body is an error)."""
        resp = await self._send(Op.COPY_OBJECT, cv.copy_params(req), bucket=req.bucket, key=req.key,
                                sse_c=cv.carries_customer_key(req.encryption, req.source.encryption))
        return cv.written(resp, (resp.get("CopyObjectResult") or {}).get("ETag") or "")

    async def delete(self, bucket: str, key: str, *, version_id: str | None = None) -> Deleted:
        resp = await self._send(Op.DELETE_OBJECT, {"Bucket": bucket, "Key": key, **cv.optional(VersionId=version_id)},
                                bucket=bucket, key=key)
        return Deleted(version_id=resp.get("VersionId") or None, delete_marker=bool(resp.get("DeleteMarker")))

    async def delete_many(self, bucket: str, keys: Sequence[str]) -> list[DeleteFailure]:
        """DeleteObjects of at most 1,000 keys (quiet); the keys it did not delete."""
        params = {"Bucket": bucket, "Delete": {"Objects": [{"Key": k} for k in keys], "Quiet": True}}
        resp = await self._send(Op.DELETE_OBJECTS, params, bucket=bucket)
        return [DeleteFailure(str(e.get("Key", "")), str(e.get("Code", "")), str(e.get("Message", "")))
                for e in resp.get("Errors", []) or []]

    async def get_tags(self, bucket: str, key: str, version_id: str | None = None) -> dict[str, str]:
        params = {"Bucket": bucket, "Key": key, **cv.optional(VersionId=version_id)}
        resp = await self._send(Op.GET_OBJECT_TAGGING, params, bucket=bucket, key=key)
        return {t["Key"]: t["Value"] for t in resp.get("TagSet", []) or []}

    async def put_tags(self, bucket: str, key: str, tags: Mapping[str, str], *,
                       version_id: str | None = None) -> None:
        params = {"Bucket": bucket, "Key": key, **cv.optional(VersionId=version_id),
                  "Tagging": {"TagSet": [{"Key": k, "Value": v} for k, v in tags.items()]}}
        await self._send(Op.PUT_OBJECT_TAGGING, params, bucket=bucket, key=key)

    async def update_object_encryption(self, bucket: str, key: str, *, kms_key_arn: str,
                                       bucket_key: bool | None = None, version_id: str | None = None) -> str | None:
        """UpdateObjectEncryption to SSE-KMS; the ETag the answer carries, if any."""
        params = cv.update_encryption_params(bucket, key, kms_key_arn=kms_key_arn, bucket_key=bucket_key,
                                             version_id=version_id)
        resp = await self._send(Op.UPDATE_OBJECT_ENCRYPTION, params, bucket=bucket, key=key)
        etag = ((resp.get("ResponseMetadata") or {}).get("HTTPHeaders") or {}).get("etag")
        return str(etag) if etag else None

    # --- multipart -----------------------------------------------------------------------------------

    async def create_upload(self, req: CreateUpload) -> str:
        """CreateMultipartUpload; the upload id."""
        resp = await self._send(Op.CREATE_MULTIPART_UPLOAD, cv.create_params(req), bucket=req.bucket,
                                key=req.key, sse_c=cv.carries_customer_key(req.encryption))
        return str(resp["UploadId"])

    async def upload_part(self, bucket: str, key: str, upload_id: str, number: int, body: bytes, *,
                          content_md5: str | None = None, encryption: Encryption | None = None) -> PartResult:
        """UploadPart; `encryption` carries the SSE-C key of an SSE-C upload."""
        params = {"Bucket": bucket, "Key": key, "UploadId": upload_id, "PartNumber": number, "Body": body,
                  **cv.optional(ContentMD5=content_md5), **cv.key_params(encryption)}
        resp = await self._send(Op.UPLOAD_PART, params, bucket=bucket, key=key,
                                sse_c=cv.carries_customer_key(encryption))
        return PartResult(number, str(resp["ETag"]), len(body))

    async def upload_part_copy(self, bucket: str, key: str, upload_id: str, number: int, source: Source,
                               start: int, end: int, *, encryption: Encryption | None = None) -> PartResult:
        """UploadPartCopy of source bytes [start, end]."""
        params = {"Bucket": bucket, "Key": key, "UploadId": upload_id, "PartNumber": number,
                  **cv.source_params(source), "CopySourceRange": f"bytes={start}-{end}",
                  **cv.key_params(encryption)}
        resp = await self._send(Op.UPLOAD_PART_COPY, params, bucket=bucket, key=key,
                                sse_c=cv.carries_customer_key(encryption, source.encryption))
        return PartResult(number, str(resp["CopyPartResult"]["ETag"]), end - start + 1)

    async def complete_upload(self, bucket: str, key: str, upload_id: str, parts: Sequence[PartResult], *,
                              encryption: Encryption | None = None, if_match: str | None = None) -> Written:
        params = {"Bucket": bucket, "Key": key, "UploadId": upload_id,
                  "MultipartUpload": cv.completed_parts(parts), **cv.key_params(encryption),
                  **cv.optional(IfMatch=if_match)}
        resp = await self._send(Op.COMPLETE_MULTIPART_UPLOAD, params, bucket=bucket, key=key,
                                sse_c=cv.carries_customer_key(encryption))
        return cv.written(resp)

    async def abort_upload(self, bucket: str, key: str, upload_id: str) -> None:
        await self._send(Op.ABORT_MULTIPART_UPLOAD, {"Bucket": bucket, "Key": key, "UploadId": upload_id},
                         bucket=bucket, key=key)

    async def list_parts(self, bucket: str, key: str, upload_id: str) -> list[PartResult]:
        parts: list[PartResult] = []
        marker = 0
        while True:
            resp = await self._send(Op.LIST_PARTS, {"Bucket": bucket, "Key": key, "UploadId": upload_id,
                                                    "PartNumberMarker": marker}, bucket=bucket, key=key)
            for p in resp.get("Parts", []) or []:
                parts.append(PartResult(int(p["PartNumber"]), str(p["ETag"]), int(p.get("Size", 0))))
            if not resp.get("IsTruncated"):
                return parts
            marker = int(resp.get("NextPartNumberMarker") or 0)
            if not marker:
                return parts

    async def list_uploads(self, bucket: str, prefix: str = "") -> list[Upload]:
        """Incomplete multipart uploads under a prefix, every page."""
        out: list[Upload] = []
        params: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
        while True:
            resp = await self._send(Op.LIST_MULTIPART_UPLOADS, params, bucket=bucket, key=prefix)
            for u in resp.get("Uploads", []) or []:
                init = u.get("Initiated")
                out.append(Upload(str(u["Key"]), str(u["UploadId"]), init.timestamp() if init else None))
            if not resp.get("IsTruncated"):
                return out
            params["KeyMarker"] = resp.get("NextKeyMarker")
            params["UploadIdMarker"] = resp.get("NextUploadIdMarker")
            if not params["KeyMarker"]:
                return out

    # --- listing -------------------------------------------------------------------------------------

    async def list_page(self, bucket: str, *, prefix: str = "", start_after: str = "",
                        token: str | None = None, max_keys: int = 1000) -> ObjectPage:
        """One ListObjectsV2 page: after `token` (a continuation token) or else after `start_after`."""
        params: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": max_keys}
        if token:
            params["ContinuationToken"] = token
        elif start_after:
            params["StartAfter"] = start_after
        return cv.object_page(await self._send(Op.LIST_OBJECTS_V2, params, bucket=bucket, key=prefix))

    async def list_pages(self, bucket: str, prefix: str = "", start_after: str = "",
                         page_size: int = 1000) -> AsyncIterator[list[ObjectRef]]:
        """ListObjectsV2 page by page, starting after `start_after` (for resume)."""
        token: str | None = None
        while True:
            page = await self.list_page(bucket, prefix=prefix, start_after=start_after, token=token,
                                        max_keys=page_size)
            refs = list(page.refs)
            yield refs
            if not page.truncated:
                return
            token = page.next_token
            if not token:  # some servers omit it: fall back to StartAfter
                if not refs:
                    return
                start_after = refs[-1].key

    async def list_versions(self, bucket: str, *, prefix: str = "", key_marker: str = "",
                            version_id_marker: str | None = None, max_keys: int = 1000) -> VersionPage:
        """One ListObjectVersions page, after `key_marker` (and `version_id_marker` within that key)."""
        params: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": max_keys}
        if key_marker:
            params["KeyMarker"] = key_marker
        if version_id_marker is not None:
            params["VersionIdMarker"] = version_id_marker
        return cv.version_page(await self._send(Op.LIST_OBJECT_VERSIONS, params, bucket=bucket, key=prefix))

    # --- buckets -------------------------------------------------------------------------------------

    async def head_bucket(self, bucket: str) -> None:
        await self._send(Op.HEAD_BUCKET, {"Bucket": bucket}, bucket=bucket)

    async def get_bucket_policy(self, bucket: str) -> str | None:
        """The bucket policy's text exactly as the server returns it; None when there is none (404)."""
        try:
            resp = await self._send(Op.GET_BUCKET_POLICY, {"Bucket": bucket}, bucket=bucket)
        except ObjectChangedError:  # NoSuchBucketPolicy; a missing bucket is BucketMissingError
            return None
        return str(resp["Policy"])

    async def put_bucket_policy(self, bucket: str, policy: str) -> None:
        await self._send(Op.PUT_BUCKET_POLICY, {"Bucket": bucket, "Policy": policy}, bucket=bucket)

    async def delete_bucket_policy(self, bucket: str) -> None:
        await self._send(Op.DELETE_BUCKET_POLICY, {"Bucket": bucket}, bucket=bucket)

    async def get_bucket_encryption(self, bucket: str) -> dict[str, Any] | None:
        """The default-encryption document (`{"Rules": [...]}`, as S3 documents it); None when unset (404).

        A document, like the policy text: rekey shows it, saves it and puts it back verbatim."""
        try:
            resp = await self._send(Op.GET_BUCKET_ENCRYPTION, {"Bucket": bucket}, bucket=bucket)
        except ObjectChangedError:  # ServerSideEncryptionConfigurationNotFoundError (404)
            return None
        config: dict[str, Any] = resp["ServerSideEncryptionConfiguration"]
        return config

    async def put_bucket_encryption(self, bucket: str, document: Mapping[str, Any]) -> None:
        await self._send(Op.PUT_BUCKET_ENCRYPTION, {"Bucket": bucket,
                                                    "ServerSideEncryptionConfiguration": dict(document)},
                         bucket=bucket)

    async def delete_bucket_encryption(self, bucket: str) -> None:
        await self._send(Op.DELETE_BUCKET_ENCRYPTION, {"Bucket": bucket}, bucket=bucket)

    async def bucket_website(self, bucket: str) -> bool:
        """GetBucketWebsite: True when the bucket has a website configuration, False on 404."""
        try:
            await self._send(Op.GET_BUCKET_WEBSITE, {"Bucket": bucket}, bucket=bucket)
        except ObjectChangedError:  # NoSuchWebsiteConfiguration
            return False
        return True


__all__ = ["S3", "RetryPolicy"]


_REDIRECT_CODES = frozenset({"PermanentRedirect", "TemporaryRedirect", "AuthorizationHeaderMalformed",
                             "IllegalLocationConstraintException"})


def is_redirect(exc: BaseException) -> bool:
    """A 301/307 answer, or an error code that means "another region"."""
    response: Mapping[str, Any] = getattr(exc, "response", None) or {}
    status = int((response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0)
    return status in (301, 307) or (response.get("Error") or {}).get("Code") in _REDIRECT_CODES


def redirect_region(exc: BaseException) -> str | None:
    """The bucket's region when an answer says the request went to the wrong one, else None."""
    response: Mapping[str, Any] = getattr(exc, "response", None) or {}
    error = response.get("Error") or {}
    meta = response.get("ResponseMetadata") or {}
    headers = meta.get("HTTPHeaders") or {}
    region = headers.get("x-amz-bucket-region") or error.get("Region")
    status = int(meta.get("HTTPStatusCode") or 0)
    if region and (status in (301, 307, 400) or error.get("Code") in _REDIRECT_CODES):
        return str(region)
    return None
