"""POP3 service settings, each limit with where its number comes from.

Rules:
1. ``validate`` refuses values that would break an RFC MUST: the inactivity autologout timer
   is at least 10 minutes (RFC 1939 §3).

What can go wrong: ``validate`` raises ValueError naming the setting.
"""

from __future__ import annotations

from dataclasses import dataclass

# RFC 1939 §3: "Such a timer MUST be of at least 10 minutes' duration."
MIN_AUTOLOGOUT = 600.0


@dataclass(frozen=True, slots=True)
class Pop3Settings:
    hostname: str
    # [auth] allow_plaintext_on_loopback: USER/PASS, PLAIN, LOGIN in clear from 127/8 and ::1.
    allow_plaintext_on_loopback: bool = False
    # Bad commands (unknown, bad syntax, wrong state, line too long) before the session is
    # closed; the same number as SMTP's [limits] max_errors default.
    max_bad_commands: int = 20
    # RFC 1939 §3: the inactivity autologout timer MUST be at least 10 minutes.
    idle_timeout: float = MIN_AUTOLOGOUT
    # A TLS handshake needs a few round trips; a minute covers slow links (asyncio's default).
    handshake_timeout: float = 60.0
    # Output is written once this much is pending even while pipelined commands are still
    # being answered, so a pipelined RETR of many messages never piles up in memory.
    flush_threshold: int = 256 * 1024
    software: str = "Pigeon"
    mailbox: str = "INBOX"  # RFC 1939 knows one maildrop: IMAP's INBOX

    def validate(self) -> None:
        if self.idle_timeout < MIN_AUTOLOGOUT:
            raise ValueError(f"idle_timeout must be at least {MIN_AUTOLOGOUT:.0f} s (RFC 1939 §3)")
        if self.max_bad_commands < 1:
            raise ValueError("max_bad_commands must be at least 1")
        if self.handshake_timeout <= 0 or self.flush_threshold < 1:
            raise ValueError("handshake_timeout and flush_threshold must be positive")
