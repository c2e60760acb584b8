"""Sender binding for submission: which addresses an authenticated user may send as.

On port 25 anyone can claim any sender; on submission Pigeon knows who the user is and holds
them to it, on the envelope (MAIL FROM) and on the ``From:``/``Sender:`` header fields. This is
Pigeon's local answer to spoofing (RFC 6409 §6.1 lets a submission server enforce it).

Rules (``may_send_as(user, address, directory)``), for a user logged in as ``user`` (folded):
1. Their own address, compared folded (``Alice@Example.org`` is ``alice@example.org``).
2. Sub-addressed forms of any allowed address: ``alice+lists@example.org`` (split at the first
   character of the recipient delimiter setting; a quoted local part is never split).
3. An alias all of whose targets lead to the user alone: directly, or through other aliases
   (at most ``MAX_DEPTH`` deep). An alias that also delivers to anyone else, a catch-all
   ``@domain``, or an alias chain that loops is *not* theirs: it is shared.
4. The user's extra identities (set by the operator with the command line): exact addresses,
   or ``@domain`` for every address of a domain (for a user who owns a whole domain).
5. The null sender ``<>`` is allowed in MAIL FROM (MDNs and vacation replies use it; it claims
   nobody's identity).
6. Every address in every ``From:`` and ``Sender:`` field must be allowed (RFC 5322 §3.6.2
   allows several authors). A field that cannot be parsed cleanly (the ``email`` package reports
   an invalid-header defect, as for ``a@b.example <evil@c.example>``) or names no address is
   refused: a check that guesses can be fooled. A message without ``From:`` is not refused here
   (it claims no identity). Anything refused gets ``553 5.7.1``.
7. The header fields are collected while the message streams (``FromCollector``), at most
   ``MAX_FROM_BYTES``; the check runs at the end of DATA, before the commit.

What can go wrong: nothing raises; refusals are ``Reply`` values naming the address. A
directory error while checking propagates to the caller (smtpd answers ``451 4.3.0``).
"""

from __future__ import annotations

from collections.abc import Sequence
from email.errors import InvalidHeaderDefect
from email.policy import SMTPUTF8
from typing import Protocol, runtime_checkable

from pigeon.core.address import Address, AddressError, parse_address
from pigeon.directory import MAX_DEPTH, Directory, fold
from pigeon.proto.message.headers import HeaderScanner
from pigeon.proto.smtp.reply import Reply

C553_SENDER_NOT_OWNED = Reply(553, "5.7.1", "Sender address not owned by the authenticated user")  # RFC 3463 §3.8
C553_FROM_UNPARSABLE = Reply(553, "5.7.1", "From: header field cannot be checked: unclear address")
C553_FROM_TOO_BIG = Reply(553, "5.7.1", "From:/Sender: header fields too long to check")

# A From: field lists a few authors; 64 KiB of From:/Sender: text is far beyond any real message
# (RFC 5322 §2.1.1 limits a line to 998 octets) and bounds what we hold.
MAX_FROM_BYTES = 64 * 1024
CHECKED_FIELDS = ("from", "sender")


class SenderDirectory(Protocol):
    """What the sender check needs from the directory."""

    def alias_targets(self, key: str) -> Sequence[str] | None:
        """The targets of the alias named ``key`` (folded), as written; None: no such alias."""
        ...

    def sender_identities(self, user: str) -> Sequence[str]:
        """The extra identities of the user ``user`` (folded): addresses or ``@domain``."""
        ...


@runtime_checkable
class _HasIdentities(Protocol):
    def sender_identities(self, user: str) -> Sequence[str]: ...


class DirectorySenders:
    """``SenderDirectory`` over ``pigeon.directory.Directory`` as it is today.

    Aliases are read with ``Directory.aliases()`` once per ``DirectorySenders`` (build one per
    check: O(number of aliases)); identities come from ``Directory.sender_identities`` once the
    directory has it (the ``users.sender_identities`` column exists), else there are none.
    """

    def __init__(self, directory: Directory) -> None:
        self._directory = directory
        self._aliases: dict[str, list[str]] | None = None

    def alias_targets(self, key: str) -> Sequence[str] | None:
        if self._aliases is None:
            self._aliases = dict(self._directory.aliases())
        return self._aliases.get(key)

    def sender_identities(self, user: str) -> Sequence[str]:
        directory: object = self._directory
        if isinstance(directory, _HasIdentities):
            return directory.sender_identities(user)
        return ()


def _folded(text: str) -> str | None:
    try:
        return fold(parse_address(text.strip(), utf8=True))
    except AddressError:
        return None


def _base(address: Address, delimiters: str) -> Address | None:
    """``alice`` for ``alice+tag`` (rule 2); None when there is nothing to strip."""
    if not delimiters or address.local.startswith('"'):
        return None
    for i, ch in enumerate(address.local):
        if ch in delimiters:
            return Address(address.local[:i], address.domain) if i > 0 else None
    return None


