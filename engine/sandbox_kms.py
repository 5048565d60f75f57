"""moto's KMS server for the sandbox, keeping its symmetric keys in a file (0600) across restarts.

moto keeps keys in memory only: after a restart of `rekey sandbox --workdir DIR`, every SSE-KMS object
SeaweedFS wrapped under an earlier key answered InternalError. This launcher records each key moto creates
(id, ARN, material, description) in `DIR/kms-keys.json` and puts them back before serving, so the same key
ids decrypt what they encrypted before. Run as `python -m engine.sandbox_kms --port P --state FILE`.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import threading
from pathlib import Path
from typing import Any

_lock = threading.Lock()


def _records(models: Any) -> list[dict[str, Any]]:
    out = []
    for account, regions in list(models.kms_backends.items()):
        for region, backend in list(regions.items()):
            for key in list(backend.keys.values()):
                if key.key_spec != "SYMMETRIC_DEFAULT":
                    continue  # asymmetric keys would need their private key: not kept
                out.append({"account": account, "region": region, "id": key.id, "arn": key.arn,
                            "material": base64.b64encode(key.key_material).decode(),
                            "description": key.description, "key_usage": key.key_usage,
                            "created": key.creation_date})
    return out


def save(models: Any, state: Path) -> None:
    """Write every symmetric key atomically, readable by the owner only."""
    tmp = state.with_name(state.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(_records(models), f)
    os.replace(tmp, state)


def restore(models: Any, state: Path) -> int:
    """Put back the keys saved in `state`; returns how many."""
    if not state.exists():
        return 0
    records = json.loads(state.read_text(encoding="utf-8"))
    for rec in records:
        backend = models.kms_backends[rec["account"]][rec["region"]]
        key = models.Key(None, rec["key_usage"], "SYMMETRIC_DEFAULT", rec["description"], rec["account"],
                         rec["region"])
        key.id, key.arn, key.creation_date = rec["id"], rec["arn"], rec["created"]
        key.key_material = base64.b64decode(rec["material"])
        backend.keys[key.id] = key
    return len(records)


def install(state: Path) -> None:
    """Restore saved keys and save again after every CreateKey."""
    from moto.kms import models
    restore(models, state)
    create_key = models.KmsBackend.create_key

    def create_and_save(self: Any, *args: Any, **kwargs: Any) -> Any:
        key = create_key(self, *args, **kwargs)
        with _lock:
            save(models, state)
        return key

    models.KmsBackend.create_key = create_and_save  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m engine.sandbox_kms")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state", required=True, help="JSON file keeping the keys")
    args = parser.parse_args()
    install(Path(args.state))
    from moto.server import main as moto_main
    moto_main(["-H", args.host, "-p", str(args.port)])


if __name__ == "__main__":
    main()
