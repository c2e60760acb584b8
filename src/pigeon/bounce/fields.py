"""The machine-readable part of a delivery status notification: RFC 3464 §2 fields.

A ``RecipientReport`` is the per-recipient story told by a notice (what happened to one
recipient, with which reply, from which host); ``message_fields`` and ``recipient_fields``
render the two kinds of field groups of a ``message/delivery-status`` body.

Rules:
1. Status is the enhanced code of the recipient's last reply (RFC 3464 §2.3.4, RFC 3463) when
   that code is of the reply's class; otherwise ``X.0.0`` of the reply's class. It is then made
   to agree with the action: ``delivered``/``relayed`` are 2.X.X, ``delayed`` is 4.X.X
   (RFC 3464 §2.3.4), ``failed`` is 5.X.X or 4.X.X (a persistent transient failure, as for an
   expired message).
2. Original-Recipient appears only when the sender gave ORCPT, with its (xtext-decoded) value
   (RFC 3461 §6.3 (d): "If no ORCPT parameter was provided for this recipient, the
   Original-Recipient field MUST NOT appear"). Original-Envelope-Id appears only with ENVID
   (RFC 3461 §6.3 (a)).
3. Addresses are typed ``rfc822``; in a global report (RFC 6533 §3) a non-ASCII address is typed
   ``utf-8``. Outside a global report, text is made ASCII (non-ASCII becomes ``?``), since a
   plain ``message/delivery-status`` body is 7-bit (RFC 3464 §2.1).
4. No field line exceeds 998 octets (RFC 5322 §2.1.1): values lose CR, LF and control
   characters, are capped (``MAX_DIAGNOSTIC``) and folded at spaces.

What can go wrong: nothing raises; a reply that is not an SMTP reply yields ``X.0.0`` and no
Diagnostic-Code.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from pigeon.core.address import Address, is_valid_domain
from pigeon.proto.message.date import rfc5322_date
from pigeon.queue.record import RcptState

Action = Literal["failed", "delayed", "delivered", "relayed"]

# A reply may be up to 256 lines of 2048 octets (proto.smtp.replyparse); a notice needs the
# gist. 900 keeps "Diagnostic-Code: smtp; " plus the longest unbreakable word under 998 octets.
MAX_DIAGNOSTIC = 900
FOLD_AT = 76  # RFC 5322 §2.1.1: lines SHOULD be no more than 78 characters

_REPLY = re.compile(r"^([245])\d\d(?:[ -]|$)")
_ENHANCED = re.compile(r"^[245]\d\d[ -]([245])\.(\d{1,3})\.(\d{1,3})(?: |$)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_HOST = re.compile(r"^([^\[\]\s]*)(?:\[([^\]]*)\])?(?::\d+)?$")


@dataclass(frozen=True, slots=True)
class RecipientReport:
    """What a notice says about one recipient."""

    final: Address  # the address delivery was attempted to (after alias expansion)
    original: Address  # as given at RCPT TO (shown in the text part when it differs)
    orcpt: str | None  # ORCPT as given ("rfc822;addr"), xtext-decoded
    action: Action
    status: str  # "5.1.1"
    reply: str  # the last reply as text, "550 5.1.1 User unknown" ("" if none)
    remote_mta: str | None  # host name of the last attempt, when it names one
    last_attempt: float | None
    will_retry_until: float | None = None  # delayed only


def status_of(reply: str, action: Action) -> str:
    """The RFC 3464 Status for a reply text and an action (rule 1)."""
    code = _REPLY.match(reply)
    enhanced = _ENHANCED.match(reply)
    if enhanced is not None and code is not None and enhanced.group(1) == code.group(1):
        status = ".".join(enhanced.groups())
    elif code is not None:
        status = f"{code.group(1)}.0.0"
    else:
        status = ""
    klass = status[:1]
    if action in ("delivered", "relayed"):
        return status if klass == "2" else "2.0.0"
    if action == "delayed":
        return status if klass == "4" else "4.0.0"
    return status if klass in ("4", "5") else "5.0.0"


def remote_mta(host: str) -> str | None:
    """``mx.example.net`` from ``mx.example.net[192.0.2.1]:25``; the address literal when
    there is no name; None for local delivery or an unknown host."""
    host = host.strip()
    if not host or host.lower() == "local":
        return None
    m = _HOST.match(host)
    if m is None:
        return None
    name, ip = m.group(1), m.group(2)
    if name and is_valid_domain(name.rstrip("."), utf8=True):
        return name.rstrip(".")
    if ip:
        return f"[{_CONTROL.sub('', ip)}]"
    return None


def report_for(rcpt: RcptState, action: Action, will_retry_until: float | None = None) -> RecipientReport:
    """A RecipientReport from the queue's per-recipient state."""
    last = rcpt.attempts[-1] if rcpt.attempts else None
    reply = rcpt.last_reply or (last.reply if last is not None else "")
    return RecipientReport(
        final=rcpt.address,
        original=rcpt.original,
        orcpt=rcpt.orcpt,
        action=action,
        status=status_of(reply, action),
        reply=reply,
        remote_mta=remote_mta(last.host) if last is not None else None,
        last_attempt=last.time if last is not None else None,
        will_retry_until=will_retry_until if action == "delayed" else None,
    )


