"""ARC chain verification (RFC 8617) with dkimpy, its key lookups through our resolver.

Rules:
1. ``verify_arc(dns, message)`` gives ``none`` when the message has no ARC header field,
   ``pass`` when the whole chain validates (every ARC-Seal, the newest ARC-Message-Signature,
   instance 1 with ``cv=none`` and the others ``cv=pass``; RFC 8617 §5.2), else ``fail``.
   ``sealers`` lists the ``d=`` of each ARC-Seal, instance 1 first (for ``trusted_arc_sealers``:
   the caller trusts a chain only when it passes).
2. Bounded work: a chain with more than ``MAX_ARC_SETS`` sets, or an instance number above it,
   fails without any verification (RFC 8617 §4.2.1 allows up to 50; real chains have 1-3,
   and each set costs a body hash and two public-key operations in dkimpy).
3. DNS: the keys named by every ARC-Seal and ARC-Message-Signature are fetched first,
   concurrently, through ``MailAuthDns``; dkimpy then verifies with a ``dnsfunc`` that only
   reads those answers (a missing or failed key makes its signature fail, hence the chain).
   A temporary DNS error is reported as ``fail`` with the reason saying so (ARC has no
   temperror result in RFC 8601's registry for ``arc``, and a chain we could not check must
   not be trusted).

What can go wrong: any dkimpy exception is a ``fail`` with its text as the reason.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from typing import Literal

import dkim
import dkim.util

from pigeon.mailauth.lookup import DnsError, DnsTempError, MailAuthDns

log = logging.getLogger(__name__)

# Rule 2: a local bound below RFC 8617's 50; see the module docstring.
MAX_ARC_SETS = 10
_ARC_FIELDS = (b"arc-seal", b"arc-message-signature", b"arc-authentication-results")


@dataclass(frozen=True)
class ArcResult:
    result: Literal["pass", "fail", "none"]
    sealers: tuple[str, ...]  # d= of each ARC-Seal, instance 1 first
    reason: str = ""


def _tags(value: bytes) -> dict[bytes, bytes]:
    try:
        return {k: re.sub(rb"\s+", b"", v) for k, v in dkim.util.parse_tag_value(value).items()}
    except dkim.util.InvalidTagValueList:
        return {}


_INSTANCE = re.compile(rb"(?:\A|;)\s*i\s*=\s*([0-9]{1,4})\s*(?:;|\Z)")


def _instance(value: bytes) -> int:
    """i= (RFC 8617 §4.2.1; the ARC-Authentication-Results field starts with it too); a missing
    or malformed one counts as out of range (rule 2)."""
    m = _INSTANCE.search(value)
    return int(m.group(1)) if m else MAX_ARC_SETS + 1


async def verify_arc(dns: MailAuthDns, message: bytes) -> ArcResult:
    """Rule 1."""
    if not _has_arc_fields(message):
        return ArcResult("none", ())  # no parse: the common case costs nothing
    try:
        arc = dkim.ARC(message, minkey=1024)
    except dkim.DKIMException as exc:
        if b"arc-seal" not in message.lower():
            return ArcResult("none", ())
        return ArcResult("fail", (), f"unparsable message: {exc}")
    raw = [(name.lower(), value) for name, value in arc.headers if name.lower() in _ARC_FIELDS]
    if not raw:
        return ArcResult("none", ())
    fields = [(name, _tags(value)) for name, value in raw if name != b"arc-authentication-results"]
    seals = sorted((_instance(value), _tags(value).get(b"d", b"").decode("ascii", "replace").lower())
                   for name, value in raw if name == b"arc-seal")
    sealers = tuple(d for _, d in seals)
    highest = max(_instance(value) for _, value in raw)
    if len(seals) > MAX_ARC_SETS or highest > MAX_ARC_SETS:
        return ArcResult("fail", sealers, f"more than {MAX_ARC_SETS} ARC sets (local limit)")
    names = sorted({f"{t[b's'].decode('ascii', 'replace')}._domainkey.{t[b'd'].decode('ascii', 'replace')}".lower()
                    for _, t in fields if t.get(b"s") and t.get(b"d")})
    answers = await asyncio.gather(*(_fetch(dns, n) for n in names))
    keys = dict(zip(names, answers))
    temp = [n for n, a in keys.items() if isinstance(a, DnsTempError)]

    def dnsfunc(name: bytes | str, timeout: int = 5) -> bytes | None:
        text = name.decode("ascii", "replace") if isinstance(name, bytes) else name
        answer = keys.get(text.lower().rstrip("."))
        return answer[0] if isinstance(answer, list) and answer else None

    try:
        cv, _results, reason = arc.verify(dnsfunc=dnsfunc)
    except dkim.DKIMException as exc:
        return ArcResult("fail", sealers, str(exc)[:200])
    except Exception as exc:  # hostile input must not crash the intake
        log.warning("arc: unexpected error: %r", exc)
        return ArcResult("fail", sealers, f"verification error: {type(exc).__name__}")
    if cv == dkim.CV_Pass:
        return ArcResult("pass", sealers, str(reason))
    if temp:
        reason = f"temporary DNS error for {', '.join(temp)}; {reason}"
    return ArcResult("fail", sealers, str(reason)[:200])


def _has_arc_fields(message: bytes) -> bool:
    cut = message.find(b"\r\n\r\n")
    head = message[:cut if cut >= 0 else len(message)].lower()
    return b"\narc-" in head or head.startswith(b"arc-")


async def _fetch(dns: MailAuthDns, name: str) -> list[bytes] | DnsError:
    try:
        return await dns.txt(name)
    except DnsError as exc:
        return exc
