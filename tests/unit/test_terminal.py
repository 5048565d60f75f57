"""Keys printed to a terminal: control characters as escapes, printable text unchanged."""

from __future__ import annotations

from engine.terminal import shown


def test_control_characters_are_escaped_and_printable_text_is_kept() -> None:
    assert shown("photos/été 2024/a b.jpg") == "photos/été 2024/a b.jpg"
    assert shown("bad\x1b[31mred\nfailed: fake/line: everything fine") == \
        "bad\\x1b[31mred\\nfailed: fake/line: everything fine"
    assert shown("a\rb\tc\x00d\x7fe\x9bf") == "a\\rb\\tc\\x00d\\x7fe\\x9bf"
    assert shown("rtl\u202eevil\u2028x") == "rtl\\u202eevil\\u2028x"
    assert "\n" not in shown("\n" * 3) and "\x1b" not in shown("\x1b]0;title\x07")
