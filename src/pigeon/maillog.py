"""The operator's log: one function per mail event, queue id first, key=value fields.

Rules:
1. Every line starts with the queue id (or ``NOQUEUE`` before there is one), then the event,
   then ``key=value`` fields, as Postfix's log does, so that ``grep QUEUEID`` tells a message's story.
2. Values with spaces or quotes are double-quoted with backslash escapes; CR/LF never reach the log,
   and other control characters and Unicode line breaks (U+0085, U+2028, U+2029) become "?".
3. Passwords and AUTH payloads are never passed to this module (no function takes one).
4. In the server the lines bypass ``logging`` (``write_directly``) but keep its format and go
   to the same streams; elsewhere (tests, tools) they go through the ``pigeon.mail`` logger.
5. ``observe(callback)`` hands every event (its name and fields) to one observer, before the
   line is written: the metrics count mail where it is logged (``pigeon.web.metrics``).

The lines go to the ``pigeon.mail`` logger; ``app`` sends it to stderr and to ``log_file``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TextIO

from pigeon.core.address import Address, format_path

log = logging.getLogger("pigeon.mail")
_NONE: Mapping[str, str] = MappingProxyType({})

_NEEDS_QUOTES = re.compile('[ "=\\\\\x00-\x1f\x7f-\x9f\u2028\u2029]')  # rule 2; one C scan, not one per character
# Control characters and Unicode line breaks (a HELO name with U+0085 or U+2028) would break a
# log line for whoever reads it: each becomes "?" (CR and LF a space).
_CONTROLS = re.compile('[\x00-\x09\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029]')


def _quote(value: object) -> str:
    text = value if type(value) is str else str(value)
    if text and _NEEDS_QUOTES.search(text) is None:
        return text  # the common case: an id, an address, a number
    text = _CONTROLS.sub("?", text.replace("\r", " ").replace("\n", " "))
    if text == "" or any(c in text for c in ' "=\\'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def _emit(qid: str, event: str, **fields: object) -> None:
    observer = _observer
    if observer is not None:
        observer(event, fields)  # rule 5: counted even when the line is not written
    if not log.isEnabledFor(logging.INFO):
        return  # nothing is formatted for a line nobody reads
    text = " ".join([qid or "NOQUEUE", event,
                     *[f"{k}={_quote(v)}" for k, v in fields.items() if v is not None]])
    direct = _direct
    if direct is not None:
        direct.write(text)
        return
    # Logger.makeRecord + handle is Logger.info without findCaller's walk up the stack (the
    # caller is always this function): a few lines per message, hundreds of messages a second.
    log.handle(log.makeRecord(log.name, logging.INFO, __file__, 0, text, (), None, "_emit"))


class DirectLines:
    """Rule 4: the mail lines written straight to the server's log streams.

    Six lines per message went through ``logging`` (a LogRecord, handler locks, a formatter)
    at ≈ 15 µs each: a tenth of the Python time of an SMTP message (py-spy, 2026-11-27). The
    server's log format is fixed (``LineFormatter``) and its handlers are its own
    (``app.setup_logging``), so the line is made here in the same format and written to the
    same streams, each under its handler's own lock (as ``logging`` writes), and flushed at the
    end of the event loop's turn: one write for all the lines of a turn, not one per line.
    """

    def __init__(self, handlers: list[logging.StreamHandler[TextIO]]) -> None:
        self._handlers = handlers
        self._prefix_tail = f" pigeon[{os.getpid()}] INFO {log.name}: "
        self._flush_scheduled = False
        self._pending: list[str] = []
        self._lock = threading.Lock()
        self._second: tuple[int, str] = (-1, "")

    def write(self, text: str) -> None:
        now = time.time()
        sec = int(now)
        cached = self._second
        if cached[0] != sec:
            cached = (sec, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(sec)))
            self._second = cached
        line = f"{cached[1]},{int((now - sec) * 1000):03d}{self._prefix_tail}{text}\n"
        with self._lock:
            self._pending.append(line)
        if self._flush_scheduled:
            return  # the loop's flush at the end of this turn writes it
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()  # another thread, or no loop
            return
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self.flush)

    def flush(self) -> None:
        """The lines of a turn of the loop (at most a few ms old) in one write per stream."""
        self._flush_scheduled = False
        with self._lock:
            lines, self._pending = self._pending, []
        if not lines:
            return
        text = "".join(lines)
        for handler in self._handlers:
            handler.acquire()
            try:
                handler.stream.write(text)
                handler.stream.flush()
            except (OSError, ValueError):  # a closed or broken log stream: as logging does
                pass
            finally:
                handler.release()


_direct: DirectLines | None = None
_observer: Callable[[str, dict[str, object]], None] | None = None


def observe(callback: Callable[[str, dict[str, object]], None] | None) -> None:
    """Rule 5: ``callback(event, fields)`` for every mail event of this process (None: off)."""
    global _observer
    _observer = callback


def flush() -> None:
    """Write out mail lines still waiting for the end of the loop's turn (at exit)."""
    if _direct is not None:
        _direct.flush()


