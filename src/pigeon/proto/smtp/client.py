"""The sans-IO SMTP client core: commands out, replies in, matched in order (RFC 2920).

Use::

    conn = ClientConnection()
    ev = conn.next_event()                     # ReplyReceived(greeting, Greeting())
    conn.send_command(Ehlo("me.example"))
    sock.send(conn.data_to_send())
    ...                                        # ReplyReceived(reply, Ehlo(...)); conn.extensions set
    conn.send_command(MailFrom(...)); conn.send_command(RcptTo(...)); conn.send_command(Data())
    ...                                        # once 354 arrives:
    conn.send_message_data(chunk); conn.end_message_data()

Rules:
1. Every command sent is queued as pending; each reply received is matched to the oldest pending
   command (RFC 2920 §3.1: replies come in order). The connection's greeting is the first pending
   item (``Greeting``); the end of DATA content is ``DataEnd``. A reply with nothing pending (only
   a 421 is legal then, RFC 5321 §3.8) is reported with ``command=None``.
2. Whether to pipeline is the application's choice (``extensions.pipelining``); the core only
   keeps order. Message data may be sent only after the 354 reply to DATA has been received.
3. Message data is normalised on the way out: bare LF and bare CR become CRLF (RFC 5321 §2.3.8),
   lines starting with ``.`` get another (RFC 5321 §4.5.2), and the end is ``<CRLF>.<CRLF>``,
   a CRLF being added when the content does not end with one (RFC 5321 §4.1.1.4). Chunk
   boundaries never matter (a CR at the end of a chunk waits for the next).
4. BDAT (RFC 3030) chunks are sent raw with ``send_bdat``: no stuffing, no conversion.
5. Command text may not contain CR or LF (no command injection from the application's data).
6. ``start_tls`` (after the 220 to STARTTLS) drops any reply bytes buffered after that 220
   (a server-side injection, like CVE-2011-0411 the other way round) and forgets the extensions
   (RFC 3207 §4.2: the client MUST discard knowledge obtained before TLS and send EHLO again).

What can go wrong: misuse raises ``LocalProtocolError``; a malformed reply raises
``RemoteProtocolError`` (see ``replyparse``).
"""

from __future__ import annotations

import collections
import re
from dataclasses import dataclass
from typing import Final

from pigeon.core.address import format_path
from pigeon.proto.smtp.ehlo import Extensions
from pigeon.proto.smtp.errors import LocalProtocolError
from pigeon.proto.smtp.events import (
    NEED_DATA,
    Auth,
    AuthResponse,
    Bdat,
    Command,
    ConnectionClosed,
    Data,
    Ehlo,
    Expn,
    Helo,
    Help,
    MailFrom,
    NeedData,
    Noop,
    Quit,
    RcptTo,
    Rset,
    StartTls,
    Vrfy,
)
from pigeon.proto.smtp.params import xtext_encode
from pigeon.proto.smtp.reply import Reply
from pigeon.proto.smtp.replyparse import ReplyParser

