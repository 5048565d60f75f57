"""The operations the boundary sends, and which of them are safe to send again after a failure."""

from __future__ import annotations

from enum import StrEnum


class Op(StrEnum):
    """One S3 operation; the value is botocore's method name (and the `op` errors name)."""

    HEAD_OBJECT = "head_object"
    GET_OBJECT = "get_object"
    PUT_OBJECT = "put_object"
    COPY_OBJECT = "copy_object"
    DELETE_OBJECT = "delete_object"
    DELETE_OBJECTS = "delete_objects"
    GET_OBJECT_TAGGING = "get_object_tagging"
    PUT_OBJECT_TAGGING = "put_object_tagging"
    UPDATE_OBJECT_ENCRYPTION = "update_object_encryption"
    CREATE_MULTIPART_UPLOAD = "create_multipart_upload"
    UPLOAD_PART = "upload_part"
    UPLOAD_PART_COPY = "upload_part_copy"
    COMPLETE_MULTIPART_UPLOAD = "complete_multipart_upload"
    ABORT_MULTIPART_UPLOAD = "abort_multipart_upload"
    LIST_PARTS = "list_parts"
    LIST_OBJECTS_V2 = "list_objects_v2"
    LIST_OBJECT_VERSIONS = "list_object_versions"
    LIST_MULTIPART_UPLOADS = "list_multipart_uploads"
    HEAD_BUCKET = "head_bucket"
    GET_BUCKET_ENCRYPTION = "get_bucket_encryption"
    PUT_BUCKET_ENCRYPTION = "put_bucket_encryption"
    DELETE_BUCKET_ENCRYPTION = "delete_bucket_encryption"
    GET_BUCKET_POLICY = "get_bucket_policy"
    PUT_BUCKET_POLICY = "put_bucket_policy"
    DELETE_BUCKET_POLICY = "delete_bucket_policy"
    GET_BUCKET_WEBSITE = "get_bucket_website"


# What the fast transport carries (workers.s3.fast), and rekey's own request builder some of (workers.s3.native).
HOT_OPS = frozenset({Op.HEAD_OBJECT, Op.GET_OBJECT, Op.PUT_OBJECT, Op.COPY_OBJECT, Op.UPLOAD_PART,
                     Op.UPLOAD_PART_COPY, Op.HEAD_BUCKET, Op.DELETE_OBJECT, Op.LIST_OBJECTS_V2,
                     Op.GET_OBJECT_TAGGING, Op.GET_BUCKET_WEBSITE, Op.CREATE_MULTIPART_UPLOAD,
                     Op.ABORT_MULTIPART_UPLOAD, Op.LIST_PARTS, Op.COMPLETE_MULTIPART_UPLOAD})


class Resend(StrEnum):
    """When a failed request may be sent again."""

    ALWAYS = "always"          # the same request twice has the effect of once
    REFUSED_ONLY = "refused"   # only when the server certainly did not act: a throttle, or no connection


# Why each is safe to resend:
#   reads, listings, HEADs: no effect.
#   PutObject, UploadPart, UploadPartCopy, CopyObject: the same bytes (or source, guarded by
#     CopySourceIfMatch) to the same key or part; a second write replaces the first with the same thing.
#   CreateMultipartUpload: a lost answer leaves an upload nobody knows the id of; the intent journalled
#     before it (workers.multipart) lets the next run or `rekey cleanup` abort it.
#   CompleteMultipartUpload: a second Complete of an upload the first one completed answers NoSuchUpload
#     (or 200 on AWS, which keeps completed uploads a while); the HeadObject verification after it decides.
#   AbortMultipartUpload, tagging, bucket settings, UpdateObjectEncryption: the same state twice.
#   DeleteObject without a version id on a versioned bucket adds a delete marker each time, so it is
#     resent only when the server refused it (`delete` builds DeleteObject with a version id: ALWAYS).
RESEND: dict[Op, Resend] = {op: Resend.ALWAYS for op in Op}
RESEND[Op.DELETE_OBJECT] = Resend.REFUSED_ONLY
