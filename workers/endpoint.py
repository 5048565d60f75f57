"""Endpoint: how to reach one S3 endpoint. Kept apart from the S3 package, which imports botocore and aiohttp,
so that the config and the commands that only read the checkpoint (`rekey status`) start without them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Endpoint:
    """How to reach one S3 endpoint. Credentials come from the AWS chain (environment, profile)."""

    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    ca_bundle: str | None = None
    max_connections: int = 64
    connect_timeout: float = 10.0
    read_timeout: float = 120.0
    extra: Mapping[str, str] = field(default_factory=dict)
    lean: bool = True                # the hot operations over the fast transport (`[run] lean_requests`)

    @property
    def is_plain_http(self) -> bool:
        return bool(self.endpoint_url) and str(self.endpoint_url).lower().startswith("http://")
