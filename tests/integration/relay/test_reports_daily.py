"""Issue 17: the running server sends the due TLS-RPT reports by itself (``app.reports``), and
they leave DKIM-signed: a.test's server (``[reports] interval``, the test knob for the daily
time) finds yesterday's counts for dest.test, queues the report to the ``rua`` of
``_smtp._tls.dest.test``, and dest.test's MX receives it; dkimpy verifies both signatures with
the keys a.test published through ``pigeon dns``. A restart does not send it again.
"""

from __future__ import annotations

import gzip
import json
import time
from email import message_from_bytes
from email.policy import default

import pytest

from pigeon.clocks import FakeClock
from pigeon.delivery.tlspolicy.reports import ReportBook
from tests.integration.relay.test_outbound_auth import _strip_delivery_headers, _verify_both, published
from tests.integration.relay.test_relay_through_queue import Net, net

pytestmark = pytest.mark.integration
__all__ = ["net", "published"]


def test_the_server_sends_the_due_tls_report_itself_dkim_signed_and_once(published: Net) -> None:
    n = published
    n.dns.zone["_smtp._tls.dest.test"] = [("TXT", "v=TLSRPTv1; rua=mailto:tlsrpt@dest.test")]
    n.primary.add_user("tlsrpt@dest.test")
    book = ReportBook(n.sender.data_dir / "tlspolicy", FakeClock(time.time() - 86400))
    book.record("dest.test", "sts", ["version: STSv1", "mode: enforce"], ["mx1.dest.test"], True)
    book.record("dest.test", "sts", ["version: STSv1", "mode: enforce"], ["mx1.dest.test"], False,
                "certificate-expired", "127.0.0.2", "mx1.dest.test")
    book.flush()
    n.sender.extra_toml += "[reports]\ninterval = 1\n"
    n.sender.write_config()
    n.primary.start()
    n.sender.start()
    [raw] = n.primary.wait_messages("tlsrpt@dest.test", 1)
    got = _strip_delivery_headers(raw)
    assert b"d=a.test" in got and got.count(b"DKIM-Signature:") == 2
    assert _verify_both(got, n.dns) == [True, True]  # RFC 8460 §3: the report is DKIM-signed
    msg = message_from_bytes(got, policy=default)
    assert msg["From"] == "postmaster@a.test" and msg["TLS-Report-Domain"] == "dest.test"
    att = next(p for p in msg.iter_attachments() if p.get_content_type() == "application/tlsrpt+gzip")
    doc = json.loads(gzip.decompress(att.get_content()))
    assert doc["policies"][0]["summary"] == {"total-successful-session-count": 1,
                                             "total-failure-session-count": 1}
    assert list((n.sender.data_dir / "tlspolicy").glob("tlsrpt-*.sent"))
    # A restart: the timer runs again (every second here), the .sent marker keeps the day done.
    n.sender.stop()
    n.sender.start()
    n.sender.wait_log(rf"pigeon\[{n.sender.pid}\] .*reports: kind=tls sent=0 failed=0")
    time.sleep(1.5)
    assert len(n.primary.messages("tlsrpt@dest.test")) == 1
