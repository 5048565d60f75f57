"""A lean signed-HTTP path for the requests on the hot path: HeadObject, CopyObject, GetObject (ranges),
PutObject and UploadPart.

botocore spends about 1.3 ms of CPU on each request here (event hooks, user agent, validation,
parsing), more than the server does, and copies bodies through file objects. These operations are sent
with a small SigV4 signer over aiohttp instead (bodies as UNSIGNED-PAYLOAD, always with Content-MD5),
with the same parameters in and the same response shape out, so nothing above
this module changes. Anything this path does not handle (other operations, parameters it does not
know, non-ASCII metadata) goes through botocore. Errors keep botocore's `response` shape so the one
classifier (`classify_s3_error`) applies unchanged.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import hashlib
import hmac
import ssl
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import aiohttp
from yarl import URL

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

# botocore parameter -> request header, for the parameters these two operations may carry.
_HEADER_PARAMS = {
    "IfMatch": "If-Match",
    "Range": "Range",
    "ContentMD5": "Content-MD5",
    "Tagging": "x-amz-tagging",
    "CopySourceIfMatch": "x-amz-copy-source-if-match",
    "MetadataDirective": "x-amz-metadata-directive",
    "TaggingDirective": "x-amz-tagging-directive",
    "ContentType": "Content-Type",
    "ContentEncoding": "Content-Encoding",
    "ContentDisposition": "Content-Disposition",
    "ContentLanguage": "Content-Language",
    "CacheControl": "Cache-Control",
    "WebsiteRedirectLocation": "x-amz-website-redirect-location",
    "StorageClass": "x-amz-storage-class",
    "ServerSideEncryption": "x-amz-server-side-encryption",
    "SSEKMSKeyId": "x-amz-server-side-encryption-aws-kms-key-id",
    "SSEKMSEncryptionContext": "x-amz-server-side-encryption-context",
    "SSECustomerAlgorithm": "x-amz-server-side-encryption-customer-algorithm",
    "CopySourceSSECustomerAlgorithm": "x-amz-copy-source-server-side-encryption-customer-algorithm",
}
_KEY_PARAMS = {"SSECustomerKey": "x-amz-server-side-encryption-customer-",
               "CopySourceSSECustomerKey": "x-amz-copy-source-server-side-encryption-customer-"}
_HANDLED = {"Bucket", "Key", "VersionId", "CopySource", "Metadata", "Expires", "BucketKeyEnabled",
            "Body", "UploadId", "PartNumber", *_HEADER_PARAMS, *_KEY_PARAMS}
_OPERATIONS = ("head_object", "copy_object", "get_object", "put_object", "upload_part", "head_bucket",
               "delete_object")

# response header -> botocore response field (HeadObject)
_RESPONSE_HEADERS = {
    "etag": "ETag", "content-type": "ContentType", "content-encoding": "ContentEncoding",
    "content-disposition": "ContentDisposition", "content-language": "ContentLanguage",
    "cache-control": "CacheControl", "x-amz-website-redirect-location": "WebsiteRedirectLocation",
    "x-amz-storage-class": "StorageClass", "x-amz-server-side-encryption": "ServerSideEncryption",
    "x-amz-server-side-encryption-aws-kms-key-id": "SSEKMSKeyId",
    "x-amz-server-side-encryption-customer-algorithm": "SSECustomerAlgorithm",
    "x-amz-server-side-encryption-customer-key-md5": "SSECustomerKeyMD5",
    "x-amz-version-id": "VersionId", "expires": "ExpiresString",
}


_COPY_RESPONSE_HEADERS = ("x-amz-server-side-encryption", "x-amz-server-side-encryption-aws-kms-key-id",
                          "x-amz-server-side-encryption-customer-algorithm",
                          "x-amz-server-side-encryption-customer-key-md5", "x-amz-version-id")


class LeanError(Exception):
    """An S3 error answer, shaped like botocore's ClientError (`.response`) for the classifier."""

    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str]) -> None:
        super().__init__(f"{code or status}: {message}")
        self.response = {"Error": {"Code": code, "Message": message},
                         "ResponseMetadata": {"HTTPStatusCode": status,
                                              "HTTPHeaders": {k.lower(): v for k, v in headers.items()}}}


def supports(op: str, params: Mapping[str, Any]) -> bool:
    """Can this request go the lean way? Only plain ASCII metadata, only parameters mapped here."""
    if op not in _OPERATIONS or not set(params) <= _HANDLED:
        return False
    if "Body" in params and not isinstance(params["Body"], (bytes, bytearray, memoryview)):
        return False
    meta = params.get("Metadata") or {}
    return all(str(k).isascii() and str(v).isascii() and "\n" not in str(v) for k, v in meta.items())


