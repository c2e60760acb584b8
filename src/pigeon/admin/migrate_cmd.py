"""Moving in and out: ``pigeon import maildir|mbox``, ``pigeon export mbox``, ``pigeon user import``.

Rules:
1. ``import maildir PATH ADDRESS`` copies every folder of a Maildir (``store.foreign`` Rules
   1-4) into the user's mailbox, keeping flags, keywords and subfolders; with Dovecot's
   ``dovecot-uidlist`` it keeps UIDVALIDITY and UIDs (``store.mailbox.importer`` Rule 2), so a
   client that knew the old server does not download everything again. It says how many
   messages could not keep their UID.
2. ``import mbox FILE ADDRESS [--folder F]`` (default INBOX) and ``export mbox ADDRESS
   [--folder F] [-o FILE]`` (default standard output) read and write mboxrd (``store.foreign``
   Rules 5, 6). Export reads a consistent view of the folder (one SELECT) and never changes it.
3. ``user import FILE`` reads a Dovecot passwd-file (``user:{SCHEME}hash:uid:gid:gecos:home:
   shell:extra``, doc.dovecot.org "Passwd-file") and adds each user with the hash as it is
   (``auth.schemes``); the next successful login rehashes it to argon2id. A user who exists
   already is left alone and counted; a line with a refused scheme is reported with its line
   number (never the hash) and the others still imported. Exit status 1 if any line failed.
4. The user must exist (in the directory) before mail is imported for it; the commands work
   whether the server runs or not (the index is shared through SQLite, ``index`` Rule 1).
5. Long runs show progress (``progress``): a bar on a terminal, plain lines otherwise.

What can go wrong: a missing user, folder or file, or a malformed source is one ``pigeon:``
line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from pigeon.admin.progress import Progress
from pigeon.clocks import SystemClock
from pigeon.config import Config
from pigeon.core.address import parse_address
from pigeon.directory import Directory, DirectoryError
from pigeon.store.foreign import ForeignMailError, read_maildir, read_mbox, write_mbox
from pigeon.store.mailbox import MailboxError, MailStore
from pigeon.store.mailbox.account import Account
from pigeon.store.mailbox.importer import ImportedMessage

MAX_MBOX_MESSAGE = 256 << 20  # octets: a message bigger than this in an mbox is malformed, not mail


def _directory(config: Config, create: bool = False) -> Directory:
    if create:  # like `pigeon user add`, `user import` may start an installation
        config.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    elif not (config.data_dir / "directory.sqlite3").exists():
        raise DirectoryError(f"{config.data_dir}: no Pigeon data directory here (no directory.sqlite3)")
    return Directory(config.data_dir / "directory.sqlite3", config.domains, config.postmaster,
                     config.smtp.recipient_delimiter)


def _reported(handler: Callable[[argparse.Namespace, Config], int]) -> Callable[[argparse.Namespace, Config], int]:
    """Rule: every refusal is one ``pigeon:`` line and exit status 1, never a traceback."""
    def run(args: argparse.Namespace, config: Config) -> int:
        try:
            return handler(args, config)
        except (DirectoryError, MailboxError, ForeignMailError, OSError) as exc:
            text = exc.text if isinstance(exc, MailboxError) else str(exc)
            print(f"pigeon: {text}", file=sys.stderr)
            return 1
    return run


def _account(config: Config, address: str) -> Account:
    addr = parse_address(address.strip(), utf8=True)
    with _directory(config) as directory:
        if not directory.user_exists(addr):
            raise DirectoryError(f"no such user: {address} (add it with `pigeon user add` first)")
    store = MailStore(config.data_dir / "mail", config.hostname, SystemClock())
    return store.account(addr)


def cmd_import_maildir(args: argparse.Namespace, config: Config) -> int:
    folders = read_maildir(Path(args.path))
    account = _account(config, args.address)
    total = sum(len(f.messages) for f in folders)
    renumbered = imported = 0
    with Progress("importing", total) as progress:
        for folder in folders:
            result = account.import_messages(folder.name, progress.track(folder.messages), folder.uidvalidity)
            imported += result.imported
            renumbered += result.renumbered
            kept = "kept" if result.uidvalidity_kept else "new"
            progress.note(f"{folder.name}: {result.imported} messages, UIDVALIDITY {kept}")
    print(f"imported {imported} messages in {len(folders)} folders for {args.address}")
    if renumbered:
        print(f"{renumbered} messages got new UIDs (their folder already held mail): "
              "clients will download them again")
    return 0


def cmd_import_mbox(args: argparse.Namespace, config: Config) -> int:
    account = _account(config, args.address)
    path = Path(args.file)
    now = time.time()
    with open(path, "rb") as stream, Progress("importing", None) as progress:
        def messages() -> Iterator[ImportedMessage]:
            for m in read_mbox(stream, MAX_MBOX_MESSAGE, now):
                yield ImportedMessage(m.data, m.flags, m.internaldate)
        result = account.import_messages(args.folder, progress.track(messages()))
    print(f"imported {result.imported} messages into {args.folder} for {args.address}")
    return 0


def cmd_export_mbox(args: argparse.Namespace, config: Config) -> int:
    account = _account(config, args.address)
    view = account.select(args.folder, readonly=True)
    try:
        metas = view.messages()

        def rows() -> Iterator[tuple[bytes, frozenset[str], float, str]]:
            for meta in metas:
                data = view.read(meta.uid)
                yield data, meta.flags, meta.internaldate, _return_path(data)

        if args.output in (None, "-"):
            count = write_mbox(sys.stdout.buffer, rows())
            sys.stdout.buffer.flush()
        else:
            with open(args.output, "xb") as out:
                count = write_mbox(out, rows())
    finally:
        view.close()
    print(f"exported {count} messages from {args.folder}", file=sys.stderr)
    return 0


def _return_path(data: bytes) -> str:
    head = data.split(b"\r\n\r\n", 1)[0]
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"return-path:"):
            value = line.split(b":", 1)[1].strip().strip(b"<>").decode("utf-8", "replace")
            if value and " " not in value:
                return value
    return "MAILER-DAEMON"


def cmd_user_import(args: argparse.Namespace, config: Config) -> int:
    added = existing = failed = 0
    with _directory(config, create=True) as directory, open(args.file, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            user, sep, rest = line.partition(":")
            stored = rest.split(":", 1)[0]
            if not sep or not user or not stored:
                print(f"pigeon: {args.file}:{number}: not a passwd-file line", file=sys.stderr)
                failed += 1
                continue
            try:
                if directory.import_user(user, stored):
                    added += 1
                else:
                    existing += 1
            except (DirectoryError, ValueError) as exc:
                print(f"pigeon: {args.file}:{number}: {exc}", file=sys.stderr)
                failed += 1
    print(f"users imported: {added}; already present: {existing}; refused: {failed}")
    return 1 if failed else 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    """Add ``import`` and ``export`` (``user import`` is added by ``register_user``)."""
    imp = subparsers.add_parser("import", parents=[common], help="bring existing mail in (maildir, mbox)")
    acts = imp.add_subparsers(dest="import_command", metavar="SOURCE", required=True)
    p = acts.add_parser("maildir", parents=[common],
                        help="a Maildir with its folders (Dovecot's UIDs kept when dovecot-uidlist is there)")
    p.add_argument("path")
    p.add_argument("address")
    p.set_defaults(handler=_reported(cmd_import_maildir))
    p = acts.add_parser("mbox", parents=[common], help="an mbox file into one folder")
    p.add_argument("file")
    p.add_argument("address")
    p.add_argument("--folder", default="INBOX")
    p.set_defaults(handler=_reported(cmd_import_mbox))
    exp = subparsers.add_parser("export", parents=[common], help="write mail out (mbox)")
    acts = exp.add_subparsers(dest="export_command", metavar="FORMAT", required=True)
    p = acts.add_parser("mbox", parents=[common], help="one folder as an mboxrd file")
    p.add_argument("address")
    p.add_argument("--folder", default="INBOX")
    p.add_argument("-o", "--output", metavar="FILE", help="default: standard output")
    p.set_defaults(handler=_reported(cmd_export_mbox))


def register_user(user_actions: argparse._SubParsersAction[argparse.ArgumentParser],
                  common: argparse.ArgumentParser) -> None:
    p = user_actions.add_parser("import", parents=[common],
                                help="add users from a Dovecot passwd-file, keeping their hashes")
    p.add_argument("file")
    p.set_defaults(handler=_reported(cmd_user_import), creates_data_dir=True)

