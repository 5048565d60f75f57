"""Request templates: the request botocore builds for one shape of call, built once, filled in per call.

Building a request is most of botocore's CPU per call: a dozen parameter handlers, validation, the
serializer, checksum and before-call events. For the hot operations without a body, calls of one shape
(the same operation, bucket and every other parameter, only the key, version id, conditions, part
number, upload id, ranges, copy source and user metadata differing) differ in their request only where those values
go. So the first call of a shape is built by botocore twice: once with a distinct token in place of each
varying value, once as it is. The tokenized request is the template when every token lands exactly once,
where S3's model puts that parameter, and filling the template with the real values gives exactly
botocore's own request; otherwise the shape is never templated and every call of it takes botocore's
whole path. Filling encodes each value with botocore's own functions (`percent_encode` as its serializer
calls it for a greedy URI label and for the query string, `_quote_source_header_from_dict` for
CopySource), and tests/unit/test_fast_parity.py compares the signed result with botocore's for awkward
keys on three kinds of endpoint.
"""

from __future__ import annotations

import copy
import datetime as dt
import uuid
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

from botocore.handlers import _quote_source_header_from_dict
from botocore.utils import percent_encode

from workers.s3.ops import Op

TEMPLATED = frozenset({Op.HEAD_OBJECT, Op.GET_OBJECT, Op.COPY_OBJECT, Op.UPLOAD_PART_COPY, Op.DELETE_OBJECT,
                       Op.HEAD_BUCKET, Op.GET_OBJECT_TAGGING})
MAX_SHAPES = 256   # shapes kept per transport; later new shapes take botocore's whole path

# Where S3's model puts each varying parameter of the templated operations.
_IN_PATH = frozenset({"Key"})                                   # the greedy label {Key+}
_IN_QUERY = frozenset({"VersionId", "UploadId", "PartNumber"})
_IN_HEADER = frozenset({"IfMatch", "IfNoneMatch", "CopySourceIfMatch", "CopySourceIfNoneMatch", "Range",
                        "CopySourceRange"})
_VARYING = _IN_PATH | _IN_QUERY | _IN_HEADER
_COPY_SOURCE_FIELDS = frozenset({"Bucket", "Key", "VersionId"})
_COPY_SOURCE_HEADER = "x-amz-copy-source"
_META_PREFIX = "x-amz-meta-"   # Metadata's locationName in S3's model: a header for each entry

