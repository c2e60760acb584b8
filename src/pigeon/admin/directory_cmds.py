"""The ``pigeon domain|user|alias|aliases`` commands: editing the user directory.

Rules:
1. They open the directory database directly (``data_dir/directory.sqlite3``), so they work
   whether the server runs or not; the running server sees each change at its next lookup.
2. Each handler is ``(args, config) -> int``: 0 on success, 1 on a refused or failed operation
   (after printing ``pigeon: <message>`` on stderr), 2 on a usage error.
3. Passwords come from ``--password-stdin`` (the first line of standard input) or from two
   ``getpass`` prompts; they are never printed, logged or put in an error message.
4. Listings print one item per line on stdout, in a form the matching command reads back
   (``alias list`` prints aliases(5) lines that ``aliases import`` accepts).

What can go wrong: a missing data directory is created (mode 0700) by ``domain add`` and
``user add`` only; ``admin.cli`` refuses the other commands on a missing one before they run
(its rule 4). Everything else the directory refuses is reported as in rule 2.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from pathlib import Path

from pigeon.admin import migrate_cmd
from pigeon.config import Config
from pigeon.core.address import AddressError, parse_address
from pigeon.directory import Directory, DirectoryError, fold
from pigeon.mailauth.keys import KeyStore

Handler = Callable[[argparse.Namespace, Config], int]


def _fail(message: str, code: int = 1) -> int:
    print(f"pigeon: {message}", file=sys.stderr)
    return code


def open_directory(config: Config) -> Directory:
    """The directory of ``config``, creating the data directory if needed."""
    try:
        config.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        reason = exc.strerror or exc
        raise DirectoryError(f"{config.data_dir}: cannot create the data directory: {reason}") from None
    return Directory(
        config.data_dir / "directory.sqlite3",
        config.domains,
        config.postmaster,
        config.smtp.recipient_delimiter,
    )


def _with_directory(config: Config, action: Callable[[Directory], None]) -> int:
    """Run ``action`` on the open directory; a DirectoryError becomes exit code 1."""
    try:
        with open_directory(config) as directory:
            action(directory)
    except DirectoryError as exc:
        return _fail(str(exc))
    return 0


# -- domains ---------------------------------------------------------------------------------


def domain_add(args: argparse.Namespace, config: Config) -> int:
    def act(d: Directory) -> None:
        d.add_domain(args.domain)
        print(f"domain added: {args.domain.lower()}")
        # issue 17: every local domain gets its DKIM keys without an admin step (mailauth.keys).
        try:
            KeyStore(config.data_dir / "dkim").ensure(args.domain)
        except (OSError, ValueError) as exc:
            print(f"pigeon: {args.domain}: DKIM keys not made ({exc}); the server makes them at start",
                  file=sys.stderr)

    return _with_directory(config, act)


def domain_remove(args: argparse.Namespace, config: Config) -> int:
    def act(d: Directory) -> None:
        d.remove_domain(args.domain)
        print(f"domain removed: {args.domain.lower()}")

    return _with_directory(config, act)


def domain_list(args: argparse.Namespace, config: Config) -> int:
    def act(d: Directory) -> None:
        for name in d.domains():
            print(f"{name}\t(config file)" if name in config.domains else name)

    return _with_directory(config, act)


# -- users -----------------------------------------------------------------------------------


def _read_password(args: argparse.Namespace) -> str:
    """The new password, from stdin or two prompts; raises DirectoryError when unusable."""
    if args.password_stdin:
        line = sys.stdin.readline()
        password = line.rstrip("\r\n")
    else:
        try:
            password = getpass.getpass("New password: ")
            again = getpass.getpass("Repeat password: ")
        except EOFError:
            raise DirectoryError("no password given (use --password-stdin to pipe one)") from None
        if password != again:
            raise DirectoryError("the passwords do not match")
    if not password:
        raise DirectoryError("the password is empty")
    return password


def _check_new_user(d: Directory, text: str) -> None:
    """Refuse before prompting for a password when the user cannot be created anyway."""
    try:
        address = parse_address(text.strip(), utf8=True)
    except AddressError as exc:
        raise DirectoryError(f"user {text!r}: {exc}") from None
    if not d.is_local_domain(address.domain):
        domain = address.domain
        raise DirectoryError(f"{domain} is not a local domain (add it with: pigeon domain add {domain})")
    if d.user_exists(address):
        raise DirectoryError(f"user {fold(address)} already exists")


def user_add(args: argparse.Namespace, config: Config) -> int:
    def act(d: Directory) -> None:
        _check_new_user(d, args.address)
        d.add_user(args.address, _read_password(args))
        print(f"user added: {args.address}")

    return _with_directory(config, act)


def user_passwd(args: argparse.Namespace, config: Config) -> int:
    def act(d: Directory) -> None:
        d.user_forward(args.address)  # fails early, before prompting, when there is no such user
        d.set_password(args.address, _read_password(args))
        print(f"password changed: {args.address}")

    return _with_directory(config, act)


def user_remove(args: argparse.Namespace, config: Config) -> int:
    def act(d: Directory) -> None:
        d.remove_user(args.address)
        print(f"user removed: {args.address} (the mailbox under {config.data_dir / 'mail'} is kept)")

    return _with_directory(config, act)


def user_list(args: argparse.Namespace, config: Config) -> int:
    def act(d: Directory) -> None:
        for user in d.users():
            targets, keep = d.user_forward(user)
            if targets:
                print(f"{user}\tforward: {', '.join(targets)}{' (keeps a copy)' if keep else ''}")
            else:
                print(user)

    return _with_directory(config, act)


def user_forward(args: argparse.Namespace, config: Config) -> int:
    if args.keep and not args.targets:
        return _fail("--keep needs at least one TARGET (no targets clears the forward)", 2)

    def act(d: Directory) -> None:
        d.set_forward(args.address, list(args.targets), args.keep)
        if args.targets:
            keep = " (keeps a copy)" if args.keep else ""
            print(f"{args.address} forwards to {', '.join(args.targets)}{keep}")
        else:
            print(f"{args.address}: forward cleared")

    return _with_directory(config, act)


# -- aliases ---------------------------------------------------------------------------------


def alias_add(args: argparse.Namespace, config: Config) -> int:
    def act(d: Directory) -> None:
        d.add_alias(args.address, list(args.targets))
        print(f"alias added: {args.address}: {', '.join(args.targets)}")

    return _with_directory(config, act)


def alias_remove(args: argparse.Namespace, config: Config) -> int:
    def act(d: Directory) -> None:
        d.remove_alias(args.address, args.target)
        print(f"alias removed: {args.address}" + (f" → {args.target}" if args.target else ""))

    return _with_directory(config, act)


def alias_list(args: argparse.Namespace, config: Config) -> int:
    def act(d: Directory) -> None:
        for name, targets in d.aliases():
            print(f"{name}: {', '.join(targets)}")

    return _with_directory(config, act)


def aliases_import(args: argparse.Namespace, config: Config) -> int:
    path = Path(args.file)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return _fail(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}")

    def act(d: Directory) -> None:
        count = d.import_aliases(text, str(path))
        print(f"imported {count} alias(es) from {path}")

    return _with_directory(config, act)


# -- registration ----------------------------------------------------------------------------


def _group(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
    name: str,
    help_text: str,
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    parser = subparsers.add_parser(name, parents=[common], help=help_text, description=help_text)
    actions = parser.add_subparsers(dest=f"{name}_command", metavar="ACTION", required=True)
    return actions


def user_identity(args: argparse.Namespace, config: Config) -> int:
    def act(d: Directory) -> None:
        if args.identities is None:
            shown = d.sender_identities(_check_user(d, args.address))
            print(f"{args.address} may also send as: {', '.join(shown) or '(nothing else)'}")
            return
        d.set_sender_identities(args.address, list(args.identities))
        if args.identities:
            print(f"{args.address} may also send as {', '.join(args.identities)}")
        else:
            print(f"{args.address}: extra sender identities cleared")

    return _with_directory(config, act)


def _check_user(d: Directory, text: str) -> str:
    address = parse_address(text.strip(), utf8=True)
    if not d.user_exists(address):
        raise DirectoryError(f"no such user: {fold(address)}")
    return fold(address)


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add the directory commands to the ``pigeon`` command line."""
    parents = [common]

    domain = _group(subparsers, common, "domain", "local domains kept in the directory")
    p = domain.add_parser("add", parents=parents, help="add a local domain")
    p.add_argument("domain")
    p.set_defaults(handler=domain_add)
    p = domain.add_parser("remove", parents=parents, help="remove a domain (it must have no users/aliases)")
    p.add_argument("domain")
    p.set_defaults(handler=domain_remove)
    p = domain.add_parser("list", parents=parents, help="list local domains (config file and directory)")
    p.set_defaults(handler=domain_list)

    user = _group(subparsers, common, "user", "mail users (mailboxes with a password)")
    for action, helptext, handler in (
        ("add", "add a user; the password is asked twice, or read from stdin", user_add),
        ("passwd", "change a user's password", user_passwd),
    ):
        p = user.add_parser(action, parents=parents, help=helptext)
        p.add_argument("address", metavar="ADDRESS")
        p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
        p.set_defaults(handler=handler)
    migrate_cmd.register_user(user, common)
    p = user.add_parser("remove", parents=parents, help="remove a user (their mailbox files are kept)")
    p.add_argument("address", metavar="ADDRESS")
    p.set_defaults(handler=user_remove)
    p = user.add_parser("list", parents=parents, help="list users and their forwards")
    p.set_defaults(handler=user_list)
    p = user.add_parser("forward", parents=parents, help="forward a user's mail (no TARGET: clear it)")
    p.add_argument("address", metavar="ADDRESS")
    p.add_argument("targets", nargs="*", metavar="TARGET")
    p.add_argument("--keep", action="store_true", help="also keep a copy in the user's mailbox")
    p.set_defaults(handler=user_forward)

    p = user.add_parser("identity", parents=parents,
                        help="extra sender addresses for submission (@domain: a whole domain); "
                             "--set with no ADDRESS clears, no --set shows")
    p.add_argument("address", metavar="USER")
    p.add_argument("--set", dest="identities", nargs="*", default=None, metavar="ADDRESS")
    p.set_defaults(handler=user_identity)

    alias = _group(subparsers, common, "alias", "aliases: an address delivered to other addresses")
    p = alias.add_parser("add", parents=parents, help="add targets to an alias (@domain: a catch-all)")
    p.add_argument("address", metavar="ADDRESS")
    p.add_argument("targets", nargs="+", metavar="TARGET")
    p.set_defaults(handler=alias_add)
    p = alias.add_parser("remove", parents=parents, help="remove an alias, or one TARGET of it")
    p.add_argument("address", metavar="ADDRESS")
    p.add_argument("target", nargs="?", default=None, metavar="TARGET")
    p.set_defaults(handler=alias_remove)
    p = alias.add_parser("list", parents=parents, help="list aliases in aliases(5) form")
    p.set_defaults(handler=alias_list)

    aliases = _group(subparsers, common, "aliases", "bulk alias operations")
    helptext = "import an aliases(5) file (replaces the aliases it names)"
    p = aliases.add_parser("import", parents=parents, help=helptext)
    p.add_argument("file", metavar="FILE")
    p.set_defaults(handler=aliases_import)
