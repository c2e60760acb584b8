"""Brute-force protection for every login (SMTP AUTH now, IMAP LOGIN/AUTHENTICATE and POP3 later).

``AuthThrottle`` counts authentication failures and answers, before and after each attempt,
whether to go on, how long to wait before answering, or to refuse. It does no I/O and no
sleeping: the caller sleeps (``Clock.sleep``), and ``auth.sasl`` reports a refusal as
``AuthFailure.THROTTLED``, which each protocol says in its words (SMTP ``421 4.7.0``,
``smtpd.auth``; IMAP ``* BYE [UNAVAILABLE]``; POP3 ``-ERR [SYS/TEMP]``) before closing.

Three counters of failures:
- per client **IP** (IPv6 grouped by /64, since one host holds a whole /64): after
  ``ip_max_failures`` failures the IP is refused for ``block_time``. The default is 10; the
  configuration may not set more than 30 (``HARD_MAX_IP_FAILURES``, the issue's bound). A
  success takes back only the failures on the account that just logged in: failures on other
  accounts keep counting, so a password sprayer cannot wipe its count by logging in to an
  account of its own between guesses.
- per (**account**, IP): after ``account_ip_max_failures`` failures *that IP* is refused for
  *that account* for ``block_time``. The same account from another IP is not affected: a
  legitimate user is never locked out by someone else's failures.
- per **account**, all IPs together (a distributed guess of one password): never a refusal,
  only a delay once ``account_slowdown_after`` failures accumulated; the delay grows like the
  others. This slows a botnet to a crawl while the real user, at worst, waits a few seconds.

Rules:
1. ``check(ip, account)`` before verifying a password: ``refused`` when the IP, or the pair, is
   blocked (the password is then not even verified: no argon2 work for a blocked client).
   ``check(ip)`` without an account is the cheap test at the start of AUTH.
2. ``failure(ip, account)`` after a wrong password: the counters grow and the returned verdict
   carries the delay to wait *before answering* (``failure_delay`` doubling per failure of the
   run, capped at ``max_failure_delay``; the largest of the IP, pair and account delays) and
   ``refused`` when this failure reached a limit (the caller answers and closes).
3. ``success(ip, account)`` ends the pair's run and removes that pair's failures from the IP's
   count (a user's own typos are forgiven once the password is right); the IP's failures on
   any other account stay. The account-wide counter is left to expire (a success from one
   place says nothing about the guesses from others).
4. A block lasts ``block_time``. When it ends the counter stays at the limit, so the next
   failure blocks again at once; a run is forgotten after ``failure_window`` without failure.
5. Memory is bounded: each table holds at most ``max_entries`` keys; expired entries are
   dropped as they are met, and past the cap the least recently failed key is evicted
   (flooding from many addresses can therefore shorten other IPs' memory, never extend a
   block; the IPv6 /64 grouping keeps one host from cheaply minting fresh keys).
6. Time comes from the injected ``Clock``. Nothing here logs a password; failures are logged
   by the caller with the IP and the account name.

What can go wrong: ``ThrottleSettings.validate`` raises ValueError for inconsistent settings
(the config loader reports it with the key); nothing else raises.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import OrderedDict
from dataclasses import dataclass

from pigeon.core.clock import Clock

log = logging.getLogger(__name__)

# The bound: refuse at the latest at the 30th consecutive failure from one IP.
HARD_MAX_IP_FAILURES = 30
# An IPv6 host is usually given a whole /64 (RFC 6177), so one attacker owns 2^64 addresses.
IPV6_PREFIX = 64


@dataclass(frozen=True, slots=True)
class ThrottleSettings:
    """The ``[auth]`` throttling keys (defaults in parentheses are these field defaults)."""

    # Fail2ban's default maxretry is 5 per 10 min for a jail; 10 leaves room for a user who
    # mistypes a few times with several clients (phone, laptop) behind one NAT address.
    ip_max_failures: int = 10
    # Five wrong passwords for one account from one address: a typo streak is shorter than that.
    account_ip_max_failures: int = 5
    # Failures across all IPs before the account-wide slowdown starts (a distributed attack).
    account_slowdown_after: int = 20
    # Dovecot's auth_failure_delay default is 2 s; we start at 1 s and double per failure.
    failure_delay: float = 1.0
    # Past ~15 s, clients time out and retry, which costs more than it saves.
    max_failure_delay: float = 15.0
    # Postfix anvil / fail2ban bantime default: 10-15 minutes.
    block_time: float = 15 * 60.0
    # A run of failures is forgotten after an hour without a new failure.
    failure_window: float = 3600.0
    # 100,000 keys per table at ~200 bytes each: ~20 MB in the worst case, for three tables.
    max_entries: int = 100_000

    def validate(self) -> None:
        if not 1 <= self.ip_max_failures <= HARD_MAX_IP_FAILURES:
            raise ValueError(f"ip_max_failures must be between 1 and {HARD_MAX_IP_FAILURES}")
        if self.account_ip_max_failures < 1 or self.account_slowdown_after < 1:
            raise ValueError("failure limits must be at least 1")
        if self.failure_delay < 0 or self.max_failure_delay < self.failure_delay:
            raise ValueError("failure_delay must be >= 0 and <= max_failure_delay")
        if self.block_time <= 0 or self.failure_window <= 0:
            raise ValueError("block_time and failure_window must be positive")
        if self.max_entries < 1:
            raise ValueError("max_entries must be at least 1")


@dataclass(frozen=True, slots=True)
class Verdict:
    refused: bool = False
    delay: float = 0.0  # seconds to wait before answering
    retry_after: float = 0.0  # when refused: seconds until the block ends

    @property
    def ok(self) -> bool:
        return not self.refused


ALLOW = Verdict()


@dataclass(slots=True)
class _Run:
    failures: int
    last: float
    blocked_until: float = 0.0


class _Table:
    """failures by key, least recently failed first (rule 5)."""

    def __init__(self, max_entries: int, window: float) -> None:
        self._runs: OrderedDict[str, _Run] = OrderedDict()
        self._max = max_entries
        self._window = window

    def __len__(self) -> int:
        return len(self._runs)

    def get(self, key: str, now: float) -> _Run | None:
        run = self._runs.get(key)
        if run is not None and self._expired(run, now):
            del self._runs[key]
            return None
        return run

    def _expired(self, run: _Run, now: float) -> bool:
        return now >= run.blocked_until and now - run.last >= self._window

    def fail(self, key: str, now: float) -> _Run:
        run = self.get(key, now)
        if run is None:
            run = self._runs[key] = _Run(0, now)
        run.failures += 1
        run.last = now
        self._runs.move_to_end(key)
        self._prune(now)
        return run

    def forget(self, key: str) -> None:
        self._runs.pop(key, None)

    def _prune(self, now: float) -> None:
        while self._runs:  # the oldest entries first: drop the expired ones we meet
            key, run = next(iter(self._runs.items()))
            if self._expired(run, now) or len(self._runs) > self._max:
                del self._runs[key]
            else:
                break


def client_key(ip: str) -> str:
    """The IP counter's key: the address, or its /64 for IPv6 (rule 5)."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, IPV6_PREFIX), strict=False))
    return str(addr)


