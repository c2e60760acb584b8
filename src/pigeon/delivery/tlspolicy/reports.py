"""The TLS-RPT counts (RFC 8460 §4): kept per UTC day and policy domain, on disk.

Rules:
1. ``record(domain, ...)`` adds one session's outcome to today's ``Tally`` of the domain
   (``tlsrpt.Tally``). Only domains with a policy (MTA-STS or DANE) are counted.
2. Durability: the counts are written to ``<data_dir>/tlspolicy/tlsrpt-<day>.json`` (state.py:
   atomic, fsynced) at most every ``FLUSH_EVERY`` seconds and on ``flush()`` (shutdown). A crash
   loses at most that many seconds of counts — counts, never mail.
3. ``due(today)`` lists the (day, domain, tally) of finished days; ``done(day)`` deletes a day
   once its reports went out and leaves a ``tlsrpt-<day>.sent`` marker, so that a server that
   flushes that day's last counts afterwards does not make it due again (they are dropped, with
   a log line). Days older than ``KEEP_DAYS`` are dropped unsent.
4. At most ``MAX_DOMAINS`` domains per day are counted (bounded memory and file size).
5. Each process writes its own file: the server ``tlsrpt-<day>.json``, an SMTP worker (which
   relays the mail it accepted) ``tlsrpt-<day>.<owner>.json`` (``owner`` as for its journal,
   ``w1``...), so no process overwrites another's counts. ``due`` merges every file of a day
   (``Tally.merge``); ``done`` removes them all.

What can go wrong: a write failure is logged and retried at the next flush; an unreadable file
is logged and ignored (state.load_json).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from pathlib import Path

from pigeon.core.clock import Clock
from pigeon.delivery.tlspolicy.state import load_json, save_json
from pigeon.durable.io import unlink_quietly
from pigeon.delivery.tlspolicy.tlsrpt import PolicyType, ResultType, Tally

log = logging.getLogger(__name__)

FLUSH_EVERY = 10.0  # seconds of counts a crash may lose
KEEP_DAYS = 7  # a report older than a week is of no use to the receiver
MAX_DOMAINS = 10_000  # policy domains counted per day


def utc_day(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%d")


class ReportBook:
    def __init__(self, directory: Path | None, clock: Clock, owner: str = "") -> None:
        self.dir = directory
        self.clock = clock
        self.owner = owner  # rule 5: "" for the server, the journal owner for a worker
        self._days: dict[str, dict[str, Tally]] = {}
        self._dirty: set[str] = set()
        self._last_flush = clock.now()
        self._flushing: asyncio.Task[None] | None = None

    def _day(self, day: str) -> dict[str, Tally]:
        tallies = self._days.get(day)
        if tallies is None:
            tallies = {}
            doc = load_json(self._file(self.dir, day)) if self.dir is not None else None
            for domain, raw in (doc or {}).items():
                try:
                    tallies[domain] = Tally.from_json(raw)
                except (ValueError, TypeError) as exc:
                    log.warning("tlsrpt: %s %s: unreadable counts (%s); dropped", day, domain, exc)
            self._days[day] = tallies
        return tallies

    def _file(self, directory: Path, day: str) -> Path:
        """Rule 5."""
        return directory / (f"tlsrpt-{day}.{self.owner}.json" if self.owner else f"tlsrpt-{day}.json")

    def record(self, domain: str, policy_type: PolicyType, policy_strings: list[str], mx_hosts: list[str],
               ok: bool, result: ResultType | None = None, ip: str = "", mx: str = "") -> None:
        """Rule 1."""
        day = utc_day(self.clock.now())
        tallies = self._day(day)
        tally = tallies.get(domain)
        if tally is None:
            if len(tallies) >= MAX_DOMAINS:
                return
            tally = tallies[domain] = Tally(policy_type, policy_strings, mx_hosts)
        tally.policy_type, tally.policy_strings, tally.mx_hosts = policy_type, policy_strings, mx_hosts
        tally.add(ok, result, ip, mx)
        self._dirty.add(day)
        if self.clock.now() - self._last_flush >= FLUSH_EVERY and self._flushing is None:
            self._flushing = asyncio.get_running_loop().create_task(self._background_flush())

    async def _background_flush(self) -> None:
        try:
            await asyncio.to_thread(self.flush)
        finally:
            self._flushing = None

    def flush(self) -> None:
        """Rule 2."""
        self._last_flush = self.clock.now()
        if self.dir is None:
            return
        today = utc_day(self.clock.now())
        for day in list(self._dirty):
            self._dirty.discard(day)
            if (self.dir / f"tlsrpt-{day}.sent").exists():
                log.info("tlsrpt: the report of %s went out already; its last counts are dropped", day)
                self._days.pop(day, None)
                continue
            doc = {d: t.to_json() for d, t in self._days.get(day, {}).items()}
            try:
                save_json(self._file(self.dir, day), doc)
            except OSError as exc:
                self._dirty.add(day)
                log.error("tlsrpt: cannot save the counts of %s: %s", day, exc)
                continue
            if day != today:
                self._days.pop(day, None)  # a finished day is on disk now: the sender reads it there

    def due(self, today: str) -> list[tuple[str, str, Tally]]:
        """Rules 3 and 5."""
        if self.dir is None:
            return []
        out: list[tuple[str, str, Tally]] = []
        oldest = (datetime.date.fromisoformat(today) - datetime.timedelta(days=KEEP_DAYS)).isoformat()
        for marker in self.dir.glob("tlsrpt-*.sent"):
            if marker.name[len("tlsrpt-"):-len(".sent")] < oldest:
                unlink_quietly(marker)
        days: dict[str, list[Path]] = {}
        for path in sorted(self.dir.glob("tlsrpt-*.json")):
            days.setdefault(path.name[len("tlsrpt-"):len("tlsrpt-YYYY-MM-DD")], []).append(path)
        for day, paths in sorted(days.items()):
            if day >= today:
                continue
            if day < oldest:
                log.info("tlsrpt: counts of %s are older than %d days; dropped unsent", day, KEEP_DAYS)
                self.done(day)
                continue
            merged: dict[str, Tally] = {}
            for domain, tally in self._day(day).items():
                merged[domain] = Tally.from_json(tally.to_json())  # a copy: the book's own stays as it is
            for path in paths:
                if path == self._file(self.dir, day):
                    continue
                for domain, raw in (load_json(path) or {}).items():
                    try:
                        other = Tally.from_json(raw)
                    except (ValueError, TypeError) as exc:
                        log.warning("tlsrpt: %s %s: unreadable counts in %s (%s); dropped", day, domain, path.name, exc)
                        continue
                    if domain in merged:
                        merged[domain].merge(other)
                    elif len(merged) < MAX_DOMAINS:
                        merged[domain] = other
            out.extend((day, domain, tally) for domain, tally in merged.items())
        return out

    def done(self, day: str) -> None:
        self._days.pop(day, None)
        self._dirty.discard(day)
        if self.dir is not None:
            (self.dir / f"tlsrpt-{day}.sent").touch()
            for path in self.dir.glob(f"tlsrpt-{day}*.json"):  # rule 5: every process's file
                unlink_quietly(path)
