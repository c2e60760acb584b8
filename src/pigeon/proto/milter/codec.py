"""Milter packets: the MTA's commands as octets, the filter's answers as typed values.

The wire format (libmilter's ``mfdef.h``, Postfix's ``milter8.c``): each packet is a 4-octet
big-endian length (the command octet included), one command octet, then the data. Strings are
NUL-terminated. We speak protocol version 6, the one Postfix 2.6+ and rspamd speak.

Rules:
1. ``Decoder.feed`` takes octets in any pieces and returns the complete responses; a packet
   longer than ``MAX_PACKET`` or shorter than one octet raises ``MilterProtocolError`` (the
   caller drops the connection and applies the default action). So does an unknown response
   code or malformed data.
2. Commands are built by the functions below, one per command; none of them reads the clock or
   the network. Body chunks are at most ``MAX_BODY_CHUNK`` octets (libmilter's
   ``MILTER_CHUNK_SIZE``); ``body_chunks`` splits a body accordingly.
3. Negotiation (``OPTNEG``): the MTA offers ``VERSION``, every action it implements
   (``ACTIONS_OFFERED``) and every step it can leave out (``PROTOCOL_OFFERED``); the filter
   answers with the subset it wants. ``Negotiated`` answers "skip this step?" and "does this
   step get a reply?" (the ``SMFIP_NR_*`` flags).

What can go wrong: ``MilterProtocolError`` from ``Decoder.feed`` and ``parse_optneg``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

VERSION = 6
# libmilter's MILTER_CHUNK_SIZE: the largest body piece a filter accepts in one SMFIC_BODY.
MAX_BODY_CHUNK = 65535
# The largest response accepted: a replaced body comes in pieces of at most MAX_BODY_CHUNK
# (plus the code); headers a few KiB. libmilter's own bound is 1 MiB (MILTER_MAX_DATA_SIZE max).
MAX_PACKET = 1024 * 1024

# Commands (MTA → filter), mfdef.h SMFIC_*.
ABORT, BODY, CONNECT, MACRO, BODYEOB, HELO, HEADER, MAIL = b"A", b"B", b"C", b"D", b"E", b"H", b"L", b"M"
EOH, OPTNEG, QUIT, RCPT, DATA, UNKNOWN = b"N", b"O", b"Q", b"R", b"T", b"U"

# Actions (SMFIF_*): what the filter may do at end of message.
ADDHDRS, CHGBODY, ADDRCPT, DELRCPT, CHGHDRS, QUARANTINE, CHGFROM, ADDRCPT_PAR, SETSYMLIST = (
    0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0x100)
# We offer what we carry out: headers, body, quarantine (recipient and sender changes are
# refused: they would change the envelope that our RCPT replies already answered).
ACTIONS_OFFERED = ADDHDRS | CHGBODY | CHGHDRS | QUARANTINE | SETSYMLIST

# Protocol steps (SMFIP_*).
NOCONNECT, NOHELO, NOMAIL, NORCPT, NOBODY, NOHDRS, NOEOH = 0x1, 0x2, 0x4, 0x8, 0x10, 0x20, 0x40
NR_HDR, NOUNKNOWN, NODATA, SKIP, RCPT_REJ = 0x80, 0x100, 0x200, 0x400, 0x800
NR_CONN, NR_HELO, NR_MAIL, NR_RCPT, NR_DATA, NR_UNKN, NR_EOH, NR_BODY = (
    0x1000, 0x2000, 0x4000, 0x8000, 0x10000, 0x20000, 0x40000, 0x80000)
HDR_LEADSPC = 0x100000
PROTOCOL_OFFERED = 0x1FFFFF  # every step above may be left out or left unanswered (Postfix too)


class MilterProtocolError(Exception):
    """The filter broke the protocol (rule 1)."""


# -- commands (rule 2) -----------------------------------------------------------------------

def packet(cmd: bytes, data: bytes = b"") -> bytes:
    return struct.pack(">I", len(data) + 1) + cmd + data


def _z(*parts: str | bytes) -> bytes:
    return b"".join((p.encode("utf-8", "surrogateescape") if isinstance(p, str) else p) + b"\0" for p in parts)


def optneg(version: int = VERSION, actions: int = ACTIONS_OFFERED, protocol: int = PROTOCOL_OFFERED) -> bytes:
    return packet(OPTNEG, struct.pack(">III", version, actions, protocol))


def macros(step: bytes, pairs: Sequence[tuple[str, str]]) -> bytes:
    """SMFIC_MACRO: the symbols defined for ``step`` (``{daemon_name}``, ``i``, ``j``...)."""
    return packet(MACRO, step + _z(*(x for pair in pairs for x in pair)))


def connect(hostname: str, ip: str, port: int) -> bytes:
    """SMFIC_CONNECT: family ``4``/``6`` with port and address (``U`` unknown without one)."""
    if not ip:
        return packet(CONNECT, _z(hostname) + b"U")
    family = b"6" if ":" in ip else b"4"
    return packet(CONNECT, _z(hostname) + family + struct.pack(">H", port) + _z(ip))


def helo(name: str) -> bytes:
    return packet(HELO, _z(name))


def mail(sender: str, args: Sequence[str] = ()) -> bytes:
    return packet(MAIL, _z(f"<{sender}>", *args))


def rcpt(recipient: str, args: Sequence[str] = ()) -> bytes:
    return packet(RCPT, _z(f"<{recipient}>", *args))


def data() -> bytes:
    return packet(DATA)


def header(name: bytes, value: bytes) -> bytes:
    return packet(HEADER, name + b"\0" + value + b"\0")


def eoh() -> bytes:
    return packet(EOH)


def body(chunk: bytes) -> bytes:
    if len(chunk) > MAX_BODY_CHUNK:
        raise ValueError("body chunk over MAX_BODY_CHUNK")
    return packet(BODY, chunk)


def body_chunks(data: bytes) -> Iterator[bytes]:
    for pos in range(0, len(data), MAX_BODY_CHUNK):
        yield data[pos : pos + MAX_BODY_CHUNK]


def end_of_body() -> bytes:
    return packet(BODYEOB)


def abort() -> bytes:
    return packet(ABORT)


def quit() -> bytes:
    return packet(QUIT)


# -- responses (rule 1) ----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class OptNeg:
    version: int
    actions: int
    protocol: int


@dataclass(frozen=True, slots=True)
class Continue:
    pass


@dataclass(frozen=True, slots=True)
class Accept:
    pass


@dataclass(frozen=True, slots=True)
class Reject:
    pass


@dataclass(frozen=True, slots=True)
class Tempfail:
    pass


@dataclass(frozen=True, slots=True)
class Discard:
    pass


@dataclass(frozen=True, slots=True)
class ReplyCode:
    code: int
    text: str  # "550 5.7.1 Spam" as the filter wrote it (code included)


@dataclass(frozen=True, slots=True)
class Skip:
    pass


@dataclass(frozen=True, slots=True)
class Progress:
    pass


@dataclass(frozen=True, slots=True)
class AddHeader:
    name: str
    value: str


@dataclass(frozen=True, slots=True)
class InsertHeader:
    index: int
    name: str
    value: str


@dataclass(frozen=True, slots=True)
class ChangeHeader:
    index: int  # 1-based among the fields of that name; an empty value deletes the field
    name: str
    value: str


@dataclass(frozen=True, slots=True)
class ReplaceBody:
    chunk: bytes


@dataclass(frozen=True, slots=True)
class Quarantine:
    reason: str


@dataclass(frozen=True, slots=True)
class Unsupported:
    """An action we did not offer (recipient or sender changes): logged and ignored."""

    code: str


Response = (OptNeg | Continue | Accept | Reject | Tempfail | Discard | ReplyCode | Skip | Progress
            | AddHeader | InsertHeader | ChangeHeader | ReplaceBody | Quarantine | Unsupported)
FINAL = (Continue, Accept, Reject, Tempfail, Discard, ReplyCode, Skip)


def _strings(data: bytes, n: int) -> list[str]:
    parts = data.split(b"\0")  # n NUL-terminated strings leave n + 1 pieces at least
    if len(parts) < n + 1:
        raise MilterProtocolError(f"expected {n} NUL-terminated strings")
    return [p.decode("utf-8", "replace") for p in parts[:n]]


def parse_optneg(data: bytes) -> OptNeg:
    if len(data) < 12:
        raise MilterProtocolError("short OPTNEG")
    version, actions, protocol = struct.unpack(">III", data[:12])
    return OptNeg(version, actions, protocol)


def _response(code: bytes, data: bytes) -> Response:
    match code:
        case b"c":
            return Continue()
        case b"a":
            return Accept()
        case b"r":
            return Reject()
        case b"t":
            return Tempfail()
        case b"d":
            return Discard()
        case b"s":
            return Skip()
        case b"p":
            return Progress()
        case b"O":
            return parse_optneg(data)
        case b"y":
            text = _strings(data, 1)[0].strip()
            if len(text) < 3 or not text[:3].isdigit() or text[0] not in "45":
                raise MilterProtocolError(f"bad reply code {text[:40]!r}")
            return ReplyCode(int(text[:3]), text)
        case b"h":
            name, value = _strings(data, 2)
            return AddHeader(name, value)
        case b"i" | b"m":
            if len(data) < 4:
                raise MilterProtocolError("short header change")
            (index,) = struct.unpack(">I", data[:4])
            name, value = _strings(data[4:], 2)
            return (InsertHeader if code == b"i" else ChangeHeader)(index, name, value)
        case b"b":
            return ReplaceBody(data)
        case b"q":
            return Quarantine(_strings(data, 1)[0] if data else "")
        case b"+" | b"-" | b"2" | b"e" | b"l":
            return Unsupported(code.decode())
    raise MilterProtocolError(f"unknown response code {code!r}")


class Decoder:
    """Rule 1: octets in, responses out."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Response]:
        self._buf += data
        out: list[Response] = []
        while len(self._buf) >= 4:
            (length,) = struct.unpack(">I", self._buf[:4])
            if length < 1 or length > MAX_PACKET:
                raise MilterProtocolError(f"packet length {length}")
            if len(self._buf) < 4 + length:
                break
            code = bytes(self._buf[4:5])
            payload = bytes(self._buf[5 : 4 + length])
            del self._buf[: 4 + length]
            out.append(_response(code, payload))
        return out


@dataclass(frozen=True, slots=True)
class Negotiated:
    """Rule 3: what the filter chose."""

    version: int
    actions: int
    protocol: int

    def skips(self, flag: int) -> bool:
        return bool(self.protocol & flag)

    def replies(self, nr_flag: int) -> bool:
        return not self.protocol & nr_flag


def negotiate(answer: OptNeg) -> Negotiated:
    if answer.version < 2:
        raise MilterProtocolError(f"filter speaks milter version {answer.version}")
    return Negotiated(min(answer.version, VERSION), answer.actions & ACTIONS_OFFERED,
                      answer.protocol & PROTOCOL_OFFERED)
