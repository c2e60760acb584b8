"""The MTA-STS cache (RFC 8461 §5.1) without a network: loaded from disk, kept through failures,
refreshed in the background, and bad TXT records mean "no new policy"."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pigeon.clocks import FakeClock
from pigeon.delivery.tlspolicy.state import save_json
from pigeon.delivery.tlspolicy.sts import REFRESH_AFTER, StsCache
from pigeon.dns.fake import FakeResolver
from pigeon.dns.resolver import DnsTempError
from pigeon.net.tls import client_context

POLICY = "version: STSv1\r\nmode: enforce\r\nmx: mx.dest.test\r\nmax_age: 604800\r\n"


def _cache(tmp: Path, clock: FakeClock, txt: list[str] | DnsTempError) -> tuple[StsCache, FakeResolver]:
    save_json(tmp / "mta-sts.json", {"dest.test": {"id": "1", "policy": POLICY, "fetched": clock.now() - 10,
                                                   "expires": clock.now() + 604790},
                                     "gone.test": {"id": "1", "policy": POLICY, "fetched": 0, "expires": 1},
                                     "broken.test": "not an object"})
    resolver = FakeResolver(txt={"_mta-sts.dest.test": txt})
    return StsCache(resolver, clock, client_context(verify=True), tmp), resolver


def test_cached_policy_from_disk_is_used_without_a_fetch(tmp_path: Path) -> None:
    clock = FakeClock()
    cache, resolver = _cache(tmp_path, clock, ["v=STSv1; id=1"])
    got = asyncio.run(cache.policy("dest.test"))
    assert got.policy is not None and got.policy.mode == "enforce" and got.id == "1"
    assert ("mta-sts.dest.test", "A/AAAA") not in resolver.queries  # same id: no fetch
    assert cache.cached("gone.test") is None and cache.cached("broken.test") is None


def test_dns_failure_or_hostile_txt_keeps_the_cached_policy(tmp_path: Path) -> None:
    clock = FakeClock()
    for txt in (DnsTempError("timeout"), ["v=STSv1; id=" + "x" * 5000], ["v=STSv1; id=1", "v=STSv1; id=2"]):
        cache, _ = _cache(tmp_path, clock, txt)
        got = asyncio.run(cache.policy("dest.test"))
        assert got.policy is not None and got.policy.mode == "enforce"


def test_new_id_with_a_failing_fetch_keeps_the_cached_policy_and_says_why(tmp_path: Path) -> None:
    clock = FakeClock()
    cache, resolver = _cache(tmp_path, clock, ["v=STSv1; id=2"])
    got = asyncio.run(cache.policy("dest.test"))  # mta-sts.dest.test does not resolve
    assert got.policy is not None and got.id == "1"
    assert got.error_type == "sts-policy-fetch-error" and "mta-sts.dest.test" in got.error
    assert ("mta-sts.dest.test", "A/AAAA") in resolver.queries


def test_an_old_policy_is_refreshed_in_the_background(tmp_path: Path) -> None:
    clock = FakeClock()
    cache, resolver = _cache(tmp_path, clock, ["v=STSv1; id=1"])
    clock.advance(REFRESH_AFTER + 1)

    async def main() -> None:
        got = await cache.policy("dest.test")
        assert got.policy is not None  # answered from the cache at once
        await asyncio.sleep(0.05)  # the background fetch ran (and failed: no policy host here)

    asyncio.run(main())
    assert ("mta-sts.dest.test", "A/AAAA") in resolver.queries
    assert cache.cached("dest.test") is not None  # a failed refresh keeps the policy
