"""The fast transport: the hot operations built, addressed and signed by botocore, answers read here.

botocore spends over a millisecond of CPU on each request (a dozen events, endpoint rules evaluated
again for every call, the response parser, the retry machinery), more than a local server does. For the
operations on the hot path this transport keeps every part of botocore that makes a request right, and
skips the rest:

    botocore's, as for any call     (a sync botocore client configured as the botocore transport's,
                                    workers.s3.sdk_sync) parameter handlers (SSE-C key and MD5,
                                    CopySource quoting), serializer,
                                    user agent, checksum context, before-call handlers, `request-created`
                                    (retry headers, SigV4 signing with the session's refreshable
                                    credentials); the settings of its HTTP session (CA bundle, client
                                    certificate, connect and read timeouts, pool size, proxies) and the
                                    exceptions it raises
    cached here, per operation,     the endpoint rules' answer (URL: addressing style, regional endpoint,
    bucket and region               path or virtual-hosted; signing region)
    cached here, per shape of call  botocore's request dict up to signing, filled in for each call of that
    (workers.s3.template)           shape (only where filling it is proven to give botocore's own request)
    lighter here                    the signed request object and its header map (workers.s3.signing)
    done here (workers.s3.answers)  the answer: status, headers and the small XML body, read straight
                                    into botocore's response shape, so one converter serves both transports
    sent here (workers.s3.wire)     HTTP/1.1 keep-alive connections, one pool per endpoint that botocore's
                                    own requests use too (workers.s3.pool); a proxied request goes on the
                                    aiohttp session the botocore transport's HTTP session made
"""

from __future__ import annotations

import asyncio
import copy
import socket
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import replace
from typing import Any

import anyio
from botocore.auth import S3SigV4Auth
from botocore.exceptions import (
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    ProxyConnectionError,
    ReadTimeoutError,
    SSLError,
)
from botocore.handlers import add_retry_headers
from botocore.httpchecksum import apply_request_checksum, resolve_checksum_context
from botocore.httpsession import mask_proxy_url
from botocore.utils import determine_content_length

from workers.s3.answers import FastError, answer_for
from workers.s3.native import Prepared
from workers.s3.ops import HOT_OPS, Op
from workers.s3.pool import body_bytes, send_on, text_headers, wire_for
from workers.s3.signing import FastRequest, FastS3SigV4Auth, origin
from workers.s3.template import MAX_SHAPES, Template, make_template, shape_of, signing_copy
from workers.s3.wire import Wire

_Resolved = tuple[str, dict[str, str], dict[str, Any], Any, dict[str, Any] | None]


# What botocore (1.43) runs on request-created for S3; checked when the transport is made, so that a botocore
# that adds one makes every request take botocore's own path instead of silently skipping it.
_REQUEST_CREATED = ("RequestSigner.handler", "UserAgentString.rebuild_and_replace_user_agent_handler",
                    "add_retry_headers")
# What botocore runs on before-sign for S3: each acts only on ARN buckets, unsigned requests or S3 Express,
# which take the signer's whole path (`FastTransport._sign`). Checked like `_REQUEST_CREATED`.
_BEFORE_SIGN = ("remove_arn_from_signing_path", "_set_extra_headers_for_unsigned_request",
                "S3ExpressIdentityResolver.resolve_s3express_identity")
_SIGV4 = ("s3v4", "v4")


