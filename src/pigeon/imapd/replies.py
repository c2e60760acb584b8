"""Tagged completions as values, and the mapping of store errors onto IMAP response codes.

Rules:
1. A command handler returns one ``Done``; the session writes it as ``tag STATUS [CODE] text``
   after the untagged responses (RFC 3501 §7.1).
2. ``MailboxError.code`` is already an RFC 5530 / RFC 6154 response code; APPEND, COPY and MOVE
   to a missing mailbox answer ``NO [TRYCREATE]`` instead (RFC 3501 §6.3.11, §6.4.7).
3. An unexpected error is logged by the session and answered ``NO [SERVERBUG]`` (RFC 5530 §3);
   the session goes on.
4. ``SessionEnd`` makes the session write ``* BYE text`` and close (RFC 3501 §7.1.5); it is the
   session driver's ``Hangup`` (``net.driver`` rule 6).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pigeon.net.driver import Hangup
from pigeon.proto.imap import serialize
from pigeon.store.mailbox import MailboxError


@dataclass(frozen=True, slots=True)
class Done:
    status: Literal["OK", "NO", "BAD"]
    text: str
    code: str | None = None


def ok(text: str, code: str | None = None) -> Done:
    return Done("OK", text, code)


def no(text: str, code: str | None = None) -> Done:
    return Done("NO", text, code)


def bad(text: str, code: str | None = None) -> Done:
    return Done("BAD", text, code)


def mailbox_error(exc: MailboxError, trycreate: bool = False) -> Done:
    """Rule 2."""
    if trycreate and exc.code == "NONEXISTENT":
        return no(exc.text, "TRYCREATE")
    return no(exc.text, exc.code)


SERVERBUG = no("Internal error, see the server log", "SERVERBUG")  # rule 3
READ_ONLY = no("Mailbox is read-only", "READ-ONLY")  # RFC 3501 §7.1 READ-ONLY


class SessionEnd(Hangup):
    """Rule 4: the session driver writes what is pending, then ``* BYE``, and closes."""

    def __init__(self, text: str, code: str | None = None) -> None:
        super().__init__(serialize.untagged_status("BYE", text, code), text)
        self.text = text
        self.code = code
