"""Route identity: whether two configured locations are the same objects, on a normalised endpoint identity.

Two spellings of one endpoint must not make an in-place run look like bucket to bucket (no If-Match guard,
the source's own instruction file overwritten as if it were the destination's), nor two endpoints look
like one. The identity of an endpoint is its scheme-less host and port, lower case, default port and
trailing slashes dropped; AWS's global and legacy URLs and no URL at all name the regional endpoint of the
configured region. The profile (the credentials) is no part of it: buckets belong to the endpoint.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from workers.endpoint import Endpoint

_DEFAULT_PORTS = {"http": 80, "https": 443}
_AWS_HOST = re.compile(r"^s3(?:[.-](?P<dualstack>dualstack\.)?(?P<region>[a-z0-9-]+?))?\.amazonaws\.com$")
DEFAULT_REGION = "us-east-1"


def endpoint_identity(endpoint: Endpoint) -> str:
    """`host:port` naming what the endpoint serves, the same for every spelling of it."""
    region = (endpoint.region or DEFAULT_REGION).lower()
    if not endpoint.endpoint_url:
        return f"s3.{region}.amazonaws.com:443"
    parts = urlsplit(endpoint.endpoint_url.strip())
    scheme = (parts.scheme or "https").lower()
    host = (parts.hostname or "").rstrip(".").lower()
    port = parts.port or _DEFAULT_PORTS.get(scheme, 443)
    aws = _AWS_HOST.match(host)
    if aws:
        named = aws.group("region")
        host = f"s3.{region if named in (None, 'external-1') else named}.amazonaws.com"
        port = 443 if port in (80, 443) else port
    return f"{host}:{port}"


def same_objects(src: Endpoint, src_bucket: str, src_prefix: str,
                 dst: Endpoint, dst_bucket: str, dst_prefix: str) -> bool:
    """Source and destination name the same objects: the run is in place."""
    return (src_bucket == dst_bucket and src_prefix == dst_prefix
            and endpoint_identity(src) == endpoint_identity(dst))


def can_copy_between(src: Endpoint, dst: Endpoint) -> bool:
    """A server-side copy can read the source: one endpoint, one set of credentials."""
    return src is dst or (endpoint_identity(src) == endpoint_identity(dst) and src.profile == dst.profile)