def clean(text: str, utf8: bool, limit: int = MAX_DIAGNOSTIC) -> str:
    """One line of field text (rules 3 and 4): no controls, ASCII unless ``utf8``, capped."""
    text = _CONTROL.sub(" ", text).strip()
    if not utf8:
        text = text.encode("ascii", "replace").decode("ascii")
    if len(text) > limit:
        text = text[: limit - 3].rstrip() + "..."
    return text


def fold(name: str, value: str) -> str:
    """``Name: value`` folded at spaces into CRLF-terminated lines (rule 4)."""
    words = value.split(" ")
    lines: list[str] = []
    line = f"{name}:"
    for word in words:
        if not word:
            continue
        if len(line) + 1 + len(word) > FOLD_AT and line.strip() and not line.endswith(":"):
            lines.append(line)
            line = " " + word
        else:
            line += " " + word
    lines.append(line)
    return "".join(f"{ln}\r\n" for ln in lines)


def typed_address(address: str, utf8: bool) -> str:
    """``rfc822; addr``, or ``utf-8; addr`` for a non-ASCII address in a global report."""
    kind = "utf-8" if utf8 and not address.isascii() else "rfc822"
    return f"{kind}; {clean(address, utf8)}"


def _orcpt(orcpt: str, utf8: bool) -> str:
    kind, sep, addr = orcpt.partition(";")
    if not sep:  # no type given: RFC 3461 §4.2 requires one; assume an Internet address
        kind, addr = "rfc822", orcpt
    return f"{clean(kind.strip(), utf8, 40)}; {clean(addr.strip(), utf8)}"


def message_fields(reporting_mta: str, arrival: float, envid: str | None, queue_id: str,
                   utf8: bool) -> str:
    """The per-message fields (RFC 3464 §2.2), CRLF-terminated, no blank line."""
    out = fold("Reporting-MTA", f"dns; {clean(reporting_mta, utf8)}")
    out += fold("X-Pigeon-Queue-ID", queue_id)  # RFC 3464 §2.4: extension fields start "X-"
    if envid is not None:  # RFC 3461 §6.3 (a)
        out += fold("Original-Envelope-Id", clean(envid, utf8))
    out += fold("Arrival-Date", rfc5322_date(arrival))
    return out


def recipient_fields(r: RecipientReport, utf8: bool) -> str:
    """One per-recipient group (RFC 3464 §2.3), CRLF-terminated, no blank line."""
    out = ""
    if r.orcpt is not None:  # RFC 3461 §6.3 (d)
        out += fold("Original-Recipient", _orcpt(r.orcpt, utf8))
    out += fold("Final-Recipient", typed_address(str(r.final), utf8))
    out += fold("Action", r.action)
    out += fold("Status", r.status)
    if r.remote_mta is not None:
        out += fold("Remote-MTA", f"dns; {clean(r.remote_mta, utf8)}")
    if r.reply and _REPLY.match(r.reply):
        out += fold("Diagnostic-Code", f"smtp; {clean(r.reply, utf8)}")
    if r.last_attempt is not None:
        out += fold("Last-Attempt-Date", rfc5322_date(r.last_attempt))
    if r.will_retry_until is not None:
        out += fold("Will-Retry-Until", rfc5322_date(r.will_retry_until))
    return out


def delivery_status(reporting_mta: str, arrival: float, envid: str | None, queue_id: str,
                    recipients: Iterable[RecipientReport], utf8: bool) -> str:
    """The whole ``message/delivery-status`` body: groups separated by blank lines."""
    groups = [message_fields(reporting_mta, arrival, envid, queue_id, utf8)]
    groups.extend(recipient_fields(r, utf8) for r in recipients)
    return "\r\n".join(groups)
