"""DMARC aggregate reports: recording, grouping, the XML, external destinations, sending."""

from __future__ import annotations

import asyncio
import email
import email.policy
import gzip
import json
import xml.etree.ElementTree as ET
from pathlib import Path

from pigeon.inbound import reports as r
from pigeon.inbound.evaluation import Evaluation, Published


def ev(ip: str = "192.0.2.1", domain: str = "pass.test", rua: tuple[str, ...] = ("mailto:agg@rep.test",),
       disp: str = "none", when: float = 1_800_000_000.0) -> Evaluation:
    return Evaluation(when, ip, domain, domain, ((domain, "sel", "pass"),), domain, "mfrom", "pass", disp,
                      True, True, Published(domain, "reject", "", 100, "r", "r", rua))


class Dns:
    def __init__(self, txt: dict[str, list[bytes]]) -> None:
        self._txt = txt

    async def a(self, name: str) -> list[str]:
        return []

    async def txt(self, name: str) -> list[bytes]:
        if name not in self._txt:
            raise LookupError(name)
        return self._txt[name]


def test_evaluations_round_trip_through_the_recorder(tmp_path: Path) -> None:
    rec = r.Recorder(tmp_path, "w1", lambda: 0.0)
    rec.record(ev())
    rec.record(ev("192.0.2.2"))
    rec.close()
    (tmp_path / "main.jsonl").write_bytes(b'{"not": "an evaluation"}\n{"cut')
    taken = r.take(tmp_path)
    assert sorted(p.name.split("-", 2)[2] for p in taken) == ["main.jsonl", "w1.jsonl"]
    assert [e.source_ip for e in r.read(taken)] == ["192.0.2.1", "192.0.2.2"]  # broken lines skipped


def test_one_report_per_policy_domain_and_address_rows_counted() -> None:
    reports = r.group([ev(), ev(), ev("192.0.2.9", disp="reject"), ev(domain="b.test", rua=("mailto:x@b.test!10m",)),
                       ev(domain="c.test", rua=("https://no.test/",))])
    assert [(x.policy.domain, x.rua, x.limit) for x in reports] == [
        ("b.test", "x@b.test", 10 * 1024 * 1024), ("pass.test", "agg@rep.test", 0)]
    root = ET.fromstring(r.report_xml(reports[1], "Org & Co", "noreply-dmarc@mx.test", "id1"))
    assert root.findtext("report_metadata/org_name") == "Org & Co"
    assert root.findtext("policy_published/p") == "reject"
    rows = {(rec.findtext("row/source_ip"), rec.findtext("row/count"), rec.findtext("row/policy_evaluated/disposition"))
            for rec in root.findall("record")}
    assert rows == {("192.0.2.1", "2", "none"), ("192.0.2.9", "1", "reject")}
    assert root.findtext("record/auth_results/dkim/selector") == "sel"


def test_external_destinations_need_the_receivers_consent() -> None:
    dns = Dns({"pass.test._report._dmarc.rep.test": [b"v=DMARC1"], "pass.test._report._dmarc.no.test": [b"x"]})
    assert asyncio.run(r.verified(dns, "pass.test", "agg@rep.test"))
    assert not asyncio.run(r.verified(dns, "pass.test", "agg@no.test"))
    assert not asyncio.run(r.verified(dns, "pass.test", "agg@fails.test"))  # lookup failure: not sent
    assert asyncio.run(r.verified(dns, "sub.pass.test", "dmarc@pass.test"))  # same organisation


def test_send_due_queues_a_gzipped_report_and_forgets_what_it_sent(tmp_path: Path) -> None:
    rec = r.Recorder(tmp_path, "main", lambda: 0.0)
    rec.record(ev())
    rec.record(ev(domain="other.test", rua=("mailto:agg@unverified.test",)))
    rec.close()
    sent: list[tuple[str, str, bytes]] = []

    async def submit(sender: str, rcpt: str, message: bytes) -> str:
        sent.append((sender, rcpt, message))
        return f"Q{len(sent)}"

    dns = Dns({"pass.test._report._dmarc.rep.test": [b"v=DMARC1; "]})
    ids = asyncio.run(r.send_due(tmp_path, dns, submit, "mx.test", "", 1_800_000_100.0))
    assert ids == ["Q1"] and sent[0][:2] == ("noreply-dmarc@mx.test", "agg@rep.test")
    msg = email.message_from_bytes(sent[0][2], policy=email.policy.default)
    assert msg["Subject"].startswith("Report Domain: pass.test Submitter: mx.test Report-ID: <")
    (att,) = list(msg.iter_attachments())
    assert att.get_filename() == "mx.test!pass.test!1800000000!1800000001.xml.gz"
    assert b"<source_ip>192.0.2.1</source_ip>" in gzip.decompress(att.get_content())
    assert list(tmp_path.iterdir()) == []
    assert asyncio.run(r.send_due(tmp_path, dns, submit, "mx.test", "", 0.0)) == []


