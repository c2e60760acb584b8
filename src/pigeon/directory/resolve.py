"""Recipient policy and alias expansion over an in-memory snapshot of the directory.

Pure functions: no SQLite, no I/O, so every rule below is tested on a hand-built ``Snapshot``.

Lookup of a local address ``local@domain`` (folded: the whole key lower-cased, and a quoted
local part that needs no quoting unquoted), first match wins:
1. an alias with that exact name (an alias is consulted before a user of the same name, as in
   aliases(5), so ``bob: bob, bob@elsewhere`` keeps a copy and forwards one);
2. a user with that name;
3. ``postmaster`` (any case, any local domain, RFC 5321 §4.5.1: it must always exist) → the
   postmaster address (the config's ``postmaster``, else the first user created);
4. sub-addressing: ``user+tag`` → rules 1-3 again for ``user`` (each character of the delimiter
   setting is a delimiter; the split is at the first one; a quoted local part is never split);
5. the catch-all alias ``@domain``.
Anything else is unknown: ``accepts`` says False.

Expansion (``expand``), recursively from the lookup:
6. an alias expands to its targets, in order; a user to their mailbox, or, when they forward,
   to the forward targets (plus the mailbox when ``keep``); postmaster to the postmaster address.
   A target in a non-local domain is final and returned as written (the queue relays it).
7. A name met again on its own expansion path (a self-reference like ``bob: bob, other``, or a
   loop ``a → b → a``) stops there: if it is a user, their mailbox is delivered to (never a
   forward again); ``postmaster`` met again is returned as is (rule 8); otherwise that branch is
   dropped with a log line. Nesting deeper than
   ``MAX_DEPTH`` is dropped the same way. What resolved elsewhere is kept.
8. A local target that is none of the above is returned as is (folded): local delivery then
   fails it permanently (550 5.1.1 user unknown) and the sender gets a bounce.
9. The result is deduplicated (by folded key), first occurrence kept, order kept. It may be
   empty when every branch looped: the caller treats that recipient as failed (5.4.6).

What can go wrong: nothing raises here; dropped branches are logged at WARNING.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from pigeon.core.address import Address

log = logging.getLogger(__name__)

# Same nesting bound as Postfix's local(8) (expansion depth) and sendmail's MAXRCRSN 10-20.
MAX_DEPTH = 20

_DOT_ATOM = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")


@dataclass(frozen=True, slots=True)
class Forward:
    targets: tuple[Address, ...]
    keep: bool


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything a lookup needs, read from the database in one transaction."""

    domains: frozenset[str]
    users: frozenset[str]  # folded keys
    forwards: Mapping[str, Forward]  # folded user key → forward
    aliases: Mapping[str, tuple[Address, ...]]  # folded key, or "@domain" for a catch-all
    postmaster: Address | None


def fold_local(local: str) -> str:
    """The lookup form of a local part: lower-cased, needless quotes removed (RFC 5321 §4.1.2)."""
    if len(local) >= 2 and local[0] == '"' and local[-1] == '"':
        inner = re.sub(r"\\(.)", r"\1", local[1:-1])
        if _DOT_ATOM.match(inner):
            local = inner
    return local.lower()


def fold(address: Address) -> str:
    return f"{fold_local(address.local)}@{address.domain.lower()}"


def address_of_key(key: str) -> Address:
    local, _, domain = key.rpartition("@")
    return Address(local, domain)


def _base_local(local: str, delimiters: str) -> str | None:
    """``user`` for ``user+tag`` (first delimiter); None when there is nothing to strip."""
    if not delimiters or local.startswith('"'):
        return None
    for i, ch in enumerate(local):
        if ch in delimiters:
            return local[:i] if i > 0 else None
    return None


Kind = Literal["alias", "user", "postmaster"]


def _exact(snap: Snapshot, local: str, domain: str) -> tuple[Kind, str] | None:
    key = f"{local}@{domain}"
    if key in snap.aliases:
        return "alias", key
    if key in snap.users:
        return "user", key
    if local == "postmaster":
        return "postmaster", key
    return None


def lookup(snap: Snapshot, address: Address, delimiters: str) -> tuple[Kind, str] | None:
    """What a local address names (rules 1-5): (kind, key), or None when unknown."""
    domain = address.domain.lower()
    local = fold_local(address.local)
    found = _exact(snap, local, domain)
    if found is not None:
        return found
    base = _base_local(local, delimiters)
    if base is not None:
        found = _exact(snap, base, domain)
        if found is not None:
            return found
    catch_all = "@" + domain
    if catch_all in snap.aliases:
        return "alias", catch_all
    return None


def is_local(snap: Snapshot, domain: str) -> bool:
    return domain.lower().rstrip(".") in snap.domains


def accepts(snap: Snapshot, address: Address, delimiters: str) -> bool:
    return is_local(snap, address.domain) and lookup(snap, address, delimiters) is not None


class _Expansion:
    def __init__(self, snap: Snapshot, delimiters: str, origin: Address) -> None:
        self.snap = snap
        self.delimiters = delimiters
        self.origin = origin
        self.out: list[Address] = []
        self.seen: set[str] = set()

    def add(self, address: Address) -> None:
        key = fold(address)
        if key not in self.seen:
            self.seen.add(key)
            self.out.append(address)

    def drop(self, why: str, key: str) -> None:
        log.warning("expanding %s: %s at %s; that branch is dropped", self.origin, why, key)

    def walk(self, address: Address, chain: tuple[str, ...]) -> None:
        snap = self.snap
        if not is_local(snap, address.domain):
            self.add(address)  # rule 6: remote targets are final
            return
        found = lookup(snap, address, self.delimiters)
        if found is None:
            self.add(address_of_key(fold(address)))  # rule 8
            return
        kind, key = found
        if key in chain:  # rule 7: self-reference or loop
            if kind != "alias" or key in snap.users:
                self.add(address_of_key(key))
            else:
                self.drop("alias loop", key)
            return
        if len(chain) >= MAX_DEPTH:
            self.drop(f"nesting deeper than {MAX_DEPTH}", key)
            return
        inner = chain + (key,)
        if kind == "alias":
            for target in snap.aliases[key]:
                self.walk(target, inner)
        elif kind == "user":
            forward = snap.forwards.get(key)
            if forward is None or not forward.targets:
                self.add(address_of_key(key))
                return
            if forward.keep:
                self.add(address_of_key(key))
            for target in forward.targets:
                self.walk(target, inner)
        else:
            postmaster = snap.postmaster
            if postmaster is None:
                # RFC 5321 §4.5.1: postmaster must exist; with no user yet there is no mailbox.
                log.warning("mail for %s but no postmaster is configured and no user exists", address)
                self.add(address_of_key(key))
                return
            self.walk(postmaster, inner)


def expand(snap: Snapshot, address: Address, delimiters: str) -> list[Address]:
    """The final addresses mail for ``address`` goes to (rules 6-9)."""
    expansion = _Expansion(snap, delimiters, address)
    expansion.walk(address, ())
    return expansion.out
