"""Mailbox names ⇄ Maildir++ folder directories inside one user's Maildir.

Rules:
1. The hierarchy separator is ``/``. ``INBOX`` (any case) is the user's Maildir itself; a first
   component spelled ``inbox`` in any case is normalised to ``INBOX`` (RFC 3501 §5.1).
2. Any other mailbox is the Maildir++ folder ``.<c1>.<c2>…`` (``Sent`` → ``.Sent``,
   ``a/b`` → ``.a.b``) directly inside the user's Maildir. Each component is written with
   ``%XX`` (upper-case hex, one per UTF-8 byte) for ``%``, ``.``, ``/``, ``\\`` and every
   control character; everything else (including non-ASCII UTF-8) is kept as is, so mutt shows
   readable names. The mapping is injective: ``%`` and ``.`` are always escaped, so a
   directory name decodes to exactly one mailbox name and back.
3. Refused with ``MailboxError("CANNOT")``: an empty name, an empty component (``a//b``,
   ``/a``, ``a/``), a ``.`` or ``..`` component, NUL/CR/LF or any other control character,
   text that is not valid UTF-8 (lone surrogates), and a name whose directory name exceeds
   ``NAME_MAX`` octets. The directory name is one path component that never starts with
   ``..``, so nothing can name a path outside the user's Maildir.
4. ``decode_dir`` accepts only canonical encodings (``encode(decode(d)) == d``); any other
   dot-directory (a tool's private directory, a half-deleted folder) is not a mailbox.

What can go wrong: only ``MailboxError`` for a refused name; these functions touch no files.
"""

from __future__ import annotations

from pigeon.store.mailbox.model import MailboxError

INBOX = "INBOX"
SEPARATOR = "/"
# The whole hierarchy lives in one directory name (Maildir++), so NAME_MAX (255 octets on
# ext4/xfs/btrfs/APFS) bounds the encoded name, leading dot included.
NAME_MAX = 255
_ESCAPE = frozenset("%./\\")


def normalize(name: str) -> str:
    """The canonical spelling of a valid name (Rules 1, 3); raises MailboxError."""
    if not name:
        raise MailboxError("CANNOT", "empty mailbox name")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise MailboxError("CANNOT", "mailbox name is not valid UTF-8") from None
    parts = name.split(SEPARATOR)
    if parts[0].upper() == INBOX:
        parts[0] = INBOX
    for part in parts:
        if not part:
            raise MailboxError("CANNOT", "mailbox name has an empty hierarchy level")
        if part in (".", ".."):
            raise MailboxError("CANNOT", "mailbox name has a '.' or '..' level")
        if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in part):
            raise MailboxError("CANNOT", "mailbox name contains a control character")
    canonical = SEPARATOR.join(parts)
    if canonical != INBOX and len(_encode_dir(parts).encode("utf-8")) > NAME_MAX:
        raise MailboxError("CANNOT", f"mailbox name too long (limit {NAME_MAX} octets encoded)")
    return canonical


def is_inbox(name: str) -> bool:
    return name == INBOX


def dir_name(name: str) -> str | None:
    """The folder directory for a *normalised* name; None for INBOX (the Maildir itself)."""
    if name == INBOX:
        return None
    return _encode_dir(name.split(SEPARATOR))


def decode_dir(dirname: str) -> str | None:
    """The mailbox name of a folder directory, or None when it is not one (Rule 4)."""
    if not dirname.startswith(".") or dirname.startswith(".."):
        return None
    parts = dirname[1:].split(".")
    try:
        decoded = [_decode_component(p) for p in parts]
        name = normalize(SEPARATOR.join(decoded))
    except (MailboxError, ValueError):
        return None
    if name == INBOX or _encode_dir(name.split(SEPARATOR)) != dirname:
        return None
    return name


def parents(name: str) -> list[str]:
    """``a/b/c`` → ``["a", "a/b"]``."""
    parts = name.split(SEPARATOR)
    return [SEPARATOR.join(parts[:i]) for i in range(1, len(parts))]


def is_inferior(name: str, ancestor: str) -> bool:
    return name.startswith(ancestor + SEPARATOR)


def _encode_dir(parts: list[str]) -> str:
    return "." + ".".join(_encode_component(p) for p in parts)


def _encode_component(part: str) -> str:
    out: list[str] = []
    for ch in part:
        if ch in _ESCAPE or ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8"))
        else:
            out.append(ch)
    return "".join(out)


def _decode_component(encoded: str) -> str:
    raw = bytearray()
    i = 0
    while i < len(encoded):
        ch = encoded[i]
        if ch == "%":
            hexpart = encoded[i + 1 : i + 3]
            if len(hexpart) != 2 or any(c not in "0123456789ABCDEF" for c in hexpart):
                raise ValueError("bad escape")
            raw.append(int(hexpart, 16))
            i += 3
        else:
            raw.extend(ch.encode("utf-8"))  # a surrogate-escaped byte raises: not UTF-8
            i += 1
    return raw.decode("utf-8")
