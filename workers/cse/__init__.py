"""Client-side encryption in the S3 Encryption Client format: envelope, content ciphers, keyrings, re-wrap."""

import importlib
from typing import TYPE_CHECKING, Any

from workers.cse.envelope import (
    INSTRUCTION_FILE_MAX,
    INSTRUCTION_SUFFIX,
    S3EC_KEYS,
    ContentAlg,
    CseFormat,
    Envelope,
    WrapAlg,
    WrappedKey,
    detect_format,
    dump_instruction_file,
    envelope_to_metadata,
    instruction_object_metadata,
    is_instruction_file,
    load_instruction_file,
    needs_instruction_file,
    parse_envelope,
)

if TYPE_CHECKING:   # imported when first used: they need cryptography, which a run without client-side
    # encryption never loads (workers.cse.envelope, above, does not)
    from workers.cse.content import (
        GCM_MAX_PLAINTEXT,
        ContentDecryptor,
        ContentEncryptor,
        ciphertext_length,
        derive_v3_keys,
        new_data_key,
        plaintext_length,
        verify_commitment,
    )
    from workers.cse.keyrings import AesKeyring, Keyring, KmsClient, KmsKeyring, MultiKeyring, RsaKeyring
    from workers.cse.rewrap import rewrap_envelope

_LAZY = {
    "GCM_MAX_PLAINTEXT": "content", "ContentDecryptor": "content", "ContentEncryptor": "content",
    "ciphertext_length": "content", "derive_v3_keys": "content", "new_data_key": "content",
    "plaintext_length": "content", "verify_commitment": "content",
    "AesKeyring": "keyrings", "Keyring": "keyrings", "KmsClient": "keyrings", "KmsKeyring": "keyrings",
    "MultiKeyring": "keyrings", "RsaKeyring": "keyrings", "rewrap_envelope": "rewrap",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'workers.cse' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"workers.cse.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "GCM_MAX_PLAINTEXT",
    "INSTRUCTION_FILE_MAX",
    "INSTRUCTION_SUFFIX",
    "S3EC_KEYS",
    "AesKeyring",
    "ContentAlg",
    "ContentDecryptor",
    "ContentEncryptor",
    "CseFormat",
    "Envelope",
    "Keyring",
    "KmsClient",
    "KmsKeyring",
    "MultiKeyring",
    "RsaKeyring",
    "WrapAlg",
    "WrappedKey",
    "ciphertext_length",
    "derive_v3_keys",
    "detect_format",
    "dump_instruction_file",
    "envelope_to_metadata",
    "instruction_object_metadata",
    "is_instruction_file",
    "load_instruction_file",
    "needs_instruction_file",
    "new_data_key",
    "parse_envelope",
    "plaintext_length",
    "rewrap_envelope",
    "verify_commitment",
]
