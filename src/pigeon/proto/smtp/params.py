"""Parsing the arguments of MAIL FROM and RCPT TO: paths, ESMTP parameters, xtext.

Rules:
1. ``MAIL FROM:<path> [params]`` and ``RCPT TO:<path> [params]`` (RFC 5321 §4.1.1.2, §4.1.1.3).
   The verb and ``FROM:``/``TO:`` are case-insensitive; spaces after the colon are tolerated
   (as Postfix does). A path without angle brackets is tolerated when it has no spaces.
2. ``<>`` is the null reverse path (MAIL only). Source routes ``<@a,@b:user@d>`` are accepted and
   their route stripped (RFC 5321 §4.1.1.3, Appendix C). ``RCPT TO:<Postmaster>`` without a domain
   is accepted (RFC 5321 §4.1.1.3) and mapped to the caller's ``postmaster_domain``.
3. Addresses go through ``parse_address(text, utf8=smtputf8)``; failure → ``501 5.1.3``.
   Non-ASCII in a path without SMTPUTF8 → ``553 5.6.7`` (RFC 6531 §3.5, RFC 5248 X.6.7
   "Non-ASCII addresses not permitted for that sender/recipient").
4. ESMTP parameters are accepted only after EHLO (RFC 5321 §4.1.1.2: parameters belong to
   extensions; a HELO session has none) → otherwise ``555 5.5.4``. Unknown or not offered
   keywords → ``555 5.5.4``; a repeated keyword or a bad value → ``501 5.5.4``. Keywords and
   the values BODY, RET and NOTIFY are case-insensitive in ASCII only (``ascii_upper``).
5. ENVID, ORCPT and AUTH= values are xtext (RFC 3461 §4, RFC 4954 §5) and are decoded here.
6. NOTIFY=NEVER cannot be combined with another value (RFC 3461 §4.1) → ``501 5.5.4``.
7. SIZE= over the configured maximum → ``552 5.3.4`` at MAIL time (RFC 1870 §6).
8. ``REQUIRETLS`` (RFC 8689 §3) is a MAIL parameter without a value, accepted when offered.

What can go wrong: every problem raises ``ParamError`` carrying the reply to send; nothing else
is raised for any input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pigeon.core.address import Address, AddressError, parse_address
from pigeon.proto.smtp.events import BodyType, MailParams, RetType
from pigeon.proto.smtp.reply import (
    C501_BAD_ADDRESS,
    C501_SYNTAX_PARAMS,
    C552_MESSAGE_TOO_BIG,
    C553_NON_ASCII_ADDRESS,
    C555_PARAM_NOT_RECOGNIZED,
    Reply,
)

MAX_ENVID = 100  # RFC 3461 §4.4: ENVID is at most 100 characters
MAX_ORCPT = 500  # RFC 3461 §4.2: ORCPT is at most 500 characters
MAX_SIZE_DIGITS = 20  # RFC 1870 §3: size-value is 1*20DIGIT

_KEYWORD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")  # RFC 5321 §4.1.2 esmtp-keyword
_XTEXT_HEX = re.compile(r"\+([0-9A-F]{2})")
_XTEXT_OK = re.compile(r"^(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*$")  # RFC 3461 §4
_ADDR_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")  # RFC 3461 §4.2 addr-type is an atom

#: The MAIL/RCPT parameter keywords each extension brings (RFC 1870, 6152, 3030, 6531, 3461, 4954).
EXTENSION_PARAMS: dict[str, frozenset[str]] = {
    "SIZE": frozenset({"SIZE"}),
    "8BITMIME": frozenset({"BODY"}),
    "BINARYMIME": frozenset({"BODY"}),
    "SMTPUTF8": frozenset({"SMTPUTF8"}),
    "DSN": frozenset({"RET", "ENVID", "NOTIFY", "ORCPT"}),
    "AUTH": frozenset({"AUTH"}),
    "REQUIRETLS": frozenset({"REQUIRETLS"}),
}


class ParamError(Exception):
    """A MAIL/RCPT argument problem; ``reply`` is what the server answers."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


def xtext_decode(text: str) -> str:
    """Decode RFC 3461 §4 xtext (``+XX`` hex escapes). Raises ParamError on malformed xtext."""
    if not _XTEXT_OK.match(text):
        raise ParamError(C501_SYNTAX_PARAMS.with_text("Malformed xtext"))
    return _XTEXT_HEX.sub(lambda m: chr(int(m.group(1), 16)), text)


def xtext_encode(text: str) -> str:
    """Encode as RFC 3461 §4 xtext: ``+``, ``=``, controls, space and non-ASCII escaped."""
    out = []
    for ch in text:
        o = ord(ch)
        if 0x21 <= o <= 0x7E and ch not in "+=":
            out.append(ch)
        else:
            out.extend(f"+{b:02X}" for b in ch.encode("utf-8"))
    return "".join(out)


