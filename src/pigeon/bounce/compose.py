"""The notice as a MIME message: ``multipart/report`` (RFC 6522) with three parts.

Part 1 is the human explanation (text/plain), part 2 the machine-readable report
(``message/delivery-status``, RFC 3464; ``message/global-delivery-status`` for SMTPUTF8 mail,
RFC 6533 §6.2), part 3 the original: its header section (``text/rfc822-headers``, RFC 6522
§4; ``message/global-headers``, RFC 6533 §6.3) or the whole message (``message/rfc822``;
``message/global``, RFC 6532 §3.7).

Rules:
1. The notice comes from ``Mail Delivery System <MAILER-DAEMON@host>`` and carries
   ``Auto-Submitted: auto-replied`` (RFC 3834 §5), ``Date``, ``Message-ID`` and ``MIME-Version``
   (RFC 5322 §3.6, RFC 2045 §4). Notices to the postmaster carry ``X-Pigeon-Double-Bounce: yes``
   (``DOUBLE_BOUNCE_FIELD``) so that their own failure is only logged, never re-bounced.
2. ``iter_dsn`` streams: the original's content is passed through chunk by chunk; nothing holds
   the whole notice. ``build_dsn`` is the same bytes joined (tests, small notices).
3. The boundary is random and starts with ``=_`` (which quoted-printable never produces); every
   part's content is checked against it as it streams (with an overlap across chunks). A clash
   raises ``BoundaryClash`` and the caller starts again with a new boundary.
4. Text that is not ASCII: part 1 becomes UTF-8 quoted-printable (7-bit safe); part 2 and the
   header fields are only non-ASCII in a global (SMTPUTF8) notice, then declared ``8bit``.
   ``Notice.eight_bit`` declares part 3 ``8bit``; the top level is ``8bit`` when any part is.
5. Every line ends in CRLF.

What can go wrong: ``BoundaryClash`` (rule 3); nothing else raises here.
"""

from __future__ import annotations

import secrets
import textwrap
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from email.quoprimime import body_encode
from typing import Literal

from pigeon.bounce.fields import RecipientReport, clean, delivery_status, fold
from pigeon.core.address import Address, format_path
from pigeon.proto.message.date import rfc5322_date

Kind = Literal["failure", "delay", "success"]
# sender: the original envelope sender; postmaster: a notice about a null-sender message
# (a double bounce); copy: the postmaster's copy of a notice sent to the sender.
Audience = Literal["sender", "postmaster", "copy"]
Returned = Literal["none", "headers", "full"]

DOUBLE_BOUNCE_FIELD = "X-Pigeon-Double-Bounce"
MAILER_DAEMON = "MAILER-DAEMON"
WRAP = 72  # text part line width: readable in any mail reader, far below RFC 5322's 78

SUBJECTS: dict[tuple[Kind, Audience], str] = {
    ("failure", "sender"): "Undelivered Mail Returned to Sender",
    ("failure", "postmaster"): "Postmaster Notice: Undelivered Mail with Null Sender",
    ("failure", "copy"): "Postmaster Copy: Undelivered Mail",
    ("delay", "sender"): "Delayed Mail (still being retried)",
    ("success", "sender"): "Successful Mail Delivery Report",
}


class BoundaryClash(ValueError):
    """The boundary turned up inside a part (rule 3): build again with a new one."""


def new_boundary(queue_id: str) -> str:
    """``=_`` + 128 random bits + the queue id: 52 characters, within RFC 2046's 70."""
    return f"=_{secrets.token_hex(16)}.{queue_id}"


