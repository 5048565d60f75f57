"""A fault-injecting HTTP/1.1 reverse proxy on loopback, for S3 reliability tests.

It sits between an S3 client (path-style, plain HTTP) and an upstream S3 server on 127.0.0.1 and, per
request, either forwards it untouched or injects the fault of the first matching `Rule` that fires:

    slowdown        503 SlowDown XML error with a Retry-After header (rule.seconds, default 1)
    internal        500 InternalError XML error
    reset           read the whole request, then close the socket with an RST and no response
    reset_mid_body  forward, send the response headers and half the body, then RST
    truncate        forward, send the headers (full Content-Length) and half the body, then close cleanly
    stall           hold the request for rule.seconds before anything reaches the upstream
    delay           add rule.seconds of latency, then forward normally
    wrong_region    a request signed for another region than rule.region gets what S3 answers then:
                    301 (HEAD, no body) or 400 AuthorizationHeaderMalformed naming the region, both with
                    x-amz-bucket-region; requests signed for rule.region pass. With rule.silent_objects,
                    answers for objects (a path with a key) name no region: a bare 301 or 400, as
                    some gateways answer; HeadBucket still says it

Bytes are relayed as they arrive: the request line and headers (Host included, since SigV4 signs it) go
upstream unchanged, bodies are streamed in their own framing (Content-Length, chunked or aws-chunked, or
until close for responses). The one rewrite is `Expect: 100-continue`: the proxy answers `100 Continue`
itself once it has decided no error response applies, and drops the header upstream (SigV4 never signs it).
Each client connection owns at most one upstream connection, reused while the upstream keeps it alive
and reopened when it does not; the client's connection stays open as long as the client wants.

The proxy runs its own event loop in a daemon thread, so sync tests and clients with their own loops can
use it alike:

    with FaultProxy("http://127.0.0.1:8333", [Rule("slowdown", rate=0.1)], seed=7) as proxy:
        client = boto3.client("s3", endpoint_url=proxy.url, ...)
        ...
        assert proxy.statistics().injected["slowdown"] > 0
"""

from __future__ import annotations

import asyncio
import math
import random
import re
import socket
import struct
import threading
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import Literal, get_args
from urllib.parse import urlsplit

FaultKind = Literal["slowdown", "internal", "reset", "reset_mid_body", "truncate", "stall", "delay", "wrong_region"]
FAULT_KINDS: tuple[FaultKind, ...] = get_args(FaultKind)
_Body = AsyncGenerator[bytes, None]  # a message body as raw wire bytes

_PIECE = 256 * 1024  # bytes relayed per read; also the stream buffer limit (and so the longest header block)
_LINGER_SECONDS = 2.0  # how long a closing connection drains what a client still sends, so it gets our reply
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

_ERROR_BODIES: dict[str, tuple[int, str, str]] = {
    "slowdown": (503, "SlowDown", "Please reduce your request rate."),
    "internal": (500, "InternalError", "We encountered an internal error. Please try again."),
    "wrong_region": (400, "AuthorizationHeaderMalformed", "The authorization header is malformed; wrong region."),
}
_SIGNED_REGION = re.compile(r"Credential=[^/]+/\d{8}/([^/]+)/")


@dataclass(frozen=True, slots=True)
class Rule:
    """When to inject one kind of fault. A request matches if every given filter matches."""

    kind: FaultKind
    rate: float = 1.0  # probability that a matching, eligible request gets the fault
    methods: frozenset[str] = frozenset()  # HTTP methods to match; empty matches all
    path_regex: str | None = None  # re.search against the path (no query string), e.g. r"^/bucket/key$"
    query_contains: str | None = None  # substring of the raw query string, e.g. "partNumber="
    after: int = 0  # let the first `after` matching requests through untouched
    limit: int | None = None  # inject at most this many times; None for no limit
    seconds: float = 0.0  # stall/delay duration; Retry-After for slowdown (0 means 1)
    region: str = ""  # wrong_region: the bucket's region; requests signed for it pass
    silent_objects: bool = False  # wrong_region: answers for object paths carry no region (header or body)
    _pattern: re.Pattern[str] | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"Rule.kind: {self.kind!r} is not one of {', '.join(FAULT_KINDS)}")
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"Rule.rate: {self.rate} is not within [0, 1]")
        if self.after < 0 or (self.limit is not None and self.limit < 0) or self.seconds < 0:
            raise ValueError("Rule.after, Rule.limit and Rule.seconds must not be negative")
        object.__setattr__(self, "methods", frozenset(m.upper() for m in self.methods))
        if self.path_regex is not None:
            object.__setattr__(self, "_pattern", re.compile(self.path_regex))

    def matches(self, method: str, path: str, query: str, signed_region: str = "") -> bool:
        return (
            (self.kind != "wrong_region" or signed_region != self.region)
            and (not self.methods or method in self.methods)
            and (self._pattern is None or self._pattern.search(path) is not None)
            and (self.query_contains is None or self.query_contains in query)
        )


