"""DANE matching (RFC 7672 §3): usable records, DANE-EE and DANE-TA against real chains."""

from __future__ import annotations

import datetime

from pigeon.delivery.tlspolicy.tlsa import TlsaRecord, association, match_chain, usable
from tests.unit.tlspolicy.certs import make_ca, make_leaf

NOW = datetime.datetime.now(datetime.timezone.utc)


def test_usable_records_and_the_reasons_for_the_others() -> None:
    good, skipped = usable([
        TlsaRecord(3, 1, 1, b"\x00" * 32), TlsaRecord(2, 0, 2, b"\x00" * 64), TlsaRecord(3, 0, 0, b"\x30\x00"),
        TlsaRecord(1, 1, 1, b"\x00" * 32), TlsaRecord(3, 2, 1, b"\x00" * 32), TlsaRecord(3, 1, 9, b"\x00"),
        TlsaRecord(3, 1, 1, b"\x00" * 31), TlsaRecord(255, 255, 255, b""),
    ])
    assert [(r.usage, r.selector, r.mtype) for r in good] == [(3, 1, 1), (2, 0, 2), (3, 0, 0)]
    assert len(skipped) == 5
    assert any("usage 1" in s for s in skipped) and any("selector 2" in s for s in skipped)
    assert any("matching type 9" in s for s in skipped) and any("31 octets" in s for s in skipped)


def test_dane_ee_matches_the_leaf_with_every_selector_and_matching_type() -> None:
    leaf = make_leaf(None, "other-name.example", expired=True)  # RFC 7672 §3.1.1: no name, no expiry check
    for selector in (0, 1):
        for mtype in (0, 1, 2):
            rec = TlsaRecord(3, selector, mtype, association(leaf.der, selector, mtype))
            assert match_chain([leaf.der], [rec], ("mx.example",), NOW) is None
    wrong = TlsaRecord(3, 1, 1, association(make_leaf(None, "x.example").der, 1, 1))
    assert "no TLSA record matches" in (match_chain([leaf.der], [wrong], ("mx.example",), NOW) or "")


def test_dane_ta_needs_the_chain_the_name_and_validity() -> None:
    ca = make_ca()
    leaf = make_leaf(ca, "mx.example")
    ta = TlsaRecord(2, 0, 1, association(ca.der, 0, 1))
    assert match_chain([leaf.der, ca.der], [ta], ("mx.example",), NOW) is None
    assert match_chain([leaf.der, ca.der], [TlsaRecord(2, 1, 2, association(ca.der, 1, 2))], ("mx.example",), NOW) is None
    # RFC 7672 §3.2.2: the leaf must name the MX host
    assert "fails for other.example" in (match_chain([leaf.der, ca.der], [ta], ("other.example",), NOW) or "")
    # the TA must be in the chain the server sent
    assert match_chain([leaf.der], [ta], ("mx.example",), NOW) is not None
    # a TA record matching the leaf itself is not a trust anchor for it
    assert match_chain([leaf.der], [TlsaRecord(2, 0, 1, association(leaf.der, 0, 1))], ("mx.example",), NOW) is not None
    expired = make_leaf(ca, "mx.example", expired=True)
    assert match_chain([expired.der, ca.der], [ta], ("mx.example",), NOW) is not None


def test_garbage_chain_is_a_mismatch_not_a_crash() -> None:
    rec = TlsaRecord(3, 0, 1, b"\x00" * 32)
    assert "unparsable" in (match_chain([b"not a certificate"], [rec], ("mx",), NOW) or "")
    assert "no certificate" in (match_chain([], [rec], ("mx",), NOW) or "")
