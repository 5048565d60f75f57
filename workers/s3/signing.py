"""botocore's S3 SigV4 signer on a lighter request object: what the fast transport signs with.

The signer is botocore's `S3SigV4Auth`, called as botocore calls it (`add_auth`, the session's refreshable
credentials). Three things around it cost more than the signature itself and are done here instead:

    FastRequest        botocore's AWSRequest with a dict-based, case-insensitive header map in place of
                       email.message's (every lookup, set and delete of that one parses and re-encodes the
                       header list), and its body read as botocore's preparer reads it without building a
                       whole prepared request (its `body` property does, for the payload hash)
    headers_to_sign    read into a dict, not two HTTPHeaders per request
    signing key        derived once per secret, day, region and service (four of the five HMACs of each
                       signature); the key stays in this process's memory only

tests/unit/test_fast_parity.py holds the result equal to botocore's own signed request.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

from botocore.auth import SIGNED_HEADERS_BLACKLIST, S3SigV4Auth
from botocore.awsrequest import AWSRequest

from workers.s3.hosts import host_header, origin
from workers.s3.native import signing_key


class Headers(MutableMapping[str, str]):
    """A case-insensitive header map that keeps each name's spelling, as email.message's does for the
    single-valued headers botocore builds; deleting a missing name is no error there either."""

    __slots__ = ("_items", "version")

    def __init__(self, headers: Mapping[str, Any] | None = None) -> None:
        self._items: dict[str, tuple[str, Any]] = {}
        self.version = 0   # changes with every change of the map
        for name, value in (headers or {}).items():
            self._items[name.lower()] = (name, value)

    def __getitem__(self, name: str) -> Any:
        return self._items[name.lower()][1]

    def __setitem__(self, name: str, value: Any) -> None:
        self._items[name.lower()] = (name, value)
        self.version += 1

    def __delitem__(self, name: str) -> None:
        self._items.pop(name.lower(), None)
        self.version += 1

    def lowered(self) -> Any:
        """(lowercase name, value) of each header."""
        return ((lname, value) for lname, (_, value) in self._items.items())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def get(self, name: str, default: Any = None) -> Any:
        hit = self._items.get(name.lower())
        return default if hit is None else hit[1]

    def items(self) -> Any:
        return list(self._items.values())

    def get_all(self, name: str, failobj: Any = None) -> Any:
        hit = self._items.get(name.lower())
        return failobj if hit is None else [hit[1]]

    def __repr__(self) -> str:   # names only: the values may carry an SSE-C key
        return f"Headers({sorted(name for name, _ in self._items.values())})"


class FastRequest(AWSRequest):  # type: ignore[misc]
    """botocore's AWSRequest with `Headers` for its headers (see the module doc)."""

    def __init__(self, method: str, url: str, headers: Mapping[str, Any], data: Any,
                 auth_path: str | None = None) -> None:
        super().__init__(method=method, url=url, data=data, auth_path=auth_path)
        self.headers = Headers(headers)

    @classmethod
    def of(cls, request_dict: Mapping[str, Any]) -> FastRequest:
        """What botocore's `create_request_object` makes of a request dict."""
        request = cls(request_dict["method"], request_dict["url"], request_dict["headers"], request_dict["body"],
                      request_dict.get("auth_path"))
        request.context = request_dict["context"]
        return request

    @property
    def body(self) -> Any:
        data = self.data
        if isinstance(data, dict):   # a form: botocore's preparer encodes it
            return super().body
        if data == b"":
            return None
        return data.encode("utf-8") if isinstance(data, str) else data


class _SignedHeaders(dict[str, str]):
    """What botocore's `headers_to_sign` returns (an email.message-based HTTPHeaders), as a dict: the same
    names and values when no name repeats, read by the same canonical_headers and signed_headers."""

    def get_all(self, name: str, failobj: Any = None) -> Any:
        value = self.get(name)
        return failobj if value is None else [value]


class FastS3SigV4Auth(S3SigV4Auth):  # type: ignore[misc]
    """botocore's S3 SigV4 signer, whole, but for two steps: the headers to sign are read into a dict (and
    written out from it), and the signing key is derived once a day (see the module doc)."""

    def headers_to_sign(self, request: Any) -> Any:
        """botocore's, as a dict; botocore asks twice per signature (the canonical request, then the
        Authorization header): the second time, with the headers unchanged, gets the first answer."""
        headers = request.headers
        if not isinstance(headers, Headers):
            return self._headers_to_sign(request, ((name.lower(), value) for name, value in headers.items()))
        cached = getattr(request, "signed_cache", None)
        if cached is not None and cached[0] == headers.version and cached[1] == request.url:
            return cached[2]
        out = self._headers_to_sign(request, headers.lowered())
        request.signed_cache = (headers.version, request.url, out)
        return out

    def _headers_to_sign(self, request: Any, lowered: Any) -> Any:
        out = _SignedHeaders()
        for lname, value in lowered:
            if lname in SIGNED_HEADERS_BLACKLIST:
                continue
            if lname in out:   # only an email.message header map repeats a name: botocore's own
                return super().headers_to_sign(request)
            if not isinstance(value, str):
                return super().headers_to_sign(request)
            out[lname] = value
        if "host" not in out:
            out["host"] = host_header(request.url)
        return out

    def canonical_headers(self, headers_to_sign: Any) -> str:
        """botocore's, for the dict `headers_to_sign` returns: names lowercase and single, values str."""
        if not isinstance(headers_to_sign, _SignedHeaders):
            return str(super().canonical_headers(headers_to_sign))
        return "\n".join(f"{name}:{' '.join(value.split())}" for name, value in sorted(headers_to_sign.items()))

    def signed_headers(self, headers_to_sign: Any) -> str:
        if not isinstance(headers_to_sign, _SignedHeaders):
            return str(super().signed_headers(headers_to_sign))
        return ";".join(sorted(name.strip() for name in headers_to_sign))

    def signature(self, string_to_sign: str, request: Any) -> str:
        key = signing_key(self.credentials.secret_key, request.context["timestamp"][0:8], self._region_name,
                          self._service_name)
        return str(self._sign(key, string_to_sign, hex=True))


__all__ = ["FastRequest", "FastS3SigV4Auth", "Headers", "host_header", "origin"]
