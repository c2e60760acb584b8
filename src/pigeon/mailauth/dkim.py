"""DKIM verification (RFC 6376, RFC 8463), our own code over ``cryptography`` (OpenSSL) and
hashlib, its key lookups through our resolver.

Rules:
1. ``verify_dkim(dns, message)`` returns one ``DkimResult`` per DKIM-Signature it evaluates, in
   the order evaluated; ``()`` when the message carries none. At most ``MAX_SIGNATURES`` are
   evaluated (the rest are ignored, as if absent, and logged): those whose ``d=`` is the
   ``prefer_domain`` (the header From domain, for DMARC) or a parent/child of it come first,
   then the others top-down. CPU per message is thus bounded by one body canonicalisation per
   canonicalisation kind and 5 public-key operations, whatever the number of signatures
   (RFC 6376 §6.1 lets a verifier limit how many it tries).
2. DNS: the keys (``<s>._domainkey.<d>`` TXT, RFC 6376 §3.6.2.1) of the chosen signatures that
   pass their own checks (rule 3; a malformed signature costs no query) are fetched first,
   concurrently, through ``MailAuthDns`` (its cache); verification then runs in the event loop
   (tens of microseconds; no thread). A temporary DNS failure is ``temperror``;
   NXDOMAIN or no TXT record is ``permerror`` ("no key", RFC 6376 §6.1.2). With several TXT
   records the first is used (§6.1.2 lets the verifier pick one).
3. The signature is checked before any key work (RFC 6376 §6.1.1): the tags ``v a b bh d h s``
   present, ``v=1``, ``c=`` simple/relaxed, ``q=`` dns/txt, ``h=`` lists ``from``, the ``i=``
   domain is ``d=`` or a subdomain of it, ``l=``/``t=``/``x=`` decimal, ``b=``/``bh=`` base64.
   The key record is checked as ``dkimkey`` says (§3.6.1: ``v k h s t p``; RSA keys
   1024..``MAX_RSA_BITS`` bits with an exponent under 64 bits, RFC 8301 §3.2); ``t=y``
   (testing) is reported in ``reason`` and changes nothing else.
4. Results (RFC 8601 §2.7.1): ``pass``; ``fail`` when the body hash or the signature does not
   verify, when ``l=`` is longer than the body, or when the signature has expired (``x=``);
   ``policy`` when it verifies but ``l=`` covers only part of the body (we honour ``l=`` only
   when it covers the whole body: content appended after the signed part must not ride on the
   signature); ``neutral`` when the signature uses an algorithm we do not verify (e.g.
   ``rsa-sha1``, RFC 8301 §3.1); ``permerror`` for a malformed signature or key; ``temperror``
   for DNS.
5. ``x=``/``t=`` are judged against ``now`` (the caller's injected clock; the system clock when
   not given) with ``CLOCK_SLACK`` of allowance for the signer's clock: ``t=`` after
   now + slack is ``permerror``; ``x=`` before now - slack is expired (``fail``); otherwise
   ``x=`` before ``t=`` is ``permerror`` (RFC 6376 §3.5).
6. Canonicalisation and hashing are ``dkimcanon``'s (bytes operations over the whole body,
   chunked for big bodies); the body is canonicalised once per kind (simple, relaxed) for all
   the signatures and ``l=`` values that need it; parsed keys are memoised (``dkimkey``).

7. dkimpy (which signs our outbound mail) is the independent verifier of the tests: over a
   varied corpus and random whitespace, both give the same verdict (``policy`` aside, which
   dkimpy reports as a pass). Where dkimpy is lenient we are stricter, on input no signer
   produces: ``h=`` without From, a field name with a space before the colon.

What can go wrong: a header block that cannot be parsed gives one ``permerror`` result; any
unexpected exception in one signature's check becomes ``permerror`` (logged), never a crash.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pigeon.mailauth.dkimcanon import (Field, MessageError, TagError, body_hashes, header_hash_input,
                                       parse_tags, split_message)
from pigeon.mailauth.dkimkey import (MAX_RSA_BITS, MAX_RSA_EXPONENT_BITS, MIN_RSA_BITS, key_problem,
                                     parse_key_record, signature_valid)
from pigeon.mailauth.lookup import DnsError, DnsTempError, MailAuthDns, NoSuchDomain

__all__ = ["MAX_RSA_BITS", "MAX_RSA_EXPONENT_BITS", "MAX_SIGNATURES", "MIN_RSA_BITS", "DkimResult",
           "DkimResultKind", "verify_dkim"]

log = logging.getLogger(__name__)

DkimResultKind = Literal["pass", "fail", "neutral", "none", "temperror", "permerror", "policy"]

# Rule 1: signatures evaluated per message. Real mail carries 1-3 (author, ESP, list); 5 leaves
# room for forwarding chains while capping the work an attacker can ask for.
MAX_SIGNATURES = 5
# RFC 8301 §3.1: rsa-sha1 MUST NOT be considered valid; RFC 8463 adds ed25519-sha256.
VERIFIED_ALGORITHMS = frozenset(("rsa-sha256", "ed25519-sha256"))
# Rule 5: allowance for a signer's clock, the 10 hours dkimpy (our previous verifier) allowed.
CLOCK_SLACK = 36000
# Rule 3: l= has at most 76 digits (RFC 6376 §3.5 ABNF); t=/x= are 12 digits at most (RFC 6376
# §3.5 recommends 40-bit values; 12 digits reach year 33658 and keep int() cheap).
MAX_LENGTH_DIGITS = 76
MAX_TIME_DIGITS = 12

_REQUIRED = (b"v", b"a", b"b", b"bh", b"d", b"h", b"s")
_DIGITS = re.compile(rb"[0-9]+\Z")
_DOMAIN_SPECIALS = re.compile(r"[()<>\[\]:;@\\,\s]")


@dataclass(frozen=True)
class DkimResult:
    result: DkimResultKind
    domain: str  # d=
    selector: str  # s=
    algorithm: str  # a=
    reason: str = ""
    identity: str = ""  # i= (the AUID), "" when absent
    signature_b: str = ""  # the first 8 characters of b= (RFC 6008 header.b), to tell signatures apart


class _Signature:
    def __init__(self, field: Field, tags: dict[bytes, bytes]) -> None:
        self.field, self.tags = field, tags
        # tag values without their folding whitespace, decoded once (they are read many times)
        self.clean = {k: b"".join(v.split()).decode("ascii", "replace") for k, v in tags.items()}
        self.domain = self.clean.get(b"d", "").lower()
        self.key_name = f"{self.clean.get(b's', '')}._domainkey.{self.domain}"

    def tag(self, name: bytes) -> str:
        return self.clean.get(name, "")

    def result(self, kind: DkimResultKind, reason: str) -> DkimResult:
        return DkimResult(kind, self.domain, self.tag(b"s"), self.tag(b"a").lower(), reason,
                          self.tag(b"i"), self.tag(b"b")[:8])


_KeyAnswer = list[bytes] | DnsError


def _related(domain: str, prefer: str | None) -> bool:
    if not prefer or not domain:
        return False
    prefer = prefer.lower().rstrip(".")
    return domain == prefer or domain.endswith("." + prefer) or prefer.endswith("." + domain)


def _signatures(fields: Sequence[Field]) -> list[_Signature | str]:
    out: list[_Signature | str] = []
    for field in fields:
        if field[0].lower() != b"dkim-signature":
            continue
        try:
            out.append(_Signature(field, parse_tags(field[1])))
        except TagError as exc:
            out.append(f"malformed tag list: {exc}")
    return out


async def verify_dkim(dns: MailAuthDns, message: bytes, *, prefer_domain: str | None = None,
                      max_signatures: int = MAX_SIGNATURES, now: float | None = None,
                      crlf: bool = False) -> tuple[DkimResult, ...]:
    """Rule 1: the results of the message's DKIM signatures (at most ``max_signatures``).
    ``crlf``: the caller vouches that every line ends in CRLF (an SMTP session that saw no bare
    CR or LF): the body's line ends are then not checked (``dkimcanon`` rule 4)."""
    try:
        fields, body_start = split_message(message)
    except MessageError as exc:
        if b"dkim-signature" not in message.lower():
            return ()
        return (DkimResult("permerror", "", "", "", f"unparsable message: {exc}"),)
    found = _signatures(fields)
    if not found:
        return ()

    def preferred(i: int) -> bool:
        sig = found[i]
        return isinstance(sig, _Signature) and _related(sig.domain, prefer_domain)

    ordered = [0] if len(found) == 1 else sorted(range(len(found)), key=lambda i: (not preferred(i), i))
    chosen = ordered[:max_signatures]
    if len(found) > max_signatures:
        log.info("dkim: %d signatures; evaluating %d (MAX_SIGNATURES)", len(found), max_signatures)
    sigs = [s for s in (found[i] for i in chosen) if isinstance(s, _Signature)]
    when = time.time() if now is None else now
    checked = {id(sig): _check_safely(sig, when) for sig in sigs}
    # only signatures that passed their own checks need a key (a malformed one costs no query)
    names = sorted({s.key_name for s in sigs if isinstance(checked[id(s)], _Checked)})
    if len(names) == 1:  # the common case: no task to schedule (gather would make one)
        answers = [await _fetch(dns, names[0])]
    else:
        answers = list(await asyncio.gather(*(_fetch(dns, name) for name in names)))
    keys: dict[str, _KeyAnswer] = dict(zip(names, answers))
    body = _Body(message, body_start, crlf)
    for c in checked.values():
        if isinstance(c, _Checked):  # rule 6: every l= known before the body is hashed
            body.want(c.relaxed_body, c.length)
    results: list[DkimResult] = []
    for i in chosen:
        sig = found[i]
        if isinstance(sig, str):
            results.append(DkimResult("permerror", "", "", "", sig))
            continue
        try:
            results.append(_verify_one(fields, body, sig, checked[id(sig)], keys))
        except Exception as exc:  # hostile input: never a crash (what can go wrong)
            log.warning("dkim: unexpected error verifying d=%s: %r", sig.domain, exc)
            results.append(sig.result("permerror", f"verification error: {type(exc).__name__}"))
    return tuple(results)


