"""The S3 boundary package: `S3` (typed operations), its records, the KMS boundary, endpoint settings.

    boundary.py   S3: one method per operation; errors classified once; retries under the engine's policy
    ops.py        Op (the operations) and RESEND (which may be sent again after a failure)
    records.py    the frozen request and answer records
    convert.py    records <-> botocore parameters and answers (nothing else knows botocore's shapes)
    sdk.py        the botocore transport's configuration
    kms.py        Kms: encrypt, decrypt, generate_data_key, key_arn
"""

from workers.endpoint import Endpoint
from workers.s3.boundary import S3, RetryPolicy
from workers.s3.kms import DataKey, Kms
from workers.s3.ops import Op, Resend
from workers.s3.records import (
    Attributes,
    CopyRequest,
    CreateUpload,
    Deleted,
    DeleteFailure,
    Directive,
    Fetched,
    ObjectPage,
    PutRequest,
    Source,
    Upload,
    VersionEntry,
    VersionPage,
    Written,
)
from workers.s3.settings import parse_timestamp

__all__ = [
    "S3",
    "Attributes",
    "CopyRequest",
    "CreateUpload",
    "DataKey",
    "DeleteFailure",
    "Deleted",
    "Directive",
    "Endpoint",
    "Fetched",
    "Kms",
    "ObjectPage",
    "Op",
    "PutRequest",
    "Resend",
    "RetryPolicy",
    "Source",
    "Upload",
    "VersionEntry",
    "VersionPage",
    "Written",
    "parse_timestamp",
]
