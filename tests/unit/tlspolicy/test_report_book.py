"""``ReportBook`` across processes (``tlspolicy.reports`` rule 5): the server and an SMTP worker
count the same day and domain in their own files; ``due`` merges them, ``done`` removes both,
and a worker's late flush of a reported day does not make it due again."""

from __future__ import annotations

from pathlib import Path

from pigeon.clocks import FakeClock
from pigeon.delivery.tlspolicy.reports import ReportBook, utc_day

DAY = 86400.0
POLICY = ["version: STSv1", "mode: enforce"]


def test_server_and_worker_counts_are_merged_and_reported_once(tmp_path: Path) -> None:
    clock = FakeClock(1_800_000_000.0)
    server = ReportBook(tmp_path, clock)
    worker = ReportBook(tmp_path, clock, owner="w1")
    server.record("dest.test", "sts", POLICY, ["mx.dest.test"], True)
    server.record("dest.test", "sts", POLICY, ["mx.dest.test"], False, "certificate-expired", "192.0.2.1", "mx.dest.test")
    worker.record("dest.test", "sts", POLICY, ["mx.dest.test"], True)
    worker.record("dest.test", "sts", POLICY, ["mx.dest.test"], False, "certificate-expired", "192.0.2.1", "mx.dest.test")
    worker.record("other.test", "tlsa", ["3 1 1 00"], [], True)
    server.flush()
    worker.flush()
    day = utc_day(clock.now())
    assert sorted(p.name for p in tmp_path.glob("*.json")) == [f"tlsrpt-{day}.json", f"tlsrpt-{day}.w1.json"]

    clock.advance(DAY)
    sender = ReportBook(tmp_path, clock)  # as `pigeon reports send` and the daily task read them
    due = {domain: tally for d, domain, tally in sender.due(utc_day(clock.now())) if d == day}
    assert (due["dest.test"].success, due["dest.test"].failure) == (2, 2)
    assert due["dest.test"].failures == {"certificate-expired|192.0.2.1|mx.dest.test": 2}
    assert due["other.test"].success == 1
    sender.done(day)
    assert not list(tmp_path.glob("*.json"))
    # the worker's last counts of that day, flushed after the report went out, are dropped
    clock.advance(-DAY)
    worker.record("dest.test", "sts", POLICY, ["mx.dest.test"], True)
    clock.advance(DAY)
    worker.flush()
    assert not list(tmp_path.glob(f"tlsrpt-{day}*.json"))
    assert sender.due(utc_day(clock.now())) == []
