"""``pigeon sendmail`` (and the ``sendmail`` entry point): local programs hand mail to Pigeon.

``sendmail [-t] [-i|-oi] [-f FROM] [-F NAME] [-N DSN] [-R RET] [-V ENVID] [RCPT...]`` reads
the message on standard input, as cron, git send-email and PHP's mail() expect. The prepared
message goes to the maildrop (``pigeon.submission.spool``), then to the running server over
the control socket, or straight into the queue when no server runs (the next start delivers it).

Rules (the sendmail conventions, as Postfix's sendmail(1) implements them):
1. Recipients are the arguments (comma-separated lists allowed) and, with ``-t``, the
   addresses of the ``To:``, ``Cc:`` and ``Bcc:`` fields (the ``Resent-`` ones instead when a
   ``Resent-To/Cc/Bcc`` field is present); ``-t`` *adds* to the arguments. ``Bcc:`` and
   ``Resent-Bcc:`` fields are always removed from the message (they must reach no recipient).
2. ``-f`` sets the envelope sender (``-f ''`` or ``-f '<>'``: the null sender); the default is
   the invoking Unix user (effective uid) at the configured ``hostname``. An address without
   ``@`` is qualified with ``@hostname``. ``-F`` is the full name used when a ``From:`` field
   must be added (a message without ``From:`` gets one: RFC 5322 §3.6 requires it).
3. Without ``-i``/``-oi``, a line holding a single ``.`` ends the input; with it, input ends
   at end of file only. No dot-unstuffing is done (it is not SMTP).
4. Line ends become CRLF (a bare LF is the local convention; RFC 5322 §2.3 wants CRLF). A
   leading mbox ``From `` line is dropped. A message not ending in a line end gets one.
5. ``Message-ID:`` and ``Date:`` are added by cleanup when missing (RFC 6409 §8), on both paths.
6. Bounds: the header section is held in memory up to ``MAX_HEADER_BYTES`` (1 MiB, cleanup's
   limit); the body streams to the maildrop file up to ``[limits] max_message_size``.
7. Exit codes from sysexits.h: 0 queued; 64 usage (bad option, no recipient); 65 bad data
   (message too big, bad sender, refused as a loop or malformed); 67 bad recipient address;
   69 refused permanently; 70 internal error; 74 reading standard input failed; 75 try again
   (server busy, disk full, the server is starting); 77 no permission on the data directory;
   78 configuration error. A message on standard error says why, as ``sendmail: ...``.
8. The invoking user must be able to use the data directory (its owner): the control socket
   and the queue are private to it (docs/security.md). A setgid maildrop for other users is
   future work.

What can go wrong: everything ends in an exit code of rule 7; nothing is ever reported as sent
unless it passed the queue's commit point.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import pwd
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.policy import SMTPUTF8
from email.utils import formataddr
from pathlib import Path
from typing import BinaryIO, NoReturn, TextIO

from pigeon.cleanup.intake import DEFAULT_MAX_HEADER_BYTES, Intake
from pigeon.clocks import SystemClock
from pigeon.config import Config, ConfigError, find_config
from pigeon.control.client import ControlError, ControlUnavailable, call, server_running
from pigeon.core.address import Address, AddressError, parse_address
from pigeon.core.results import MailError
from pigeon.directory import Directory, DirectoryError
from pigeon.queue.store import FileQueueStore
from pigeon.submission.spool import (
    SpooledMessage,
    maildrop_dir,
    new_maildrop_file,
    open_transaction,
    queued,
    refused,
    sweep_maildrop,
)

log = logging.getLogger(__name__)

EX_OK = 0
EX_USAGE = 64
EX_DATAERR = 65
EX_NOUSER = 67
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70
EX_IOERR = 74
EX_TEMPFAIL = 75
EX_NOPERM = 77
EX_CONFIG = 78

MAX_HEADER_BYTES = DEFAULT_MAX_HEADER_BYTES  # rule 6: the same bound cleanup applies
READ_LIMIT = 64 * 1024  # one readline at most: a longer line is read in pieces (memory stays flat)
CONTROL_TIMEOUT = 300.0  # a 50 MiB message queued with fsyncs on a slow disk: minutes, not hours
_FIELD = re.compile(rb"^([\x21-\x39\x3b-\x7e]+)[ \t]*:")  # RFC 5322 §3.6.8 field name
_NOTIFY = {"NEVER", "SUCCESS", "FAILURE", "DELAY"}  # RFC 3461 §4.1


class SendmailError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(slots=True)
class Options:
    recipients: list[str] = field(default_factory=list)
    extract: bool = False  # -t
    ignore_dots: bool = False  # -i / -oi
    sender: str | None = None  # -f / -r
    full_name: str | None = None  # -F
    notify: tuple[str, ...] = ()  # -N
    ret: str | None = None  # -R
    envid: str | None = None  # -V
    config: str | None = None  # -C / --config (standalone only)


# -- arguments -------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise SendmailError(EX_USAGE, message)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipients", nargs="*", metavar="RCPT", help="recipient addresses")
    parser.add_argument("-t", dest="extract", action="store_true",
                        help="also take recipients from To:, Cc:, Bcc: (Bcc: is removed)")
    parser.add_argument("-i", dest="ignore_dots", action="store_true",
                        help="a line with a single '.' does not end the input (same as -oi)")
    parser.add_argument("-f", "-r", dest="sender", metavar="FROM", help="envelope sender ('' or '<>': null)")
    parser.add_argument("-F", dest="full_name", metavar="NAME", help="full name for an added From: field")
    parser.add_argument("-o", dest="options", action="append", default=[], metavar="OPTION",
                        help="sendmail options: -oi as -i; others (-oem, -odb, ...) accepted and ignored")
    parser.add_argument("-b", dest="mode", default="m", metavar="MODE", help="-bm (default) only")
    parser.add_argument("-N", dest="notify", metavar="DSN", help="DSN notify: never or success,failure,delay")
    parser.add_argument("-R", dest="ret", metavar="RET", help="DSN return: full or hdrs")
    parser.add_argument("-V", dest="envid", metavar="ENVID", help="DSN envelope id")
    parser.add_argument("-v", dest="verbose", action="store_true", help="accepted and ignored")


def options_from(ns: argparse.Namespace) -> Options:
    """Check and convert parsed arguments; raises SendmailError(EX_USAGE)."""
    if ns.mode != "m":
        hint = " (use `pigeon queue list`)" if ns.mode == "p" else ""
        raise SendmailError(EX_USAGE, f"-b{ns.mode} is not supported{hint}")
    ignore_dots = bool(ns.ignore_dots) or "i" in ns.options
    notify: tuple[str, ...] = ()
    if ns.notify:
        notify = tuple(n.strip().upper() for n in ns.notify.split(","))
        if not set(notify) <= _NOTIFY or ("NEVER" in notify and len(notify) > 1):
            raise SendmailError(EX_USAGE, f"-N {ns.notify}: use never, or success,failure,delay")
    ret = ns.ret.upper() if ns.ret else None
    if ret not in (None, "FULL", "HDRS"):
        raise SendmailError(EX_USAGE, f"-R {ns.ret}: use full or hdrs")
    return Options(
        recipients=list(ns.recipients), extract=bool(ns.extract), ignore_dots=ignore_dots,
        sender=ns.sender, full_name=ns.full_name, notify=notify, ret=ret, envid=ns.envid,
        config=getattr(ns, "sendmail_config", None),
    )


def parse_args(argv: Sequence[str]) -> Options:
    """The standalone command's arguments (errors: SendmailError with EX_USAGE)."""
    parser = _Parser(prog="sendmail", description="Send a message read from standard input.")
    add_arguments(parser)
    parser.add_argument("-C", "--config", dest="sendmail_config", metavar="FILE",
                        help="Pigeon configuration file (default: $PIGEON_CONFIG, /etc/pigeon/pigeon.toml)")
    try:
        ns = parser.parse_intermixed_args(list(argv))
    except SystemExit as exc:  # --help
        raise SendmailError(EX_OK if exc.code in (0, None) else EX_USAGE, "") from None
    return options_from(ns)


