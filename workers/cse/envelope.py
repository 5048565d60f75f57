"""The S3 Encryption Client envelope: metadata of formats V1/V2/V3, parsed into and emitted from `Envelope`.

Format notes: shared/reference/s3ec-format.md (sections 1 and 6). Metadata maps are S3 user metadata with
bare keys (`x-amz-key-v2`, not `x-amz-meta-x-amz-key-v2`), as boto returns them.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from workers.errors import CorruptObjectError, UnsupportedError


class CseFormat(StrEnum):
    """The S3EC message format version (not the client version)."""

    V1 = "v1"  # legacy, read-only
    V2 = "v2"
    V3 = "v3"  # key commitment


class WrapAlg(StrEnum):
    """How the data key is wrapped (the V1/V2 `x-amz-wrap-alg` names)."""

    KMS_CONTEXT = "kms+context"
    AES_GCM = "AES/GCM"
    RSA_OAEP_SHA1 = "RSA-OAEP-SHA1"
    # Legacy, read-only.
    KMS = "kms"
    AES_WRAP = "AESWrap"
    RSA_OAEP_SHA256 = "RSA/ECB/OAEPWithSHA-256AndMGF1Padding"
    ENCRYPTION_ONLY = "none"  # V1 without x-amz-wrap-alg: AES/ECB or RSA/PKCS1; never written to metadata


class ContentAlg(StrEnum):
    """The content cipher (`x-amz-cek-alg` for V1/V2, `x-amz-c` for V3)."""

    AES_CBC = "AES/CBC/PKCS5Padding"
    AES_GCM = "AES/GCM/NoPadding"
    AES_GCM_COMMIT = "115"  # 0x0073: HKDF-SHA512 derived key, key commitment


LEGACY_WRAP_ALGS = frozenset({WrapAlg.AES_WRAP, WrapAlg.ENCRYPTION_ONLY, WrapAlg.KMS})
# The one message for every failure to open a legacy (unauthenticated) object, unwrap or padding alike:
# distinct messages would tell a padding oracle which step failed.
LEGACY_UNDECRYPTABLE = "legacy client-side object does not decrypt with the configured keys (wrong key or corrupt)"


def legacy_reason(env: Envelope) -> str | None:
    """Why an envelope is an unauthenticated legacy format (None: V2/V3 with an authenticated wrapping)."""
    if env.content_alg is ContentAlg.AES_CBC:
        return "V1 AES-CBC content carries no authentication"
    if env.wrap_alg in LEGACY_WRAP_ALGS:
        name = "AES/ECB or RSA-PKCS1v1.5" if env.wrap_alg is WrapAlg.ENCRYPTION_ONLY else env.wrap_alg.value
        return f"its data key is wrapped with legacy {name}"
    return None


WRITABLE_WRAP_ALGS = frozenset({WrapAlg.KMS_CONTEXT, WrapAlg.AES_GCM, WrapAlg.RSA_OAEP_SHA1})
V3_IV = b"\x01" * 12
MESSAGE_ID_LEN = 28
COMMITMENT_LEN = 28
TAG_LEN = 16
INSTRUCTION_SUFFIX = ".instruction"
INSTRUCTION_MARKER = "x-amz-crypto-instr-file"
INSTRUCTION_FILE_MAX = 64 * 1024   # an envelope is a few hundred bytes: anything bigger is not read into memory
UNENCRYPTED_LENGTH = "x-amz-unencrypted-content-length"
CEK_ALG_CONTEXT_KEY = "aws:x-amz-cek-alg"  # reserved key in a KMS encryption context
LEGACY_KMS_CONTEXT_KEY = "kms_cmk_id"

_V3_WRAP_CODES = {"12": WrapAlg.KMS_CONTEXT, "02": WrapAlg.AES_GCM, "22": WrapAlg.RSA_OAEP_SHA1}
_V3_CODE_BY_WRAP = {v: k for k, v in _V3_WRAP_CODES.items()}

_LEGACY_WRAP_NAMES = {w.value: w for w in WrapAlg if w is not WrapAlg.ENCRYPTION_ONLY}
_V1_ONLY = frozenset({"x-amz-key"})
_V2_ONLY = frozenset({"x-amz-key-v2"})
_V12_KEYS = frozenset({"x-amz-key", "x-amz-key-v2", "x-amz-iv", "x-amz-matdesc", "x-amz-wrap-alg",
                       "x-amz-cek-alg", "x-amz-tag-len"})
_V3_KEYS = frozenset({"x-amz-3", "x-amz-w", "x-amz-c", "x-amz-d", "x-amz-i", "x-amz-t", "x-amz-m"})
_V3_OBJECT_ONLY = frozenset({"x-amz-c", "x-amz-d", "x-amz-i"})
_V12_CONTENT_ON_OBJECT = frozenset({"x-amz-cek-alg", "x-amz-iv", "x-amz-wrap-alg"})

S3EC_KEYS: frozenset[str] = _V12_KEYS | _V3_KEYS | {INSTRUCTION_MARKER, UNENCRYPTED_LENGTH}
"""Every metadata key the S3EC reserves: strip these when decrypting into a server-side mode."""


@dataclass(frozen=True, slots=True)
class WrappedKey:
    """A data key wrapped by a keyring: what goes into the envelope. Holds no secret."""

    edk: bytes
    wrap_alg: WrapAlg
    description: Mapping[str, str] = field(default_factory=dict)  # KMS EC or material description


@dataclass(frozen=True, slots=True)
class Envelope:
    """Everything the S3EC metadata says about one object, decoded. Holds no secret (the key is wrapped)."""

    format: CseFormat
    wrap_alg: WrapAlg
    encrypted_data_key: bytes = field(repr=False)
    content_alg: ContentAlg
    iv: bytes                                       # V3: the fixed 01x12
    description: Mapping[str, str] = field(default_factory=dict)  # x-amz-t (KMS) / x-amz-m / x-amz-matdesc
    message_id: bytes | None = None                 # V3 only (x-amz-i, the HKDF salt)
    commitment: bytes | None = None                 # V3 only (x-amz-d)
    tag_length: int | None = None                   # bits; None for CBC
    unencrypted_length: int | None = None
    from_instruction_file: bool = False

    @property
    def is_gcm(self) -> bool:
        return self.content_alg != ContentAlg.AES_CBC


def _has(metadata: Mapping[str, str], *keys: str) -> bool:
    return all(k in metadata for k in keys)


def _lower(metadata: Mapping[str, str]) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in metadata.items()}


def detect_format(metadata: Mapping[str, str]) -> CseFormat | None:
    """The format the object metadata alone announces (spec detection rules), or None.

    None means: not client-side encrypted, or its envelope lives in an instruction file (see
    `needs_instruction_file`). Mixed key sets give their first match; `parse_envelope` rejects them.
    """
    md = _lower(metadata)
    if _has(md, "x-amz-3", "x-amz-d", "x-amz-i", "x-amz-c", "x-amz-w"):
        return CseFormat.V3
    if _has(md, "x-amz-key-v2", "x-amz-iv"):
        return CseFormat.V2
    if _has(md, "x-amz-key", "x-amz-iv"):
        return CseFormat.V1
    return None


def needs_instruction_file(metadata: Mapping[str, str]) -> bool:
    """True when the object carries V3 content keys but no data key: its envelope is in `<key>.instruction`.

    A V1/V2 object with an instruction file carries no S3EC key at all, so only the caller (who knows the
    source is client-side encrypted) can decide to fetch one.
    """
    md = _lower(metadata)
    return _has(md, *_V3_OBJECT_ONLY) and "x-amz-3" not in md


def is_instruction_file(metadata: Mapping[str, str]) -> bool:
    """Whether an object (by its user metadata) is an S3EC instruction file."""
    return INSTRUCTION_MARKER in _lower(metadata)


def _b64(md: Mapping[str, str], key: str, length: int | None = None) -> bytes:
    try:
        raw = base64.b64decode(md[key], validate=True)
    except (binascii.Error, ValueError):
        raise CorruptObjectError(f"S3EC metadata {key} is not valid base64") from None
    if length is not None and len(raw) != length:
        raise CorruptObjectError(f"S3EC metadata {key} must decode to {length} bytes, got {len(raw)}")
    if not raw:
        raise CorruptObjectError(f"S3EC metadata {key} is empty")
    return raw


def _json_map(md: Mapping[str, str], key: str) -> dict[str, str]:
    text = md.get(key)
    if text is None or text == "":
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        raise CorruptObjectError(f"S3EC metadata {key} is not valid JSON") from None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                              for k, v in value.items()):
        raise CorruptObjectError(f"S3EC metadata {key} must be a JSON object of strings")
    return value


def _missing(md: Mapping[str, str], fmt: CseFormat, required: tuple[str, ...]) -> None:
    absent = [k for k in required if k not in md]
    if absent:
        raise CorruptObjectError(f"incomplete {fmt.value.upper()} S3EC key set: missing {', '.join(absent)}")


def _merge_instruction(obj: dict[str, str], instruction: Mapping[str, str]) -> dict[str, str]:
    ins = _lower(instruction)
    misplaced = sorted(set(ins) & _V3_OBJECT_ONLY)
    if misplaced:
        raise CorruptObjectError(f"instruction file carries object-only keys {', '.join(misplaced)} "
                                 "(tampered instruction file)")
    s3ec_in_file = {k: v for k, v in ins.items() if k in S3EC_KEYS and k != INSTRUCTION_MARKER}
    if not s3ec_in_file:
        raise CorruptObjectError("instruction file holds no S3EC key")
    if "x-amz-3" not in s3ec_in_file:  # V1/V2: the object must hold no content metadata of its own
        on_object = sorted(set(obj) & _V12_CONTENT_ON_OBJECT)
        if on_object:
            raise CorruptObjectError(f"object metadata carries {', '.join(on_object)} while its V1/V2 "
                                     "envelope is in an instruction file")
    clash = sorted(k for k in s3ec_in_file if k in obj and obj[k] != s3ec_in_file[k])
    if clash:
        raise CorruptObjectError(f"object metadata and instruction file disagree on {', '.join(clash)}")
    return {**s3ec_in_file, **obj}


def _check_mixed(md: Mapping[str, str]) -> None:
    edks = [k for k in ("x-amz-key", "x-amz-key-v2", "x-amz-3") if k in md]
    if len(edks) > 1:
        raise CorruptObjectError(f"mixed S3EC key sets: both {' and '.join(edks)} present")
    present = set(md)
    if "x-amz-3" in md or present & _V3_OBJECT_ONLY:
        foreign = sorted(present & _V12_KEYS)
        if foreign:
            raise CorruptObjectError(f"mixed S3EC key sets: V3 keys with V1/V2 keys {', '.join(foreign)}")
    elif present & (_V1_ONLY | _V2_ONLY):
        foreign = sorted(present & _V3_KEYS)
        if foreign:
            raise CorruptObjectError(f"mixed S3EC key sets: V1/V2 keys with V3 keys {', '.join(foreign)}")


def _unencrypted_length(md: Mapping[str, str]) -> int | None:
    text = md.get(UNENCRYPTED_LENGTH)
    if text is None or text == "":
        return None
    if not text.isdigit():
        raise CorruptObjectError(f"S3EC metadata {UNENCRYPTED_LENGTH} is not a decimal length")
    return int(text)


def parse_envelope(object_metadata: Mapping[str, str],
                   instruction: Mapping[str, str] | None = None) -> Envelope:
    """Decode an object's S3EC envelope from its metadata (and its instruction file's JSON map, if fetched).

    Raises CorruptObjectError naming the problem: mixed or incomplete key sets, bad base64/JSON, wrong
    lengths, unknown algorithms, keys in the wrong place.
    """
    obj = {k: v for k, v in _lower(object_metadata).items() if k in S3EC_KEYS}
    md = _merge_instruction(obj, instruction) if instruction is not None else obj
    _check_mixed(md)
    fmt = detect_format(md)
    if fmt is None:
        if "x-amz-3" in md or needs_instruction_file(md):
            _missing(md, CseFormat.V3, ("x-amz-3", "x-amz-w", "x-amz-c", "x-amz-d", "x-amz-i"))
        if "x-amz-key-v2" in md:
            _missing(md, CseFormat.V2, ("x-amz-iv",))
        if "x-amz-key" in md:
            _missing(md, CseFormat.V1, ("x-amz-iv",))
        raise CorruptObjectError("no S3EC envelope in the object metadata"
                                 + (" or the instruction file" if instruction is not None else ""))
    from_file = instruction is not None
    if fmt is CseFormat.V3:
        return _parse_v3(md, from_file)
    return _parse_v12(md, fmt, from_file)


def _parse_v3(md: Mapping[str, str], from_file: bool) -> Envelope:
    if md["x-amz-c"] != ContentAlg.AES_GCM_COMMIT:
        raise CorruptObjectError(f"unknown V3 content algorithm x-amz-c={md['x-amz-c']!r}")
    wrap = _V3_WRAP_CODES.get(md["x-amz-w"])
    if wrap is None:
        raise CorruptObjectError(f"unknown V3 wrapping algorithm x-amz-w={md['x-amz-w']!r}")
    description = _json_map(md, "x-amz-t" if wrap is WrapAlg.KMS_CONTEXT else "x-amz-m")
    return Envelope(
        format=CseFormat.V3, wrap_alg=wrap, encrypted_data_key=_b64(md, "x-amz-3"),
        content_alg=ContentAlg.AES_GCM_COMMIT, iv=V3_IV, description=description,
        message_id=_b64(md, "x-amz-i", MESSAGE_ID_LEN), commitment=_b64(md, "x-amz-d", COMMITMENT_LEN),
        tag_length=TAG_LEN * 8, unencrypted_length=_unencrypted_length(md), from_instruction_file=from_file,
    )


def _parse_v12(md: Mapping[str, str], fmt: CseFormat, from_file: bool) -> Envelope:
    if fmt is CseFormat.V2:
        _missing(md, fmt, ("x-amz-cek-alg", "x-amz-wrap-alg"))
    edk_key = "x-amz-key-v2" if fmt is CseFormat.V2 else "x-amz-key"
    cek = md.get("x-amz-cek-alg", ContentAlg.AES_CBC.value)
    try:
        content = ContentAlg(cek)
    except ValueError:
        raise CorruptObjectError(f"unknown content algorithm x-amz-cek-alg={cek!r}") from None
    if content is ContentAlg.AES_GCM_COMMIT:
        raise CorruptObjectError(f"{fmt.value.upper()} object names the V3 content algorithm")
    wrap_text = md.get("x-amz-wrap-alg")
    wrap = _LEGACY_WRAP_NAMES.get(wrap_text) if wrap_text is not None else WrapAlg.ENCRYPTION_ONLY
    if wrap is None:
        raise CorruptObjectError(f"unknown wrapping algorithm x-amz-wrap-alg={wrap_text!r}")
    tag_length: int | None = None
    if content is ContentAlg.AES_GCM:
        tag_text = md.get("x-amz-tag-len", str(TAG_LEN * 8))
        if tag_text != str(TAG_LEN * 8):
            raise CorruptObjectError(f"unsupported GCM tag length x-amz-tag-len={tag_text!r}")
        tag_length = TAG_LEN * 8
    return Envelope(
        format=fmt, wrap_alg=wrap, encrypted_data_key=_b64(md, edk_key), content_alg=content,
        iv=_b64(md, "x-amz-iv", 12 if content is ContentAlg.AES_GCM else 16),
        description=_json_map(md, "x-amz-matdesc"), tag_length=tag_length,
        unencrypted_length=_unencrypted_length(md), from_instruction_file=from_file,
    )


def _dump_map(value: Mapping[str, str]) -> str:
    # ensure_ascii keeps the value US-ASCII, as S3 metadata must be; separators match the Java/Go writers.
    return json.dumps(dict(value), separators=(",", ":"))


def _b64s(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def envelope_to_metadata(env: Envelope, *, instruction_file: bool
                         ) -> tuple[dict[str, str], dict[str, str] | None]:
    """The object's S3EC metadata, and the instruction file's JSON map when `instruction_file` (else None).

    V3 keeps x-amz-c, x-amz-d and x-amz-i on the object; V1/V2 put every key in the file. V1 is never written.
    """
    if env.format is CseFormat.V1 or env.content_alg is ContentAlg.AES_CBC:
        raise UnsupportedError("V1/CBC envelopes are read-only: re-encrypt to V2 or V3")
    if env.wrap_alg not in WRITABLE_WRAP_ALGS:
        raise UnsupportedError(f"wrapping algorithm {env.wrap_alg.value} is read-only")
    obj: dict[str, str] = {}
    keys: dict[str, str] = {}
    if env.format is CseFormat.V3:
        if env.message_id is None or env.commitment is None:
            raise ValueError("a V3 envelope needs message_id and commitment")
        obj = {"x-amz-c": ContentAlg.AES_GCM_COMMIT.value, "x-amz-d": _b64s(env.commitment),
               "x-amz-i": _b64s(env.message_id)}
        keys = {"x-amz-3": _b64s(env.encrypted_data_key), "x-amz-w": _V3_CODE_BY_WRAP[env.wrap_alg]}
        if env.wrap_alg is WrapAlg.KMS_CONTEXT:
            keys["x-amz-t"] = _dump_map(env.description)
        elif env.description:
            keys["x-amz-m"] = _dump_map(env.description)
    else:
        keys = {"x-amz-key-v2": _b64s(env.encrypted_data_key), "x-amz-iv": _b64s(env.iv),
                "x-amz-matdesc": _dump_map(env.description), "x-amz-wrap-alg": env.wrap_alg.value,
                "x-amz-cek-alg": env.content_alg.value, "x-amz-tag-len": str(TAG_LEN * 8)}
        if env.unencrypted_length is not None:
            # On the object even with an instruction file: the Python client rejects it inside one.
            obj[UNENCRYPTED_LENGTH] = str(env.unencrypted_length)
    if instruction_file:
        return obj, keys
    return {**obj, **keys}, None


def instruction_object_metadata() -> dict[str, str]:
    """User metadata of an instruction object: the marker readers look for."""
    return {INSTRUCTION_MARKER: ""}


def dump_instruction_file(keys: Mapping[str, str]) -> bytes:
    """The instruction file's body: its JSON map, nothing else."""
    return json.dumps(dict(keys), separators=(",", ":")).encode("ascii")


def load_instruction_file(body: bytes) -> dict[str, str]:
    """Parse an instruction file's body; CorruptObjectError if it is not a JSON object of strings."""
    try:
        value = json.loads(body)
    except ValueError:
        raise CorruptObjectError("instruction file is not valid JSON") from None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                              for k, v in value.items()):
        raise CorruptObjectError("instruction file must be a JSON object of strings")
    return value
