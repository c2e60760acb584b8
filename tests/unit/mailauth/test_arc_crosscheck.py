"""Our ARC verifier against dkimpy's: chains of 1-3 sets sealed by dkimpy over varied messages,
as sealed and after changes in transit; both must give the same verdict."""

from __future__ import annotations

import asyncio
import random

import dkim

from pigeon.mailauth.arc import verify_arc
from tests.unit.mailauth.fakedns import FakeDns
from tests.unit.mailauth.keys import MESSAGE, rsa_key
from tests.unit.mailauth.test_dkim_crosscheck import DNS_ZONE, _changed, _dkimpy_sign, _message

SEALERS = ("list.test", "fwd.test", "relay.test")
ZONE = DNS_ZONE | {f"arc._domainkey.{d}": [("TXT", rsa_key(1024)[1])] for d in SEALERS}


def _seal(message: bytes, domain: str, rng: random.Random) -> bytes:
    arc = "pass" if b"ARC-Seal" in message else "none"
    ar = f"Authentication-Results: mx.{domain}; dkim=pass header.d=example.net; arc={arc}\r\n".encode()
    message = ar + message
    headers = [b"from"] + rng.sample([b"to", b"subject", b"date", b"message-id"], rng.randrange(4))
    fields = dkim.arc_sign(message, b"arc", domain.encode(), rsa_key(1024)[0], f"mx.{domain}".encode(),
                           include_headers=headers)
    return b"".join(fields) + message


def _dkimpy_pass(message: bytes) -> bool:
    def dnsfunc(name: bytes | str, timeout: int = 5) -> bytes | None:
        text = (name.decode() if isinstance(name, bytes) else name).rstrip(".").lower()
        records = ZONE.get(text)
        return records[0][1].encode() if records else None

    try:
        cv, _, _ = dkim.ARC(message, minkey=1024).verify(dnsfunc=dnsfunc)
    except dkim.DKIMException:
        return False
    return bool(cv == dkim.CV_Pass)


def _agree(message: bytes) -> str:
    ours = asyncio.run(verify_arc(FakeDns(ZONE), message))
    assert (ours.result == "pass") == _dkimpy_pass(message), (message, ours)
    return ours.result


def test_arc_crosscheck() -> None:
    rng = random.Random(8617)
    seen = set()
    for _ in range(40):
        message, _names = _message(rng)
        if rng.random() < 0.5:
            message = _dkimpy_sign(message, "ed", "example.net", (b"relaxed", b"relaxed"), False, [b"from"])
        for domain in SEALERS[:rng.randrange(1, 4)]:
            message = _seal(message, domain, rng)
        seen.add(_agree(message))
        seen.add(_agree(_changed(rng, message)))
    assert seen == {"pass", "fail"}, seen


def test_arc_tampered_seal_fails() -> None:
    rng = random.Random(1)
    twice = _seal(_seal(MESSAGE, "list.test", rng), "fwd.test", rng)
    assert _agree(twice) == "pass"
    # the oldest Authentication-Results rewritten: only the seals cover it
    aar = b"ARC-Authentication-Results: i=1; mx.list.test;\r\n dkim=pass"
    assert aar in twice
    assert _agree(twice.replace(aar, aar.replace(b"pass", b"fail"))) == "fail"
    # the newest seal's cv= changed
    assert _agree(twice.replace(b"cv=pass", b"cv=none", 1)) == "fail"
