"""SMTP AUTH's replies for the protocol-neutral outcomes of auth.sasl (pigeon.smtpd.auth)."""

from __future__ import annotations

import pytest

from pigeon.auth.sasl import AuthFailure, Challenge
from pigeon.smtpd.auth import FAILURE_REPLIES, SUCCESS, challenge_reply, failure_reply


def test_every_failure_has_a_reply() -> None:  # rule 3
    assert set(FAILURE_REPLIES) == set(AuthFailure)


@pytest.mark.parametrize(
    ("failure", "wire"),
    [  # RFC 4954 §4, §6
        (AuthFailure.MECHANISM, b"504 5.5.4 Unrecognized authentication mechanism\r\n"),
        (AuthFailure.ENCRYPTION_REQUIRED, b"538 5.7.11 Encryption required for requested authentication mechanism\r\n"),
        (AuthFailure.CANCELLED, b"501 5.0.0 Authentication cancelled\r\n"),
        (AuthFailure.BAD_BASE64, b"501 5.5.2 Cannot decode the authentication response\r\n"),
        (AuthFailure.MALFORMED, b"501 5.5.2 Malformed authentication response\r\n"),
        (AuthFailure.BAD_CREDENTIALS, b"535 5.7.8 Authentication credentials invalid\r\n"),
        (AuthFailure.UNAVAILABLE, b"454 4.7.0 Temporary authentication failure\r\n"),
        (AuthFailure.THROTTLED, b"421 4.7.0 Too many authentication failures, try again later\r\n"),
    ],
)
def test_failure_replies_byte_for_byte(failure: AuthFailure, wire: bytes) -> None:
    assert failure_reply(failure).to_bytes() == wire
    # the session closes exactly after the one reply that says so (421, RFC 5321 §3.8)
    assert failure.close == (failure_reply(failure).code == 421)


def test_success_and_challenges() -> None:
    assert SUCCESS.to_bytes() == b"235 2.7.0 Authentication successful\r\n"
    assert challenge_reply(Challenge("")).to_bytes() == b"334 \r\n"  # RFC 4954 §4
    assert challenge_reply(Challenge("VXNlcm5hbWU6")).to_bytes() == b"334 VXNlcm5hbWU6\r\n"  # no enhanced code
