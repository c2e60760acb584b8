"""Mail written by other software: a Dovecot (or any) Maildir, and mbox files.

Rules:
1. A Maildir is read as Maildir++ (http://cr.yp.to/proto/maildir.html, Courier's Maildir++):
   the root is INBOX, each ``.a.b`` directory with a ``cur/`` is the folder ``a/b`` (Dovecot's
   default separator ``.``, so a name with ``.`` inside cannot be told apart and becomes a
   hierarchy, as Dovecot shows it). Messages come from ``cur/`` and ``new/``; a ``new/`` message
   has no flags. ``tmp/`` is never read.
2. Flags: the info letters after ``:2,`` (``D F R S T``) map to the IMAP system flags; Dovecot's
   lower-case letters ``a``..``z`` are keywords 0..25 of the folder's ``dovecot-keywords`` file
   (lines ``<n> <keyword>``). An unknown letter is dropped.
3. ``dovecot-uidlist`` (Dovecot's Maildir UID list, versions 1 and 3): the header gives
   UIDVALIDITY (``V``) and the lines ``<uid> [<extension fields>] :<file base>`` (v3) or
   ``<uid> <file base>`` (v1) map a file to its UID, the base being the file name up to ``:``.
   A file missing from the list gets no UID (it is appended after the others).
4. INTERNALDATE is the file's mtime (Dovecot's own rule for Maildir).
5. An mbox is read as mboxrd (what mutt and Dovecot write; qmail's mbox(5)): a message starts
   at a line ``From <sender> <date>`` (with a time of day in it) at the start of the file or
   after an empty line; ``>From `` lines with any number of ``>`` lose one. ``Status:``/``X-Status:``/``X-Keywords:`` give the flags (``R``
   → \\Seen, ``A`` → \\Answered, ``F`` → \\Flagged, ``T`` → \\Draft, ``D`` → \\Deleted) and are
   removed with the other headers mail stores keep there (``X-UID``, ``X-IMAP``,
   ``X-IMAPbase``, ``Content-Length``, ``Lines``). INTERNALDATE is the ``From `` line's date
   (asctime, UTC), else the import time; its sender becomes a ``Return-Path:`` header when the
   message has none, so that an export writes the same ``From `` line back.
6. ``write_mbox`` writes mboxrd with ``Status``/``X-Status``/``X-Keywords`` headers, so that
   ``read_mbox`` of its output gives back the same messages and flags.

What can go wrong: OSError propagates; a malformed uidlist or keywords line is skipped with a
warning; a message larger than ``max_message`` octets in an mbox raises ``ForeignMailError``.
"""

from __future__ import annotations

import calendar
import logging
import os
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from pigeon.store.mailbox.flags import LETTER_TO_SYSTEM
from pigeon.store.mailbox.importer import ImportedMessage

log = logging.getLogger(__name__)

UIDLIST = "dovecot-uidlist"
KEYWORDS = "dovecot-keywords"
_MBOX_DROP = frozenset({b"status", b"x-status", b"x-keywords", b"x-uid", b"x-imap", b"x-imapbase",
                        b"content-length", b"lines"})
_FROM_QUOTED = re.compile(rb"^>+From ")
# A From_ line: "From <sender> <asctime>"; a time of day in it tells it from a body line that
# begins with "From " after an empty line in an mbox written without quoting (mboxo).
_FROM_LINE = re.compile(rb"^From \S*\s.*\d:\d\d")
_NEEDS_QUOTE = re.compile(rb"^>*From ")
_STATUS_FLAGS = {ord("R"): "\\Seen", ord("A"): "\\Answered", ord("F"): "\\Flagged",
                 ord("T"): "\\Draft", ord("D"): "\\Deleted"}


class ForeignMailError(ValueError):
    """Mail that cannot be imported as it is."""


@dataclass
class ForeignFolder:
    name: str  # IMAP name, "/" separated; "INBOX" for the root
    uidvalidity: int | None = None
    messages: list[ImportedMessage] = field(default_factory=list)


