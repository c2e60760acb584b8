"""DKIM verification (RFC 6376, RFC 8463) with dkimpy, its key lookups through our resolver.

Rules:
1. ``verify_dkim(dns, message)`` returns one ``DkimResult`` per DKIM-Signature it evaluates, in
   the order evaluated; ``()`` when the message carries none. At most ``MAX_SIGNATURES`` are
   evaluated (the rest are ignored, as if absent, and logged): those whose ``d=`` is the
   ``prefer_domain`` (the header From domain, for DMARC) or a parent/child of it come first,
   then the others top-down. CPU per message is thus bounded by 5 body canonicalisations and
   5 public-key operations, whatever the number of signatures (RFC 6376 §6.1 lets a verifier
   limit how many it tries).
2. DNS: the keys (``<s>._domainkey.<d>`` TXT, RFC 6376 §3.6.2.1) of the chosen signatures are
   fetched first, concurrently, through ``MailAuthDns`` (its cache); dkimpy then verifies with a
   synchronous ``dnsfunc`` that only reads those prefetched answers, in the event loop (the
   work is a few hundred microseconds; no thread). A temporary DNS failure is ``temperror``;
   NXDOMAIN or no TXT record is ``permerror`` ("no key", RFC 6376 §6.1.2).
3. The key record is checked here before dkimpy sees it (RFC 6376 §3.6.1): ``v=`` if present is
   ``DKIM1``; ``k=`` (default ``rsa``) must match the signature's ``a=``; ``h=`` if present must
   list ``sha256``; ``s=`` must be ``*`` or ``email``; an empty ``p=`` is a revoked key
   (permerror); ``t=s`` requires the ``i=`` domain to be exactly ``d=``; ``t=y`` (testing) is
   reported in ``reason`` and changes nothing else. RSA keys must be 1024..``MAX_RSA_BITS`` bits
   with an exponent under ``MAX_RSA_EXPONENT_BITS`` bits (RFC 8301 §3.2; bounds the work).
4. Results (RFC 8601 §2.7.1): ``pass``; ``fail`` when the signature or the body hash does not
   verify or the signature has expired (``x=``); ``policy`` when it verifies but ``l=`` covers
   only part of the body (we honour ``l=`` only when it covers the whole body: content appended
   after the signed part must not ride on the signature); ``neutral`` when a signature is
   syntactically valid but uses an algorithm we do not verify (e.g. ``rsa-sha1``, RFC 8301 §3.1);
   ``permerror`` for a malformed signature or key; ``temperror`` for DNS.
5. ``x=``/``t=`` are judged by dkimpy against the system clock (it reads ``time.time()``; its
   10-hour slack hides the difference with an injected clock).

What can go wrong: a message dkimpy cannot parse gives one ``permerror`` result; any dkimpy
exception becomes ``permerror`` (logged), never a crash.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import dkim
import dkim.canonicalization
import dkim.crypto
import dkim.util

from pigeon.mailauth.lookup import DnsError, DnsTempError, MailAuthDns, NoSuchDomain

log = logging.getLogger(__name__)

DkimResultKind = Literal["pass", "fail", "neutral", "none", "temperror", "permerror", "policy"]

# Rule 1: signatures evaluated per message. Real mail carries 1-3 (author, ESP, list); 5 leaves
# room for forwarding chains while capping the work an attacker can ask for.
MAX_SIGNATURES = 5
# Rule 3: RFC 8301 §3.2 asks verifiers to handle 1024..4096-bit keys; 8192 is the largest in
# real use, and the cap bounds the modular exponentiation's cost.
MAX_RSA_BITS = 8192
# Real RSA keys use e = 65537 (17 bits); a huge exponent would make verification slow.
MAX_RSA_EXPONENT_BITS = 64
# RFC 8301 §3.1: rsa-sha1 MUST NOT be considered valid; RFC 8463 adds ed25519-sha256.
VERIFIED_ALGORITHMS = frozenset((b"rsa-sha256", b"ed25519-sha256"))
# dkimpy's minimum RSA size (RFC 8301 §3.2: keys under 1024 bits MUST NOT be considered valid).
MIN_RSA_BITS = 1024


@dataclass(frozen=True)
class DkimResult:
    result: DkimResultKind
    domain: str  # d=
    selector: str  # s=
    algorithm: str  # a=
    reason: str = ""
    identity: str = ""  # i= (the AUID), "" when absent
    signature_b: str = ""  # the first 8 characters of b= (RFC 6008 header.b), to tell signatures apart


@dataclass(frozen=True)
class _Signature:
    index: int  # among the message's DKIM-Signature fields, top first (dkimpy's idx)
    tags: dict[bytes, bytes]

    def tag(self, name: bytes) -> str:
        return re.sub(rb"\s+", b"", self.tags.get(name, b"")).decode("ascii", "replace")

    @property
    def domain(self) -> str:
        return self.tag(b"d").lower()

    @property
    def key_name(self) -> str:
        return f"{self.tag(b's')}._domainkey.{self.domain}"

    def result(self, kind: DkimResultKind, reason: str) -> DkimResult:
        return DkimResult(kind, self.domain, self.tag(b"s"), self.tag(b"a").lower(), reason,
                          self.tag(b"i"), self.tag(b"b")[:8])


_KeyAnswer = list[bytes] | DnsError


def _related(domain: str, prefer: str | None) -> bool:
    if not prefer or not domain:
        return False
    prefer = prefer.lower().rstrip(".")
    return domain == prefer or domain.endswith("." + prefer) or prefer.endswith("." + domain)


def _signatures(headers: Sequence[tuple[bytes, bytes]]) -> list[_Signature | str]:
    out: list[_Signature | str] = []
    for name, value in headers:
        if name.lower() != b"dkim-signature":
            continue
        try:
            out.append(_Signature(len(out), dkim.util.parse_tag_value(value)))
        except dkim.util.InvalidTagValueList as exc:
            out.append(f"malformed tag list: {exc}")
    return out


async def verify_dkim(dns: MailAuthDns, message: bytes, *, prefer_domain: str | None = None,
                      max_signatures: int = MAX_SIGNATURES) -> tuple[DkimResult, ...]:
    """Rule 1: the results of the message's DKIM signatures (at most ``max_signatures``)."""
    try:
        verifier = dkim.DKIM(message, minkey=MIN_RSA_BITS)
    except dkim.DKIMException as exc:
        if b"dkim-signature" not in message.lower():
            return ()
        return (DkimResult("permerror", "", "", "", f"unparsable message: {exc}"),)
    found = _signatures(verifier.headers)
    if not found:
        return ()
    def preferred(i: int) -> bool:
        sig = found[i]
        return isinstance(sig, _Signature) and _related(sig.domain, prefer_domain)

    ordered = sorted(range(len(found)), key=lambda i: (not preferred(i), i))
    chosen = ordered[:max_signatures]
    if len(found) > max_signatures:
        log.info("dkim: %d signatures; evaluating %d (MAX_SIGNATURES)", len(found), max_signatures)
    sigs = [s for s in (found[i] for i in chosen) if isinstance(s, _Signature)]
    names = sorted({s.key_name for s in sigs if s.domain and s.tag(b"s")})
    answers = await asyncio.gather(*(_fetch(dns, name) for name in names))
    keys: dict[str, _KeyAnswer] = dict(zip(names, answers))
    results: list[DkimResult] = []
    for i in chosen:
        sig = found[i]
        if isinstance(sig, str):
            results.append(DkimResult("permerror", "", "", "", sig))
        else:
            results.append(_verify_one(verifier, sig, keys))
    return tuple(results)


