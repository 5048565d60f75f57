"""A client-side stream cut into upload parts: every part but the last is exactly part_size, no byte lost or
changed, whatever the chunking, for each transform (encrypt, decrypt GCM and legacy CBC, re-encrypt)."""

from __future__ import annotations

import os
import random

import anyio
import pytest
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from workers.cse import ContentDecryptor, ContentEncryptor, CseFormat
from workers.cse.transform import PartCutter, Transform
from workers.memory import SLACK, BufferPool
from workers.model import SecretKey

KEY = SecretKey(bytes(range(32)), source="test")
IV = bytes(range(16))


class Sink:
    """Lends buffers from a pool and keeps what each part carried."""

    def __init__(self, part_size: int) -> None:
        self.pool = BufferPool()
        self.size = part_size + SLACK
        self.parts: list[tuple[int, bytes]] = []
        self.lent: list[bytearray] = []

    async def buffer(self) -> bytearray:
        buf = self.pool.take(self.size)
        self.lent.append(buf)
        return buf

    async def send(self, number: int, buf: bytearray, length: int) -> None:
        self.parts.append((number, bytes(buf[:length])))
        self.pool.give(buf)


def cut(data: bytes, part_size: int, transform: Transform, rng: random.Random) -> Sink:
    sink = Sink(part_size)

    async def main() -> None:
        cutter = PartCutter(part_size, sink)
        at = 0
        while at < len(data):
            n = rng.randint(0, 3 * part_size)
            await cutter.feed(data[at:at + n], transform.update_into)
            at += n
        await cutter.write(transform.finish())
        assert await cutter.close() == len(sink.parts)

    anyio.run(main)
    return sink


def check_parts(sink: Sink, part_size: int) -> bytes:
    numbers = [n for n, _ in sink.parts]
    assert numbers == list(range(1, len(numbers) + 1))
    bodies = [b for _, b in sink.parts]
    assert all(len(b) == part_size for b in bodies[:-1])
    assert 0 < len(bodies[-1]) <= part_size or len(bodies) == 1
    return b"".join(bodies)


def gcm_encrypt(plain: bytes, fmt: CseFormat = CseFormat.V3) -> tuple[bytes, ContentEncryptor]:
    enc = ContentEncryptor(KEY, fmt, message_id=bytes(28) if fmt is CseFormat.V3 else None)
    return enc.update(plain) + enc.finalize(), enc


def gcm_decryptor(iv: bytes) -> ContentDecryptor:
    return ContentDecryptor(Cipher(algorithms.AES(KEY.raw), modes.GCM(iv)).decryptor(), gcm=True)


@pytest.mark.parametrize("seed", range(40))
def test_copy_cuts_exact_parts_and_keeps_every_byte(seed: int) -> None:
    rng = random.Random(seed)
    part_size = rng.randint(SLACK + 1, 400)
    data = os.urandom(rng.randint(0, 2000))
    sink = cut(data, part_size, Transform(None, None), rng)
    assert check_parts(sink, part_size) == data


@pytest.mark.parametrize("seed", range(40))
def test_encrypting_into_lent_buffers_gives_the_same_body_as_one_call(seed: int) -> None:
    rng = random.Random(seed)
    part_size = rng.randint(SLACK + 1, 400)
    plain = os.urandom(rng.randint(0, 2000))
    expected, _ = gcm_encrypt(plain)
    enc = ContentEncryptor(KEY, CseFormat.V3, message_id=bytes(28))
    transform = Transform(None, enc, digest_with=KEY)
    sink = cut(plain, part_size, transform, rng)
    assert check_parts(sink, part_size) == expected
    assert transform.plain_bytes == len(plain)


@pytest.mark.parametrize("seed", range(40))
def test_gcm_decrypt_and_reencrypt_into_lent_buffers(seed: int) -> None:
    rng = random.Random(seed)
    part_size = rng.randint(SLACK + 1, 400)
    plain = os.urandom(rng.randint(0, 2000))
    body, source = gcm_encrypt(plain, CseFormat.V2)
    sink = cut(body, part_size, Transform(gcm_decryptor(source.iv), None, digest_with=KEY), rng)
    assert check_parts(sink, part_size) == plain
    again = ContentEncryptor(KEY, CseFormat.V3, message_id=bytes(28))
    sink = cut(body, part_size, Transform(gcm_decryptor(source.iv), again), rng)
    assert check_parts(sink, part_size) == gcm_encrypt(plain)[0]


@pytest.mark.parametrize("seed", range(40))
def test_legacy_cbc_decrypt_into_lent_buffers(seed: int) -> None:
    rng = random.Random(seed)
    part_size = rng.randint(SLACK + 1, 400)
    plain = os.urandom(rng.randint(0, 2000))
    padder = padding.PKCS7(128).padder()
    enc = Cipher(algorithms.AES(KEY.raw), modes.CBC(IV)).encryptor()
    body = enc.update(padder.update(plain) + padder.finalize()) + enc.finalize()
    dec = ContentDecryptor(Cipher(algorithms.AES(KEY.raw), modes.CBC(IV)).decryptor(), gcm=False)
    transform = Transform(dec, None, digest_with=KEY)
    sink = cut(body, part_size, transform, rng)
    assert check_parts(sink, part_size) == plain
    assert transform.plain_bytes == len(plain)


def test_digest_is_the_same_whichever_way_the_bytes_went() -> None:
    plain = os.urandom(5000)
    one = Transform(None, None, digest_with=KEY)
    one.update(plain)
    cut(plain, 300, two := Transform(None, None, digest_with=KEY), random.Random(1))
    assert one.sha256 == two.sha256 and one.sha256 is not None and one.sha256.startswith("hmac-sha256:")


def test_whole_parts_fill_one_lent_buffer_each_and_buffers_come_back() -> None:
    part_size = 1000
    plain = os.urandom(4 * part_size)
    sink = Sink(part_size)

    async def main() -> None:
        cutter = PartCutter(part_size, sink)
        for i in range(4):
            await cutter.feed(plain[i * part_size:(i + 1) * part_size], Transform(None, None).update_into)
        await cutter.close()

    anyio.run(main)
    assert b"".join(b for _, b in sink.parts) == plain and len(sink.parts) == 4
    assert len({id(b) for b in sink.lent}) == 1   # each part's buffer was given back and lent again
