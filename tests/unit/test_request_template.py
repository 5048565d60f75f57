"""Request templates (workers.s3.template): a shape is templated only when its tokens land once where S3's model
puts them and the filled template equals botocore's own request; anything else takes botocore's whole path.
The build function here stands in for botocore's request building (tests/unit/test_fast_parity.py compares the
real one on three endpoint kinds)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from botocore.utils import percent_encode

from workers.s3.ops import Op
from workers.s3.template import make_template, shape_of


def _request(params: Mapping[str, Any], *, twice: bool = False) -> dict[str, Any]:
    url = f"http://127.0.0.1:9000/b/{percent_encode(params['Key'], safe='/~')}"
    if "VersionId" in params:
        url += f"?versionId={percent_encode(params['VersionId'])}"
    headers = {"If-Match": str(params["IfMatch"])} if "IfMatch" in params else {}
    if twice:
        headers["x-echo"] = str(params["Key"])
    return {"method": "HEAD", "url": url, "headers": headers, "body": b"", "context": {"signing": {"region": "r"}}}


def _build(**options: Any) -> Any:
    def build(op: Op, params: Mapping[str, Any]) -> dict[str, Any]:
        if options.get("refuse_tokens") and str(params["Key"]).startswith("rekeytok"):
            raise ValueError("refused")
        return _request(params, twice=options.get("twice", False))
    return build


PARAMS = {"Bucket": "b", "Key": "dir/a b+c", "VersionId": "v/1+2", "IfMatch": '"e"'}


def test_a_template_fills_in_exactly_what_the_build_makes() -> None:
    template, first = make_template(Op.HEAD_OBJECT, PARAMS, _build())
    assert template is not None and first is not None and first["url"] == _request(PARAMS)["url"]
    for key in ("ünï/ключ", "a//b", "100%", "dir/"):
        other = {**PARAMS, "Key": key, "VersionId": key[::-1], "IfMatch": f'"{key}"'}
        filled, real = template.fill(other), _request(other)
        assert (filled["url"], filled["headers"]) == (real["url"], real["headers"])
        assert filled["context"]["retries"]["attempt"] == 1 and filled["context"] is not template.request["context"]


def test_a_token_landing_twice_or_refused_gives_no_template() -> None:
    assert make_template(Op.HEAD_OBJECT, PARAMS, _build(twice=True))[0] is None
    assert make_template(Op.HEAD_OBJECT, PARAMS, _build(refuse_tokens=True))[0] is None


def test_shapes_split_on_every_fixed_value_and_refuse_mappings() -> None:
    a = shape_of(Op.HEAD_OBJECT, {"Bucket": "b", "Key": "k", "SSECustomerKey": b"1"})
    b = shape_of(Op.HEAD_OBJECT, {"Bucket": "b", "Key": "other", "SSECustomerKey": b"1"})
    c = shape_of(Op.HEAD_OBJECT, {"Bucket": "b", "Key": "k", "SSECustomerKey": b"2"})
    assert a == b != c
    assert shape_of(Op.COPY_OBJECT, {"Bucket": "b", "Key": "k", "Tagging": {"a": "b"}}) is None
    assert shape_of(Op.COPY_OBJECT, {"Bucket": "b", "Key": "k", "Metadata": {"ü": "x"}}) is None   # botocore's refusal
    assert shape_of(Op.PUT_OBJECT, {"Bucket": "b", "Key": "k", "Body": b"x"}) is None
