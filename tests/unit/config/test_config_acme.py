"""``[acme] challenge``: http-01 needs ``[listen] http``, tls-alpn-01 ``[listen] https``."""

from __future__ import annotations

from pathlib import Path

import pytest

from pigeon.config import ConfigError
from pigeon.config.loader import parse_config

BASE = 'hostname = "mx.example.test"\ndata_dir = "/tmp/x"\n'


def _parse(text: str) -> object:
    return parse_config(BASE + text, "t.toml", Path("/tmp"))


def test_http01_needs_the_http_listener() -> None:
    with pytest.raises(ConfigError, match=r'challenge "http-01" needs \[listen\] http'):
        _parse("[acme]\n")
    _parse('[acme]\n[listen]\nhttp = ["127.0.0.1:8080"]\n')


def test_tls_alpn01_needs_the_https_listener() -> None:
    with pytest.raises(ConfigError, match=r'"tls-alpn-01" needs \[listen\] https'):
        _parse('[acme]\nchallenge = "tls-alpn-01"\n[listen]\nhttp = ["127.0.0.1:8080"]\n')
    _parse('[acme]\nchallenge = "tls-alpn-01"\n[listen]\nhttps = ["127.0.0.1:8443"]\n')
    with pytest.raises(ConfigError, match=r"must be http-01 or tls-alpn-01"):
        _parse('[acme]\nchallenge = "dns-01"\n')
