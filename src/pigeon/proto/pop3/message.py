"""What TOP sends of a message: the header, the blank line, and the first n body lines.

Rules:
1. RFC 1939 §7 (TOP): the headers, the blank line separating them from the body, then ``n``
   lines of the body (all of it when it has fewer). ``n`` may be 0: headers only.
2. The header ends at the first empty line. A message without one is all header; TOP then sends
   it whole followed by nothing else.
3. Lines end in CRLF (the store hands messages with CRLF line ends); a bare LF also ends a line
   here, so a malformed message never makes TOP send more than was asked.

What can go wrong: nothing raises.
"""

from __future__ import annotations

import re

_HEADER_END = re.compile(rb"\r?\n\r?\n")


def top(message: bytes, lines: int) -> bytes:
    """Rule 1 to 3."""
    if message.startswith((b"\r\n", b"\n")):  # empty header block
        end = 2 if message.startswith(b"\r\n") else 1
    else:
        m = _HEADER_END.search(message)
        if m is None:
            return message  # rule 2
        end = m.end()
    head, body = message[:end], message[end:]
    if lines <= 0 or not body:
        return head
    pos = 0
    for _ in range(lines):
        nl = body.find(b"\n", pos)
        if nl < 0:
            return head + body
        pos = nl + 1
    return head + body[:pos]
