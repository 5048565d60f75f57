"""The one error taxonomy of rekey, and the single place S3 errors are classified.

    RekeyError                      every error rekey raises on purpose; carries bucket, key and operation
    ├── FatalError                  the run cannot go on: stop, exit 3
    │   ├── ConfigError             bad configuration or key file (exit 2)
    │   ├── CredentialsError        missing or expired credentials, signature refused
    │   ├── AccessDeniedError       KMS access denied, bucket not accessible at all
    │   ├── BucketMissingError      the source or destination bucket does not exist
    │   ├── EndpointError           endpoint unreachable (after the retrier's wait for it)
    │   ├── WrongRegionError        the bucket is in another region and its answer did not say which
    │   └── CheckpointError         checkpoint unusable: corrupt, or written under another config
    ├── ObjectError                 this object fails; it is recorded and the run goes on
    │   ├── ObjectChangedError      ETag changed or object deleted since planning (412 / 404)
    │   │   └── ObjectGoneError         404 on the object: deleted since it was listed
    │   ├── WrongKeyError           an SSE-C or client-side key does not open this object
    │   ├── KeyRequiredError        HEAD/GET answered 400 without an SSE-C key: the object needs one
    │   ├── CorruptObjectError      authentication tag, commitment or format check failed
    │   ├── VerifyError             the write succeeded but the result is not what was asked
    │   ├── LegacyFormatRefusedError  unauthenticated legacy client-side format without allow_legacy
    │   └── UnsupportedError        the endpoint or the format cannot do this (after fallbacks)
    └── RetryableError              try again later (throttled, 5xx, reset); retry_after in seconds

Cancellation is never an error: anyio's cancellation exception is re-raised untouched by
`classify_s3_error`'s callers.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any


class RekeyError(Exception):
    """Base of every error rekey raises on purpose."""

    def __init__(self, message: str, *, bucket: str = "", key: str = "", op: str = "", code: str = "",
                 status: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.bucket = bucket
        self.key = key
        self.op = op
        self.code = code        # the server's error code, when it answered with one
        self.status = status    # the HTTP status of the answer, when there was one

    def where(self) -> str:
        parts = []
        if self.op:
            parts.append(self.op)
        if self.bucket or self.key:
            parts.append(f"s3://{self.bucket}/{self.key}" if self.key else f"s3://{self.bucket}")
        return " ".join(parts)

    def __str__(self) -> str:
        where = self.where()
        return f"{where}: {self.message}" if where else self.message


class FatalError(RekeyError):
    """The run cannot go on."""


class ConfigError(FatalError):
    """Bad configuration, CLI arguments or key file. Message reads `section.key: what is wrong`."""


class CredentialsError(FatalError):
    pass


class AccessDeniedError(FatalError):
    pass


class BucketMissingError(FatalError):
    pass


class EndpointError(FatalError):
    pass


class CheckpointError(FatalError):
    pass


class WrongRegionError(FatalError):
    """A redirect to another region the boundary could not follow (the answer named no region)."""


class ObjectError(RekeyError):
    """This object fails; the run goes on."""


class ObjectChangedError(ObjectError):
    pass


class ObjectGoneError(ObjectChangedError):
    """404 on the object itself: deleted since it was listed."""


class WrongKeyError(ObjectError):
    pass


class KeyRequiredError(ObjectError):
    pass


class CorruptObjectError(ObjectError):
    pass


class VerifyError(ObjectError):
    pass


class LegacyFormatRefusedError(ObjectError):
    """A client-side object in an unauthenticated legacy format, and `[source.cse] allow_legacy` is not set."""


class UnsupportedError(ObjectError):
    """The endpoint refuses this form of request (e.g. 501); callers may fall back."""



class RetryableError(RekeyError):
    def __init__(
        self,
        message: str,
        *,
        bucket: str = "",
        key: str = "",
        op: str = "",
        code: str = "",
        status: int = 0,
        retry_after: float | None = None,
        throttled: bool = False,
    ) -> None:
        super().__init__(message, bucket=bucket, key=key, op=op, code=code, status=status)
        self.retry_after = retry_after
        self.throttled = throttled


_THROTTLE_CODES = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests",
     "RequestThrottled", "ProvisionedThroughputExceededException", "503"}
)
_RETRY_CODES = frozenset(
    {"InternalError", "ServiceUnavailable", "RequestTimeout", "RequestTimeoutException",
     "OperationAborted", "500", "502", "503", "504"}
)
_CREDENTIAL_CODES = frozenset(
    {"ExpiredToken", "ExpiredTokenException", "InvalidAccessKeyId", "SignatureDoesNotMatch",
     "InvalidToken", "TokenRefreshRequired", "InvalidClientTokenId", "UnrecognizedClientException"}
)
_KMS_DENIED_CODES = frozenset(
    {"KMS.AccessDeniedException", "KMS.DisabledException", "KMS.NotFoundException",
     "KMS.KMSInvalidStateException", "AccessDeniedException", "DisabledException",
     "NotFoundException", "KMSInvalidStateException", "KMS.InvalidKeyUsageException"}
)


_KEYED_READS = frozenset({"head_object", "get_object"})


def leaves(exc: BaseException) -> Iterator[BaseException]:
    """The errors inside a (nested) exception group, in order; an error that is no group is its own leaf."""
    if isinstance(exc, BaseExceptionGroup):
        for sub in exc.exceptions:
            yield from leaves(sub)
    else:
        yield exc


def first_fatal(exc: BaseException) -> FatalError | None:
    """The first run-fatal error in `exc` or any group nested in it."""
    return next((e for e in leaves(exc) if isinstance(e, FatalError)), None)


def most_telling(exc: BaseException) -> RekeyError | None:
    """The error to report of a failed task group: a run-fatal one first, then a changed object, else the
    first rekey error; None when it holds none (a bug, or only cancellation)."""
    flat = [e for e in leaves(exc) if isinstance(e, RekeyError)]
    for kind in (FatalError, ObjectChangedError):
        for e in flat:
            if isinstance(e, kind):
                return e
    return flat[0] if flat else None


def _error_fields(exc: BaseException) -> tuple[str, int, str, Mapping[str, Any]]:
    response: Mapping[str, Any] = getattr(exc, "response", None) or {}
    error = response.get("Error", {}) or {}
    meta = response.get("ResponseMetadata", {}) or {}
    code = str(error.get("Code", "") or "")
    status = int(meta.get("HTTPStatusCode", 0) or 0)
    message = str(error.get("Message", "") or "")
    headers = meta.get("HTTPHeaders", {}) or {}
    return code, status, message, headers


def _retry_after(headers: Mapping[str, Any]) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        return None


def classify_s3_error(
    exc: BaseException, *, op: str, bucket: str = "", key: str = "", sse_c: bool = False,
) -> RekeyError:
    """Turn a botocore/aiohttp exception into rekey's taxonomy, once: an answer by its error code, then its
    HTTP status; no answer by the exception's class.

    `sse_c` says the request carried an SSE-C key, so a 400/403 means the key does not match.
    Message text is never matched. The result never contains request headers (no key material).
    """
    if isinstance(exc, RekeyError):
        return exc
    code, status, message, headers = _error_fields(exc)
    if code or status:
        return _classify_answer(code, status, message, headers, op=op, sse_c=sse_c,
                                where={"bucket": bucket, "key": key, "op": op, "code": code, "status": status})
    return _classify_transport(exc, {"bucket": bucket, "key": key, "op": op})


def _classify_answer(code: str, status: int, message: str, headers: Mapping[str, Any], *, op: str, sse_c: bool,
                     where: dict[str, Any]) -> RekeyError:
    detail = f"{code or status}" + (f" ({message})" if message else "")
    if code in _CREDENTIAL_CODES:
        return CredentialsError(f"credentials refused: {detail}", **where)
    if code in _KMS_DENIED_CODES or code.startswith("KMS."):
        return AccessDeniedError(f"KMS refused the key: {detail}", **where)
    if code in _THROTTLE_CODES or status in (429, 503):
        return RetryableError(f"throttled: {detail}", retry_after=_retry_after(headers), throttled=True, **where)
    if code in _REGION_CODES or status in (301, 307):
        region = headers.get("x-amz-bucket-region") or "another region"
        return WrongRegionError(f"the bucket is in {region}, not the region configured: {detail}", **where)
    by_code = _BY_CODE.get(code)
    if by_code is not None:
        return by_code(where)
    if status == 404:
        return ObjectGoneError("object no longer exists", **where)
    if status == 412:
        return ObjectChangedError("object changed since it was planned (ETag mismatch)", **where)
    if status == 501:
        return UnsupportedError(f"endpoint does not implement this: {detail}", **{**where, "code": code or "501"})
    if code in _RETRY_CODES or status >= 500:
        return RetryableError(f"server error: {detail}", retry_after=_retry_after(headers), **where)
    if sse_c and status in (400, 403) and (op in _KEYED_READS or code != "AccessDenied"):
        # A write refused with AccessDenied is the credentials or a policy, not the key: the key was
        # already proven by the HeadObject that came first (read-only credentials fail every write so).
        return WrongKeyError(f"SSE-C key refused: {detail}", **where)
    if status == 400 and op in ("head_object", "get_object") and not code.startswith("Invalid"):
        return KeyRequiredError("object is SSE-C encrypted and no customer key was sent", **where)
    if code == "AccessDenied" or status == 403:
        return ObjectError(f"access denied: {detail}", **where)
    return ObjectError(detail, **where)


_REGION_CODES = frozenset({"PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException",
                           "TemporaryRedirect"})
_BY_CODE: dict[str, Callable[[dict[str, Any]], RekeyError]] = {
    "NoSuchBucket": lambda w: BucketMissingError("bucket does not exist", **w),
    "NoSuchKey": lambda w: ObjectGoneError("object no longer exists", **w),
    "NotFound": lambda w: ObjectGoneError("object no longer exists", **w),
    "PreconditionFailed": lambda w: ObjectChangedError("object changed since it was planned (ETag mismatch)", **w),
    "NotImplemented": lambda w: UnsupportedError("endpoint does not implement this: NotImplemented", **w),
}

# No answer: what the transport raised, by class. botocore's own classes first (both transports send through
# botocore's aiohttp session, which maps aiohttp's errors onto them); aiohttp's and the OS's for what is read
# after (a GetObject body). Imported when the first such error is classified: the commands that only read the
# checkpoint (`rekey status`) then start without botocore and aiohttp.
@dataclass(frozen=True, slots=True)
class _TransportClasses:
    unreachable: tuple[type[BaseException], ...]
    certificate: tuple[type[BaseException], ...]
    no_credentials: tuple[type[BaseException], ...]
    connection_lost: tuple[type[BaseException], ...]
    connection: type[BaseException]         # aiohttp's connection errors: reached, then lost
    connector: type[BaseException]          # aiohttp's connect errors: never reached
    endpoint_connection: type[BaseException]
    ssl_error: type[BaseException]
    param_validation: type[BaseException]


@functools.cache
def _transport_classes() -> _TransportClasses:
    import aiohttp
    import botocore.exceptions as bexc
    return _TransportClasses(
        unreachable=(bexc.EndpointConnectionError, bexc.ConnectTimeoutError, bexc.ProxyConnectionError,
                     aiohttp.ClientConnectorError),
        certificate=(aiohttp.ClientConnectorCertificateError, ssl.SSLCertVerificationError),
        no_credentials=(bexc.NoCredentialsError, bexc.PartialCredentialsError),
        connection_lost=(bexc.ReadTimeoutError, bexc.ConnectionClosedError, bexc.ResponseStreamingError,
                         bexc.IncompleteReadError, bexc.HTTPClientError, aiohttp.ClientError, ConnectionError,
                         TimeoutError, OSError),
        connection=aiohttp.ClientConnectionError, connector=aiohttp.ClientConnectorError,
        endpoint_connection=bexc.EndpointConnectionError, ssl_error=bexc.SSLError,
        param_validation=bexc.ParamValidationError)


def _classify_transport(exc: BaseException, where: dict[str, Any]) -> RekeyError:
    name = type(exc).__name__
    cls = _transport_classes()
    cause = getattr(exc, "kwargs", {}).get("error")
    if isinstance(exc, cls.endpoint_connection) and isinstance(cause, cls.connection) \
            and not isinstance(cause, cls.connector):
        # aiobotocore maps every aiohttp connection error onto EndpointConnectionError, a connection the
        # server reset mid-request included: that one was reached, and is retried like any lost answer.
        return RetryableError(f"connection failed: {type(cause).__name__}", **where)
    if isinstance(exc, cls.certificate) or isinstance(cause, cls.certificate) \
            or "CERTIFICATE_VERIFY_FAILED" in str(exc):
        # Not retried: an untrusted certificate stays untrusted. Names the setting that fixes it.
        return EndpointError("the endpoint's TLS certificate is not trusted (CERTIFICATE_VERIFY_FAILED); set "
                             "ca_bundle ([source], [destination] or [kms]; audit and bench: --ca-bundle) to the PEM "
                             "of the CA that signed it", **where)
    if isinstance(exc, cls.ssl_error):
        return EndpointError(f"TLS failure: {exc}", **where)
    if isinstance(exc, cls.unreachable):
        return EndpointError(f"endpoint unreachable: {name}", **where)
    if isinstance(exc, cls.no_credentials):
        return CredentialsError("no AWS credentials found (environment, profile or config)", **where)
    if isinstance(exc, cls.param_validation):
        # botocore echoes parameter values, which may include key material: keep only the name.
        return ObjectError("request rejected by botocore's parameter validation", **where)
    if isinstance(exc, cls.connection_lost):
        return RetryableError(f"connection failed: {name}", **where)
    return ObjectError(f"{name}: {exc}", **where)
