"""S3EC keyrings: wrap and unwrap a 32-byte data key with KMS, a raw AES key or an RSA key pair.

Format: s3ec-format.md §4. Keyrings show only a fingerprint in repr and str; no message carries key bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap

from workers.cse.envelope import (
    CEK_ALG_CONTEXT_KEY,
    LEGACY_KMS_CONTEXT_KEY,
    LEGACY_UNDECRYPTABLE,
    ContentAlg,
    CseFormat,
    Envelope,
    WrapAlg,
    WrappedKey,
    legacy_reason,
)
from workers.errors import (
    ConfigError,
    CorruptObjectError,
    LegacyFormatRefusedError,
    ObjectError,
    UnsupportedError,
    WrongKeyError,
)
from workers.model import SecretKey

_RESERVED_CONTEXT_KEYS = frozenset({CEK_ALG_CONTEXT_KEY, LEGACY_KMS_CONTEXT_KEY})


def _aad(fmt: CseFormat) -> bytes:
    """What binds a wrapped key to its format: "115" (V3) or the V2 cipher name, UTF-8."""
    if fmt is CseFormat.V3:
        return ContentAlg.AES_GCM_COMMIT.value.encode()
    if fmt is CseFormat.V2:
        return ContentAlg.AES_GCM.value.encode()
    raise UnsupportedError("V1 is read-only: data keys are wrapped for V2 or V3 only")


def _data_key(raw: bytes, what: str) -> SecretKey:
    if len(raw) != 32:
        raise CorruptObjectError(f"{what} unwrapped to {len(raw)} bytes, not a 32-byte data key")
    return SecretKey(raw, source="data key")


def _fingerprint(label: str, material: bytes) -> str:
    return f"{label}:{hashlib.sha256(material).hexdigest()[:16]}"


@runtime_checkable
class Keyring(Protocol):
    """Wraps data keys for new envelopes and unwraps them from existing ones."""

    @property
    def fingerprint(self) -> str:
        """A stable identifier of the key (no secret): stored in checkpoints."""
        ...

    def describe(self) -> str:
        """A human description for logs and reports, without secrets."""
        ...

    def can_unwrap(self, env: Envelope) -> bool:
        """Whether this keyring knows the envelope's wrapping algorithm (not whether its key fits)."""
        ...

    async def wrap(self, data_key: SecretKey, fmt: CseFormat) -> WrappedKey: ...

    async def unwrap(self, env: Envelope) -> SecretKey: ...


class KmsClient(Protocol):
    """What a KMS keyring needs: `workers.s3.Kms` fits."""

    async def encrypt(self, key_id: str, plaintext: bytes, context: Mapping[str, str]) -> bytes: ...

    async def generate_data_key(self, key_id: str, context: Mapping[str, str]) -> KmsDataKey: ...

    async def decrypt(self, ciphertext: bytes, context: Mapping[str, str], key_id: str = "") -> KmsDataKey: ...


class KmsDataKey(Protocol):
    """A data key KMS answered: `workers.s3.DataKey` fits."""

    @property
    def plaintext(self) -> bytes: ...

    @property
    def ciphertext(self) -> bytes: ...

    @property
    def key_id(self) -> str: ...