async def _fetch(dns: MailAuthDns, name: str) -> _KeyAnswer:
    try:
        return await dns.txt(name)
    except DnsError as exc:
        return exc


class _Body:
    """Rule 6: body hashes by (relaxed, l=), each canonicalisation done once per message."""

    def __init__(self, message: bytes, start: int, crlf: bool) -> None:
        self.message, self.start, self.crlf = message, start, crlf
        self.digests: dict[tuple[bool, int | None], bytes] = {}
        self.lengths: dict[bool, int] = {}
        self.wanted: dict[bool, set[int | None]] = {False: set(), True: set()}

    def want(self, relaxed: bool, limit: int | None) -> None:
        self.wanted[relaxed].add(limit)

    def digest(self, relaxed: bool, limit: int | None) -> tuple[bytes, int]:
        """(digest of the first ``limit`` canonical octets, canonical body length)."""
        if (relaxed, limit) not in self.digests:
            limits = sorted(self.wanted[relaxed] | {limit}, key=lambda v: -1 if v is None else v)
            digests, self.lengths[relaxed] = body_hashes(self.message, self.start, relaxed, limits, crlf=self.crlf)
            self.digests.update({(relaxed, lim): d for lim, d in digests.items()})
        return self.digests[(relaxed, limit)], self.lengths[relaxed]


