"""Rendering Authentication-Results (RFC 8601) and Received-SPF (RFC 7208 §9.1)."""

from __future__ import annotations

from pigeon.mailauth.arc import ArcResult
from pigeon.mailauth.authres import authentication_results, clauses, is_ours, received_spf
from pigeon.mailauth.dkim import DkimResult
from pigeon.mailauth.dmarc import DmarcRecord, DmarcResult
from pigeon.mailauth.spf import SpfResult

SPF = SpfResult("pass", "mailfrom", "example.net", "u@example.net", "", "192.0.2.1", "out.example.net",
                "ip4:192.0.2.0/24")
DKIM = DkimResult("pass", "example.net", "sel", "ed25519-sha256")
DMARC = DmarcResult("pass", "example.net", "example.net", "reject", "none", True, True, DmarcRecord("reject"))


def test_the_issue_example() -> None:
    field = authentication_results("mx.example.org", clauses(SPF, [DKIM], DMARC, ArcResult("none", ())))
    unfolded = field.decode().replace("\r\n\t", " ")
    assert unfolded == ("Authentication-Results: mx.example.org; spf=pass smtp.mailfrom=example.net; "
                        "dkim=pass header.d=example.net header.s=sel header.a=ed25519-sha256; "
                        "dmarc=pass (p=reject) header.from=example.net; arc=none\r\n")
    assert all(len(line) < 100 for line in field.decode().split("\r\n"))


def test_failures_helo_and_none() -> None:
    spf = SpfResult("softfail", "helo", "h.example.net", "postmaster@h.example.net")
    dmarc = DmarcResult("fail", "example.net", "example.net", "reject", "quarantine", False, False, None)
    bad = DkimResult("fail", "example.net", "sel", "rsa-sha256", "body hash mismatch (got x)")
    text = b"".join([authentication_results("mx.test", clauses(spf, [], dmarc, ArcResult("pass", ("l.test",))))])
    assert b"spf=softfail smtp.helo=h.example.net" in text and b"dkim=none" in text
    assert b"dmarc=fail (p=reject dis=quarantine) header.from=example.net" in text
    assert b"arc=pass (sealers: l.test)" in text
    assert b"dkim=fail (body hash mismatch got x) header.d=example.net" in authentication_results(
        "mx.test", clauses(None, [bad], None, None))
    assert authentication_results("mx.test", []) == b"Authentication-Results: mx.test; none\r\n"


def test_hostile_values_cannot_add_lines() -> None:
    spf = SpfResult("fail", "helo", 'evil\r\nX-Injected: 1 "q"', "postmaster@evil", "x\r\ny", "1.2.3.4",
                    "evil\r\nX-Injected: 2")
    dkim = DkimResult("permerror", "a b;c", "s(", "rsa-sha256", "reason ) with \\ and\r\nX-Injected: 3")
    for field in (authentication_results("mx.test", clauses(spf, [dkim], None, None)), received_spf(spf, "mx.test")):
        lines = field.split(b"\r\n")
        assert all(line.startswith((b"\t", b"Authentication-Results:", b"Received-SPF:")) for line in lines[:-1])
        assert lines[-1] == b""
    assert b'smtp.helo="evilX-Injected: 1 \\"q\\""' in authentication_results("m", clauses(spf, None, None, None))


def test_received_spf() -> None:
    field = received_spf(SPF, "mx.example.org").decode()
    assert field.startswith("Received-SPF: pass (mx.example.org: domain of u@example.net designates 192.0.2.1 "
                            "as permitted sender)\r\n\t")
    for pair in ("client-ip=192.0.2.1;", "envelope-from=u@example.net;", "helo=out.example.net;",
                 "receiver=mx.example.org;", "identity=mailfrom;", 'mechanism="ip4:192.0.2.0/24";'):
        assert pair in field.replace("\r\n\t", " ")
    err = SpfResult("permerror", "mailfrom", "x.test", "u@x.test", "more than 10 DNS-querying terms", "192.0.2.1")
    assert 'problem="more than 10 DNS-querying terms"' in received_spf(err, "mx").decode()


def test_is_ours() -> None:
    assert is_ours(" MX.Example.org; spf=pass", "mx.example.org")
    assert is_ours("(forged) mx.example.org 1; dkim=pass", "mx.example.org")
    assert is_ours("mx.example.org;spf=pass", "mx.example.org.")
    assert not is_ours("mx.example.org.evil.test; spf=pass", "mx.example.org")
    assert not is_ours("", "mx.example.org")