def read_maildir(root: Path) -> list[ForeignFolder]:
    """Rules 1-4: every folder of the Maildir at ``root``, INBOX first, messages in UID order."""
    if not (root / "cur").is_dir():
        raise ForeignMailError(f"{root} is not a Maildir (no cur/ directory)")
    out = [_folder(root, "INBOX")]
    for entry in sorted(os.listdir(root)):
        if entry.startswith(".") and entry not in (".", "..") and (root / entry / "cur").is_dir():
            out.append(_folder(root / entry, entry[1:].replace(".", "/")))
    return out


def _folder(path: Path, name: str) -> ForeignFolder:
    keywords = _read_keywords(path / KEYWORDS)
    uidvalidity, uids = _read_uidlist(path / UIDLIST)
    folder = ForeignFolder(name, uidvalidity)
    listed: list[ImportedMessage] = []
    unlisted: list[ImportedMessage] = []
    for sub in ("cur", "new"):
        for entry in os.scandir(path / sub):
            if not entry.is_file() or entry.name.startswith("."):
                continue
            base, sep, info = entry.name.partition(":")
            flags = _info_flags(info[2:], keywords) if sep and info.startswith("2,") else frozenset()
            uid = uids.get(base)
            msg = ImportedMessage(Path(entry.path), flags, entry.stat().st_mtime, uid)
            (listed if uid is not None else unlisted).append(msg)
    listed.sort(key=lambda m: m.uid or 0)
    unlisted.sort(key=lambda m: (m.internaldate, str(m.source)))
    folder.messages = listed + unlisted
    return folder


def _info_flags(info: str, keywords: dict[int, str]) -> frozenset[str]:
    flags: set[str] = set()
    for ch in info:
        if ch in LETTER_TO_SYSTEM:
            flags.add(LETTER_TO_SYSTEM[ch])
        elif "a" <= ch <= "z" and (ord(ch) - ord("a")) in keywords:
            flags.add(keywords[ord(ch) - ord("a")])
    return frozenset(flags)


def _read_keywords(path: Path) -> dict[int, str]:
    try:
        text = path.read_text("utf-8", "replace")
    except FileNotFoundError:
        return {}
    out: dict[int, str] = {}
    for line in text.splitlines():
        number, _, word = line.strip().partition(" ")
        if number.isdigit() and word and int(number) < 26:
            out[int(number)] = word.strip()
        elif line.strip():
            log.warning("%s: line skipped: %r", path, line[:80])
    return out


def _read_uidlist(path: Path) -> tuple[int | None, dict[str, int]]:
    try:
        lines = path.read_text("utf-8", "replace").splitlines()
    except FileNotFoundError:
        return None, {}
    if not lines:
        return None, {}
    header = lines[0].split()
    uidvalidity: int | None = None
    if header and header[0] == "1" and len(header) >= 2 and header[1].isdigit():
        uidvalidity = int(header[1])
    elif header and header[0] == "3":
        for fieldtext in header[1:]:
            if fieldtext.startswith("V") and fieldtext[1:].isdigit():
                uidvalidity = int(fieldtext[1:])
    else:
        log.warning("%s: unknown uidlist version %r; UIDs not kept", path, lines[0][:40])
        return None, {}
    uids: dict[str, int] = {}
    for line in lines[1:]:
        head, sep, base = line.partition(":") if header[0] == "3" else (line.partition(" ")[0], " ",
                                                                         line.partition(" ")[2])
        number = head.split(" ", 1)[0]
        if not sep or not number.isdigit() or not base.strip():
            if line.strip():
                log.warning("%s: line skipped: %r", path, line[:80])
            continue
        uids[base.strip().partition(":")[0]] = int(number)
    if uidvalidity == 0:
        uidvalidity = None
    return uidvalidity, uids


# -- mbox ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MboxMessage:
    data: bytes  # LF line ends, From_ line and store headers removed, unquoted
    flags: frozenset[str]
    internaldate: float
    sender: str


