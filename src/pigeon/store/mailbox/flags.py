"""Message flags: IMAP spellings ⇄ Maildir info letters, and the Maildir file name grammar.

Rules:
1. A file in ``cur/`` is named ``<base>:2,<info>`` (http://cr.yp.to/proto/maildir.html): the
   base never changes while the message lives in the folder, the info letters are the flags in
   ASCII order. ``D``=\\Draft ``F``=\\Flagged ``R``=\\Answered ``S``=\\Seen ``T``=\\Deleted;
   any other letter (``P`` passed, Dovecot's lower-case keyword letters) is kept untouched.
2. Keywords live only in the index; they are stored space-separated, so a keyword containing
   whitespace, a control character or a backslash is refused (IMAP atoms cannot hold them
   either, RFC 3501 §9 ``flag-keyword``). Keywords compare case-insensitively; the first
   spelling stored wins.
3. System flags are matched case-insensitively (RFC 3501 §2.3.2). ``\\Recent`` cannot be set
   or cleared by a client (RFC 3501 §6.4.6) and is ignored here; any other unknown
   ``\\``-flag is refused with ``MailboxError("CANNOT")``.
4. Limits: ``MAX_KEYWORDS`` per message and ``MAX_KEYWORD_LEN`` octets per keyword
   (``MailboxError("LIMIT")``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from pigeon.store.mailbox.model import MailboxError

StoreMode = Literal["set", "add", "remove"]

SYSTEM_TO_LETTER = {
    "\\Draft": "D",
    "\\Flagged": "F",
    "\\Answered": "R",
    "\\Seen": "S",
    "\\Deleted": "T",
}
LETTER_TO_SYSTEM = {v: k for k, v in SYSTEM_TO_LETTER.items()}
_SYSTEM_FOLDED = {k.lower(): k for k in SYSTEM_TO_LETTER}
_MANAGED = frozenset(SYSTEM_TO_LETTER.values())
INFO_SEP = ":2,"

MAX_KEYWORDS = 128  # per message; Dovecot's mail_max_keyword_length-era clients use a handful
MAX_KEYWORD_LEN = 200  # octets; generous for "$Forwarded"-style names, bounds the index row


def split_name(filename: str) -> tuple[str, str]:
    """``(base, info letters)`` of a Maildir file name (Rule 1)."""
    base, sep, info = filename.partition(":")
    if sep and info.startswith("2,"):
        return base, info[2:]
    return base, ""


def cur_name(base: str, info: str) -> str:
    return f"{base}{INFO_SEP}{info}"


def parse_flags(flags: Iterable[str]) -> tuple[str, list[str]]:
    """Split IMAP flags into managed Maildir letters and keywords (Rules 2, 3)."""
    letters: set[str] = set()
    keywords: list[str] = []
    folded: set[str] = set()
    for flag in flags:
        if flag.startswith("\\"):
            if flag.lower() == "\\recent":
                continue  # Rule 3
            system = _SYSTEM_FOLDED.get(flag.lower())
            if system is None:
                raise MailboxError("CANNOT", f"unknown system flag {flag[:40]!r}")
            letters.add(SYSTEM_TO_LETTER[system])
            continue
        _check_keyword(flag)
        if flag.lower() not in folded:
            folded.add(flag.lower())
            keywords.append(flag)
    return "".join(sorted(letters)), keywords


def apply(info: str, keywords: str, mode: StoreMode, letters: str,
          new_keywords: list[str]) -> tuple[str, str]:
    """New ``(info, keywords)`` after a STORE of ``letters`` + ``new_keywords`` (RFC 3501 §6.4.6)."""
    have = set(info)
    if mode == "set":
        result = (have - _MANAGED) | set(letters)
    elif mode == "add":
        result = have | set(letters)
    else:
        result = have - set(letters)
    current = keywords.split() if keywords else []
    if mode == "set":
        merged = list(new_keywords)
    elif mode == "add":
        seen = {k.lower() for k in current}
        merged = current + [k for k in new_keywords if k.lower() not in seen]
    else:
        drop = {k.lower() for k in new_keywords}
        merged = [k for k in current if k.lower() not in drop]
    if len(merged) > MAX_KEYWORDS:
        raise MailboxError("LIMIT", f"too many keywords on one message (limit {MAX_KEYWORDS})")
    return "".join(sorted(result)), " ".join(merged)


def imap_flags(info: str, keywords: str) -> frozenset[str]:
    """The IMAP flag set of an index row (Rule 1 letters + Rule 2 keywords)."""
    flags = [LETTER_TO_SYSTEM[c] for c in info if c in LETTER_TO_SYSTEM]
    if keywords:
        flags.extend(keywords.split())
    return frozenset(flags)


def _check_keyword(flag: str) -> None:
    if not flag:
        raise MailboxError("CANNOT", "empty keyword")
    if len(flag.encode("utf-8", "surrogatepass")) > MAX_KEYWORD_LEN:
        raise MailboxError("LIMIT", f"keyword longer than {MAX_KEYWORD_LEN} octets")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F or ch == "\\" for ch in flag):
        raise MailboxError("CANNOT", f"invalid keyword {flag[:40]!r}")