class AuthThrottle:
    def __init__(self, settings: ThrottleSettings, clock: Clock) -> None:
        settings.validate()
        self.settings = settings
        self.clock = clock
        self._ips = _Table(settings.max_entries, settings.failure_window)
        self._pairs = _Table(settings.max_entries, settings.failure_window)
        self._accounts = _Table(settings.max_entries, settings.failure_window)

    def sizes(self) -> tuple[int, int, int]:
        """Entries held per table (IP, pair, account): for tests and the status command."""
        return len(self._ips), len(self._pairs), len(self._accounts)

    @staticmethod
    def _pair(ip: str, account: str) -> str:
        return f"{account.lower()}|{client_key(ip)}"

    def check(self, ip: str, account: str | None = None) -> Verdict:
        """Rule 1: may this client try (this account) now?"""
        now = self.clock.now()
        runs = [self._ips.get(client_key(ip), now)]
        if account is not None:
            runs.append(self._pairs.get(self._pair(ip, account), now))
        until = max((r.blocked_until for r in runs if r is not None), default=0.0)
        if until > now:
            return Verdict(refused=True, retry_after=until - now)
        return ALLOW

    def failure(self, ip: str, account: str | None) -> Verdict:
        """Rule 2: count a failed attempt; how long to wait, and whether to refuse now."""
        s = self.settings
        now = self.clock.now()
        ip_run = self._ips.fail(client_key(ip), now)
        delays = [self._delay(ip_run.failures)]
        refused_until = 0.0
        if ip_run.failures >= s.ip_max_failures:
            ip_run.blocked_until = now + s.block_time
            refused_until = ip_run.blocked_until
            log.warning("auth: %s blocked for %.0fs after %d failures", client_key(ip), s.block_time,
                        ip_run.failures)
        if account is not None:
            pair = self._pairs.fail(self._pair(ip, account), now)
            delays.append(self._delay(pair.failures))
            if pair.failures >= s.account_ip_max_failures:
                pair.blocked_until = now + s.block_time
                refused_until = max(refused_until, pair.blocked_until)
                log.warning("auth: %s blocked for account %s for %.0fs after %d failures",
                            client_key(ip), account, s.block_time, pair.failures)
            acct = self._accounts.fail(account.lower(), now)
            if acct.failures > s.account_slowdown_after:
                delays.append(self._delay(acct.failures - s.account_slowdown_after))
        delay = max(delays)
        if refused_until > now:
            return Verdict(refused=True, delay=delay, retry_after=refused_until - now)
        return Verdict(delay=delay)

    def success(self, ip: str, account: str) -> None:
        """Rule 3: a good login ends the pair's run and takes its failures off the IP's count."""
        now = self.clock.now()
        pair_key = self._pair(ip, account)
        pair = self._pairs.get(pair_key, now)
        self._pairs.forget(pair_key)
        if pair is None:
            return
        key = client_key(ip)
        ip_run = self._ips.get(key, now)
        if ip_run is not None and now >= ip_run.blocked_until:
            ip_run.failures -= min(pair.failures, ip_run.failures)
            if ip_run.failures == 0:
                self._ips.forget(key)

    def _delay(self, failures: int) -> float:
        s = self.settings
        if failures <= 0 or s.failure_delay <= 0:
            return 0.0
        exponent = min(failures - 1, 32)  # 2**32 s is far past any cap; avoids huge floats
        return float(min(s.failure_delay * (2**exponent), s.max_failure_delay))
