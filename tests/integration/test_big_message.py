"""A 50 MB message through SMTP: delivered intact while the server's memory stays bounded.

Issue 2: "Bodies are streamed to disk as they arrive; memory per session stays bounded whatever
the size (a test with a 50 MB message watches the server's RSS)". The test never holds the
message either: it generates the lines as it sends them and hashes them on the way.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator

from tests.integration.conftest import MakeServer
from tests.integration.harness import RawClient, queued_id

TARGET = 50 * 1000 * 1000  # 50 MB, under the default 50 MiB limit
MAX_GROWTH_KIB = 100 * 1024  # the RSS may grow by at most 100 MiB while the message passes


def lines(total: int) -> tuple[int, int]:
    """(number of lines, line length with CRLF) of a body of about ``total`` octets."""
    width = 78  # RFC 5322 §2.1.1: lines SHOULD be at most 78 characters
    return total // (width + 2), width + 2


def body_batches(n: int, batch: int = 10000) -> Iterator[bytes]:
    for start in range(0, n, batch):
        yield b"".join(b"line %010d " % i + b"abcdefghijklmnopqrstuvwxyz" * 2 + b"0123456789\r\n"
                       for i in range(start, min(n, start + batch)))


def test_50mb_message_is_delivered_intact_with_bounded_memory(make_server: MakeServer) -> None:
    srv = make_server()
    srv.add_user("alice@example.test")
    srv.start()
    baseline = srv.vm_kib("VmRSS")
    peak = [baseline]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            try:
                peak[0] = max(peak[0], srv.vm_kib("VmRSS"))
            except (OSError, LookupError, RuntimeError):
                return
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    n, width = lines(TARGET)
    digest = hashlib.sha256()
    sent = 0
    try:
        with RawClient(srv.host, srv.smtp_port, timeout=60) as c:
            c.greet()
            assert c.cmd(f"MAIL FROM:<big@remote.test> SIZE={n * width + 100} BODY=8BITMIME")[0] == 250
            assert c.cmd("RCPT TO:<alice@example.test>")[0] == 250
            assert c.cmd("DATA")[0] == 354
            header = b"Subject: fifty megabytes\r\n\r\n"
            c.send(header)
            for chunk in body_batches(n):
                c.send(chunk)
                digest.update(chunk.replace(b"\r\n", b"\n"))  # the Maildir stores LF line ends
                sent += len(chunk)
            c.send(b".\r\n")
            code, text = c.reply()
            assert code == 250, text
            qid = queued_id(text)
            c.cmd("QUIT")
        assert sent >= 49 * 1000 * 1000
        srv.wait_log(rf"{qid} delivered to=<alice@example\.test>", timeout=60)
    finally:
        done.set()
        sampler.join(5)
    hwm = srv.vm_kib("VmHWM")
    got = hashlib.sha256()
    [path] = srv.message_paths("alice@example.test")
    with open(path, "rb") as f:
        head = b""
        while b"\n\n" not in head:
            block = f.read(65536)
            assert block, "no end of header section"
            head += block
        got.update(head.split(b"\n\n", 1)[1])
        while block := f.read(1 << 20):
            got.update(block)
    assert got.hexdigest() == digest.hexdigest()
    growth = max(peak[0], hwm) - baseline
    assert growth < MAX_GROWTH_KIB, f"RSS grew by {growth // 1024} MiB (baseline {baseline // 1024} MiB)"
    print(f"50MB: baseline {baseline // 1024} MiB, sampled peak {peak[0] // 1024} MiB, VmHWM {hwm // 1024} MiB")

