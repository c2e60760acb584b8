"""Local delivery (the MDA): write a queued message into each local recipient's Maildir INBOX.

Rules:
1. Recipients arrive alias-expanded (cleanup did it); each is a local user. A recipient the
   directory no longer knows is a permanent failure, ``550 5.1.1 <addr>: user unknown``.
2. The message is written with two headers in front: ``Return-Path: <sender>`` (``<>`` for the
   null sender; RFC 5321 §4.4: the final delivery MTA adds Return-Path) and
   ``Delivered-To: rcpt`` (the recipient this copy is for; Postfix and qmail use it to detect
   loops), then the queued body unchanged except CRLF → LF (``pigeon.store.maildir`` Rule 3).
3. A message lands once in each recipient's mailbox: a recipient listed twice (same folded
   address) is written once and both entries get that result.
4. Results: one per job recipient, in order, ``host="local"``. ``delivered`` is
   ``250 2.0.0 delivered to maildir``, returned only after the file and ``new/`` are fsynced.
5. Never lost, never a crash: an OSError is ``deferred`` (``452 4.3.1`` for a full disk or quota,
   RFC 3463 §3.4; else ``451 4.3.0``); any other exception is ``deferred 451 4.3.0``. Every such
   case writes a log line.
6. The file work of one recipient runs in one call on the event loop's default executor (the
   app sizes it); the directory lookup stays on the event loop.
7. The recipient handling of rules 1, 3 and 5 is written once, here, and the fast agent
   (``delivery.fastlane.FastLocalDelivery``) uses it: ``mailboxes`` (one copy per mailbox, unknown users),
   ``failure`` (an exception's result), ``delivered`` (the result of a durable copy) and
   ``in_order`` (one result per job recipient). Only how the files are written and flushed
   differs: here one executor call per mailbox, there on the event loop with batched flushes.

What can go wrong: the directory lookup, the body file and the mail store may each fail; each
failure is contained to the recipient it concerns.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from pigeon.core.address import Address, format_path
from pigeon.core.results import RecipientResult
from pigeon.delivery.base import DeliveryJob
from pigeon.proto.smtp.reply import (
    C451_LOCAL_ERROR,
    C452_INSUFFICIENT_STORAGE,
    C550_MAILBOX_UNAVAILABLE,
    C553_MAILBOX_NAME_NOT_ALLOWED,
    Reply,
)
from pigeon.store.changes import ChangeBus, ChangeNotifier
from pigeon.store.maildir import MaildirStore
from pigeon.store.names import MailboxNameError

log = logging.getLogger(__name__)

HOST = "local"
R250_DELIVERED = Reply(250, "2.0.0", "delivered to maildir")
_STORAGE_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})  # RFC 3463 §3.4: X.3.1 system storage full


class UserLookup(Protocol):
    """What local delivery needs from the directory."""

    def user_exists(self, address: Address) -> bool: ...


def _header_text(text: str) -> str:
    # A header line must not be split by the address (addresses from the parser never hold CR/LF).
    return text.replace("\r", "").replace("\n", "")


def delivery_prefix(sender: Address | None, recipient: Address) -> bytes:
    """The header lines written in front of the body (Rule 2), CRLF-terminated like the queue body."""
    lines = (
        f"Return-Path: {_header_text(format_path(sender))}\r\n"  # RFC 5321 §4.4
        f"Delivered-To: {_header_text(str(recipient))}\r\n"
    )
    return lines.encode("utf-8")


class LocalDelivery:
    """The ``DeliveryAgent`` for local users' Maildirs."""

    def __init__(self, store: MaildirStore, users: UserLookup, hostname: str,
                 changes: ChangeBus | None = None) -> None:
        self._store = store
        self._users = users
        self._hostname = hostname
        self._changes = changes  # wakes IMAP IDLE sessions on the mailbox (store.changes)

    async def deliver(self, job: DeliveryJob) -> list[RecipientResult]:
        todo, outcome = mailboxes(self._users, job.queue_id, job.recipients)  # Rules 1, 3
        written = await asyncio.gather(*(self._deliver_one(job, rcpt) for rcpt in todo.values()))
        outcome.update(zip(todo.keys(), written))
        return in_order(job.recipients, outcome)

    def _write(self, job: DeliveryJob, rcpt: Address) -> Path:
        with job.body.open() as body:  # a file, memory or a journal segment (delivery.base Rule 1)
            return self._store.deliver_shared(rcpt, delivery_prefix(job.sender, rcpt), body, job.folder)

    async def _deliver_one(self, job: DeliveryJob, rcpt: Address) -> RecipientResult:
        qid = job.queue_id
        try:
            # Rule 6: the whole file work (mkdir if new, copy, fsync, link, shared new/ fsync) in
            # one worker-thread call.
            path = await asyncio.get_running_loop().run_in_executor(None, self._write, job, rcpt)
        except Exception as exc:
            return failure(qid, rcpt, exc)
        return delivered(qid, rcpt, path, self._changes)


