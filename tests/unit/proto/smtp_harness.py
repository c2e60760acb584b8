"""Test helpers for the SMTP server core: an automatic application that answers every event."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from pigeon.proto.smtp.events import (
    NEED_DATA,
    Auth,
    AuthResponse,
    BdatChunkEnd,
    CommandRejected,
    ConnectionClosed,
    Data,
    DataChunk,
    Ehlo,
    EndOfData,
    Expn,
    Helo,
    Help,
    MailFrom,
    Noop,
    Quit,
    RcptTo,
    Rset,
    ServerEvent,
    StartTls,
    Vrfy,
)
from pigeon.proto.smtp.reply import (
    C214_HELP,
    C221_BYE,
    C250_OK,
    C252_CANNOT_VRFY,
    C354_START_INPUT,
    C502_NOT_IMPLEMENTED,
    C550_BARE_NEWLINE,
    Reply,
)
from pigeon.proto.smtp.server import ServerConnection

GREETING = Reply(220, "", "mx.example ESMTP Pigeon")
C235 = Reply(235, "2.7.0", "Authentication successful")
C334 = Reply(334, "", "")
C501_CANCEL = Reply(501, "5.0.0", "Authentication cancelled")
C220_TLS = Reply(220, "2.0.0", "Ready to start TLS")
C250_QUEUED = Reply(250, "2.0.0", "Queued")

Policy = Callable[[ServerConnection, ServerEvent], Reply | None]


def default_reply(conn: ServerConnection, ev: ServerEvent) -> Reply | None:
    """What a permissive application answers; None for events that need no reply."""
    if isinstance(ev, (Helo, Ehlo, MailFrom, RcptTo, Rset, Noop)):
        return C250_OK
    if isinstance(ev, Data):
        return C354_START_INPUT
    if isinstance(ev, EndOfData):
        if ev.error is not None:
            return ev.error
        return C550_BARE_NEWLINE if ev.bare_newline else C250_QUEUED
    if isinstance(ev, BdatChunkEnd):
        if ev.error is not None:
            return ev.error
        if ev.bare_newline:
            return C550_BARE_NEWLINE
        return C250_QUEUED if ev.last else C250_OK
    if isinstance(ev, Quit):
        return C221_BYE
    if isinstance(ev, Vrfy):
        return C252_CANNOT_VRFY
    if isinstance(ev, Expn):
        return C502_NOT_IMPLEMENTED
    if isinstance(ev, Help):
        return C214_HELP
    if isinstance(ev, StartTls):
        return C220_TLS
    if isinstance(ev, Auth):
        return C334
    if isinstance(ev, AuthResponse):
        return C501_CANCEL if ev.line == "*" else C235
    return None


class Session:
    """A server core plus an automatic application; collects events and output."""

    def __init__(self, conn: ServerConnection | None = None, policy: Policy = default_reply) -> None:
        self.conn = conn if conn is not None else ServerConnection(max_message_size=10_000)
        self.policy = policy
        self.events: list[ServerEvent] = []
        self.conn.send(GREETING)
        self.out = self.conn.data_to_send()
        self.closed = False

    def feed(self, *pieces: bytes) -> Session:
        for piece in pieces:
            if piece:
                self.conn.receive_data(piece)
                self.pump()
        return self

    def eof(self) -> Session:
        self.conn.receive_data(b"")
        self.pump()
        return self

    def pump(self) -> None:
        while not self.closed:
            ev = self.conn.next_event()
            if ev is NEED_DATA:
                break
            self.events.append(ev)
            if isinstance(ev, ConnectionClosed):
                self.closed = True
                break
            reply = self.policy(self.conn, ev)
            if reply is not None:
                self.conn.send(reply)
                if isinstance(ev, StartTls) and reply.code == 220:
                    self.conn.start_tls()
        self.out += self.conn.data_to_send()

    def replies(self) -> list[bytes]:
        """Output lines after the greeting, each with its CRLF."""
        lines = self.out.split(b"\r\n")[1:-1]
        return [ln + b"\r\n" for ln in lines]

    def codes(self) -> list[int]:
        return [int(r[:3]) for r in self.replies() if r[3:4] == b" "]

    def commands(self) -> list[ServerEvent]:
        """Events other than data chunks."""
        return [e for e in self.events if not isinstance(e, DataChunk)]

    def body(self) -> bytes:
        return b"".join(e.data for e in self.events if isinstance(e, DataChunk))

    def rejected(self) -> list[CommandRejected]:
        return [e for e in self.events if isinstance(e, CommandRejected)]


def merged(events: Iterable[ServerEvent]) -> list[ServerEvent]:
    """Events with consecutive DataChunks joined (chunking of data is not significant)."""
    out: list[ServerEvent] = []
    for ev in events:
        if isinstance(ev, DataChunk) and out and isinstance(out[-1], DataChunk):
            out[-1] = DataChunk(out[-1].data + ev.data)
        else:
            out.append(ev)
    return out


EHLO_MAIL_RCPT = b"EHLO client.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\n"
