"""``pigeon reports send``: yesterday's TLS-RPT counts become a gzipped RFC 8460 report mail to
the ``rua`` of ``_smtp._tls.<domain>``, submitted into our own queue (the server is stopped
here, so the report waits in the queue files), and the day is not reported twice."""

from __future__ import annotations

import gzip
import json
import time
from email import message_from_bytes
from email.policy import default
from pathlib import Path

import pytest

from pigeon.clocks import FakeClock
from pigeon.delivery.tlspolicy.reports import ReportBook
from tests.integration.harness import Server
from tests.unit.dns.zone_server import ZoneServer

pytestmark = pytest.mark.integration


def test_reports_send_queues_one_report_per_policy_domain(tmp_path: Path) -> None:
    zone = {"_smtp._tls.dest.test": [("TXT", "v=TLSRPTv1; rua=mailto:tls@reports.test")],
            "_smtp._tls.quiet.test": [("TXT", "v=spf1 -all")]}
    with ZoneServer(zone) as dns:
        host, port = dns.endpoint
        srv = Server(tmp_path, extra_toml=f'[dns]\nnameservers = ["{host}:{port}"]\n')
        book = ReportBook(srv.data_dir / "tlspolicy", FakeClock(time.time() - 86400))
        book.record("dest.test", "sts", ["version: STSv1", "mode: enforce"], ["mx1.dest.test"], True)
        book.record("dest.test", "sts", ["version: STSv1", "mode: enforce"], ["mx1.dest.test"], False,
                    "certificate-expired", "127.0.0.5", "mx1.dest.test")
        book.record("quiet.test", "tlsa", ["3 1 1 00"], [], True)
        book.flush()
        out = srv.cli("reports", "send").stdout
        assert "tls: 1 report(s) queued" in out, out
        assert "quiet.test: no TLS-RPT mailto rua published" in out
        queued = srv.queue_list()
        assert len(queued) == 1
        assert [r["address"] for r in queued[0]["recipients"]] == ["tls@reports.test"]
        bodies = list((srv.data_dir / "queue").rglob(f"*{queued[0]['id']}*"))
        raw = next(p.read_bytes() for p in bodies if b"TLS-Report-Domain" in p.read_bytes())
        msg = message_from_bytes(raw[raw.index(b"From: "):], policy=default)
        att = next(p for p in msg.iter_attachments() if p.get_content_type() == "application/tlsrpt+gzip")
        doc = json.loads(gzip.decompress(att.get_content()))
        assert doc["policies"][0]["summary"] == {"total-successful-session-count": 1,
                                                 "total-failure-session-count": 1}
        # sent days are not sent again
        assert "tls: 0 report(s) queued" in srv.cli("reports", "send").stdout