# -- addresses -------------------------------------------------------------------------------


def _qualify(text: str, hostname: str) -> Address:
    text = text.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    if "@" not in text:
        text = f"{text}@{hostname}"
    return parse_address(text, utf8=True)


def parse_sender(text: str | None, unix_user: str, hostname: str) -> Address | None:
    """Rule 2; raises SendmailError(EX_DATAERR)."""
    if text is None:
        text = unix_user
    if text.strip() in ("", "<>"):
        return None
    try:
        return _qualify(text, hostname)
    except AddressError as exc:
        raise SendmailError(EX_DATAERR, f"bad sender address {text!r}: {exc}") from None


def parse_recipients(values: Sequence[str], hostname: str, what: str = "To") -> list[Address]:
    """Addresses from arguments or header values (comma-separated, display names allowed);
    raises SendmailError(EX_NOUSER)."""
    out: list[Address] = []
    for value in values:
        header = SMTPUTF8.header_factory(what, value.replace("\r", "").replace("\n", ""))
        mailboxes = getattr(header, "addresses", ())
        if value.strip() and not mailboxes and "@" in value:
            raise SendmailError(EX_NOUSER, f"bad recipient address {value.strip()!r}")
        for mailbox in mailboxes:
            spec = str(mailbox.addr_spec)
            try:
                out.append(_qualify(spec, hostname))
            except AddressError as exc:
                raise SendmailError(EX_NOUSER, f"bad recipient address {value.strip()!r}: {exc}") from None
    return out


