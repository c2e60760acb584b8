"""The ``user``, ``group`` and ``log_syslog`` keys (issue 19)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pigeon.config import ConfigError, parse_config

BASE = 'hostname = "mx.example.test"\ndata_dir = "d"\n'


def test_defaults_and_values(tmp_path: Path) -> None:
    cfg = parse_config(BASE, "t.toml", tmp_path)
    assert (cfg.user, cfg.group, cfg.log_syslog) == (None, None, False)
    cfg = parse_config(BASE + 'user = "pigeon"\ngroup = "mail"\nlog_syslog = true\n', "t.toml", tmp_path)
    assert (cfg.user, cfg.group, cfg.log_syslog) == ("pigeon", "mail", True)


@pytest.mark.parametrize("toml, message", [
    ('user = "root"\n', "t.toml: user: root is what the server stops being"),
    ('user = "Bad User"\n', "t.toml: user: 'Bad User' is not a user or group name"),
    ('group = "mail"\n', "t.toml: group: needs user"),
    ('user = "pigeon"\ngroup = "root"\n', "t.toml: group: root is what the server stops being"),
    ('log_syslog = "yes"\n', "t.toml: log_syslog: expected true or false"),
])
def test_refused(tmp_path: Path, toml: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(BASE + toml, "t.toml", tmp_path)
    assert str(exc.value).startswith(message), str(exc.value)
