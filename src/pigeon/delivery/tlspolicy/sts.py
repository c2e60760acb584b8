"""MTA-STS discovery, fetch and cache (RFC 8461 §3, §5): which policy applies to a domain now.

Rules:
1. ``StsCache.policy(domain)`` looks up ``_mta-sts.<domain>`` TXT through Pigeon's resolver
   (``[dns] nameservers``). A cached, unexpired policy whose id equals the record's is used as
   it is. A new or changed id fetches the policy (rule 2); a failed fetch keeps the cached
   policy until it expires (RFC 8461 §5.1: "continue to use the cached policy").
2. The fetch: ``https://mta-sts.<domain>/.well-known/mta-sts.txt`` (RFC 8461 §3.3) with httpx.
   The host name is resolved through Pigeon's resolver, the connection made to that address
   with SNI and Host set to ``mta-sts.<domain>``, and the certificate verified for that name
   against ``[delivery] tls_ca_file`` (else the system's CAs). Redirects are refused (§3.3:
   "HTTP 3xx redirects MUST NOT be followed"), the status must be 200, the media type
   ``text/plain`` (§3.2), the body at most ``MAX_POLICY_BYTES`` (read as it streams: a huge
   body is cut off, not held), all within ``FETCH_TIMEOUT``. ``port`` (``[delivery]
   mta_sts_port``) is 443 except in tests.
3. No TXT record (or a DNS failure): the cached policy is used while unexpired (§5.1 — a policy
   is removed only by its expiry or by a new ``mode: none`` policy); without one, no policy.
4. Background refresh (§5.1 "SHOULD proactively refresh"): when a used policy was fetched more
   than ``REFRESH_AFTER`` ago (or half its max_age, whichever is less), it is fetched again in
   a background task; one fetch per domain at a time, at most ``MAX_FETCHES`` at once.
5. The cache lives in memory and in ``<data_dir>/tlspolicy/mta-sts.json`` (state.py: atomic,
   fsynced), loaded at start: it survives restarts, as the RFC expects of a policy cache. At
   most ``MAX_CACHED`` domains are kept (the least recently fetched are dropped).
6. Every failure (TXT, fetch, syntax) is one log line naming the domain and the reason, and is
   kept as ``StsLookup.error`` for TLS-RPT (``sts-policy-fetch-error``, ``sts-policy-invalid``,
   ``sts-webpki-invalid``).

What can go wrong: nothing raises from ``policy``; every problem is a log line and a decision
(rules 1, 3).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import httpx

from pigeon.core.clock import Clock
from pigeon.delivery.tlspolicy.mtasts import MAX_POLICY_BYTES, Policy, PolicyError, parse_policy, parse_txt, texts
from pigeon.delivery.tlspolicy.state import load_json, save_json
from pigeon.dns.resolver import DnsError, Resolver
from pigeon.net.connect import ClientTlsContext

log = logging.getLogger(__name__)

FETCH_TIMEOUT = 30.0  # RFC 8461 §3.3 leaves it to the sender; a policy host slower than this is down
REFRESH_AFTER = 86400.0  # refetch a used policy daily (RFC 8461 §5.1 proactive refresh)
MAX_FETCHES = 8  # fetches at once: the queue never waits on many slow policy hosts
MAX_CACHED = 10_000  # domains with a cached policy (a few hundred bytes each)
WELL_KNOWN = "/.well-known/mta-sts.txt"  # RFC 8461 §3.3


class TxtResolver(Resolver, Protocol):
    async def txt(self, name: str) -> list[bytes]: ...


@dataclass(frozen=True, slots=True)
class CachedPolicy:
    id: str
    policy: Policy
    fetched: float
    expires: float


@dataclass(frozen=True, slots=True)
class StsLookup:
    """The policy to apply (None: no MTA-STS for this domain), and what went wrong on the way."""

    policy: Policy | None
    id: str = ""
    error: str = ""
    error_type: str = ""  # an RFC 8460 §4.3 result type, for TLS-RPT


class FetchError(Exception):
    def __init__(self, text: str, result_type: str = "sts-policy-fetch-error") -> None:
        super().__init__(text)
        self.result_type = result_type


class StsCache:
    def __init__(self, resolver: TxtResolver, clock: Clock, tls: ClientTlsContext, state_dir: Path | None,
                 port: int = 443) -> None:
        self.resolver = resolver
        self.clock = clock
        self.tls = tls
        self.port = port
        self.path = state_dir / "mta-sts.json" if state_dir is not None else None
        self._items: dict[str, CachedPolicy] = {}
        self._inflight: dict[str, asyncio.Task[StsLookup]] = {}
        self._fetches = asyncio.Semaphore(MAX_FETCHES)
        self._load()

    def cached(self, domain: str) -> CachedPolicy | None:
        item = self._items.get(domain)
        return item if item is not None and item.expires > self.clock.now() else None

    async def policy(self, domain: str) -> StsLookup:
        """Rules 1, 3, 4."""
        domain = domain.lower().rstrip(".")
        cached = self.cached(domain)
        try:
            record = parse_txt(texts(await self.resolver.txt(f"_mta-sts.{domain}")))
        except (DnsError, PolicyError) as exc:
            if not isinstance(exc, DnsError):
                log.warning("mta-sts: %s: bad _mta-sts TXT record: %s", domain, exc)
            record = None
        if record is None:
            return self._use(domain, cached) if cached else StsLookup(None)
        if cached is not None and cached.id == record.id:
            return self._use(domain, cached)
        result = await self._fetch_once(domain, record.id)
        if result.policy is None and cached is not None:
            log.warning("mta-sts: %s: %s; keeping the cached policy (id %s)", domain, result.error, cached.id)
            return StsLookup(cached.policy, cached.id, result.error, result.error_type)
        return result

    def _use(self, domain: str, cached: CachedPolicy) -> StsLookup:
        age = self.clock.now() - cached.fetched
        if age > min(REFRESH_AFTER, cached.policy.max_age / 2) and domain not in self._inflight:
            self._start(domain, cached.id)  # rule 4: in the background; this delivery uses the cache
        return StsLookup(cached.policy, cached.id)

    def _start(self, domain: str, sts_id: str) -> asyncio.Task[StsLookup]:
        task = asyncio.get_running_loop().create_task(self._fetch(domain, sts_id))
        self._inflight[domain] = task
        task.add_done_callback(lambda _t: self._inflight.pop(domain, None))
        return task

    async def _fetch_once(self, domain: str, sts_id: str) -> StsLookup:
        task = self._inflight.get(domain) or self._start(domain, sts_id)
        return await asyncio.shield(task)

    async def _fetch(self, domain: str, sts_id: str) -> StsLookup:
        try:
            async with self._fetches:
                body = await self.fetch(domain)
            policy = parse_policy(body)
        except FetchError as exc:
            log.warning("mta-sts: %s: policy fetch failed: %s", domain, exc)
            return StsLookup(None, sts_id, str(exc), exc.result_type)
        except PolicyError as exc:
            log.warning("mta-sts: %s: policy file refused: %s", domain, exc)
            return StsLookup(None, sts_id, str(exc), "sts-policy-invalid")
        except Exception as exc:  # never let a policy host crash delivery
            log.exception("mta-sts: %s: unexpected error fetching the policy", domain)
            return StsLookup(None, sts_id, f"unexpected error: {exc}", "sts-policy-fetch-error")
        now = self.clock.now()
        self._items[domain] = CachedPolicy(sts_id, policy, now, now + policy.max_age)
        log.info("mta-sts: %s: policy id %s: mode %s, mx %s, max_age %d", domain, sts_id, policy.mode,
                 ",".join(policy.mx), policy.max_age)
        await self._save()
        return StsLookup(policy, sts_id)

    async def fetch(self, domain: str) -> bytes:
        """Rule 2. Raises FetchError."""
        host = f"mta-sts.{domain}"
        try:
            addresses = await self.resolver.addresses(host)
        except DnsError as exc:
            raise FetchError(f"{host}: {exc}") from None
        if not addresses:
            raise FetchError(f"{host} has no address")
        last = ""
        for address in addresses[:2]:
            literal = f"[{address}]" if ":" in address else address
            url = f"https://{literal}:{self.port}{WELL_KNOWN}"
            try:
                async with asyncio.timeout(FETCH_TIMEOUT):
                    return await self._get(url, host)
            except TimeoutError:
                last = f"{host}[{address}]: timed out after {FETCH_TIMEOUT:.0f}s"
            except httpx.ConnectError as exc:
                text = str(exc)
                if "CERTIFICATE_VERIFY_FAILED" in text or "certificate" in text.lower():
                    raise FetchError(f"{host}[{address}]: certificate not valid: {text}",
                                     "sts-webpki-invalid") from None
                last = f"{host}[{address}]: cannot connect: {text}"
            except httpx.HTTPError as exc:
                last = f"{host}[{address}]: {type(exc).__name__}: {exc}"
        raise FetchError(last)

    async def _get(self, url: str, host: str) -> bytes:
        async with httpx.AsyncClient(verify=self.tls, follow_redirects=False, trust_env=False,
                                     timeout=FETCH_TIMEOUT) as client:
            request = client.build_request("GET", url, headers={"Host": host},
                                           extensions={"sni_hostname": host})
            response = await client.send(request, stream=True)
            try:
                if response.is_redirect:
                    raise FetchError(f"{host}: redirect ({response.status_code}) refused (RFC 8461 §3.3)")
                if response.status_code != 200:
                    raise FetchError(f"{host}: HTTP status {response.status_code}")
                ctype = response.headers.get("content-type", "").split(";")[0].strip().lower()
                if ctype != "text/plain":
                    raise FetchError(f"{host}: media type {ctype or 'none'!r} is not text/plain (RFC 8461 §3.2)",
                                     "sts-policy-invalid")
                body = bytearray()
                async for chunk in response.aiter_raw():
                    body += chunk
                    if len(body) > MAX_POLICY_BYTES:
                        raise FetchError(f"{host}: policy larger than {MAX_POLICY_BYTES} octets",
                                         "sts-policy-invalid")
                return bytes(body)
            finally:
                await response.aclose()

    def _load(self) -> None:
        if self.path is None:
            return
        doc = load_json(self.path) or {}
        now = self.clock.now()
        for domain, item in doc.items():
            if not isinstance(item, dict):
                log.warning("mta-sts: cached policy of %s unreadable; dropped", domain)
                continue
            try:
                policy = parse_policy(str(item["policy"]).encode())
                cached = CachedPolicy(str(item["id"]), policy, float(item["fetched"]), float(item["expires"]))
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("mta-sts: cached policy of %s unreadable (%s); dropped", domain, exc)
                continue
            if cached.expires > now:
                self._items[domain] = cached

    async def _save(self) -> None:
        if self.path is None:
            return
        if len(self._items) > MAX_CACHED:
            for domain, _ in sorted(self._items.items(), key=lambda kv: kv[1].fetched)[:len(self._items) - MAX_CACHED]:
                del self._items[domain]
        doc = {d: {"id": c.id, "policy": c.policy.to_text(), "fetched": c.fetched, "expires": c.expires}
               for d, c in self._items.items()}
        try:
            await asyncio.to_thread(save_json, self.path, doc)
        except OSError as exc:
            log.error("mta-sts: cannot save the policy cache %s: %s", self.path, exc)
