"""What both of an endpoint's botocore clients share: their configuration, the model loader, the timestamp
parser, and how a failure to make one is reported. Imports no part of botocore itself (its timestamp parser
and model loader when first asked for), so that a run whose requests rekey builds itself (workers.s3.native)
starts without botocore; the fast transport's client (workers.s3.sdk_sync) starts without aiobotocore and
aiohttp, which the botocore transport's client (workers.s3.sdk) brings in when it is first needed."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from typing import Any

import anyio

from workers.endpoint import Endpoint
from workers.errors import classify_s3_error

__all__ = ["config_settings", "connect_errors", "parse_timestamp", "shared_loader", "where"]


@contextlib.contextmanager
def connect_errors() -> Iterator[None]:
    """Setting up a client (e.g. a profile that does not exist) fails as a classified `connect` error."""
    try:
        yield
    except anyio.get_cancelled_exc_class():
        raise
    except Exception as exc:
        raise classify_s3_error(exc, op="connect") from None


def parse_timestamp(value: Any) -> dt.datetime:
    """botocore's timestamp parser, fast for the ISO 8601 and epoch forms S3 sends, botocore's otherwise."""
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            parsed = None
        if parsed is not None:
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    from botocore.utils import parse_timestamp as botocore_parse_timestamp
    result: dt.datetime = botocore_parse_timestamp(value)
    return result


_LOADERS: dict[str, Any] = {}   # data_path -> botocore's model loader, shared by the sessions of this process


def shared_loader(session: Any) -> Any:
    """One model loader per process: each new one would read S3's model again (some 0.1 s of CPU per client,
    paid again for the KMS client and a second endpoint). The loader reads it from rekey's cache when it
    can (workers.s3.models)."""
    from workers.s3.models import create_loader
    path = str(session.get_config_variable("data_path") or "")
    loader = _LOADERS.get(path)
    if loader is None:
        loader = _LOADERS[path] = create_loader(path or None)
    return loader


def _s3_settings(endpoint: Endpoint) -> dict[str, Any]:
    """Path-style addressing for an endpoint named in the config (a local server rarely has a wildcard DNS
    name); otherwise botocore's own choice (virtual-hosted on AWS, a profile's `addressing_style`)."""
    settings: dict[str, Any] = {"payload_signing_enabled": False}
    if endpoint.endpoint_url:
        settings["addressing_style"] = "path"
    return settings


def config_settings(endpoint: Endpoint) -> dict[str, Any]:
    """The client configuration (`botocore.config.Config` arguments) both clients of an endpoint get."""
    return {
        "max_pool_connections": endpoint.max_connections,
        # One attempt: the boundary is the one owner of retries (workers.s3.boundary, engine.retry).
        "retries": {"mode": "standard", "total_max_attempts": 1},
        "connect_timeout": endpoint.connect_timeout,
        "read_timeout": endpoint.read_timeout,
        # Every body rekey sends carries Content-MD5, which the server checks; without this, botocore
        # SHA-256-hashes each upload body on the event loop over plain HTTP.
        "s3": _s3_settings(endpoint),
        "request_checksum_calculation": "when_required",
        "response_checksum_validation": "when_required",
        "tcp_keepalive": True,
        "parameter_validation": False,  # requests are built by code, not users: save the CPU per request
    }


def where(endpoint: Endpoint) -> dict[str, Any]:
    """`create_client`'s region, endpoint URL and CA bundle for an endpoint."""
    kwargs: dict[str, Any] = {"region_name": endpoint.region or "us-east-1"}
    if endpoint.endpoint_url:
        kwargs["endpoint_url"] = endpoint.endpoint_url
    if endpoint.ca_bundle:
        kwargs["verify"] = endpoint.ca_bundle
    return kwargs
