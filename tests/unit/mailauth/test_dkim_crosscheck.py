"""Our DKIM verifier against dkimpy, the independent verifier: both judge the same messages,
signed by dkimpy in many shapes (both algorithms, all canonicalisations, odd whitespace, folded
and repeated header fields, empty bodies, trailing blank lines, bare-LF line ends, l= tags,
several signatures), as signed and after changes in transit; the verdicts must agree."""

from __future__ import annotations

import asyncio
import random
import time

import dkim
import dkim.canonicalization
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pigeon.mailauth import dkimcanon
from pigeon.mailauth.dkim import DkimResult, verify_dkim
from tests.unit.mailauth.fakedns import FakeDns
from tests.unit.mailauth.keys import ed25519_key, rsa_key

# RSA-1024 keeps dkimpy's pure-Python signing fast enough for hundreds of messages; a few use
# 2048 (key size changes nothing in the code under test but the modulus OpenSSL works with).
SIGNERS = {"r1": (False, 1024), "r2": (False, 2048), "ed": (True, 0)}
DNS_ZONE = {f"{sel}._domainkey.{d}": [("TXT", ed25519_key()[1] if ed else rsa_key(bits)[1])]
            for sel, (ed, bits) in SIGNERS.items() for d in ("example.net", "esp.test")}
CANONS = [(h, b) for h in (b"simple", b"relaxed") for b in (b"simple", b"relaxed")]
WS = [" ", "  ", "\t", " \t ", ""]


def _dkimpy_sign(message: bytes, selector: str, domain: str, canon: tuple[bytes, bytes], length: bool,
                 headers: list[bytes]) -> bytes:
    ed, bits = SIGNERS[selector]
    priv = ed25519_key()[0] if ed else rsa_key(bits)[0]
    sig = dkim.sign(message, selector.encode(), domain.encode(), priv,
                    signature_algorithm=b"ed25519-sha256" if ed else b"rsa-sha256",
                    canonicalize=canon, length=length, include_headers=headers)
    return bytes(sig) + message


def _dkimpy_verdicts(message: bytes) -> list[bool]:
    """dkimpy's verdict for each DKIM-Signature, top first (an exception is "not pass")."""
    def dnsfunc(name: bytes | str, timeout: int = 5) -> bytes | None:
        text = (name.decode() if isinstance(name, bytes) else name).rstrip(".").lower()
        records = DNS_ZONE.get(text)
        return records[0][1].encode() if records else None

    try:
        d = dkim.DKIM(message, minkey=1024)
    except dkim.DKIMException:
        return []
    count = sum(1 for name, _ in d.headers if name.lower() == b"dkim-signature")
    out = []
    for i in range(count):
        try:
            out.append(bool(dkim.DKIM(message, minkey=1024).verify(idx=i, dnsfunc=dnsfunc)))
        except dkim.DKIMException:
            out.append(False)
    return out


def _canonical_body_length(message: bytes, canon: bytes) -> int:
    d = dkim.DKIM(message)
    policy = dkim.canonicalization.CanonicalizationPolicy.from_c_value(canon)
    return len(policy.canonicalize_body(d.body))


def _ours(message: bytes) -> tuple[DkimResult, ...]:
    return asyncio.run(verify_dkim(FakeDns(DNS_ZONE), message, now=time.time()))


def _agree(message: bytes) -> list[str]:
    """Asserts agreement; returns our verdicts."""
    theirs = _dkimpy_verdicts(message)
    ours = _ours(message)
    assert len(ours) == len(theirs), (message, ours, theirs)
    for res, ok in zip(ours, theirs):
        if res.result == "policy":  # dkimpy honours any l=; we only one covering the whole body
            assert ok, (message, res)
            assert "covers only part" in res.reason
        else:
            assert (res.result == "pass") == ok, (message, res, ok)
    return [r.result for r in ours]


def _header_value(rng: random.Random, words: list[str]) -> str:
    out = rng.choice(WS)
    for i, word in enumerate(words):
        out += word
        if i < len(words) - 1:
            out += rng.choice(["\r\n ", "\r\n\t", "\r\n   "]) if rng.random() < 0.2 else (rng.choice(WS) or " ")
    return out + rng.choice(WS)


def _message(rng: random.Random) -> tuple[bytes, list[bytes]]:
    """A message with varied whitespace, folding and repeated fields; the names it may sign."""
    fields = [
        ("From", ["Alice", "<alice@example.net>"]),
        ("To", ["bob@example.org,", "carol@example.org"]),
        ("Subject", ["a", "subject", "with", "several", "words"]),
        ("Date", ["Mon,", "07", "Dec", "2026", "10:00:00", "+0000"]),
        ("Message-ID", [f"<{rng.randrange(10**9)}@example.net>"]),
    ]
    fields += [("X-Hop", ["from", f"hop{i}.example", "by", "mx"]) for i in range(rng.randrange(3))]
    fields += [("X-Tag", [f"tag{i}"]) for i in range(rng.randrange(3))]
    rng.shuffle(fields)
    names = [name.lower().encode() for name, _ in fields]
    head = "".join(f"{rng.choice([name, name.upper(), name.lower()])}:{_header_value(rng, words)}\r\n"
                   for name, words in fields)
    lines = []
    for _ in range(rng.choice([0, 0, 1, 3, 20])):
        words = [rng.choice(["hello", "x", "Body", "line", "--", "é".encode().decode("latin-1")])
                 for _ in range(rng.randrange(6))]
        lines.append(rng.choice(WS).join(words) + rng.choice(WS))
    body = "\r\n".join(lines) + rng.choice(["", "\r\n", "\r\n\r\n", "\r\n \r\n\t\r\n", "\r\n\r\n\r\n"])
    message = (head + "\r\n" + body).encode("latin-1")
    if rng.random() < 0.1:
        message = message.replace(b"\r\n", b"\n")  # stored with bare LF line ends
    return message, names


