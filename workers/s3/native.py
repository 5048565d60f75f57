"""The hot requests built and SigV4-signed here, without botocore, where what botocore sends is known.

botocore's modules and its first client cost a run some 0.1 s of CPU before its first request, more than
the copies of a 200-object run take. For a plain setup botocore's request is fully determined by the
call, and this module builds it itself: the same method, URL, headers, body and signature as the fast
transport's (tests/unit/test_native_parity.py holds them equal, call by call, under one clock).

A plain setup (`Native.of` says None otherwise):
    - an `endpoint_url` with no path (path-style addressing, as rekey configures every named endpoint), or
      none and a region of AWS's standard partition (virtual-hosted addressing over HTTPS, for a bucket
      name that is one DNS label);
    - static credentials in the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, optionally
      AWS_SESSION_TOKEN), no `profile`, and no other AWS_* variable that changes botocore's requests
      (`_NEUTRAL` lists the ones that do not); no AWS config file that sets anything but a region or output;
    - no proxy in the environment (AWS_CA_BUNDLE or REQUESTS_CA_BUNDLE is the connections' CA bundle, as
      botocore's).
A call is built here only when its operation and every parameter are in `_OPS` and `_PARAMS`, its bucket
is a plain name, and no region was learned for it; any other call (SSE-C keys, checksums, multipart)
returns None from `prepare` and takes the fast transport's botocore path, which is imported then.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import hmac
import os
import re
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from workers.endpoint import Endpoint
from workers.s3.hosts import host_header
from workers.s3.ops import Op

# operation -> (method, path after the bucket, fixed query)
_OPS: dict[Op, tuple[str, str, str]] = {
    Op.HEAD_BUCKET: ("HEAD", "", ""),
    Op.GET_BUCKET_WEBSITE: ("GET", "", "website"),
    Op.LIST_OBJECTS_V2: ("GET", "", "list-type=2"),
    Op.HEAD_OBJECT: ("HEAD", "key", ""),
    Op.GET_OBJECT: ("GET", "key", ""),
    Op.DELETE_OBJECT: ("DELETE", "key", ""),
    Op.GET_OBJECT_TAGGING: ("GET", "key", "tagging"),
    Op.PUT_OBJECT: ("PUT", "key", ""),
    Op.COPY_OBJECT: ("PUT", "key", ""),
}
_WRITE_HEADERS = {
    "ServerSideEncryption": "x-amz-server-side-encryption",
    "SSEKMSKeyId": "x-amz-server-side-encryption-aws-kms-key-id",
    "SSEKMSEncryptionContext": "x-amz-server-side-encryption-context",
    "BucketKeyEnabled": "x-amz-server-side-encryption-bucket-key-enabled",
    "ContentType": "Content-Type", "ContentEncoding": "Content-Encoding",
    "ContentDisposition": "Content-Disposition", "ContentLanguage": "Content-Language",
    "CacheControl": "Cache-Control", "Expires": "Expires",
    "WebsiteRedirectLocation": "x-amz-website-redirect-location", "StorageClass": "x-amz-storage-class",
    "Tagging": "x-amz-tagging", "IfMatch": "If-Match", "IfNoneMatch": "If-None-Match",
}
_READ_HEADERS = {"IfMatch": "If-Match", "IfNoneMatch": "If-None-Match", "Range": "Range"}
# operation -> parameter -> ("query" | "header", name); S3's model, checked by the parity tests
_PARAMS: dict[Op, dict[str, tuple[str, str]]] = {
    Op.HEAD_BUCKET: {},
    Op.GET_BUCKET_WEBSITE: {},
    Op.LIST_OBJECTS_V2: {name: ("query", q) for name, q in (
        ("Delimiter", "delimiter"), ("EncodingType", "encoding-type"), ("MaxKeys", "max-keys"),
        ("Prefix", "prefix"), ("ContinuationToken", "continuation-token"), ("FetchOwner", "fetch-owner"),
        ("StartAfter", "start-after"))},
    Op.HEAD_OBJECT: {"VersionId": ("query", "versionId"), "PartNumber": ("query", "partNumber"),
                     **{k: ("header", v) for k, v in _READ_HEADERS.items()}},
    Op.GET_OBJECT: {"VersionId": ("query", "versionId"), "PartNumber": ("query", "partNumber"),
                    **{k: ("header", v) for k, v in _READ_HEADERS.items()}},
    Op.DELETE_OBJECT: {"VersionId": ("query", "versionId"), "IfMatch": ("header", "If-Match")},
    Op.GET_OBJECT_TAGGING: {"VersionId": ("query", "versionId")},
    Op.PUT_OBJECT: {"ContentMD5": ("header", "Content-MD5"),
                    **{k: ("header", v) for k, v in _WRITE_HEADERS.items()}},
    Op.COPY_OBJECT: {"CopySourceIfMatch": ("header", "x-amz-copy-source-if-match"),
                     "CopySourceIfNoneMatch": ("header", "x-amz-copy-source-if-none-match"),
                     "MetadataDirective": ("header", "x-amz-metadata-directive"),
                     "TaggingDirective": ("header", "x-amz-tagging-directive"),
                     **{k: ("header", v) for k, v in _WRITE_HEADERS.items()}},
}
_STRUCTURED = {Op.PUT_OBJECT: {"Body", "Metadata"}, Op.COPY_OBJECT: {"CopySource", "Metadata"}}
_PLAIN_BUCKET = re.compile(r"[a-z0-9][a-z0-9.\-_]{1,254}")
# AWS, virtual-hosted: a bucket name that is one DNS label (no dots: TLS), not an S3 Express or other
# "--" name; and a region of the standard partition (botocore's regionRegex for "aws")
_VIRTUAL_BUCKET = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")
_AWS_REGION = re.compile(r"(us|eu|ap|sa|ca|me|af|il|mx)-\w+-\d+")
# AWS_* variables that change nothing in the requests rekey sends: the region and the retries are set
# explicitly in the client's configuration, which wins over them; the credential providers after the
# environment's in botocore's chain are never asked when it has credentials; AWS_CA_BUNDLE is the wire's
# CA bundle, as botocore's (`Native.ca_bundle`)
_NEUTRAL = frozenset({"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION",
                      "AWS_DEFAULT_REGION", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_PAGER",
                      "AWS_DEFAULT_OUTPUT", "AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE", "AWS_CA_BUNDLE",
                      "AWS_EC2_METADATA_DISABLED", "AWS_EC2_METADATA_V1_DISABLED", "AWS_METADATA_SERVICE_TIMEOUT",
                      "AWS_METADATA_SERVICE_NUM_ATTEMPTS", "AWS_EC2_METADATA_SERVICE_ENDPOINT",
                      "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                      "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN",
                      "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN",
                      "AWS_ROLE_SESSION_NAME"})
_CONFIG_KEYS = re.compile(r"\s*(\[[^\]]*\]|(region|output)\s*=.*|[#;].*)?\s*")
_UNSIGNED = "UNSIGNED-PAYLOAD"
_KEYS_KEPT = 16
_signing_keys: dict[tuple[str, str, str, str], bytes] = {}


@dataclass(frozen=True, slots=True)
class Prepared:
    """A signed request as it goes on the wire: what botocore's prepared request holds, in plain types."""

    method: str
    url: str
    headers: dict[str, str] = field(repr=False)   # a session token, an SSE-C key: never in a repr
    body: bytes | memoryview | None = field(repr=False)
    url_encoded_keys: bool = False   # botocore asked for EncodingType=url itself: it decodes the keys listed