@dataclass(frozen=True, slots=True)
class Notice:
    kind: Kind
    audience: Audience
    hostname: str  # the reporting MTA, and MAILER-DAEMON's domain
    to: Address  # who the notice is for (header To:; the caller puts it in the envelope)
    original_sender: Address | None
    original_id: str  # the queue id of the message the notice is about
    arrival: float  # when the original was queued
    date: float  # now
    envid: str | None
    recipients: tuple[RecipientReport, ...]
    returned: Returned  # what part 3 holds
    too_big: bool  # the whole message was asked for (RET=FULL) but is over the cap
    utf8: bool  # a global (RFC 6533) notice
    eight_bit: bool  # part 3 holds 8-bit data
    boundary: str
    message_id: str  # "<...@host>"
    in_reply_to: str | None = None  # the original's Message-ID, when it has a sane one
    max_returned: int = 0  # the cap, for the explanation when ``too_big``

    @property
    def subject(self) -> str:
        return SUBJECTS.get((self.kind, self.audience), SUBJECTS[("failure", "copy")])


def _intro(n: Notice) -> list[str]:
    host = n.hostname
    paras = [f"This is the mail system at host {host}."]
    if n.audience == "postmaster":
        paras.append(
            "A message with the null sender <> (normally itself a delivery status notification) "
            "could not be delivered. It cannot be returned to its sender, so it is reported "
            "to you, the postmaster."
        )
    elif n.audience == "copy":
        paras.append(
            f"This is the postmaster's copy of a non-delivery notice sent to "
            f"{format_path(n.original_sender)} about message {n.original_id}."
        )
    elif n.kind == "failure":
        paras.append(
            "I'm sorry to have to inform you that your message could not be delivered to one "
            "or more recipients. The reasons are given below."
        )
    elif n.kind == "delay":
        paras.append(
            "Your message could not be delivered yet to the recipients below. It is still in "
            "the queue and delivery will be retried; you do not need to send it again. This "
            "is only a warning."
        )
    else:
        relayed = any(r.action == "relayed" for r in n.recipients)
        paras.append("Your message was successfully delivered to the recipients below, as you asked.")
        if relayed:
            paras.append(
                "For a recipient marked \"relayed\", the message was handed to a server that "
                "does not report delivery status (RFC 3461 §5.2.2); no further notice will "
                "come from there."
            )
    return paras


def _closing(n: Notice) -> list[str]:
    paras = []
    if n.returned == "full":
        paras.append("The original message is attached.")
    elif n.returned == "headers":
        paras.append("The header section of the original message is attached.")
    if n.too_big:
        paras.append(
            f"The original message is larger than {n.max_returned} bytes, so only its header "
            "section is returned."
        )
    paras.append("If you need help, please contact the postmaster of this system.")
    return paras


def _rcpt_paragraph(r: RecipientReport) -> str:
    lines = [format_path(r.final)]
    if r.original.key != r.final.key:
        lines.append(f"    (expanded from {format_path(r.original)})")
    if r.action == "delayed" and r.will_retry_until is not None:
        lines.append(f"    will be retried until {rfc5322_date(r.will_retry_until)}")
    where = f"host {r.remote_mta} said" if r.remote_mta else "reply"
    reason = clean(r.reply, True) if r.reply else r.action
    wrapped = textwrap.wrap(f"{where}: {reason}", WRAP, initial_indent="    ",
                            subsequent_indent="        ", break_long_words=True)
    lines.extend(wrapped)
    return "\r\n".join(lines)


def _wrap(paragraph: str) -> str:
    return "\r\n".join(textwrap.wrap(paragraph, WRAP))


def explanation(n: Notice) -> str:
    """The text of part 1 (CRLF line ends)."""
    paras = [_wrap(p) for p in _intro(n)]
    paras.extend(_rcpt_paragraph(r) for r in n.recipients)
    paras.extend(_wrap(p) for p in _closing(n))
    return "\r\n\r\n".join(paras) + "\r\n"


def _text_part(text: str) -> tuple[str, str]:
    """Part 1 headers and content (rule 4)."""
    if text.isascii():
        return "Content-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n", text
    encoded = body_encode(text.encode("utf-8").decode("latin-1"), maxlinelen=76, eol="\r\n")
    return ("Content-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: quoted-printable\r\n"), encoded


def _part3_type(n: Notice) -> str:
    if n.returned == "full":
        return "message/global" if n.utf8 else "message/rfc822"
    return "message/global-headers" if n.utf8 else "text/rfc822-headers"


