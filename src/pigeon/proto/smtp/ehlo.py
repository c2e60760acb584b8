"""The EHLO reply: building ours, and reading a peer's (RFC 5321 §4.1.1.1, §4.1.4).

Rules:
1. ``ehlo_reply`` makes a ``250`` whose first line is ``<hostname> Hello <greeting_name>`` and
   whose next lines are the extension keywords, one per line. It carries no enhanced status code
   (RFC 2034 §3). The client's name is echoed with every octet outside printable ASCII replaced
   by ``?``: a reply carries no UTF-8 here (RFC 6531 §3.7.4) and no control character.
2. ``Extensions`` parses the lines after the first of a peer's EHLO reply: keyword (upper-cased,
   case-insensitive per RFC 5321 §2.4) → parameter words. ``SIZE`` with no number or ``0``
   means no fixed limit (RFC 1870 §4). ``AUTH=PLAIN LOGIN`` (the pre-standard form) is read as AUTH.
3. Unknown keywords are kept (``has``), never an error.

What can go wrong: nothing raises; malformed lines are ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pigeon.proto.smtp.reply import Reply

_KEYWORD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")  # RFC 5321 §4.1.1.1 ehlo-keyword
_NOT_PRINTABLE = re.compile(r"[^\x21-\x7e]")


def ehlo_reply(hostname: str, greeting_name: str, extensions: list[str]) -> Reply:
    """``250-<hostname> Hello <greeting_name>`` then one line per extension."""
    shown = _NOT_PRINTABLE.sub("?", greeting_name)  # rule 1
    return Reply(250, "", (f"{hostname} Hello {shown}", *extensions))


@dataclass(frozen=True, slots=True)
class Extensions:
    """What a peer offered in its EHLO reply."""

    keywords: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @staticmethod
    def parse(lines: tuple[str, ...] | list[str]) -> Extensions:
        """Parse the extension lines (the EHLO reply without its first line)."""
        out: dict[str, tuple[str, ...]] = {}
        for line in lines:
            words = line.split()
            if not words:
                continue
            key = words[0]
            if key.upper().startswith("AUTH="):  # old Outlook-era form, RFC 4954 predecessor
                words = ["AUTH", key[5:], *words[1:]]
                key = "AUTH"
            if not _KEYWORD.match(key):
                continue
            key = key.upper()
            params = tuple(words[1:])
            if key == "AUTH" and key in out:
                params = tuple(dict.fromkeys((*out[key], *params)))
            out[key] = params
        return Extensions(out)

    @staticmethod
    def from_reply(reply: Reply) -> Extensions:
        return Extensions.parse(reply.lines[1:])

    def has(self, keyword: str) -> bool:
        return keyword.upper() in self.keywords

    @property
    def pipelining(self) -> bool:
        return self.has("PIPELINING")  # RFC 2920

    @property
    def size(self) -> int | None:
        """RFC 1870: None if SIZE is not offered; 0 if offered with no fixed limit."""
        params = self.keywords.get("SIZE")
        if params is None:
            return None
        if params and params[0].isdigit() and params[0].isascii():
            return int(params[0])
        return 0

    @property
    def eight_bit_mime(self) -> bool:
        return self.has("8BITMIME")  # RFC 6152

    @property
    def smtputf8(self) -> bool:
        return self.has("SMTPUTF8")  # RFC 6531

    @property
    def chunking(self) -> bool:
        return self.has("CHUNKING")  # RFC 3030

    @property
    def binarymime(self) -> bool:
        return self.has("BINARYMIME")  # RFC 3030

    @property
    def dsn(self) -> bool:
        return self.has("DSN")  # RFC 3461

    @property
    def enhanced_status_codes(self) -> bool:
        return self.has("ENHANCEDSTATUSCODES")  # RFC 2034

    @property
    def starttls(self) -> bool:
        return self.has("STARTTLS")  # RFC 3207

    @property
    def auth_mechanisms(self) -> frozenset[str]:
        return frozenset(m.upper() for m in self.keywords.get("AUTH", ()))  # RFC 4954