def _unique(addresses: Sequence[Address]) -> list[Address]:
    seen: dict[str, Address] = {}
    for a in addresses:
        seen.setdefault(a.key, a)
    return list(seen.values())


# -- reading the message ---------------------------------------------------------------------


@dataclass(slots=True)
class Header:
    name: str  # lower-cased
    lines: list[bytes]  # CRLF-terminated, continuation lines included

    @property
    def value(self) -> str:
        raw = b"".join(self.lines)
        return raw.split(b":", 1)[1].decode("utf-8", "replace").replace("\r\n", "")


class _Input:
    """Standard input as CRLF lines (rules 3 and 4), each read at most READ_LIMIT at a time."""

    def __init__(self, stream: BinaryIO, ignore_dots: bool) -> None:
        self.stream = stream
        self.ignore_dots = ignore_dots
        self.ended = False
        self._carry = b""  # a CR at the end of a partial read, held for the next piece
        self._first = True

    def pieces(self) -> tuple[bytes, bool] | None:
        """(data, complete_line) or None at the end."""
        while not self.ended:
            try:
                raw = self.stream.readline(READ_LIMIT)
            except OSError as exc:
                raise SendmailError(EX_IOERR, f"reading standard input: {exc}") from None
            data = self._carry + raw
            self._carry = b""
            first, self._first = self._first, False
            if not raw:
                self.ended = True
                return (b"\r\n", True) if data else None  # a held CR ended the last line
            if not data.endswith(b"\n"):
                if len(raw) < READ_LIMIT:
                    self.ended = True  # readline stopped short of a newline: end of input
                elif data.endswith(b"\r"):
                    data, self._carry = data[:-1], b"\r"  # it may be the CR of a CRLF
                    return data, False
                else:
                    return data, False  # a piece of a long line
            body = data[:-1] if data.endswith(b"\n") else data
            line = (body[:-1] if body.endswith(b"\r") else body) + b"\r\n"  # rule 4
            if not self.ignore_dots and line == b".\r\n":
                self.ended = True  # rule 3
                return None
            if first and line.startswith(b"From "):
                continue  # rule 4: an mbox separator, not a header
            return line, True
        return None


@dataclass(slots=True)
class Prepared:
    name: str
    sender: Address | None
    recipients: list[Address]
    eight_bit: bool
    size: int


def _read_headers(source: _Input) -> tuple[list[Header], bytes | None]:
    """The header section, and the first line (or piece of it) after it (None at end of input)."""
    headers: list[Header] = []
    size = 0
    while (piece := source.pieces()) is not None:
        data, complete = piece
        continuation = data[:1] in (b" ", b"\t") and bool(headers)
        m = _FIELD.match(data)
        if m is None and not continuation:
            return headers, data  # the empty line, or the body without one (RFC 5322 §2.1)
        size += len(data)
        while not complete and (more := source.pieces()) is not None:  # a header line in pieces
            data += more[0]
            complete = more[1]
            size += len(more[0])
            if size > MAX_HEADER_BYTES:
                break
        if size > MAX_HEADER_BYTES:  # rule 6
            raise SendmailError(EX_DATAERR, f"header section larger than {MAX_HEADER_BYTES} bytes")
        if continuation:
            headers[-1].lines.append(data)
        elif m is not None:
            headers.append(Header(m.group(1).decode("ascii").lower(), [data]))
    return headers, None