def test_a_line_is_the_json_of_the_evaluation_whatever_its_strings() -> None:
    odd = Evaluation(1_800_000_000.25, "2001:db8::1", 'q"uote\\.test', "\u00e9t\u00e9.test\x01",
                     (("a.test", "s\n1", "pass"), ("b.test", "", "fail")), "env.test", "helo", "softfail",
                     "quarantine", False, True,
                     Published("pol.test", "quarantine", "reject", 50, "s", "r", ("mailto:a@x.test", 'mailto:"b"@y')),
                     "trusted_forwarder")
    for e in (ev(), ev(when=1_800_000_000), odd, Evaluation(1.0, "", "", "", (), "", "", "", "", True, False,
                                                            Published("d"))):
        line = e.to_line()
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        assert json.loads(line) == e.to_json()
        assert Evaluation.from_json(json.loads(line)) == e


def test_inside_the_event_loop_lines_wait_until_the_flush_delay_or_close(tmp_path: Path) -> None:
    rec = r.Recorder(tmp_path, "w2", lambda: 0.0)
    path = tmp_path / "w2.jsonl"

    async def go() -> None:
        rec.record(ev("192.0.2.1"))
        rec.record(ev("192.0.2.2"))
        assert not path.exists()  # gathered, not written yet
        await asyncio.sleep(r.FLUSH_DELAY + 0.2)
        assert path.read_bytes().count(b"\n") == 2  # one timer wrote both
        rec.record(ev("192.0.2.3"))
        rec.close()  # an orderly stop writes what waits
        assert path.read_bytes().count(b"\n") == 3

    asyncio.run(go())
    assert [e.source_ip for e in r.read([path])] == ["192.0.2.1", "192.0.2.2", "192.0.2.3"]


def test_a_full_buffer_is_written_at_once_and_a_taken_file_is_not_written_into(tmp_path: Path) -> None:
    rec = r.Recorder(tmp_path, "w3", lambda: 0.0)
    path = tmp_path / "w3.jsonl"

    async def go() -> None:
        n = size = 0
        while size < r.MAX_PENDING:
            assert not path.exists()
            e = ev(f"192.0.2.{n % 250}")
            rec.record(e)
            n, size = n + 1, size + len(e.to_line())
        assert path.read_bytes().count(b"\n") == n  # MAX_PENDING reached: written without waiting
        taken = r.take(tmp_path)
        assert len(r.read(taken)) == n
        for p in taken:
            p.unlink()  # sent
        rec.record(ev("198.51.100.1"))
        rec.flush()
        assert [e.source_ip for e in r.read([path])] == ["198.51.100.1"]  # a new file, not the unlinked one

    asyncio.run(go())
    rec.close()


def test_a_recorder_outliving_its_event_loop_still_writes_in_the_next_one(tmp_path: Path) -> None:
    rec = r.Recorder(tmp_path, "w4", lambda: 0.0)
    path = tmp_path / "w4.jsonl"

    async def record_and_leave(ip: str) -> None:
        rec.record(ev(ip))  # the loop ends before its timer fires

    async def record_and_wait(ip: str) -> None:
        rec.record(ev(ip))  # a timer in this loop, not the dead one's
        await asyncio.sleep(r.FLUSH_DELAY + 0.2)

    asyncio.run(record_and_leave("192.0.2.1"))
    assert not path.exists()
    asyncio.run(record_and_wait("192.0.2.2"))
    assert [e.source_ip for e in r.read([path])] == ["192.0.2.1", "192.0.2.2"]
    rec.close()
