"""Configuration: TOML validated once into frozen dataclasses; every error reads `section.key: what is wrong`."""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from workers.endpoint import Endpoint
from workers.errors import ConfigError
from workers.keys import load_key_file
from workers.model import Encryption, Location, Mode, SecretKey
from workers.route import can_copy_between, same_objects

MiB = 1024 * 1024
GiB = 1024 * MiB
MIN_PART = 5 * MiB
MAX_PART = 5 * GiB


class Verify(StrEnum):
    HEAD = "head"   # HeadObject after every write: mode, key, size must match
    AUTO = "auto"   # HeadObject until the write answers proved truthful on a path, then the answers
    NONE = "none"   # no check after the write (not recommended)


class Noncurrent(StrEnum):
    KEEP = "keep"
    REPORT = "report"
    REENCRYPT = "reencrypt"
    DELETE = "delete"


class UpdateInPlace(StrEnum):
    AUTO = "auto"
    NEVER = "never"


class CseKeyring(StrEnum):
    KMS = "kms"
    AES = "aes"
    RSA = "rsa"


@dataclass(frozen=True, slots=True)
class CseTarget:
    """`[target] mode = "cse"`: how new client-side objects are written."""

    keyring: CseKeyring
    format: str = "v3"
    kms_key_id: str | None = None
    encryption_context: Mapping[str, str] = field(default_factory=dict)
    aes_key: SecretKey | None = field(default=None, repr=False)
    public_key_pem: bytes | None = field(default=None, repr=False)
    public_key_file: str | None = None
    check_key_pem: bytes | None = field(default=None, repr=False)   # RSA: the private key, to check each wrap
    material_description: Mapping[str, str] = field(default_factory=dict)
    instruction_file: bool = False

    def identity(self) -> dict[str, Any]:
        """What makes this target distinct, without key material (for the config fingerprint)."""
        return {
            "keyring": self.keyring.value, "format": self.format, "kms_key_id": self.kms_key_id,
            "context": dict(self.encryption_context),
            "aes_key_md5": self.aes_key.md5_b64 if self.aes_key else None,
            "public_key_sha256": hashlib.sha256(self.public_key_pem).hexdigest() if self.public_key_pem else None,
            "matdesc": dict(self.material_description), "instruction_file": self.instruction_file,
        }


@dataclass(frozen=True, slots=True)
class SourceCse:
    """`[source.cse]`: keys that open client-side source objects."""

    aes_keys: tuple[SecretKey, ...] = field(default=(), repr=False)
    rsa_private_keys_pem: tuple[bytes, ...] = field(default=(), repr=False)
    rsa_private_key_files: tuple[str, ...] = ()
    encryption_context: Mapping[str, str] | None = None
    allow_legacy: bool = False   # read unauthenticated V1 AES-CBC content and legacy key wrappings


@dataclass(frozen=True, slots=True)
class Source:
    location: Location
    endpoint: Endpoint
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    sse_c_key: SecretKey | None = field(default=None, repr=False)
    cse: SourceCse = field(default_factory=SourceCse)
    manifest: str | None = None
    manifest_trust_encryption: bool = False


@dataclass(frozen=True, slots=True)
class Destination:
    location: Location
    endpoint: Endpoint
    in_place: bool


@dataclass(frozen=True, slots=True)
class Target:
    mode: Mode
    encryption: Encryption           # the server-side part (for cse: how the ciphertext is stored: none)
    cse: CseTarget | None = None
    allow_client_side_decrypt: bool = False


@dataclass(frozen=True, slots=True)
class RunSettings:
    checkpoint: Path
    concurrency: int = 64
    part_size: int = 16 * MiB
    multipart_threshold: int = GiB
    verify: Verify = Verify.HEAD
    max_requests_per_second: float | None = None
    noncurrent: Noncurrent = Noncurrent.KEEP
    update_in_place: UpdateInPlace = UpdateInPlace.AUTO
    processes: int = 1
    max_retries: int = 6
    copy_first: bool = True
    executor: str = "local"          # "local": this process; "ray": actors on a Ray cluster ([ray])
    progress_interval: int = 30      # seconds between plain progress lines when stderr is not a terminal


