"""maillog: one line per event, whatever a client put in the values (rule 2)."""

from __future__ import annotations

from pigeon.maillog import _quote


def test_plain_values_stay_bare() -> None:
    assert _quote("alice@example.test") == "alice@example.test"
    assert _quote(42) == "42"


def test_values_with_spaces_or_quotes_are_quoted() -> None:
    assert _quote('a "b" c') == '"a \\"b\\" c"'
    assert _quote("") == '""'


def test_line_breaks_and_controls_never_reach_the_log() -> None:
    for hostile in ("evil\r\nqueued", "a\u2028b", "a\u0085b", "a\x1bb", "a\u2029b", "a\x00b"):
        out = _quote(hostile)
        assert not any(c in out for c in "\r\n\u2028\u2029\u0085\x1b\x00"), repr(out)
    assert _quote("a\u2028b") == "a?b"
    assert _quote("évêque@exemple.test") == "évêque@exemple.test"  # UTF-8 addresses stay readable