_NEWLINE: Final = re.compile(rb"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class Greeting:
    """The pending item the server's banner answers."""


@dataclass(frozen=True, slots=True)
class DataEnd:
    """The pending item the reply after ``<CRLF>.<CRLF>`` answers."""


ClientCommand = Command | Greeting | DataEnd


@dataclass(frozen=True, slots=True)
class ReplyReceived:
    reply: Reply
    command: ClientCommand | None  # None: unsolicited (a 421 with nothing pending)


def encode_command(cmd: Command) -> bytes:
    """The command line (with CRLF) for ``cmd``. Raises LocalProtocolError for BDAT or CR/LF."""
    if isinstance(cmd, Helo):
        text = f"HELO {cmd.domain}"
    elif isinstance(cmd, Ehlo):
        text = f"EHLO {cmd.domain}"
    elif isinstance(cmd, MailFrom):
        words = [f"MAIL FROM:{format_path(cmd.sender)}"]
        p = cmd.params
        if p.size is not None:
            words.append(f"SIZE={p.size}")  # RFC 1870
        if p.body is not None:
            words.append(f"BODY={p.body}")  # RFC 6152, RFC 3030
        if p.smtputf8:
            words.append("SMTPUTF8")  # RFC 6531
        if p.ret is not None:
            words.append(f"RET={p.ret}")  # RFC 3461 §4.3
        if p.envid is not None:
            words.append(f"ENVID={xtext_encode(p.envid)}")  # RFC 3461 §4.4
        if p.auth is not None:
            words.append(f"AUTH={xtext_encode(p.auth) if p.auth != '<>' else '<>'}")  # RFC 4954 §5
        if p.requiretls:
            words.append("REQUIRETLS")  # RFC 8689 §3
        text = " ".join(words)
    elif isinstance(cmd, RcptTo):
        words = [f"RCPT TO:{format_path(cmd.recipient)}"]
        if cmd.notify:
            words.append("NOTIFY=" + ",".join(cmd.notify))  # RFC 3461 §4.1
        if cmd.orcpt is not None:
            atype, _, addr = cmd.orcpt.partition(";")
            words.append(f"ORCPT={atype};{xtext_encode(addr)}")  # RFC 3461 §4.2
        text = " ".join(words)
    elif isinstance(cmd, Data):
        text = "DATA"
    elif isinstance(cmd, Rset):
        text = "RSET"
    elif isinstance(cmd, Noop):
        text = "NOOP"
    elif isinstance(cmd, Quit):
        text = "QUIT"
    elif isinstance(cmd, Vrfy):
        text = f"VRFY {cmd.arg}"
    elif isinstance(cmd, Expn):
        text = f"EXPN {cmd.arg}"
    elif isinstance(cmd, Help):
        text = f"HELP {cmd.arg}" if cmd.arg else "HELP"
    elif isinstance(cmd, StartTls):
        text = "STARTTLS"
    elif isinstance(cmd, Auth):
        text = f"AUTH {cmd.mechanism}"
        if cmd.initial is not None:
            text += f" {cmd.initial or '='}"  # RFC 4954 §4: "=" is an empty initial response
    elif isinstance(cmd, AuthResponse):
        text = cmd.line
    else:  # Bdat
        raise LocalProtocolError("BDAT is sent with send_bdat(data, last)")
    if "\r" in text or "\n" in text:
        raise LocalProtocolError("CR or LF inside an SMTP command")
    return text.encode("utf-8") + b"\r\n"


class ClientConnection:
    def __init__(self) -> None:
        self._parser = ReplyParser()
        self._out = bytearray()
        self._pending: collections.deque[ClientCommand] = collections.deque([Greeting()])
        self._eof = False
        self._closed = False
        self._data_ready = False  # 354 received: message data may be sent
        self._at_line_start = True
        self._pending_cr = False
        self._tls_ready = False
        self.extensions: Extensions | None = None  # from the last 250 reply to EHLO
        self.tls_active = False

    @property
    def pending(self) -> int:
        """How many commands (incl. the greeting / data end) still await a reply."""
        return len(self._pending)

    @property
    def closed(self) -> bool:
        return self._closed

    # --- output ------------------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def send_command(self, cmd: Command) -> None:
        if self._closed:
            raise LocalProtocolError("connection closed")
        if self._data_ready:
            raise LocalProtocolError("inside DATA: finish with end_message_data() first")
        self._out += encode_command(cmd)
        self._pending.append(cmd)

    def send_bdat(self, data: bytes, last: bool) -> None:
        """One BDAT chunk (RFC 3030 §2): the command line and the raw octets."""
        if self._closed or self._data_ready:
            raise LocalProtocolError("cannot send BDAT now")
        self._out += f"BDAT {len(data)}{' LAST' if last else ''}\r\n".encode("ascii")
        self._out += data
        self._pending.append(Bdat(len(data), last))

    def send_message_data(self, chunk: bytes) -> None:
        """Message content after the 354: normalised to CRLF and dot-stuffed (RFC 5321 §4.5.2)."""
        if not self._data_ready:
            raise LocalProtocolError("message data before the 354 reply to DATA")
        if self._pending_cr:
            chunk = b"\r" + chunk
            self._pending_cr = False
        if chunk.endswith(b"\r"):
            chunk = chunk[:-1]
            self._pending_cr = True
        if not chunk:
            return
        n = chunk.count(b"\n")
        if chunk.count(b"\r\n") != n or chunk.count(b"\r") != n:
            chunk = _NEWLINE.sub(b"\r\n", chunk)  # RFC 5321 §2.3.8: no bare CR or LF on the wire
        if self._at_line_start and chunk[:1] == b".":
            self._out += b"."
        if b"\n." in chunk:
            chunk = chunk.replace(b"\n.", b"\n..")
        self._out += chunk
        self._at_line_start = chunk.endswith(b"\n")

    def end_message_data(self) -> None:
        """Finish the content with ``<CRLF>.<CRLF>`` (RFC 5321 §4.1.1.4)."""
        if not self._data_ready:
            raise LocalProtocolError("end_message_data outside DATA")
        if self._pending_cr:
            self._out += b"\r\n"
            self._pending_cr = False
            self._at_line_start = True
        if not self._at_line_start:
            self._out += b"\r\n"
        self._out += b".\r\n"
        self._data_ready = False
        self._at_line_start = True
        self._pending.append(DataEnd())

    def start_tls(self) -> None:
        """After the 220 to STARTTLS: drop buffered input and forget the extensions (RFC 3207 §4.2)."""
        if not self._tls_ready or self._pending:
            raise LocalProtocolError("start_tls() only right after a 220 reply to STARTTLS")
        self._tls_ready = False
        self._parser.clear()
        self.extensions = None
        self.tls_active = True

    # --- input -------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        if not data:
            self._eof = True
        elif not self._closed:
            self._parser.feed(data)

    def next_event(self) -> ReplyReceived | ConnectionClosed | NeedData:
        if self._closed:
            return ConnectionClosed()
        reply = self._parser.next_reply()
        if reply is None:
            if self._eof:
                self._closed = True
                return ConnectionClosed()
            return NEED_DATA
        cmd = self._pending.popleft() if self._pending else None
        self._tls_ready = False
        if isinstance(cmd, Ehlo) and reply.code == 250:
            self.extensions = Extensions.from_reply(reply)
        elif isinstance(cmd, Data) and reply.code == 354:
            self._data_ready = True
            self._at_line_start = True
            self._pending_cr = False
        elif isinstance(cmd, StartTls) and reply.code == 220:
            self._tls_ready = True
        if reply.code == 421 or (isinstance(cmd, Quit) and reply.code == 221):
            self._closed = True  # RFC 5321 §3.8, §4.1.1.10
        return ReplyReceived(reply, cmd)
