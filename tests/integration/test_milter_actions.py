"""The milter actions rspamd does not take on demand (quarantine, header edits, a new body,
discard, tempfail, ``X-Spam: yes`` → Junk), against a scripted milter on loopback.

The script is chosen by the message's Subject: the filter reads the HEADER packets, and at
end of message answers what the Subject asks for. It speaks libmilter's wire format
independently of ``pigeon.proto.milter`` (struct packing here), so the client is tested
against the protocol, not against itself.
"""

from __future__ import annotations

import smtplib
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import Server

pytestmark = pytest.mark.integration

CLIENT_IP = "127.0.0.9"


def pkt(code: bytes, data: bytes = b"") -> bytes:
    return struct.pack(">I", len(data) + 1) + code + data


SCRIPTS: dict[str, list[bytes]] = {
    "spamheader": [pkt(b"h", b"X-Spam-Flag\0YES\0"), pkt(b"a")],
    "quarantine": [pkt(b"q", b"looks bad\0"), pkt(b"c")],
    "edit": [pkt(b"m", struct.pack(">I", 1) + b"Subject\0edited subject\0"),
             pkt(b"i", struct.pack(">I", 0) + b"X-First\0first field\0"),
             pkt(b"h", b"X-Filter\0seen\0"),
             pkt(b"b", b"a new body\r\n"), pkt(b"c")],
    "discard": [pkt(b"d")],
    "tempfail": [pkt(b"t")],
    "replycode": [pkt(b"y", b"550 5.7.0 Not this one\0")],
}


class ScriptedMilter:
    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.commands: list[bytes] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        buf = b""
        subject = ""
        with conn:
            while True:
                while len(buf) < 4 or len(buf) < 4 + struct.unpack(">I", buf[:4])[0]:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                n = struct.unpack(">I", buf[:4])[0]
                code, payload, buf = buf[4:5], buf[5 : 4 + n], buf[4 + n :]
                self.commands.append(code)
                if code == b"O":
                    conn.sendall(pkt(b"O", struct.pack(">III", 6, 0x3F, 0)))
                elif code == b"D":
                    continue  # macros get no answer
                elif code == b"L":
                    name, value = payload.split(b"\0")[:2]
                    if name.lower() == b"subject":
                        subject = value.decode().strip()
                    conn.sendall(pkt(b"c"))
                elif code == b"E":
                    for answer in SCRIPTS.get(subject.split()[0] if subject else "", [pkt(b"c")]):
                        conn.sendall(answer)
                elif code == b"Q":
                    return
                else:
                    conn.sendall(pkt(b"c"))

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    milter = ScriptedMilter()
    s = Server(tmp_path_factory.mktemp("mx"), domains=["example.test"], host="127.0.0.2",
               extra_toml=f'[inbound]\nmilters = ["inet:127.0.0.1:{milter.port}"]\n'
                          "spf = false\ndkim = false\ndmarc = false\narc = false\n")
    s.add_user("bob@example.test")
    s.start()
    try:
        yield s
    finally:
        s.stop()
        milter.close()


def send(srv: Server, subject: str) -> tuple[int, bytes]:
    msg = (f"From: alice@outside.test\r\nTo: bob@example.test\r\nSubject: {subject}\r\n"
           "Message-ID: <x@outside.test>\r\n\r\nthe original body\r\n").encode()
    with smtplib.SMTP(srv.host, srv.smtp_port, source_address=(CLIENT_IP, 0), timeout=30) as c:
        c.ehlo("client.test")
        c.mail("alice@outside.test")
        c.rcpt("bob@example.test")
        return c.data(msg)


def find(srv: Server, token: str, folder: str = "", timeout: float = 15.0) -> bytes | None:
    return srv.find_message("bob@example.test", token, folder, timeout)


def test_x_spam_flag_added_by_the_milter_files_into_junk(srv: Server) -> None:
    assert send(srv, "spamheader tok-sh")[0] == 250
    data = find(srv, "tok-sh", folder="Junk")
    assert data is not None and b"\nX-Spam-Flag: YES\n" in data
    assert find(srv, "tok-sh", timeout=0.5) is None


def test_quarantine_action_files_into_junk(srv: Server) -> None:
    assert send(srv, "quarantine tok-q")[0] == 250
    assert find(srv, "tok-q", folder="Junk") is not None


def test_header_edits_and_a_new_body_are_applied(srv: Server) -> None:
    assert send(srv, "edit tok-edit")[0] == 250
    data = find(srv, "edited subject")
    assert data is not None
    head, body = data.split(b"\n\n", 1)
    assert head.startswith(b"Return-Path:")  # delivery's own fields, then the message
    assert b"\nX-First: first field\n" in head and head.endswith(b"\nX-Filter: seen")
    assert b"Subject: edited subject" in head and b"tok-edit" not in head
    assert body == b"a new body\n"


def test_discard_answers_250_and_delivers_nothing(srv: Server) -> None:
    code, text = send(srv, "discard tok-d")
    assert code == 250 and b"discarded" in text
    assert find(srv, "tok-d", timeout=1.0) is None


def test_tempfail_and_a_reply_code_answer_the_client(srv: Server) -> None:
    code, text = send(srv, "tempfail tok-t")
    assert code == 451 and text.startswith(b"4.7.1")
    code, text = send(srv, "replycode tok-r")
    assert code == 550 and text == b"5.7.0 Not this one"