@dataclass(frozen=True)
class _Checked:
    algorithm: str
    relaxed_header: bool
    relaxed_body: bool
    signed: list[bytes]
    length: int | None
    bh: bytes
    b: bytes


def _check_signature(sig: _Signature, now: float) -> _Checked | DkimResult:
    """Rule 3 and rule 5: the signature's own tags, before any key or hash work."""
    for tag in _REQUIRED:
        if tag not in sig.tags:
            return sig.result("permerror", f"missing {tag.decode()}= tag (RFC 6376 §3.5)")
    if sig.tag(b"v") != "1":
        return sig.result("permerror", "v= is not 1 (RFC 6376 §3.5)")
    algorithm = sig.tag(b"a").lower()
    if algorithm not in VERIFIED_ALGORITHMS:
        return sig.result("neutral", f"algorithm {algorithm} not verified (RFC 8301)")
    canon = sig.tag(b"c").lower() or "simple/simple"
    header_c, _, body_c = canon.partition("/")
    body_c = body_c or "simple"
    if header_c not in ("simple", "relaxed") or body_c not in ("simple", "relaxed"):
        return sig.result("permerror", f"unknown canonicalisation c={canon}")
    if b"q" in sig.tags and "dns/txt" not in sig.tag(b"q").lower().split(":"):
        return sig.result("permerror", "q= does not offer dns/txt")
    domain = sig.domain
    if not domain or _DOMAIN_SPECIALS.search(domain):
        return sig.result("permerror", "d= is not a domain")
    auid = sig.tag(b"i")
    if auid:
        auid_domain = auid.rpartition("@")[2].lower()
        if auid_domain != domain and not auid_domain.endswith("." + domain):
            return sig.result("permerror", "i= domain is not d= or a subdomain of it (RFC 6376 §6.1.1)")
    signed = [h.lower() for h in b"".join(sig.tags[b"h"].split()).split(b":")]
    if b"from" not in signed:
        return sig.result("permerror", "h= does not sign From (RFC 6376 §6.1.1)")
    numbers: dict[bytes, int] = {}
    for tag, digits in ((b"l", MAX_LENGTH_DIGITS), (b"t", MAX_TIME_DIGITS), (b"x", MAX_TIME_DIGITS)):
        if tag in sig.tags:
            value = b"".join(sig.tags[tag].split())
            if not _DIGITS.match(value) or len(value) > digits:
                return sig.result("permerror", f"{tag.decode()}= is not a decimal of at most {digits} digits")
            numbers[tag] = int(value)
    signed_at, expires = numbers.get(b"t"), numbers.get(b"x")
    if signed_at is not None and signed_at > now + CLOCK_SLACK:
        return sig.result("permerror", f"t={signed_at} is in the future")
    if expires is not None and expires < now - CLOCK_SLACK:
        return sig.result("fail", f"signature expired (x={expires})")
    if expires is not None and signed_at is not None and expires < signed_at:
        return sig.result("permerror", "x= is before t= (RFC 6376 §3.5)")
    try:
        bh = base64.b64decode(b"".join(sig.tags[b"bh"].split()), validate=True)
        b = base64.b64decode(b"".join(sig.tags[b"b"].split()), validate=True)
    except binascii.Error:
        return sig.result("permerror", "b= or bh= is not base64")
    return _Checked(algorithm, header_c == "relaxed", body_c == "relaxed", signed, numbers.get(b"l"), bh, b)


