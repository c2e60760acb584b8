"""The records of `pigeon dns` (mailauth.dnsrecords): zone-file form and comparison."""

from __future__ import annotations

import re

from pigeon.mailauth.dnsrecords import compare, txt_strings, wanted_records, zone_text


def test_txt_is_split_into_quoted_strings_of_at_most_255_octets() -> None:
    text = "v=DKIM1; k=rsa; p=" + "A" * 600 + '"\\'
    out = txt_strings(text)
    parts = re.findall(r'"((?:[^"\\]|\\.)*)"', out)
    assert len(parts) == 3
    assert all(len(re.sub(r"\\(.)", r"\1", p).encode()) <= 255 for p in parts)
    assert "".join(re.sub(r"\\(.)", r"\1", p) for p in parts) == text


def test_every_record_kind_is_printed_fully_qualified() -> None:
    recs = wanted_records("A.test", "mx.a.test", [("202612e", "v=DKIM1; k=ed25519; p=xyz", True)],
                          public_ips=["192.0.2.1", "2001:db8::1"], services={"submissions": True})
    text = zone_text(recs)
    assert 'a.test. IN MX 10 mx.a.test.' in text
    assert 'a.test. IN TXT "v=spf1 ip4:192.0.2.1 ip6:2001:db8::1 ~all"' in text
    assert "mx.a.test. IN A 192.0.2.1" in text and "mx.a.test. IN AAAA 2001:db8::1" in text
    assert '202612e._domainkey.a.test. IN TXT "v=DKIM1; k=ed25519; p=xyz"' in text
    assert '_dmarc.a.test. IN TXT "v=DMARC1; p=quarantine; rua=mailto:postmaster@a.test"' in text
    assert re.search(r'_mta-sts\.a\.test\. IN TXT "v=STSv1; id=[0-9a-f]{1,32}"', text)
    assert "mta-sts.a.test. IN CNAME mx.a.test." in text
    assert '_smtp._tls.a.test. IN TXT "v=TLSRPTv1; rua=mailto:postmaster@a.test"' in text
    assert "_submissions._tcp.a.test. IN SRV 0 1 465 mx.a.test." in text
    assert "_imap._tcp.a.test. IN SRV 0 0 0 ." in text  # not offered (RFC 6186 §4)
    assert "autoconfig.a.test. IN CNAME mx.a.test." in text and "autodiscover.a.test." in text
    assert "; DMARC (RFC 7489): start with p=quarantine" in text


def test_compare_ok_missing_differs() -> None:
    recs = {r.owner + r.rtype: r for r in wanted_records("a.test", "mx.a.test", [])}
    spf = recs["a.test.TXT"]
    assert compare(spf, ["google-site-verification=x", "v=spf1 mx ~all"])[0] == "ok"
    assert compare(spf, ["v=spf1  mx ~all "])[0] == "ok"  # runs of blanks do not matter
    assert compare(spf, ["v=spf1 -all"]) == ("differs", "v=spf1 -all")
    assert compare(spf, ["google-site-verification=x"])[0] == "missing"
    assert compare(spf, []) == ("missing", "nothing")
    mx = recs["a.test.MX"]
    assert compare(mx, ["20 MX.A.TEST", "10 other.test"])[0] == "ok"
    assert compare(mx, ["10 other.test"])[0] == "differs"
    dmarc = recs["_dmarc.a.test.TXT"]
    assert compare(dmarc, ["v=DMARC1;p=quarantine;rua=mailto:postmaster@a.test"])[0] == "ok"