class FastTransport:
    """Sends the hot operations through one sync botocore client's request machinery (see module doc).

    `proxied`: the botocore transport's HTTP session (aiobotocore's), for a request that goes through a
    proxy; asked for only then."""

    def __init__(self, client: Any, regions: Mapping[str, str],
                 proxied: Callable[[], Awaitable[Any]] | None = None, *, wire: Wire | None = None) -> None:
        self._client = client
        self._proxied = proxied
        self._regions = regions          # bucket -> region learned from a redirect (shared with the boundary)
        self._service_id = client.meta.service_model.service_id.hyphenize()
        self._models: dict[Op, Any] = {}
        self._endpoints: dict[tuple[str, str, str], _Resolved] = {}
        self._user_agents: dict[Op, str] = {}   # botocore's User-Agent for each operation, built once
        self._signers: dict[tuple[str, Any, str, str], str] = {}   # choose-signer's answer, per signing context
        self._proxies: dict[str, tuple[str | None, dict[str, str]]] = {}   # scheme://host -> proxy, its headers
        self._templates: dict[Hashable, Template | None] = {}   # per shape of call (workers.s3.template)
        # The endpoint's pool for requests without a proxy, botocore's own requests too (workers.s3.pool);
        # `wire`: the one rekey's own request builder made already (workers.s3.native).
        self.wire = wire if wire is not None else wire_for(client._endpoint.http_session)
        self._shortcut = (_handlers(client, "request-created.s3.HeadObject") == set(_REQUEST_CREATED)
                          and _handlers(client, "before-sign.s3.HeadObject") == set(_BEFORE_SIGN))

    def _model(self, op: Op) -> Any:
        model = self._models.get(op)
        if model is None:
            name = self._client.meta.method_to_api_mapping[op.value]
            model = self._models[op] = self._client.meta.service_model.operation_model(name)
        return model

    def _context(self, model: Any) -> dict[str, Any]:
        """The request context `_make_api_call` builds."""
        meta = self._client.meta
        return {"client_region": meta.region_name, "client_config": meta.config,
                "has_streaming_input": model.has_streaming_input, "auth_type": model.resolved_auth_type,
                "unsigned_payload": model.unsigned_payload,
                "auth_options": meta.service_model.metadata.get("auth")}

    def _endpoint(self, model: Any, params: Mapping[str, Any],
                        context: dict[str, Any]) -> tuple[str, dict[str, str]]:
        """The endpoint rules' answer for this bucket, evaluated once per operation, bucket and region."""
        bucket = str(params.get("Bucket", ""))
        cache_key = (model.name, bucket, self._regions.get(bucket, ""))
        hit = self._endpoints.get(cache_key)
        if hit is None:
            probe = dict(context)
            url, headers, properties = self._client._resolve_endpoint_ruleset(model, params, probe)
            hit = (url, dict(headers or {}), dict(properties or {}), probe.get("auth_type"),
                   copy.deepcopy(probe.get("signing")))
            self._endpoints[cache_key] = hit
        url, headers, properties, auth_type, signing = hit
        if properties:
            context["endpoint_properties"] = properties
        if auth_type is not None:
            context["auth_type"] = auth_type
        if signing is not None:   # later handlers may change it: each request its own copy
            context["signing"] = signing_copy(signing)
        return url, dict(headers)

    async def prepare(self, op: Op, params: Mapping[str, Any]) -> Prepared:
        """The signed request botocore would send for this call."""
        await self._fresh_credentials()
        shape = shape_of(op, params)
        if shape is not None:   # a bucket's region learned from a redirect readdresses it: another template
            shape = (shape, self._regions.get(str(params.get("Bucket", "")), ""))
        template = self._templates.get(shape) if shape is not None else None
        request_dict = None
        if template is None and shape is not None and shape not in self._templates \
                and len(self._templates) < MAX_SHAPES:
            template, request_dict = make_template(op, params, self._request_dict)
            self._templates[shape] = template
        if request_dict is None:
            request_dict = template.fill(params) if template is not None else self._request_dict(op, params)
        prepared = self._signed(op, self._model(op), request_dict, str(params.get("Bucket", "")))
        if request_dict["context"].get("encoding_type_auto_set"):
            return replace(prepared, url_encoded_keys=True)
        return prepared

    async def _fresh_credentials(self) -> None:
        """Refreshable credentials (assume-role, SSO, IMDS) due for a refresh are refreshed in a thread: the
        sync client's refresh is a blocking request, which the signer would otherwise make on the loop."""
        credentials = self._client._request_signer._credentials
        due = getattr(credentials, "refresh_needed", None)
        if due is not None and due():
            await anyio.to_thread.run_sync(credentials.get_frozen_credentials)

    def _request_dict(self, op: Op, params: Mapping[str, Any]) -> dict[str, Any]:
        """botocore's request dict for this call, as `_make_api_call` builds it up to signing."""
        client = self._client
        model = self._model(op)
        context = self._context(model)
        api_params = client._emit_api_params(api_params=dict(params), operation_model=model, context=context)
        url, headers = self._endpoint(model, api_params, context)
        user_agent = self._user_agents.get(op)
        request_dict: dict[str, Any] = client._convert_to_request_dict(
            api_params=api_params, operation_model=model, endpoint_url=url, context=context, headers=headers,
            set_user_agent_header=user_agent is None)
        resolve_checksum_context(request_dict, model, api_params)
        client.meta.events.emit_until_response(
            f"before-call.{self._service_id}.{model.name}", model=model, params=request_dict,
            request_signer=client._request_signer, context=context)
        apply_request_checksum(request_dict)
        client._endpoint._update_retries_context(context, 1)
        return request_dict

    def _signed(self, op: Op, model: Any, request_dict: dict[str, Any], bucket: str) -> Prepared:
        client = self._client
        user_agent = self._user_agents.get(op)
        if user_agent is None or not self._shortcut:   # all of botocore's request-created handlers
            request = client._endpoint.create_request(request_dict, model)
            self._user_agents[op] = request.headers["User-Agent"]
            return _plain(request)
        # Later calls: the same handlers of request-created (`_REQUEST_CREATED`), but not the User-Agent
        # rebuild: the (unsigned) string is the same for every call and building it is a fifth of this path.
        request = FastRequest.of(request_dict)
        self._sign(model.name, request, bucket)
        add_retry_headers(request)
        request.headers["User-Agent"] = user_agent
        if request.params or isinstance(request.data, dict):   # not what the hot operations send: botocore's
            return _plain(client._endpoint.prepare_request(request))
        return _prepared(request)

    def _sign(self, operation: str, request: Any, bucket: str) -> None:
        """SigV4 by botocore's signer (`add_auth`, the session's refreshable credentials). For a plain bucket,
        choose-signer's answer is kept per signing context, and before-sign, whose handlers (`_BEFORE_SIGN`)
        do nothing for it, is not emitted; anything else takes the signer's whole path."""
        signer = self._client._request_signer
        signing = request.context.get("signing") or {}
        name, region = signing.get("signing_name") or signer._signing_name, signing.get("region") or signer._region_name
        if bucket.startswith("arn:") or name != "s3" or "identity_cache" in signing or "request_credentials" in signing:
            signer.handler(operation_name=operation, request=request)
            return
        key = (operation, request.context.get("auth_type"), name, region)
        version = self._signers.get(key)
        if version is None:
            version = self._signers[key] = signer._choose_signer(operation, "standard", request.context)
        if version not in _SIGV4:
            signer.handler(operation_name=operation, request=request)
            return
        auth = signer.get_auth_instance(signing_name=name, region_name=region, signature_version=version)
        if type(auth) is S3SigV4Auth:
            auth.__class__ = FastS3SigV4Auth
        auth.add_auth(request)

    def _proxy(self, url: str) -> tuple[str | None, dict[str, str]]:
        """The proxy botocore's HTTP session would use for this URL (HTTPS_PROXY, a profile's proxies), per host."""
        where = origin(url)
        hit = self._proxies.get(where)
        if hit is None:
            config = self._client._endpoint.http_session._proxy_config
            hit = self._proxies[where] = (config.proxy_url_for(url), config.proxy_headers_for(url))
        return hit

    async def send(self, op: Op, params: Mapping[str, Any]) -> dict[str, Any]:
        """One request; its answer in botocore's response shape, or a `FastError`.

        Sent over the endpoint's wire (workers.s3.wire), or, through a proxy, on the aiohttp session the
        botocore transport's HTTP session made for it (`_through_proxy`)."""
        request = await self.prepare(op, params)
        proxy, proxy_headers = self._proxy(request.url)
        if proxy is None:
            got = await send_on(self.wire, request.method, request.url, request.headers, request.body)
            return answer_for(op, got.status, got.headers, got.body, request.url_encoded_keys)
        if self._proxied is None:
            raise RuntimeError(f"{op.value}: {request.url} goes through a proxy, and no HTTP session was given")
        status, answer, body = await _through_proxy(await self._proxied(), request, proxy, proxy_headers)
        return answer_for(op, status, answer, body, request.url_encoded_keys)

    def close(self) -> None:
        self.wire.close()