def _leads_only_to(key: str, user: str, directory: SenderDirectory, chain: tuple[str, ...]) -> bool:
    """Rule 3: every target of alias ``key`` ends at ``user``."""
    if key in chain or len(chain) >= MAX_DEPTH:
        return False  # a loop or a chain too deep: not provably theirs
    targets = directory.alias_targets(key)
    if not targets:
        return False
    for target in targets:
        folded = _folded(target)
        if folded is None:
            return False
        if folded == user:
            continue
        if directory.alias_targets(folded) is None or not _leads_only_to(folded, user, directory, chain + (key,)):
            return False
    return True


def _owns(user: str, address: Address, directory: SenderDirectory) -> bool:
    key = fold(address)
    if key == user:  # rule 1
        return True
    for identity in directory.sender_identities(user):  # rule 4
        text = identity.strip().lower()
        if text.startswith("@"):
            if address.domain.lower() == text[1:].rstrip("."):
                return True
        elif _folded(identity) == key:
            return True
    return _leads_only_to(key, user, directory, ())  # rule 3


def may_send_as(user: str, address: Address, directory: SenderDirectory, delimiters: str = "+") -> bool:
    """Whether the user logged in as ``user`` may use ``address`` as a sender (rules 1-4)."""
    me = _folded(user) or user.lower()
    if _owns(me, address, directory):
        return True
    base = _base(address, delimiters)  # rule 2
    return base is not None and _owns(me, base, directory)


def check_mail_from(
    user: str, sender: Address | None, directory: SenderDirectory, delimiters: str = "+"
) -> Reply | None:
    """The MAIL FROM check: None when allowed, else ``553 5.7.1`` naming the address."""
    if sender is None:
        return None  # rule 5
    if may_send_as(user, sender, directory, delimiters):
        return None
    return C553_SENDER_NOT_OWNED.with_text(f"Sender address <{sender}> not owned by {user}")


class FromCollector:
    """Collects the ``From:`` and ``Sender:`` fields while the message streams (rule 7).

    Feed it the same chunks as cleanup (``feed``), call ``finish`` at the end, then ``check``.
    """

    def __init__(self, max_bytes: int = MAX_FROM_BYTES) -> None:
        # The scanner only finds where header lines start and end; it never refuses anything here.
        self._scanner = HeaderScanner(max_header_bytes=2**62)
        self._max = max_bytes
        self._size = 0
        self.fields: list[tuple[str, bytearray]] = []
        self.too_big = False
        self._current: bytearray | None = None

    def feed(self, chunk: bytes) -> None:
        if self._scanner.in_headers:
            self._lines(self._scanner.feed(chunk).header)

    def finish(self) -> None:
        if self._scanner.in_headers:
            self._lines(self._scanner.finish().header)

    def _lines(self, block: bytes) -> None:
        for line in block.splitlines(keepends=True):
            if line[:1] in (b" ", b"\t"):
                if self._current is not None:
                    self._add(self._current, line)
                continue
            self._current = None
            name, colon, value = line.partition(b":")
            if colon and name.strip().decode("ascii", "replace").lower() in CHECKED_FIELDS:
                self._current = bytearray()
                self.fields.append((name.strip().decode("ascii").lower(), self._current))
                self._add(self._current, value)

    def _add(self, target: bytearray, data: bytes) -> None:
        self._size += len(data)
        if self._size > self._max:
            self.too_big = True
            return
        target += data

    def addresses(self) -> list[Address] | Reply:
        """Every address of every From:/Sender: field, or the refusal (rule 6)."""
        if self.too_big:
            return C553_FROM_TOO_BIG
        out: list[Address] = []
        for name, raw in self.fields:
            value = bytes(raw).decode("utf-8", "replace").replace("\r", "").replace("\n", "")
            header = SMTPUTF8.header_factory(name, value.strip())
            defects = getattr(header, "defects", ())
            mailboxes = getattr(header, "addresses", ())
            if any(isinstance(d, InvalidHeaderDefect) for d in defects) or not mailboxes:
                return C553_FROM_UNPARSABLE.with_text(f"{name.capitalize()}: header field cannot be checked")
            for mailbox in mailboxes:
                try:
                    out.append(parse_address(str(mailbox.addr_spec), utf8=True))
                except AddressError:
                    return C553_FROM_UNPARSABLE.with_text(
                        f"{name.capitalize()}: address {str(mailbox.addr_spec)[:100]!r} cannot be checked"
                    )
        return out

    def check(self, user: str, directory: SenderDirectory, delimiters: str = "+") -> Reply | None:
        """None when every From:/Sender: address is the user's, else ``553 5.7.1``."""
        found = self.addresses()
        if isinstance(found, Reply):
            return found
        for address in found:
            if not may_send_as(user, address, directory, delimiters):
                return C553_SENDER_NOT_OWNED.with_text(f"From: address <{address}> not owned by {user}")
        return None