class KmsKeyring:
    """KMS `kms+context` wrapping (legacy `kms` unwrap too).

    `context` is the user encryption context: added to every wrap, and when not None, required on unwrap
    (the stored context minus the reserved keys must equal it, as every S3EC reader checks). None on unwrap
    accepts any stored context: KMS itself still checks the stored map against the ciphertext.
    """

    __slots__ = ("_context", "_kms", "key_id", "last_key_id")

    def __init__(self, kms: KmsClient, key_id: str, context: Mapping[str, str] | None = None) -> None:
        if context is not None:
            reserved = sorted(set(context) & _RESERVED_CONTEXT_KEYS)
            if reserved:
                raise ConfigError(f"encryption context: {', '.join(reserved)} is reserved for the S3EC")
        self._kms = kms
        self.key_id = key_id
        self.last_key_id = ""  # the KMS key that unwrapped the latest data key (for "already right" checks)
        self._context = dict(context) if context is not None else None

    @property
    def fingerprint(self) -> str:
        payload = json.dumps([self.key_id, self._context], sort_keys=True).encode()
        return _fingerprint("kms", payload)

    def describe(self) -> str:
        return f"kms:{self.key_id}"

    def __repr__(self) -> str:
        return f"KmsKeyring(key_id={self.key_id!r}, context={self._context!r})"

    def can_unwrap(self, env: Envelope) -> bool:
        return env.wrap_alg in (WrapAlg.KMS_CONTEXT, WrapAlg.KMS)

    def _wrap_context(self, fmt: CseFormat) -> dict[str, str]:
        return {**(self._context or {}), CEK_ALG_CONTEXT_KEY: _aad(fmt).decode()}

    async def wrap(self, data_key: SecretKey, fmt: CseFormat) -> WrappedKey:
        """KMS Encrypt of an existing data key (so re-wrap and content-key-first both work)."""
        context = self._wrap_context(fmt)
        edk = await self._kms.encrypt(self.key_id, data_key.raw, context)
        return WrappedKey(edk=edk, wrap_alg=WrapAlg.KMS_CONTEXT, description=context)

    async def generate(self, fmt: CseFormat) -> tuple[SecretKey, WrappedKey]:
        """A new data key from KMS GenerateDataKey, and its wrapping (one request instead of two)."""
        context = self._wrap_context(fmt)
        got = await self._kms.generate_data_key(self.key_id, context)
        key = _data_key(got.plaintext, "KMS GenerateDataKey")
        return key, WrappedKey(edk=got.ciphertext, wrap_alg=WrapAlg.KMS_CONTEXT, description=context)

    def _check_context(self, env: Envelope) -> None:
        stored = dict(env.description)
        if env.wrap_alg is WrapAlg.KMS:
            if self._context:
                raise WrongKeyError("legacy kms wrapping carries no encryption context, but one is required")
            return
        cek = stored.get(CEK_ALG_CONTEXT_KEY)
        if cek != env.content_alg.value:
            raise CorruptObjectError(f"stored {CEK_ALG_CONTEXT_KEY}={cek!r} does not match the content "
                                     f"algorithm {env.content_alg.value}")
        if self._context is not None:
            user = {k: v for k, v in stored.items() if k not in _RESERVED_CONTEXT_KEYS}
            if user != self._context:
                raise WrongKeyError("the stored encryption context does not match the expected one")

    async def unwrap(self, env: Envelope) -> SecretKey:
        if not self.can_unwrap(env):
            raise WrongKeyError(f"a KMS keyring cannot unwrap {env.wrap_alg.value}")
        self._check_context(env)
        try:
            # An empty key id: symmetric blobs name their key.
            got = await self._kms.decrypt(env.encrypted_data_key, dict(env.description), self.key_id)
            self.last_key_id = got.key_id
        except ObjectError as exc:
            # The KMS boundary classified the failure already; these two codes mean "not this key/context".
            if type(exc) is ObjectError and exc.code in ("IncorrectKeyException", "InvalidCiphertextException"):
                raise WrongKeyError(f"KMS key {self.key_id} does not unwrap this data key: {exc.message}",
                                    op="kms:Decrypt") from None
            raise
        return _data_key(got.plaintext, "KMS Decrypt")


