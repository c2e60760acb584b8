#!/usr/bin/env python3
"""A trivial stand-in for Pigeon's SMTP server, to test the harness before Pigeon can serve.

It speaks the same command line as Pigeon for what the harness uses:

    standin_pigeon.py --config FILE user add ADDRESS --password-stdin
    standin_pigeon.py --config FILE serve        (foreground; SIGTERM stops it)

and reads the same TOML keys (``hostname``, ``data_dir``, ``domains``, ``[listen] smtp``).
It is deliberately naive, and it is *not* Pigeon: no queue, no separate delivery. Each message is
written straight into ``data_dir/mail/<domain>/<local>/tmp/``, fsynced, renamed into ``new/`` and
the directory fsynced (in a worker thread) before the ``250`` — i.e. "durable acceptance" and
"end-to-end" are the same moment. Run against it, the harness exercises every code path;
its numbers are a floor for a one-process asyncio server doing one fsync per message, nothing more.

Rules:
  1. It binds only the addresses in ``[listen] smtp``, and refuses non-loopback ones.
  2. Unknown recipients get ``550 5.1.1``; users are lines in ``data_dir/standin-users``.
  3. Message bodies are streamed to the file as they arrive (bounded memory per session).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import itertools
import os
import signal
import socket
import sys
import time
import tomllib
from typing import Any

_counter = itertools.count(1)  # next() is atomic under the GIL


def load_config(path: str) -> dict[str, object]:
    with open(path, "rb") as f:
        return tomllib.load(f)


def users_file(cfg: dict[str, object]) -> str:
    return os.path.join(str(cfg["data_dir"]), "standin-users")


def cmd_user_add(cfg: dict[str, object], address: str) -> None:
    sys.stdin.read()  # the password: read and ignored
    os.makedirs(str(cfg["data_dir"]), exist_ok=True)
    with open(users_file(cfg), "a", encoding="utf-8") as f:
        f.write(address.lower() + "\n")


def durable_write(maildir: str, chunks: list[bytes]) -> None:
    """tmp → fsync → rename to new → fsync new/ (the Maildir delivery protocol)."""
    for sub in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(maildir, sub), exist_ok=True)
    name = f"{time.time_ns()}.P{os.getpid()}Q{next(_counter)}.{socket.gethostname()}"
    tmp = os.path.join(maildir, "tmp", name)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        for c in chunks:
            os.write(fd, c)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, os.path.join(maildir, "new", name))
    dfd = os.open(os.path.join(maildir, "new"), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class Server:
    def __init__(self, cfg: dict[str, object]) -> None:
        self.hostname = str(cfg.get("hostname", "standin.bench.test"))
        self.data_dir = str(cfg["data_dir"])
        domains: Any = cfg.get("domains", [])
        self.domains = {str(d).lower() for d in domains}
        try:
            with open(users_file(cfg), encoding="utf-8") as f:
                self.users = {line.strip() for line in f if line.strip()}
        except FileNotFoundError:
            self.users = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        def send(line: str) -> None:
            writer.write(line.encode() + b"\r\n")

        send(f"220 {self.hostname} ESMTP stand-in")
        sender: str | None = None
        rcpts: list[str] = []
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                cmd = line.decode("ascii", "replace").rstrip("\r\n")
                verb = cmd[:4].upper()
                if verb in ("EHLO", "HELO"):
                    send(f"250-{self.hostname}\r\n250 8BITMIME" if verb == "EHLO" else f"250 {self.hostname}")
                elif cmd.upper().startswith("MAIL FROM:"):
                    sender, rcpts = cmd[10:].strip(), []
                    send("250 2.1.0 ok")
                elif cmd.upper().startswith("RCPT TO:"):
                    if sender is None:
                        send("503 5.5.1 MAIL first")
                        continue
                    addr = cmd[8:].strip().strip("<>").lower()
                    if addr in self.users:
                        rcpts.append(addr)
                        send("250 2.1.5 ok")
                    else:
                        send("550 5.1.1 no such user")
                elif verb == "DATA":
                    if not rcpts:
                        send("503 5.5.1 RCPT first")
                        continue
                    send("354 go ahead")
                    await writer.drain()
                    chunks: list[bytes] = []
                    while True:
                        data = await reader.readline()
                        if not data:
                            return
                        if data == b".\r\n":
                            break
                        chunks.append(data[1:] if data.startswith(b".") else data)
                    for r in rcpts:
                        local, _, domain = r.partition("@")
                        maildir = os.path.join(self.data_dir, "mail", domain, local)
                        await asyncio.to_thread(durable_write, maildir, chunks)
                    send("250 2.0.0 ok: delivered")
                    sender, rcpts = None, []
                elif verb == "RSET":
                    sender, rcpts = None, []
                    send("250 2.0.0 ok")
                elif verb == "NOOP":
                    send("250 2.0.0 ok")
                elif verb == "QUIT":
                    send("221 2.0.0 bye")
                    break
                else:
                    send("502 5.5.2 not implemented")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            try:
                await writer.drain()
            except ConnectionError:
                pass
            writer.close()


async def serve(cfg: dict[str, object]) -> None:
    srv = Server(cfg)
    listen: Any = cfg.get("listen", {})
    servers = []
    for hp in listen.get("smtp", []):
        host, _, port = str(hp).rpartition(":")
        host = host.strip("[]")
        if not ipaddress.ip_address(host).is_loopback:
            raise SystemExit(f"stand-in: refusing non-loopback listen address {hp}")
        servers.append(await asyncio.start_server(srv.handle, host, int(port), backlog=2048))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    for s in servers:
        s.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("serve")
    u = sub.add_parser("user")
    usub = u.add_subparsers(dest="ucmd", required=True)
    ua = usub.add_parser("add")
    ua.add_argument("address")
    ua.add_argument("--password-stdin", action="store_true")
    args = ap.parse_args()
    cfg = load_config(args.config)
    if args.cmd == "serve":
        asyncio.run(serve(cfg))
    else:
        cmd_user_add(cfg, args.address)


if __name__ == "__main__":
    main()