class Signer:
    """AWS Signature Version 4 for S3, with the day's signing key cached."""

    def __init__(self, region: str) -> None:
        self.region = region
        self._day = ""
        self._access = ""
        self._key = b""

    def _signing_key(self, secret: str, access: str, day: str) -> bytes:
        if day != self._day or access != self._access:
            k = hmac.new(("AWS4" + secret).encode(), day.encode(), hashlib.sha256).digest()
            for part in (self.region, "s3", "aws4_request"):
                k = hmac.new(k, part.encode(), hashlib.sha256).digest()
            self._day, self._access, self._key = day, access, k
        return self._key

    def sign(self, method: str, host: str, path: str, query: str, headers: dict[str, str], *,
             access: str, secret: str, token: str | None, payload: str = EMPTY_SHA256) -> None:
        now = dt.datetime.now(dt.UTC)
        amz_date = now.strftime("%Y%m%dT%H%M%SZ")
        day = amz_date[:8]
        headers["host"] = host
        headers["x-amz-date"] = amz_date
        headers["x-amz-content-sha256"] = payload
        if token:
            headers["x-amz-security-token"] = token
        canon = {k.lower(): " ".join(str(v).strip().split()) for k, v in headers.items()}
        names = sorted(canon)
        signed = ";".join(names)
        request = "\n".join([method, path, query, *(f"{n}:{canon[n]}" for n in names), "", signed, payload])
        scope = f"{day}/{self.region}/s3/aws4_request"
        to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(request.encode()).hexdigest()}"
        signature = hmac.new(self._signing_key(secret, access, day), to_sign.encode(), hashlib.sha256).hexdigest()
        headers["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={access}/{scope}, SignedHeaders={signed}, "
                                    f"Signature={signature}")


def _quote_path(text: str) -> str:
    return quote(text, safe="/~")


