"""LOGIN and AUTHENTICATE (RFC 3501 §6.2.2-3, RFC 4959 SASL-IR) over ``auth.Authenticator``.

Rules:
1. Passwords travel in clear in LOGIN, PLAIN and LOGIN-mechanism exchanges, so they are refused
   until the channel is protected (TLS, or loopback with ``[auth] allow_plaintext_on_loopback``):
   ``NO [PRIVACYREQUIRED]`` (RFC 5530 §3), and CAPABILITY says LOGINDISABLED (RFC 3501 §6.2.3).
2. Every verification goes through ``Authenticator.verify`` (the brute-force throttle shared
   with SMTP and POP3, argon2 off the loop, the failure delay before answering).
3. ``auth.sasl``'s ``AuthFailure`` in IMAP's words, with RFC 5530 codes: wrong credentials
   ``NO [AUTHENTICATIONFAILED]``; directory unavailable ``NO [UNAVAILABLE]``; throttled ``* BYE``
   and the connection is closed; unknown mechanism ``NO``; encryption required
   ``NO [PRIVACYREQUIRED]``; malformed or cancelled exchange ``BAD``.
4. SASL challenges are ``+ base64`` (RFC 3501 §7.5); ``*`` cancels (RFC 3501 §6.2.2).
5. After a verified login the account is opened in a worker thread; a store failure there is
   ``NO [UNAVAILABLE]`` and the session stays unauthenticated.
6. Nothing here logs a password or a SASL payload.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from pigeon.auth.sasl import AuthFailure, AuthOutcome, Credentials, Failure
from pigeon.core.address import parse_address
from pigeon.imapd.replies import Done, SessionEnd, bad, no
from pigeon.proto.imap import commands as c
from pigeon.proto.imap import serialize

if TYPE_CHECKING:
    from pigeon.imapd.session import ImapSession

log = logging.getLogger(__name__)

def _failure(failure: AuthFailure) -> Done:
    """Rule 3."""
    match failure:
        case AuthFailure.THROTTLED:
            raise SessionEnd("Too many failed logins, try again later", "UNAVAILABLE")
        case AuthFailure.UNAVAILABLE:
            return no("Temporary authentication failure", "UNAVAILABLE")
        case AuthFailure.MECHANISM:
            return no("Unsupported authentication mechanism")
        case AuthFailure.ENCRYPTION_REQUIRED:
            return no("Use STARTTLS or the imaps port first", "PRIVACYREQUIRED")
        case AuthFailure.CANCELLED:
            return bad("Authentication cancelled")
        case AuthFailure.BAD_BASE64 | AuthFailure.MALFORMED:
            return bad("Malformed authentication data")
        case AuthFailure.BAD_CREDENTIALS:
            return no("Authentication failed", "AUTHENTICATIONFAILED")


async def _finish(s: ImapSession, outcome: AuthOutcome) -> Done:
    if isinstance(outcome, Failure):
        return _failure(outcome.kind)
    user = outcome.user
    try:
        address = parse_address(user, utf8=True)
        account = await asyncio.to_thread(s.ctx.store.account, address)
    except Exception:  # rule 5
        log.exception("imap: cannot open the mailboxes of %s client=%s", user, s.stream.peer_ip)
        return no("Mailboxes temporarily unavailable", "UNAVAILABLE")
    log.info("imap: login user=%s client=%s", user, s.stream.peer_ip)
    return s.logged_in(user, account)


async def login(s: ImapSession, cmd: c.Login) -> Done:
    if not s.secure():  # rule 1
        return no("LOGIN is disabled before STARTTLS", "PRIVACYREQUIRED")
    return await _finish(s, await s.ctx.authenticator.verify(Credentials(cmd.username, cmd.password),
                                                             s.stream.peer_ip))


async def authenticate(s: ImapSession, cmd: c.Authenticate) -> Done:
    authenticator = s.ctx.authenticator
    ip = s.stream.peer_ip
    exchange, step = authenticator.begin(cmd.mechanism, cmd.initial_response, secure=s.secure(), ip=ip)
    while True:
        if isinstance(step, Failure):
            return _failure(step.kind)
        if isinstance(step, Credentials):
            return await _finish(s, await authenticator.verify(step, ip))
        if exchange is None:  # pragma: no cover - begin() returns an exchange with a challenge
            return no("Authentication failed", "AUTHENTICATIONFAILED")
        s.emit(serialize.continuation(step.text) if step.text else b"+ \r\n")  # rule 4
        line = await s.read_line()
        if line is None:
            raise ConnectionResetError("closed during AUTHENTICATE")
        try:
            text = line.decode("ascii")
        except UnicodeDecodeError:
            return bad("Malformed authentication data")
        step = exchange.respond(text)