async def _fetch(dns: MailAuthDns, name: str) -> _KeyAnswer:
    try:
        return await dns.txt(name)
    except DnsError as exc:
        return exc


def _verify_one(verifier: dkim.DKIM, sig: _Signature, keys: dict[str, _KeyAnswer]) -> DkimResult:
    for tag in (b"v", b"a", b"b", b"bh", b"d", b"h", b"s"):
        if tag not in sig.tags:
            return sig.result("permerror", f"missing {tag.decode()}= tag (RFC 6376 §3.5)")
    algorithm = sig.tags[b"a"].strip().lower()
    if algorithm not in VERIFIED_ALGORITHMS:
        return sig.result("neutral", f"algorithm {algorithm.decode('ascii', 'replace')} not verified (RFC 8301)")
    answer = keys.get(sig.key_name)
    if isinstance(answer, DnsTempError):
        return sig.result("temperror", f"key {sig.key_name}: {answer}")
    if isinstance(answer, NoSuchDomain) or answer is None or answer == []:
        return sig.result("permerror", f"no key at {sig.key_name}")
    if isinstance(answer, DnsError):
        return sig.result("permerror", f"key {sig.key_name}: {answer}")
    record = answer[0]  # RFC 6376 §6.1.2: with several records the verifier may pick one
    problem, testing = _check_key(record, sig, algorithm)
    if problem:
        return sig.result("permerror", problem)

    def dnsfunc(name: bytes | str, timeout: int = 5) -> bytes:
        return record  # the one prefetched record for this signature (rule 2)

    try:
        ok = verifier.verify(idx=sig.index, dnsfunc=dnsfunc)
    except dkim.DKIMException as exc:
        text = str(exc)
        kind: DkimResultKind = "fail" if ("body hash mismatch" in text or "x= value is past" in text) else "permerror"
        return sig.result(kind, text[:200] + testing)
    except Exception as exc:  # dkimpy on hostile input: never a crash (what can go wrong)
        log.warning("dkim: unexpected error verifying d=%s: %r", sig.domain, exc)
        return sig.result("permerror", f"verification error: {type(exc).__name__}")
    if not ok:
        return sig.result("fail", "signature did not verify" + testing)
    if b"l" in sig.tags:
        partial = _partial_body(verifier, sig)
        if partial:
            return sig.result("policy", partial + testing)
    return sig.result("pass", "good signature" + testing)


