"""The typed records of the S3 boundary: what its operations take and return (frozen dataclasses).

`ObjectHead`, `ObjectRef`, `PartResult` and `Encryption` live in `workers.model` (the engine shares them);
the records here are the ones only a request or an answer needs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from workers.model import Encryption, Mode, ObjectHead, ObjectRef

__all__ = [
    "Attributes", "CopyRequest", "CreateUpload", "DeleteFailure", "Deleted", "Directive", "Fetched",
    "ObjectPage", "PutRequest", "Source", "Upload", "VersionEntry", "VersionPage", "Written",
]


class Directive(StrEnum):
    """CopyObject's metadata and tagging directives."""

    COPY = "COPY"
    REPLACE = "REPLACE"


@dataclass(frozen=True, slots=True)
class Attributes:
    """System and user metadata a write sets: PutObject, CreateMultipartUpload, a REPLACE copy."""

    metadata: Mapping[str, str] = field(default_factory=dict)
    content_type: str | None = None
    content_encoding: str | None = None
    content_disposition: str | None = None
    content_language: str | None = None
    cache_control: str | None = None
    expires: str | None = None            # an HTTP date, as HeadObject shows it; sent only when it parses
    website_redirect: str | None = None
    storage_class: str | None = None      # None (or STANDARD): the server's default

    @classmethod
    def of(cls, head: ObjectHead, *, metadata: Mapping[str, str] | None = None) -> Attributes:
        """What a copy of `head` re-sends; `metadata` replaces the user metadata when given."""
        return cls(metadata=dict(head.metadata if metadata is None else metadata),
                   content_type=head.content_type, content_encoding=head.content_encoding,
                   content_disposition=head.content_disposition, content_language=head.content_language,
                   cache_control=head.cache_control, expires=head.expires,
                   website_redirect=head.website_redirect, storage_class=head.storage_class)


@dataclass(frozen=True, slots=True)
class Source:
    """The source of a CopyObject or UploadPartCopy."""

    bucket: str
    key: str
    version_id: str | None = None
    if_match: str | None = None               # x-amz-copy-source-if-match
    encryption: Encryption | None = None      # SSE-C: the source's customer key (copy-source SSE-C headers)

    @property
    def sse_c(self) -> bool:
        return self.encryption is not None and self.encryption.mode == Mode.SSE_C \
            and self.encryption.sse_c_key is not None


@dataclass(frozen=True, slots=True)
class CopyRequest:
    """One CopyObject. `attributes` is sent with the REPLACE metadata directive (ignored with COPY)."""

    bucket: str
    key: str
    source: Source
    encryption: Encryption | None = None      # the destination's; None: the bucket's default
    metadata_directive: Directive = Directive.REPLACE
    tagging_directive: Directive = Directive.COPY
    attributes: Attributes | None = None
    storage_class: str | None = None          # with the COPY directive (REPLACE takes it from attributes)
    if_match: str | None = None               # the destination key must still be this ETag (versions)


@dataclass(frozen=True, slots=True)
class PutRequest:
    """One PutObject of a body held in memory."""

    bucket: str
    key: str
    body: bytes
    content_md5: str | None = None
    encryption: Encryption | None = None
    attributes: Attributes | None = None
    tags: Mapping[str, str] | None = None
    if_match: str | None = None


@dataclass(frozen=True, slots=True)
class CreateUpload:
    """One CreateMultipartUpload."""

    bucket: str
    key: str
    encryption: Encryption | None = None
    attributes: Attributes | None = None
    tags: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Written:
    """What a write (PutObject, CopyObject, CompleteMultipartUpload) answered."""

    etag: str
    version_id: str | None = None
    encryption: Encryption = field(default_factory=lambda: Encryption(Mode.NONE))


@dataclass(frozen=True, slots=True)
class Fetched:
    """A whole GetObject: its body and what its headers say."""

    data: bytes = field(repr=False)
    head: ObjectHead


@dataclass(frozen=True, slots=True)
class ObjectPage:
    """One ListObjectsV2 page."""

    refs: Sequence[ObjectRef]
    truncated: bool
    next_token: str | None = None


@dataclass(frozen=True, slots=True)
class VersionEntry:
    """One delete marker of a ListObjectVersions page (versions are `ObjectRef`s)."""

    key: str
    version_id: str | None
    is_latest: bool


@dataclass(frozen=True, slots=True)
class VersionPage:
    """One ListObjectVersions page: versions in S3's order (key order, newest first), delete markers."""

    versions: Sequence[ObjectRef]
    delete_markers: Sequence[VersionEntry]
    truncated: bool
    next_key_marker: str | None = None
    next_version_id_marker: str | None = None


@dataclass(frozen=True, slots=True)
class Upload:
    """One incomplete multipart upload, as ListMultipartUploads shows it."""

    key: str
    upload_id: str
    initiated: float | None = None        # epoch seconds


@dataclass(frozen=True, slots=True)
class Deleted:
    """What a DeleteObject answered."""

    version_id: str | None = None
    delete_marker: bool = False


@dataclass(frozen=True, slots=True)
class DeleteFailure:
    """One key a DeleteObjects request did not delete."""

    key: str
    code: str
    message: str = ""
