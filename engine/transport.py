"""Which secrets may cross which connection: SSE-C keys only over HTTPS, KMS data keys only over HTTPS or loopback.

The endpoint botocore really uses counts, not only the config's: `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`
(and `AWS_ENDPOINT_URL_KMS` for KMS) in the environment replace an unset `endpoint_url`.
"""

from __future__ import annotations

import ipaddress
import os
from urllib.parse import urlsplit

from workers.errors import ConfigError
from workers.s3 import Endpoint

_ENV = {"s3": ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"), "kms": ("AWS_ENDPOINT_URL_KMS", "AWS_ENDPOINT_URL")}


def effective_url(endpoint: Endpoint, service: str = "s3") -> tuple[str | None, str]:
    """(the URL botocore will use, where it comes from: the config key or the environment variable)."""
    if endpoint.endpoint_url:
        return endpoint.endpoint_url, "endpoint_url"
    for name in _ENV[service]:
        value = os.environ.get(name)
        if value:
            return value, f"${name}"
    return None, "endpoint_url"


def is_plain_http(url: str | None) -> bool:
    return bool(url) and str(url).lower().startswith("http://")


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def refuse_plain_http_sse_c(section: str, endpoint: Endpoint) -> None:
    url, origin = effective_url(endpoint)
    if is_plain_http(url):
        where = f"{section}.endpoint_url" if origin == "endpoint_url" else f"{section}.endpoint_url (from {origin})"
        raise ConfigError(f"{where}: SSE-C keys are only sent over HTTPS ({url} is plain http; AWS refuses SSE-C "
                          "over HTTP)")


def refuse_plain_http_kms(kms: Endpoint) -> None:
    """Data keys come back from KMS in clear inside the response: over plain HTTP only on this machine."""
    url, origin = effective_url(kms, "kms")
    if url is not None and is_plain_http(url) and not is_loopback(url):
        where = "kms.endpoint_url" if origin == "endpoint_url" else f"kms.endpoint_url (from {origin})"
        raise ConfigError(f"{where}: {url} is plain http to another host: KMS data keys would cross the network "
                          "in clear; use https (plain http is accepted on loopback only)")