def _changed(rng: random.Random, message: bytes) -> bytes:
    """What can happen in transit, harmless or not."""
    kind = rng.randrange(7)
    if kind == 0:
        return message + b"appended footer\r\n"
    if kind == 1:
        return message + b"\r\n\r\n"  # trailing blank lines: every canonicalisation ignores them
    if kind == 2:
        return message.replace(b"Subject:", b"Subject:  ", 1)
    if kind == 3:
        return b"X-New: added on top\r\n" + message
    if kind == 4:
        return b"From: mallory@evil.test\r\n" + message
    if kind == 5:
        return message.replace(b" ", b"\t", 3)
    return message.replace(b"hello", b"hullo", 1)


def _corpus(seed: int, count: int) -> set[str]:
    rng = random.Random(seed)
    seen: set[str] = set()
    for _ in range(count):
        message, names = _message(rng)
        signed = message
        for _ in range(rng.choice([1, 1, 2, 3])):
            selector = rng.choice(list(SIGNERS))
            headers = [b"from"] + rng.sample(names, rng.randrange(len(names)))
            if rng.random() < 0.3:
                headers += [b"x-tag", b"x-tag", b"x-hop", b"x-hop"]  # oversigned: absent instances hash nothing
            canon = rng.choice(CANONS)
            length = rng.random() < 0.2
            signed = _dkimpy_sign(signed, selector, rng.choice(["example.net", "esp.test"]), canon, length,
                                  headers)
        seen.update(_agree(signed))
        seen.update(_agree(_changed(rng, signed)))
    return seen


def test_crosscheck_many_varied_messages() -> None:
    seen = _corpus(6376, 150)
    assert {"pass", "fail", "policy"} <= seen, seen  # the corpus exercised the verdicts compared


def test_crosscheck_with_tiny_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The chunked body path (big bodies) cut at every line: trailing blank lines held back
    across chunks, lines longer than a chunk."""
    for size in (1, 7, 64):
        monkeypatch.setattr(dkimcanon, "CHUNK", size)
        assert "pass" in _corpus(size, 25)


def test_big_body_streams() -> None:
    line = b"a  line\twith  whitespace   \r\n"
    body = line * (3 * dkimcanon.CHUNK // len(line)) + b"\r\n \r\n" * 1000
    message = b"From: a@example.net\r\nSubject: big\r\n\r\n" + body
    for canon in ((b"relaxed", b"relaxed"), (b"simple", b"simple")):
        signed = _dkimpy_sign(message, "ed", "example.net", canon, False, [b"from", b"subject"])
        assert _agree(signed) == ["pass"]
        assert _agree(signed.replace(b"line\twith", b"line\twiTh", 1)) == ["fail"]


def test_length_tag_partial_and_whole() -> None:
    message = b"From: a@example.net\r\nSubject: s\r\n\r\nline one\r\nline  two \r\n\r\n"
    for canon in CANONS:
        signed = _dkimpy_sign(message, "ed", "example.net", canon, True, [b"from", b"subject"])
        assert _agree(signed) == ["pass"]
        longer = signed + b"more\r\n"
        assert _agree(longer) == ["policy"]
        assert _canonical_body_length(longer, b"/".join(canon)) > _canonical_body_length(signed, b"/".join(canon))


_wsp = st.sampled_from([" ", "\t", "  ", " \t", "\t\t "])
_word = st.text(alphabet="abcXYZ019.,<>@-", min_size=1, max_size=8)
_line = st.lists(st.tuples(st.one_of(st.just(""), _wsp), _word), max_size=6).map(
    lambda parts: "".join(w + t for w, t in parts))
_value = st.lists(st.tuples(_word, st.sampled_from([" ", "\t", "  ", "\r\n ", "\r\n\t", " \r\n "])),
                  min_size=1, max_size=5).map(lambda parts: "".join(w + s for w, s in parts))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(subject=_value, to=_value, leading=st.one_of(st.just(""), _wsp),
       body=st.lists(st.tuples(_line, st.one_of(st.just(""), _wsp)), max_size=8),
       tail=st.sampled_from(["", "\r\n", "\r\n\r\n", "\r\n \r\n", "\r\n\t\r\n\r\n"]),
       canon=st.sampled_from(CANONS), ed=st.booleans(),
       change=st.sampled_from(["none", "body-ws", "header-ws", "tail", "body-text"]))
def test_property_random_whitespace(subject: str, to: str, leading: str, body: list[tuple[str, str]],
                                    tail: str, canon: tuple[bytes, bytes], ed: bool, change: str) -> None:
    lines = "\r\n".join(line + trail for line, trail in body)
    message = (f"From:{leading}a@example.net\r\nTo:{leading}{to}\r\nSubject:{subject}\r\n\r\n"
               f"{lines}{tail}").encode()
    signed = _dkimpy_sign(message, "ed" if ed else "r1", "example.net", canon, False,
                          [b"from", b"to", b"subject"])
    assert _agree(signed) == ["pass"]
    if change == "body-ws":
        signed = signed.replace(b" ", b"  ", 1).replace(b"\t", b" ", 1)
    elif change == "header-ws":
        signed = signed.replace(b"Subject:", b"Subject: \t", 1)
    elif change == "tail":
        signed = signed + b"\r\n \r\n"
    elif change == "body-text":
        signed = signed + b"x\r\n"
    _agree(signed)