class AesKeyring:
    """Raw AES-256 wrapping key: AES/GCM wrap (V2/V3); AESWrap and V1 AES/ECB unwrap (legacy)."""

    __slots__ = ("_key", "material_description")

    def __init__(self, key: SecretKey, material_description: Mapping[str, str] | None = None) -> None:
        self._key = key
        self.material_description = dict(material_description or {})

    @property
    def fingerprint(self) -> str:
        return _fingerprint("aes", self._key.raw)

    def describe(self) -> str:
        return self.fingerprint

    def __repr__(self) -> str:
        return f"AesKeyring({self.fingerprint}, material_description={self.material_description!r})"

    __str__ = __repr__

    def can_unwrap(self, env: Envelope) -> bool:
        if env.wrap_alg is WrapAlg.ENCRYPTION_ONLY:
            return len(env.encrypted_data_key) <= 48  # longer: RSA/PKCS1 (Java's rule)
        return env.wrap_alg in (WrapAlg.AES_GCM, WrapAlg.AES_WRAP)

    async def wrap(self, data_key: SecretKey, fmt: CseFormat) -> WrappedKey:
        iv = os.urandom(12)
        sealed = AESGCM(self._key.raw).encrypt(iv, data_key.raw, _aad(fmt))
        return WrappedKey(edk=iv + sealed, wrap_alg=WrapAlg.AES_GCM,
                          description=dict(self.material_description))

    async def unwrap(self, env: Envelope) -> SecretKey:
        edk = env.encrypted_data_key
        if env.wrap_alg is WrapAlg.AES_GCM:
            if len(edk) != 12 + 32 + 16:
                raise CorruptObjectError(f"AES/GCM-wrapped data key must be 60 bytes, got {len(edk)}")
            try:
                raw = AESGCM(self._key.raw).decrypt(edk[:12], edk[12:], _aad(env.format))
            except InvalidTag:
                raise WrongKeyError(f"AES key {self.fingerprint} does not unwrap this data key") from None
            return _data_key(raw, "AES/GCM")
        if env.wrap_alg is WrapAlg.AES_WRAP:
            try:
                return _data_key(aes_key_unwrap(self._key.raw, edk), "AESWrap")
            except InvalidUnwrap:
                raise WrongKeyError(f"AES key {self.fingerprint} does not unwrap this data key") from None
        if env.wrap_alg is WrapAlg.ENCRYPTION_ONLY:
            ctx = Cipher(algorithms.AES(self._key.raw), modes.ECB()).decryptor()
            unpadder = padding.PKCS7(128).unpadder()
            try:
                raw = unpadder.update(ctx.update(edk) + ctx.finalize()) + unpadder.finalize()
            except ValueError:
                raise WrongKeyError(f"AES key {self.fingerprint} does not unwrap this data key") from None
            return _data_key(raw, "AES/ECB")
        raise WrongKeyError(f"an AES keyring cannot unwrap {env.wrap_alg.value}")


class RsaKeyring:
    """RSA-OAEP-SHA1 wrapping over len(dk) || dk || suffix; wrap needs the public key, unwrap the private."""

    __slots__ = ("_private", "_public", "material_description")

    def __init__(self, public_key_pem: bytes | None, private_key_pem: bytes | None,
                 material_description: Mapping[str, str] | None = None) -> None:
        self._private: rsa.RSAPrivateKey | None = None
        public: rsa.RSAPublicKey | None = None
        try:
            if private_key_pem is not None:
                loaded = serialization.load_pem_private_key(private_key_pem, password=None)
                if not isinstance(loaded, rsa.RSAPrivateKey):
                    raise ConfigError("RSA keyring: the private key is not an RSA key")
                self._private = loaded
                public = loaded.public_key()
            if public_key_pem is not None:
                loaded_pub = serialization.load_pem_public_key(public_key_pem)
                if not isinstance(loaded_pub, rsa.RSAPublicKey):
                    raise ConfigError("RSA keyring: the public key is not an RSA key")
                if public is not None and public.public_numbers() != loaded_pub.public_numbers():
                    raise ConfigError("RSA keyring: the public key does not match the private key")
                public = loaded_pub
        except (ValueError, TypeError):
            raise ConfigError("RSA keyring: key is not a valid unencrypted PEM key") from None
        if public is None:
            raise ConfigError("RSA keyring: needs a public key (to wrap) or a private key (to unwrap)")
        self._public = public
        self.material_description = dict(material_description or {})

    @property
    def fingerprint(self) -> str:
        der = self._public.public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
        return _fingerprint("rsa", der)

    def describe(self) -> str:
        return self.fingerprint

    def __repr__(self) -> str:
        return (f"RsaKeyring({self.fingerprint}, private={self._private is not None}, "
                f"material_description={self.material_description!r})")

    __str__ = __repr__

    @staticmethod
    def _oaep() -> asym_padding.OAEP:
        return asym_padding.OAEP(mgf=asym_padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)

    def can_unwrap(self, env: Envelope) -> bool:
        if self._private is None:
            return False
        if env.wrap_alg is WrapAlg.ENCRYPTION_ONLY:
            return len(env.encrypted_data_key) > 48
        return env.wrap_alg is WrapAlg.RSA_OAEP_SHA1

    async def wrap(self, data_key: SecretKey, fmt: CseFormat) -> WrappedKey:
        pseudo = bytes([len(data_key.raw)]) + data_key.raw + _aad(fmt)
        edk = self._public.encrypt(pseudo, self._oaep())
        return WrappedKey(edk=edk, wrap_alg=WrapAlg.RSA_OAEP_SHA1,
                          description=dict(self.material_description))

    async def unwrap(self, env: Envelope) -> SecretKey:
        if self._private is None:
            raise ConfigError(f"RSA keyring {self.fingerprint}: unwrapping needs the private key")
        if not self.can_unwrap(env):
            raise WrongKeyError(f"an RSA keyring cannot unwrap {env.wrap_alg.value}")
        wrong = WrongKeyError(f"RSA key {self.fingerprint} does not unwrap this data key")
        if env.wrap_alg is WrapAlg.ENCRYPTION_ONLY:
            try:
                return _data_key(self._private.decrypt(env.encrypted_data_key, asym_padding.PKCS1v15()),
                                 "RSA/PKCS1")
            except ValueError:
                raise wrong from None
        try:
            pseudo = self._private.decrypt(env.encrypted_data_key, self._oaep())
        except ValueError:
            raise wrong from None
        suffix = _aad(env.format)
        if len(pseudo) < 1 or pseudo[0] != 32 or len(pseudo) != 1 + 32 + len(suffix):
            raise CorruptObjectError("RSA-wrapped data key has the wrong layout")
        if pseudo[33:] != suffix:
            raise CorruptObjectError("RSA-wrapped data key suffix does not match the object's format")
        return _data_key(pseudo[1:33], "RSA-OAEP-SHA1")