Build = Callable[[Op, Mapping[str, Any]], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Template:
    """A request dict with one token for each varying value, and where each token is."""

    path: tuple[tuple[str, str], ...]       # (parameter, token) in the URL's path
    query: tuple[tuple[str, str], ...]      # (parameter, token) in the URL's query string
    headers: tuple[tuple[str, str, str], ...]   # (parameter, header, token)
    copy_source: bool                       # x-amz-copy-source is rebuilt from the CopySource dict
    request: dict[str, Any] = field(repr=False)   # botocore's tokenized request dict (SSE-C key headers)

    def fill(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """botocore's request dict for `params` (a call of this template's shape)."""
        url = self.request["url"]
        auth_path = self.request.get("auth_path")
        for name, token in self.path:
            encoded = percent_encode(params[name], safe="/~")
            url = url.replace(token, encoded)
            if auth_path:
                auth_path = auth_path.replace(token, encoded)
        for name, token in self.query:
            url = url.replace(token, percent_encode(params[name]))
        headers = dict(self.request["headers"])
        for name, header, token in self.headers:
            headers[header] = headers[header].replace(token, str(params[name]))
        if self.copy_source:
            headers[_COPY_SOURCE_HEADER] = _quote_source_header_from_dict(params["CopySource"])
        for name, value in params.get("Metadata", {}).items():
            headers[_META_PREFIX + name] = value
        context = dict(self.request["context"])
        if context.get("signing") is not None:
            context["signing"] = signing_copy(context["signing"])
        context["retries"] = {"attempt": 1, "invocation-id": str(uuid.uuid4())}
        out = {**self.request, "url": url, "headers": headers, "context": context}
        if auth_path is not None:
            out["auth_path"] = auth_path
        return out


def signing_copy(signing: Mapping[str, Any]) -> dict[str, Any]:
    """A request's own copy of the signing context (later handlers may change it): shallow when flat."""
    flat = all(isinstance(v, str | bool | int | float | None) for v in signing.values())
    return dict(signing) if flat else copy.deepcopy(dict(signing))


def _ascii_metadata(value: Any) -> bool:
    return isinstance(value, Mapping) and all(
        isinstance(k, str) and isinstance(v, str) and k.isascii() and v.isascii() for k, v in value.items())


def shape_of(op: Op, params: Mapping[str, Any]) -> Hashable | None:
    """What calls of one template share: the operation, the names of the varying parameters present and every
    other parameter's value; None for a call no template serves."""
    if op not in TEMPLATED:
        return None
    fixed: list[tuple[str, str, Any]] = []
    varying: list[str] = []
    for name, value in params.items():
        if name in _VARYING:
            varying.append(name)
        elif name == "CopySource":
            if not isinstance(value, Mapping) or not set(value) <= _COPY_SOURCE_FIELDS or "Key" not in value:
                return None
            varying.append("CopySource:" + ",".join(sorted(value)))
        elif name == "Metadata":
            if not _ascii_metadata(value):
                return None   # botocore refuses it (validate_ascii_metadata): its whole path says how
            varying.append(name)
        elif value is None or isinstance(value, str | bytes | bool | int | dt.datetime):
            fixed.append((name, type(value).__name__, value))
        else:
            return None   # a mapping (Metadata) or a body: botocore's whole path
    return op, tuple(sorted(fixed)), tuple(sorted(varying))


def make_template(op: Op, params: Mapping[str, Any],
                        build: Build) -> tuple[Template | None, dict[str, Any] | None]:
    """The template of `params`' shape, proven on `params` themselves (None when the shape cannot be one), and
    botocore's request for `params` when it was built on the way (None when it was not)."""
    tokens: dict[str, str] = {}
    tokenized: dict[str, Any] = {}
    for i, (name, value) in enumerate(params.items()):
        if name in _VARYING:
            token = str(7_301_900_000 + i) if isinstance(value, int) else f"rekeytok{i}x"
            tokens[name] = token
            tokenized[name] = int(token) if isinstance(value, int) else token
        elif name == "CopySource":
            tokenized[name] = {field: f"rekeycs{field.lower()}x" for field in value}
        elif name == "Metadata":
            tokenized[name] = {}   # filled in as botocore serializes it: one x-amz-meta- header an entry
        else:
            tokenized[name] = value
    try:
        request = build(op, tokenized)
    except Exception:   # botocore refused the tokens (a validation the real values pass): no template
        return None, None
    template = _locate(request, tokens, tokenized.get("CopySource"))
    if template is None:
        return None, None
    real = build(op, params)
    filled = template.fill(params)
    same = all(filled.get(k) == real.get(k) for k in ("method", "url", "headers", "body", "auth_path"))
    return (template if same else None), real


def _locate(request: dict[str, Any], tokens: Mapping[str, str], copy_source: Any) -> Template | None:
    """Where each token landed in the tokenized request, if every one is where the model says, once."""
    url: str = request["url"]
    headers: dict[str, Any] = request["headers"]
    if request.get("body") not in (b"", None) or not all(isinstance(v, str) for v in headers.values()):
        return None
    query_at = url.find("?")
    path: list[tuple[str, str]] = []
    query: list[tuple[str, str]] = []
    in_headers: list[tuple[str, str, str]] = []
    for name, token in tokens.items():
        at = [h for h, v in headers.items() if token in v]
        found = url.count(token) + sum(headers[h].count(token) for h in at)
        if found != 1:
            return None
        if at and name in _IN_HEADER:
            in_headers.append((name, at[0], token))
        elif not at and name in _IN_PATH and (query_at < 0 or url.find(token) < query_at):
            path.append((name, token))
        elif not at and name in _IN_QUERY and 0 <= query_at < url.find(token):
            query.append((name, token))
        else:
            return None
    if copy_source is not None and headers.get(_COPY_SOURCE_HEADER) != _quote_source_header_from_dict(copy_source):
        return None
    return Template(tuple(path), tuple(query), tuple(in_headers), copy_source is not None, request)


__all__ = ["MAX_SHAPES", "TEMPLATED", "Template", "make_template", "shape_of", "signing_copy"]
