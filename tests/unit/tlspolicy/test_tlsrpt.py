"""TLS-RPT (RFC 8460): the rua record, the counts and the report mail."""

from __future__ import annotations

import email
import email.policy
import gzip
import json

from pigeon.delivery.tlspolicy.tlsrpt import MAX_FAILURE_KINDS, Tally, parse_rua, report_message


def test_rua() -> None:
    assert parse_rua(["v=TLSRPTv1; rua=mailto:tls@example.com,https://r.example/x"]) == ["tls@example.com"]
    assert parse_rua(["v=TLSRPTv1;rua=mailto:a@b.example?subject=x , mailto:c@d.example"]) == ["a@b.example", "c@d.example"]
    assert parse_rua(["v=TLSRPTv1; rua=mailto:a@b", "v=TLSRPTv1; rua=mailto:c@d"]) == []  # not exactly one
    assert parse_rua(["v=spf1 -all"]) == [] and parse_rua(["v=TLSRPTv1; rua=mailto:"]) == []
    assert parse_rua(["v=TLSRPTv1; rua=mailto:a b@c"]) == []


def test_tally_is_bounded_and_round_trips() -> None:
    t = Tally("sts", ["version: STSv1"], ["mx.example"])
    t.add(True)
    for i in range(MAX_FAILURE_KINDS + 50):
        t.add(False, "certificate-not-trusted", f"192.0.2.{i % 250}", f"mx{i}.example")
    assert t.success == 1 and t.failure == MAX_FAILURE_KINDS + 50 and len(t.failures) == MAX_FAILURE_KINDS
    assert Tally.from_json(json.loads(json.dumps(t.to_json()))) == t


def test_report_message_is_rfc8460_shaped() -> None:
    t = Tally("sts", ["version: STSv1", "mode: enforce"], ["mx.dest.example"])
    t.add(True)
    t.add(False, "starttls-not-supported", "192.0.2.1", "mx.dest.example")
    msg = report_message("mx.sender.example", "postmaster@sender.example", ["tls@dest.example"], "r1",
                         "2026-12-06", "dest.example", t, 1796515200, 1796601599,
                         "Mon, 07 Dec 2026 00:00:00 +0000", "<r1@mx.sender.example>")
    parsed = email.message_from_bytes(msg.as_bytes(), policy=email.policy.default)
    assert parsed.get_content_type() == "multipart/report" and parsed.get_param("report-type") == "tlsrpt"
    assert parsed["TLS-Report-Domain"] == "dest.example"
    assert parsed["Subject"] == "Report Domain: dest.example Submitter: mx.sender.example Report-ID: <r1>"
    parts = [p for p in parsed.iter_attachments() if p.get_content_type() == "application/tlsrpt+gzip"]
    assert parts[0].get_filename() == "mx.sender.example!dest.example!1796515200!1796601599!r1.json.gz"
    doc = json.loads(gzip.decompress(parts[0].get_content()))
    pol = doc["policies"][0]
    assert doc["date-range"]["start-datetime"] == "2026-12-06T00:00:00Z" and doc["report-id"] == "r1"
    assert pol["policy"]["policy-type"] == "sts" and pol["policy"]["mx-host"] == ["mx.dest.example"]
    assert pol["summary"] == {"total-successful-session-count": 1, "total-failure-session-count": 1}
    assert pol["failure-details"] == [{"result-type": "starttls-not-supported", "failed-session-count": 1,
                                       "sending-mta-ip": "192.0.2.1", "receiving-mx-hostname": "mx.dest.example"}]
