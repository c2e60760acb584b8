"""What ``/metrics`` exports: counts kept per process, summed by the server, rendered by
prometheus-client.

Rules:
1. Every count is kept in a ``MailCounters`` of this process, a plain dict keyed by metric and
   label values: no global registry, no shared memory. Mail is counted where it is logged
   (``maillog.observe``): ``received``/``reject`` by service, ``delivered``/``deferred``/
   ``bounced`` by transport (``local`` or ``relay``); sessions where they are logged
   (``connect``), TLS handshakes by the listeners' streams (``Stream.on_tls``), refused logins
   by the ``Authenticator`` (``on_failure``).
2. Worker processes send their whole ``snapshot()`` to the server every ``SNAPSHOT_INTERVAL``
   seconds (``app.ipc.Counters``); the server keeps the last one of each worker and adds them
   to its own at scrape time (``Exporter``). A snapshot replaces the previous one of the same
   process; when a worker is replaced (another pid), its last snapshot is kept in the retired
   sum, so that counters never go down while the server runs (Prometheus reads a decrease as a
   restart). Counts since a worker's last snapshot are lost with it when it dies: at most
   ``SNAPSHOT_INTERVAL`` seconds of one worker's counts.
3. Queue gauges (size per state, oldest message age) are read from the queue at scrape time
   through ``QueueGauges``, at most once per ``QUEUE_SCAN_CACHE`` seconds.
4. Label values come from a small closed set (service names, transports, results, TLS
   versions); an unknown value becomes ``other``, so a peer cannot grow the series count.

What can go wrong: a malformed worker snapshot is refused by ``app.ipc`` before it gets here;
a queue scan that fails is logged and the gauges are left out of that scrape.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

# Rule 2: a worker's counts reach /metrics within this many seconds (Prometheus scrapes every
# 15-60 s by default, so a 5 s lag is below one scrape interval).
SNAPSHOT_INTERVAL = 5.0
# Rule 3: scans of the queue directories, at most one per this many seconds, whatever the
# number of scrapers (the scan reads every queue record).
QUEUE_SCAN_CACHE = 5.0
# Delivery delay buckets, in seconds: from a local delivery (well under a second) to the
# queue's 5-day lifetime (RFC 5321 §4.5.4.1).
DELAY_BUCKETS = (0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 1800.0, 3600.0, 4 * 3600.0, 86400.0, 5 * 86400.0)

SERVICES = frozenset({"smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s",
                      "sendmail", "local", "relay"})
TLS_VERSIONS = frozenset({"TLSv1.2", "TLSv1.3"})
_MAIL_RESULTS = {"received": "received", "reject": "rejected", "delivered": "delivered",
                 "deferred": "deferred", "bounced": "bounced"}

# The metric names (rule 1), with their help text.
MESSAGES = "pigeon_messages"
SESSIONS = "pigeon_sessions"
AUTH_FAILURES = "pigeon_auth_failures"
TLS_HANDSHAKES = "pigeon_tls_handshakes"
DELAY = "pigeon_delivery_delay_seconds"
HELP = {
    MESSAGES: "Messages received (or rejected) by service and delivered, deferred or bounced by transport.",
    SESSIONS: "Client sessions opened, by service.",
    AUTH_FAILURES: "Refused logins (bad credentials or throttled).",
    TLS_HANDSHAKES: "TLS handshakes completed by the listeners, by protocol version.",
    DELAY: "Time from the queueing of a message to its delivery or bounce, per recipient.",
}
LABELS = {MESSAGES: ("service", "result"), SESSIONS: ("service",), AUTH_FAILURES: (),
          TLS_HANDSHAKES: ("version",), DELAY: ("transport", "le")}

Key = tuple[str, tuple[str, ...]]


def _closed(value: object, allowed: frozenset[str]) -> str:
    text = str(value)
    return text if text in allowed else "other"  # rule 4


class MailCounters:
    """This process's counts (rule 1)."""

    def __init__(self) -> None:
        self.values: dict[Key, float] = {}
        self._delay_keys: dict[str, tuple[list[Key], Key]] = {}

    def add(self, name: str, labels: tuple[str, ...], amount: float = 1.0) -> None:
        key = (name, labels)
        self.values[key] = self.values.get(key, 0.0) + amount

    def observe(self, event: str, fields: Mapping[str, object]) -> None:
        """The ``maillog`` observer."""
        result = _MAIL_RESULTS.get(event)
        if result is not None:
            if event in ("received", "reject"):
                service = _closed(fields.get("service", "smtp"), SERVICES)
            else:
                service = "local" if fields.get("relay") == "local" else "relay"
            self.add(MESSAGES, (service, result))
            if event in ("delivered", "bounced"):
                self._delay(service, fields.get("delay"))
        elif event == "connect":
            self.add(SESSIONS, (_closed(fields.get("service"), SERVICES),))

    def _delay(self, transport: str, value: object) -> None:
        try:
            seconds = max(0.0, float(str(value)))
        except ValueError:
            return
        keys = self._delay_keys.get(transport)
        if keys is None:  # the histogram's keys, made once per transport
            labels: list[tuple[str, ...]] = [(transport, repr(bound)) for bound in DELAY_BUCKETS]
            labels.append((transport, "+Inf"))
            keys = ([(DELAY, label) for label in labels], (DELAY + "_sum", (transport,)))
            self._delay_keys[transport] = keys
        buckets, total = keys
        values = self.values
        for key in buckets[bisect.bisect_left(DELAY_BUCKETS, seconds):]:  # every bound >= seconds
            values[key] = values.get(key, 0.0) + 1.0
        values[total] = values.get(total, 0.0) + seconds

    def auth_failure(self) -> None:
        self.add(AUTH_FAILURES, ())

    def tls_handshake(self, version: str) -> None:
        self.add(TLS_HANDSHAKES, (_closed(version, TLS_VERSIONS),))

    def snapshot(self) -> list[tuple[str, tuple[str, ...], float]]:
        """Rule 2: every count, for ``app.ipc.Counters``."""
        return [(name, labels, value) for (name, labels), value in self.values.items()]


