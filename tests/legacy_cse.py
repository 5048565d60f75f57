"""Hand-built legacy S3EC V1 objects (AES-CBC content, AES/ECB-wrapped data key), as old Java clients wrote."""

from __future__ import annotations

import base64
import os

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


def v1_object(plaintext: bytes, wrap_key: bytes) -> tuple[bytes, dict[str, str]]:
    """(body, metadata) of a V1 object: AES-256-CBC/PKCS#7 content, data key wrapped with AES/ECB."""
    data_key, iv = os.urandom(32), os.urandom(16)
    padder = padding.PKCS7(128).padder()
    enc = Cipher(algorithms.AES(data_key), modes.CBC(iv)).encryptor()
    body = enc.update(padder.update(plaintext) + padder.finalize()) + enc.finalize()
    key_padder = padding.PKCS7(128).padder()
    wrap = Cipher(algorithms.AES(wrap_key), modes.ECB()).encryptor()
    edk = wrap.update(key_padder.update(data_key) + key_padder.finalize()) + wrap.finalize()
    return body, {"x-amz-key": base64.b64encode(edk).decode(), "x-amz-iv": base64.b64encode(iv).decode(),
                  "x-amz-matdesc": "{}", "x-amz-unencrypted-content-length": str(len(plaintext))}
