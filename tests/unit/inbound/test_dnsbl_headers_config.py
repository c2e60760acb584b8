"""DNS blocklist names and answers, header-section edits, and the [inbound] section."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pigeon.config import ConfigError, parse_config
from pigeon.dns.resolver import DnsTempError, NoSuchDomain
from pigeon.inbound import dnsbl
from pigeon.inbound.headers import apply_edits, remove_forged, spam_marked, split_fields
from pigeon.mailauth.authres import is_ours
from pigeon.proto.milter.codec import AddHeader, ChangeHeader, InsertHeader


@pytest.mark.parametrize(("ip", "name"), [
    ("192.0.2.99", "99.2.0.192.bl.test"),
    ("::ffff:192.0.2.1", "1.2.0.192.bl.test"),
    ("2001:db8::1", "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.test"),  # RFC 5782 §2.4
    ("not-an-ip", None),
])
def test_query_names(ip: str, name: str | None) -> None:
    assert dnsbl.query_name(ip, "bl.test") == name


class Dns:
    def __init__(self, a: dict[str, list[str] | Exception], txt: dict[str, list[bytes]] | None = None,
                 delay: float = 0.0) -> None:
        self._a, self._txt, self._delay = a, txt or {}, delay

    async def a(self, name: str) -> list[str]:
        await asyncio.sleep(self._delay)
        value = self._a.get(name, NoSuchDomain(name))
        if isinstance(value, Exception):
            raise value
        return value

    async def txt(self, name: str) -> list[bytes]:
        return self._txt.get(name, [])


def test_a_listing_names_the_zone_and_quotes_the_txt() -> None:
    dns = Dns({"5.0.0.127.two.test": ["127.0.0.2"]}, {"5.0.0.127.two.test": [b"Listed\r\nsee x"]})
    listing = asyncio.run(dnsbl.lookup(dns, "127.0.0.5", ["one.test", "two.test"], 5))
    assert listing is not None and listing.zone == "two.test"
    reply = listing.reply("127.0.0.5")
    assert (reply.code, reply.enhanced) == (554, "5.7.1")
    assert reply.lines[0] == "Service unavailable; Client host [127.0.0.5] blocked using two.test; Listed??see x"


@pytest.mark.parametrize("answer", [["192.0.2.1"], DnsTempError("servfail"), ["garbage"]])
def test_failures_and_answers_outside_127_never_list(answer: list[str] | Exception) -> None:
    dns = Dns({"5.0.0.127.bl.test": answer})
    assert asyncio.run(dnsbl.lookup(dns, "127.0.0.5", ["bl.test"], 5)) is None


def test_a_slow_zone_is_not_a_listing() -> None:
    dns = Dns({"5.0.0.127.bl.test": ["127.0.0.2"]}, delay=1.0)
    assert asyncio.run(dnsbl.lookup(dns, "127.0.0.5", ["bl.test"], 0.05)) is None


SECTION = (b"Received: from x\r\n\tby y\r\n"
           b"Authentication-Results: (forged) MX.Example.Test; spf=pass\r\n"
           b"Authentication-Results: other.test;\r\n dkim=pass\r\n"
           b"Subject: hello\r\n"
           b"Subject: second\r\n")


def test_forged_authentication_results_are_removed_others_kept() -> None:
    kept, removed = remove_forged(split_fields(SECTION), lambda v: is_ours(v, "mx.example.test"))
    assert removed == 1
    assert b"".join(kept) == SECTION.replace(b"Authentication-Results: (forged) MX.Example.Test; spf=pass\r\n", b"")


def test_milter_header_edits_follow_libmilter() -> None:
    fields = split_fields(SECTION)
    out = b"".join(apply_edits(fields, [
        ChangeHeader(2, "Subject", "changed\n\tfolded"), InsertHeader(0, "X-Top", "1"),
        ChangeHeader(1, "Received", ""), AddHeader("X-Spam", "Yes"), ChangeHeader(1, "X-Missing", "added"),
    ]))
    assert out.startswith(b"X-Top: 1\r\nAuthentication-Results: (forged)")
    assert b"Received:" not in out
    assert b"Subject: hello\r\nSubject: changed\r\n\tfolded\r\n" in out
    assert out.endswith(b"X-Spam: Yes\r\nX-Missing: added\r\n")


@pytest.mark.parametrize(("edits", "spam"), [
    ([AddHeader("X-Spam", "yes")], True), ([AddHeader("X-Spam-Flag", "YES")], True),
    ([ChangeHeader(1, "X-Spam", "Yes")], True), ([AddHeader("X-Spam", "No")], False),
    ([ChangeHeader(1, "X-Spam", "")], False), ([AddHeader("X-Spam-Status", "Yes, score=9")], False),
])
def test_spam_marks(edits: list[AddHeader | ChangeHeader], spam: bool) -> None:
    assert spam_marked(edits) is spam


def _cfg(inbound: str) -> str:
    return f'hostname = "mx.test"\ndata_dir = "/tmp/x"\n[inbound]\n{inbound}\n'


def test_inbound_defaults_are_on_and_trust_nobody() -> None:
    cfg = parse_config('hostname = "mx.test"\ndata_dir = "/tmp/x"\n', "t", Path("/"))
    i = cfg.inbound
    assert i.spf and i.dkim and i.dmarc and i.arc and i.reports and i.reject_local_spoofing
    assert i.trusted_networks == () and i.dnsbl == () and i.milters == ()
    assert i.milter_default_action == "tempfail"


@pytest.mark.parametrize(("text", "key"), [
    ('trusted_networks = ["300.1.1.1/8"]', "inbound.trusted_networks"),
    ('dnsbl = ["bad zone"]', "inbound.dnsbl"),
    ('milters = ["tcp:1.2.3.4:5"]', "inbound.milters"),
    ('milters = ["inet:127.0.0.1"]', "inbound.milters"),
    ('milters = ["unix:relative/path"]', "inbound.milters"),
    ('milter_default_action = "reject"', "inbound.milter_default_action"),
    ("spf = 1", "inbound.spf"),
    ("sp = false", "inbound.sp"),
])
def test_inbound_errors_name_the_key(text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        parse_config(_cfg(text), "t", Path("/"))


def test_inbound_values_are_parsed() -> None:
    cfg = parse_config(_cfg('trusted_networks = ["192.0.2.0/24", "2001:db8::/32"]\n'
                            'trusted_arc_sealers = ["Lists.Example."]\ndnsbl = "zen.test"\n'
                            'milters = ["inet:[::1]:11332", "unix:/run/rspamd/milter.sock"]\n'
                            'milter_default_action = "accept"\nmilter_content_timeout = "5m"\n'), "t", Path("/"))
    i = cfg.inbound
    assert [str(n) for n in i.trusted_networks] == ["192.0.2.0/24", "2001:db8::/32"]
    assert i.trusted_arc_sealers == ("lists.example",) and i.dnsbl == ("zen.test",)
    assert (i.milters[0].host, i.milters[0].port) == ("::1", 11332)
    assert i.milters[1].path == "/run/rspamd/milter.sock"
    assert i.milter_default_action == "accept" and i.milter_content_timeout == 300.0