def _check(content: str | bytes, boundary: str) -> None:
    needle = boundary.encode("ascii")
    data = content.encode("utf-8") if isinstance(content, str) else content
    if needle in data:
        raise BoundaryClash(boundary)


def _top_headers(n: Notice, eight_bit: bool) -> str:
    out = f"Date: {rfc5322_date(n.date)}\r\n"
    out += f"From: Mail Delivery System <{MAILER_DAEMON}@{n.hostname}>\r\n"
    out += f"To: {format_path(n.to)}\r\n"
    out += fold("Subject", n.subject)
    out += f"Message-ID: {n.message_id}\r\n"
    if n.in_reply_to is not None:
        out += fold("In-Reply-To", n.in_reply_to) + fold("References", n.in_reply_to)
    out += "Auto-Submitted: auto-replied\r\n"  # RFC 3834 §5
    if n.audience != "sender":
        out += f"{DOUBLE_BOUNCE_FIELD}: yes\r\n"  # rule 1
    out += "MIME-Version: 1.0\r\n"
    out += ("Content-Type: multipart/report; report-type=delivery-status;\r\n"
            f"\tboundary=\"{n.boundary}\"\r\n")
    out += f"Content-Transfer-Encoding: {'8bit' if eight_bit else '7bit'}\r\n"
    return out


def iter_dsn(n: Notice, original: Iterable[bytes] = ()) -> Iterator[bytes]:
    """The notice, in pieces (rule 2). ``original`` is part 3's content: the header section
    (``returned == "headers"``) or the whole message (``"full"``), CRLF line ends; it is
    ignored when ``returned == "none"``."""
    text_headers, text = _text_part(explanation(n))
    report = delivery_status(n.hostname, n.arrival, n.envid, n.original_id, n.recipients, n.utf8)
    _check(text, n.boundary)
    _check(report, n.boundary)
    report_8bit = not report.isascii()
    part3_8bit = n.returned != "none" and n.eight_bit
    delim = f"\r\n--{n.boundary}\r\n"
    head = _top_headers(n, report_8bit or part3_8bit) + "\r\n"
    head += "This is a MIME-encapsulated message.\r\n"  # preamble, for non-MIME readers
    head += f"--{n.boundary}\r\n"
    head += "Content-Description: Notification\r\n" + text_headers + "\r\n" + text
    status_type = "message/global-delivery-status" if n.utf8 else "message/delivery-status"
    head += delim + "Content-Description: Delivery report\r\n"
    head += f"Content-Type: {status_type}\r\n"
    head += f"Content-Transfer-Encoding: {'8bit' if report_8bit else '7bit'}\r\n\r\n" + report
    if n.returned != "none":
        what = "Undelivered Message" if n.returned == "full" else "Undelivered Message Headers"
        if n.kind != "failure":
            what = what.replace("Undelivered", "Original")
        head += delim + f"Content-Description: {what}\r\n"
        head += f"Content-Type: {_part3_type(n)}\r\n"
        head += f"Content-Transfer-Encoding: {'8bit' if part3_8bit else '7bit'}\r\n\r\n"
    yield head.encode("utf-8")
    if n.returned != "none":
        yield from _checked(original, n.boundary)
    yield f"\r\n--{n.boundary}--\r\n".encode("ascii")


def _checked(chunks: Iterable[bytes], boundary: str) -> Iterator[bytes]:
    """Pass the chunks on, raising BoundaryClash if the boundary appears, even across a cut."""
    needle = boundary.encode("ascii")
    keep = len(needle) - 1
    tail = b""
    for chunk in chunks:
        if not chunk:
            continue
        if needle in tail + chunk:
            raise BoundaryClash(boundary)
        tail = (tail + chunk)[-keep:]
        yield chunk


def build_dsn(n: Notice, original: Iterable[bytes] = ()) -> bytes:
    """The whole notice as bytes (rule 2): ``b"".join(iter_dsn(...))``."""
    return b"".join(iter_dsn(n, original))