def _check_key(record: bytes, sig: _Signature, algorithm: bytes) -> tuple[str, str]:
    """Rule 3: (problem or "", testing note or "")."""
    try:
        key = dkim.util.parse_tag_value(record)
    except dkim.util.InvalidTagValueList as exc:
        return f"malformed key record: {exc}", ""
    if key.get(b"v", b"DKIM1") != b"DKIM1":
        return "key record v= is not DKIM1", ""
    ktype = key.get(b"k", b"rsa").lower()
    if ktype != algorithm.split(b"-")[0]:
        return f"key type k={ktype.decode('ascii', 'replace')} does not match a={algorithm.decode()}", ""
    if b"h" in key and b"sha256" not in [h.strip().lower() for h in key[b"h"].split(b":")]:
        return "key h= does not allow sha256", ""
    services = [x.strip().lower() for x in key.get(b"s", b"*").split(b":")]
    if b"*" not in services and b"email" not in services:
        return "key service type s= excludes email", ""
    p = re.sub(rb"\s+", b"", key.get(b"p", b""))
    if not p:
        return "key revoked (empty p=)", ""
    flags = [f.strip().lower() for f in key.get(b"t", b"").split(b":")]
    if b"s" in flags:
        auid = sig.tag(b"i")
        if auid and auid.rpartition("@")[2].lower() != sig.domain:
            return "key t=s: the i= domain must be d= itself", ""
    if ktype == b"rsa":
        problem = _rsa_key_problem(p)
        if problem:
            return problem, ""
    return "", (" (key in testing mode, t=y)" if b"y" in flags else "")


@functools.lru_cache(maxsize=256)  # a pure memo of a parse: the same keys come back all day
def _rsa_key_problem(p: bytes) -> str:
    try:
        pk = dkim.crypto.parse_public_key(base64.b64decode(p))
    except Exception as exc:  # binascii.Error, UnparsableKeyError, ASN.1 errors
        return f"unparsable RSA key: {type(exc).__name__}"
    bits = int(pk["modulus"]).bit_length()
    if bits > MAX_RSA_BITS or int(pk["publicExponent"]).bit_length() > MAX_RSA_EXPONENT_BITS:
        return f"RSA key too large ({bits} bits)"
    return ""


def _partial_body(verifier: dkim.DKIM, sig: _Signature) -> str:
    """Rule 4: a reason when ``l=`` covers less than the whole canonicalised body."""
    try:
        policy = dkim.canonicalization.CanonicalizationPolicy.from_c_value(sig.tags.get(b"c", b"simple/simple"))
        length = len(policy.canonicalize_body(verifier.body))
        covered = int(sig.tags[b"l"].strip())
    except (ValueError, dkim.DKIMException, dkim.canonicalization.InvalidCanonicalizationPolicyError) as exc:
        return f"unusable l=: {exc}"
    if covered < length:
        return f"l={covered} covers only part of the {length}-octet body"
    return ""
