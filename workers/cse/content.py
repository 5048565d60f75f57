"""Streaming S3EC content ciphers: AES-GCM (V2), HKDF-derived AES-GCM with commitment (V3), CBC decrypt (V1).

Chunks are fed in order; the object body is ciphertext || 16-byte tag. Format: s3ec-format.md sections 2-3.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes
from cryptography.hazmat.primitives.hashes import SHA512
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from workers.cse.envelope import (
    COMMITMENT_LEN,
    LEGACY_UNDECRYPTABLE,
    MESSAGE_ID_LEN,
    TAG_LEN,
    V3_IV,
    ContentAlg,
    CseFormat,
    Envelope,
    WrappedKey,
)
from workers.errors import CorruptObjectError, UnsupportedError
from workers.model import SecretKey

GCM_MAX_PLAINTEXT = 2**36 - 32
"""Largest plaintext one GCM stream may carry (about 64 GiB)."""

_SUITE_ID = b"\x00\x73"  # 0x0073: the V3 suite id, used as GCM AAD and as the HKDF info prefix
_GCM_IV_LEN = 12


def new_data_key() -> SecretKey:
    """A fresh random 32-byte content key."""
    return SecretKey(os.urandom(32), source="data key")


def derive_v3_keys(data_key: SecretKey, message_id: bytes) -> tuple[bytes, bytes]:
    """(DEK, commitment) for V3: HKDF-SHA512, salt = message id, info = 00 73 || DERIVEKEY / COMMITKEY."""
    if len(message_id) != MESSAGE_ID_LEN:
        raise ValueError(f"V3 message id must be {MESSAGE_ID_LEN} bytes")
    prk = hmac.new(message_id, data_key.raw, hashlib.sha512).digest()
    dek = HKDFExpand(SHA512(), 32, _SUITE_ID + b"DERIVEKEY").derive(prk)
    commitment = HKDFExpand(SHA512(), COMMITMENT_LEN, _SUITE_ID + b"COMMITKEY").derive(prk)
    return dek, commitment


def verify_commitment(data_key: SecretKey, env: Envelope) -> bytes:
    """Check a V3 envelope's commitment against `data_key` in constant time; return the DEK."""
    if env.message_id is None or env.commitment is None:
        raise CorruptObjectError("V3 envelope without message id or commitment")
    dek, commitment = derive_v3_keys(data_key, env.message_id)
    if not hmac.compare_digest(commitment, env.commitment):
        raise CorruptObjectError("key commitment mismatch: the data key does not belong to this object")
    return dek


