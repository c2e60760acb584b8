"""Endpoint: host:port parsing and the round trip through str()."""

from __future__ import annotations

import pytest

from pigeon.config import Endpoint


@pytest.mark.parametrize(
    ("text", "host", "port", "back"),
    [
        ("127.0.0.1:2525", "127.0.0.1", 2525, "127.0.0.1:2525"),
        ("[::1]:2525", "::1", 2525, "[::1]:2525"),
        ("[2001:DB8::1]:25", "2001:DB8::1", 25, "[2001:DB8::1]:25"),
        ("Mail.Example.NET:587", "mail.example.net", 587, "mail.example.net:587"),
        (" localhost:1 ", "localhost", 1, "localhost:1"),
    ],
)
def test_parse_and_round_trip(text: str, host: str, port: int, back: str) -> None:
    endpoint = Endpoint.parse(text)
    assert endpoint == Endpoint(host, port)
    assert str(endpoint) == back
    assert Endpoint.parse(str(endpoint)) == endpoint


def test_default_port() -> None:
    assert Endpoint.parse("192.0.2.1", default_port=53) == Endpoint("192.0.2.1", 53)
    assert Endpoint.parse("[2001:db8::53]", default_port=53) == Endpoint("2001:db8::53", 53)
    assert Endpoint.parse("relay.example", default_port=25).port == 25


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("127.0.0.1", "port is required"),
        ("::1", "in brackets"),
        ("[::1", "missing ']'"),
        ("[example.com]:25", "not an IPv6 address"),
        ("[::1]25", "expected ':port'"),
        ("host:http", "not a number"),
        ("host:-1", "not a number"),
        ("host:65536", "outside 1..65535"),
        ("bad_host!:25", "not a valid host name"),
    ],
)
def test_bad_endpoints(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Endpoint.parse(text)


def test_ip_only() -> None:
    with pytest.raises(ValueError, match="not an IP address"):
        Endpoint.parse("ns.example:53", ip_only=True)
    assert Endpoint.parse("10.0.0.1:53", ip_only=True).is_ip
    assert not Endpoint("mx.example", 25).is_ip
