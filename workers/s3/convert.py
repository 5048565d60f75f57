"""Records to botocore parameters and botocore answers to records: the only place that knows both shapes."""

from __future__ import annotations

import email.utils
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

from workers import sse
from workers.model import Encryption, Mode, ObjectHead, ObjectRef, PartResult
from workers.s3.records import (
    Attributes,
    CopyRequest,
    CreateUpload,
    Directive,
    ObjectPage,
    PutRequest,
    Source,
    VersionEntry,
    VersionPage,
    Written,
)


def carries_customer_key(*encs: Encryption | None) -> bool:
    """Does a request carry an SSE-C key (so a 400/403 answer means the key does not match)?"""
    return any(e is not None and e.mode == Mode.SSE_C and e.sse_c_key is not None for e in encs)


def attribute_params(attrs: Attributes | None) -> dict[str, Any]:
    """The system and user metadata a write re-sends."""
    if attrs is None:
        return {}
    params: dict[str, Any] = {"Metadata": dict(attrs.metadata)}
    for name, value in (
        ("ContentType", attrs.content_type),
        ("ContentEncoding", attrs.content_encoding),
        ("ContentDisposition", attrs.content_disposition),
        ("ContentLanguage", attrs.content_language),
        ("CacheControl", attrs.cache_control),
        ("WebsiteRedirectLocation", attrs.website_redirect),
    ):
        if value:
            params[name] = value
    expires = _http_date_parsed(attrs.expires)
    if expires is not None:
        params["Expires"] = expires
    if attrs.storage_class and attrs.storage_class != "STANDARD":
        params["StorageClass"] = attrs.storage_class
    return params


def _http_date_parsed(value: str | None) -> Any:
    if not value or "," not in value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None


def write_params(enc: Encryption | None) -> dict[str, Any]:
    return sse.write_params(enc) if enc is not None else {}


def tagging_params(tags: Mapping[str, str] | None) -> dict[str, Any]:
    return {"Tagging": urlencode(dict(tags))} if tags else {}


def source_params(source: Source) -> dict[str, Any]:
    """CopySource and its conditions and SSE-C key, for CopyObject and UploadPartCopy."""
    copy_source: dict[str, Any] = {"Bucket": source.bucket, "Key": source.key}
    if source.version_id:
        copy_source["VersionId"] = source.version_id
    params: dict[str, Any] = {"CopySource": copy_source}
    if source.if_match:
        params["CopySourceIfMatch"] = source.if_match
    if source.encryption is not None:
        params.update(sse.customer_key_params(source.encryption, "CopySource"))
    return params


def copy_params(req: CopyRequest) -> dict[str, Any]:
    params: dict[str, Any] = {"Bucket": req.bucket, "Key": req.key, **source_params(req.source),
                              "MetadataDirective": req.metadata_directive.value,
                              "TaggingDirective": req.tagging_directive.value}
    if req.metadata_directive == Directive.REPLACE:
        params.update(attribute_params(req.attributes or Attributes()))
    if req.storage_class:
        params["StorageClass"] = req.storage_class
    if req.if_match:
        params["IfMatch"] = req.if_match
    params.update(write_params(req.encryption))
    return params


def put_params(req: PutRequest) -> dict[str, Any]:
    params: dict[str, Any] = {"Bucket": req.bucket, "Key": req.key, "Body": req.body,
                              **attribute_params(req.attributes), **tagging_params(req.tags),
                              **write_params(req.encryption)}
    if req.content_md5:
        params["ContentMD5"] = req.content_md5
    if req.if_match:
        params["IfMatch"] = req.if_match
    return params


def create_params(req: CreateUpload) -> dict[str, Any]:
    return {"Bucket": req.bucket, "Key": req.key, **attribute_params(req.attributes),
            **tagging_params(req.tags), **write_params(req.encryption)}


def key_params(enc: Encryption | None) -> dict[str, Any]:
    """SSE-C key parameters (reads, UploadPart, UploadPartCopy's destination, Complete)."""
    return sse.customer_key_params(enc) if enc is not None else {}


def optional(**values: Any) -> dict[str, Any]:
    """Parameters whose value is set (not None, not empty)."""
    return {k: v for k, v in values.items() if v not in (None, "")}


def written(resp: Mapping[str, Any], etag: Any = None) -> Written:
    """A write's answer: ETag (CopyObject: from its result element), version, encryption."""
    return Written(etag=str(etag if etag is not None else resp.get("ETag") or ""),
                   version_id=str(resp["VersionId"]) if resp.get("VersionId") else None,
                   encryption=sse.observed(resp))


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


def _listed_class(value: Any) -> str | None:
    """A listing's StorageClass, None for STANDARD (a copy's default) or when not shown."""
    text = str(value or "")
    return text if text and text != "STANDARD" else None


def object_page(resp: Mapping[str, Any]) -> ObjectPage:
    refs = [
        ObjectRef(
            key=item["Key"],
            size=int(item.get("Size", 0)),
            etag=str(item.get("ETag", "")),
            last_modified=item["LastModified"].timestamp() if item.get("LastModified") else None,
            storage_class=_listed_class(item.get("StorageClass")),
        )
        for item in resp.get("Contents", []) or []
    ]
    token = resp.get("NextContinuationToken")
    return ObjectPage(refs=refs, truncated=bool(resp.get("IsTruncated")), next_token=str(token) if token else None)


def _version_ref(item: Mapping[str, Any]) -> ObjectRef:
    modified = item.get("LastModified")
    return ObjectRef(key=str(item["Key"]), size=int(item.get("Size", 0) or 0), etag=str(item.get("ETag", "")),
                     version_id=str(item["VersionId"]) if item.get("VersionId") else None,
                     last_modified=modified.timestamp() if modified is not None else None,
                     is_latest=bool(item.get("IsLatest", False)))


def version_page(resp: Mapping[str, Any]) -> VersionPage:
    markers = [VersionEntry(str(m["Key"]), str(m["VersionId"]) if m.get("VersionId") else None,
                            bool(m.get("IsLatest", False)))
               for m in resp.get("DeleteMarkers", []) or []]
    return VersionPage(versions=[_version_ref(v) for v in resp.get("Versions", []) or []],
                       delete_markers=markers, truncated=bool(resp.get("IsTruncated")),
                       next_key_marker=resp.get("NextKeyMarker") or None,
                       next_version_id_marker=resp.get("NextVersionIdMarker") or None)


def completed_parts(parts: Sequence[PartResult]) -> dict[str, Any]:
    return {"Parts": [{"PartNumber": p.part_number, "ETag": p.etag}
                      for p in sorted(parts, key=lambda p: p.part_number)]}


def update_encryption_params(bucket: str, key: str, *, kms_key_arn: str, bucket_key: bool | None,
                             version_id: str | None) -> dict[str, Any]:
    """UpdateObjectEncryption's parameters, in the shape of botocore's API model."""
    sse_kms: dict[str, Any] = {"KMSKeyArn": kms_key_arn}
    if bucket_key is not None:
        sse_kms["BucketKeyEnabled"] = bucket_key
    return {"Bucket": bucket, "Key": key, "ObjectEncryption": {"SSEKMS": sse_kms}, **optional(VersionId=version_id)}
