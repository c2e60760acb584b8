"""The openspf RFC 7208 test suite (data/rfc7208-tests.yml) against ``check_spf`` and a fake DNS.

The suite's conventions (those of its reference driver, pyspf's testspf.py): a ``TIMEOUT``
entry makes every query of that name for a type not listed before it time out; a record whose
value is ``TIMEOUT`` times out for its type; a name absent from the zone is NXDOMAIN, except
names under ``error.`` which time out; ``SPF`` (type 99) records stand in for TXT records when the
name has no TXT record (``TXT: NONE`` means "no TXT record"); the default explanation is
``DEFAULT``. A test lists one result or several acceptable ones (the first is preferred).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml

from pigeon.dns.resolver import DnsTempError
from pigeon.mailauth.spf import check_spf
from tests.unit.mailauth.fakedns import FakeDns, Record

DATA = Path(__file__).parent / "data" / "rfc7208-tests.yml"


class SuiteDns(FakeDns):
    def _answer(self, name: str, rdtype: str) -> list[object]:
        key = name.lower().rstrip(".")
        if key not in self.zone and key.startswith("error."):
            raise DnsTempError(f"{key}: timeout")
        return super()._answer(name, rdtype)


def _zone(data: dict[str, list[Any]]) -> dict[str, list[Record]]:
    zone: dict[str, list[Record]] = {}
    for name, entries in data.items():
        records: list[Record] = []
        spf: list[Record] = []
        has_txt = False
        seen: set[str] = set()
        timed_out = False
        for entry in entries:
            if entry == "TIMEOUT":
                timed_out = True
                break
            ((rtype, value),) = entry.items()
            seen.add(rtype)
            if value == "TIMEOUT":
                records.append((rtype, DnsTempError(f"{name}/{rtype}: timeout")))
                continue
            if rtype == "TXT":
                has_txt = True
                if value != "NONE":
                    records.append(("TXT", value))
            elif rtype == "SPF":
                if value != "NONE":
                    spf.append(("TXT", value))
            elif rtype == "MX":
                records.append(("MX", (value[0], value[1])))
            else:
                records.append((rtype, value))
        if not has_txt:
            records.extend(spf)
            if spf:
                seen.add("TXT")
        if timed_out:
            records.append(("*", DnsTempError(f"{name}: timeout")))
            # types listed before TIMEOUT answer normally (even with no record, e.g. TXT: NONE)
            for rtype in seen:
                if not any(t == rtype for t, _ in records):
                    records.append((rtype + "-none", None))
        zone[name] = records
    return zone


def _cases() -> list[Any]:
    cases = []
    for scenario in yaml.safe_load_all(DATA.read_text()):
        zone = _zone(scenario["zonedata"])
        for test_id, test in scenario["tests"].items():
            cases.append(pytest.param(zone, test, id=test_id))
    return cases


@pytest.mark.parametrize(("zone", "test"), _cases())
def test_rfc7208_suite(zone: dict[str, list[Record]], test: dict[str, Any]) -> None:
    dns = SuiteDns(zone)
    result = asyncio.run(check_spf(dns, test["host"], test["mailfrom"], test["helo"],
                                   default_explanation="DEFAULT"))
    expected = test["result"] if isinstance(test["result"], list) else [test["result"]]
    assert result.result in expected, (result, test.get("description"))
    if "explanation" in test:
        assert result.explanation == test["explanation"]