def split_path(arg: str) -> tuple[str, str]:
    """Split ``<path> params`` into (path content without brackets, params text).

    A ``>`` inside a quoted local part does not end the path.
    """
    arg = arg.lstrip(" ")
    if not arg.startswith("<"):
        # Tolerated: a bare address with no spaces (Postfix strict_rfc821_envelopes=no).
        head, _, rest = arg.partition(" ")
        if not head or "<" in head or ">" in head:
            raise ParamError(C501_SYNTAX_PARAMS.with_text("Syntax: <address> expected"))
        return head, rest.strip(" ")
    if '"' not in arg:  # no quoted local part (the usual path): the first ">" ends the path
        end = arg.find(">")
        if end > 0:
            rest = arg[end + 1 :]
            if rest and not rest.startswith(" "):
                raise ParamError(C501_SYNTAX_PARAMS.with_text("Syntax: space expected after the path"))
            return arg[1:end], rest.strip(" ")
    in_quote = False
    escaped = False
    for i in range(1, len(arg)):
        ch = arg[i]
        if escaped:
            escaped = False
        elif ch == "\\" and in_quote:
            escaped = True
        elif ch == '"':
            in_quote = not in_quote
        elif ch == ">" and not in_quote:
            rest = arg[i + 1 :]
            if rest and not rest.startswith(" "):
                raise ParamError(C501_SYNTAX_PARAMS.with_text("Syntax: space expected after the path"))
            return arg[1:i], rest.strip(" ")
    raise ParamError(C501_SYNTAX_PARAMS.with_text("Syntax: unterminated <path>"))


def strip_source_route(path: str) -> str:
    """``@a,@b:user@d`` → ``user@d`` (RFC 5321 §4.1.1.3: routes MUST be accepted, SHOULD be ignored)."""
    if not path.startswith("@"):
        return path
    colon = path.find(":")
    if colon < 0:
        raise ParamError(C501_BAD_ADDRESS.with_text("Bad source route"))
    for hop in path[:colon].split(","):
        if len(hop) < 2 or not hop.startswith("@"):
            raise ParamError(C501_BAD_ADDRESS.with_text("Bad source route"))
    return path[colon + 1 :]


def parse_mailbox(path: str, utf8: bool) -> Address:
    """Parse the content of a path (route stripped) into an Address."""
    if not utf8 and not path.isascii():
        raise ParamError(C553_NON_ASCII_ADDRESS)  # RFC 6531 §3.5
    try:
        return parse_address(path, utf8=utf8)
    except AddressError as e:
        raise ParamError(C501_BAD_ADDRESS.with_text(f"Bad address syntax: {e}")) from None


def split_params(text: str, allowed: frozenset[str]) -> dict[str, str | None]:
    """``KEY=value KEY2`` → {"KEY": "value", "KEY2": None}; keywords upper-cased.

    Keywords not in ``allowed`` → 555; a repeated keyword or bad syntax → 501.
    """
    out: dict[str, str | None] = {}
    for word in text.split(" "):
        if not word:
            continue
        key, eq, value = word.partition("=")
        if not _KEYWORD.match(key) or (eq and not value):
            raise ParamError(C501_SYNTAX_PARAMS.with_text(f"Bad parameter syntax: {word[:40]}"))
        ukey = key.upper()
        if ukey not in allowed:
            raise ParamError(C555_PARAM_NOT_RECOGNIZED.with_text(f"Unsupported parameter: {ukey}"))
        if ukey in out:
            raise ParamError(C501_SYNTAX_PARAMS.with_text(f"Duplicate parameter: {ukey}"))
        out[ukey] = value if eq else None
    return out


def _allowed(offered: frozenset[str], esmtp: bool, keys: frozenset[str]) -> frozenset[str]:
    if not esmtp:
        return frozenset()
    got: set[str] = set()
    for ext in offered:
        got |= EXTENSION_PARAMS.get(ext, frozenset())
    return frozenset(got & keys)


_MAIL_KEYS = frozenset({"SIZE", "BODY", "SMTPUTF8", "RET", "ENVID", "AUTH", "REQUIRETLS"})
_RCPT_KEYS = frozenset({"NOTIFY", "ORCPT"})


@dataclass(frozen=True, slots=True)
class MailArgs:
    sender: Address | None
    params: MailParams


@dataclass(frozen=True, slots=True)
class RcptArgs:
    recipient: Address
    notify: tuple[str, ...]
    orcpt: str | None
    raw_params: str


def ascii_upper(text: str) -> str:
    """Upper-case ASCII text; other text unchanged. Keywords and values are case-insensitive in
    ASCII only: ``str.upper`` turns "bınarymıme" into BINARYMIME and "ſuccess" into SUCCESS."""
    return text.upper() if text.isascii() else text


def _need_value(key: str, value: str | None) -> str:
    if value is None:
        raise ParamError(C501_SYNTAX_PARAMS.with_text(f"{key}= needs a value"))
    return value


