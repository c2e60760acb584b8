"""The verified-credential cache over a real directory (pigeon.auth.credcache)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from pigeon.auth.credcache import CachedVerifier
from pigeon.auth.sasl import AuthFailure, Authenticator, Credentials, Failure, LoggedIn
from pigeon.auth.throttle import AuthThrottle, ThrottleSettings
from pigeon.clocks import FakeClock
from pigeon.directory import Directory

PASSWORD = "correct horse battery"
ALICE = "alice@example.org"
IP = "192.0.2.10"


class Counting:
    """The directory, counting full (argon2) verifications."""

    def __init__(self, directory: Directory) -> None:
        self.directory = directory
        self.full = 0

    def password_stamp(self, address: str) -> str | None:
        return self.directory.password_stamp(address)

    def check_password(self, address: str, password: str) -> str | None:
        self.full += 1
        return self.directory.check_password(address, password)


@pytest.fixture
def path(tmp_path: Path) -> Iterator[Path]:
    p = tmp_path / "directory.sqlite3"
    with Directory(p, ["example.org"], None) as d:
        d.add_user(ALICE, PASSWORD)
        d.add_user("bob@example.org", PASSWORD)
    yield p


@pytest.fixture
def directory(path: Path) -> Iterator[Directory]:
    with Directory(path, ["example.org"], None) as d:
        yield d


def test_second_login_skips_argon2(directory: Directory) -> None:
    counting = Counting(directory)
    cache = CachedVerifier(counting, FakeClock())
    assert cache.verify_password(ALICE, PASSWORD) and counting.full == 1
    assert cache.verify_password(ALICE, PASSWORD) and counting.full == 1
    assert (cache.hits, cache.misses) == (1, 1)


def test_wrong_password_never_matches_a_cached_entry(directory: Directory) -> None:
    counting = Counting(directory)
    cache = CachedVerifier(counting, FakeClock())
    assert cache.verify_password(ALICE, PASSWORD)
    for wrong in ("correct horse batter", PASSWORD + " ", PASSWORD.upper(), ""):
        assert not cache.verify_password(ALICE, wrong)
    # another account's cached password is not this one's either
    assert not cache.verify_password("bob@example.org", "something else")
    assert counting.full == 6  # every wrong one was verified in full, none was cached
    assert cache.verify_password(ALICE, PASSWORD) and counting.full == 6  # the entry survived


def test_password_change_by_the_cli_is_effective_at_the_next_login(path: Path, directory: Directory) -> None:
    cache = CachedVerifier(directory, FakeClock())
    assert cache.verify_password(ALICE, PASSWORD)
    with Directory(path, ["example.org"], None) as cli:  # another process, as `pigeon user passwd`
        cli.set_password(ALICE, "a brand new secret")
    assert not cache.verify_password(ALICE, PASSWORD)
    assert cache.verify_password(ALICE, "a brand new secret")


def test_removed_user_is_refused_at_the_next_login(path: Path, directory: Directory) -> None:
    cache = CachedVerifier(directory, FakeClock())
    assert cache.verify_password(ALICE, PASSWORD)
    with Directory(path, ["example.org"], None) as cli:
        cli.remove_user(ALICE)
    assert not cache.verify_password(ALICE, PASSWORD)
    assert len(cache) == 0


def test_entries_expire_and_are_bounded(directory: Directory) -> None:
    clock = FakeClock()
    counting = Counting(directory)
    cache = CachedVerifier(counting, clock, ttl=60, max_entries=1)
    assert cache.verify_password(ALICE, PASSWORD)
    clock.advance(61)
    assert cache.verify_password(ALICE, PASSWORD) and counting.full == 2  # expired: verified again
    assert cache.verify_password("bob@example.org", PASSWORD) and len(cache) == 1  # alice evicted
    assert cache.verify_password(ALICE, PASSWORD) and counting.full == 4


def test_ttl_zero_turns_it_off(directory: Directory) -> None:
    counting = Counting(directory)
    cache = CachedVerifier(counting, FakeClock(), ttl=0)
    assert cache.verify_password(ALICE, PASSWORD) and cache.verify_password(ALICE, PASSWORD)
    assert counting.full == 2 and len(cache) == 0


def test_the_cache_keeps_no_password(directory: Directory) -> None:
    cache = CachedVerifier(directory, FakeClock())
    assert cache.verify_password(ALICE, PASSWORD)
    entry = cache._entries[ALICE]
    assert PASSWORD.encode() not in entry.mac and PASSWORD.encode() not in entry.stamp
    other = CachedVerifier(directory, FakeClock())
    assert other.verify_password(ALICE, PASSWORD)
    assert other._entries[ALICE].mac != entry.mac  # a per-process secret


def test_throttle_applies_before_the_cache(directory: Directory) -> None:
    clock = FakeClock()
    throttle = AuthThrottle(ThrottleSettings(ip_max_failures=2, failure_delay=0), clock)
    auth = Authenticator(CachedVerifier(directory, clock), throttle, clock)
    assert asyncio.run(auth.verify(Credentials(ALICE, PASSWORD), IP)) == LoggedIn(ALICE)
    throttle.failure(IP, "bob@example.org")
    throttle.failure(IP, "bob@example.org")
    # the right password, cached: still refused while the IP is blocked
    assert asyncio.run(auth.verify(Credentials(ALICE, PASSWORD), IP)) == Failure(AuthFailure.THROTTLED)
