"""Configuration: validation messages name `section.key`, sizes, in-place detection, the run fingerprint."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.config import Config, parse_config, parse_size
from engine.config import load_config as _load_config
from workers.errors import ConfigError
from workers.model import Mode

MiB = 1024 * 1024
GiB = 1024 * MiB
SECTION_KEY = re.compile(r"^(source|destination|target|kms|run)(\.[a-z_]+)+: \S")


def base(**sections: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = {"source": {"bucket": "src"}, "target": {"mode": "sse-s3"}}
    for name, table in sections.items():
        data[name] = {**data.get(name, {}), **table}
    return data


def error_of(data: dict[str, Any], base_dir: Path | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data, base=base_dir)
    message = str(info.value)
    assert "\n" not in message, "config errors are one line"
    return message


@pytest.fixture
def key_file(tmp_path: Path) -> Callable[[bytes], str]:
    def make(raw: bytes) -> str:
        path = tmp_path / f"k{len(list(tmp_path.iterdir()))}.key"
        path.write_bytes(raw)
        path.chmod(0o600)
        return str(path)
    return make


# --- every error names section.key ---------------------------------------------------------------------------


BAD: list[tuple[str, dict[str, Any], str]] = [
    ("bucket missing", {"source": {}, "target": {"mode": "sse-s3"}}, "source.bucket: required"),
    ("bucket empty", base(source={"bucket": ""}), "source.bucket: must not be empty"),
    ("bucket not a string", base(source={"bucket": 5}), "source.bucket: expected a string, got int"),
    ("unknown source key", base(source={"buckett": "x"}), "source.buckett: unknown key (allowed: "),
    ("include not a list", base(source={"include": 5}), "source.include: expected a list of strings"),
    ("exclude of numbers", base(source={"exclude": [1]}), "source.exclude: expected a list of strings"),
    ("endpoint scheme", base(source={"endpoint_url": "ftp://h"}),
     "source.endpoint_url: must start with http:// or https://, got 'ftp://h'"),
    ("ca bundle missing", base(source={"ca_bundle": "/nonexistent/ca.pem"}),
     "source.ca_bundle: no such file: /nonexistent/ca.pem"),
    ("source key file missing", base(source={"sse_c_key_file": "/nonexistent/k"}),
     "source.sse_c_key_file: /nonexistent/k: key file does not exist"),
    ("destination bucket type", base(destination={"bucket": 3}), "destination.bucket: expected a string, got int"),
    ("destination unknown key", base(destination={"mode": "x"}), "destination.mode: unknown key"),
    ("mode missing", {"source": {"bucket": "b"}, "target": {}}, "target.mode: required"),
    ("mode unknown", base(target={"mode": "aes"}), "target.mode: unknown value 'aes' (one of "),
    ("mode none", base(target={"mode": "none"}), 'target.mode: "none" is not a target'),
    ("kms key missing", base(target={"mode": "sse-kms"}), 'target.kms_key_id: required when mode = "sse-kms"'),
    ("dsse key missing", base(target={"mode": "dsse-kms"}), 'target.kms_key_id: required when mode = "dsse-kms"'),
    ("sse-c key missing", base(target={"mode": "sse-c"}), 'target.sse_c_key_file: required when mode = "sse-c"'),
    ("bucket key off kms", base(target={"bucket_key": True}), 'target.bucket_key: only valid with mode = "sse-kms"'),
    ("bucket key type", base(target={"mode": "sse-kms", "kms_key_id": "k", "bucket_key": "yes"}),
     "target.bucket_key: expected true or false, got 'yes'"),
    ("context off kms", base(target={"encryption_context": {"a": "b"}}),
     'target.encryption_context: only valid with mode = "sse-kms"'),
    ("context values", base(target={"mode": "sse-kms", "kms_key_id": "k", "encryption_context": {"a": 1}}),
     "target.encryption_context: expected a table of strings"),
    ("cse key off cse", base(target={"keyring": "aes"}), 'target.keyring: only valid with mode = "cse"'),
    ("concurrency zero", base(run={"concurrency": 0}), "run.concurrency: must be between 1 and 1024, got 0"),
    ("concurrency text", base(run={"concurrency": "8"}), "run.concurrency: expected a whole number, got '8'"),
    ("part size small", base(run={"part_size": "1MiB"}), "run.part_size: must be between 5MiB and 5GiB"),
    ("part size large", base(run={"part_size": "6GiB"}), "run.part_size: must be between 5MiB and 5GiB"),
    ("part size words", base(run={"part_size": "lots"}), 'run.part_size: expected a size like "64MiB", got \'lots\''),
    ("part size bool", base(run={"part_size": True}), 'run.part_size: expected a size like "64MiB"'),
    ("threshold large", base(run={"multipart_threshold": "6GiB"}), "run.multipart_threshold: must be at most 5GiB"),
    ("verify unknown", base(run={"verify": "full"}),
     "run.verify: unknown value 'full' (one of \"head\", \"auto\", \"none\")"),
    ("rps negative", base(run={"max_requests_per_second": -1}), "run.max_requests_per_second: expected a positive"),
    ("checkpoint type", base(run={"checkpoint": 1}), "run.checkpoint: expected a string, got int"),
    ("unknown run key", base(run={"threads": 4}), "run.threads: unknown key"),
    ("kms endpoint", base(kms={"endpoint_url": "kms.local"}), "kms.endpoint_url: must start with http://"),
]


@pytest.mark.parametrize(("data", "expected"), [(d, e) for _, d, e in BAD], ids=[n for n, _, _ in BAD])
def test_every_config_error_names_section_and_key(data: dict[str, Any], expected: str) -> None:
    message = error_of(data)
    assert SECTION_KEY.match(message), f"not `section.key: ...`: {message}"
    assert message.startswith(expected), message


def test_section_level_errors_name_the_section() -> None:
    assert error_of({}) == "source: required section"
    assert error_of({"source": {"bucket": "b"}}) == "target: required section"
    assert error_of(base(sources={"bucket": "b"})).startswith("sources: unknown section (allowed: ")
    assert error_of({"source": "b", "target": {"mode": "sse-s3"}}) == "source: must be a table"


def test_key_file_errors_never_show_the_contents(key_file: Callable[[bytes], str]) -> None:
    secret = b"not-a-key-but-secret-" * 2
    path = key_file(secret)
    message = error_of(base(target={"mode": "sse-c", "sse_c_key_file": path}))
    assert message == (f"target.sse_c_key_file: {path}: key file must hold 32 raw bytes or their base64 "
                       f"(it holds {len(secret)} bytes that are neither)")
    assert secret.decode() not in message


def test_sse_c_key_only_with_sse_c_target(key_file: Callable[[bytes], str]) -> None:
    path = key_file(b"k" * 32)
    assert error_of(base(target={"sse_c_key_file": path})) == \
        'target.sse_c_key_file: only valid with mode = "sse-c"'


def test_key_files_raw_or_base64_give_the_same_key(key_file: Callable[[bytes], str]) -> None:
    raw = bytes(range(32))
    keys = [parse_config(base(target={"mode": "sse-c", "sse_c_key_file": key_file(content)})).target.encryption
            for content in (raw, base64.b64encode(raw), base64.b64encode(raw) + b"\n")]
    assert {k.key_md5 for k in keys} == {keys[0].key_md5}
    assert keys[0].sse_c_key is not None and keys[0].sse_c_key.raw == raw


def test_secrets_stay_out_of_repr(key_file: Callable[[bytes], str]) -> None:
    raw = bytes(range(100, 132))
    config = parse_config(base(source={"sse_c_key_file": key_file(raw)},
                               target={"mode": "sse-c", "sse_c_key_file": key_file(raw)}))
    text = repr(config) + str(config)
    for needle in (repr(raw), raw.hex(), base64.b64encode(raw).decode()):
        assert needle not in text


# --- load_config -------------------------------------------------------------------------------------------


def test_load_config_file_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=re.escape(f"{missing}: config file not found")):
        _load_config(missing)
    bad = tmp_path / "bad.toml"
    bad.write_text("[source\nbucket = 1\n")
    with pytest.raises(ConfigError, match=re.escape(f"{bad}: malformed TOML: ")):
        _load_config(bad)
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe[source]")
    with pytest.raises(ConfigError, match=re.escape(f"{binary}: not UTF-8 text")):
        _load_config(binary)


def test_load_config_resolves_paths_next_to_the_config_file(tmp_path: Path) -> None:
    folder = tmp_path / "conf"
    folder.mkdir()
    (folder / "c.key").write_bytes(b"c" * 32)
    (folder / "rekey.toml").write_text('[source]\nbucket = "b"\n[target]\nmode = "sse-c"\n'
                                       'sse_c_key_file = "c.key"\n[run]\ncheckpoint = "state/cp.sqlite"\n')
    config = _load_config(folder / "rekey.toml")
    assert config.run.checkpoint == folder / "state" / "cp.sqlite"
    assert config.target.encryption.sse_c_key is not None
    assert config.target.encryption.sse_c_key.raw == b"c" * 32


# --- sizes -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "size"), [
    ("64MiB", 64 * MiB), ("64 MiB", 64 * MiB), ("8MB", 8 * MiB), ("8 mb", 8 * MiB), ("1g", GiB), ("1GiB", GiB),
    ("1.5GiB", GiB + GiB // 2), ("512KiB", 512 * 1024), ("100", 100), ("100B", 100), (5242880, 5 * MiB),
])
def test_sizes(text: str | int, size: int) -> None:
    assert parse_size(text, "run.part_size") == size


@pytest.mark.parametrize("text", ["", "MiB", "-5MiB", "5 parsecs", "5MiBs", "1e3", None, [5], 5.5])
def test_bad_sizes(text: object) -> None:
    with pytest.raises(ConfigError, match=r'^run\.part_size: expected a size like "64MiB"'):
        parse_size(text, "run.part_size")


def test_sizes_in_the_run_table() -> None:
    run = parse_config(base(run={"part_size": "8MiB", "multipart_threshold": "100MiB"})).run
    assert (run.part_size, run.multipart_threshold) == (8 * MiB, 100 * MiB)
    defaults = parse_config(base()).run
    assert (defaults.part_size, defaults.multipart_threshold) == (16 * MiB, 1024 * MiB)


# --- in place or not -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("source", "destination", "in_place"), [
    ({}, None, True),
    ({}, {}, True),
    ({"prefix": "a/"}, {"bucket": "src"}, True),                  # prefix defaults to the source's
    ({"prefix": "a/"}, {"bucket": "src", "prefix": "a/"}, True),
    ({"prefix": "a/"}, {"prefix": "b/"}, False),                  # same bucket, other prefix
    ({}, {"bucket": "dst"}, False),
    ({"endpoint_url": "http://127.0.0.1:1"}, {"endpoint_url": "http://127.0.0.1:2"}, False),
    ({"endpoint_url": "http://127.0.0.1:1"}, {"endpoint_url": "http://127.0.0.1:1"}, True),
])
def test_in_place_detection(source: dict[str, Any], destination: dict[str, Any] | None, in_place: bool) -> None:
    data = base(source=source)
    if destination is not None:
        data["destination"] = destination
    config = parse_config(data)
    assert config.destination.in_place is in_place
    if destination is not None and "prefix" not in destination:
        assert config.destination.location.prefix == config.source.location.prefix


# --- the fingerprint that guards a resumed run -------------------------------------------------------------------


def fingerprint(**sections: dict[str, Any]) -> str:
    data = base(target={"mode": "sse-kms", "kms_key_id": "key-1"})
    for name, table in sections.items():
        data[name] = {**data.get(name, {}), **table}
    config: Config = parse_config(data)
    return config.fingerprint()


def test_fingerprint_changes_with_what_the_run_produces(key_file: Callable[[bytes], str]) -> None:
    reference = fingerprint()
    assert fingerprint() == reference
    changes = {
        "kms key": {"target": {"kms_key_id": "key-2"}},
        "mode": {"target": {"mode": "dsse-kms"}},
        "bucket key": {"target": {"bucket_key": True}},
        "context": {"target": {"encryption_context": {"app": "x"}}},
        "source prefix": {"source": {"prefix": "p/"}},
        "source bucket": {"source": {"bucket": "other"}},
        "include": {"source": {"include": ["*.csv"]}},
        "destination": {"destination": {"bucket": "dst"}},
        "destination prefix": {"destination": {"prefix": "out/"}},
    }
    for name, sections in changes.items():
        assert fingerprint(**sections) != reference, name
    key_a, key_b = key_file(b"a" * 32), key_file(b"b" * 32)
    sse_c = {"mode": "sse-c", "kms_key_id": None, "sse_c_key_file": key_a}
    with_a = fingerprint(target={k: v for k, v in sse_c.items() if v is not None})
    with_b = fingerprint(target={"mode": "sse-c", "sse_c_key_file": key_b})
    assert len({with_a, with_b, reference}) == 3


def test_fingerprint_ignores_speed_settings_and_paths(tmp_path: Path) -> None:
    reference = fingerprint()
    same = {
        "concurrency": {"run": {"concurrency": 3}},
        "part size": {"run": {"part_size": "32MiB"}},
        "threshold": {"run": {"multipart_threshold": "1GiB"}},
        "verify": {"run": {"verify": "none"}},
        "rate": {"run": {"max_requests_per_second": 50}},
        "retries": {"run": {"max_retries": 2}},
        "checkpoint path": {"run": {"checkpoint": str(tmp_path / "elsewhere.sqlite")}},
    }
    for name, sections in same.items():
        assert fingerprint(**sections) == reference, name


def test_target_mode_is_parsed_into_the_enum() -> None:
    config = parse_config(base(target={"mode": "sse-kms", "kms_key_id": "k", "bucket_key": True,
                                       "encryption_context": {"a": "b"}}))
    enc = config.target.encryption
    assert (enc.mode, enc.kms_key_id, enc.bucket_key, dict(enc.context or {})) == (Mode.SSE_KMS, "k", True,
                                                                                    {"a": "b"})
