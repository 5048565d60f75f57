"""The botocore transport: how one aiobotocore client per endpoint is configured and made."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from typing import Any

import aiohttp
import anyio
from aiobotocore.config import AioConfig
from aiobotocore.httpsession import AIOHTTPSession
from aiobotocore.parsers import AioResponseParserFactory
from aiobotocore.session import AioSession
from botocore.loaders import create_loader
from botocore.utils import parse_timestamp as botocore_parse_timestamp

from workers.endpoint import Endpoint
from workers.errors import classify_s3_error

__all__ = ["Endpoint", "connect_errors", "parse_timestamp"]


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
    result: dt.datetime = botocore_parse_timestamp(value)
    return result


class OneAttemptSession(AIOHTTPSession):  # type: ignore[misc]
    """aiobotocore's aiohttp session, minus aiohttp's own silent resend of an idempotent request whose
    connection the server closed: the boundary owns retries, and counts every attempt."""

    async def _get_session(self, proxy_url: str | None) -> aiohttp.ClientSession:
        session: aiohttp.ClientSession = await super()._get_session(proxy_url)
        session._retry_connection = False  # aiohttp has no public switch for it (3.10+)
        return session


_LOADERS: dict[str, Any] = {}   # data_path -> botocore's model loader, shared by the sessions of this process


def _shared_loader(session: AioSession) -> Any:
    """One model loader per process: each new one lists every service botocore knows and parses S3's model
    again (some 0.1 s of CPU per client, paid again for the KMS client and a second endpoint)."""
    path = str(session.get_config_variable("data_path") or "")
    loader = _LOADERS.get(path)
    if loader is None:
        loader = _LOADERS[path] = create_loader(path or None)
    return loader


def new_session(endpoint: Endpoint) -> AioSession:
    session = AioSession(profile=endpoint.profile) if endpoint.profile else AioSession()
    session.register_component("data_loader", _shared_loader(session))
    # Listing timestamps are ISO 8601: parse them without dateutil (5% of a small-object run's CPU).
    parsers = AioResponseParserFactory()
    parsers.set_parser_defaults(timestamp_parser=parse_timestamp)
    session.register_component("response_parser_factory", parsers)
    return session


def _s3_settings(endpoint: Endpoint) -> dict[str, Any]:
    """Path-style addressing for an endpoint named in the config (a local server rarely has a wildcard DNS
    name); otherwise botocore's own choice (virtual-hosted on AWS, a profile's `addressing_style`)."""
    settings: dict[str, Any] = {"payload_signing_enabled": False}
    if endpoint.endpoint_url:
        settings["addressing_style"] = "path"
    return settings


def client_kwargs(endpoint: Endpoint) -> dict[str, Any]:
    """`create_client` arguments for an endpoint."""
    config = AioConfig(
        max_pool_connections=endpoint.max_connections,
        # One attempt: the boundary is the one owner of retries (workers.s3.boundary, engine.retry).
        retries={"mode": "standard", "total_max_attempts": 1},
        connect_timeout=endpoint.connect_timeout,
        read_timeout=endpoint.read_timeout,
        # Every body rekey sends carries Content-MD5, which the server checks; without this, botocore
        # SHA-256-hashes each upload body on the event loop over plain HTTP.
        s3=_s3_settings(endpoint),
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        tcp_keepalive=True,
        parameter_validation=False,  # requests are built by code, not users: save the CPU per request
        http_session_cls=OneAttemptSession,
    )
    kwargs: dict[str, Any] = {"config": config, "region_name": endpoint.region or "us-east-1"}
    if endpoint.endpoint_url:
        kwargs["endpoint_url"] = endpoint.endpoint_url
    if endpoint.ca_bundle:
        kwargs["verify"] = endpoint.ca_bundle
    return kwargs
