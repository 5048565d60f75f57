"""HTTP/1.1 on asyncio for the fast transport: one keep-alive pool per endpoint, bodies read whole.

The fast transport's requests are small and known in full before they are sent (signed headers, a body
in memory), and their answers are read whole (a HEAD, a small XML body, one ranged part). For that,
aiohttp's client spends about 0.18 ms of CPU per request on machinery these requests never use (cookie
jars, redirects, traces, multidict headers, a stream reader, a timer rescheduled per chunk): as much
as the rest of the request. This is the part of HTTP they do use, on `asyncio.Protocol`:

- a pool of keep-alive connections per origin (scheme, host, port), at most `limit` connections in all,
  an idle connection dropped after `keepalive` seconds;
- TLS with the SSL context botocore's HTTP session builds (its CA bundle, verify setting, client cert);
- `connect_timeout` for the connection (TCP and TLS), `read_timeout` for silence while an answer is due;
- answers framed by Content-Length, chunked encoding or the connection's close; 1xx answers skipped.

Nothing is sent twice here: a failure on a reused connection is reported like any other, and the
boundary's retry policy decides (so a fault proxy counts every attempt). Proxied requests are not sent
here (workers.s3.fast sends them through aiohttp, which speaks CONNECT and proxy TLS).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

KEEPALIVE = 12.0          # seconds an idle connection is kept (aiobotocore's keep-alive timeout)
_MAX_HEAD = 64 * 1024     # bytes of status line and headers accepted
_WRITE_PIECE = 256 * 1024  # bytes of a body handed to the transport at a time
_NO_BODY = frozenset({204, 304})


class WireError(Exception):
    """A request that got no complete answer. `kind`: connect, connect_timeout, read_timeout, closed, ssl."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: dict[str, str]   # names in lower case; a repeated header keeps its last value
    body: bytes


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: one request at a time, its answer parsed as the bytes arrive."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._answer: asyncio.Future[Answer] | None = None
        self._head = bytearray()
        self._chunks: list[bytes] = []
        self._have = 0
        self._length: int | None = None   # None: chunked (self._chunked) or until close
        self._chunked: bytearray | None = None
        self._status = 0
        self._headers: dict[str, str] = {}
        self._in_body = False
        self._no_body = False
        self.keep_alive = True
        self._last_data = 0.0
        self._drained: asyncio.Future[None] | None = None

    # --- asyncio.Protocol --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)   # uvloop's is not a subclass, but is one

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        if self._answer is None or self._answer.done():
            return
        if self._in_body and self._length is None and self._chunked is None:
            self._finish()   # framed by the close
            return
        detail = f"connection closed before the answer was complete ({exc or 'by the server'})"
        self._fail(WireError("closed", detail))

    def pause_writing(self) -> None:
        self._drained = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        self._drained = None

    def data_received(self, data: bytes) -> None:
        self._last_data = time.monotonic()
        if self._answer is None or self._answer.done():
            self.keep_alive = False   # bytes nobody asked for: this connection is not reused
            return
        try:
            if not self._in_body:
                self._head += data
                data = self._read_head()
                if not self._in_body:
                    return
            self._read_body(data)
        except WireError as exc:
            self.keep_alive = False
            self._fail(exc)

    # --- the answer --------------------------------------------------------------------------------

    def start(self, answer: asyncio.Future[Answer], *, head_request: bool) -> None:
        self._answer = answer
        self._head = bytearray()
        self._chunks, self._have, self._in_body = [], 0, False
        self._no_body = head_request
        self._last_data = time.monotonic()

    def _read_head(self) -> bytes:
        """Parse the status line and headers once they are all in; the bytes after them."""
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > _MAX_HEAD:
                raise WireError("closed", f"answer headers over {_MAX_HEAD} bytes")
            return b""
        lines = bytes(self._head[:end]).decode("latin-1").split("\r\n")
        rest = bytes(self._head[end + 4:])
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise WireError("closed", f"not an HTTP/1.x status line: {lines[0][:80]!r}")
        status = int(parts[1])
        if 100 <= status < 200:   # 100 Continue and the like: the real answer follows
            self._head = bytearray(rest)
            return self._read_head() if rest else b""
        headers = {}
        for line in lines[1:]:   # no space before the colon (RFC 9112 5.1)
            name, _, value = line.partition(":")
            headers[name.lower()] = value.strip()
        self._status, self._headers, self._in_body = status, headers, True
        self._frame(parts[0], headers)
        return rest

    def _frame(self, version: str, headers: dict[str, str]) -> None:
        connection = headers.get("connection", "").lower()
        self.keep_alive = "close" not in connection and (version != "HTTP/1.0" or "keep-alive" in connection)
        self._length, self._chunked = None, None
        if self._no_body or self._status in _NO_BODY:
            self._length = 0
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            self._chunked = bytearray()
        elif "content-length" in headers:
            try:
                self._length = int(headers["content-length"])
            except ValueError:
                raise WireError("closed", f"bad Content-Length {headers['content-length']!r}") from None
        else:
            self.keep_alive = False   # framed by the close

    def _read_body(self, data: bytes) -> None:
        if self._chunked is not None:
            self._chunked += data
            self._read_chunks()
            return
        if data:
            self._chunks.append(data)
            self._have += len(data)
        if self._length is not None and self._have >= self._length:
            if self._have > self._length:
                self.keep_alive = False
            self._finish()

    def _read_chunks(self) -> None:
        """Decode what chunked encoding has arrived; finish at the last chunk and its trailers. The decoded
        chunks leave the buffer once per call, not once per chunk."""
        buf = self._chunked
        assert buf is not None
        at = 0
        try:
            while (eol := buf.find(b"\r\n", at)) >= 0:
                size_text = bytes(buf[at:eol]).split(b";", 1)[0].strip()
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise WireError("closed", f"bad chunk size {size_text[:20]!r}") from None
                if size == 0:   # the last chunk; then trailers (if any) and an empty line
                    if buf.startswith(b"\r\n", eol + 2) or buf.find(b"\r\n\r\n", eol) >= 0:
                        self._finish()
                    return
                if len(buf) < eol + 2 + size + 2:
                    return
                self._chunks.append(bytes(buf[eol + 2:eol + 2 + size]))
                at = eol + 2 + size + 2
        finally:
            if self._chunked is not None:
                del buf[:at]

    def _finish(self) -> None:
        assert self._answer is not None
        body = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        if self._length is not None and len(body) > self._length:
            body = body[:self._length]
        self._chunks, self._chunked = [], None
        # An idle connection keeps no answer: a pool of them would otherwise pin a part's body each.
        answer, self._answer = self._answer, None
        answer.set_result(Answer(self._status, self._headers, body))

    def _fail(self, exc: WireError) -> None:
        assert self._answer is not None
        self._chunks, self._chunked = [], None
        answer, self._answer = self._answer, None
        answer.set_exception(exc)

    def silent_for(self) -> float:
        return time.monotonic() - self._last_data

    async def drained(self) -> None:
        if self._drained is not None:
            await self._drained