def read_mbox(stream: BinaryIO, max_message: int, now: float) -> Iterator[MboxMessage]:
    """Rule 5: the messages of an mbox, one at a time."""
    from_line: bytes | None = None
    lines: list[bytes] = []
    size = 0
    previous_blank = True
    for raw in stream:
        line = raw[:-2] + b"\n" if raw.endswith(b"\r\n") else raw
        if previous_blank and _FROM_LINE.match(line):
            if from_line is not None:
                yield _mbox_message(from_line, lines, now)
            from_line, lines, size = line, [], 0
            previous_blank = False
            continue
        previous_blank = line in (b"\n", b"")
        if from_line is None:
            if line.strip():
                raise ForeignMailError("not an mbox file (the first line is not a From_ line)")
            continue
        size += len(line)
        if size > max_message:
            raise ForeignMailError(f"a message in the mbox is larger than {max_message} octets")
        lines.append(line[1:] if _FROM_QUOTED.match(line) else line)
    if from_line is not None:
        yield _mbox_message(from_line, lines, now)


def _mbox_message(from_line: bytes, lines: list[bytes], now: float) -> MboxMessage:
    if lines and lines[-1] == b"\n":
        lines = lines[:-1]  # the separating blank line belongs to the mbox, not the message
    flags: set[str] = set()
    headers: list[bytes] = []
    body_at = len(lines)
    keep = True
    for i, line in enumerate(lines):
        if line in (b"\n", b"\r\n"):
            body_at = i
            break
        if line[:1] in (b" ", b"\t"):
            if keep:
                headers.append(line)
            continue
        name, _, value = line.partition(b":")
        keep = name.strip().lower() not in _MBOX_DROP
        if keep:
            headers.append(line)
            continue
        key = name.strip().lower()
        if key in (b"status", b"x-status"):
            flags.update(_STATUS_FLAGS[c] for c in value.strip() if c in _STATUS_FLAGS)
        elif key == b"x-keywords":
            flags.update(w for w in value.decode("utf-8", "replace").replace(",", " ").split() if w)
    parts = from_line.decode("latin-1").split(None, 2)
    sender = parts[1] if len(parts) > 1 else "MAILER-DAEMON"
    when = _asctime(parts[2]) if len(parts) > 2 else None
    if sender != "MAILER-DAEMON" and not any(h.lower().startswith(b"return-path:") for h in headers):
        headers.insert(0, f"Return-Path: <{sender}>\n".encode("latin-1", "replace"))
    data = b"".join(headers) + b"".join(lines[body_at:])
    return MboxMessage(data, frozenset(flags), now if when is None else when, sender)


def _asctime(text: str) -> float | None:
    words = text.split()
    for n in (5, 6):  # "Mon Dec  7 17:43:53 2026" maybe followed by a zone or remote from
        try:
            return float(calendar.timegm(time.strptime(" ".join(words[:n][:5]), "%a %b %d %H:%M:%S %Y")))
        except ValueError:
            continue
    return None


def write_mbox(out: BinaryIO, messages: Iterable[tuple[bytes, frozenset[str], float, str]]) -> int:
    """Rule 6: ``(message, flags, internaldate, sender)`` as mboxrd; returns the count."""
    count = 0
    for data, flags, when, sender in messages:
        stamp = time.asctime(time.gmtime(when))  # asctime: the day of month padded with a space
        out.write(f"From {sender or 'MAILER-DAEMON'} {stamp}\n".encode("latin-1", "replace"))
        text = data.replace(b"\r\n", b"\n")
        head, sep, body = text.partition(b"\n\n")
        if not sep:
            head, body = text.rstrip(b"\n"), b""
        out.write(head.rstrip(b"\n") + b"\n")
        status = "RO" if "\\Seen" in flags else "O"
        xstatus = "".join(letter for flag, letter in (("\\Answered", "A"), ("\\Flagged", "F"),
                                                     ("\\Draft", "T"), ("\\Deleted", "D")) if flag in flags)
        keywords = " ".join(sorted(f for f in flags if not f.startswith("\\")))
        out.write(f"Status: {status}\n".encode())
        if xstatus:
            out.write(f"X-Status: {xstatus}\n".encode())
        if keywords:
            out.write(f"X-Keywords: {keywords}\n".encode())
        out.write(b"\n")
        for line in body.splitlines(keepends=True):
            out.write(b">" + line if _NEEDS_QUOTE.match(line) else line)
        if body and not body.endswith(b"\n"):
            out.write(b"\n")
        out.write(b"\n")
        count += 1
    return count

