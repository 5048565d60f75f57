"""The in-order transform of one client-side stream: decrypt and/or encrypt, a keyed digest of the plaintext,
and the cutting of its output into upload parts written straight into reusable part buffers.

Why buffers are lent, not made: a freshly mapped 16 MiB buffer costs a page fault per 4 KiB the first time
it is written, which on the machines measured took longer than AES-GCM takes to fill it (bench/README.md).
The cutter writes the cipher's output into a buffer its sink lends (`PartSink.buffer`), hands the filled
buffer to the sink (`PartSink.send`), and the sink gives it back to the pool once the part is uploaded.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from typing import Protocol

import anyio
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from workers.cse.content import ContentDecryptor, ContentEncryptor
from workers.memory import SLACK
from workers.model import SecretKey

DIGEST_PREFIX = "hmac-sha256:"
_DIGEST_INFO = b"rekey plaintext digest v1"
OFFLOAD = 256 * 1024  # transform pieces larger than this in a worker thread (cryptography releases the GIL)


def digest_key(data_key: SecretKey) -> bytes:
    """The key of an object's plaintext digest: HKDF-SHA256 of its data key. The checkpoint holds the digest
    only, so nobody who reads it can confirm a guess of the plaintext without the data key; `verify --deep`
    derives it again from the data key it unwraps anyway."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_DIGEST_INFO).derive(data_key.raw)


class PlaintextDigest:
    """HMAC-SHA256 of a plaintext under `digest_key`, written `hmac-sha256:<hex>`."""

    def __init__(self, key: bytes) -> None:
        self._mac = hmac.new(key, digestmod=hashlib.sha256)

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._mac.update(data)

    def text(self) -> str:
        return DIGEST_PREFIX + self._mac.hexdigest()


class Transform:
    """In-order bytes transform: optional decrypt, then optional encrypt; a keyed digest of the plaintext."""

    def __init__(self, decryptor: ContentDecryptor | None, encryptor: ContentEncryptor | None,
                 digest_with: SecretKey | None = None) -> None:
        self._dec = decryptor
        self._enc = encryptor
        self._sha = PlaintextDigest(digest_key(digest_with)) if digest_with is not None else None
        self._scratch = bytearray()   # decrypted plaintext on its way to the encryptor (re-encryption)
        self.plain_bytes = 0

    def update(self, chunk: bytes) -> bytes:
        plain = self._dec.update(chunk) if self._dec else chunk
        self._plain(plain)
        return self._enc.update(plain) if self._enc else plain

    def update_into(self, chunk: bytes | bytearray | memoryview, out: memoryview) -> int:
        """`update` written into `out` (at least len(chunk) + SLACK bytes); returns the bytes written."""
        if self._dec is None:
            plain: memoryview = memoryview(chunk)
        else:
            target = out if self._enc is None else self._scratch_for(len(chunk))
            plain = target[:self._dec.update_into(chunk, target)]
        self._plain(plain)
        if self._enc is not None:
            return self._enc.update_into(plain, out)
        if self._dec is None:
            out[:len(plain)] = plain
        return len(plain)

    def reserve(self, n: int) -> None:
        """Make room for pieces of up to `n` bytes now, on the calling (event loop) thread: a buffer made
        in a worker thread would come from that thread's heap arena and stay there."""
        if self._dec is not None and self._enc is not None and len(self._scratch) < n + SLACK:
            self._scratch = bytearray(n + SLACK)

    def _scratch_for(self, n: int) -> memoryview:
        self.reserve(n)
        return memoryview(self._scratch)

    def _plain(self, plain: bytes | memoryview) -> None:
        self.plain_bytes += len(plain)
        if self._sha is not None:
            self._sha.update(plain)

    def finish(self) -> bytes:
        tail = self._dec.finalize() if self._dec else b""  # raises CorruptObjectError on a bad tag
        self._plain(tail)
        out = self._enc.update(tail) if self._enc else tail
        return out + (self._enc.finalize() if self._enc else b"")

    @property
    def sha256(self) -> str | None:
        """The plaintext's keyed digest (under the target's data key when encrypting, else the source's)."""
        return self._sha.text() if self._sha is not None else None


class PartSink(Protocol):
    """Where the cutter puts its parts."""

    async def buffer(self) -> bytearray:
        """A buffer of part size + SLACK bytes (waits for write room)."""

    async def send(self, number: int, buf: bytearray, length: int) -> None:
        """Upload part `number`, the first `length` bytes of `buf`; the buffer is the sink's again."""


Piece = Callable[[memoryview, memoryview], int]


class PartCutter:
    """Cuts a transformed stream into parts of exactly `part_size` bytes (the last one shorter), each
    written by the transform straight into a buffer the sink lends. A chunk the size of a part fills one
    buffer in one call; bytes a cipher releases past a part's end (CBC's held-back block) start the next."""

    def __init__(self, part_size: int, sink: PartSink) -> None:
        self.part_size = part_size
        self._sink = sink
        self._buf: bytearray | None = None
        self._fill = 0
        self._carry = b""
        self.parts = 0

    async def feed(self, chunk: bytes | bytearray | memoryview, fn: Piece) -> None:
        """Run `fn(piece, out)` over `chunk` in pieces that fit the current buffer; `fn` returns the bytes
        it wrote into `out` (at most len(piece) + SLACK - 1 of them)."""
        view = memoryview(chunk)
        at = 0
        while at < len(view):
            buf = await self._current()
            piece = view[at:at + self.part_size - self._fill]
            out = memoryview(buf)[self._fill:]
            if len(piece) > OFFLOAD:
                n = await anyio.to_thread.run_sync(fn, piece, out)
            else:
                n = fn(piece, out)
            self._fill += n
            at += len(piece)
            if self._fill >= self.part_size:
                await self._emit()

    async def write(self, data: bytes) -> None:
        """Bytes already transformed (a stream's last bytes and its tag)."""
        await self.feed(data, _copy)

    async def close(self) -> int:
        """Send what is left as the last part (an empty stream is one empty part); returns the part count."""
        if self._buf is not None or self._carry or self.parts == 0:
            buf = await self._current()
            self._buf = None
            self.parts += 1
            await self._sink.send(self.parts, buf, self._fill)
        return self.parts

    async def _current(self) -> bytearray:
        if self._buf is None:
            self._buf = await self._sink.buffer()
            self._fill = len(self._carry)
            self._buf[:self._fill] = self._carry
            self._carry = b""
        return self._buf

    async def _emit(self) -> None:
        buf, self._buf = self._buf, None
        assert buf is not None
        self._carry = bytes(buf[self.part_size:self._fill])
        self.parts += 1
        await self._sink.send(self.parts, buf, self.part_size)


def _copy(piece: memoryview, out: memoryview) -> int:
    out[:len(piece)] = piece
    return len(piece)

