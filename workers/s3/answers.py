"""The fast transport's answers: status, headers and the small XML bodies of S3, read straight into botocore's
response shape, so that one converter (workers.s3.convert) serves both transports. Errors keep botocore's
`ClientError.response` shape (`FastError`), so the one classifier applies unchanged."""

from __future__ import annotations

import email.utils
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote_plus

from workers.s3.ops import Op
from workers.s3.settings import parse_timestamp


class FastError(Exception):
    """An S3 error answer, shaped like botocore's ClientError (`.response`) for the classifier."""

    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str],
                 region: str | None = None) -> None:
        super().__init__(f"{code or status}: {message}")
        error: dict[str, str] = {"Code": code, "Message": message}
        if region:
            error["Region"] = region
        self.response = {"Error": error,
                         "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": dict(headers)}}


# response header -> botocore response field
_RESPONSE_HEADERS = {
    "etag": "ETag", "content-type": "ContentType", "content-encoding": "ContentEncoding",
    "content-disposition": "ContentDisposition", "content-language": "ContentLanguage",
    "cache-control": "CacheControl", "x-amz-website-redirect-location": "WebsiteRedirectLocation",
    "x-amz-storage-class": "StorageClass", "x-amz-server-side-encryption": "ServerSideEncryption",
    "x-amz-server-side-encryption-aws-kms-key-id": "SSEKMSKeyId",
    "x-amz-server-side-encryption-customer-algorithm": "SSECustomerAlgorithm",
    "x-amz-server-side-encryption-customer-key-md5": "SSECustomerKeyMD5",
    "x-amz-version-id": "VersionId", "expires": "ExpiresString", "content-range": "ContentRange",
}
_WRITE_FIELDS = frozenset({"ETag", "ServerSideEncryption", "SSEKMSKeyId", "SSECustomerAlgorithm",
                           "SSECustomerKeyMD5", "VersionId", "BucketKeyEnabled"})
_REASONS = {301: "Moved Permanently", 307: "Temporary Redirect", 400: "Bad Request", 403: "Forbidden",
            404: "Not Found", 405: "Method Not Allowed", 409: "Conflict", 412: "Precondition Failed",
            416: "Requested Range Not Satisfiable", 500: "Internal Server Error", 501: "Not Implemented",
            503: "Service Unavailable"}


def _fields(headers: Mapping[str, str]) -> dict[str, Any]:
    """Every response field botocore reads from headers, for the operations here."""
    out: dict[str, Any] = {field: headers[h] for h, field in _RESPONSE_HEADERS.items() if h in headers}
    if "x-amz-server-side-encryption-bucket-key-enabled" in headers:
        out["BucketKeyEnabled"] = headers["x-amz-server-side-encryption-bucket-key-enabled"].lower() == "true"
    if "x-amz-delete-marker" in headers:
        out["DeleteMarker"] = headers["x-amz-delete-marker"].lower() == "true"
    return out


def _raise_for(status: int, headers: Mapping[str, str], body: bytes) -> None:
    """An error answer (status 300 or more) as a FastError: code, message and region from the XML body."""
    if status < 300:
        return
    root = _xml(body)
    code, message, region = _text(root, "Code"), _text(root, "Message"), _text(root, "Region")
    raise FastError(status, code or str(status), message or _REASONS.get(status, ""), headers, region or None)


