"""botocore's models through rekey's cached loader (workers.s3.models): the same data botocore reads, from a
cache written once; a broken or unwritable cache falls back to botocore's own parsing."""

from __future__ import annotations

import gc
import json
from pathlib import Path
from typing import Any

import botocore.loaders
import pytest
from botocore.exceptions import UnknownServiceError

from workers import timeline
from workers.s3.models import CachedLoader

FILES = [("s3", "service-2"), ("s3", "endpoint-rule-set-1"), ("kms", "service-2")]


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON, in the same key order (botocore's OrderedDicts against plain dicts)."""
    return json.dumps(a) == json.dumps(b)


def test_the_cached_models_are_botocores(tmp_path: Path) -> None:
    plain = botocore.loaders.Loader()
    first = CachedLoader(directory=tmp_path)
    for service, kind in FILES:
        assert _same(first.load_service_model(service, kind), plain.load_service_model(service, kind))
    assert _same(first.load_data("endpoints"), plain.load_data("endpoints"))
    written = sorted(tmp_path.glob("*.marshal"))
    assert len(written) >= 4
    again = CachedLoader(directory=tmp_path)   # a later process: read from the cache
    for service, kind in FILES:
        assert _same(again.load_service_model(service, kind), plain.load_service_model(service, kind))
    assert sorted(tmp_path.glob("*.marshal")) == written


def test_a_corrupt_entry_is_parsed_again_and_rewritten(tmp_path: Path) -> None:
    CachedLoader(directory=tmp_path).load_service_model("s3", "service-2")
    for entry in tmp_path.glob("*.marshal"):
        entry.write_bytes(b"\x00garbage")
    model = CachedLoader(directory=tmp_path).load_service_model("s3", "service-2")
    assert model["metadata"]["serviceId"] == "S3"
    assert all(e.read_bytes() != b"\x00garbage" for e in tmp_path.glob("*.marshal"))


def test_an_unwritable_cache_is_passed_over(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    model = CachedLoader(directory=blocker / "cache").load_service_model("kms", "service-2")
    assert model["metadata"]["serviceId"] == "KMS"


def test_services_are_known_one_at_a_time(tmp_path: Path) -> None:
    loader = CachedLoader(directory=tmp_path)
    services = loader.list_available_services("service-2")
    assert "s3" in services and "kms" in services and "no-such-service" not in services
    with pytest.raises(UnknownServiceError):
        loader.load_service_model("no-such-service", "service-2")
    assert sorted(services) == botocore.loaders.Loader().list_available_services("service-2")


def test_the_collector_paused_for_start_up_resumes_at_the_first_request() -> None:
    assert gc.isenabled()
    timeline.pause_collector()
    try:
        assert not gc.isenabled()
    finally:
        timeline.started()
        gc.unfreeze()
    assert gc.isenabled()
    timeline.started()   # once only: a second call changes nothing
    assert gc.isenabled()
