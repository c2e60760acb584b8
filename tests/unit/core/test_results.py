"""Per-recipient results, the service-layer errors and the Reply value (pigeon.core)."""

from __future__ import annotations

import pytest

from pigeon.core.address import Address
from pigeon.core.reply import Reply
from pigeon.core.results import MailError, PermanentError, RecipientResult, TemporaryError

BOB = Address("bob", "example.com")
OK = Reply(250, "2.0.0", "delivered")
LATER = Reply(451, "4.3.0", "try later")
NEVER = Reply(550, "5.1.1", "no such user")


@pytest.mark.parametrize(("status", "final"), [("delivered", True), ("failed", True), ("deferred", False)])
def test_only_deferred_is_not_final(status: str, final: bool) -> None:  # rule 2
    r = RecipientResult(BOB, status, OK)  # type: ignore[arg-type]
    assert r.final is final and r.host == ""


def test_mail_errors_carry_their_reply() -> None:
    e = TemporaryError(LATER)
    assert isinstance(e, MailError) and e.reply == LATER and str(e) == "451 4.3.0 try later"
    p = PermanentError(NEVER, "bob is gone")
    assert p.reply == NEVER and str(p) == "bob is gone"
    assert not issubclass(TemporaryError, PermanentError) and not issubclass(PermanentError, TemporaryError)


@pytest.mark.parametrize(
    ("code", "positive", "transient", "permanent"),
    [(199, False, False, False), (200, True, False, False), (354, True, False, False),
     (399, True, False, False), (400, False, True, False), (499, False, True, False),
     (500, False, False, True), (554, False, False, True)],
)
def test_reply_classes(code: int, positive: bool, transient: bool, permanent: bool) -> None:
    r = Reply(code, "", "x")
    assert (r.is_positive, r.is_transient, r.is_permanent) == (positive, transient, permanent)


def test_reply_lines_and_rendering() -> None:
    assert Reply(250, "2.0.0", "OK").lines == ("OK",)
    assert Reply(250, "2.0.0", ()).lines == ("",)
    two = Reply(550, "5.1.1", ("one", "two"))
    assert two.to_bytes() == b"550-5.1.1 one\r\n550 5.1.1 two\r\n"  # RFC 2034 §3: each line
    assert str(two) == "550 5.1.1 one 550 5.1.1 two"
    assert Reply(250, "2.0.0", "").to_bytes() == b"250 2.0.0\r\n"
    assert Reply(220, "", "ready").to_bytes() == b"220 ready\r\n"  # no enhanced code


def test_reply_text_cannot_break_the_line() -> None:  # rule 3
    r = Reply(550, "5.7.1", "evil\r\n250 OK\rmore\nend")
    assert r.to_bytes() == b"550 5.7.1 evil  250 OK more end\r\n"
    assert r.to_bytes().count(b"\r\n") == 1


def test_with_text_keeps_the_codes() -> None:
    r = NEVER.with_text("bob@example.com: no such user")
    assert (r.code, r.enhanced, r.text) == (550, "5.1.1", "bob@example.com: no such user")
    assert NEVER.text == "no such user"  # values: the original is unchanged
