"""The web endpoint's routes (aiohttp): ACME http-01, MTA-STS policy, client autoconfiguration
(``site``), and ``/metrics`` + ``/healthz`` (``monitoring``).

Rules:
1. HTTP is aiohttp's; nothing here parses a request by hand. The listeners (sockets, TLS) are
   made by ``app.web``, which shares the mail listeners' certificate.
2. ``/.well-known/acme-challenge/<token>`` answers the key authorization of a pending http-01
   challenge (RFC 8555 §8.3), else 404.
3. ``/.well-known/mta-sts.txt`` is answered only for ``Host: mta-sts.<local domain>`` and only
   over HTTPS (RFC 8461 §3.3: the policy is fetched over HTTPS, from that host), as
   ``text/plain``; anything else is 404.
4. Autoconfig answers for local domains only: the address's domain (``emailaddress=``), else
   the ``autoconfig.<domain>`` the request was sent to, else the first local domain.
   Autodiscover and the Apple profile need an address in a local domain (else 404/error).
5. ``/healthz`` answers 200 ``ok`` when ``health()`` reports no problem, else 503 with one
   problem per line.

What can go wrong: a request for anything else is 404; a body over the size limits is 413
(aiohttp's ``client_max_size``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from pigeon.config import Config
from pigeon.core.address import AddressError, parse_address
from pigeon.web import clientconfig
from pigeon.web.acme import Challenges
from pigeon.web.mtasts import policy_text

# aiohttp's default (1 MiB) is far above anything these routes take; autodiscover's limit.
MAX_BODY = clientconfig.MAX_AUTODISCOVER_BODY
XML = "application/xml"
MOBILECONFIG = "application/x-apple-aspen-config"


def _host(request: web.Request) -> str:
    host = (request.host or "").lower()
    if host.startswith("["):
        return host
    return host.rsplit(":", 1)[0].rstrip(".")


def _local_address(config: Config, text: str | None) -> str | None:
    if not text:
        return None
    try:
        address = parse_address(text.strip())
    except AddressError:
        return None
    return str(address) if address.domain.lower() in config.domains else None


def site(config: Callable[[], Config], challenges: Challenges) -> web.Application:
    """The http/https application (rules 2-4)."""

    async def acme(request: web.Request) -> web.Response:
        answer = challenges.get(request.match_info["token"])
        if answer is None:
            raise web.HTTPNotFound()
        return web.Response(body=answer.encode(), content_type="application/octet-stream")

    async def mta_sts(request: web.Request) -> web.Response:
        cfg = config()
        host = _host(request)
        if not request.secure or not host.startswith("mta-sts.") or host[len("mta-sts."):] not in cfg.domains:
            raise web.HTTPNotFound()
        return web.Response(text=policy_text(cfg.mta_sts), content_type="text/plain")

    async def autoconfig(request: web.Request) -> web.Response:
        cfg = config()
        if not cfg.domains:
            raise web.HTTPNotFound()
        address = _local_address(cfg, request.query.get("emailaddress"))
        host = _host(request)
        if address is not None:
            domain = address.rsplit("@", 1)[1].lower()
        elif host.startswith("autoconfig.") and host[len("autoconfig."):] in cfg.domains:
            domain = host[len("autoconfig."):]
        else:
            domain = cfg.domains[0]
        return web.Response(body=clientconfig.autoconfig_xml(cfg, domain), content_type=XML, charset="utf-8")

    async def autodiscover(request: web.Request) -> web.Response:
        cfg = config()
        try:
            text = clientconfig.autodiscover_address(await request.read())
        except clientconfig.AutodiscoverError as exc:
            return web.Response(body=clientconfig.autodiscover_error_xml(str(exc)), content_type=XML, charset="utf-8")
        address = _local_address(cfg, text)
        if address is None:
            return web.Response(body=clientconfig.autodiscover_error_xml("not a local address"),
                                content_type=XML, charset="utf-8")
        return web.Response(body=clientconfig.autodiscover_xml(cfg, address), content_type=XML, charset="utf-8")

    async def apple(request: web.Request) -> web.Response:
        cfg = config()
        address = _local_address(cfg, request.query.get("email"))
        if address is None:
            raise web.HTTPNotFound(text="email= must be an address in a local domain\n")
        return web.Response(body=clientconfig.mobileconfig(cfg, address), content_type=MOBILECONFIG)

    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_get("/.well-known/acme-challenge/{token}", acme)
    app.router.add_get("/.well-known/mta-sts.txt", mta_sts)
    for path in ("/mail/config-v1.1.xml", "/.well-known/autoconfig/mail/config-v1.1.xml"):
        app.router.add_get(path, autoconfig)
    for path in ("/autodiscover/autodiscover.xml", "/Autodiscover/Autodiscover.xml"):
        app.router.add_post(path, autodiscover)
    app.router.add_get("/apple/profile.mobileconfig", apple)
    return app


def monitoring(registry: CollectorRegistry, health: Callable[[], Awaitable[list[str]]]) -> web.Application:
    """``/metrics`` and ``/healthz`` (rule 5)."""

    async def metrics(request: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(request: web.Request) -> web.Response:
        problems = await health()
        if problems:
            return web.Response(status=503, text="".join(f"{p}\n" for p in problems))
        return web.Response(text="ok\n")

    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    return app