@dataclass(frozen=True, slots=True)
class RaySettings:
    """`[ray]`: where the actors of `executor = "ray"` run."""

    address: str | None = None       # "auto", "host:port", "ray://host:10001"; None: a local Ray on this machine
    actors: int | None = None        # None: one per CPU of the cluster


@dataclass(frozen=True, slots=True)
class Config:
    source: Source
    destination: Destination
    target: Target
    kms: Endpoint | None
    run: RunSettings
    path: str = ""
    ray: RaySettings = field(default_factory=RaySettings)
    text: str = field(default="", repr=False)   # the TOML as read (file paths, no key material): Ray actors
                                                # parse it on their own node and load the key files there

    def fingerprint(self) -> str:
        """A hash of everything that changes the outcome of a run (not speed settings, not secrets)."""
        t = self.target
        ident = {
            "source": [self.source.endpoint.endpoint_url, self.source.location.bucket,
                       self.source.location.prefix, list(self.source.include), list(self.source.exclude),
                       self.source.manifest],
            "destination": [self.destination.endpoint.endpoint_url, self.destination.location.bucket,
                            self.destination.location.prefix],
            "target": [t.mode.value, t.encryption.kms_key_id, t.encryption.bucket_key,
                       dict(t.encryption.context or {}), t.encryption.key_md5,
                       t.cse.identity() if t.cse else None, t.allow_client_side_decrypt],
            "noncurrent": self.run.noncurrent.value,
        }
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:32]

    def settings(self) -> dict[str, Any]:
        """What the fingerprint covers, by setting name (a refused checkpoint names the ones that differ).
        Key material appears only as the MD5 or SHA-256 the fingerprint already holds."""
        t = self.target
        out: dict[str, Any] = {
            "source.endpoint_url": self.source.endpoint.endpoint_url, "source.bucket": self.source.location.bucket,
            "source.prefix": self.source.location.prefix, "source.include": list(self.source.include),
            "source.exclude": list(self.source.exclude), "source.manifest": self.source.manifest,
            "destination.endpoint_url": self.destination.endpoint.endpoint_url,
            "destination.bucket": self.destination.location.bucket,
            "destination.prefix": self.destination.location.prefix,
            "target.mode": t.mode.value, "target.kms_key_id": t.encryption.kms_key_id,
            "target.bucket_key": t.encryption.bucket_key,
            "target.encryption_context": dict(t.encryption.context or {}),
            "target.sse_c_key_file (key MD5)": t.encryption.key_md5,
            "target.allow_client_side_decrypt": t.allow_client_side_decrypt,
            "run.noncurrent": self.run.noncurrent.value,
        }
        for name, value in (t.cse.identity() if t.cse else {}).items():
            out[f"target.cse.{name}"] = value
        return out

    @property
    def same_endpoint(self) -> bool:
        """A server-side copy is possible between source and destination (in place, always)."""
        return self.destination.in_place or can_copy_between(self.source.endpoint, self.destination.endpoint)

    def describe_target(self) -> str:
        t = self.target
        if t.mode == Mode.CSE and t.cse:
            return f"cse ({t.cse.format}, {t.cse.keyring.value})"
        if t.mode in (Mode.SSE_KMS, Mode.DSSE_KMS):
            return f"{t.mode.value} ({t.encryption.kms_key_id})"
        if t.mode == Mode.SSE_C:
            return f"sse-c (key MD5 {t.encryption.key_md5})"
        return t.mode.value


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1024, "M": MiB, "G": GiB, "T": 1024 * GiB}

