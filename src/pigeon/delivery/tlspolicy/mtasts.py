"""MTA-STS (RFC 8461) as pure values: the TXT record, the policy file, and the MX match.

Rules:
1. ``parse_txt(strings)`` reads the ``_mta-sts.<domain>`` TXT records (RFC 8461 §3.1): exactly one
   record starting with ``v=STSv1`` must be present (several → ``PolicyError``: "the sending MTA
   SHOULD assume the policy is not present"); ``id`` is 1-32 alphanumerics; unknown fields are
   ignored. Records not starting with ``v=STSv1`` are not MTA-STS and are skipped.
2. ``parse_policy(text)`` reads the policy file (RFC 8461 §3.2): ``key: value`` lines separated by
   CRLF or LF; ``version: STSv1`` required; ``mode`` one of enforce, testing, none; ``max_age``
   0..31557600 (a larger value is capped there, §3.2); ``mx`` required unless mode is none, and
   repeatable; unknown keys are ignored (§3.2: "extension"). Any other problem → ``PolicyError``.
3. ``mx_matches(pattern, host)`` (RFC 8461 §4.1): case-insensitive; ``*.example.com`` matches one
   extra leftmost label only (``mx.example.com``, not ``a.b.example.com`` nor ``example.com``).
4. Limits (bad input must end in a clear decision, never a crash): a policy file over
   ``MAX_POLICY_BYTES`` (64 KiB, the limit RFC 8461 §3.3 suggests for the fetch) and more than
   ``MAX_MX`` patterns are refused.

What can go wrong: every syntax problem raises ``PolicyError`` with a message for the log; the
caller then decides (keep the cached policy, or no policy: RFC 8461 §5).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Mode = Literal["enforce", "testing", "none"]

MAX_POLICY_BYTES = 64 * 1024  # RFC 8461 §3.3: senders may limit the policy body; 64 KiB as suggested
MAX_AGE_LIMIT = 31_557_600  # RFC 8461 §3.2: max_age is at most 31557600 seconds (about a year)
MAX_MX = 100  # no real policy lists more; bounds the work per delivery attempt
MAX_TXT_OCTETS = 4096  # a TXT answer longer than this is not an MTA-STS record (bad input)

_ID = re.compile(r"^[A-Za-z0-9]{1,32}$")  # RFC 8461 §3.1 sts-id
_MX_PATTERN = re.compile(r"^(\*\.)?([A-Za-z0-9_-]+\.)+[A-Za-z0-9_-]+\.?$")


class PolicyError(ValueError):
    """A TXT record or policy file that cannot be used (the message says why)."""


@dataclass(frozen=True, slots=True)
class StsRecord:
    id: str


@dataclass(frozen=True, slots=True)
class Policy:
    mode: Mode
    max_age: int
    mx: tuple[str, ...]

    def permits(self, host: str) -> bool:
        """Rule 3: ``host`` matches one of the ``mx`` patterns."""
        return any(mx_matches(p, host) for p in self.mx)

    def to_text(self) -> str:
        lines = ["version: STSv1", f"mode: {self.mode}", *(f"mx: {m}" for m in self.mx), f"max_age: {self.max_age}"]
        return "\r\n".join(lines) + "\r\n"


def _fields(text: str, sep: str, kv: str) -> list[tuple[str, str]]:
    out = []
    for part in text.split(sep):
        part = part.strip(" \t")
        if not part:
            continue
        key, eq, value = part.partition(kv)
        if not eq:
            raise PolicyError(f"malformed field {part[:40]!r}")
        out.append((key.strip(" \t"), value.strip(" \t")))
    return out


def texts(records: list[bytes]) -> list[str]:
    """TXT records as the resolver gives them (octets) → text; bad UTF-8 is replaced, and the
    parsers below refuse what it breaks."""
    return [record.decode("utf-8", "replace") for record in records]


def parse_txt(records: list[str]) -> StsRecord | None:
    """Rule 1: the STS record among ``records`` (each the joined strings of one TXT), or None."""
    sts = [r for r in records if r.startswith("v=STSv1")]
    if not sts:
        return None
    if len(sts) > 1:
        raise PolicyError(f"{len(sts)} v=STSv1 TXT records (RFC 8461 §3.1: exactly one)")
    text = sts[0]
    if len(text) > MAX_TXT_OCTETS:
        raise PolicyError(f"TXT record of {len(text)} octets is too long")
    fields = dict(_fields(text, ";", "="))
    if fields.get("v") != "STSv1":
        raise PolicyError("v=STSv1 must be the first field")
    sts_id = fields.get("id", "")
    if not _ID.match(sts_id):
        raise PolicyError(f"bad or missing id {sts_id[:40]!r} (1-32 letters and digits)")
    return StsRecord(sts_id)


def parse_policy(body: bytes) -> Policy:
    """Rule 2 (and the size limit of Rule 4)."""
    if len(body) > MAX_POLICY_BYTES:
        raise PolicyError(f"policy of {len(body)} octets exceeds {MAX_POLICY_BYTES}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise PolicyError("policy is not UTF-8 text") from None
    version = mode = max_age = None
    mx: list[str] = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            continue
        key, colon, value = line.partition(":")
        if not colon:
            raise PolicyError(f"malformed line {line[:40]!r}")
        key, value = key.strip(), value.strip(" \t")
        if key == "version":
            version = value
        elif key == "mode":
            mode = value
        elif key == "max_age":
            max_age = value
        elif key == "mx":
            if not _MX_PATTERN.match(value):
                raise PolicyError(f"bad mx pattern {value[:60]!r}")
            mx.append(value.rstrip(".").lower())
            if len(mx) > MAX_MX:
                raise PolicyError(f"more than {MAX_MX} mx patterns")
        # other keys: extensions, ignored (RFC 8461 §3.2)
    if version != "STSv1":
        raise PolicyError(f"version must be STSv1, got {version!r}")
    if mode not in ("enforce", "testing", "none"):
        raise PolicyError(f"mode must be enforce, testing or none, got {mode!r}")
    if max_age is None or not max_age.isascii() or not max_age.isdigit() or len(max_age) > 10:
        raise PolicyError(f"bad or missing max_age {max_age!r}")
    if mode != "none" and not mx:
        raise PolicyError("no mx pattern (required unless mode is none)")
    valid_mode: Mode = "enforce" if mode == "enforce" else "testing" if mode == "testing" else "none"
    return Policy(valid_mode, min(int(max_age), MAX_AGE_LIMIT), tuple(mx))


def mx_matches(pattern: str, host: str) -> bool:
    """Rule 3."""
    pattern = pattern.lower().rstrip(".")
    host = host.lower().rstrip(".")
    if pattern.startswith("*."):
        first, dot, rest = host.partition(".")
        return bool(first) and bool(dot) and rest == pattern[2:]
    return host == pattern
