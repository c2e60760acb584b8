"""ARC chain verification (RFC 8617), our own code over ``dkimcanon``/``dkimkey`` (OpenSSL), its
key lookups through our resolver.

Rules:
1. ``verify_arc(dns, message)`` gives ``none`` when the message has no ARC header field,
   ``pass`` when the whole chain validates, else ``fail`` (RFC 8617 §5.2). ``sealers`` lists the
   ``d=`` of each ARC-Seal, instance 1 first (for ``trusted_arc_sealers``: the caller trusts a
   chain only when it passes).
2. Bounded work: a chain with more than ``MAX_ARC_SETS`` sets, or an instance number above it,
   fails without any verification (RFC 8617 §4.2.1 allows up to 50; real chains have 1-3).
   A valid chain costs one body hash and 1 + N public-key operations (the newest
   ARC-Message-Signature and every ARC-Seal; older message signatures are not needed, §5.2).
3. Structure (§5.2 steps 2-3): instances 1..N each have exactly one ARC-Authentication-Results,
   ARC-Message-Signature and ARC-Seal; the newest seal's ``cv=fail`` ends the chain as ``fail``;
   instance 1 has ``cv=none``, the others ``cv=pass``; a seal has no ``h=``.
4. The newest ARC-Message-Signature is verified as a DKIM signature (§5.2 step 4; RFC 6376
   §3.7 hashes, ``c=`` default simple/simple, its ``i=`` is the instance, not an identity): its
   ``h=`` must not name ARC-Seal; an ``l=`` covering less than the whole body fails it (as in
   ``dkim``). Each ARC-Seal, newest first, is verified over the ARC fields of instances 1..i in
   the order AAR, AMS, AS, relaxed canonicalisation, its own ``b=`` emptied (§5.1.1, step 6).
   Keys are checked as ``dkimkey`` says; ``t=``/``x=`` as in ``dkim`` against ``now``.
5. DNS: the keys of those signatures are fetched first, concurrently, through ``MailAuthDns``;
   a missing or failed key fails its signature, hence the chain. A temporary DNS error is
   reported as ``fail`` with the reason saying so (ARC has no temperror in RFC 8601's registry,
   and a chain we could not check must not be trusted).

What can go wrong: hostile input of any kind is a ``fail`` with a reason; an unexpected
exception is logged and is a ``fail``, never a crash.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
import time
from dataclasses import dataclass
from typing import Literal

from pigeon.mailauth.dkimcanon import (Field, MessageError, TagError, body_hashes, canonical_field,
                                       header_hash_input, parse_tags, signature_field_input, split_message)
from pigeon.mailauth.dkimkey import key_problem, parse_key_record, signature_valid
from pigeon.mailauth.lookup import DnsError, DnsTempError, MailAuthDns

log = logging.getLogger(__name__)

# Rule 2: a local bound below RFC 8617's 50; see the module docstring.
MAX_ARC_SETS = 10
# Rule 4: the same algorithms and clock allowance as DKIM verification (dkim.py).
_ALGORITHMS = frozenset(("rsa-sha256", "ed25519-sha256"))
_CLOCK_SLACK = 36000
_AAR, _AMS, _AS = b"arc-authentication-results", b"arc-message-signature", b"arc-seal"
_ARC_FIELDS = (_AAR, _AMS, _AS)
_TIME = re.compile(rb"[0-9]{1,12}\Z")


@dataclass(frozen=True)
class ArcResult:
    result: Literal["pass", "fail", "none"]
    sealers: tuple[str, ...]  # d= of each ARC-Seal, instance 1 first
    reason: str = ""


def _clean(tags: dict[bytes, bytes], name: bytes) -> str:
    return b"".join(tags.get(name, b"").split()).decode("ascii", "replace")


def _tags(value: bytes) -> dict[bytes, bytes]:
    try:
        return parse_tags(value)
    except TagError:
        return {}


_INSTANCE = re.compile(rb"(?:\A|;)\s*i\s*=\s*([0-9]{1,4})\s*(?:;|\Z)")


def _instance(value: bytes) -> int:
    """i= (RFC 8617 §4.2.1; the ARC-Authentication-Results field starts with it too); a missing
    or malformed one counts as out of range (rule 2)."""
    m = _INSTANCE.search(value)
    return int(m.group(1)) if m else MAX_ARC_SETS + 1


def _key_name(tags: dict[bytes, bytes]) -> str:
    return f"{_clean(tags, b's')}._domainkey.{_clean(tags, b'd')}".lower()


async def verify_arc(dns: MailAuthDns, message: bytes, *, now: float | None = None) -> ArcResult:
    """Rule 1."""
    if not _has_arc_fields(message):
        return ArcResult("none", ())  # no parse: the common case costs nothing
    try:
        fields, body_start = split_message(message)
    except MessageError as exc:
        return ArcResult("fail", (), f"unparsable message: {exc}")
    raw = [(name.lower(), (name, value)) for name, value in fields if name.lower() in _ARC_FIELDS]
    if not raw:
        return ArcResult("none", ())
    seals = sorted((_instance(f[1]), _clean(_tags(f[1]), b"d").lower()) for name, f in raw if name == _AS)
    sealers = tuple(d for _, d in seals)
    highest = max(_instance(f[1]) for _, f in raw)
    if len(seals) > MAX_ARC_SETS or highest > MAX_ARC_SETS:
        return ArcResult("fail", sealers, f"more than {MAX_ARC_SETS} ARC sets (local limit)")
    try:
        return await _verify_chain(dns, fields, message, body_start, raw, highest, sealers,
                                   time.time() if now is None else now)
    except Exception as exc:  # hostile input must not crash the intake
        log.warning("arc: unexpected error: %r", exc)
        return ArcResult("fail", sealers, f"verification error: {type(exc).__name__}")


async def _verify_chain(dns: MailAuthDns, fields: list[Field], message: bytes, body_start: int,
                        raw: list[tuple[bytes, Field]], n: int, sealers: tuple[str, ...], now: float) -> ArcResult:
    def fail(reason: str) -> ArcResult:
        return ArcResult("fail", sealers, reason[:200])

    sets: dict[int, dict[bytes, Field]] = {}
    for name, field in raw:  # rule 3
        one = sets.setdefault(_instance(field[1]), {})
        if name in one:
            return fail(f"two {name.decode()} fields for instance {_instance(field[1])}")
        one[name] = field
    if sorted(sets) != list(range(1, n + 1)) or any(len(s) != 3 for s in sets.values()):
        return fail("incomplete ARC sets (RFC 8617 §5.2)")
    try:
        seal_tags = {i: parse_tags(sets[i][_AS][1]) for i in sets}
        ams_tags = parse_tags(sets[n][_AMS][1])
    except TagError as exc:
        return fail(f"malformed ARC tag list: {exc}")
    if _clean(seal_tags[n], b"cv").lower() == "fail":
        return fail(f"ARC-Seal[{n}] reported failure, the chain is terminated")
    for i, tags in seal_tags.items():
        if _clean(tags, b"cv").lower() != ("none" if i == 1 else "pass"):
            return fail(f"ARC-Seal[{i}] has cv={_clean(tags, b'cv')}")
        if b"h" in tags:
            return fail(f"ARC-Seal[{i}] has an h= tag")
    names = sorted({_key_name(t) for t in [ams_tags, *seal_tags.values()]})
    answers = await asyncio.gather(*(_fetch(dns, name) for name in names))
    keys = dict(zip(names, answers))
    problem = _verify_ams(fields, message, body_start, sets[n][_AMS], ams_tags, keys, now)
    if problem:
        return fail(f"ARC-Message-Signature[{n}]: {problem}")
    for i in range(n, 0, -1):
        parts = [canonical_field(*sets[j][name], True) for j in range(1, i) for name in _ARC_FIELDS]
        parts += [canonical_field(*sets[i][_AAR], True), canonical_field(*sets[i][_AMS], True),
                  signature_field_input(sets[i][_AS], True)]
        problem = _verify_signature(seal_tags[i], b"".join(parts), keys, now)
        if problem:
            return fail(f"ARC-Seal[{i}]: {problem}")
    return ArcResult("pass", sealers, "success")


def _verify_ams(fields: list[Field], message: bytes, body_start: int, field: Field, tags: dict[bytes, bytes],
                keys: dict[str, list[bytes] | DnsError], now: float) -> str:
    """Rule 4: "" when the newest ARC-Message-Signature verifies, else why not."""
    for tag in (b"i", b"a", b"b", b"bh", b"d", b"h", b"s"):
        if tag not in tags:
            return f"missing {tag.decode()}="
    signed = [h.lower() for h in b"".join(tags[b"h"].split()).split(b":")]
    if _AS in signed:
        return "h= signs ARC-Seal (RFC 8617 §4.1.2)"
    canon = _clean(tags, b"c").lower() or "simple/simple"
    header_c, _, body_c = canon.partition("/")
    body_c = body_c or "simple"
    if header_c not in ("simple", "relaxed") or body_c not in ("simple", "relaxed"):
        return f"unknown canonicalisation c={canon}"
    length: int | None = None
    if b"l" in tags:
        value = b"".join(tags[b"l"].split())
        if not value.isdigit() or len(value) > 76:
            return "l= is not a decimal"
        length = int(value)
    try:
        bh = base64.b64decode(b"".join(tags[b"bh"].split()), validate=True)
    except binascii.Error:
        return "bh= is not base64"
    digests, total = body_hashes(message, body_start, body_c == "relaxed", [length])
    if length is not None and length != total:
        return f"l={length} does not cover the {total}-octet body"
    if digests[length] != bh:
        return "body hash mismatch"
    data = header_hash_input(fields, signed, field, header_c == "relaxed")
    return _verify_signature(tags, data, keys, now)


def _verify_signature(tags: dict[bytes, bytes], data: bytes, keys: dict[str, list[bytes] | DnsError],
                      now: float) -> str:
    """Rule 4: "" when ``b=`` is a valid signature of ``data`` by the key ``s=``/``d=`` name."""
    for tag in (b"a", b"b", b"d", b"s"):
        if tag not in tags:
            return f"missing {tag.decode()}="
    algorithm = _clean(tags, b"a").lower()
    if algorithm not in _ALGORITHMS:
        return f"algorithm {algorithm} not verified"
    times: dict[bytes, int] = {}
    for tag in (b"t", b"x"):
        if tag in tags:
            value = b"".join(tags[tag].split())
            if not _TIME.match(value):
                return f"{tag.decode()}= is not a decimal of at most 12 digits"
            times[tag] = int(value)
    if b"t" in times and times[b"t"] > now + _CLOCK_SLACK:
        return "t= is in the future"
    if b"x" in times and times[b"x"] < now - _CLOCK_SLACK:
        return "expired (x=)"
    answer = keys.get(_key_name(tags))
    if isinstance(answer, DnsTempError):
        return f"temporary DNS error for {_key_name(tags)}: {answer}"
    if not isinstance(answer, list) or not answer:
        return f"no key at {_key_name(tags)}"
    key = parse_key_record(answer[0])
    if isinstance(key, str):
        return key
    problem = key_problem(key, algorithm, "", "")
    if problem:
        return problem
    try:
        signature = base64.b64decode(b"".join(tags[b"b"].split()), validate=True)
    except binascii.Error:
        return "b= is not base64"
    return "" if signature_valid(key, data, signature) else "signature did not verify"


def _has_arc_fields(message: bytes) -> bool:
    cut = message.find(b"\r\n\r\n")
    head = message[:cut if cut >= 0 else len(message)].lower()
    return b"\narc-" in head or head.startswith(b"arc-")


async def _fetch(dns: MailAuthDns, name: str) -> list[bytes] | DnsError:
    try:
        return await dns.txt(name)
    except DnsError as exc:
        return exc
