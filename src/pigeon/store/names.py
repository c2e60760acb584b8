"""File names in the mail store: mailbox directories from addresses, and Maildir unique names.

Rules:
1. A user's Maildir is ``<root>/<domain>/<local>/``, both parts taken from the folded address
   (``Address.key``), so ``Bob@Example.COM`` and ``bob@example.com`` share one mailbox.
2. A path component is made file-system-safe by ``encode_component``: every byte of its UTF-8
   form outside ``[a-z0-9._+=-]`` is written ``%XX`` (upper-case hex), and so is a leading
   ``.``. ``%`` itself is always encoded, so the mapping is injective (two different addresses
   never share a directory) and no component can be empty, ``.``, ``..``, hidden, or contain
   ``/`` or NUL. Nothing an address contains can name a path outside the mail root.
3. A component longer than ``NAME_MAX`` (255 octets, the limit of every common POSIX file
   system) after encoding is refused with ``MailboxNameError``; so is an empty one.
4. Unique names follow the qmail/Dovecot form (http://cr.yp.to/proto/maildir.html):
   ``<sec>.M<usec>P<pid>Q<counter>.<host>``; the host part has ``/`` written ``\\057`` and
   ``:`` written ``\\072`` as the spec says, and ``,`` written ``\\054`` (Dovecot's and our own
   parsers split the info fields on ``,``). The final name in ``new/`` appends
   ``,S=<size on disk>,W=<size with CRLF line ends>``.

What can go wrong: an address whose encoded form is empty or too long raises
``MailboxNameError`` (a ``ValueError``); the caller turns it into a permanent failure.
"""

from __future__ import annotations

import itertools
import os
import re
import threading
import time

from pigeon.core.address import Address

NAME_MAX = 255  # octets per path component: NAME_MAX of Linux ext4/xfs/btrfs, BSD ufs, APFS

_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789._+=-")

# Parses a final Maildir name: base, then ",S=<n>" and ",W=<n>" in any order, then ":2,<flags>".
_SIZE_FIELD = re.compile(r",([SW])=(\d+)")


class MailboxNameError(ValueError):
    """The address cannot be mapped to a safe directory name."""


def encode_component(text: str) -> str:
    """Encode one path component (Rule 2). Raises MailboxNameError (Rule 3)."""
    raw = text.encode("utf-8", "surrogatepass")
    if not raw:
        raise MailboxNameError("empty mailbox name component")
    out: list[str] = []
    for i, byte in enumerate(raw):
        if byte in _SAFE and not (i == 0 and byte == 0x2E):
            out.append(chr(byte))
        else:
            out.append(f"%{byte:02X}")
    encoded = "".join(out)
    if len(encoded) > NAME_MAX:
        raise MailboxNameError(f"mailbox name component too long ({len(encoded)} > {NAME_MAX})")
    return encoded


def decode_component(encoded: str) -> str:
    """The inverse of ``encode_component`` (for tools that list the mail root)."""
    return bytes(_decode_bytes(encoded)).decode("utf-8", "surrogatepass")


def _decode_bytes(encoded: str) -> list[int]:
    out: list[int] = []
    i = 0
    while i < len(encoded):
        ch = encoded[i]
        if ch == "%" and _is_hex2(encoded[i + 1 : i + 3]):
            out.append(int(encoded[i + 1 : i + 3], 16))
            i += 3
        else:
            out.extend(ch.encode("utf-8"))
            i += 1
    return out


def _is_hex2(text: str) -> bool:
    return len(text) == 2 and all(c in "0123456789ABCDEFabcdef" for c in text)


def mailbox_components(address: Address) -> tuple[str, str]:
    """``(domain_dir, local_dir)`` for an address (Rules 1 and 2)."""
    local, _, domain = address.key.rpartition("@")
    return encode_component(domain), encode_component(local)


def encode_hostname(hostname: str) -> str:
    """The host part of a unique name (Rule 4)."""
    out: list[str] = []
    for ch in hostname:
        if ch in "/:,\\" or not ch.isprintable() or ch.isspace():
            out.extend(f"\\{b:03o}" for b in ch.encode("utf-8"))
        else:
            out.append(ch)
    return "".join(out) or "localhost"


class UniqueNames:
    """Generates Maildir unique base names; safe to call from several threads at once.

    Uniqueness within one host comes from time (microseconds), the process id and a counter
    owned by this object; the store also creates the tmp/ file with O_EXCL and links it into
    new/ with ``link()`` (which refuses to overwrite), so a clash is detected, never silent.
    """

    def __init__(self, hostname: str) -> None:
        self._host = encode_hostname(hostname)
        self._lock = threading.Lock()
        self._counter = itertools.count(1)

    def next(self) -> str:
        with self._lock:
            n = next(self._counter)
        now_ns = time.time_ns()
        sec, rest = divmod(now_ns, 1_000_000_000)
        return f"{sec}.M{rest // 1000}P{os.getpid()}Q{n}.{self._host}"


def final_name(base: str, size: int, crlf_size: int) -> str:
    """The name in new/: the base plus the Dovecot size fields (Rule 4)."""
    return f"{base},S={size},W={crlf_size}"


def parse_sizes(name: str) -> tuple[int | None, int | None]:
    """``(S, W)`` from a Maildir file name (with or without ``:2,`` flags); None when absent."""
    base = name.split(":", 1)[0]
    sizes: dict[str, int] = {}
    for m in _SIZE_FIELD.finditer(base):
        sizes[m.group(1)] = int(m.group(2))
    return sizes.get("S"), sizes.get("W")