class LeanClient:
    """HeadObject and CopyObject over aiohttp, signed here. Path-style addressing."""

    def __init__(self, endpoint_url: str, region: str, credentials: Any, *, ca_bundle: str | None,
                 max_connections: int, timeout: float) -> None:
        url = URL(endpoint_url)
        self._base = f"{url.scheme}://{url.host}" + (f":{url.explicit_port}" if url.explicit_port else "")
        default_port = {"http": 80, "https": 443}.get(url.scheme)
        self._host = str(url.host) if url.port in (None, default_port) else f"{url.host}:{url.port}"
        self._prefix = url.path.rstrip("/")
        self._signer = Signer(region)
        self._credentials = credentials
        ssl_ctx: ssl.SSLContext | bool = True
        if url.scheme == "https" and ca_bundle:
            ssl_ctx = ssl.create_default_context(cafile=ca_bundle)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=max_connections, ssl=ssl_ctx),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=timeout),
            auto_decompress=False, skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"))
        self._session._retry_connection = False  # no silent resend: the boundary owns retries

    async def close(self) -> None:
        await self._session.close()

    async def _send(self, method: str, bucket: str, key: str, query: dict[str, str],
                    headers: dict[str, str], body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
        creds = await self._credentials.get_frozen_credentials()
        path = f"{self._prefix}/{_quote_path(bucket)}/{_quote_path(key)}"
        qs = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(query.items()))
        self._signer.sign(method, self._host, path, qs, headers, access=creds.access_key,
                          secret=creds.secret_key, token=creds.token,
                          payload=EMPTY_SHA256 if body is None else "UNSIGNED-PAYLOAD")
        url = URL(self._base + path + (f"?{qs}" if qs else ""), encoded=True)
        async with self._session.request(method, url, headers=headers, data=body,
                                         allow_redirects=False) as resp:
            body = await resp.read()
            return resp.status, dict(resp.headers), body

    @staticmethod
    def _headers(params: Mapping[str, Any]) -> dict[str, str]:
        headers: dict[str, str] = {}
        for name, header in _HEADER_PARAMS.items():
            if params.get(name) is not None:
                headers[header] = str(params[name])
        for name, prefix in _KEY_PARAMS.items():
            raw = params.get(name)
            if raw is not None:
                raw = raw if isinstance(raw, bytes) else str(raw).encode()
                headers[prefix + "key"] = base64.b64encode(raw).decode()
                headers[prefix + "key-MD5"] = base64.b64encode(hashlib.md5(raw).digest()).decode()
        if params.get("BucketKeyEnabled") is not None:
            headers["x-amz-server-side-encryption-bucket-key-enabled"] = str(bool(params["BucketKeyEnabled"])).lower()
        if params.get("Expires") is not None:
            headers["Expires"] = email.utils.format_datetime(params["Expires"], usegmt=True)
        for k, v in (params.get("Metadata") or {}).items():
            headers[f"x-amz-meta-{k}"] = str(v)
        return headers

    async def head_object(self, params: Mapping[str, Any]) -> dict[str, Any]:
        query = {"versionId": params["VersionId"]} if params.get("VersionId") else {}
        status, headers, _ = await self._send("HEAD", params["Bucket"], params["Key"], query,
                                              self._headers(params))
        _raise_for(status, headers)
        return head_response(headers)

    async def head_bucket(self, params: Mapping[str, Any]) -> dict[str, Any]:
        status, headers, _ = await self._send("HEAD", params["Bucket"], "", {}, {})
        _raise_for(status, headers)
        return {}

    async def delete_object(self, params: Mapping[str, Any]) -> dict[str, Any]:
        query = {"versionId": params["VersionId"]} if params.get("VersionId") else {}
        status, headers, body = await self._send("DELETE", params["Bucket"], params["Key"], query, {})
        _raise_for(status, headers, body)
        version = {k.lower(): v for k, v in headers.items()}.get("x-amz-version-id")
        return {"VersionId": version} if version else {}

    async def copy_object(self, params: Mapping[str, Any]) -> dict[str, Any]:
        src = params["CopySource"]
        source = f"/{_quote_path(src['Bucket'])}/{_quote_path(src['Key'])}"
        if src.get("VersionId"):
            source += f"?versionId={quote(src['VersionId'], safe='')}"
        headers = self._headers(params)
        headers["x-amz-copy-source"] = source
        status, rh, body = await self._send("PUT", params["Bucket"], params["Key"], {}, headers)
        root = _xml(body)
        # S3 may answer a copy with 200 and an <Error> body (the copy failed after it started).
        if status >= 300 or (root is not None and _local(root.tag) == "Error"):
            code, message = _error_fields(root)
            raise LeanError(status if status >= 300 else 500, code or str(status), message, rh)
        result: dict[str, Any] = {"CopyObjectResult": {}}
        if root is not None:
            for child in root:
                if _local(child.tag) == "ETag":
                    result["CopyObjectResult"]["ETag"] = child.text or ""
        lower = {k.lower(): v for k, v in rh.items()}
        for header in _COPY_RESPONSE_HEADERS:
            if header in lower:
                result[_RESPONSE_HEADERS[header]] = lower[header]
        return result


    async def get_object(self, params: Mapping[str, Any]) -> dict[str, Any]:
        query = {"versionId": params["VersionId"]} if params.get("VersionId") else {}
        status, headers, body = await self._send("GET", params["Bucket"], params["Key"], query,
                                                 self._headers(params))
        _raise_for(status, headers, body)
        out = head_response(headers)
        out["ContentLength"] = len(body)
        lower = {k.lower(): v for k, v in headers.items()}
        if "content-range" in lower:
            out["ContentRange"] = lower["content-range"]
        out["Body"] = BytesBody(body)
        return out

    async def put_object(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return await self._put(params, {})

    async def upload_part(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return await self._put(params, {"partNumber": str(params["PartNumber"]), "uploadId": params["UploadId"]})

    async def _put(self, params: Mapping[str, Any], query: dict[str, str]) -> dict[str, Any]:
        body = bytes(params.get("Body") or b"")
        status, headers, answer = await self._send("PUT", params["Bucket"], params["Key"], query,
                                                   self._headers(params), body)
        _raise_for(status, headers, answer)
        lower = {k.lower(): v for k, v in headers.items()}
        return {field: lower[h] for h, field in _RESPONSE_HEADERS.items()
                if h in lower and field in _WRITE_FIELDS}


class BytesBody:
    """A response body already read, with the async interface of botocore's streaming body."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    async def __aenter__(self) -> BytesBody:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def read(self) -> bytes:
        return self._data


_WRITE_FIELDS = ("ETag", "ServerSideEncryption", "SSEKMSKeyId", "SSECustomerAlgorithm", "SSECustomerKeyMD5",
                 "VersionId")

def _raise_for(status: int, headers: Mapping[str, str], body: bytes = b"") -> None:
    """An error answer (status 300 or more) as a LeanError: code and message from the XML body if any."""
    if status < 300:
        return
    code, message = _error_fields(_xml(body))
    raise LeanError(status, code or str(status), message or _REASONS.get(status, ""), headers)


_REASONS = {400: "Bad Request", 403: "Forbidden", 404: "Not Found", 412: "Precondition Failed",
            500: "Internal Server Error", 501: "Not Implemented", 503: "Slow Down"}


def head_response(headers: Mapping[str, str]) -> dict[str, Any]:
    """HeadObject's response in botocore's shape, from the HTTP headers."""
    lower = {k.lower(): v for k, v in headers.items()}
    out: dict[str, Any] = {field: lower[h] for h, field in _RESPONSE_HEADERS.items() if h in lower}
    out["ContentLength"] = int(lower.get("content-length", "0") or 0)
    out["Metadata"] = {k[len("x-amz-meta-"):]: v for k, v in lower.items() if k.startswith("x-amz-meta-")}
    if "last-modified" in lower:
        out["LastModified"] = email.utils.parsedate_to_datetime(lower["last-modified"])
    if "x-amz-server-side-encryption-bucket-key-enabled" in lower:
        out["BucketKeyEnabled"] = lower["x-amz-server-side-encryption-bucket-key-enabled"].lower() == "true"
    if "x-amz-mp-parts-count" in lower:
        out["PartsCount"] = int(lower["x-amz-mp-parts-count"])
    return out


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _xml(body: bytes) -> ET.Element | None:
    if not body.strip():
        return None
    try:
        return ET.fromstring(body)
    except ET.ParseError:
        return None


def _error_fields(root: ET.Element | None) -> tuple[str, str]:
    if root is None:
        return "", ""
    code = message = ""
    for child in root:
        if _local(child.tag) == "Code":
            code = child.text or ""
        elif _local(child.tag) == "Message":
            message = child.text or ""
    return code, message