@dataclass(frozen=True, slots=True)
class ProxyStatistics:
    """A snapshot of what the proxy has done since it was created."""

    requests: int  # request heads received from clients
    forwarded: int  # requests sent to the upstream (faults such as slowdown or reset are not forwarded)
    injected: MappingProxyType[str, int]  # faults injected, by kind; every kind is present

    @property
    def total_injected(self) -> int:
        return sum(self.injected.values())


class _RuleState:
    """A rule plus how often it has matched and fired since it was installed."""

    __slots__ = ("fired", "matched", "rule")

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.matched = 0
        self.fired = 0


@dataclass(slots=True)
class _Head:
    """One parsed request or response head; `lines` are the raw header lines, forwarded as they came."""

    start: bytes
    lines: list[bytes]
    headers: dict[str, str]  # lower-cased name -> value (last one wins); only read for framing

    def token(self, name: str, token: str) -> bool:
        return token in (t.strip().lower() for t in self.headers.get(name, "").split(","))

    def encode(self, drop: frozenset[bytes] = frozenset()) -> bytes:
        kept = [line for line in self.lines if line.split(b":", 1)[0].strip().lower() not in drop]
        return b"\r\n".join([self.start, *kept, b"", b""])

    def wants_close(self) -> bool:
        if self.token("connection", "close"):
            return True
        return self.start.startswith(b"HTTP/1.0") or self.start.endswith(b"HTTP/1.0")


class _Abort(Exception):
    """Raised to end a client connection after a fault: RST if `reset`, else a clean close."""

    def __init__(self, *, reset: bool) -> None:
        self.reset = reset


