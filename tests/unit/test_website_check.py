"""copy_first is only safe where no object can carry a website redirect a COPY-directive copy would drop:
how GetBucketWebsite's answers are read (the decision alone; SeaweedFS has no website hosting to test it)."""

from __future__ import annotations

from typing import cast

import anyio
import pytest

from workers.errors import AccessDeniedError, CredentialsError, RekeyError, UnsupportedError
from workers.probes import website_configured
from workers.s3 import S3


class OneAnswer:
    """The boundary's answer to GetBucketWebsite: configured or not (404), or a classified error."""

    def __init__(self, answer: bool | RekeyError) -> None:
        self.answer = answer
        self.asked: list[str] = []

    async def bucket_website(self, bucket: str) -> bool:
        self.asked.append(bucket)
        if isinstance(self.answer, RekeyError):
            raise self.answer
        return self.answer


@pytest.mark.parametrize(("answer", "configured"), [
    (True, True),
    (False, False),       # NoSuchWebsiteConfiguration
    (UnsupportedError("NotImplemented", code="501"), False),
    (AccessDeniedError("AccessDenied"), True),   # cannot tell: read every source first
])
def test_website_configuration_decides(answer: bool | RekeyError, configured: bool) -> None:
    s3 = OneAnswer(answer)
    assert anyio.run(website_configured, cast(S3, s3), "b") is configured
    assert s3.asked == ["b"]


def test_refused_credentials_stop_the_run() -> None:
    with pytest.raises(CredentialsError):
        anyio.run(website_configured, cast(S3, OneAnswer(CredentialsError("InvalidAccessKeyId"))), "b")
