"""``pigeon mail``: a small user agent in the spirit of /bin/mail.

``pigeon mail send -s SUBJECT [-c CC] [-b BCC] [-a FILE]... TO...`` reads the body from standard
input and sends it through submission with the user's credentials; ``pigeon mail list
[--folder F]`` and ``pigeon mail read N [--folder F]`` read the mailbox over IMAP.

Rules:
1. Credentials: ``$PIGEON_MAIL_USER`` and ``$PIGEON_MAIL_PASSWORD``, else the file
   ``$PIGEON_MAIL_CONFIG`` (default ``~/.config/pigeon/mail.toml``) with ``user``, ``password``
   and optionally ``server`` (host name or address; default: the configured listener's). The
   file must not be readable by others (like ~/.netrc for ftp): a wider mode is refused.
2. Sending uses the configuration's ``submissions`` listener (implicit TLS) if there is one,
   else ``submission`` with STARTTLS; reading uses ``imaps``, else ``imap`` with STARTTLS.
   Certificates are verified unless the server uses the self-signed development certificate
   (``[tls]`` unset) or ``verify = false`` is in the file.
3. Attachments become MIME parts with a type guessed from the file name
   (``application/octet-stream`` otherwise); Bcc recipients are in the envelope only.
4. Exit status: 0 on success, 1 on any error, with one line on stderr saying what failed.

What can go wrong: network, TLS and login errors are reported (rule 4), never a traceback.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import imaplib
import mimetypes
import os
import smtplib
import ssl
import stat
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

from pigeon.config import Config
from pigeon.config.model import Endpoint

TIMEOUT = 30.0  # seconds for each network step; a local server answers in milliseconds
LIST_LIMIT = 50  # `mail list` shows the newest 50 messages, like the tail of mailx's header list


class MailCommandError(Exception):
    """One line for the user (rule 4)."""


@dataclass(frozen=True)
class Account:
    user: str
    password: str
    server: str | None
    verify: bool | None  # None: decide from the configuration (rule 2)


def load_account(environ: dict[str, str] | os._Environ[str]) -> Account:
    user, password = environ.get("PIGEON_MAIL_USER"), environ.get("PIGEON_MAIL_PASSWORD")
    if user and password:
        return Account(user, password, environ.get("PIGEON_MAIL_SERVER"), None)
    path = Path(environ.get("PIGEON_MAIL_CONFIG") or Path.home() / ".config" / "pigeon" / "mail.toml")
    try:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise MailCommandError(f"{path} is readable by others; chmod 600 it (it holds a password)")
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MailCommandError(f"no credentials: set PIGEON_MAIL_USER and PIGEON_MAIL_PASSWORD, "
                               f"or write user/password into {path}") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise MailCommandError(f"{path}: {exc}") from None
    user, password = data.get("user"), data.get("password")
    if not isinstance(user, str) or not isinstance(password, str):
        raise MailCommandError(f"{path}: user and password (strings) are required")
    server = data.get("server")
    verify = data.get("verify")
    return Account(user, password, server if isinstance(server, str) else None,
                   verify if isinstance(verify, bool) else None)


def _tls_context(config: Config, account: Account) -> ssl.SSLContext:
    verify = account.verify if account.verify is not None else config.tls.cert is not None
    ctx = ssl.create_default_context()
    if not verify:  # rule 2: the development default is a self-signed certificate
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _endpoint(account: Account, endpoints: tuple[Endpoint, ...]) -> tuple[str, int]:
    ep = endpoints[0]
    host = account.server or ("127.0.0.1" if ep.host in ("0.0.0.0", "::") else ep.host)
    return host, ep.port


def build_message(args: argparse.Namespace, sender: str, body: str) -> EmailMessage:
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = sender
    msg["To"] = ", ".join(args.to)
    if args.cc:
        msg["Cc"] = ", ".join(args.cc)
    msg["Subject"] = args.subject or ""
    msg["Date"] = formatdate(localtime=True)
    msg["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    msg.set_content(body)
    for name in args.attach or []:
        path = Path(name)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise MailCommandError(f"attachment {name}: {exc.strerror or exc}") from None
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        maintype, _, subtype = ctype.partition("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=path.name)
    return msg


def send(args: argparse.Namespace, config: Config) -> int:
    account = load_account(os.environ)
    body = sys.stdin.read()
    msg = build_message(args, account.user, body)
    rcpts = [*args.to, *(args.cc or []), *(args.bcc or [])]  # rule 3: Bcc only in the envelope
    ctx = _tls_context(config, account)
    try:
        if config.listen.submissions:
            host, port = _endpoint(account, config.listen.submissions)
            client: smtplib.SMTP = smtplib.SMTP_SSL(host, port, timeout=TIMEOUT, context=ctx)
        elif config.listen.submission:
            host, port = _endpoint(account, config.listen.submission)
            client = smtplib.SMTP(host, port, timeout=TIMEOUT)
            client.starttls(context=ctx)
        else:
            raise MailCommandError("no submission or submissions listener in the configuration")
        with client:
            client.login(account.user, account.password)
            refused = client.send_message(msg, from_addr=account.user, to_addrs=rcpts)
    except smtplib.SMTPResponseException as exc:
        text = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
        raise MailCommandError(f"the server refused: {exc.smtp_code} {text}") from None
    except smtplib.SMTPRecipientsRefused as exc:
        raise MailCommandError(f"recipients refused: {', '.join(exc.recipients)}") from None
    except (smtplib.SMTPException, OSError) as exc:
        raise MailCommandError(f"sending failed: {exc}") from None
    for rcpt, (code, why) in refused.items():
        print(f"mail: {rcpt} refused: {code} {why.decode(errors='replace')}", file=sys.stderr)
    return 1 if refused else 0


def _imap(config: Config, account: Account) -> imaplib.IMAP4:
    ctx = _tls_context(config, account)
    try:
        if config.listen.imaps:
            host, port = _endpoint(account, config.listen.imaps)
            conn: imaplib.IMAP4 = imaplib.IMAP4_SSL(host, port, ssl_context=ctx, timeout=TIMEOUT)
        elif config.listen.imap:
            host, port = _endpoint(account, config.listen.imap)
            conn = imaplib.IMAP4(host, port, timeout=TIMEOUT)
            conn.starttls(ssl_context=ctx)
        else:
            raise MailCommandError("no imap or imaps listener in the configuration")
        conn.login(account.user, account.password)
        return conn
    except (imaplib.IMAP4.error, OSError) as exc:
        raise MailCommandError(f"IMAP login failed: {exc}") from None


def _select(conn: imaplib.IMAP4, folder: str) -> int:
    typ, data = conn.select(_quote(folder), readonly=True)
    if typ != "OK":
        raise MailCommandError(f"cannot open folder {folder}: {data[0]!r}")
    return int(data[0] or 0)


def _quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def list_messages(args: argparse.Namespace, config: Config) -> int:
    conn = _imap(config, load_account(os.environ))
    try:
        count = _select(conn, args.folder)
        if count == 0:
            print(f"No mail in {args.folder}.")
            return 0
        first = max(1, count - LIST_LIMIT + 1)
        typ, data = conn.fetch(f"{first}:{count}", "(FLAGS BODY.PEEK[HEADER.FIELDS (FROM SUBJECT DATE)])")
        if typ != "OK":
            raise MailCommandError(f"FETCH failed: {data!r}")
        n = first
        for item in data:
            if not isinstance(item, tuple):
                continue
            head = email.message_from_bytes(item[1], policy=email.policy.default)
            seen = b"\\Seen" in item[0]
            print(f"{' ' if seen else 'N'} {n:>4}  {str(head['From'] or '')[:30]:<30}  "
                  f"{str(head['Date'] or '')[:25]:<25}  {str(head['Subject'] or '')[:60]}")
            n += 1
        return 0
    finally:
        _logout(conn)


def read_message(args: argparse.Namespace, config: Config) -> int:
    conn = _imap(config, load_account(os.environ))
    try:
        count = _select(conn, args.folder)
        if not 1 <= args.number <= count:
            raise MailCommandError(f"no message {args.number} in {args.folder} ({count} messages)")
        typ, data = conn.fetch(str(args.number), "(BODY.PEEK[])")
        raw = next((item[1] for item in data if isinstance(item, tuple)), None)
        if typ != "OK" or raw is None:
            raise MailCommandError(f"FETCH failed: {data!r}")
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        for name in ("From", "To", "Cc", "Date", "Subject"):
            if msg[name]:
                print(f"{name}: {msg[name]}")
        print()
        part = msg.get_body(preferencelist=("plain", "html")) if isinstance(msg, EmailMessage) else None
        print(part.get_content() if part is not None else "(no text part)")
        if isinstance(msg, EmailMessage):
            for att in msg.iter_attachments():
                print(f"[attachment: {att.get_filename() or '(unnamed)'} {att.get_content_type()}]")
        return 0
    finally:
        _logout(conn)


def _logout(conn: imaplib.IMAP4) -> None:
    try:
        conn.logout()
    except (imaplib.IMAP4.error, OSError):
        pass  # the session is over either way


Handler = Callable[[argparse.Namespace, Config], int]


def _run(handler: Handler) -> Handler:
    def wrapped(args: argparse.Namespace, config: Config) -> int:
        try:
            return handler(args, config)
        except MailCommandError as exc:
            print(f"mail: {exc}", file=sys.stderr)
            return 1

    return wrapped


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    """Add ``pigeon mail send|list|read``."""
    mail = subparsers.add_parser("mail", parents=[common], help="send and read mail as a user (like /bin/mail)")
    sub = mail.add_subparsers(dest="mail_command", metavar="ACTION")
    sub.required = True
    # Not the common parents: /bin/mail's -c (Cc) takes the place of the short form of --config.
    p = sub.add_parser("send", help="send the text on stdin through submission")
    p.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, help="configuration file")
    p.add_argument("to", nargs="+", metavar="TO")
    p.add_argument("-s", dest="subject", metavar="SUBJECT")
    p.add_argument("-c", dest="cc", action="append", metavar="CC")
    p.add_argument("-b", dest="bcc", action="append", metavar="BCC")
    p.add_argument("-a", dest="attach", action="append", metavar="FILE")
    p.set_defaults(handler=_run(send))
    p = sub.add_parser("list", parents=[common], help="list the newest messages of a folder (IMAP)")
    p.add_argument("--folder", default="INBOX")
    p.set_defaults(handler=_run(list_messages))
    p = sub.add_parser("read", parents=[common], help="show message N of a folder (IMAP)")
    p.add_argument("number", type=int, metavar="N")
    p.add_argument("--folder", default="INBOX")
    p.set_defaults(handler=_run(read_message))