def _now() -> dt.datetime:
    """The signing clock (botocore's: UTC, naive)."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _config_is_plain(env: Mapping[str, str]) -> bool:
    """No AWS config file, or one that sets only regions and output formats."""
    path = Path(env.get("AWS_CONFIG_FILE") or Path.home() / ".aws" / "config").expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return True
    except (OSError, UnicodeDecodeError):
        return False
    return all(_CONFIG_KEYS.fullmatch(line) for line in text.splitlines())


def _credentials(env: Mapping[str, str]) -> tuple[str, str, str | None] | None:
    key, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    if not key or not secret:
        return None
    return key, secret, env.get("AWS_SESSION_TOKEN") or None


def _user_agent(endpoint_url: bool) -> str:
    """botocore's User-Agent for the aiobotocore-named session both transports use (workers.s3.sdk_sync), with
    the features a plain setup has: checksums when required (a, c), standard retries (E), credentials from
    the environment (g), and an endpoint URL if one is given (N)."""
    import aiobotocore
    import botocore  # the package only: its __init__ loads no other module of botocore
    un = os.uname()
    impl = {"cpython": "CPython", "pypy": "PyPy"}.get(sys.implementation.name, sys.implementation.name)
    py = ".".join(str(n) for n in sys.version_info[:3])
    features = "a,E,c,g,N" if endpoint_url else "a,E,c,g"
    return (f"aiobotocore/{aiobotocore.__version__} md/Botocore#{botocore.__version__} ua/2.1 "
            f"os/{un.sysname.lower()}#{un.release} md/arch#{un.machine.lower()} lang/python#{py} "
            f"md/pyimpl#{impl} m/{features} cfg/retry-mode#standard botocore/{botocore.__version__}")


class Native:
    """Builds and signs the calls of a plain setup (see the module doc)."""

    def __init__(self, base: str | None, region: str, credentials: tuple[str, str, str | None],
                 ca_bundle: str | None = None) -> None:
        self._base = base                  # scheme://authority of an endpoint URL; None: AWS, virtual-hosted
        self._region = region
        self._aws_host = "s3.amazonaws.com" if region == "us-east-1" else f"s3.{region}.amazonaws.com"
        self._credentials = credentials
        # what botocore's HTTP session verifies TLS with: AWS_CA_BUNDLE, else REQUESTS_CA_BUNDLE, else its own
        self.ca_bundle = ca_bundle
        self._user_agent = _user_agent(base is not None)

    def __repr__(self) -> str:   # never the secret
        return f"Native({self._base or self._aws_host!r}, {self._region!r})"

    @classmethod
    def of(cls, endpoint: Endpoint, env: Mapping[str, str] | None = None) -> Native | None:
        """The builder for `endpoint`, or None when its setup is not plain."""
        env = os.environ if env is None else env
        if not endpoint.lean or endpoint.profile or endpoint.ca_bundle:
            return None
        region = endpoint.region or "us-east-1"
        if endpoint.endpoint_url:
            base = _custom_base(endpoint.endpoint_url)
            if base is None:
                return None
        elif _AWS_REGION.fullmatch(region):
            base = None
        else:
            return None
        if any(k.upper().startswith("AWS_") and k.upper() not in _NEUTRAL for k in env) \
                or any(k.lower() in ("http_proxy", "https_proxy", "all_proxy") for k in env) \
                or not _config_is_plain(env):
            return None
        credentials = _credentials(env)
        bundle = env.get("AWS_CA_BUNDLE", env.get("REQUESTS_CA_BUNDLE"))
        if credentials is None or (bundle is not None and not bundle.strip()):
            return None   # botocore says what is wrong (no credentials; a blank CA bundle)
        return cls(base, region, credentials, bundle)

    def _bucket_url(self, bucket: str) -> tuple[str, str] | None:
        """The URL up to an object's path, and a bucket operation's path: path-style on an endpoint URL,
        virtual-hosted on AWS; None for a bucket name botocore's endpoint rules would address otherwise."""
        if self._base is not None:
            return (f"{self._base}/{bucket}", "") if _PLAIN_BUCKET.fullmatch(bucket) else None
        if not _VIRTUAL_BUCKET.fullmatch(bucket) or "--" in bucket:
            return None
        return f"https://{bucket}.{self._aws_host}", "/"

    def prepare(self, op: Op, params: Mapping[str, Any], *, learned_region: bool = False) -> Prepared | None:
        """The signed request botocore sends for this call, or None when it is not one built here."""
        shape = _OPS.get(op)
        bucket = params.get("Bucket")
        where = self._bucket_url(bucket) if isinstance(bucket, str) else None
        if shape is None or learned_region or where is None:
            return None
        method, path, fixed = shape
        url, bucket_path = where
        if path:
            key = params.get("Key")
            if not isinstance(key, str):
                return None
            url += "/" + quote(key.encode("utf-8"), safe="/~")
        else:
            url += bucket_path
        built = _serialize(op, params)
        if built is None:
            return None
        query, headers, body, auto_encoded = built
        pairs = ([fixed] if fixed else []) + query
        if pairs:
            url += "?" + "&".join(pairs)
        return self._signed(method, url, headers, body, auto_encoded)

    def _signed(self, method: str, url: str, headers: dict[str, str], body: bytes | None,
                auto_encoded: bool) -> Prepared:
        headers["User-Agent"] = self._user_agent
        if body is not None:
            headers["Expect"] = "100-continue"
        now = _now()
        stamp = now.strftime("%Y%m%dT%H%M%SZ")
        headers["X-Amz-Date"] = stamp
        key, secret, token = self._credentials
        if token:
            headers["X-Amz-Security-Token"] = token
        headers["X-Amz-Content-SHA256"] = _UNSIGNED
        headers["Authorization"] = self._authorization(method, url, headers, stamp, key, secret)
        headers["amz-sdk-invocation-id"] = str(uuid.uuid4())
        headers["amz-sdk-request"] = "attempt=1"
        if method not in ("GET", "HEAD"):
            headers["Content-Length"] = str(len(body or b""))
        return Prepared(method, url, headers, body or None, url_encoded_keys=auto_encoded)

    def _authorization(self, method: str, url: str, headers: Mapping[str, str], stamp: str, key: str,
                       secret: str) -> str:
        parts = urlsplit(url)
        signed = {"host": host_header(url)}
        for name, value in headers.items():
            lname = name.lower()
            if lname not in ("expect", "user-agent", "x-amzn-trace-id", "transfer-encoding"):
                signed[lname] = value
        names = sorted(signed)
        canonical = "\n".join([
            method, parts.path, _canonical_query(parts.query),
            "\n".join(f"{n}:{' '.join(signed[n].split())}" for n in names) + "\n",
            ";".join(names), headers["X-Amz-Content-SHA256"]])
        scope = f"{stamp[:8]}/{self._region}/s3/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
        signature = hmac.new(signing_key(secret, stamp[:8], self._region), to_sign.encode(),
                             hashlib.sha256).hexdigest()
        return f"AWS4-HMAC-SHA256 Credential={key}/{scope}, SignedHeaders={';'.join(names)}, Signature={signature}"


