"""POP3 logins: USER/PASS (RFC 1939 §7) and AUTH (RFC 5034) mapped onto ``auth.Authenticator``.

Rules:
1. Passwords travel in clear in USER/PASS, PLAIN and LOGIN, so all of them are refused until
   the channel is protected: after STLS or on pop3s, or on loopback when ``[auth]
   allow_plaintext_on_loopback`` is set (``auth.sasl.plaintext_allowed``; RFC 2595 §2.2,
   RFC 8314). USER is refused then (so no password follows), with the reason in the text.
2. Every verification goes through ``Authenticator.verify``: the brute-force throttle shared
   with SMTP and IMAP, argon2 off the event loop, the failure delay before answering.
3. ``auth.sasl``'s ``AuthFailure`` in POP3's words (RFC 2449 §8, RFC 3206): wrong credentials
   ``-ERR [AUTH]``; directory unavailable ``-ERR [SYS/TEMP]``; throttled ``-ERR [SYS/TEMP]`` and
   the connection is closed; encryption required, unknown mechanism, malformed or cancelled
   exchange plain ``-ERR``.
4. A SASL challenge is sent as ``+ base64`` (RFC 5034 §4); ``*`` cancels. A bare ``AUTH`` lists
   the mechanisms usable now (the pre-RFC 5034 listing fetchmail and Outlook ask for).
5. A successful verification only names the account: opening (and locking) the maildrop is the
   session's job, which then answers ``+OK`` or ``-ERR [IN-USE]``/``[SYS/TEMP]``.
6. Nothing here logs a password or a SASL payload; ``auth.sasl`` logs the login outcome.

What can go wrong: nothing raises; every problem is a response (the Authenticator never raises).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pigeon.auth.sasl import (
    AuthFailure,
    Authenticator,
    AuthOutcome,
    Challenge,
    Credentials,
    Failure,
    SaslExchange,
    Step,
)
from pigeon.proto.pop3 import events as ev
from pigeon.proto.pop3.responses import (
    ERR_AUTH_CANCELLED,
    ERR_AUTH_FAILED,
    ERR_AUTH_MALFORMED,
    ERR_AUTH_MECHANISM,
    ERR_SYS_TEMP,
    ERR_THROTTLED,
    ERR_TLS_REQUIRED,
    AnyResponse,
    Continuation,
    MultiLine,
    Response,
)

log = logging.getLogger(__name__)

# Rule 3: each AuthFailure as a POP3 response.
FAILURE_RESPONSES: dict[AuthFailure, AnyResponse] = {
    AuthFailure.THROTTLED: ERR_THROTTLED,
    AuthFailure.UNAVAILABLE: ERR_SYS_TEMP,
    AuthFailure.MECHANISM: ERR_AUTH_MECHANISM,
    AuthFailure.ENCRYPTION_REQUIRED: ERR_TLS_REQUIRED,
    AuthFailure.CANCELLED: ERR_AUTH_CANCELLED,
    AuthFailure.BAD_BASE64: ERR_AUTH_MALFORMED,
    AuthFailure.MALFORMED: ERR_AUTH_MALFORMED,
    AuthFailure.BAD_CREDENTIALS: ERR_AUTH_FAILED,
}


@dataclass(frozen=True, slots=True)
class LoginResult:
    """What to answer; ``user`` set when the credentials were verified (rule 5)."""

    response: AnyResponse
    user: str | None = None
    close: bool = False


def failure_result(failure: AuthFailure) -> LoginResult:
    return LoginResult(FAILURE_RESPONSES[failure], close=failure.close)


def _outcome(outcome: AuthOutcome) -> LoginResult:
    if isinstance(outcome, Failure):
        return failure_result(outcome.kind)
    return LoginResult(Response(True, "Logged in"), user=outcome.user)


class Pop3Login:
    """The login steps of one session, in AUTHORIZATION state."""

    def __init__(self, authenticator: Authenticator, ip: str) -> None:
        self.authenticator = authenticator
        self.ip = ip
        self._user: str | None = None
        self._exchange: SaslExchange | None = None

    async def handle(self, event: ev.User | ev.Pass | ev.Auth | ev.AuthResponse, secure: bool) -> LoginResult:
        """``secure``: ``plaintext_allowed(...)`` for this connection now (rule 1)."""
        match event:
            case ev.User(name=name):
                self._user = None
                if not secure:
                    return LoginResult(ERR_TLS_REQUIRED)
                self._user = name
                return LoginResult(Response(True, "Send your password"))
            case ev.Pass(password=password):
                user, self._user = self._user, None
                if user is None or not secure:  # the core lets PASS through only after +OK to USER
                    return LoginResult(ERR_TLS_REQUIRED)
                return _outcome(await self.authenticator.verify(Credentials(user, password), self.ip))
            case ev.Auth(mechanism=""):
                mechanisms = self.authenticator.mechanisms(secure)
                return LoginResult(MultiLine.of_lines(Response(True, "Mechanisms follow"), mechanisms))
            case ev.Auth(mechanism=mechanism, initial=initial):
                exchange, step = self.authenticator.begin(mechanism, initial, secure=secure, ip=self.ip)
                self._exchange = exchange
                return await self._step(step)
            case ev.AuthResponse(line=line):
                if self._exchange is None or self._exchange.done:  # pragma: no cover - the core prevents it
                    return LoginResult(ERR_AUTH_CANCELLED)
                return await self._step(self._exchange.respond(line))
        return LoginResult(ERR_AUTH_FAILED)  # pragma: no cover - exhaustive match above

    async def _step(self, step: Step) -> LoginResult:
        if isinstance(step, Challenge):
            return LoginResult(Continuation(step.text))  # rule 4
        self._exchange = None
        if isinstance(step, Failure):
            return failure_result(step.kind)
        return _outcome(await self.authenticator.verify(step, self.ip))
