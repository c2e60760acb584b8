"""The aliases(5) file format, read into entries (syntax only; the directory checks domains).

Format (the one Postfix and sendmail read):
1. ``name: target, target, ...``. ``name`` is a bare local part (it then applies to every local
   domain), a full address (its own domain) or ``@domain`` (a catch-all). A target is a bare local
   part (same domain as the name) or a full address.
2. Blank lines and lines whose first non-blank character is ``#`` are ignored; a ``#`` after
   text is part of the text, as in aliases(5).
3. A line starting with a space or a tab continues the entry above it.
4. Commas and colons inside double quotes belong to the quoted local part.
5. ``:include:file``, ``|command`` and ``/file`` targets are refused (Pigeon delivers to
   mailboxes and addresses only: no program runs, no file is written on an alias's say-so).

What can go wrong: every problem raises ``DirectoryError("<source>:<line>: <problem>")``.
"""

from __future__ import annotations

from dataclasses import dataclass

from pigeon.directory.errors import DirectoryError

# A line this long is not an alias file; the bound keeps a wrong file from eating memory.
# (Postfix's line_length_limit default is 2048 per line; a joined entry may be much longer.)
MAX_ENTRY_CHARS = 1024 * 1024


@dataclass(frozen=True, slots=True)
class AliasEntry:
    line: int  # 1-based line of the entry's first line
    name: str
    targets: tuple[str, ...]


def _split_outside_quotes(text: str, sep: str, limit: int = -1) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    escaped = False
    for ch in text:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\" and quoted:
            current.append(ch)
            escaped = True
        elif ch == '"':
            current.append(ch)
            quoted = not quoted
        elif ch == sep and not quoted and (limit < 0 or len(parts) < limit):
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def _refused(target: str) -> str | None:
    unquoted = target[1:] if target.startswith('"') else target
    if unquoted.lower().startswith(":include:"):
        return ":include: targets"
    if unquoted.startswith("|"):
        return "program (|command) targets"
    if unquoted.startswith("/"):
        return "file (/path) targets"
    return None


def _logical_lines(text: str, source: str) -> list[tuple[int, str]]:
    entries: list[tuple[int, list[str]]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if raw[0] in " \t":
            if not entries:
                raise DirectoryError(f"{source}:{number}: continuation line with no entry above it")
            entries[-1][1].append(stripped)
        else:
            entries.append((number, [stripped]))
    out: list[tuple[int, str]] = []
    for number, pieces in entries:
        joined = " ".join(pieces)
        if len(joined) > MAX_ENTRY_CHARS:
            raise DirectoryError(f"{source}:{number}: entry longer than {MAX_ENTRY_CHARS} characters")
        out.append((number, joined))
    return out


def parse_aliases(text: str, source: str) -> list[AliasEntry]:
    """Parse aliases(5) ``text``; ``source`` names it in errors."""
    result: list[AliasEntry] = []
    for number, line in _logical_lines(text, source):
        parts = _split_outside_quotes(line, ":", limit=1)
        name = parts[0].strip()
        if len(parts) != 2 or not name:
            raise DirectoryError(f"{source}:{number}: expected 'name: target, target, ...'")
        # Only the first colon splits (limit=1): a ":include:" target keeps its colons.
        targets: list[str] = []
        for piece in _split_outside_quotes(parts[1], ","):
            target = piece.strip()
            if not target:
                continue
            refused = _refused(target)
            if refused is not None:
                raise DirectoryError(
                    f"{source}:{number}: {target!r}: {refused} are not supported "
                    "(an alias delivers to mailboxes and addresses only)"
                )
            targets.append(target)
        if not targets:
            raise DirectoryError(f"{source}:{number}: {name!r} has no targets")
        result.append(AliasEntry(number, name, tuple(targets)))
    return result