def _custom_base(url: str) -> str | None:
    """scheme://authority of an endpoint URL rekey addresses path-style; None for any other kind of URL."""
    parts = urlsplit(url)
    try:
        _ = parts.port   # a malformed port: botocore's client says what is wrong with it
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or parts.path not in ("", "/") or parts.query \
            or parts.username is not None or not parts.hostname:
        return None
    return f"{parts.scheme}://{parts.netloc}"


def signing_key(secret: str, day: str, region: str, service: str = "s3") -> bytes:
    """SigV4's signing key, derived once per secret, day, region and service (in this process's memory only)."""
    scope = (secret, day, region, service)
    found = _signing_keys.get(scope)
    if found is None:
        k = hmac.new(f"AWS4{secret}".encode(), day.encode(), hashlib.sha256).digest()
        for part in (region, service, "aws4_request"):
            k = hmac.new(k, part.encode(), hashlib.sha256).digest()
        if len(_signing_keys) >= _KEYS_KEPT:
            _signing_keys.clear()
        found = _signing_keys[scope] = k
    return found


def _canonical_query(query: str) -> str:
    if not query:
        return ""
    pairs = [pair.partition("=") for pair in query.split("&")]
    return "&".join(f"{k}={v}" for k, _, v in sorted(pairs))


def _encode(value: str) -> str:
    return quote(value.encode("utf-8"), safe="-._~")


