"""POP3's words for the protocol-neutral outcomes of auth.sasl (pigeon.pop3d.login, rule 3)."""

from __future__ import annotations

import pytest

from pigeon.auth.sasl import AuthFailure
from pigeon.pop3d.login import FAILURE_RESPONSES, failure_result
from pigeon.proto.pop3.responses import (
    ERR_AUTH_CANCELLED,
    ERR_AUTH_FAILED,
    ERR_AUTH_MALFORMED,
    ERR_AUTH_MECHANISM,
    ERR_SYS_TEMP,
    ERR_THROTTLED,
    ERR_TLS_REQUIRED,
)


def test_every_failure_has_a_response() -> None:
    assert set(FAILURE_RESPONSES) == set(AuthFailure)


@pytest.mark.parametrize(
    ("failure", "response", "close"),
    [
        (AuthFailure.BAD_CREDENTIALS, ERR_AUTH_FAILED, False),  # -ERR [AUTH] (RFC 3206 §4)
        (AuthFailure.UNAVAILABLE, ERR_SYS_TEMP, False),  # -ERR [SYS/TEMP] (RFC 3206 §5)
        (AuthFailure.THROTTLED, ERR_THROTTLED, True),
        (AuthFailure.ENCRYPTION_REQUIRED, ERR_TLS_REQUIRED, False),
        (AuthFailure.MECHANISM, ERR_AUTH_MECHANISM, False),
        (AuthFailure.CANCELLED, ERR_AUTH_CANCELLED, False),
        (AuthFailure.BAD_BASE64, ERR_AUTH_MALFORMED, False),
        (AuthFailure.MALFORMED, ERR_AUTH_MALFORMED, False),
    ],
)
def test_failure_responses(failure: AuthFailure, response: object, close: bool) -> None:
    result = failure_result(failure)
    assert result.response == response and result.close is close and result.user is None
