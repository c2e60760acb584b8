"""A scripted peer SMTP server on 127.0.0.1 for the relay tests (asyncio, a free port).

Written independently of Pigeon's server core, so the client is checked against a second
implementation. Behaviour is set by ``Script``: extensions offered, replies per stage or per
recipient, a delay before every reply, a dropped connection after DATA, STARTTLS with a
certificate. Every transaction is recorded (``Peer.received``).
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field

DEFAULT_EXTS = ("PIPELINING", "SIZE 10000000", "8BITMIME", "SMTPUTF8", "DSN", "ENHANCEDSTATUSCODES")


@dataclass
class Script:
    extensions: tuple[str, ...] = DEFAULT_EXTS
    greeting: str = "220 peer.test ESMTP"
    ehlo_refused: bool = False  # 502 to EHLO: the client must fall back to HELO
    mail_reply: str = "250 2.1.0 OK"
    rcpt_replies: dict[str, str] = field(default_factory=dict)  # address (lower) → reply line
    data_reply: str = "354 go ahead"
    final_reply: str = "250 2.0.0 queued as X"
    drop_after_data: bool = False  # read the message, then close without a reply
    close_after_reply: bool = False  # answer the end of the data, then close (an idle timeout)
    delay: float = 0.0  # before every reply
    tls: ssl.SSLContext | None = None  # offer STARTTLS with this context
    rset_reply: str = "250 2.0.0 OK"
    # Before answering RSET, wait up to this long for the next command line: a client that
    # pipelines RSET with MAIL has sent it already (``Peer.rset_grouped`` records which).
    rset_waits: float = 0.0


@dataclass
class Transaction:
    helo: str = ""
    mail: str = ""
    rcpts: list[str] = field(default_factory=list)
    data: bytes = b""
    tls: bool = False
    bdat: bool = False


class Peer:
    def __init__(self, script: Script | None = None, host: str = "127.0.0.1") -> None:
        self.script = script or Script()
        self.host = host
        self.port = 0
        self.received: list[Transaction] = []
        self.connections = 0
        self.rset_grouped: list[bool] = []  # per RSET with ``rset_waits``: the next line came with it
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> Peer:
        self._server = await asyncio.start_server(self._session, self.host, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def __aenter__(self) -> Peer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self._dialogue(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, ssl.SSLError):
                pass

    async def _dialogue(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        s = self.script

        async def say(line: str) -> None:
            if s.delay:
                await asyncio.sleep(s.delay)
            writer.write(line.encode() + b"\r\n")
            await writer.drain()

        await say(s.greeting)
        if not s.greeting.startswith("220"):
            return
        tx = Transaction()
        tls = False
        pending: list[bytes] = []  # a line read ahead (``rset_waits``), handled next
        while True:
            raw = pending.pop(0) if pending else await reader.readline()
            if not raw:
                return
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            verb = line.split(" ", 1)[0].upper()
            if verb == "EHLO":
                if s.ehlo_refused:
                    await say("502 5.5.1 EHLO not implemented")
                    continue
                tx.helo = line
                exts = [e for e in s.extensions]
                if s.tls is not None and not tls:
                    exts.append("STARTTLS")
                lines = ["peer.test Hello", *exts]
                await say("\r\n".join(f"250{'-' if i < len(lines) - 1 else ' '}{t}" for i, t in enumerate(lines)))
            elif verb == "HELO":
                tx.helo = line
                await say("250 peer.test")
            elif verb == "STARTTLS" and s.tls is not None:
                await say("220 2.0.0 go ahead")
                await writer.start_tls(s.tls)
                tls = True
                tx = Transaction(tls=True)
            elif verb == "MAIL":
                tx.mail = line
                await say(s.mail_reply)
            elif verb == "RCPT":
                tx.rcpts.append(line)
                addr = line[line.index("<") + 1:line.index(">")].lower()
                reply = s.rcpt_replies.get(addr, "250 2.1.5 OK")
                await say(reply)
            elif verb == "DATA":
                if not any(s.rcpt_replies.get(r[r.index("<") + 1:r.index(">")].lower(), "250").startswith("2")
                           for r in tx.rcpts):
                    await say("554 5.5.1 no valid recipients")
                    continue
                await say(s.data_reply)
                if not s.data_reply.startswith("354"):
                    continue
                body = bytearray()
                while True:
                    chunk = await reader.readline()
                    if not chunk:
                        return
                    if chunk == b".\r\n":
                        break
                    body += chunk[1:] if chunk.startswith(b".") else chunk
                tx.data = bytes(body)
                await self._finish(tx, say)
                if s.drop_after_data or s.close_after_reply:
                    return
                tx = Transaction(tls=tls, helo=tx.helo)
            elif verb == "BDAT":
                words = line.split()
                size = int(words[1])
                tx.data += await reader.readexactly(size)
                tx.bdat = True
                if len(words) > 2 and words[2].upper() == "LAST":
                    await self._finish(tx, say)
                    if s.drop_after_data:
                        return
                    tx = Transaction(tls=tls, helo=tx.helo)
                else:
                    await say(f"250 2.0.0 {size} octets received")
            elif verb == "RSET":
                tx = Transaction(tls=tls, helo=tx.helo)
                if s.rset_waits:
                    try:
                        ahead = await asyncio.wait_for(reader.readline(), s.rset_waits)
                    except TimeoutError:
                        ahead = b""
                    self.rset_grouped.append(bool(ahead))
                    await say(s.rset_reply)
                    if ahead:
                        pending.append(ahead)
                    continue
                await say(s.rset_reply)
            elif verb == "QUIT":
                await say("221 2.0.0 bye")
                return
            else:
                await say("500 5.5.2 what?")

    async def _finish(self, tx: Transaction, say: object) -> None:
        self.received.append(tx)
        if self.script.drop_after_data:
            return
        await say(self.script.final_reply)  # type: ignore[operator]
