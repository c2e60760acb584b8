"""DKIM verification with real keys (dkimpy signs), a fake DNS for the keys, and bad input."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from pigeon.dns.resolver import DnsPermError, DnsTempError
from pigeon.mailauth.dkim import MAX_SIGNATURES, DkimResult, verify_dkim
from tests.unit.mailauth.fakedns import FakeDns
from tests.unit.mailauth.keys import MESSAGE, ed25519_key, rsa_key, sign


def _zone(extra: dict[str, str] | None = None) -> FakeDns:
    zone = {
        "sel._domainkey.example.net": [("TXT", rsa_key()[1])],
        "ed._domainkey.example.net": [("TXT", ed25519_key()[1])],
        "sel._domainkey.esp.test": [("TXT", rsa_key()[1])],
    }
    for selector, record in (extra or {}).items():
        zone[f"{selector}._domainkey.example.net"] = [("TXT", record)]
    return FakeDns(zone)


def _verify(message: bytes, dns: FakeDns | None = None, **kw: Any) -> tuple[DkimResult, ...]:
    return asyncio.run(verify_dkim(dns or _zone(), message, **kw))


def test_rsa_and_ed25519_relaxed_and_simple_pass() -> None:
    for ed, selector in ((False, "sel"), (True, "ed")):
        for canon in ((b"relaxed", b"relaxed"), (b"simple", b"simple"), (b"relaxed", b"simple")):
            (res,) = _verify(sign(MESSAGE, "example.net", selector, ed=ed, canon=canon))
            assert (res.result, res.domain, res.selector) == ("pass", "example.net", selector), (ed, canon, res)
            assert res.algorithm == ("ed25519-sha256" if ed else "rsa-sha256")


def test_unsigned_message() -> None:
    assert _verify(MESSAGE) == ()


def test_tampered_body_and_header_fail() -> None:
    signed = sign(MESSAGE, "example.net")
    (body,) = _verify(signed.replace(b"the body.", b"the b0dy."))
    (head,) = _verify(signed.replace(b"Subject: hello", b"Subject: hullo"))
    assert body.result == "fail" and "body hash" in body.reason
    assert head.result == "fail"
    # relaxed canonicalisation tolerates whitespace changes in headers
    (ws,) = _verify(signed.replace(b"Subject: hello", b"Subject:   hello"))
    assert ws.result == "pass"


def test_several_signatures() -> None:
    twice = sign(sign(MESSAGE, "example.net", "ed", ed=True), "esp.test")
    results = _verify(twice)
    assert [(r.result, r.domain) for r in results] == [("pass", "esp.test"), ("pass", "example.net")]
    # the From domain's signature is evaluated first when asked
    results = _verify(twice, prefer_domain="example.net")
    assert [r.domain for r in results] == ["example.net", "esp.test"]


def test_key_lookup_outcomes() -> None:
    signed = sign(MESSAGE, "example.net", "missing")
    (res,) = _verify(signed)
    assert res.result == "permerror" and "no key" in res.reason
    dns = FakeDns({"missing._domainkey.example.net": [("TXT", DnsTempError("SERVFAIL"))]})
    (res,) = _verify(signed, dns)
    assert res.result == "temperror"
    dns = FakeDns({"missing._domainkey.example.net": [("TXT", DnsPermError("answer larger than 16384 bytes"))]})
    (res,) = _verify(signed, dns)
    assert res.result == "permerror"


def test_key_record_tags() -> None:
    rsa_record = rsa_key()[1]
    cases = {
        "k1": (rsa_record.replace("k=rsa", "k=ed25519"), "permerror"),  # k= does not match a=
        "h1": (rsa_record + "; h=sha1", "permerror"),
        "h2": (rsa_record + "; h=sha1:sha256", "pass"),
        "s1": (rsa_record + "; s=tlsrpt", "permerror"),
        "v1": (rsa_record.replace("DKIM1", "DKIM2"), "permerror"),
        "r1": ("v=DKIM1; k=rsa; p=", "permerror"),  # revoked
        "y1": (rsa_record + "; t=y", "pass"),
        "ts": (rsa_record + "; t=s", "permerror"),  # i= is a subdomain
        "junk": ("this is not a key", "permerror"),
        "bad64": ("v=DKIM1; p=!!!!", "permerror"),
    }
    dns = _zone({sel: rec for sel, (rec, _) in cases.items()})
    for sel, (_, expected) in cases.items():
        (res,) = _verify(sign(MESSAGE, "example.net", sel, identity=b"@mail.example.net"), dns)
        assert res.result == expected, (sel, res)
        if sel == "y1":
            assert "testing" in res.reason


def test_huge_rsa_exponent_refused() -> None:
    n = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key().public_numbers().n
    odd = rsa.RSAPublicNumbers((1 << 200) + 1, n).public_key()
    der = odd.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    dns = _zone({"big": "v=DKIM1; p=" + base64.b64encode(der).decode()})
    (res,) = _verify(sign(MESSAGE, "example.net", "big"), dns)
    assert res.result == "permerror" and "too large" in res.reason


def test_length_tag_honoured_only_over_the_whole_body() -> None:
    signed = sign(MESSAGE, "example.net", length=True)
    (res,) = _verify(signed)
    assert res.result == "pass"
    (res,) = _verify(signed + b"Appended: click here\r\n")
    assert res.result == "policy" and "part of" in res.reason


def _with_tag(signed: bytes, tag: bytes) -> bytes:
    return signed.replace(b"DKIM-Signature: v=1;", b"DKIM-Signature: v=1; " + tag + b";", 1)


def test_absurd_length_and_expiry() -> None:
    signed = sign(MESSAGE, "example.net")
    (res,) = _verify(_with_tag(signed, b"l=" + b"9" * 80))
    assert res.result == "permerror"
    (res,) = _verify(_with_tag(signed, b"l=" + b"9" * 70))  # valid syntax, larger than the body
    assert res.result == "fail"
    (res,) = _verify(_with_tag(signed, b"x=1"))
    assert res.result == "fail" and "x=" in res.reason
    (res,) = _verify(_with_tag(signed, b"x=" + b"9" * 5000))
    assert res.result in ("fail", "permerror")


def test_unsupported_algorithm_is_neutral() -> None:
    signed = sign(MESSAGE, "example.net").replace(b"a=rsa-sha256", b"a=rsa-sha1", 1)
    (res,) = _verify(signed)
    assert res.result == "neutral"


def test_malformed_signatures() -> None:
    (res,) = _verify(b"DKIM-Signature: v=1; d=; d=\r\n" + MESSAGE)
    assert res.result == "permerror"
    (res,) = _verify(b"DKIM-Signature: v=1; a=rsa-sha256; d=example.net\r\n" + MESSAGE)
    assert res.result == "permerror" and "missing" in res.reason
    (res,) = _verify(b"DKIM-Signature: garbage\r\n" + MESSAGE)
    assert res.result == "permerror"


def test_five_hundred_signatures_are_bounded() -> None:
    junk = b"".join(b"DKIM-Signature: v=1; a=rsa-sha256; d=junk%d.test; s=s; h=from; bh=AAAA; b=AAAA\r\n" % i
                    for i in range(500))
    dns = _zone()
    started = time.process_time()
    results = _verify(junk + sign(MESSAGE, "example.net"), dns, prefer_domain="example.net")
    assert len(results) == MAX_SIGNATURES
    assert results[0].result == "pass" and results[0].domain == "example.net"
    assert len(dns.queries) <= MAX_SIGNATURES
    assert time.process_time() - started < 2.0


def test_times_are_judged_against_the_injected_clock() -> None:
    signed = sign(MESSAGE, "example.net")  # dkimpy writes t= (now)
    signed_at = int(signed.split(b"t=", 1)[1].split(b";", 1)[0])
    (res,) = _verify(signed, now=signed_at + 86400 * 365)  # no x=: an old signature is fine
    assert res.result == "pass"
    (res,) = _verify(signed, now=signed_at - 86400 * 2)  # t= two days in our future
    assert res.result == "permerror" and "future" in res.reason
    expiring = _with_tag(signed, b"x=%d" % (signed_at + 3600))
    (res,) = _verify(expiring, now=signed_at + 86400 * 7)
    assert res.result == "fail" and "expired" in res.reason
    (res,) = _verify(_with_tag(signed, b"x=%d" % (signed_at - 3600)))  # x= before t=
    assert res.result == "permerror"


def test_signature_tag_rules() -> None:
    signed = sign(MESSAGE, "example.net")
    for old, new, words in ((b" q=dns/txt;", b" q=dns/foo;", "dns/txt"),
                            (b" c=relaxed/relaxed;", b" c=relaxed/fancy;", "canonicalisation")):
        assert old in signed
        (res,) = _verify(signed.replace(old, new, 1))
        assert res.result == "permerror" and words in res.reason, (new, res)
    assert b"h=from : " in signed
    (res,) = _verify(signed.replace(b"h=from : ", b"h=", 1))
    assert res.result == "permerror" and "From" in res.reason
    assert b"i=@example.net;" in signed
    (res,) = _verify(signed.replace(b"i=@example.net;", b"i=@elsewhere.test;", 1))
    assert res.result == "permerror" and "i=" in res.reason
    dns = _zone()
    (res,) = _verify(signed.replace(b" b=", b" b=!", 1), dns)
    assert res.result == "permerror" and "base64" in res.reason
    assert dns.queries == []  # a malformed signature costs no key lookup


def test_lf_line_ends_and_unparsable_headers() -> None:
    signed = sign(MESSAGE, "example.net")
    (res,) = _verify(signed.replace(b"\r\n", b"\n"))  # stored with bare LF: same canonical form
    assert res.result == "pass"
    (res,) = _verify(b" starts with a continuation\r\n" + signed)
    assert res.result == "permerror" and "unparsable" in res.reason


def test_pkcs1_key_record() -> None:
    """Some signers publish the bare PKCS#1 RSAPublicKey instead of SubjectPublicKeyInfo."""
    pem = rsa_key()[0]
    pub = serialization.load_pem_private_key(pem, None).public_key()
    der = pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    dns = _zone({"pk1": "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()})
    (res,) = _verify(sign(MESSAGE, "example.net", "pk1"), dns)
    assert res.result == "pass", res


def test_ed25519_signatures_are_checked_by_libsodium_strictly() -> None:
    import base64
    import hashlib

    from cryptography.hazmat.primitives.asymmetric import ed25519

    from pigeon.mailauth.dkimkey import parse_key_record, signature_valid

    private = ed25519.Ed25519PrivateKey.generate()
    raw = private.public_key().public_bytes_raw()
    key = parse_key_record(b"v=DKIM1; k=ed25519; p=" + base64.b64encode(raw))
    assert not isinstance(key, str)
    data = b"from:a@b.test\r\ndkim-signature:v=1; b="
    good = private.sign(hashlib.sha256(data).digest())  # RFC 8463 §3: over the SHA-256 digest
    assert signature_valid(key, data, good)
    assert not signature_valid(key, data + b"x", good)
    assert not signature_valid(key, data, good[:-1])  # not 64 octets
    assert not signature_valid(key, data, good + b"\0")
    # A small-order public key (the identity point) verifies "anything" in lenient
    # implementations; libsodium refuses it (RFC 8032 §5.1.7 leaves that check to the verifier).
    weak = parse_key_record(b"v=DKIM1; k=ed25519; p=" + base64.b64encode(b"\x01" + b"\0" * 31))
    assert not isinstance(weak, str)
    assert not signature_valid(weak, data, b"\x01" + b"\0" * 63)


def test_a_caller_vouching_for_crlf_gets_the_same_verdicts() -> None:
    body = b"Hello  Bob,\t \r\n\r\nspaces   and\ttabs \r\nbase64QUJDRA==\r\n\r\n\r\n"
    for message in (sign(MESSAGE, "example.net"), sign(MESSAGE, "example.net", "ed", ed=True),
                    sign(MESSAGE.split(b"\r\n\r\n")[0] + b"\r\n\r\n" + body, "example.net"),
                    sign(MESSAGE, "example.net", canon=(b"simple", b"simple"))):
        plain = _verify(message)
        assert plain and plain[0].result == "pass"
        assert _verify(message, crlf=True) == plain
        tampered = message.replace(b"\r\n\r\n", b"\r\n\r\nX", 1)  # one more octet in the body
        assert _verify(tampered, crlf=True) == _verify(tampered) != plain
