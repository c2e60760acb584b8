"""DKIM keys (mailauth.keys) and signatures (mailauth.dkimsign), verified by dkimpy."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import dkim
import pytest

from pigeon.mailauth.dkimsign import arc_headers, dkim_headers, header_list
from pigeon.mailauth.keys import DkimKey, KeyStore

DEC_2026 = 1796665000.0  # 2026-12


def _dns(keys: list[DkimKey]) -> dict[bytes, bytes]:
    return {f"{k.selector}._domainkey.{k.domain}.".encode(): k.txt_record().encode() for k in keys}


def test_keys_made_once_named_by_month_and_algorithm_mode_0600(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "dkim")
    assert store.ensure("A.test", DEC_2026) is True
    assert store.ensure("a.test", DEC_2026) is False
    assert store.signing_selectors("a.test") == ["202612e", "202612r"]
    keys = store.signing_keys("a.test")
    assert [(k.selector, k.algorithm) for k in keys] == [("202612e", "ed25519"), ("202612r", "rsa")]
    for name in ("202612e.key", "202612r.key", "signing"):
        assert stat.S_IMODE(os.stat(tmp_path / "dkim" / "a.test" / name).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "dkim" / "a.test").st_mode) == 0o700
    assert keys[0].txt_record().startswith("v=DKIM1; k=ed25519; p=")
    assert len(keys[1].txt_record()) > 300  # RSA-2048: more than one TXT string


def test_rotate_keeps_old_keys_published_until_retired(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "dkim")
    store.ensure("a.test", DEC_2026)
    new = store.rotate("a.test", DEC_2026)
    assert new == ["202612e2", "202612r2"]
    assert [k.selector for k in store.signing_keys("a.test")] == new  # the cache saw the change
    assert [k.selector for k in store.published("a.test")] == ["202612e", "202612e2", "202612r", "202612r2"]
    with pytest.raises(ValueError, match="rotate first"):
        store.retire("a.test", "202612e2")
    store.retire("a.test", "202612e")
    with pytest.raises(ValueError, match="no DKIM key"):
        store.retire("a.test", "202612e")
    with pytest.raises(ValueError):
        store.ensure("../etc", DEC_2026)


MSG = (b"From: Alice <alice@a.test>\r\nTo: bob@b.test\r\nCc: c@b.test\r\nSubject: hi\r\n"
       b"Date: Mon, 07 Dec 2026 10:00:00 +0000\r\nMessage-ID: <1@a.test>\r\nX-Other: not signed\r\n"
       b"\r\nhello\r\n")


def test_both_signatures_verify_and_from_is_oversigned(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "dkim")
    store.ensure("a.test", DEC_2026)
    keys = store.signing_keys("a.test")
    records = _dns(keys)
    signed = dkim_headers(MSG, keys) + MSG
    d = dkim.DKIM(signed)
    assert [d.verify(idx=i, dnsfunc=lambda n, timeout=5: records.get(n)) for i in range(2)] == [True, True]
    text = signed.decode()
    assert "a=ed25519-sha256" in text and "a=rsa-sha256" in text and "c=relaxed/relaxed" in text
    assert header_list(MSG).count(b"From") == 2 and b"X-Other" not in header_list(MSG)
    # A second From added on the way breaks both (oversigning, RFC 6376 §8.15).
    tampered = signed.replace(b"\r\n\r\nhello", b"\r\nFrom: mallory@evil.test\r\n\r\nhello")
    d2 = dkim.DKIM(tampered)
    assert [d2.verify(idx=i, dnsfunc=lambda n, timeout=5: records.get(n)) for i in range(2)] == [False, False]


def test_arc_seal_verifies_and_carries_our_results(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "dkim")
    store.ensure("fwd.test", DEC_2026)
    rsa = [k for k in store.signing_keys("fwd.test") if k.algorithm == "rsa"][0]
    records = _dns([rsa])
    with_ar = b"Authentication-Results: mx.fwd.test; spf=pass smtp.mailfrom=a.test\r\n" + MSG
    sealed = arc_headers(with_ar, rsa, "mx.fwd.test") + with_ar
    result, _, reason = dkim.arc_verify(sealed, dnsfunc=lambda n, timeout=5: records.get(n))
    assert result == b"pass", reason
    assert b"ARC-Authentication-Results: i=1; mx.fwd.test;" in sealed and b"spf=pass" in sealed
    bare = arc_headers(MSG, rsa, "mx.fwd.test") + MSG  # no results of ours: "none"
    assert dkim.arc_verify(bare, dnsfunc=lambda n, timeout=5: records.get(n))[0] == b"pass"
    assert b"Authentication-Results: mx.fwd.test; none" not in bare  # only dkimpy saw it
