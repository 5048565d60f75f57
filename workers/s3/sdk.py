"""The botocore transport: how one aiobotocore client per endpoint is configured and made. Imported on the
first request botocore sends itself (or a KMS request), not at start-up: aiobotocore brings aiohttp."""

from __future__ import annotations

from typing import Any

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.httpsession import AIOHTTPSession
from aiobotocore.parsers import AioResponseParserFactory
from aiobotocore.session import AioSession

from workers.endpoint import Endpoint
from workers.s3.settings import config_settings, parse_timestamp, shared_loader, where

__all__ = ["OneAttemptSession", "client_kwargs", "new_session"]


class OneAttemptSession(AIOHTTPSession):  # type: ignore[misc]
    """aiobotocore's aiohttp session, minus aiohttp's own silent resend of an idempotent request whose
    connection the server closed: the boundary owns retries, and counts every attempt."""

    async def _get_session(self, proxy_url: str | None) -> aiohttp.ClientSession:
        session: aiohttp.ClientSession = await super()._get_session(proxy_url)
        session._retry_connection = False  # aiohttp has no public switch for it (3.10+)
        return session


def new_session(endpoint: Endpoint) -> AioSession:
    session = AioSession(profile=endpoint.profile) if endpoint.profile else AioSession()
    session.register_component("data_loader", shared_loader(session))
    # Listing timestamps are ISO 8601: parse them without dateutil (5% of a small-object run's CPU).
    parsers = AioResponseParserFactory()
    parsers.set_parser_defaults(timestamp_parser=parse_timestamp)
    session.register_component("response_parser_factory", parsers)
    return session


def client_kwargs(endpoint: Endpoint) -> dict[str, Any]:
    """`create_client` arguments for an endpoint."""
    config = AioConfig(**config_settings(endpoint), http_session_cls=OneAttemptSession)
    return {"config": config, **where(endpoint)}
