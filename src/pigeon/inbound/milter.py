"""The milter client: one conversation per message with each filter of ``[inbound] milters``.

Rules:
1. The conversation runs at the end of DATA/BDAT, once the message is spooled: connect,
   OPTNEG, CONNECT, HELO, MAIL, RCPT for each recipient, DATA, the header fields, EOH, the body
   in chunks, EOB, QUIT. One short connection per message, so an idle SMTP session holds no
   filter connection. A filter's answer at an earlier step (a reject at RCPT) is given to the
   client at the end of the message (the only answer still open).
2. Steps the filter asked to leave out (``SMFIP_NO*``) are not sent; steps it asked not to
   answer (``SMFIP_NR_*``) are not waited for.
3. Timeouts per phase (``[inbound] milter_*_timeout``): connecting, each command, and the body
   with its end-of-message answer.
4. Answers: ``accept`` ends the conversation (the message is taken, no later filter asked);
   ``reject`` → the filter's own reply (``SMFIR_REPLYCODE``) or ``550 5.7.1``; ``tempfail`` →
   its reply or ``451 4.7.1``; ``discard`` → accepted and thrown away; at end of message the
   header edits, a replaced body and a quarantine come before the final answer.
5. A filter that cannot be reached, times out or breaks the protocol gets
   ``milter_default_action``: ``tempfail`` (``451 4.7.1``, the default, as Postfix's
   ``milter_default_action``) or ``accept`` (as if it were not there); a log line says which.

What can go wrong: nothing raises from ``run``; every failure is rule 5.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from pigeon.config.inbound import InboundConfig, MilterEndpoint
from pigeon.core.reply import Reply
from pigeon.inbound.headers import MilterEdit, field_name, field_value, split_fields
from pigeon.net.connect import Connection, connect, connect_unix
from pigeon.proto.milter import codec as m

log = logging.getLogger(__name__)

C550_MILTER_REJECT = Reply(550, "5.7.1", "Message rejected by a content filter")
C451_MILTER_TEMPFAIL = Reply(451, "4.7.1", "Message deferred by a content filter, try again later")
READ_SIZE = 65536

Verdict = Literal["continue", "accept", "reject", "tempfail", "discard"]


@dataclass(frozen=True, slots=True)
class MessageInfo:
    """What the filter is told about the message and its client."""

    queue_id: str
    hostname: str  # ours (macro j)
    client_ip: str
    client_port: int
    client_name: str  # reverse name, or "[ip]" unknown
    helo: str
    sender: str  # "" for <>
    recipients: tuple[str, ...]


@dataclass(slots=True)
class MilterResult:
    verdict: Verdict = "continue"
    reply: Reply | None = None
    edits: list[MilterEdit] = field(default_factory=list)
    body: bytes | None = None  # a replaced body
    quarantine: str | None = None
    name: str = ""  # the filter that decided


class _Broken(Exception):
    pass


def _reply(resp: m.ReplyCode) -> Reply:
    parts = resp.text.split(" ", 2)
    code = resp.code
    enhanced = parts[1] if len(parts) > 1 and parts[1][:1] in "45" and "." in parts[1] else ""
    text = parts[2] if enhanced and len(parts) > 2 else " ".join(parts[1:])
    return Reply(code, enhanced or ("5.7.1" if code >= 500 else "4.7.1"), text or "Content filter")


class _Conversation:
    def __init__(self, conn: Connection, cfg: InboundConfig) -> None:
        self.conn = conn
        self.cfg = cfg
        self.decoder = m.Decoder()
        self.pending: list[m.Response] = []
        self.result = MilterResult()

    async def _read(self, timeout: float) -> m.Response:
        async with asyncio.timeout(timeout):
            while not self.pending:
                data = await self.conn.read(READ_SIZE)
                if not data:
                    raise _Broken("the filter closed the connection")
                self.pending.extend(self.decoder.feed(data))
        return self.pending.pop(0)

    async def send(self, data: bytes, timeout: float) -> None:
        self.conn.write(data)
        async with asyncio.timeout(timeout):
            await self.conn.drain()

    async def ask(self, data: bytes, replies: bool, timeout: float, *, eom: bool = False) -> Verdict:
        """Send one command; wait for its final answer unless the filter said it sends none."""
        await self.send(data, timeout)
        if not replies:
            return "continue"
        while True:
            resp = await self._read(timeout)
            if isinstance(resp, m.Progress):
                continue  # the filter asks for more time: the timeout starts over
            if isinstance(resp, (m.AddHeader, m.InsertHeader, m.ChangeHeader)) and eom:
                self.result.edits.append(resp)
                continue
            if isinstance(resp, m.ReplaceBody) and eom:
                self.result.body = (self.result.body or b"") + resp.chunk
                continue
            if isinstance(resp, m.Quarantine) and eom:
                self.result.quarantine = resp.reason or "quarantined by a content filter"
                continue
            if isinstance(resp, m.Unsupported):
                log.warning("milter: action %r not offered, ignored", resp.code)
                continue
            return self._final(resp)

    def _final(self, resp: m.Response) -> Verdict:
        match resp:
            case m.Continue() | m.Skip():
                return "continue"
            case m.Accept():
                return "accept"
            case m.Discard():
                return "discard"
            case m.Reject():
                self.result.reply = C550_MILTER_REJECT
                return "reject"
            case m.Tempfail():
                self.result.reply = C451_MILTER_TEMPFAIL
                return "tempfail"
            case m.ReplyCode():
                self.result.reply = _reply(resp)
                return "reject" if resp.code >= 500 else "tempfail"
        raise _Broken(f"unexpected answer {resp!r}")


async def _open(endpoint: MilterEndpoint) -> Connection:
    if endpoint.path:
        return await connect_unix(endpoint.path)
    return await connect(endpoint.host, endpoint.port)


def _header_fields(header: bytes) -> Iterable[tuple[bytes, bytes]]:
    for f in split_fields(header):
        name = field_name(f)
        if not name:
            continue
        raw_name = f.split(b":", 1)[0].rstrip(b" \t")
        value = field_value(f)
        yield raw_name, (value[1:] if value[:1] == b" " else value)


async def _converse(c: _Conversation, info: MessageInfo, header: bytes, body: Iterable[bytes]) -> Verdict:
    cfg = c.cfg
    cmd_t, body_t = cfg.milter_command_timeout, cfg.milter_content_timeout
    await c.send(m.optneg(), cmd_t)
    answer = await c._read(cmd_t)
    if not isinstance(answer, m.OptNeg):
        raise _Broken(f"no OPTNEG answer: {answer!r}")
    neg = m.negotiate(answer)
    await c.send(m.macros(m.CONNECT, [("j", info.hostname), ("{daemon_name}", "pigeon"),
                                      ("{client_addr}", info.client_ip),
                                      ("_", f"{info.client_name} [{info.client_ip}]")]), cmd_t)
    steps: list[tuple[int, int, bytes]] = [
        (m.NOCONNECT, m.NR_CONN, m.connect(info.client_name, info.client_ip, info.client_port)),
        (m.NOHELO, m.NR_HELO, m.helo(info.helo)),
        (m.NOMAIL, m.NR_MAIL, m.macros(m.MAIL, [("{mail_addr}", info.sender)]) + m.mail(info.sender)),
    ]
    for rcpt in info.recipients:
        steps.append((m.NORCPT, m.NR_RCPT, m.macros(m.RCPT, [("{rcpt_addr}", rcpt)]) + m.rcpt(rcpt)))
    steps.append((m.NODATA, m.NR_DATA, m.macros(m.DATA, [("i", info.queue_id)]) + m.data()))
    for name, value in _header_fields(header):
        steps.append((m.NOHDRS, m.NR_HDR, m.header(name, value)))
    steps.append((m.NOEOH, m.NR_EOH, m.macros(m.EOH, [("i", info.queue_id)]) + m.eoh()))
    for skip, nr, data in steps:  # rule 2
        if neg.skips(skip):
            continue
        verdict = await c.ask(data, neg.replies(nr), cmd_t)
        if verdict != "continue":
            return verdict
    if not neg.skips(m.NOBODY):
        for piece in body:
            for chunk in m.body_chunks(piece):
                verdict = await c.ask(m.body(chunk), neg.replies(m.NR_BODY), body_t)
                if verdict != "continue":
                    return verdict
    return await c.ask(m.macros(m.BODYEOB, [("i", info.queue_id)]) + m.end_of_body(), True, body_t, eom=True)


async def run_milter(endpoint: MilterEndpoint, cfg: InboundConfig, info: MessageInfo,
                     header: bytes, body: Iterable[bytes]) -> MilterResult:
    """One filter, rules 1-5."""
    conn: Connection | None = None
    try:
        async with asyncio.timeout(cfg.milter_connect_timeout):
            conn = await _open(endpoint)
        c = _Conversation(conn, cfg)
        verdict = await _converse(c, info, header, body)
        c.result.verdict = verdict
        c.result.name = endpoint.spec
        try:
            conn.write(m.quit())
        except OSError:
            pass
        return c.result
    except (OSError, TimeoutError, m.MilterProtocolError, _Broken) as exc:
        action = cfg.milter_default_action
        log.warning("milter %s failed (%s): milter_default_action=%s", endpoint.spec,
                    exc or type(exc).__name__, action)
        if action == "accept":
            return MilterResult("continue", name=endpoint.spec)
        return MilterResult("tempfail", C451_MILTER_TEMPFAIL, name=endpoint.spec)
    finally:
        if conn is not None:
            conn.close()

