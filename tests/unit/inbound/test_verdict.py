"""The verdict's decisions (inbound.verdict rules 3, 4, 7, 8) with the checks' results given,
on a real cleanup transaction in a temporary queue."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from pigeon.cleanup.intake import Intake, Transaction
from pigeon.clocks import FakeClock
from pigeon.config import Config, parse_config
from pigeon.core.address import Address, parse_address
from pigeon.core.envelope import ClientInfo, Envelope, Recipient
from pigeon.inbound import verdict as v
from pigeon.inbound.evaluation import Evaluation
from pigeon.inbound.seams import ArcOutcome, DkimOutcome, DmarcOutcome, SpfOutcome
from pigeon.queue.store import FileQueueStore


@dataclass(frozen=True)
class Spf:
    result: str = "fail"
    identity: str = "mailfrom"
    domain: str = "out.test"
    sender: str = "a@out.test"
    explanation: str = ""


@dataclass(frozen=True)
class Arc:
    result: str = "pass"
    sealers: tuple[str, ...] = ("lists.test",)
    reason: str = ""


@dataclass(frozen=True)
class Record:
    p: str = "reject"
    rua: tuple[str, ...] = ("mailto:agg@rep.test",)


@dataclass(frozen=True)
class Dmarc:
    result: str = "fail"
    from_domain: str = "out.test"
    org_domain: str = "out.test"
    policy: str | None = "reject"
    disposition: str = "reject"
    spf_aligned: bool = False
    dkim_aligned: bool = False
    record: object = Record()
    reason: str = ""


class Checks:
    def __init__(self, dmarc: Dmarc | Exception, arc: Arc | None = None, spf_cached: bool = False) -> None:
        self.dmarc, self.arc = dmarc, arc or Arc("none", ())
        self.cached = spf_cached

    async def check_spf(self, ip: str, mail_from: str, helo: str) -> SpfOutcome:
        return Spf()

    def spf_cached(self, mail_from: str, helo: str) -> bool:
        return self.cached

    async def verify_dkim(self, message: bytes, prefer_domain: str | None, crlf: bool = False) -> Sequence[DkimOutcome]:
        raise RuntimeError("a bug in DKIM")  # rule 8: logged, counted as no result

    async def verify_arc(self, message: bytes) -> ArcOutcome:
        return self.arc

    async def check_dmarc(self, header_from_domain: str, spf: SpfOutcome,
                          dkim: Sequence[DkimOutcome]) -> DmarcOutcome:
        if isinstance(self.dmarc, Exception):
            raise self.dmarc
        return dataclasses.replace(self.dmarc, from_domain=header_from_domain)

    def header_from_domain(self, headers: bytes) -> str | None:
        for line in headers.split(b"\r\n"):
            if line.lower().startswith(b"from:"):
                return line.rpartition(b"@")[2].decode().strip(">")
        return None

    def authentication_results(self, authserv_id: str, spf: SpfOutcome | None, dkim: Sequence[DkimOutcome],
                               dmarc: DmarcOutcome | None, arc: ArcOutcome | None) -> bytes:
        return f"Authentication-Results: {authserv_id}; dmarc={dmarc.result if dmarc else 'none'}\r\n".encode()

    def received_spf(self, spf: SpfOutcome, receiver: str, client_ip: str, helo: str) -> bytes:
        return f"Received-SPF: {spf.result}\r\n".encode()

    def is_ours(self, field_value: str, authserv_id: str) -> bool:
        return field_value.strip().startswith(authserv_id)


class Expand:
    def expand(self, address: Address) -> list[Address]:
        return [address]


def _config(extra: str = "") -> Config:
    return parse_config(f'hostname = "mx.example.test"\ndata_dir = "/tmp/x"\ndomains = ["example.test"]\n'
                        f"[inbound]\n{extra}\n", "t", Path("/"))


def _txn(tmp: Path, from_domain: str, size: int = 10) -> Transaction:
    clock = FakeClock(1_800_000_000.0)
    intake = Intake(FileQueueStore(tmp / "q", clock), Expand(), "mx.example.test", clock)
    txn = intake.begin(Envelope(parse_address("a@out.test"), client=ClientInfo("192.0.2.1", "c.test")))
    txn.add_rcpt(Recipient(parse_address("bob@example.test")))
    txn.write(f"From: <a@{from_domain}>\r\nSubject: x\r\n\r\n".encode() + b"b" * size + b"\r\n")
    return txn


def _run(tmp: Path, checks: Checks, from_domain: str = "out.test", extra: str = "",
         size: int = 10) -> tuple[v.Outcome, Transaction, list[Evaluation]]:
    cfg = _config(extra)
    recorded: list[Evaluation] = []
    verdicts = v.Verdicts(lambda: cfg, checks, None, lambda d: d in cfg.domains, recorded.append, lambda: 1.0)
    txn = _txn(tmp, from_domain, size)

    async def go() -> v.Outcome:
        client = v.Client("192.0.2.1", 4000, "c.test")
        return await verdicts.end_of_message(txn, client, "a@out.test", verdicts.spf(client, "a@out.test"))

    return asyncio.run(go()), txn, recorded


def test_dmarc_reject_refuses_and_is_recorded_for_the_report(tmp_path: Path) -> None:
    out, _, recorded = _run(tmp_path, Checks(Dmarc()))
    assert out.refuse is not None and (out.refuse.code, out.refuse.enhanced) == (550, "5.7.1")
    assert out.fields == {"spf": "fail", "dkim": "none", "dmarc": "fail", "arc": "none"}
    assert len(recorded) == 1 and recorded[0].disposition == "reject"
    assert recorded[0].policy.rua == ("mailto:agg@rep.test",) and recorded[0].source_ip == "192.0.2.1"


def test_a_trusted_arc_sealer_lets_a_dmarc_failure_through_and_the_header_says_so(tmp_path: Path) -> None:
    out, txn, recorded = _run(tmp_path, Checks(Dmarc(), Arc()), extra='trusted_arc_sealers = ["lists.test"]')
    assert out.refuse is None and not out.junk
    assert b"".join(txn.spooled()).startswith(b"Authentication-Results: mx.example.test; dmarc=fail\r\n")
    assert recorded[0].override == "trusted_forwarder" and recorded[0].disposition == "none"


def test_an_untrusted_sealer_does_not(tmp_path: Path) -> None:
    out, _, _ = _run(tmp_path, Checks(Dmarc(), Arc()), extra='trusted_arc_sealers = ["other.test"]')
    assert out.refuse is not None


def test_quarantine_files_into_junk(tmp_path: Path) -> None:
    out, txn, _ = _run(tmp_path, Checks(Dmarc(disposition="quarantine", policy="quarantine")))
    assert out.refuse is None and out.junk and txn.envelope.folder == "Junk"


def test_our_domain_without_a_pass_is_refused_and_a_temperror_is_temporary(tmp_path: Path) -> None:
    out, _, _ = _run(tmp_path, Checks(Dmarc(result="none", policy=None, disposition="none", record=None)),
                     from_domain="example.test")
    assert out.refuse is not None and out.refuse.code == 550
    out, _, _ = _run(tmp_path / "2", Checks(Dmarc(result="temperror", record=None)), from_domain="example.test")
    assert out.refuse is not None and (out.refuse.code, out.refuse.enhanced) == (451, "4.7.5")
    out, _, _ = _run(tmp_path / "3", Checks(Dmarc(result="none", record=None)), from_domain="example.test",
                     extra="reject_local_spoofing = false")
    assert out.refuse is None


def test_a_check_that_raises_is_no_crash_and_no_refusal(tmp_path: Path) -> None:
    out, txn, _ = _run(tmp_path, Checks(RuntimeError("bug in DMARC")))
    assert out.refuse is None and out.fields["dmarc"] == "none"
    assert b"".join(txn.spooled()).startswith(b"Authentication-Results: mx.example.test; dmarc=none")


def test_a_message_too_large_to_verify_is_not_refused_for_its_dkim(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(v, "MAX_VERIFIED", 1000)
    out, _, _ = _run(tmp_path, Checks(Dmarc()), size=5000)
    assert out.refuse is None and "too large" in out.reason


def test_trusted_networks_skip_everything(tmp_path: Path) -> None:
    out, txn, recorded = _run(tmp_path, Checks(Dmarc()), extra='trusted_networks = ["192.0.2.0/24"]')
    assert out.refuse is None and out.fields == {} and not recorded
    assert b"".join(txn.spooled()).startswith(b"Received:")


def test_spf_with_its_record_cached_runs_inline_at_the_end_of_the_message(tmp_path: Path) -> None:
    cfg = _config()
    verdicts = v.Verdicts(lambda: cfg, Checks(Dmarc(), spf_cached=True), None, lambda d: False, None, lambda: 1.0)
    cold = v.Verdicts(lambda: cfg, Checks(Dmarc()), None, lambda d: False, None, lambda: 1.0)
    client = v.Client("192.0.2.1", 4000, "c.test")

    async def go() -> v.Outcome:
        cold_task = cold.spf(client, "a@out.test")
        assert cold_task is not None  # not cached: a task from MAIL FROM on
        cold_task.cancel()
        assert verdicts.spf(client, "a@out.test") is None  # cached: no task
        return await verdicts.end_of_message(_txn(tmp_path, "out.test"), client, "a@out.test", None)

    out = asyncio.run(go())
    assert out.fields["spf"] == "fail"  # the check ran, inline


def test_trusted_is_remembered_per_address_and_forgotten_on_a_reload() -> None:
    current = [_config('trusted_networks = ["192.0.2.0/24"]')]
    verdicts = v.Verdicts(lambda: current[0], None, None, lambda d: False, None, lambda: 1.0)
    assert verdicts.trusted("192.0.2.1") and verdicts.trusted("192.0.2.1")
    assert not verdicts.trusted("198.51.100.1")
    assert verdicts.trusted("::ffff:192.0.2.7")  # an IPv4-mapped address is its IPv4 one
    current[0] = _config('trusted_networks = ["198.51.100.0/24"]')  # a reload
    assert not verdicts.trusted("192.0.2.1")
    assert verdicts.trusted("198.51.100.1")
    current[0] = _config()
    assert not verdicts.trusted("198.51.100.1")


def test_the_trusted_memory_is_bounded() -> None:
    cfg = _config('trusted_networks = ["10.0.0.0/8"]')
    verdicts = v.Verdicts(lambda: cfg, None, None, lambda d: False, None, lambda: 1.0)
    for i in range(v.MAX_TRUSTED_MEMO + 10):
        assert verdicts.trusted(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")
    assert len(verdicts._memo) <= v.MAX_TRUSTED_MEMO
    assert not verdicts.trusted("192.0.2.1")