def write_directly(handlers: list[logging.StreamHandler[TextIO]] | None) -> None:
    """Send the mail lines straight to the streams of ``handlers`` (the server's log), or back
    through ``logging`` with None (tests, tools)."""
    global _direct
    _direct = DirectLines(handlers) if handlers else None


class LineFormatter(logging.Formatter):
    """The server's log format, with the time text made once per second, not once per line.

    ``2026-11-26 18:03:01,123 pigeon[PID] INFO name: message``; ``app`` installs it.
    """

    FORMAT = "%(asctime)s pigeon[%(process)d] %(levelname)s %(name)s: %(message)s"

    def __init__(self) -> None:
        super().__init__(self.FORMAT)
        self._second: tuple[int, str] = (-1, "")  # replaced whole, so threads see a pair

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        sec = int(record.created)
        cached = self._second
        if cached[0] != sec:
            cached = (sec, time.strftime("%Y-%m-%d %H:%M:%S", self.converter(sec)))
            self._second = cached
        return f"{cached[1]},{int(record.msecs):03d}"


def connect(client: str, service: str) -> None:
    _emit("NOQUEUE", "connect", client=client, service=service)


def disconnect(client: str, service: str, commands: int, errors: int) -> None:
    _emit("NOQUEUE", "disconnect", client=client, service=service, commands=commands, errors=errors)


def rejected(client: str, stage: str, reply: object, sender: Address | None = None,
             rcpt: Address | None = None, helo: str | None = None, service: str | None = None,
             reason: str | None = None, checks: Mapping[str, str] = _NONE) -> None:
    """``checks``: the inbound checks' results (``spf= dkim= dmarc= arc= milter=``)."""
    _emit("NOQUEUE", "reject", client=client, stage=stage,
          **{"from": format_path(sender) if stage in ("MAIL", "RCPT", "DATA") else None},
          to=format_path(rcpt) if rcpt is not None else None, helo=helo, **checks, reason=reason,
          status=reply, service=service)


def received(qid: str, client: str, sender: Address | None, nrcpt: int, size: int,
             protocol: str, service: str | None = None, folder: str | None = None,
             reason: str | None = None, checks: Mapping[str, str] = _NONE) -> None:
    """``checks``: the inbound checks' results (``spf= dkim= dmarc= arc= milter=``)."""
    _emit(qid, "received", client=client, **{"from": format_path(sender)}, nrcpt=nrcpt,
          size=size, proto=protocol, **checks, folder=folder, reason=reason, service=service)


def queued(qid: str, sender: Address | None, size: int, nrcpt: int) -> None:
    _emit(qid, "queued", **{"from": format_path(sender)}, size=size, nrcpt=nrcpt)


def delivered(qid: str, rcpt: Address, relay: str, delay: float, reply: object,
              orig: Address | None = None) -> None:
    _emit(qid, "delivered", to=format_path(rcpt),
          orig_to=format_path(orig) if orig is not None and orig != rcpt else None,
          relay=relay, delay=f"{delay:.3f}", status=reply)


def deferred(qid: str, rcpt: Address, relay: str, delay: float, reply: object,
             next_try: float | None = None) -> None:
    _emit(qid, "deferred", to=format_path(rcpt), relay=relay, delay=f"{delay:.3f}",
          status=reply, next_in=f"{next_try:.0f}s" if next_try is not None else None)


def bounced(qid: str, rcpt: Address, relay: str, delay: float, reply: object) -> None:
    _emit(qid, "bounced", to=format_path(rcpt), relay=relay, delay=f"{delay:.3f}", status=reply)


def removed(qid: str, reason: str = "done") -> None:
    _emit(qid, "removed", reason=reason)


def admin(qid: str, action: str) -> None:
    _emit(qid, "admin", action=action)


def corrupt(name: str, problem: str) -> None:
    _emit("NOQUEUE", "corrupt", file=name, problem=problem)