def prepare(stream: BinaryIO, options: Options, hostname: str, unix_user: str, drop: Path,
            max_size: int) -> Prepared:
    """Read standard input into a maildrop file (rules 1-6). The caller removes the file."""
    sender = parse_sender(options.sender, unix_user, hostname)
    source = _Input(stream, options.ignore_dots)
    headers, first_body = _read_headers(source)
    recipients = parse_recipients(options.recipients, hostname)
    if options.extract:  # rule 1
        resent = any(h.name in ("resent-to", "resent-cc", "resent-bcc") for h in headers)
        wanted = ("resent-to", "resent-cc", "resent-bcc") if resent else ("to", "cc", "bcc")
        recipients += parse_recipients([h.value for h in headers if h.name in wanted], hostname)
    recipients = _unique(recipients)
    if not recipients:
        where = "in the arguments or the message header" if options.extract else "(give RCPT or use -t)"
        raise SendmailError(EX_USAGE, f"no recipient addresses {where}")
    kept = [h for h in headers if h.name not in ("bcc", "resent-bcc")]
    if not any(h.name == "from" for h in kept):  # rule 2
        who = str(sender) if sender is not None else f"{unix_user}@{hostname}"
        added = f"From: {formataddr((options.full_name or '', who))}\r\n"
        kept.insert(0, Header("from", [added.encode("utf-8")]))

    name, fd = new_maildrop_file(drop)
    size = 0
    eight_bit = False
    with os.fdopen(fd, "wb") as out:
        def write(data: bytes) -> None:
            nonlocal size, eight_bit
            size += len(data)
            if size > max_size:
                raise SendmailError(EX_DATAERR, f"message larger than the limit of {max_size} bytes")
            if not eight_bit and not data.isascii():
                eight_bit = True
            out.write(data)

        for h in kept:
            for line in h.lines:
                write(line)
        if first_body is not None:
            write(first_body)
        last_complete = True
        while (piece := source.pieces()) is not None:
            data, last_complete = piece
            write(data)
        if not last_complete:
            write(b"\r\n")  # rule 4
        out.flush()
    return Prepared(name, sender, recipients, eight_bit, size)


# -- handing it over -------------------------------------------------------------------------


def _answer(result: object) -> str:
    """Map a ``sendmail.submit`` answer to the queue id, or raise with the exit status."""
    if not isinstance(result, dict):
        raise SendmailError(EX_SOFTWARE, f"unexpected answer from the server: {result!r}")
    status = result.get("status")
    if status == "queued":
        return str(result.get("id"))
    reply = str(result.get("reply", ""))
    if status == "permanent":
        code = EX_DATAERR if " 5.4.6 " in f" {reply} " or " 5.3.4 " in f" {reply} " else EX_UNAVAILABLE
        raise SendmailError(code, f"message refused: {reply}")
    raise SendmailError(EX_TEMPFAIL, f"message not queued, try again later: {reply}")


