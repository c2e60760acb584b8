"""Helpers for the IMAP protocol-core tests: feed octets, collect events, parse commands."""

from __future__ import annotations

from pigeon.proto.imap.commands import ImapCommand
from pigeon.proto.imap.connection import ImapServerConnection
from pigeon.proto.imap.events import Command, ConnectionClosed, ImapEvent
from pigeon.proto.imap.parser import parse_command


def events(data: bytes, conn: ImapServerConnection | None = None, eof: bool = False) -> list[ImapEvent]:
    c = conn if conn is not None else ImapServerConnection()
    c.receive_data(data)
    if eof:
        c.receive_data(b"")
    out: list[ImapEvent] = []
    while (ev := c.next_event()) is not None:
        out.append(ev)
        if isinstance(ev, ConnectionClosed):
            break  # the last event: the core repeats it
    return out


def frame(data: bytes) -> Command:
    """The single Command framed from ``data`` (which must hold exactly one command)."""
    evs = [e for e in events(data) if isinstance(e, Command)]
    assert len(evs) == 1, evs
    return evs[0]


def parse(data: bytes) -> ImapCommand:
    if not data.endswith(b"\n"):
        data += b"\r\n"
    return parse_command(frame(data))
