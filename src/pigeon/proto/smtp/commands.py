"""Server side: one command line → the verb and a command event, or the reply refusing it.

Rules:
1. A command line is at most ``max_command_line`` octets including CRLF (RFC 5321 §4.5.3.1.4);
   the caller enforces the length. Here: a line ends in CRLF or, tolerated, a bare LF; a CR or NUL
   inside it, invalid UTF-8, or an empty line → ``500 5.5.2``.
2. Verbs are case-insensitive (RFC 5321 §2.4), in ASCII only: ``str.upper`` would turn
   "ſtarttlſ" into STARTTLS and "quıt" into QUIT, a verb that a filter in front of us would not
   recognise; such a verb is unknown. The same holds for ``LAST`` and SASL mechanism names.
   Unknown → ``500 5.5.2``; known but not offered (TURN, ETRN, ...) → ``502 5.5.1``.
3. Argument syntax is checked here; the sequence (which command is allowed when) is the server's
   table, checked before this parsing.

What can go wrong: every problem raises ``ParamError`` with the reply; nothing else is raised.
"""

from __future__ import annotations

import re

from pigeon.proto.smtp.events import (
    Auth,
    Bdat,
    Command,
    Data,
    Ehlo,
    Expn,
    Helo,
    Help,
    MailFrom,
    Noop,
    Quit,
    RcptTo,
    Rset,
    StartTls,
    Vrfy,
)
from pigeon.proto.smtp.params import ParamError, ascii_upper, parse_mail_args, parse_rcpt_args
from pigeon.proto.smtp.reply import (
    C421_BDAT_SYNTAX,
    C500_BAD_COMMAND_ENCODING,
    C500_UNRECOGNIZED,
    C501_SYNTAX_PARAMS,
    C502_NOT_IMPLEMENTED,
)

KNOWN_VERBS = frozenset(
    {"HELO", "EHLO", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "NOOP", "QUIT", "VRFY", "EXPN", "HELP",
     "STARTTLS", "AUTH"}
)
#: Real SMTP verbs Pigeon does not offer (RFC 5321 §4.1.1, RFC 1985, RFC 2645, RFC 4468 ...).
NOT_OFFERED = frozenset(
    {"TURN", "ETRN", "ATRN", "SEND", "SOML", "SAML", "VERB", "ONEX", "BURL", "XCLIENT", "XFORWARD",
     "XEXCH50", "X-EXPS", "X-LINK2STATE"}
)
#: Web requests sent to a mail port (Postfix smtpd_forbidden_commands): close at once.
FORBIDDEN = frozenset({"GET", "POST", "PUT", "HEAD", "CONNECT", "OPTIONS"})

MAX_BDAT_DIGITS = 20  # RFC 3030 §2: chunk-size = 1*DIGIT; 20 digits already exceed any real size
_SASL_MECH = re.compile(r"^[A-Z0-9_-]{1,20}$")  # RFC 4422 §3.1: 1-20 chars of [A-Z0-9-_]


class BdatSyntaxError(ParamError):
    """BDAT with a size we cannot read: the octets that follow cannot be skipped (RFC 3030 §2),
    so the reply is a 421 and the server closes the channel."""

    def __init__(self) -> None:
        super().__init__(C421_BDAT_SYNTAX)


def decode_line(line: bytes) -> tuple[str, bool]:
    """Strip the line end; return (text, ended_with_crlf). Raises ParamError."""
    crlf = line.endswith(b"\r\n")
    body = line[:-2] if crlf else line.rstrip(b"\n")
    if b"\r" in body or b"\x00" in body:
        raise ParamError(C500_UNRECOGNIZED.with_text("Bare CR or NUL in command line"))
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ParamError(C500_BAD_COMMAND_ENCODING) from None
    if not text.strip(" "):
        raise ParamError(C500_UNRECOGNIZED.with_text("Empty command line"))
    return text, crlf


def split_verb(text: str) -> tuple[str, str]:
    verb, _, arg = text.lstrip(" ").partition(" ")
    return ascii_upper(verb), arg  # rule 2


def parse_bdat(arg: str) -> Bdat:
    """``BDAT <size> [LAST]`` (RFC 3030 §2)."""
    words = arg.split()
    if not 1 <= len(words) <= 2 or not words[0].isascii() or not words[0].isdigit():
        raise BdatSyntaxError()
    if len(words[0]) > MAX_BDAT_DIGITS:
        raise BdatSyntaxError()
    if len(words) == 2 and ascii_upper(words[1]) != "LAST":
        raise BdatSyntaxError()
    return Bdat(int(words[0]), len(words) == 2)


def _no_arg(arg: str, event: Command) -> Command:
    if arg.strip(" "):
        raise ParamError(C501_SYNTAX_PARAMS.with_text("This command takes no argument"))
    return event


def _need_arg(arg: str) -> str:
    arg = arg.strip(" ")
    if not arg:
        raise ParamError(C501_SYNTAX_PARAMS.with_text("Argument required"))
    return arg


def _after_keyword(arg: str, keyword: str) -> str:
    """``FROM:<x>`` → ``<x>`` (case-insensitive keyword, spaces tolerated around it)."""
    a = arg.lstrip(" ")
    if a[: len(keyword)].upper() != keyword:
        raise ParamError(C501_SYNTAX_PARAMS.with_text(f"Syntax: {keyword}<address>"))
    return a[len(keyword) :]


def parse_command(
    verb: str,
    arg: str,
    *,
    esmtp: bool,
    offered: frozenset[str],
    max_message_size: int,
    smtputf8: bool,
    postmaster_domain: str,
) -> Command:
    """Parse the argument of ``verb`` (upper-cased, known) into its event."""
    if verb == "HELO":
        return Helo(_need_arg(arg).split(" ")[0])
    if verb == "EHLO":
        return Ehlo(_need_arg(arg).split(" ")[0])
    if verb == "MAIL":
        m = parse_mail_args(
            _after_keyword(arg, "FROM:"), esmtp=esmtp, offered=offered, max_message_size=max_message_size
        )
        return MailFrom(m.sender, m.params)
    if verb == "RCPT":
        r = parse_rcpt_args(
            _after_keyword(arg, "TO:"),
            esmtp=esmtp,
            offered=offered,
            smtputf8=smtputf8,
            postmaster_domain=postmaster_domain,
        )
        return RcptTo(r.recipient, r.notify, r.orcpt, r.raw_params)
    if verb == "DATA":
        return _no_arg(arg, Data())
    if verb == "BDAT":
        return parse_bdat(arg)
    if verb == "RSET":
        return _no_arg(arg, Rset())
    if verb == "NOOP":
        return Noop()  # RFC 5321 §4.1.1.9: any parameter string is ignored
    if verb == "QUIT":
        return _no_arg(arg, Quit())
    if verb == "VRFY":
        return Vrfy(_need_arg(arg))
    if verb == "EXPN":
        return Expn(_need_arg(arg))
    if verb == "HELP":
        return Help(arg.strip(" "))
    if verb == "STARTTLS":
        return _no_arg(arg, StartTls())  # RFC 3207 §4: no parameters
    if verb == "AUTH":
        words = arg.split()
        if not 1 <= len(words) <= 2 or not _SASL_MECH.match(ascii_upper(words[0])):
            raise ParamError(C501_SYNTAX_PARAMS.with_text("Syntax: AUTH mechanism [initial-response]"))
        initial = None
        if len(words) == 2:
            initial = "" if words[1] == "=" else words[1]  # RFC 4954 §4: "=" is an empty response
        return Auth(ascii_upper(words[0]), initial)
    raise ParamError(C502_NOT_IMPLEMENTED)