_ALLOWED: dict[str, set[str]] = {
    "source": {"bucket", "prefix", "include", "exclude", "endpoint_url", "region", "profile", "ca_bundle",
               "sse_c_key_file", "cse", "manifest", "manifest_trust_encryption"},
    "source.cse": {"aes_key_files", "rsa_private_key_files", "encryption_context", "allow_legacy"},
    "destination": {"bucket", "prefix", "endpoint_url", "region", "profile", "ca_bundle"},
    "target": {"mode", "kms_key_id", "bucket_key", "encryption_context", "sse_c_key_file", "keyring",
               "key_file", "public_key_file", "material_description", "format", "instruction_file",
               "allow_client_side_decrypt"},
    "kms": {"endpoint_url", "region", "profile", "ca_bundle"},
    "run": {"checkpoint", "concurrency", "part_size", "multipart_threshold", "verify",
            "max_requests_per_second", "noncurrent", "update_in_place", "processes", "max_retries",
            "lean_requests", "copy_first", "executor", "progress_interval"},
    "ray": {"address", "actors"},
}
EXECUTORS = ("local", "ray")


def parse_size(value: Any, where: str) -> int:
    """`64MiB`, `8 MB`, `1g` or a plain integer of bytes (binary units either way)."""
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a size like \"64MiB\", got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m:
            unit = (m.group(2) or "").upper()[:1]
            return int(float(m.group(1)) * _UNITS[unit if unit != "B" else "B"])
    raise ConfigError(f"{where}: expected a size like \"64MiB\", got {value!r}")


class _Section:
    """Typed access to one TOML table, every error naming `section.key`."""

    def __init__(self, name: str, data: Any) -> None:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{name}: must be a table")
        unknown = sorted(set(data) - _ALLOWED.get(name, set()))
        if unknown:
            raise ConfigError(f"{name}.{unknown[0]}: unknown key (allowed: {', '.join(sorted(_ALLOWED[name]))})")
        self.name = name
        self.data: dict[str, Any] = data

    def where(self, key: str) -> str:
        return f"{self.name}.{key}"

    def text(self, key: str, default: str | None = None, *, required: bool = False) -> str | None:
        value = self.data.get(key, default)
        if value is None:
            if required:
                raise ConfigError(f"{self.where(key)}: required")
            return None
        if not isinstance(value, str):
            raise ConfigError(f"{self.where(key)}: expected a string, got {type(value).__name__}")
        if required and not value:
            raise ConfigError(f"{self.where(key)}: must not be empty")
        return value

    def flag(self, key: str, default: bool | None = None) -> bool | None:
        value = self.data.get(key, default)
        if value is not None and not isinstance(value, bool):
            raise ConfigError(f"{self.where(key)}: expected true or false, got {value!r}")
        return value

    def number(self, key: str, default: int, *, minimum: int = 1, maximum: int = 1 << 30) -> int:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{self.where(key)}: expected a whole number, got {value!r}")
        if not minimum <= value <= maximum:
            raise ConfigError(f"{self.where(key)}: must be between {minimum} and {maximum}, got {value}")
        return value

    def str_list(self, key: str) -> tuple[str, ...]:
        value = self.data.get(key, [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{self.where(key)}: expected a list of strings")
        return tuple(value)

    def str_map(self, key: str) -> dict[str, str] | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise ConfigError(f"{self.where(key)}: expected a table of strings")
        return dict(value)

    def choice(self, key: str, enum: type[StrEnum], default: str | None = None) -> Any:
        value = self.text(key, default, required=default is None)
        try:
            return enum(value or "")
        except ValueError:
            allowed = ", ".join(f'"{e.value}"' for e in enum)
            raise ConfigError(f"{self.where(key)}: unknown value {value!r} (one of {allowed})") from None


def _endpoint(sec: _Section, max_connections: int, lean: bool = True) -> Endpoint:
    ca = sec.text("ca_bundle")
    if ca is not None and not ca.strip():
        raise ConfigError(f"{sec.where('ca_bundle')}: empty: give the PEM file of the CA, or leave the key out "
                          "to trust the system's CAs")
    if ca:
        _readable_file(ca, sec.where("ca_bundle"))
    url = sec.text("endpoint_url")
    if url and not re.match(r"^https?://", url):
        raise ConfigError(f"{sec.where('endpoint_url')}: must start with http:// or https://, got {url!r}")
    return Endpoint(endpoint_url=url, region=sec.text("region"), profile=sec.text("profile"),
                    ca_bundle=ca, max_connections=max_connections, lean=lean)


def _readable_file(path: str, where: str) -> None:
    try:
        with open(path, "rb"):
            pass
    except FileNotFoundError:
        raise ConfigError(f"{where}: no such file: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"{where}: {path} is a directory") from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {path}: {exc.strerror}") from None


def _key(sec: _Section, key: str, base: Path) -> SecretKey | None:
    path = sec.text(key)
    if not path:
        return None
    return _load_key(_resolve(path, base), sec.where(key))


def _load_key(path: str, where: str) -> SecretKey:
    try:
        return load_key_file(path)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc.message}") from None


def _resolve(path: str, base: Path) -> str:
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else base / p)


