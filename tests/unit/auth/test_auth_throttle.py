"""Brute-force throttling (pigeon.auth.throttle) on a FakeClock."""

from __future__ import annotations

import pytest

from pigeon.auth.throttle import (
    HARD_MAX_IP_FAILURES,
    AuthThrottle,
    ThrottleSettings,
    client_key,
)
from pigeon.clocks import FakeClock

ATTACKER = "198.51.100.7"
USER_IP = "203.0.113.9"


def make(**kw: float) -> tuple[AuthThrottle, FakeClock]:
    clock = FakeClock()
    return AuthThrottle(ThrottleSettings(**kw), clock), clock  # type: ignore[arg-type]


def test_delay_grows_then_the_ip_is_refused() -> None:
    throttle, _ = make()
    delays = []
    for i in range(1, 10):
        verdict = throttle.failure(ATTACKER, f"user{i}@example.org")  # a new account each time
        assert not verdict.refused
        delays.append(verdict.delay)
    assert delays[:5] == [1.0, 2.0, 4.0, 8.0, 15.0]  # doubling, capped at max_failure_delay
    assert throttle.check(ATTACKER).ok
    tenth = throttle.failure(ATTACKER, "user10@example.org")
    assert tenth.refused and tenth.retry_after == 15 * 60
    assert throttle.check(ATTACKER).refused
    assert throttle.check(ATTACKER, "anyone@example.org").refused


@pytest.mark.parametrize("limit", [1, 17, HARD_MAX_IP_FAILURES])
def test_refused_at_the_configured_failure_and_never_later_than_30(limit: int) -> None:
    throttle, _ = make(ip_max_failures=limit, account_ip_max_failures=1000, failure_delay=0.0)
    for _ in range(limit - 1):
        assert not throttle.failure(ATTACKER, None).refused
    assert throttle.failure(ATTACKER, None).refused
    with pytest.raises(ValueError, match="between 1 and 30"):
        ThrottleSettings(ip_max_failures=31).validate()


def test_another_ip_is_not_locked_out_by_someone_elses_failures() -> None:
    throttle, _ = make()
    victim = "alice@example.org"
    for _ in range(5):
        verdict = throttle.failure(ATTACKER, victim)
    assert verdict.refused  # the (account, IP) pair is blocked after 5
    assert throttle.check(ATTACKER, victim).refused
    assert throttle.check(ATTACKER, "bob@example.org").ok  # the IP itself is not blocked yet
    assert throttle.check(USER_IP, victim).ok  # alice from her own address still gets in
    assert throttle.check(USER_IP).ok


def test_distributed_guessing_slows_the_account_but_never_refuses_it() -> None:
    throttle, _ = make()
    victim = "alice@example.org"
    for i in range(20):
        throttle.failure(f"192.0.2.{i}", victim)
    assert throttle.failure("192.0.2.100", victim).delay == 1.0  # a fresh IP's first failure
    assert throttle.failure("192.0.2.101", victim).delay == 2.0  # the account-wide delay grows
    for i in range(30):
        throttle.failure(f"198.18.0.{i}", victim)
    verdict = throttle.failure("198.18.1.1", victim)
    assert verdict.delay == 15.0 and not verdict.refused
    assert throttle.check(USER_IP, victim).ok


def test_success_ends_the_run_and_blocks_expire() -> None:
    throttle, clock = make()
    for _ in range(4):
        throttle.failure(USER_IP, "alice@example.org")
    throttle.success(USER_IP, "alice@example.org")
    assert throttle.failure(USER_IP, "alice@example.org").delay == 1.0  # a fresh run

    for _ in range(10):
        throttle.failure(ATTACKER, None)
    assert throttle.check(ATTACKER).refused
    clock.advance(15 * 60 - 1)
    assert throttle.check(ATTACKER).refused
    clock.advance(1)
    assert throttle.check(ATTACKER).ok  # the block is over ...
    assert throttle.failure(ATTACKER, None).refused  # ... but the next failure blocks again
    clock.advance(15 * 60 + 3600)
    assert throttle.check(ATTACKER).ok
    assert not throttle.failure(ATTACKER, None).refused  # an hour of quiet: forgotten


def test_password_spraying_between_own_logins_still_blocks_the_ip() -> None:
    # The sprayer logs in to an account of its own between guesses at other accounts: those
    # successes must not wipe the IP's count (issue 14: 27 failures never blocked the IP).
    throttle, _ = make(failure_delay=0.0)
    own = "mallory@example.org"
    for i in range(1, 10):
        assert throttle.check(ATTACKER, own).ok
        throttle.success(ATTACKER, own)
        assert not throttle.failure(ATTACKER, f"victim{i}@example.org").refused
    throttle.success(ATTACKER, own)
    tenth = throttle.failure(ATTACKER, "victim10@example.org")
    assert tenth.refused  # ip_max_failures (10) failures on other accounts
    assert throttle.check(ATTACKER).refused
    assert throttle.check(ATTACKER, own).refused  # its own account does not get it in either


def test_success_takes_back_only_that_accounts_failures() -> None:
    throttle, _ = make(failure_delay=0.0)
    for _ in range(3):
        throttle.failure(USER_IP, "alice@example.org")  # alice's typos
    for i in range(6):
        throttle.failure(USER_IP, f"other{i}@example.org")  # someone else behind the same NAT
    throttle.success(USER_IP, "alice@example.org")  # forgives alice's 3, not the other 6
    assert not throttle.failure(USER_IP, "alice@example.org").refused  # 6 + 1
    for i in range(2):
        assert not throttle.failure(USER_IP, f"more{i}@example.org").refused  # 8, 9
    assert throttle.failure(USER_IP, "more@example.org").refused  # 10


def test_ipv6_is_counted_per_slash_64() -> None:
    assert client_key("2001:db8:1:2::1") == client_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert client_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert client_key("local") == "local"
    throttle, _ = make(ip_max_failures=3, failure_delay=0.0)
    throttle.failure("2001:db8:1:2::1", None)
    throttle.failure("2001:db8:1:2::2", None)
    assert throttle.failure("2001:db8:1:2::3", None).refused
    assert throttle.check("2001:db8:1:3::1").ok


def test_memory_is_bounded_and_expired_entries_go() -> None:
    throttle, clock = make(max_entries=50, failure_delay=0.0)
    for i in range(1000):
        throttle.failure(f"10.0.{i // 256}.{i % 256}", f"u{i}@example.org")
    assert throttle.sizes() == (50, 50, 50)
    clock.advance(3601)
    throttle.failure(ATTACKER, None)
    assert throttle.sizes()[0] == 1  # the stale IPs were dropped as the new one came in


def test_settings_validation() -> None:
    ThrottleSettings().validate()
    for bad in (dict(failure_delay=20.0), dict(block_time=0.0), dict(max_entries=0),
                dict(account_ip_max_failures=0)):
        with pytest.raises(ValueError):
            ThrottleSettings(**bad).validate()  # type: ignore[arg-type]
