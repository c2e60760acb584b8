"""Sender binding and sending limits (pigeon.submission) against a real directory."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from pigeon.clocks import FakeClock
from pigeon.core.address import Address, parse_address
from pigeon.directory import Directory
from pigeon.submission.ratelimit import (
    C450_RATE_LIMITED,
    C450_TOO_MANY_RECIPIENTS,
    SendingLimits,
    SendingRateLimiter,
)
from pigeon.submission.sender import (
    C553_FROM_TOO_BIG,
    DirectorySenders,
    FromCollector,
    check_mail_from,
    may_send_as,
)

ALICE = "alice@example.org"


def A(text: str) -> Address:
    return parse_address(text, utf8=True)


@pytest.fixture(scope="module")
def directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Directory]:
    path = tmp_path_factory.mktemp("dir") / "directory.sqlite3"
    with Directory(path, ["example.org", "example.net"], None) as d:
        d.add_user(ALICE, "pw-alice-123")
        d.add_user("bob@example.org", "pw-bob-12345")
        d.add_alias("info@example.org", [ALICE])  # only alice
        d.add_alias("sales@example.org", ["Alice@example.org", "info@example.org"])  # alice via a chain
        d.add_alias("team@example.org", [ALICE, "bob@example.org"])  # shared
        d.add_alias("ext@example.org", [ALICE, "alice@elsewhere.example"])  # also goes outside
        d.add_alias("loop1@example.org", ["loop2@example.org"])
        d.add_alias("loop2@example.org", ["loop1@example.org", ALICE])
        d.add_alias("@example.net", [ALICE])  # a catch-all is never a sender identity
        yield d


class WithIdentities(DirectorySenders):
    """The directory plus the identities column the directory module will expose."""

    def __init__(self, directory: Directory, identities: dict[str, list[str]]) -> None:
        super().__init__(directory)
        self.identities = identities

    def sender_identities(self, user: str) -> Sequence[str]:
        return self.identities.get(user, [])


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("alice@example.org", True),
        ("Alice@EXAMPLE.org", True),  # rule 1: folded
        ("alice+lists@example.org", True),  # rule 2
        ("info@example.org", True),  # rule 3: an alias to her alone
        ("info+x@example.org", True),
        ("sales@example.org", True),  # through another alias that is hers
        ("team@example.org", False),  # shared with bob
        ("ext@example.org", False),  # also delivers outside
        ("loop1@example.org", False),  # a loop is not provably hers
        ("anything@example.net", False),  # the catch-all
        ("bob@example.org", False),
        ("bob+alice@example.org", False),
        ("alice@example.net", False),
        ("alice@elsewhere.example", False),
        ('"alice+x"@example.org', False),  # a quoted local part is never split
    ],
)
def test_may_send_as(directory: Directory, address: str, allowed: bool) -> None:
    assert may_send_as(ALICE, A(address), DirectorySenders(directory)) is allowed


def test_identities_exact_and_domain_wide(directory: Directory) -> None:
    senders = WithIdentities(directory, {ALICE: ["alice@elsewhere.example", "@alice.example"]})
    assert may_send_as(ALICE, A("alice@elsewhere.example"), senders)
    assert may_send_as(ALICE, A("Alice+tag@Elsewhere.example"), senders)
    assert may_send_as(ALICE, A("anyone@alice.example"), senders)
    assert not may_send_as(ALICE, A("anyone@sub.alice.example"), senders)
    assert not may_send_as("bob@example.org", A("anyone@alice.example"), senders)
    assert may_send_as(ALICE, A("x@example.org"), senders, delimiters="") is False
    assert may_send_as(ALICE, A("alice-x@example.org"), senders, delimiters="+-")


def test_mail_from_check(directory: Directory) -> None:
    senders = DirectorySenders(directory)
    assert check_mail_from(ALICE, A("alice@example.org"), senders) is None
    assert check_mail_from(ALICE, None, senders) is None  # rule 5: <>
    reply = check_mail_from(ALICE, A("bob@example.org"), senders)
    assert reply is not None
    assert reply.to_bytes() == b"553 5.7.1 Sender address <bob@example.org> not owned by alice@example.org\r\n"


def collect(message: bytes, chunk: int = 7) -> FromCollector:
    c = FromCollector()
    for i in range(0, len(message), chunk):
        c.feed(message[i:i + chunk])
    c.finish()
    return c


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        (b"From: Alice <alice@example.org>\r\n", True),
        (b"From: \"bob@example.org\" <alice@example.org>\r\n", True),  # display name is not checked
        (b"From: =?utf-8?q?Al=C3=AFce?= <alice+x@example.org>\r\n", True),
        (b"From: Alice\r\n <info@example.org>\r\n", True),  # folded
        (b"from: alice@example.org, info@example.org\r\n", True),
        (b"From: alice@example.org, bob@example.org\r\n", False),  # every author must be hers
        (b"From: alice@example.org\r\nSender: bob@example.org\r\n", False),
        (b"From: alice@example.org\r\nFrom: bob@example.org\r\n", False),
        (b"From: alice@example.org <bob@example.org>\r\n", False),  # ambiguous: refused
        (b"From: alice@example.org)<bob@example.org>\r\n", False),
        (b"From: undisclosed:;\r\n", False),
        (b"From: \r\n", False),
        (b"Subject: no from at all\r\n", True),
    ],
)
def test_from_header_check(directory: Directory, header: bytes, ok: bool) -> None:
    message = b"Received: x\r\nTo: bob@example.org\r\n" + header + b"\r\nFrom: bob@example.org in the body\r\n"
    reply = collect(message).check(ALICE, DirectorySenders(directory))
    if ok:
        assert reply is None
    else:
        assert reply is not None and reply.code == 553 and reply.enhanced == "5.7.1"


def test_from_header_naming_the_address_and_bounds(directory: Directory) -> None:
    reply = collect(b"From: bob@example.org\n\nbody\n").check(ALICE, DirectorySenders(directory))
    assert reply is not None and "<bob@example.org>" in str(reply.text)
    big = b"From: " + b"alice@example.org, " * 5000 + b"alice@example.org\r\n\r\n"
    assert collect(big, 4096).check(ALICE, DirectorySenders(directory)) == C553_FROM_TOO_BIG
    # A message that ends inside its header section is checked too.
    assert collect(b"From: bob@example.org").check(ALICE, DirectorySenders(directory)) is not None


def test_message_rate_limit_slides_over_the_hour() -> None:
    clock = FakeClock()
    limiter = SendingRateLimiter(SendingLimits(messages_per_hour=3), clock)
    for _ in range(3):
        assert limiter.check_message(ALICE) is None
        limiter.record_message(ALICE)
        clock.advance(600)
    assert limiter.check_message("Alice@example.org") == C450_RATE_LIMITED
    assert C450_RATE_LIMITED.to_bytes().startswith(b"450 4.7.1 ")
    assert limiter.check_message("bob@example.org") is None  # per user
    clock.advance(1800)  # the first message (sent at 0 s) is now an hour old
    assert limiter.check_message(ALICE) is None


def test_recipient_limit_and_unlimited() -> None:
    limiter = SendingRateLimiter(SendingLimits(recipients_per_message=2), FakeClock())
    assert limiter.check_recipient(0) is None and limiter.check_recipient(1) is None
    assert limiter.check_recipient(2) == C450_TOO_MANY_RECIPIENTS
    free = SendingRateLimiter(SendingLimits(messages_per_hour=0, recipients_per_message=0), FakeClock())
    for _ in range(1000):
        free.record_message(ALICE)
    assert free.check_message(ALICE) is None and free.check_recipient(10**6) is None
    assert free.users_tracked() == 0
    with pytest.raises(ValueError):
        SendingLimits(messages_per_hour=-1).validate()


def test_rate_limiter_memory_is_bounded() -> None:
    clock = FakeClock()
    limiter = SendingRateLimiter(SendingLimits(messages_per_hour=5, max_users=100), clock)
    for i in range(1000):
        for _ in range(10):
            limiter.record_message(f"user{i}@example.org")
    assert limiter.users_tracked() == 100
    clock.advance(3600)
    assert limiter.check_message("user999@example.org") is None
    assert limiter.users_tracked() == 99  # the stale entry went when it was looked at