def _prepared(request: Any) -> Prepared:
    """What botocore's preparer (`prepare_request`) makes of a signed AWSRequest, in plain types. The URL is
    as built (requests here carry no separate query parameters); a request with a body, or a method that
    may have one, gets its Content-Length."""
    headers = text_headers(request.headers)
    body = request.data if request.data != b"" else None
    if (request.method not in ("GET", "HEAD", "OPTIONS") and "Transfer-Encoding" not in request.headers
            and "Content-Length" not in request.headers):
        headers["Content-Length"] = str(determine_content_length(body))
    return Prepared(request.method, request.url, headers, body_bytes(body))


def _plain(request: Any) -> Prepared:
    """botocore's prepared request in plain types."""
    return Prepared(request.method, request.url, text_headers(request.headers), body_bytes(request.body))


async def _through_proxy(http_session: Any, request: Prepared, proxy: str,
                         proxy_headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    """One request through a proxy, on the aiohttp session aiobotocore's HTTP session made for it, the way
    that session sends it, with the body as bytes."""
    from yarl import URL
    headers = request.headers
    headers.pop("Expect", None)   # no 100-continue round trip: bodies here are in memory
    headers["Accept-Encoding"] = "identity"   # as botocore's HTTP session sends it
    session = await http_session._get_session(proxy)
    try:
        async with session.request(request.method, URL(request.url, encoded=True), headers=headers,
                                   data=request.body, proxy=proxy, proxy_headers=proxy_headers) as response:
            body = await response.read()
            answer = {k.decode("utf-8").lower(): v.decode("utf-8") for k, v in response.raw_headers}
            return response.status, answer, body
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        raise _mapped(exc, request.url, proxy) from exc


def _mapped(exc: Exception, url: str, proxy: str | None) -> Exception:
    """An aiohttp failure as the botocore exception aiobotocore's HTTP session raises for it."""
    import aiohttp  # loaded already: the proxied request went through it
    mapped: Exception
    if isinstance(exc, aiohttp.ClientSSLError):
        mapped = SSLError(endpoint_url=url, error=exc)
    elif isinstance(exc, aiohttp.ClientProxyConnectionError | aiohttp.ClientHttpProxyError):
        mapped = ProxyConnectionError(proxy_url=mask_proxy_url(proxy or ""), error=exc)
    elif isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError
                    | aiohttp.http_exceptions.BadStatusLine):
        mapped = ConnectionClosedError(error=exc, request=None, endpoint_url=url)
    elif isinstance(exc, aiohttp.ServerTimeoutError) and str(exc).lower().startswith("connect"):
        mapped = ConnectTimeoutError(endpoint_url=url, error=exc)
    elif isinstance(exc, aiohttp.ServerTimeoutError | asyncio.TimeoutError):
        mapped = ReadTimeoutError(endpoint_url=url, error=exc)
    elif isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ClientConnectionError | socket.gaierror):
        mapped = EndpointConnectionError(endpoint_url=url, error=exc)
    else:
        mapped = HTTPClientError(error=exc)
    return mapped


def _handlers(client: Any, event: str) -> set[str]:
    """The names of the handlers botocore runs on an event (empty if unknown)."""
    try:
        found = client.meta.events._emitter._handlers.prefix_search(event)
        return {str(getattr(h, "__qualname__", h)) for h in found}
    except AttributeError:
        return set()


__all__ = ["HOT_OPS", "FastError", "FastTransport", "Prepared"]
