"""Route identity: in place or not, from bucket and prefix on a normalised endpoint identity."""

from __future__ import annotations

import pytest

from engine.config import parse_config
from workers.route import can_copy_between, endpoint_identity, same_objects
from workers.s3 import Endpoint


@pytest.mark.parametrize(("a", "b"), [
    (Endpoint("http://127.0.0.1:8333"), Endpoint("http://127.0.0.1:8333/")),
    (Endpoint("http://127.0.0.1:8333"), Endpoint("http://127.0.0.1:8333//")),
    (Endpoint("https://S3.Example.COM"), Endpoint("https://s3.example.com:443/")),
    (Endpoint("http://host"), Endpoint("http://host:80")),
    (Endpoint("https://s3.amazonaws.com", region="eu-west-1"), Endpoint("https://s3.eu-west-1.amazonaws.com")),
    (Endpoint(None, region="eu-west-1"), Endpoint("https://s3.eu-west-1.amazonaws.com/")),
    (Endpoint(None), Endpoint("https://s3.amazonaws.com")),
    (Endpoint("https://s3-eu-west-1.amazonaws.com"), Endpoint("https://s3.eu-west-1.amazonaws.com")),
    (Endpoint("https://s3.external-1.amazonaws.com", region="us-east-1"), Endpoint(None, region="us-east-1")),
    (Endpoint("http://127.0.0.1:8333", profile="a"), Endpoint("http://127.0.0.1:8333", profile="b")),
])
def test_spellings_of_one_endpoint_have_one_identity(a: Endpoint, b: Endpoint) -> None:
    assert endpoint_identity(a) == endpoint_identity(b)
    assert same_objects(a, "bkt", "p/", b, "bkt", "p/")


@pytest.mark.parametrize(("a", "b"), [
    (Endpoint("http://127.0.0.1:8333"), Endpoint("http://127.0.0.1:8334")),
    (Endpoint("https://s3.eu-west-1.amazonaws.com"), Endpoint("https://s3.us-east-1.amazonaws.com")),
    (Endpoint(None, region="eu-west-1"), Endpoint(None, region="us-west-2")),
    (Endpoint("https://a.example.com"), Endpoint("https://b.example.com")),
])
def test_other_endpoints_differ(a: Endpoint, b: Endpoint) -> None:
    assert endpoint_identity(a) != endpoint_identity(b)
    assert not same_objects(a, "bkt", "", b, "bkt", "")


def test_other_bucket_or_prefix_is_not_in_place() -> None:
    e = Endpoint("http://127.0.0.1:8333")
    assert not same_objects(e, "a", "", e, "b", "")
    assert not same_objects(e, "a", "x/", e, "a", "y/")


def test_server_side_copy_needs_one_set_of_credentials() -> None:
    a, b = Endpoint("http://h:1", profile="a"), Endpoint("http://h:1/", profile="b")
    assert not can_copy_between(a, b) and can_copy_between(a, Endpoint("http://h:1/", profile="a"))


@pytest.mark.parametrize("spelling", ["http://127.0.0.1:8333/", "http://127.0.0.1:8333"])
def test_config_with_a_respelled_destination_is_in_place(spelling: str) -> None:
    config = parse_config({
        "source": {"bucket": "b", "endpoint_url": "http://127.0.0.1:8333", "region": "us-east-1"},
        "destination": {"bucket": "b", "endpoint_url": spelling, "profile": "other"},
        "target": {"mode": "sse-s3"}, "run": {"checkpoint": "/tmp/x.sqlite"}})
    assert config.destination.in_place and config.same_endpoint
