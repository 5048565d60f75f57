"""Logging for every rekey process (the CLI, and Ray actors on other nodes): secrets redacted, botocore quiet."""

from __future__ import annotations

import logging
import re
import sys

from engine.terminal import shown

_SECRET_HEADER = re.compile(
    r"(x-amz-server-side-encryption-customer-key|x-amz-copy-source-server-side-encryption-customer-key|"
    r"SSECustomerKey|CopySourceSSECustomerKey|Plaintext)(['\"]?\s*[:=]\s*b?['\"]?)[^'\",}\s]+",
    re.IGNORECASE)


class RedactSecrets(logging.Filter):
    """Blanks SSE-C keys and KMS plaintexts in any log record (a second line of defence); escapes control
    characters (object keys are logged)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = shown(_SECRET_HEADER.sub(lambda m: f"{m.group(1)}{m.group(2)}<redacted>", message))
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def configure_logging(*, verbose: bool) -> None:
    """rekey's own decisions at DEBUG with -v; botocore never below INFO (its DEBUG prints request headers,
    which carry SSE-C keys)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactSecrets())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)
    for name in ("botocore", "aiobotocore", "urllib3", "aiohttp", "s3transfer"):
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.CRITICAL)
    # uvloop logs "Fatal error on SSL protocol" with a traceback when a server closes a TLS connection
    # under a write; the request it belonged to fails (and is retried) on its own. Only -v shows it.
    logging.getLogger("asyncio").setLevel(logging.DEBUG if verbose else logging.CRITICAL)