def submit_offline(config: Config, drop: Path, message: SpooledMessage) -> str | None:
    """Queue the message ourselves while holding the server's lock, so a server that starts
    meanwhile cannot recover the queue under us. None when a server holds the lock."""
    lock_path = config.data_dir / "pigeon.lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None
        clock = SystemClock()
        queue = FileQueueStore(config.data_dir / "queue", clock, io_threads=1)
        try:
            with Directory(config.directory_path, config.domains, config.postmaster,
                           config.smtp.recipient_delimiter) as directory:
                intake = Intake(queue, directory, config.hostname, clock,
                                max_received=config.limits.max_received_headers)
                try:
                    record = open_transaction(intake, drop, message).commit_sync()
                except MailError as exc:
                    return _answer(refused(exc))
                return _answer(queued(record))
        finally:
            queue.close()
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def hand_over(config: Config, drop: Path, message: SpooledMessage,
              caller: Callable[..., object] = call) -> str:
    """Rule: the running server first, else the queue directly. Returns the queue id."""
    for _ in range(2):
        try:
            return _answer(caller(config.data_dir, "sendmail.submit", CONTROL_TIMEOUT, **message.to_json()))
        except ControlUnavailable:
            if server_running(config.data_dir):
                raise SendmailError(EX_TEMPFAIL, "the server is starting or its control socket "
                                    "does not answer; try again") from None
        except ControlError as exc:
            raise SendmailError(EX_TEMPFAIL, f"the server could not take the message: {exc}") from None
        except OSError as exc:
            raise SendmailError(EX_TEMPFAIL, f"talking to the server: {exc}") from None
        qid = submit_offline(config, drop, message)
        if qid is not None:
            return qid
        time.sleep(1.0)  # a server took the lock between our two checks: ask it instead
    raise SendmailError(EX_TEMPFAIL, "the server is starting; try again")


def unix_user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid{os.geteuid()}"


def run(options: Options, config: Config, stdin: BinaryIO, stderr: TextIO,
        caller: Callable[..., object] = call) -> int:
    """Prepare, hand over, clean up; the sysexits status (rule 7)."""
    user = unix_user()
    path: Path | None = None
    try:
        try:
            drop = maildrop_dir(config.data_dir)
            sweep_maildrop(drop, time.time())
        except PermissionError as exc:
            raise SendmailError(EX_NOPERM, f"{config.data_dir}: {exc.strerror}") from None
        prepared = prepare(stdin, options, config.hostname, user, drop, config.limits.max_message_size)
        path = drop / prepared.name
        smtputf8 = any(a.is_utf8 for a in prepared.recipients) or (
            prepared.sender is not None and prepared.sender.is_utf8)
        message = SpooledMessage(
            name=prepared.name, sender=prepared.sender, recipients=tuple(prepared.recipients), user=user,
            body="8BITMIME" if prepared.eight_bit else "7BIT", smtputf8=smtputf8,
            notify=options.notify, ret=options.ret, envid=options.envid,
        )
        hand_over(config, drop, message, caller)
        return EX_OK
    except SendmailError as exc:
        if str(exc):
            print(f"sendmail: {exc}", file=stderr)
        return exc.status
    except (DirectoryError, OSError) as exc:
        status = EX_NOPERM if isinstance(exc, PermissionError) else EX_TEMPFAIL  # ENOSPC, EIO: later
        print(f"sendmail: {exc}", file=stderr)
        return status
    finally:
        if path is not None:
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("sendmail: cannot remove %s: %s", path, exc)


# -- command line ----------------------------------------------------------------------------


def cmd_sendmail(args: argparse.Namespace, config: Config) -> int:
    try:
        options = options_from(args)
    except SendmailError as exc:
        print(f"sendmail: {exc}", file=sys.stderr)
        return exc.status
    return run(options, config, sys.stdin.buffer, sys.stderr)


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add ``pigeon sendmail`` to the command line."""
    helptext = "send a message read from standard input (sendmail-compatible)"
    p = subparsers.add_parser("sendmail", parents=[common], help=helptext, description=helptext)
    add_arguments(p)
    p.set_defaults(handler=cmd_sendmail)


def main(argv: Sequence[str] | None = None) -> int:
    """The ``sendmail`` console entry point."""
    try:
        options = parse_args(sys.argv[1:] if argv is None else argv)
    except SendmailError as exc:
        if str(exc):
            print(f"sendmail: {exc}", file=sys.stderr)
        return exc.status
    try:
        config = find_config(options.config, os.environ)
    except ConfigError as exc:
        print(f"sendmail: {exc}", file=sys.stderr)
        return EX_CONFIG
    try:
        return run(options, config, sys.stdin.buffer, sys.stderr)
    except KeyboardInterrupt:
        return EX_TEMPFAIL
    except Exception as exc:  # the contract is an exit code, never a traceback to cron
        log.exception("sendmail failed")
        print(f"sendmail: internal error: {exc}", file=sys.stderr)
        return EX_SOFTWARE


if __name__ == "__main__":
    sys.exit(main())
