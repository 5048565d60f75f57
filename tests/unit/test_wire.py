"""workers.s3.wire against a scripted HTTP server on 127.0.0.1: framing, keep-alive, timeouts, failures."""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections.abc import Awaitable, Callable

import pytest

from workers.s3.wire import Wire, WireError

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:] if line)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return head[0], headers, body


def _run(handler: Handler, client: Callable[[Wire, str], Awaitable[object]], **wire_args: float) -> object:
    async def main() -> object:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        wire = Wire(limit=4, connect_timeout=wire_args.get("connect", 5.0), read_timeout=wire_args.get("read", 5.0),
                    ssl_context=ssl.create_default_context)
        try:
            return await client(wire, f"http://127.0.0.1:{port}")
        finally:
            wire.close()
            server.close()
    return asyncio.run(main())


def test_keep_alive_reuses_one_connection_for_sequential_requests() -> None:
    connections = []
    seen: list[tuple[str, dict[str, str], bytes]] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        while True:
            try:
                line, headers, body = await _read_request(reader)
            except asyncio.IncompleteReadError:
                return
            seen.append((line, headers, body))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nETag: \"x\"\r\n\r\nhello")
            await writer.drain()

    async def client(wire: Wire, base: str) -> object:
        out = []
        for i in range(3):
            got = await wire.request("PUT", f"{base}/b/k%20{i}?x=1", {"Host": "h"}, b"data")
            out.append((got.status, got.headers["etag"], got.body))
        # an idle connection holds no answer (a pool of them would pin a part's body each)
        idle = [conn for conns in wire._idle.values() for conn in conns]
        assert len(idle) == 1 and idle[0]._answer is None and idle[0]._chunks == []
        return out

    assert _run(handler, client) == [(200, '"x"', b"hello")] * 3
    assert len(connections) == 1
    assert [s[0] for s in seen] == [f"PUT /b/k%20{i}?x=1 HTTP/1.1" for i in range(3)]
    assert all(s[1]["content-length"] == "4" and s[2] == b"data" for s in seen)


def test_chunked_answers_1xx_and_head_are_framed() -> None:
    answers = [
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n",   # an answer to HEAD: no body follows
        b"HTTP/1.1 204 No Content\r\n\r\n",
    ]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for answer in answers:
            await _read_request(reader)
            for i in range(0, len(answer), 7):   # in pieces, as a network may deliver it
                writer.write(answer[i:i + 7])
                await writer.drain()
        await reader.read()

    async def client(wire: Wire, base: str) -> object:
        out = []
        for method in ("GET", "GET", "HEAD", "DELETE"):
            got = await wire.request(method, f"{base}/k", {"Host": "h"}, None)
            out.append((got.status, got.body))
        return out

    assert _run(handler, client) == [(200, b"hello world"), (200, b"abc"), (200, b""), (204, b"")]


def _answer_then_close(answer: bytes) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(answer)
        await writer.drain()
        writer.close()
    return handler


def test_a_body_framed_by_the_close_is_read_whole() -> None:
    async def client(wire: Wire, base: str) -> object:
        got = await wire.request("GET", f"{base}/k", {"Host": "h"}, None)
        return got.status, got.body

    assert _run(_answer_then_close(b"HTTP/1.0 200 OK\r\n\r\nuntil the end"), client) == (200, b"until the end")


def test_a_truncated_body_is_an_error_not_a_short_answer() -> None:
    async def client(wire: Wire, base: str) -> object:
        with pytest.raises(WireError) as info:
            await wire.request("GET", f"{base}/k", {"Host": "h"}, None)
        return info.value.kind

    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part"
    assert _run(_answer_then_close(answer), client) == "closed"


def test_silence_is_a_read_timeout_and_the_connection_is_not_reused() -> None:
    connections = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        await _read_request(reader)
        if len(connections) == 1:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")   # then nothing
            await writer.drain()
            await asyncio.sleep(5)
            return
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()

    async def client(wire: Wire, base: str) -> object:
        with pytest.raises(WireError) as info:
            await wire.request("GET", f"{base}/k", {"Host": "h"}, None)
        got = await wire.request("GET", f"{base}/k", {"Host": "h"}, None)
        return info.value.kind, got.body

    assert _run(handler, client, read=0.3) == ("read_timeout", b"ok")
    assert len(connections) == 2


def test_refused_connection_and_garbage_are_named() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await writer.drain()

    async def client(wire: Wire, base: str) -> object:
        kinds = []
        for url in (f"{base}/k", "http://127.0.0.1:9/k"):
            with pytest.raises(WireError) as info:
                await wire.request("GET", url, {"Host": "h"}, None)
            kinds.append(info.value.kind)
        return kinds

    assert _run(handler, client) == ["closed", "connect"]


def test_a_large_body_arrives_whole_and_in_order() -> None:
    body = bytes(range(256)) * (12 * 1024) + b"tail"   # 3 MiB and 4 bytes: many pieces of the writer

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _, _, got = await _read_request(reader)
        digest = hashlib.sha256(got).hexdigest().encode()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(digest), digest))
        await writer.drain()

    async def client(wire: Wire, base: str) -> object:
        got = await wire.request("PUT", f"{base}/k", {"Host": "h"}, memoryview(body))
        return got.body.decode()

    assert _run(handler, client) == hashlib.sha256(body).hexdigest()


def test_a_finished_answer_is_not_kept_alive_by_its_read_timer() -> None:
    """On uvloop (as `rekey run` is), a cancelled timer keeps its callback until its deadline: the answer's
    body (a whole part) must not be reachable from it, or every part read in the last `read_timeout`
    seconds stays in memory."""
    import sys

    import uvloop

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n" + b"x" * 1048576)
        await writer.drain()
        await reader.read()

    async def main() -> int:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        wire = Wire(limit=1, connect_timeout=5.0, read_timeout=30.0, ssl_context=ssl.create_default_context)
        try:
            got = await wire.request("GET", f"http://127.0.0.1:{port}/k", {"Host": "h"}, None)
            body = got.body
            del got
            for _ in range(3):   # the loop's handle that woke this task holds its answer until the next one
                await asyncio.sleep(0)
            return sys.getrefcount(body)   # this frame's name and getrefcount's argument: 2
        finally:
            wire.close()
            server.close()

    assert uvloop.run(main()) == 2
