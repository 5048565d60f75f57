"""`[run] executor` and `[ray]`: validated once, errors name section.key; the Ray module only on request."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from engine.config import load_config, parse_config
from workers.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def config(**sections: dict[str, Any]) -> dict[str, Any]:
    return {"source": {"bucket": "b"}, "target": {"mode": "sse-s3"}, **sections}


def test_defaults_are_local_and_a_local_ray() -> None:
    c = parse_config(config())
    assert c.run.executor == "local" and c.ray.address is None and c.ray.actors is None
    r = parse_config(config(run={"executor": "ray"}, ray={"address": "ray://head:10001", "actors": 3}))
    assert r.run.executor == "ray" and r.ray.address == "ray://head:10001" and r.ray.actors == 3
    for address in ("auto", "10.0.0.1:6379", "head:6379"):
        assert parse_config(config(ray={"address": address})).ray.address == address


@pytest.mark.parametrize(("data", "expected"), [
    (config(run={"executor": "dask"}), "run.executor: unknown value 'dask'"),
    (config(ray={"address": "http://head"}), "ray.address: expected"),
    (config(ray={"actors": 0}), "ray.actors: must be between 1"),
    (config(ray={"nodes": 3}), "ray.nodes: unknown key"),
])
def test_errors_name_the_key(data: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert str(info.value).startswith(expected), str(info.value)


def test_the_config_text_reaches_actors_without_key_material(tmp_path: Path) -> None:
    key = tmp_path / "k.key"
    key.write_bytes(b"\x01" * 32)
    key.chmod(0o600)
    path = tmp_path / "rekey.toml"
    path.write_text('[source]\nbucket = "b"\n[target]\nmode = "sse-c"\nsse_c_key_file = "k.key"\n'
                    '[run]\nexecutor = "ray"\n')
    c = load_config(path)
    assert c.target.encryption.sse_c_key is not None and "k.key" in c.text and "\x01" not in c.text
    assert "[source]" not in repr(c)   # the text is repr=False


def test_importing_the_engine_imports_nothing_of_ray() -> None:
    code = ("import sys, engine.cli, engine.pipeline, engine.executor, engine.executor.local\n"
            "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(REPO), check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