def head_answer(status: int, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
    _raise_for(status, headers, b"")  # HEAD answers carry no body
    out = _fields(headers)
    out["ContentLength"] = int(headers.get("content-length", "0") or 0)
    out["Metadata"] = {k[len("x-amz-meta-"):]: v for k, v in headers.items() if k.startswith("x-amz-meta-")}
    if "last-modified" in headers:
        out["LastModified"] = email.utils.parsedate_to_datetime(headers["last-modified"])
    if "x-amz-mp-parts-count" in headers:
        out["PartsCount"] = int(headers["x-amz-mp-parts-count"])
    if "x-amz-tagging-count" in headers:
        out["TagCount"] = int(headers["x-amz-tagging-count"])
    return out


def get_answer(status: int, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
    _raise_for(status, headers, body)
    out = head_answer(status, headers, b"")
    out["ContentLength"] = len(body)
    out["Body"] = BytesBody(body)
    return out


def write_answer(status: int, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
    """PutObject, UploadPart, DeleteObject, HeadBucket: everything is in the headers."""
    _raise_for(status, headers, body)
    return {k: v for k, v in _fields(headers).items() if k in _WRITE_FIELDS or k == "DeleteMarker"}


def _body_unless_error(status: int, headers: Mapping[str, str], body: bytes) -> ET.Element | None:
    """The XML body of an answer that may be 200 with an <Error> body (CopyObject, UploadPartCopy,
    CompleteMultipartUpload: the server failed after it began), raised as the 500 it is (as botocore does)."""
    root = _xml(body)
    if status < 300 and root is not None and _local(root.tag) == "Error":
        status = 500
    _raise_for(status, headers, body)
    return root


def copy_answer(status: int, headers: Mapping[str, str], body: bytes,
                result: str = "CopyObjectResult") -> dict[str, Any]:
    """CopyObject and UploadPartCopy (see `_body_unless_error`)."""
    root = _body_unless_error(status, headers, body)
    out = {k: v for k, v in _fields(headers).items() if k in _WRITE_FIELDS and k != "ETag"}
    out[result] = {"ETag": _text(root, "ETag")} if root is not None else {}
    return out


def part_copy_answer(status: int, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
    return copy_answer(status, headers, body, "CopyPartResult")


def create_upload_answer(status: int, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
    """CreateMultipartUpload: the upload id from the XML body, the encryption from the headers."""
    _raise_for(status, headers, body)
    root = _xml(body)
    out = {k: v for k, v in _fields(headers).items() if k in _WRITE_FIELDS}
    for child in root if root is not None else ():
        if _local(child.tag) in ("Bucket", "Key", "UploadId"):
            out[_local(child.tag)] = child.text or ""
    return out


def complete_answer(status: int, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
    """CompleteMultipartUpload (see `_body_unless_error`): the ETag is in the XML body, the version and
    encryption in the headers."""
    root = _body_unless_error(status, headers, body)
    out = {k: v for k, v in _fields(headers).items() if k in _WRITE_FIELDS and k != "ETag"}
    if root is not None:
        for name in ("Location", "Bucket", "Key", "ETag"):
            value = _text(root, name)
            if value:
                out[name] = value
    return out


def list_parts_answer(status: int, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
    """ListParts: the parts (number, ETag, size) and where the next page starts."""
    _raise_for(status, headers, body)
    root = _xml(body)
    out: dict[str, Any] = {"Parts": []}
    for child in root if root is not None else ():
        tag = _local(child.tag)
        if tag == "Part":
            out["Parts"].append({"PartNumber": int(_text(child, "PartNumber") or 0), "ETag": _text(child, "ETag"),
                                 "Size": int(_text(child, "Size") or 0)})
        elif tag == "IsTruncated":
            out[tag] = (child.text or "").strip().lower() == "true"
        elif tag in ("NextPartNumberMarker", "PartNumberMarker", "MaxParts") and (child.text or "").strip():
            out[tag] = int(child.text or 0)
        elif tag == "UploadId":
            out[tag] = child.text or ""
    return out


def head_bucket_answer(status: int, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
    _raise_for(status, headers, b"")
    region = headers.get("x-amz-bucket-region")
    return {"BucketRegion": region} if region else {}


def website_answer(status: int, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
    """GetBucketWebsite: whether there is one is all rekey asks (its absence is an error answer, 404)."""
    _raise_for(status, headers, body)
    return {}


_LIST_TOP = ("Name", "Prefix", "Delimiter", "StartAfter", "ContinuationToken", "NextContinuationToken",
             "EncodingType")
_LIST_DECODED = ("Delimiter", "Prefix", "StartAfter")   # botocore's decode_list_object_v2, with Contents' Key


def list_answer(status: int, headers: Mapping[str, str], body: bytes, *, decode: bool) -> dict[str, Any]:
    """ListObjectsV2, read into botocore's response shape (its parser takes some 70 ms for a page of 1,000
    keys); keys URL-decoded as botocore decodes them when it asked for EncodingType=url itself."""
    _raise_for(status, headers, body)
    root = _xml(body)
    out: dict[str, Any] = {}
    contents: list[dict[str, Any]] = []
    prefixes: list[dict[str, str]] = []
    for child in root if root is not None else ():
        tag = _local(child.tag)
        if tag == "Contents":
            contents.append(_listed(child))
        elif tag == "CommonPrefixes":
            prefixes.append({"Prefix": _text(child, "Prefix")})
        elif tag in _LIST_TOP:
            out[tag] = child.text or ""
        elif tag in ("KeyCount", "MaxKeys"):
            out[tag] = int(child.text or 0)
        elif tag == "IsTruncated":
            out[tag] = (child.text or "").strip().lower() == "true"
    if contents:
        out["Contents"] = contents
    if prefixes:
        out["CommonPrefixes"] = prefixes
    if decode and out.get("EncodingType") == "url":
        for name in _LIST_DECODED:
            if name in out:
                out[name] = unquote_plus(out[name])
        for item in contents:
            item["Key"] = unquote_plus(item["Key"])
        for item in prefixes:
            item["Prefix"] = unquote_plus(item["Prefix"])
    return out


def _listed(element: ET.Element) -> dict[str, Any]:
    item: dict[str, Any] = {}
    for child in element:
        tag, text = _local(child.tag), child.text or ""
        if tag == "Size":
            item[tag] = int(text or 0)
        elif tag == "LastModified":
            item[tag] = parse_timestamp(text)
        elif tag in ("Key", "ETag", "StorageClass"):
            item[tag] = text
    return item


def tagging_answer(status: int, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
    """GetObjectTagging: the TagSet (keys and values as sent: XML-escaped, never URL-encoded)."""
    _raise_for(status, headers, body)
    root = _xml(body)
    tags: list[dict[str, str]] = []
    for child in root if root is not None else ():
        if _local(child.tag) == "TagSet":
            tags.extend({"Key": _text(tag, "Key"), "Value": _text(tag, "Value")} for tag in child)
    out: dict[str, Any] = {"TagSet": tags}
    if "x-amz-version-id" in headers:
        out["VersionId"] = headers["x-amz-version-id"]
    return out


ANSWERS = {Op.HEAD_OBJECT: head_answer, Op.GET_OBJECT: get_answer, Op.PUT_OBJECT: write_answer,
            Op.UPLOAD_PART: write_answer, Op.DELETE_OBJECT: write_answer, Op.COPY_OBJECT: copy_answer,
            Op.UPLOAD_PART_COPY: part_copy_answer, Op.HEAD_BUCKET: head_bucket_answer,
            Op.GET_OBJECT_TAGGING: tagging_answer, Op.GET_BUCKET_WEBSITE: website_answer,
            Op.CREATE_MULTIPART_UPLOAD: create_upload_answer, Op.COMPLETE_MULTIPART_UPLOAD: complete_answer,
            Op.ABORT_MULTIPART_UPLOAD: write_answer, Op.LIST_PARTS: list_parts_answer}


def answer_for(op: Op, status: int, headers: dict[str, str], body: bytes, url_encoded_keys: bool) -> dict[str, Any]:
    """An answer of either request builder in botocore's response shape (or a `FastError`)."""
    if op == Op.LIST_OBJECTS_V2:
        return list_answer(status, headers, body, decode=url_encoded_keys)
    return ANSWERS[op](status, headers, body)


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


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _xml(body: bytes) -> ET.Element | None:
    if not body.strip():
        return None
    try:
        return ET.fromstring(body)
    except ET.ParseError:
        return None


def _text(root: ET.Element | None, name: str) -> str:
    if root is None:
        return ""
    for child in root:
        if _local(child.tag) == name:
            return child.text or ""
    return ""
