"""Header-section edits at the end of the message: forged Authentication-Results removed,
milter header actions applied, spam marks read.

Rules:
1. A header section is split into whole fields, each with its continuation lines and its line
   ending (RFC 5322 §2.2); anything that is not a field stays where it is, untouched.
2. An ``Authentication-Results`` field whose authserv-id is ours is a forgery and is removed
   (RFC 8601 §5); whether it claims our id is ``mailauth.authres.is_ours``'s to say (passed in).
3. Milter header actions follow libmilter: ``ChangeHeader(index, name, value)`` changes the
   index-th (1-based) field of that name, and an empty value deletes it; ``InsertHeader(index)``
   puts a field at position ``index`` (0 = first); ``AddHeader`` appends at the end of the
   section. Values keep their folding (``\\n`` becomes CRLF).
4. ``spam_marked``: ``X-Spam: yes`` or ``X-Spam-Flag: YES`` among the fields a milter added
   (what rspamd and SpamAssassin write), case-insensitive.

What can go wrong: nothing raises; an edit that names no field is ignored with a log line.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence

from pigeon.proto.milter.codec import AddHeader, ChangeHeader, InsertHeader

log = logging.getLogger(__name__)

_NAME = re.compile(rb"^([\x21-\x39\x3b-\x7e]+)[ \t]*:")
MilterEdit = AddHeader | InsertHeader | ChangeHeader


def split_fields(section: bytes) -> list[bytes]:
    """Rule 1: the fields of a header section (without its empty line)."""
    fields: list[bytes] = []
    for line in section.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line
        else:
            fields.append(line)
    return fields


def field_name(field: bytes) -> str:
    m = _NAME.match(field)
    return m.group(1).decode("ascii").lower() if m else ""


def field_value(field: bytes) -> bytes:
    """The value after the colon, unfolded lines kept, the final line ending dropped."""
    _, _, value = field.partition(b":")
    return value.rstrip(b"\r\n")


def remove_forged(fields: list[bytes], claims_ours: Callable[[str], bool]) -> tuple[list[bytes], int]:
    """Rule 2: the fields without the forged ones, and how many were removed."""
    kept = [f for f in fields if not (field_name(f) == "authentication-results"
                                      and claims_ours(field_value(f).decode("utf-8", "replace")))]
    return kept, len(fields) - len(kept)


def _make(name: str, value: str) -> bytes:
    text = value.replace("\r\n", "\n").replace("\n", "\r\n")
    lead = "" if text[:1] in (" ", "\t") else " "
    return f"{name}:{lead}{text}\r\n".encode("utf-8", "replace")


def apply_edits(fields: list[bytes], edits: Sequence[MilterEdit]) -> list[bytes]:
    """Rule 3."""
    out = list(fields)
    for edit in edits:
        if isinstance(edit, AddHeader):
            out.append(_make(edit.name, edit.value))
        elif isinstance(edit, InsertHeader):
            out.insert(max(0, min(edit.index, len(out))), _make(edit.name, edit.value))
        else:
            want = edit.name.lower()
            seen = 0
            for i, f in enumerate(out):
                if field_name(f) == want:
                    seen += 1
                    if seen == max(edit.index, 1):
                        if edit.value:
                            out[i] = _make(edit.name, edit.value)
                        else:
                            del out[i]
                        break
            else:
                if edit.value:  # libmilter: changing a missing field adds it
                    out.append(_make(edit.name, edit.value))
    return out


def spam_marked(edits: Sequence[MilterEdit]) -> bool:
    """Rule 4."""
    for edit in edits:
        if isinstance(edit, ChangeHeader) and not edit.value:
            continue
        name, value = edit.name.lower(), edit.value.strip().lower()
        if (name == "x-spam" and value.startswith("yes")) or (name == "x-spam-flag" and value.startswith("yes")):
            return True
    return False