@dataclass(frozen=True, slots=True)
class QueueSnapshot:
    """Rule 3: messages per queue state and the age of the oldest, in seconds."""

    sizes: Mapping[str, int]
    oldest_age: float


class Exporter(Collector):
    """The server's collector: its own counts, the workers' last snapshots, the queue gauges."""

    def __init__(self, own: MailCounters, queue: Callable[[], QueueSnapshot | None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.own = own
        self._queue = queue
        self._clock = clock
        self._workers: dict[str, tuple[int, dict[Key, float]]] = {}
        self._retired: dict[Key, float] = {}
        self._queue_cache: tuple[float, QueueSnapshot | None] | None = None

    def worker_snapshot(self, worker: str, pid: int, values: Iterable[tuple[str, tuple[str, ...], float]]) -> None:
        """Rule 2: the last counts of ``worker`` (its pool and index), from process ``pid``."""
        previous = self._workers.get(worker)
        if previous is not None and previous[0] != pid:
            for key, value in previous[1].items():  # a replaced worker: keep what it counted
                self._retired[key] = self._retired.get(key, 0.0) + value
        self._workers[worker] = (pid, {(name, labels): value for name, labels, value in values})

    def totals(self) -> dict[Key, float]:
        out = dict(self.own.values)
        for source in (self._retired, *(values for _, values in self._workers.values())):
            for key, value in source.items():
                out[key] = out.get(key, 0.0) + value
        return out

    def _queue_snapshot(self) -> QueueSnapshot | None:
        now = self._clock()
        cached = self._queue_cache
        if cached is not None and now - cached[0] < QUEUE_SCAN_CACHE:
            return cached[1]
        try:
            snap = self._queue()
        except Exception:
            log.exception("metrics: reading the queue failed")
            snap = None
        self._queue_cache = (now, snap)
        return snap

    def collect(self) -> Iterator[Metric]:
        totals = self.totals()
        for name in (MESSAGES, SESSIONS, AUTH_FAILURES, TLS_HANDSHAKES):
            family = CounterMetricFamily(name, HELP[name], labels=list(LABELS[name]))
            if not LABELS[name]:
                family.add_metric([], totals.get((name, ()), 0.0))
            for (metric, labels), value in sorted(totals.items()):
                if metric == name and labels:
                    family.add_metric(list(labels), value)
            yield family
        yield self._histogram(totals)
        snap = self._queue_snapshot()
        if snap is not None:
            size = GaugeMetricFamily("pigeon_queue_messages", "Messages in the queue, by state.",
                                     labels=["state"])
            for state, count in sorted(snap.sizes.items()):
                size.add_metric([state], float(count))
            yield size
            yield GaugeMetricFamily("pigeon_queue_oldest_age_seconds",
                                    "Age of the oldest message in the queue (0 when empty).",
                                    value=snap.oldest_age)

    def _histogram(self, totals: Mapping[Key, float]) -> HistogramMetricFamily:
        family = HistogramMetricFamily(DELAY, HELP[DELAY], labels=["transport"])
        transports = sorted({labels[0] for (name, labels) in totals if name == DELAY})
        for transport in transports:
            buckets = [(repr(b), totals.get((DELAY, (transport, repr(b))), 0.0)) for b in DELAY_BUCKETS]
            buckets.append(("+Inf", totals.get((DELAY, (transport, "+Inf")), 0.0)))
            family.add_metric([transport], buckets, totals.get((DELAY + "_sum", (transport,)), 0.0))
        return family
