"""Replies as values: what the mail pipeline says about a command or a recipient.

A ``Reply`` is the three-digit code of RFC 5321 §4.2, the enhanced status code of RFC 3463
and the text. The whole pipeline speaks it, not only the SMTP server: a ``RecipientResult``
carries one, a ``MailError`` carries the reply the wire should say, the queue record keeps the
last one per recipient and a DSN reports it (RFC 3464 §2.3.4 Status, §2.3.6
Diagnostic-Code). So the value lives here, at the bottom of the layers, where ``core`` and
``proto`` can both use it; the named SMTP replies (``C550_MAILBOX_UNAVAILABLE``...) live in
``pigeon.proto.smtp.reply`` and only the SMTP side of the pipeline uses them (the import-linter
contract "SMTP replies only on the SMTP side", docs/architecture.md).

Rules:
1. A reply is a three-digit code, an enhanced status code (RFC 3463, RFC 2034) and one or
   more lines of text. Every reply Pigeon sends carries an enhanced code
   (ENHANCEDSTATUSCODES), except the greeting and the EHLO reply, where RFC 2034 §3 says none.
2. ``to_bytes`` renders the multi-line form ``250-...`` / ``250 ...`` (RFC 5321 §4.2.1),
   each line ending in CRLF.
3. Reply text never contains CR or LF; they are replaced by spaces when rendering.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    enhanced: str
    text: str | tuple[str, ...]

    @property
    def lines(self) -> tuple[str, ...]:
        if isinstance(self.text, str):
            return (self.text,)
        return self.text or ("",)

    @property
    def is_positive(self) -> bool:
        return 200 <= self.code < 400

    @property
    def is_transient(self) -> bool:
        return 400 <= self.code < 500

    @property
    def is_permanent(self) -> bool:
        return self.code >= 500

    def with_text(self, text: str | tuple[str, ...]) -> Reply:
        return Reply(self.code, self.enhanced, text)

    def to_bytes(self) -> bytes:
        text = self.text
        if type(text) is str and "\r" not in text and "\n" not in text:
            # One line, nothing to clean: every reply of a transaction (a few per message).
            if self.enhanced:
                return (f"{self.code} {self.enhanced} {text}\r\n" if text
                        else f"{self.code} {self.enhanced}\r\n").encode("utf-8")
            return f"{self.code} {text}\r\n".encode("utf-8")
        out = []
        lines = self.lines
        for i, line in enumerate(lines):
            sep = " " if i == len(lines) - 1 else "-"
            clean = line.replace("\r", " ").replace("\n", " ")
            # RFC 2034 §3: the enhanced code starts every line of the reply.
            body = (f"{self.enhanced} {clean}" if clean else self.enhanced) if self.enhanced else clean
            out.append(f"{self.code}{sep}{body}\r\n")
        return "".join(out).encode("utf-8")

    def __str__(self) -> str:
        return " ".join(
            f"{self.code} {self.enhanced} {line}".replace("  ", " ").strip() for line in self.lines
        )
