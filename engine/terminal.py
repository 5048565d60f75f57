"""Text for a terminal: object keys and messages with control characters shown as escapes.

An object key may hold any character. Printed raw, ANSI escapes recolour or rewrite the screen and a newline
forges a line of its own (`failed: fake/line: everything fine`). Everything rekey prints about objects goes
through `shown`; the JSON reports keep the exact key (JSON escapes control characters itself).
"""

from __future__ import annotations

import unicodedata

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\x1b": "\\x1b"}
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})


def _escape(ch: str) -> str:
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def shown(text: str) -> str:
    """`text` with every control, format (bidi overrides, zero-width), separator or unassigned character
    written as a Python-style escape; printable text is unchanged."""
    if text.isprintable():
        return text
    return "".join(_escape(ch) if unicodedata.category(ch) in _ESCAPED_CATEGORIES else ch for ch in text)