def _read_pem(path: str, where: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {path}: {exc.strerror}") from None
    if b"-----BEGIN" not in data:
        raise ConfigError(f"{where}: {path} is not a PEM file")
    return data


def _check_sse_c_key(sec: _Section, mode: Mode, sse_c_key: SecretKey | None) -> None:
    if mode == Mode.SSE_C and sse_c_key is None:
        raise ConfigError(f"{sec.where('sse_c_key_file')}: required when mode = \"sse-c\"")
    if mode != Mode.SSE_C and sse_c_key is not None:
        raise ConfigError(f"{sec.where('sse_c_key_file')}: only valid with mode = \"sse-c\"")


def _check_server_side_keys(sec: _Section, mode: Mode, bucket_key: bool | None,
                            context: Mapping[str, str] | None) -> None:
    """A server-side target: no client-side settings, and the SSE-KMS-only ones only with SSE-KMS."""
    for k in ("keyring", "key_file", "public_key_file", "material_description", "format", "instruction_file"):
        if k in sec.data:
            raise ConfigError(f"{sec.where(k)}: only valid with mode = \"cse\"")
    if bucket_key is not None and mode != Mode.SSE_KMS:
        raise ConfigError(f"{sec.where('bucket_key')}: only valid with mode = \"sse-kms\"")
    if context and mode != Mode.SSE_KMS:
        raise ConfigError(f"{sec.where('encryption_context')}: only valid with mode = \"sse-kms\" or \"cse\"")


def _target(sec: _Section, base: Path) -> Target:
    mode = sec.choice("mode", Mode)
    if mode == Mode.NONE:
        raise ConfigError(f"{sec.where('mode')}: \"none\" is not a target (rekey encrypts, it does not decrypt "
                          f"server-side objects to plaintext)")
    kms_key_id = sec.text("kms_key_id")
    context = sec.str_map("encryption_context")
    bucket_key = sec.flag("bucket_key")
    sse_c_key = _key(sec, "sse_c_key_file", base)
    allow_decrypt = bool(sec.flag("allow_client_side_decrypt", False))
    if mode in (Mode.SSE_KMS, Mode.DSSE_KMS) and not kms_key_id:
        raise ConfigError(f"{sec.where('kms_key_id')}: required when mode = \"{mode.value}\"")
    _check_sse_c_key(sec, mode, sse_c_key)
    if mode != Mode.CSE:
        _check_server_side_keys(sec, mode, bucket_key, context)
        enc = Encryption(mode, kms_key_id=kms_key_id, bucket_key=bucket_key, context=context,
                         sse_c_key=sse_c_key)
        return Target(mode, enc, None, allow_decrypt)
    keyring = sec.choice("keyring", CseKeyring)
    fmt = sec.text("format", "v3") or "v3"
    if fmt not in ("v2", "v3"):
        raise ConfigError(f"{sec.where('format')}: unknown value {fmt!r} (one of \"v3\", \"v2\")")
    matdesc = sec.str_map("material_description") or {}
    aes_key = public_pem = None
    public_file = None
    if keyring == CseKeyring.KMS:
        if not kms_key_id:
            raise ConfigError(f"{sec.where('kms_key_id')}: required when keyring = \"kms\"")
        if context and "aws:x-amz-cek-alg" in context:
            raise ConfigError(f"{sec.where('encryption_context')}: \"aws:x-amz-cek-alg\" is reserved")
    elif keyring == CseKeyring.AES:
        aes_key = _key(sec, "key_file", base)
        if aes_key is None:
            raise ConfigError(f"{sec.where('key_file')}: required when keyring = \"aes\"")
    else:
        public_file = sec.text("public_key_file")
        if not public_file:
            raise ConfigError(f"{sec.where('public_key_file')}: required when keyring = \"rsa\"")
        public_file = _resolve(public_file, base)
        public_pem = _read_pem(public_file, sec.where("public_key_file"))
    cse = CseTarget(keyring=keyring, format=fmt, kms_key_id=kms_key_id, encryption_context=context or {},
                    aes_key=aes_key, public_key_pem=public_pem, public_key_file=public_file,
                    material_description=matdesc, instruction_file=bool(sec.flag("instruction_file", False)))
    return Target(mode, Encryption(Mode.NONE), cse, allow_decrypt)


def _rsa_check_key(target: Target, source: Source, destination: Destination) -> Target:
    """An RSA target wraps with a public key alone, so nothing proves the key is the right one. Its private key
    among `[source.cse] rsa_private_key_files` lets every wrap be checked; in place, where a wrong public key
    would leave objects nobody can open, it is required."""
    cse = target.cse
    if cse is None or cse.keyring != CseKeyring.RSA or cse.public_key_pem is None:
        return target
    from cryptography.hazmat.primitives import serialization
    wanted = serialization.load_pem_public_key(cse.public_key_pem).public_numbers()  # type: ignore[union-attr]
    for pem in source.cse.rsa_private_keys_pem:
        private = serialization.load_pem_private_key(pem, password=None)
        if private.public_key().public_numbers() == wanted:  # type: ignore[union-attr]
            return replace(target, cse=replace(cse, check_key_pem=pem))
    if destination.in_place:
        raise ConfigError("target.public_key_file: in place, objects wrapped for a wrong public key could never be "
                          "opened again: list its private key in [source.cse] rsa_private_key_files (used only to "
                          "check every wrap), or write to another bucket or prefix")
    return target


def _source_cse(data: Any, base: Path) -> SourceCse:
    sec = _Section("source.cse", data)
    aes = tuple(_load_key(_resolve(p, base), sec.where("aes_key_files"))
                for p in sec.str_list("aes_key_files"))
    rsa_files = tuple(_resolve(p, base) for p in sec.str_list("rsa_private_key_files"))
    rsa = tuple(_read_pem(p, sec.where("rsa_private_key_files")) for p in rsa_files)
    return SourceCse(aes, rsa, rsa_files, sec.str_map("encryption_context"),
                     allow_legacy=bool(sec.flag("allow_legacy", False)))


def _processes(sec: _Section) -> int:
    """Worker processes: only 1 in this version. Measured on 2 cores shared with the server, one process
    already keeps the server busy; sharding across processes is not built, and a value that would be
    silently ignored is refused instead."""
    value = sec.number("processes", 1, maximum=64)
    if value != 1:
        raise ConfigError(f"run.processes: only 1 is supported in this version, got {value}")
    return value


def _executor(sec: _Section) -> str:
    value = sec.text("executor", "local") or "local"
    if value not in EXECUTORS:
        raise ConfigError(f"{sec.where('executor')}: unknown value {value!r} (one of \"local\", \"ray\")")
    return value


def _ray(data: Any) -> RaySettings:
    sec = _Section("ray", data)
    address = sec.text("address")
    if address is not None and address != "auto" and not re.match(r"^(ray://)?[^\s:/]+:\d+$", address):
        raise ConfigError(f"ray.address: expected \"auto\", \"host:port\" or \"ray://host:10001\", got {address!r}")
    actors = sec.number("actors", 1, maximum=10_000) if "actors" in sec.data else None
    return RaySettings(address=address, actors=actors)


def parse_config(data: Mapping[str, Any], *, base: Path | None = None, path: str = "") -> Config:
    """Validate a parsed TOML document. `base` resolves relative file paths (the config's folder)."""
    base = base or Path.cwd()
    unknown = sorted(set(data) - {"source", "destination", "target", "kms", "run", "ray"})
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown section (allowed: source, destination, target, kms, run, ray)")
    if "source" not in data:
        raise ConfigError("source: required section")
    if "target" not in data:
        raise ConfigError("target: required section")
    run_sec = _Section("run", data.get("run"))
    concurrency = run_sec.number("concurrency", 64, maximum=1024)
    part_size = parse_size(run_sec.data.get("part_size", 16 * MiB), "run.part_size")
    if not MIN_PART <= part_size <= MAX_PART:
        raise ConfigError(f"run.part_size: must be between 5MiB and 5GiB, got {part_size} bytes")
    # Server-side copies up to this size are one CopyObject: on SeaweedFS UploadPartCopy measured 2-4x
    # slower than CopyObject, and AWS copies big objects fine across many objects in parallel.
    threshold = parse_size(run_sec.data.get("multipart_threshold", GiB), "run.multipart_threshold")
    if threshold < 0 or threshold > MAX_PART:
        raise ConfigError(f"run.multipart_threshold: must be at most 5GiB, got {threshold} bytes")
    rps = run_sec.data.get("max_requests_per_second")
    if rps is not None and (isinstance(rps, bool) or not isinstance(rps, (int, float)) or rps <= 0):
        raise ConfigError(f"run.max_requests_per_second: expected a positive number, got {rps!r}")
    checkpoint = run_sec.text("checkpoint", "rekey.sqlite") or "rekey.sqlite"
    run = RunSettings(
        checkpoint=Path(_resolve(checkpoint, base)),
        concurrency=concurrency,
        part_size=part_size,
        multipart_threshold=threshold,
        verify=run_sec.choice("verify", Verify, "head"),
        max_requests_per_second=float(rps) if rps is not None else None,
        noncurrent=run_sec.choice("noncurrent", Noncurrent, "keep"),
        update_in_place=run_sec.choice("update_in_place", UpdateInPlace, "auto"),
        processes=_processes(run_sec),
        max_retries=run_sec.number("max_retries", 6, minimum=0, maximum=100),
        copy_first=bool(run_sec.flag("copy_first", True)),
        executor=_executor(run_sec),
        progress_interval=run_sec.number("progress_interval", 30, minimum=1, maximum=86400),
    )
    pool = concurrency * 2 + 8
    lean = bool(run_sec.flag("lean_requests", True))
    src_data = data["source"]
    src = _Section("source", src_data)
    source = Source(
        location=Location(str(src.text("bucket", required=True)), src.text("prefix", "") or ""),
        endpoint=_endpoint(src, pool, lean),
        include=src.str_list("include"),
        exclude=src.str_list("exclude"),
        sse_c_key=_key(src, "sse_c_key_file", base),
        cse=_source_cse(src.data.get("cse"), base),
        manifest=_resolve(m, base) if (m := src.text("manifest")) else None,
        manifest_trust_encryption=bool(src.flag("manifest_trust_encryption", False)),
    )
    if source.manifest:
        _readable_file(source.manifest, "source.manifest")
    if "destination" in data:
        dst = _Section("destination", data["destination"])
        bucket = dst.text("bucket") or source.location.bucket
        prefix = dst.text("prefix")
        endpoint = _endpoint(dst, pool, lean) if dst.text("endpoint_url") or dst.text("profile") else source.endpoint
        dst_prefix = source.location.prefix if prefix is None else prefix
        in_place = same_objects(source.endpoint, source.location.bucket, source.location.prefix,
                                endpoint, bucket, dst_prefix)
        destination = Destination(Location(bucket, dst_prefix), endpoint, in_place)
    else:
        destination = Destination(source.location, source.endpoint, True)
    target = _rsa_check_key(_target(_Section("target", data["target"]), base), source, destination)
    kms = None
    if "kms" in data:
        k = _Section("kms", data["kms"])
        kms = _endpoint(k, pool)
    return Config(source, destination, target, kms, run, path, _ray(data.get("ray")))


def load_config(path: str | Path) -> Config:
    """Read and validate a config file. Raises ConfigError with a one-line message."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config file: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: malformed TOML: {exc}") from None
    config = parse_config(data, base=p.resolve().parent, path=str(p))
    return replace(config, text=raw.decode("utf-8"))