def ciphertext_length(plaintext_len: int, fmt: CseFormat) -> int:
    """Body length of a GCM object (V2/V3) for a plaintext of `plaintext_len` bytes."""
    if fmt is CseFormat.V1:
        return (plaintext_len // 16 + 1) * 16
    return plaintext_len + TAG_LEN


def plaintext_length(ciphertext_len: int, env: Envelope) -> int | None:
    """Plaintext length of a body; None for CBC when the metadata does not record it (padding hides it)."""
    if env.is_gcm:
        if ciphertext_len < TAG_LEN:
            raise CorruptObjectError(f"ciphertext of {ciphertext_len} bytes is shorter than the GCM tag")
        return ciphertext_len - TAG_LEN
    return env.unencrypted_length


class ContentEncryptor:
    """Encrypts one object's content as one GCM stream (V2 or V3). Never writes V1/CBC.

    `update` each chunk in order, then `finalize` returns the 16-byte tag to append to the body.
    """

    __slots__ = ("_commitment", "_ctx", "_fmt", "_iv", "_message_id", "_total")

    def __init__(self, data_key: SecretKey, fmt: CseFormat, *, message_id: bytes | None = None) -> None:
        self._fmt = fmt
        self._total = 0
        self._message_id: bytes | None = None
        self._commitment: bytes | None = None
        if fmt is CseFormat.V3:
            self._message_id = os.urandom(MESSAGE_ID_LEN) if message_id is None else message_id
            dek, self._commitment = derive_v3_keys(data_key, self._message_id)
            self._iv = V3_IV
            self._ctx: CipherContext = Cipher(algorithms.AES(dek), modes.GCM(self._iv)).encryptor()
            self._ctx.authenticate_additional_data(_SUITE_ID)
        elif fmt is CseFormat.V2:
            if message_id is not None:
                raise ValueError("V2 has no message id")
            self._iv = os.urandom(_GCM_IV_LEN)
            self._ctx = Cipher(algorithms.AES(data_key.raw), modes.GCM(self._iv)).encryptor()
        else:
            raise UnsupportedError("V1 (AES-CBC) is read-only: rekey writes V2 or V3 only")

    @property
    def format(self) -> CseFormat:
        return self._fmt

    @property
    def content_alg(self) -> ContentAlg:
        return ContentAlg.AES_GCM_COMMIT if self._fmt is CseFormat.V3 else ContentAlg.AES_GCM

    @property
    def iv(self) -> bytes:
        return self._iv

    @property
    def message_id(self) -> bytes | None:
        return self._message_id

    @property
    def commitment(self) -> bytes | None:
        return self._commitment

    def _count(self, n: int) -> None:
        self._total += n
        if self._total > GCM_MAX_PLAINTEXT:
            raise UnsupportedError(f"plaintext exceeds the GCM limit of {GCM_MAX_PLAINTEXT} bytes "
                                   "for one object")

    def update(self, chunk: bytes | bytearray | memoryview) -> bytes:
        """Encrypt the next chunk; returns as many bytes as it was given."""
        self._count(len(chunk))
        return self._ctx.update(chunk)

    def update_into(self, chunk: bytes | bytearray | memoryview, out: bytearray | memoryview) -> int:
        """Fast path: encrypt into a buffer of at least len(chunk) + 15 bytes; returns the bytes written."""
        self._count(len(chunk))
        return self._ctx.update_into(chunk, out)

    def finalize(self) -> bytes:
        """End the stream; returns the 16-byte tag (the body's last bytes)."""
        rest = self._ctx.finalize()
        if rest:  # GCM emits no trailing bytes; anything here would be a bug
            raise RuntimeError("GCM finalize returned data")
        tag: bytes = self._ctx.tag  # type: ignore[attr-defined]
        return tag

    def envelope(self, wrapped: WrappedKey, *, unencrypted_length: int | None = None) -> Envelope:
        """The envelope describing this stream and its wrapped data key."""
        return Envelope(
            format=self._fmt, wrap_alg=wrapped.wrap_alg, encrypted_data_key=wrapped.edk,
            content_alg=self.content_alg, iv=self._iv, description=dict(wrapped.description),
            message_id=self._message_id, commitment=self._commitment, tag_length=TAG_LEN * 8,
            unencrypted_length=unencrypted_length if self._fmt is CseFormat.V2 else None,
        )

    def __repr__(self) -> str:
        return f"ContentEncryptor(format={self._fmt.value})"


class ContentDecryptor:
    """Decrypts one object's body fed in order. GCM: the last 16 bytes fed are held back as the tag.

    `finalize` authenticates (GCM) or unpads (CBC); plaintext returned by `update` is unauthenticated until
    `finalize` returns: the caller must not publish it before.
    """

    __slots__ = ("_ctx", "_gcm", "_tail", "_unpadder")

    def __init__(self, ctx: CipherContext, *, gcm: bool) -> None:
        self._ctx = ctx
        self._gcm = gcm
        self._tail = b""
        self._unpadder = None if gcm else padding.PKCS7(128).unpadder()

    @classmethod
    def for_envelope(cls, data_key: SecretKey, env: Envelope) -> ContentDecryptor:
        """A decryptor for `env`'s body. V3: the key commitment is checked here, before the key is used."""
        if env.content_alg is ContentAlg.AES_GCM_COMMIT:
            dek = verify_commitment(data_key, env)
            ctx = Cipher(algorithms.AES(dek), modes.GCM(V3_IV)).decryptor()
            ctx.authenticate_additional_data(_SUITE_ID)
            return cls(ctx, gcm=True)
        if env.content_alg is ContentAlg.AES_GCM:
            return cls(Cipher(algorithms.AES(data_key.raw), modes.GCM(env.iv)).decryptor(), gcm=True)
        return cls(Cipher(algorithms.AES(data_key.raw), modes.CBC(env.iv)).decryptor(), gcm=False)

    def update(self, chunk: bytes | bytearray | memoryview) -> bytes:
        """Decrypt the next chunk of the body (unauthenticated until `finalize`)."""
        if not self._gcm:
            assert self._unpadder is not None
            return self._unpadder.update(self._ctx.update(chunk))
        view = memoryview(chunk)
        if len(view) >= TAG_LEN:
            head = self._ctx.update(self._tail) if self._tail else b""
            body = self._ctx.update(view[:-TAG_LEN])
            self._tail = bytes(view[-TAG_LEN:])
            return head + body if head else body
        held = self._tail + bytes(view)
        self._tail = held[-TAG_LEN:]
        return self._ctx.update(held[:-TAG_LEN]) if len(held) > TAG_LEN else b""

    def update_into(self, chunk: bytes | bytearray | memoryview, out: memoryview) -> int:
        """`update` into `out` (at least len(chunk) + 31 bytes long); returns the bytes written. GCM writes
        straight into `out` (no new buffer); CBC (legacy, read-only) goes through `update`."""
        view = memoryview(chunk)
        if not self._gcm or len(view) < TAG_LEN:
            plain = self.update(view)
            out[:len(plain)] = plain
            return len(plain)
        n = self._ctx.update_into(self._tail, out) if self._tail else 0
        n += self._ctx.update_into(view[:-TAG_LEN], out[n:])
        self._tail = bytes(view[-TAG_LEN:])
        return n

    def finalize(self) -> bytes:
        """Authenticate (GCM) or unpad (CBC); returns any last plaintext bytes."""
        if not self._gcm:
            assert self._unpadder is not None
            try:
                last = self._ctx.finalize()
            except ValueError:
                raise CorruptObjectError(LEGACY_UNDECRYPTABLE) from None  # one message: no padding oracle
            try:
                return self._unpadder.update(last) + self._unpadder.finalize()
            except ValueError:
                raise CorruptObjectError(LEGACY_UNDECRYPTABLE) from None
        if len(self._tail) < TAG_LEN:
            raise CorruptObjectError("ciphertext is shorter than the 16-byte GCM tag")
        try:
            return self._ctx.finalize_with_tag(self._tail)  # type: ignore[attr-defined,no-any-return]
        except InvalidTag:
            raise CorruptObjectError("authentication tag mismatch: the object is corrupt, truncated or "
                                     "was modified") from None

    def __repr__(self) -> str:
        return f"ContentDecryptor(gcm={self._gcm})"