class MultiKeyring:
    """Several keyrings for reading sources: unwrap tries each that knows the wrapping algorithm, in order.

    `wrap` uses the first keyring. Unauthenticated legacy envelopes (V1 AES-CBC content; AESWrap, AES/ECB,
    RSA-PKCS1v1.5 or legacy KMS wrapping) are refused unless `allow_legacy` (`[source.cse] allow_legacy`), as
    AWS's own client needs an explicit switch; every failure to unwrap one gives the same message.
    """

    __slots__ = ("allow_legacy", "keyrings")

    def __init__(self, keyrings: Sequence[Keyring], *, allow_legacy: bool = False) -> None:
        if not keyrings:
            raise ConfigError("a multi-keyring needs at least one keyring")
        self.keyrings = tuple(keyrings)
        self.allow_legacy = allow_legacy

    @property
    def fingerprint(self) -> str:
        return _fingerprint("multi", "\n".join(k.fingerprint for k in self.keyrings).encode())

    def describe(self) -> str:
        return "[" + ", ".join(k.describe() for k in self.keyrings) + "]"

    def __repr__(self) -> str:
        return f"MultiKeyring({list(self.keyrings)!r})"

    def can_unwrap(self, env: Envelope) -> bool:
        return any(k.can_unwrap(env) for k in self.keyrings)

    async def wrap(self, data_key: SecretKey, fmt: CseFormat) -> WrappedKey:
        return await self.keyrings[0].wrap(data_key, fmt)

    async def unwrap(self, env: Envelope) -> SecretKey:
        legacy = legacy_reason(env)
        if legacy is not None and not self.allow_legacy:
            raise LegacyFormatRefusedError(f"unauthenticated legacy client-side format ({legacy}): refused; "
                                           "set [source.cse] allow_legacy = true to read it")
        for keyring in self.keyrings:
            if not keyring.can_unwrap(env):
                continue
            try:
                return await keyring.unwrap(env)
            except WrongKeyError:
                continue
            except CorruptObjectError:
                if legacy is None:
                    raise
                continue  # a legacy unwrap's own complaint would say which check failed
        if legacy is not None:
            raise WrongKeyError(LEGACY_UNDECRYPTABLE)
        raise WrongKeyError(f"no configured key unwraps this data key (wrap alg {env.wrap_alg.value})")
