"""RFC 3464 fields of the delivery-status part (pigeon.bounce.fields) and NOTIFY (dsn)."""

from __future__ import annotations

import pytest

from pigeon.bounce.dsn import wants_notice
from pigeon.bounce.fields import (
    MAX_DIAGNOSTIC,
    RecipientReport,
    delivery_status,
    fold,
    recipient_fields,
    remote_mta,
    report_for,
    status_of,
)
from pigeon.proto.message.date import rfc5322_date
from pigeon.core.address import Address
from pigeon.queue.record import Attempt, RcptState

BOB = Address("bob", "example.net")
TEAM = Address("team", "example.net")
T0 = 1_800_000_000.0


@pytest.mark.parametrize(
    ("reply", "action", "status"),
    [
        ("550 5.1.1 User unknown", "failed", "5.1.1"),
        ("554 5.4.7 Delivery time expired", "failed", "5.4.7"),
        ("550 User unknown", "failed", "5.0.0"),  # no enhanced code: the reply's class
        ("550 4.1.1 mismatched class", "failed", "5.0.0"),  # enhanced class must match
        ("451 4.4.1 no answer", "failed", "4.4.1"),  # persistent transient failure
        ("", "failed", "5.0.0"),
        ("garbage", "failed", "5.0.0"),
        ("451 4.4.1 no answer", "delayed", "4.4.1"),
        ("550 5.1.1 User unknown", "delayed", "4.0.0"),  # delayed is always 4.X.X
        ("250 2.0.0 Ok: queued", "delivered", "2.0.0"),
        ("250 2.1.5 Ok", "relayed", "2.1.5"),
        ("", "delivered", "2.0.0"),
        ("250-2.6.0 first line", "delivered", "2.6.0"),
    ],
)
def test_status_from_reply_and_action(reply: str, action: str, status: str) -> None:
    assert status_of(reply, action) == status  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("host", "mta"),
    [
        ("mx.example.net[192.0.2.1]:25", "mx.example.net"),
        ("mx.example.net.[192.0.2.1]", "mx.example.net"),
        ("mx.example.net", "mx.example.net"),
        ("[192.0.2.9]:25", "[192.0.2.9]"),
        ("local", None),
        ("", None),
        ("bad host name", None),
    ],
)
def test_remote_mta_from_attempt_host(host: str, mta: str | None) -> None:
    assert remote_mta(host) == mta


def test_recipient_fields_byte_exact() -> None:
    r = RecipientReport(BOB, TEAM, "rfc822;Team@Example.net", "failed", "5.1.1",
                        "550 5.1.1 <bob@example.net>: User unknown", "mx.example.net", T0)
    assert recipient_fields(r, utf8=False) == (
        "Original-Recipient: rfc822; Team@Example.net\r\n"
        "Final-Recipient: rfc822; bob@example.net\r\n"
        "Action: failed\r\n"
        "Status: 5.1.1\r\n"
        "Remote-MTA: dns; mx.example.net\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 <bob@example.net>: User unknown\r\n"
        f"Last-Attempt-Date: {rfc5322_date(T0)}\r\n"
    )


def test_no_original_recipient_without_orcpt() -> None:
    # RFC 3461 §6.3 (d): Original-Recipient only from ORCPT, even when an alias was expanded.
    r = RecipientReport(BOB, TEAM, None, "failed", "5.1.1", "550 5.1.1 no", None, None)
    text = recipient_fields(r, utf8=False)
    assert "Original-Recipient" not in text
    assert "Remote-MTA" not in text and "Last-Attempt-Date" not in text
    assert text.startswith("Final-Recipient: rfc822; bob@example.net\r\n")


def test_delayed_recipient_has_will_retry_until() -> None:
    rcpt = RcptState(BOB, BOB, status="deferred",
                     attempts=[Attempt(T0 + 60, "mx.example.net[192.0.2.1]:25", "451 4.7.1 greylisted")],
                     last_reply="451 4.7.1 greylisted")
    report = report_for(rcpt, "delayed", T0 + 5 * 86400)
    assert report.status == "4.7.1" and report.remote_mta == "mx.example.net"
    text = recipient_fields(report, utf8=False)
    assert f"Will-Retry-Until: {rfc5322_date(T0 + 5 * 86400)}\r\n" in text
    assert f"Last-Attempt-Date: {rfc5322_date(T0 + 60)}\r\n" in text
    # a failed recipient never says when it will be retried
    assert report_for(rcpt, "failed", T0 + 5 * 86400).will_retry_until is None


def test_message_fields_with_envid() -> None:
    text = delivery_status("mx.example.net", T0, "QQ314159", "0123456789ABCDEF", [], utf8=False)
    assert text == (
        "Reporting-MTA: dns; mx.example.net\r\n"
        "X-Pigeon-Queue-ID: 0123456789ABCDEF\r\n"
        "Original-Envelope-Id: QQ314159\r\n"
        f"Arrival-Date: {rfc5322_date(T0)}\r\n"
    )
    assert "Original-Envelope-Id" not in delivery_status("h", T0, None, "0123456789ABCDEF", [], False)


def test_long_and_hostile_diagnostic_is_cleaned_capped_and_folded() -> None:
    reply = "550 5.7.1 " + "word " * 1000 + "\r\nInjected: header\x00"
    r = RecipientReport(BOB, BOB, None, "failed", "5.7.1", reply, None, None)
    text = recipient_fields(r, utf8=False)
    lines = text.split("\r\n")
    assert lines[-1] == ""
    assert all(len(line) <= 78 for line in lines)
    assert not any(line.startswith("Injected:") for line in lines)
    diag = text[text.index("Diagnostic-Code:"):].replace("\r\n ", " ")
    assert len(diag) < MAX_DIAGNOSTIC + 40


def test_unbreakable_word_stays_under_998() -> None:
    r = RecipientReport(BOB, BOB, None, "failed", "5.0.0", "550 " + "x" * 5000, None, None)
    assert all(len(line) <= 998 for line in recipient_fields(r, utf8=False).split("\r\n"))


def test_utf8_addresses_in_global_and_plain_reports() -> None:
    user = Address("用户", "例子.广告")
    r = RecipientReport(user, user, "utf-8;用户@例子.广告", "failed", "5.1.1", "550 5.1.1 nope", None, None)
    glob = recipient_fields(r, utf8=True)
    assert "Final-Recipient: utf-8; 用户@例子.广告\r\n" in glob  # RFC 6533 §3
    assert "Original-Recipient: utf-8; 用户@例子.广告\r\n" in glob
    plain = recipient_fields(r, utf8=False)
    assert plain.isascii()  # RFC 3464 §2.1: message/delivery-status is 7-bit


def test_fold_keeps_short_values_on_one_line() -> None:
    assert fold("Action", "failed") == "Action: failed\r\n"


@pytest.mark.parametrize(
    ("notify", "kind", "wanted"),
    [
        ((), "failure", True),  # RFC 3461 §4.1: absent means FAILURE,DELAY
        ((), "delay", True),
        ((), "success", False),
        (("NEVER",), "failure", False),
        (("NEVER",), "delay", False),
        (("SUCCESS",), "failure", False),
        (("SUCCESS",), "success", True),
        (("FAILURE",), "delay", False),
        (("FAILURE", "DELAY"), "delay", True),
        (("failure",), "failure", True),  # case-insensitive
    ],
)
def test_notify_decides(notify: tuple[str, ...], kind: str, wanted: bool) -> None:
    assert wants_notice(notify, kind) is wanted  # type: ignore[arg-type]
