"""The fast transport's botocore client: a plain (sync) botocore client that builds, addresses and signs
the hot requests (workers.s3.fast), and never sends one; and the KMS client (workers.s3.kms), which sends
its requests from worker threads. Made without aiobotocore, so that a run's first
request does not wait for aiobotocore and aiohttp to be imported (0.3-0.4 s on a small machine); its
settings, model loader and User-Agent are those of the botocore transport's client (workers.s3.sdk), so
that both transports send the same request for the same call."""

from __future__ import annotations

from typing import Any

import botocore
import botocore.session
from aiobotocore import __version__ as aiobotocore_version  # the package's version only: nothing imported
from botocore.config import Config

from workers.endpoint import Endpoint
from workers.s3.settings import config_settings, shared_loader, where

__all__ = ["fast_client", "sync_client"]


def _session(endpoint: Endpoint) -> botocore.session.Session:
    session = botocore.session.Session(profile=endpoint.profile) if endpoint.profile else botocore.session.Session()
    session.register_component("data_loader", shared_loader(session))
    # The User-Agent aiobotocore's session sends (workers.s3.sdk): one identity for both transports.
    session.user_agent_name = "aiobotocore"
    session.user_agent_version = aiobotocore_version
    session.user_agent_extra = f"botocore/{botocore.__version__}"
    return session


def sync_client(endpoint: Endpoint, service: str) -> Any:
    """A sync botocore client of `service` at `endpoint`, configured as the botocore transport's. Resolving
    credentials may block (a profile's process, SSO, IMDS): call it off the event loop."""
    return _session(endpoint).create_client(service, config=Config(**config_settings(endpoint)), **where(endpoint))


def fast_client(endpoint: Endpoint) -> Any:
    """The sync S3 client of `endpoint`, which builds and signs the fast transport's requests."""
    return sync_client(endpoint, "s3")
