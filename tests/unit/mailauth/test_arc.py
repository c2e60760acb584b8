"""ARC chains sealed by dkimpy with real keys, verified through a fake DNS."""

from __future__ import annotations

import asyncio

import dkim

from pigeon.dns.resolver import DnsTempError
from pigeon.mailauth.arc import MAX_ARC_SETS, ArcResult, verify_arc
from tests.unit.mailauth.fakedns import FakeDns
from tests.unit.mailauth.keys import MESSAGE, rsa_key, sign


def _seal(message: bytes, domain: str, arc_result: str = "none") -> bytes:
    """What a forwarder does: add its Authentication-Results, then an ARC set on top."""
    ar = f"Authentication-Results: mx.{domain}; dkim=pass header.d=example.net; arc={arc_result}\r\n".encode()
    message = ar + message
    fields = dkim.arc_sign(message, b"arc", domain.encode(), rsa_key()[0], f"mx.{domain}".encode(),
                           include_headers=[b"from", b"to", b"subject", b"date", b"message-id"])
    return b"".join(fields) + message


def _dns() -> FakeDns:
    return FakeDns({f"arc._domainkey.{d}": [("TXT", rsa_key()[1])] for d in ("list.test", "fwd.test")}
                   | {"sel._domainkey.example.net": [("TXT", rsa_key()[1])]})


def _verify(message: bytes, dns: FakeDns | None = None) -> ArcResult:
    return asyncio.run(verify_arc(dns or _dns(), message))


def test_no_chain() -> None:
    assert _verify(MESSAGE) == ArcResult("none", ())


def test_one_and_two_sets_pass() -> None:
    once = _seal(sign(MESSAGE, "example.net"), "list.test")
    res = _verify(once)
    assert (res.result, res.sealers) == ("pass", ("list.test",)), res
    twice = _seal(once, "fwd.test", "pass")
    res = _verify(twice)
    assert (res.result, res.sealers) == ("pass", ("list.test", "fwd.test")), res


def test_modified_after_sealing_fails() -> None:
    once = _seal(MESSAGE, "list.test")
    assert _verify(once.replace(b"the body.", b"the b0dy.")).result == "fail"
    assert _verify(once.replace(b"Subject: hello", b"Subject: hullo")).result == "fail"


def test_missing_or_failing_keys_fail() -> None:
    once = _seal(MESSAGE, "list.test")
    assert _verify(once, FakeDns({})).result == "fail"
    res = _verify(once, FakeDns({"arc._domainkey.list.test": [("TXT", DnsTempError("SERVFAIL"))]}))
    assert res.result == "fail" and "temporary" in res.reason


def test_absurd_instances_fail_without_verifying() -> None:
    dns = _dns()
    bogus = b"ARC-Seal: i=999999; a=rsa-sha256; cv=none; d=list.test; s=arc; t=1; b=AAAA\r\n" + MESSAGE
    assert _verify(bogus, dns).result == "fail"
    many = b"".join(b"ARC-Seal: i=%d; a=rsa-sha256; cv=pass; d=x%d.test; s=arc; t=1; b=AAAA\r\n" % (i, i)
                    for i in range(1, MAX_ARC_SETS + 2)) + MESSAGE
    res = _verify(many, dns)
    assert res.result == "fail" and len(res.sealers) == MAX_ARC_SETS + 1
    assert dns.queries == []
    assert _verify(b"ARC-Seal: garbage\r\n" + MESSAGE).result == "fail"