def _check_safely(sig: _Signature, now: float) -> _Checked | DkimResult:
    try:
        return _check_signature(sig, now)
    except Exception as exc:  # hostile input: never a crash (what can go wrong)
        log.warning("dkim: unexpected error checking d=%s: %r", sig.domain, exc)
        return sig.result("permerror", f"signature check error: {type(exc).__name__}")


def _verify_one(fields: Sequence[Field], body: _Body, sig: _Signature, checked: _Checked | DkimResult,
                keys: dict[str, _KeyAnswer]) -> DkimResult:
    if isinstance(checked, DkimResult):
        return checked
    answer = keys.get(sig.key_name)
    if isinstance(answer, DnsTempError):
        return sig.result("temperror", f"key {sig.key_name}: {answer}")
    if isinstance(answer, NoSuchDomain) or answer is None or answer == []:
        return sig.result("permerror", f"no key at {sig.key_name}")
    if isinstance(answer, DnsError):
        return sig.result("permerror", f"key {sig.key_name}: {answer}")
    key = parse_key_record(answer[0])
    if isinstance(key, str):
        return sig.result("permerror", key)
    problem = key_problem(key, checked.algorithm, sig.tag(b"i").rpartition("@")[2].lower(), sig.domain)
    if problem:
        return sig.result("permerror", problem)
    testing = " (key in testing mode, t=y)" if key.testing else ""
    digest, length = body.digest(checked.relaxed_body, checked.length)
    if checked.length is not None and checked.length > length:
        return sig.result("fail", f"l={checked.length} is longer than the {length}-octet body" + testing)
    if digest != checked.bh:
        return sig.result("fail", "body hash mismatch (RFC 6376 §6.1.3)" + testing)
    data = header_hash_input(fields, checked.signed, sig.field, checked.relaxed_header)
    if not signature_valid(key, data, checked.b):
        return sig.result("fail", "signature did not verify" + testing)
    if checked.length is not None and checked.length < length:
        return sig.result("policy", f"l={checked.length} covers only part of the {length}-octet body" + testing)
    return sig.result("pass", "good signature" + testing)
