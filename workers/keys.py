"""Key files: load a 32-byte key (raw or base64) for SSE-C or a raw AES keyring, and check its permissions."""

from __future__ import annotations

import base64
import binascii
import os
import stat

from workers.errors import ConfigError
from workers.model import SecretKey

KEY_LEN = 32


def load_key_file(path: str | os.PathLike[str]) -> SecretKey:
    """Read a key file holding 32 raw bytes or their base64 (surrounding whitespace ignored).

    ConfigError names the path and the problem; the file's contents never appear in a message.
    """
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            data = f.read(4096 + 1)
    except FileNotFoundError:
        raise ConfigError(f"{name}: key file does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"{name}: key file is a directory") from None
    except PermissionError:
        raise ConfigError(f"{name}: key file is not readable (permission denied)") from None
    except OSError as exc:
        raise ConfigError(f"{name}: key file cannot be read ({exc.strerror or type(exc).__name__})") from None
    if len(data) == KEY_LEN:
        return SecretKey(data, source=name)
    text = data.strip()
    if not text:
        raise ConfigError(f"{name}: key file is empty")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{name}: key file must hold {KEY_LEN} raw bytes or their base64 "
                          f"(it holds {len(data)} bytes that are neither)") from None
    if len(raw) != KEY_LEN:
        raise ConfigError(f"{name}: key must be {KEY_LEN} bytes, the file's base64 decodes to {len(raw)}")
    return SecretKey(raw, source=name)


def key_file_is_private(path: str | os.PathLike[str]) -> bool:
    """False when the group or others may read the key file (the engine warns)."""
    mode = os.stat(path).st_mode
    return not mode & (stat.S_IRGRP | stat.S_IROTH)
