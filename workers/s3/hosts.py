"""The Host header of a URL, as botocore's signer derives it: lowercase, the default port left out, an IPv6
address in brackets. Kept apart from botocore so that the connection pool and rekey's own request builder
(workers.s3.native) load without it; tests/unit/test_native_parity.py holds it equal to botocore's."""

from __future__ import annotations

import functools
from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin(url: str) -> str:
    """scheme://host[:port] of a URL."""
    end = url.find("/", url.find("//") + 2)
    return url if end < 0 else url[:end]


@functools.lru_cache(maxsize=256)
def _origin_host(where: str) -> str:
    parts = urlsplit(where)
    host = parts.hostname or ""
    if ":" in host:   # an IPv6 literal (urlsplit's hostname drops its brackets)
        host = f"[{host}]"
    if parts.port is not None and parts.port != _DEFAULT_PORTS.get(parts.scheme):
        host = f"{host}:{parts.port}"
    return host


def host_header(url: str) -> str:
    """botocore's Host header for a URL: it depends on the scheme, host and port only."""
    return _origin_host(origin(url))


__all__ = ["host_header", "origin"]