class Wire:
    """Keep-alive connections per origin, at most `limit` in all (see module doc)."""

    def __init__(self, *, limit: int, connect_timeout: float | None, read_timeout: float | None,
                 ssl_context: Callable[[], ssl.SSLContext], keepalive: float = KEEPALIVE) -> None:
        self._slots = asyncio.Semaphore(max(1, limit))
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._ssl_context = ssl_context
        self._ssl: ssl.SSLContext | None = None
        self._keepalive = keepalive
        self._open: set[_Connection] = set()

    async def request(self, method: str, url: str, headers: dict[str, str],
                      body: bytes | memoryview | None) -> Answer:
        """Send one request and read its whole answer. Raises `WireError` when no complete answer came."""
        split = urlsplit(url)
        scheme = split.scheme.lower()
        port = split.port or (443 if scheme == "https" else 80)
        where = (scheme, split.hostname or "", port)
        target = split.path or "/"
        if split.query:
            target += "?" + split.query
        async with self._slots:
            conn = self._reuse(where) or await self._connect(where)
            try:
                answer = await self._exchange(conn, method, target, headers, body)
            except BaseException:
                self._drop(conn)
                raise
            self._release(where, conn)
            return answer

    async def _exchange(self, conn: _Connection, method: str, target: str, headers: dict[str, str],
                        body: bytes | memoryview | None) -> Answer:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Answer] = loop.create_future()
        conn.start(answer, head_request=method == "HEAD")
        lines = [f"{method} {target} HTTP/1.1"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if body is not None and "Content-Length" not in headers and "content-length" not in headers:
            lines.append(f"Content-Length: {len(body)}")
        transport = conn.transport
        assert transport is not None
        transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if body is not None and len(body):
            await self._write_body(conn, transport, memoryview(body))
        return await self._await(conn, answer)

    @staticmethod
    async def _write_body(conn: _Connection, transport: asyncio.Transport, body: memoryview) -> None:
        """The body in pieces, each written once the last has drained: the transport copies what the socket
        does not take at once, so a part written whole would be held twice until it is sent."""
        for start in range(0, len(body), _WRITE_PIECE):
            transport.write(body[start:start + _WRITE_PIECE])
            await conn.drained()
            if conn.closed:
                return   # the answer (or the close) says what happened

    async def _await(self, conn: _Connection, answer: asyncio.Future[Answer]) -> Answer:
        """The answer, or a read timeout once the connection has been silent for `read_timeout`."""
        timeout = self._read_timeout
        if timeout is None:
            return await answer
        loop = asyncio.get_running_loop()
        timer: list[asyncio.TimerHandle] = []
        # The timer reaches the answer through `pending`, emptied once the answer is in: a cancelled timer
        # may outlive the request, and must not keep its body (a whole part) alive until its deadline.
        pending = [answer]

        def check() -> None:
            if not pending or pending[0].done():
                return
            silent = conn.silent_for()
            if silent >= timeout:
                pending[0].set_exception(WireError("read_timeout", f"no bytes for {timeout:g} s"))
            else:
                timer[0] = loop.call_later(timeout - silent, check)

        timer.append(loop.call_later(timeout, check))
        try:
            return await answer
        finally:
            timer[0].cancel()
            pending.clear()

    def _reuse(self, where: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle.get(where)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if not conn.closed and conn.keep_alive and now - conn.idle_since < self._keepalive:
                return conn
            self._drop(conn)
        return None

    async def _connect(self, where: tuple[str, str, int]) -> _Connection:
        scheme, host, port = where
        loop = asyncio.get_running_loop()
        context = None
        if scheme == "https":
            if self._ssl is None:
                self._ssl = await asyncio.to_thread(self._ssl_context)   # reads CA files: off the loop
            context = self._ssl
        try:
            _, conn = await asyncio.wait_for(loop.create_connection(
                _Connection, host, port, ssl=context, server_hostname=host if context else None),
                self._connect_timeout)
        except TimeoutError:
            raise WireError("connect_timeout", f"no connection to {host}:{port} in {self._connect_timeout} s") \
                from None
        except ssl.SSLError as exc:
            raise WireError("ssl", f"{host}:{port}: {exc}") from exc
        except OSError as exc:
            raise WireError("connect", f"{host}:{port}: {exc.strerror or exc}") from exc
        self._open.add(conn)
        return conn

    def _release(self, where: tuple[str, str, int], conn: _Connection) -> None:
        if conn.closed or not conn.keep_alive:
            self._drop(conn)
            return
        conn.idle_since = time.monotonic()
        self._idle.setdefault(where, []).append(conn)

    def _drop(self, conn: _Connection) -> None:
        self._open.discard(conn)
        if conn.transport is not None and not conn.closed:
            conn.transport.abort()
        conn.closed = True

    def close(self) -> None:
        """Close every connection (idle or not)."""
        for conn in list(self._open):
            self._drop(conn)
        self._idle.clear()


__all__ = ["Answer", "Wire", "WireError"]