Outcome = dict[str, RecipientResult]  # by mailbox (the folded address, ``Address.key``)


def mailboxes(users: UserLookup, qid: str, rcpts: Iterable[Address]) -> tuple[dict[str, Address], Outcome]:
    """Rules 1, 3 and 5 for a message's recipients, before anything is written: the mailboxes
    to write, one per folded address (its first spelling), and the results already known (an
    unknown user, a directory lookup that raised), both by mailbox key."""
    todo: dict[str, Address] = {}
    outcome: Outcome = {}
    for rcpt in rcpts:
        key = rcpt.key
        if key in todo or key in outcome:
            continue  # Rule 3: one copy per mailbox
        try:
            result = unknown_user(users, qid, rcpt)
        except Exception as exc:
            result = failure(qid, rcpt, exc)
        if result is None:
            todo[key] = rcpt
        else:
            outcome[key] = result
    return todo, outcome


def in_order(rcpts: Iterable[Address], outcome: Outcome) -> list[RecipientResult]:
    """Rule 4: one result per recipient, in order; a recipient listed twice gets its mailbox's."""
    out = []
    for rcpt in rcpts:
        res = outcome[rcpt.key]
        # The mailbox's own result when this is the spelling it was made for (the usual case).
        out.append(res if res.recipient is rcpt else RecipientResult(rcpt, res.status, res.reply, HOST))
    return out


def unknown_user(users: UserLookup, qid: str, rcpt: Address) -> RecipientResult | None:
    """Rule 1: the failure for a recipient the directory no longer knows, else None."""
    if users.user_exists(rcpt):
        return None
    reply = C550_MAILBOX_UNAVAILABLE.with_text(f"<{rcpt}>: user unknown")
    log.debug("%s: to=%s relay=local status=bounced (%s)", qid, format_path(rcpt), reply)
    return RecipientResult(rcpt, "failed", reply, HOST)


def failure(qid: str, rcpt: Address, exc: Exception) -> RecipientResult:
    """Rule 5: the result (and the log line) for a delivery that raised ``exc``."""
    if isinstance(exc, MailboxNameError):
        reply = C553_MAILBOX_NAME_NOT_ALLOWED.with_text(f"<{rcpt}>: {exc}")
        log.error("%s: to=%s relay=local status=bounced (%s)", qid, format_path(rcpt), reply)
        return RecipientResult(rcpt, "failed", reply, HOST)
    if isinstance(exc, OSError):
        base = C452_INSUFFICIENT_STORAGE if exc.errno in _STORAGE_FULL else C451_LOCAL_ERROR
        reply = base.with_text(f"<{rcpt}>: maildir delivery failed, try again later")
        log.error("%s: to=%s relay=local status=deferred (%s) error=%s",
                  qid, format_path(rcpt), reply, exc)
        return RecipientResult(rcpt, "deferred", reply, HOST)
    reply = C451_LOCAL_ERROR
    log.error("%s: to=%s relay=local status=deferred (%s) unexpected error", qid, format_path(rcpt),
              reply, exc_info=exc)
    return RecipientResult(rcpt, "deferred", reply, HOST)


def delivered(qid: str, rcpt: Address, path: Path, changes: ChangeNotifier | None,
              maildir: Path | None = None) -> RecipientResult:
    """After a durable delivery: the debug line, IMAP IDLE sessions woken, and its result.
    ``maildir``: the folder of ``path`` when the caller has it (no new path object made)."""
    if log.isEnabledFor(logging.DEBUG):  # the arguments cost more than the check
        log.debug("%s: to=%s relay=local status=sent (%s) path=%s",
                  qid, format_path(rcpt), R250_DELIVERED, path.name)
    if changes is not None:
        changes.notify(path.parent.parent if maildir is None else maildir)  # new/<file> → the Maildir (INBOX)
    return RecipientResult(rcpt, "delivered", R250_DELIVERED, HOST)
