"""Legacy client-side formats need `allow_legacy`; every failure to open one reads the same."""

from __future__ import annotations

import os

import anyio
import pytest

from tests.legacy_cse import v1_object
from workers.cse import AesKeyring, ContentDecryptor, MultiKeyring, parse_envelope
from workers.cse.envelope import LEGACY_UNDECRYPTABLE
from workers.errors import CorruptObjectError, LegacyFormatRefusedError, WrongKeyError
from workers.model import SecretKey

KEY = SecretKey(os.urandom(32), source="test")


def _open(body: bytes, md: dict[str, str], keyring: MultiKeyring) -> bytes:
    env = parse_envelope(md)
    data_key = anyio.run(keyring.unwrap, env)
    dec = ContentDecryptor.for_envelope(data_key, env)
    return dec.update(body) + dec.finalize()


def test_v1_is_refused_without_the_switch_and_read_with_it() -> None:
    body, md = v1_object(b"old but gold", KEY.raw)
    with pytest.raises(LegacyFormatRefusedError, match=r"V1 AES-CBC content carries no authentication\): "
                                                        r"refused; set \[source.cse\] allow_legacy = true"):
        _open(body, md, MultiKeyring([AesKeyring(KEY)]))
    assert _open(body, md, MultiKeyring([AesKeyring(KEY)], allow_legacy=True)) == b"old but gold"


def test_wrong_key_and_bad_padding_give_the_same_message() -> None:
    body, md = v1_object(b"x" * 40, KEY.raw)
    other = MultiKeyring([AesKeyring(SecretKey(os.urandom(32), source="other"))], allow_legacy=True)
    with pytest.raises(WrongKeyError) as unwrap:
        _open(body, md, other)
    tampered = bytearray(body)
    # The last padded byte is 8 (40 bytes of content); flipping the same bits of the block before makes it 0,
    # never valid PKCS#7 (a random flip of the last byte unpadded cleanly about 1 run in 256).
    tampered[-17] ^= 8
    with pytest.raises(CorruptObjectError) as content:
        _open(bytes(tampered), md, MultiKeyring([AesKeyring(KEY)], allow_legacy=True))
    assert str(unwrap.value) == str(content.value) == LEGACY_UNDECRYPTABLE