def _text(value: Any) -> str | None:
    """A header or query value as botocore serializes it; None for a type not handled here."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dt.datetime) and value.utcoffset() == dt.timedelta(0):
        return email.utils.formatdate(value.timestamp(), usegmt=True)
    return None


_Serialized = tuple[list[str], dict[str, str], bytes | None, bool]


def _serialize(op: Op, params: Mapping[str, Any]) -> _Serialized | None:
    """The query pairs, headers and body of a call in botocore's order, and whether the listing's
    EncodingType was set here (botocore's `encoding_type_auto_set`); None if a parameter is not known."""
    known, structured, keyed = _PARAMS[op], _STRUCTURED.get(op, set()), bool(_OPS[op][1])
    query: list[str] = []
    headers: dict[str, str] = {}
    body: bytes | None = None
    for name, value in params.items():
        if name == "Bucket" or (name == "Key" and keyed):
            continue
        if name in structured:
            if name == "Body":
                if type(value) is not bytes:
                    return None
                body = value
            elif name == "Metadata":
                if not _add_metadata(headers, value):
                    return None
            elif (source := _copy_source(value)) is None:
                return None
            else:
                headers["x-amz-copy-source"] = source
            continue
        where = known.get(name)
        text = _text(value) if where is not None else None
        if where is None or text is None:
            return None
        if where[0] == "query":
            query.append(f"{_encode(where[1])}={_encode(text)}")
        else:
            headers[where[1]] = text
    auto = op == Op.LIST_OBJECTS_V2 and "EncodingType" not in params
    if auto:
        query.append("encoding-type=url")   # botocore's set_list_objects_encoding_type_url
    if op == Op.PUT_OBJECT and body is None:
        return None
    return query, headers, body, auto


def _add_metadata(headers: dict[str, str], metadata: Any) -> bool:
    if not isinstance(metadata, Mapping):
        return False
    for name, value in metadata.items():
        if not (isinstance(name, str) and isinstance(value, str) and name.isascii() and value.isascii()):
            return False   # botocore refuses it (validate_ascii_metadata): its whole path says how
        headers["x-amz-meta-" + name] = value
    return True


def _copy_source(source: Any) -> str | None:
    """botocore's x-amz-copy-source for a CopySource dict of a plain bucket (`_quote_source_header_from_dict`)."""
    if not isinstance(source, Mapping) or not set(source) <= {"Bucket", "Key", "VersionId"}:
        return None
    bucket, key, version = source.get("Bucket"), source.get("Key"), source.get("VersionId")
    if not isinstance(bucket, str) or not _PLAIN_BUCKET.fullmatch(bucket) or not isinstance(key, str) \
            or not isinstance(version, str | None):
        return None
    quoted = quote(f"{bucket}/{key}".encode(), safe="-._~/")
    return quoted if version is None else f"{quoted}?versionId={version}"


__all__ = ["Native"]
