"""Issue 13 finding 14 on Ceph RGW: untrusted certificate, unknown SSE-KMS key id, encryption refused over HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.sandbox_rgw import RgwInfo
from tests.cli_helpers import run_rekey, source_section, write_config


def _one_line(result: Any) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rekey: error: "), result.describe()
    return str(lines[0])


def test_rgw_errors_name_what_to_fix(rgw: RgwInfo, rgw_s3: Any, rgw_bucket_factory: Any, tmp_path: Path) -> None:
    bucket = rgw_bucket_factory("rgwsafety")
    rgw_s3.put_object(Bucket=bucket, Key="a", Body=b"a")

    def config(name: str, source: dict[str, Any], target: dict[str, Any]) -> Path:
        return write_config(tmp_path, {"source": source, "target": target,
                                       "run": {"checkpoint": str(tmp_path / f"{name}.sqlite"), "max_retries": 1}},
                            f"{name}.toml")

    # An unknown SSE-KMS key id: RGW answers 403 InvalidAccessKeyId; rekey names the key, not the credentials.
    unknown = config("unknown", source_section(rgw, bucket), {"mode": "sse-kms", "kms_key_id": "no-such-key"})
    result = run_rekey(rgw, "run", "-q", "-c", str(unknown))
    assert result.returncode == 3, result.describe()
    line = _one_line(result)
    assert "target.kms_key_id: the server cannot encrypt with KMS key no-such-key" in line, line
    assert "credentials refused" not in line

    # Encryption headers over plain HTTP (rgw crypt require ssl): refused, said so without contradiction.
    plain = config("plain", source_section(rgw, bucket, https=False),
                   {"mode": "sse-kms", "kms_key_id": rgw.kms_keys[0]})
    result = run_rekey(rgw, "run", "-q", "-c", str(plain))
    assert result.returncode == 3, result.describe()
    line = _one_line(result)
    assert "the endpoint refuses sse-kms writes" in line and "accepts" not in line, line

    # HTTPS without the CA: exit 3 naming ca_bundle.
    untrusted = config("untrusted", {"bucket": bucket, "endpoint_url": rgw.s3_https, "region": rgw.region},
                       {"mode": "sse-s3"})
    result = run_rekey(rgw, "run", "-q", "-c", str(untrusted))
    assert result.returncode == 3, result.describe()
    assert "TLS certificate is not trusted" in _one_line(result) and "ca_bundle" in _one_line(result)
    assert rgw_s3.get_object(Bucket=bucket, Key="a")["Body"].read() == b"a"