async def _read_head(reader: asyncio.StreamReader) -> _Head | None:
    """Read one head; None on a clean EOF before its first byte."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise
        return None
    start, *lines = raw.lstrip(b"\r\n")[:-4].split(b"\r\n")
    headers: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(b":")
        if not sep:
            raise ValueError(f"malformed header line {line[:80]!r}")
        headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    return _Head(start, lines, headers)


def _content_length(head: _Head) -> int | None:
    value = head.headers.get("content-length")
    return None if value is None else int(value)


async def _body(reader: asyncio.StreamReader, head: _Head, *, until_close: bool) -> _Body:
    """Yield a message body as raw wire bytes, in whatever framing `head` declares."""
    if head.token("transfer-encoding", "chunked"):
        while True:
            size_line = await reader.readuntil(b"\r\n")
            yield size_line
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                while (trailer := await reader.readuntil(b"\r\n")) != b"\r\n":
                    yield trailer
                yield trailer
                return
            async for piece in _exactly(reader, size + 2):
                yield piece
    elif (length := _content_length(head)) is not None:
        async for piece in _exactly(reader, length):
            yield piece
    elif until_close:
        while piece := await reader.read(_PIECE):
            yield piece


async def _exactly(reader: asyncio.StreamReader, count: int) -> _Body:
    while count > 0:
        piece = await reader.read(min(count, _PIECE))
        if not piece:
            raise asyncio.IncompleteReadError(b"", count)
        count -= len(piece)
        yield piece


def _response_has_body(method: str, status: int) -> bool:
    return method != "HEAD" and status not in (204, 304) and not 100 <= status < 200


def _error_response(rule: Rule, method: str, path: str, request_id: int, *, close: bool) -> bytes:
    status, code, message = _ERROR_BODIES[rule.kind]
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message><Resource>{path}</Resource>"
        f"<RequestId>faultproxy-{request_id}</RequestId></Error>"
    ).encode()
    named = rule.kind == "wrong_region" and not (rule.silent_objects and "/" in path.strip("/"))
    if named:
        body = body.replace(b"</Message>", f"</Message><Region>{rule.region}</Region>".encode())
    if rule.kind == "wrong_region" and method == "HEAD":
        status = 301
    reason = {503: "Slow Down", 500: "Internal Server Error", 400: "Bad Request", 301: "Moved Permanently"}[status]
    headers = [
        f"HTTP/1.1 {status} {reason}",
        "Content-Type: application/xml",
        f"Content-Length: {len(body)}",
        f"x-amz-request-id: faultproxy-{request_id}",
    ]
    if named:
        headers.append(f"x-amz-bucket-region: {rule.region}")
    if rule.kind == "slowdown":
        headers.append(f"Retry-After: {math.ceil(rule.seconds) if rule.seconds > 0 else 1}")
    if close:
        headers.append("Connection: close")
    return "\r\n".join([*headers, "", ""]).encode("latin-1") + (b"" if method == "HEAD" else body)


def _abort_with_rst(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        # Linger on with a zero timeout makes close() send an RST instead of a FIN.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Upstream:
    """The upstream connection of one client connection, opened lazily and reused while it stays alive."""

    def __init__(self, host: str, port: int) -> None:
        self._host, self._port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    def is_open(self) -> bool:
        return not (self.reader is None or self.writer is None or self.reader.at_eof())

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.reader is None or self.writer is None or self.reader.at_eof() or self.writer.is_closing():
            self.close()
            self.reader, self.writer = await asyncio.open_connection(self._host, self._port, limit=_PIECE)
        return self.reader, self.writer

    def close(self) -> None:
        if self.writer is not None:
            self.writer.transport.abort()
        self.reader = self.writer = None


class FaultProxy:
    """A loopback reverse proxy to `upstream` that injects faults chosen by `rules`."""

    def __init__(self, upstream: str, rules: Sequence[Rule] = (), *, seed: int | None = None) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"upstream: {upstream!r} is not an http://host:port URL")
        self._upstream_host = parts.hostname
        self._upstream_port = parts.port or 80
        self._lock = threading.Lock()  # guards the rule states, the random generator and the counters
        self._rules = [_RuleState(rule) for rule in rules]
        self._random = random.Random(seed)
        self._requests = 0
        self._forwarded = 0
        self._injected: dict[str, int] = dict.fromkeys(FAULT_KINDS, 0)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.url = ""

    # -- control, from any thread ------------------------------------------------------------------------

    def start(self) -> str:
        if self._loop is not None:
            raise RuntimeError("FaultProxy already started")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="faultproxy", daemon=True)
        self._thread.start()
        port = asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(timeout=10)
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=10)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            loop.close()
            self._loop = self._thread = None

    def set_rules(self, rules: Sequence[Rule]) -> None:
        """Replace the rules; their `after` and `limit` counts start again from zero."""
        states = [_RuleState(rule) for rule in rules]
        with self._lock:
            self._rules = states

    def statistics(self) -> ProxyStatistics:
        with self._lock:
            return ProxyStatistics(self._requests, self._forwarded, MappingProxyType(dict(self._injected)))

    @property
    def stats(self) -> ProxyStatistics:
        return self.statistics()

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- the event loop thread ---------------------------------------------------------------------------

    async def _listen(self) -> int:
        self._server = await asyncio.start_server(self._serve_connection, "127.0.0.1", 0, limit=_PIECE)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        connections = list(self._connections)
        for task in connections:
            task.cancel()
        await asyncio.gather(*connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def _choose(self, method: str, path: str, query: str, signed_region: str = "") -> Rule | None:
        """Count the request; return the first rule that fires for it, counting the injection."""
        with self._lock:
            self._requests += 1
            for state in self._rules:
                rule = state.rule
                if not rule.matches(method, path, query, signed_region):
                    continue
                state.matched += 1
                if state.matched <= rule.after or (rule.limit is not None and state.fired >= rule.limit):
                    continue
                if rule.rate >= 1.0 or self._random.random() < rule.rate:
                    state.fired += 1
                    self._injected[rule.kind] += 1
                    return rule
            return None

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        upstream = _Upstream(self._upstream_host, self._upstream_port)
        try:
            while (request := await _read_head(reader)) is not None:
                if not await self._exchange(request, reader, writer, upstream):
                    await _linger_close(reader, writer)
                    return
            writer.close()
        except _Abort as abort:
            if abort.reset:
                _abort_with_rst(writer)
            else:
                writer.close()
        except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            writer.transport.abort()  # a peer went away mid-message, or sent something unparseable
        except asyncio.CancelledError:
            # Only stop() cancels; ending normally keeps Python 3.11's start_server from logging the
            # cancellation as an unhandled error.
            writer.transport.abort()
        finally:
            upstream.close()
            self._connections.discard(task)

    async def _exchange(
        self, request: _Head, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream: _Upstream
    ) -> bool:
        """Serve one request; return whether the client connection stays open for another."""
        method, target, _ = request.start.decode("latin-1").split(" ", 2)
        path, _, query = target.partition("?")
        signed = _SIGNED_REGION.search(request.headers.get("authorization", ""))
        rule = self._choose(method, path, query, signed.group(1) if signed else "")
        expects_continue = request.token("expect", "100-continue")

        if rule is not None and rule.kind in _ERROR_BODIES:
            # Answer without reading a body the client is still waiting to send; otherwise drain it to keep
            # the connection usable, as S3 does.
            close = expects_continue or request.wants_close()
            if not expects_continue:
                async for _ in _body(reader, request, until_close=False):
                    pass
            with self._lock:
                request_id = self._requests
            writer.write(_error_response(rule, method, path, request_id, close=close))
            await writer.drain()
            return not close
        if rule is not None and rule.kind == "reset":
            if expects_continue:
                writer.write(_CONTINUE)
            async for _ in _body(reader, request, until_close=False):
                pass
            raise _Abort(reset=True)
        if rule is not None and rule.kind in ("stall", "delay"):
            await asyncio.sleep(rule.seconds)

        if expects_continue:
            writer.write(_CONTINUE)
        response, up_reader, body_complete = await self._forward(request, reader, upstream)
        with self._lock:
            self._forwarded += 1
        status = int(response.start.split(b" ", 2)[1])
        has_body = _response_has_body(method, status)
        until_close = has_body and (
            _content_length(response) is None and not response.token("transfer-encoding", "chunked")
        )
        keep = body_complete and not (until_close or request.wants_close())
        # Connection is hop-by-hop: an upstream that closes after this response need not close the client's.
        hop_by_hop = frozenset({b"connection", b"keep-alive"}) if keep and response.wants_close() else frozenset()
        writer.write(response.encode(drop=hop_by_hop))
        body = _body(up_reader, response, until_close=True) if has_body else _no_body()
        if rule is not None and rule.kind in ("truncate", "reset_mid_body"):
            length = _content_length(response)
            await _relay(body, writer, budget=length // 2 if length is not None else None)
            upstream.close()  # the rest of this response will never be read
            raise _Abort(reset=rule.kind == "reset_mid_body")
        await _relay(body, writer, budget=-1)
        if not keep or response.wants_close():
            upstream.close()
        return keep

    async def _forward(
        self, request: _Head, reader: asyncio.StreamReader, upstream: _Upstream
    ) -> tuple[_Head, asyncio.StreamReader, bool]:
        """Send the request upstream, streaming its body; return the response head, its reader and whether
        the upstream read the whole request body."""
        reused = upstream.is_open()
        up_reader, up_writer = await upstream.connect()
        up_writer.write(request.encode(drop=frozenset({b"expect"})))
        has_body = "content-length" in request.headers or "transfer-encoding" in request.headers
        body_complete = True
        try:
            await _relay(_body(reader, request, until_close=False), up_writer, budget=-1)
        except (ConnectionResetError, BrokenPipeError):
            if not up_writer.transport.is_closing():
                raise  # the client went away, not the upstream
            body_complete = False  # the upstream answered early and stopped reading; relay its answer
        response = await _read_response_head(up_reader)
        if response is None and reused and not has_body:
            # The upstream closed the idle connection as we reused it: a bodiless request is safe to resend.
            upstream.close()
            up_reader, up_writer = await upstream.connect()
            up_writer.write(request.encode(drop=frozenset({b"expect"})))
            response = await _read_response_head(up_reader)
        if response is None:
            raise ConnectionResetError("upstream closed the connection before responding")
        return response, up_reader, body_complete


async def _read_response_head(reader: asyncio.StreamReader) -> _Head | None:
    """Read the final response head, skipping interim ones (the client got our own 100 Continue)."""
    try:
        while (response := await _read_head(reader)) is not None:
            if not response.start.split(b" ", 2)[1].startswith(b"1"):
                return response
    except (ConnectionResetError, asyncio.IncompleteReadError):
        pass
    return None


async def _no_body() -> _Body:
    return
    yield  # makes this an (empty) async generator


async def _relay(body: _Body, writer: asyncio.StreamWriter, *, budget: int | None) -> None:
    """Copy `body` to `writer`; budget -1: all of it, N: its first N bytes, None: half its first piece."""
    async with aclosing(body):
        async for piece in body:
            if budget is None:
                budget = len(piece) // 2
            if budget >= 0:
                piece = piece[:budget]
                budget -= len(piece)
            writer.write(piece)
            await writer.drain()
            if budget == 0:
                break


async def _linger_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Close after a final response without resetting it: half-close, then drain until the client closes."""
    await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()
    try:
        async with asyncio.timeout(_LINGER_SECONDS):
            while await reader.read(_PIECE):
                pass
    except (TimeoutError, OSError):
        pass
    writer.close()
