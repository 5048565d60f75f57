"""One connection pool per endpoint: workers.s3.wire, made with the settings of botocore's HTTP session, and
put under the botocore transport's HTTP session for the requests botocore sends itself (`[run] lean_requests`
on).

botocore's HTTP session holds the endpoint's settings: CA bundle or verify off, client certificate, proxies,
connect and read timeouts, the pool's size. The wire takes them from the fast transport's client (a sync
botocore client, workers.s3.sdk_sync, configured as the botocore transport's), so the fast transport and
botocore's own requests share one pool and one set of settings. What the wire does not speak stays on
aiohttp: a request through a proxy (CONNECT, proxy TLS), a streamed answer (a GetObject sent by botocore),
a chunked request body, and a request with its own read timeout.
"""

from __future__ import annotations

import io
import ssl
from typing import Any

from botocore.exceptions import (
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
    SSLError,
)

from workers.endpoint import Endpoint
from workers.s3.hosts import host_header
from workers.s3.wire import Answer, Wire, WireError


def wire_for(session: Any) -> Wire:
    """A wire with the settings of botocore's (sync) HTTP session `session` (see module doc)."""
    timeout = session._timeout   # urllib3's Timeout, or one number for both
    connect, read = (timeout, timeout) if isinstance(timeout, int | float) else \
        (timeout.connect_timeout, timeout.read_timeout)
    return Wire(limit=session._max_pool_connections, connect_timeout=connect, read_timeout=read,
                ssl_context=lambda: ssl_context(session))


def ssl_context(session: Any) -> ssl.SSLContext:
    """The TLS settings of botocore's HTTP session `session`, built as aiobotocore's HTTP session builds them:
    verify off, or the CA bundle (`verify`, else botocore's default bundle) with the host name checked; the
    client certificate whatever `verify` says."""
    return tls_context(session._verify, session._cert_file, session._key_file)


def tls_context(verify: Any, cert_file: str | None = None, key_file: str | None = None) -> ssl.SSLContext:
    """botocore's TLS context for `verify` (True: its default CA bundle; a path: that bundle; False: no check)
    and a client certificate. botocore's HTTP session module is imported on the first TLS connection only."""
    from botocore.httpsession import create_urllib3_context, get_cert_path
    context: ssl.SSLContext = create_urllib3_context()
    if verify:
        context.check_hostname = True
        ca_certs = get_cert_path(verify)
        if ca_certs:
            context.load_verify_locations(ca_certs, None, None)
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cert_file:
        context.load_cert_chain(cert_file, key_file)
    return context


def wire_of(endpoint: Endpoint, ca_bundle: str | None) -> Wire:
    """The wire of a plain setup (workers.s3.native): the settings its botocore HTTP session would have, from
    the endpoint's (pool size, timeouts; `ca_bundle`, else botocore's default bundle; no client certificate)."""
    return Wire(limit=endpoint.max_connections, connect_timeout=endpoint.connect_timeout,
                read_timeout=endpoint.read_timeout, ssl_context=lambda: tls_context(ca_bundle or True))


def mapped(exc: WireError, url: str) -> Exception:
    """A failure of the wire as the botocore exception aiobotocore's HTTP session raises for it."""
    kinds: dict[str, Any] = {"ssl": SSLError, "connect_timeout": ConnectTimeoutError,
                             "read_timeout": ReadTimeoutError, "connect": EndpointConnectionError}
    kind = kinds.get(exc.kind)
    error: Exception = ConnectionClosedError(error=exc, request=None, endpoint_url=url) if kind is None \
        else kind(endpoint_url=url, error=exc)
    return error


class _Read:
    """An answer's body already read, as aiobotocore reads a non-streamed one (`await raw.read()`)."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    async def read(self) -> bytes:
        return self._body


def route_botocore(session: Any, wire: Wire) -> None:
    """Send the requests of aiobotocore's HTTP session `session` over `wire`, where the wire speaks them."""
    from aiobotocore.awsrequest import AioAWSResponse
    original = session.send

    async def send(request: Any) -> Any:
        context = getattr(request, "context", None) or {}
        if (request.stream_output or "Transfer-Encoding" in request.headers
                or context.get("read_timeout") is not None or session._proxy_config.proxy_url_for(request.url)):
            return await original(request)
        got = await send_on(wire, request.method, request.url, text_headers(request.headers),
                            body_bytes(request.body))
        return AioAWSResponse(request.url, got.status, got.headers, _Read(got.body))

    session.send = send


async def send_on(wire: Wire, method: str, url: str, headers: dict[str, str],
                  body: bytes | memoryview | None) -> Answer:
    """One signed request over `wire`, with the headers botocore's HTTP session adds (no 100-continue
    round trip: the body is in memory); a wire failure as botocore's exception. `headers` is changed."""
    headers.pop("Expect", None)
    headers["Accept-Encoding"] = "identity"
    headers["Host"] = host_header(url)   # the host the signature covers
    try:
        return await wire.request(method, url, headers, body)
    except WireError as exc:
        raise mapped(exc, url) from exc


def text_headers(headers: Any) -> dict[str, str]:
    """botocore's header map (values str or bytes) as a plain dict of str."""
    return {k: v.decode("utf-8") if isinstance(v, bytes) else str(v) for k, v in headers.items()}


def body_bytes(body: Any) -> bytes | memoryview | None:
    """A request body as the wire and aiohttp send it without a thread: botocore's BytesIO as a view of its
    buffer, a file read whole."""
    if isinstance(body, io.BytesIO):
        body = body.getbuffer()[body.tell():]
    elif body is not None and not isinstance(body, bytes | bytearray | memoryview):
        body = body.read()
    if isinstance(body, str):
        body = body.encode("utf-8")
    return body or None


__all__ = ["body_bytes", "mapped", "route_botocore", "send_on", "ssl_context", "text_headers", "tls_context",
           "wire_for", "wire_of"]