def parse_mail_args(
    arg: str, *, esmtp: bool, offered: frozenset[str], max_message_size: int
) -> MailArgs:
    """Parse what follows ``MAIL FROM:``."""
    path, ptext = split_path(arg)
    params = split_params(ptext, _allowed(offered, esmtp, _MAIL_KEYS)) if ptext else {}
    size: int | None = None
    if "SIZE" in params:
        raw = _need_value("SIZE", params["SIZE"])
        if not raw.isdigit() or not raw.isascii() or len(raw) > MAX_SIZE_DIGITS:
            raise ParamError(C501_SYNTAX_PARAMS.with_text("Bad SIZE= value"))
        size = int(raw)
        if max_message_size and size > max_message_size:
            raise ParamError(C552_MESSAGE_TOO_BIG)  # RFC 1870 §6
    body: BodyType | None = None
    if "BODY" in params:
        b = ascii_upper(_need_value("BODY", params["BODY"]))
        if b == "7BIT":
            body = "7BIT"
        elif b == "8BITMIME":
            body = "8BITMIME"
        elif b == "BINARYMIME" and "BINARYMIME" in offered:
            body = "BINARYMIME"
        else:
            raise ParamError(C501_SYNTAX_PARAMS.with_text("Bad BODY= value"))
    smtputf8 = "SMTPUTF8" in params
    if smtputf8 and params["SMTPUTF8"] is not None:
        raise ParamError(C501_SYNTAX_PARAMS.with_text("SMTPUTF8 takes no value"))  # RFC 6531 §3.4
    ret: RetType | None = None
    if "RET" in params:
        r = ascii_upper(_need_value("RET", params["RET"]))
        if r == "FULL":
            ret = "FULL"
        elif r == "HDRS":
            ret = "HDRS"
        else:
            raise ParamError(C501_SYNTAX_PARAMS.with_text("Bad RET= value"))
    envid: str | None = None
    if "ENVID" in params:
        envid = xtext_decode(_need_value("ENVID", params["ENVID"]))
        if len(envid) > MAX_ENVID:
            raise ParamError(C501_SYNTAX_PARAMS.with_text("ENVID= too long"))
    auth: str | None = None
    if "AUTH" in params:
        auth = xtext_decode(_need_value("AUTH", params["AUTH"]))
    requiretls = "REQUIRETLS" in params  # rule 8
    if requiretls and params["REQUIRETLS"] is not None:
        raise ParamError(C501_SYNTAX_PARAMS.with_text("REQUIRETLS takes no value"))  # RFC 8689 §3
    content = strip_source_route(path)
    sender = None if content == "" else parse_mailbox(content, smtputf8)
    return MailArgs(sender, MailParams(size, body, smtputf8, ret, envid, auth, requiretls))


_NOTIFY_VALUES = frozenset({"SUCCESS", "FAILURE", "DELAY"})


def parse_rcpt_args(
    arg: str, *, esmtp: bool, offered: frozenset[str], smtputf8: bool, postmaster_domain: str
) -> RcptArgs:
    """Parse what follows ``RCPT TO:``."""
    path, ptext = split_path(arg)
    params = split_params(ptext, _allowed(offered, esmtp, _RCPT_KEYS)) if ptext else {}
    notify: tuple[str, ...] = ()
    if "NOTIFY" in params:
        values = tuple(ascii_upper(v) for v in _need_value("NOTIFY", params["NOTIFY"]).split(","))
        if values == ("NEVER",):
            notify = values
        elif "NEVER" in values or not values or not set(values) <= _NOTIFY_VALUES:
            raise ParamError(C501_SYNTAX_PARAMS.with_text("Bad NOTIFY= value"))  # RFC 3461 §4.1
        elif len(set(values)) != len(values):
            raise ParamError(C501_SYNTAX_PARAMS.with_text("Bad NOTIFY= value"))
        else:
            notify = values
    orcpt: str | None = None
    if "ORCPT" in params:
        raw = _need_value("ORCPT", params["ORCPT"])
        atype, semi, xaddr = raw.partition(";")
        if not semi or not _ADDR_TYPE.match(atype) or not xaddr:
            raise ParamError(C501_SYNTAX_PARAMS.with_text("Bad ORCPT= value"))
        # RFC 6533 §3: utf-8-addr-xtext may carry raw UTF-8 when SMTPUTF8 is in use.
        orcpt = f"{atype};{xtext_decode(xaddr) if xaddr.isascii() else xaddr}"
        if len(orcpt) > MAX_ORCPT:
            raise ParamError(C501_SYNTAX_PARAMS.with_text("ORCPT= too long"))
    content = strip_source_route(path)
    if content == "":
        raise ParamError(C501_BAD_ADDRESS.with_text("Null recipient not allowed"))
    if content.lower() == "postmaster":
        # RFC 5321 §4.1.1.3: <Postmaster> without a domain MUST be accepted.
        recipient = Address("postmaster", postmaster_domain)
    else:
        recipient = parse_mailbox(content, smtputf8)
    return RcptArgs(recipient, notify, orcpt, ptext)
