"""`pigeon domain add` makes the DKIM keys; `pigeon dkim list|rotate|retire` (no server needed)."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

from tests.integration.harness import Server

pytestmark = pytest.mark.integration


def test_domain_add_makes_keys_and_rotation_keeps_the_old_ones_until_retired(tmp_path: Path) -> None:
    srv = Server(tmp_path)
    srv.cli("domain", "add", "b.test")
    keydir = srv.data_dir / "dkim" / "b.test"
    keys = sorted(p.name for p in keydir.glob("*.key"))
    assert len(keys) == 2 and all(re.fullmatch(r"\d{6}[er]\.key", k) for k in keys)
    assert all(stat.S_IMODE(os.stat(keydir / k).st_mode) == 0o600 for k in keys)
    listing = srv.cli("dkim", "list").stdout.splitlines()
    assert sorted(line.split("\t")[2:] for line in listing if line.startswith("b.test")) == [
        ["ed25519", "signing"], ["rsa", "signing"]]
    out = srv.cli("dkim", "rotate", "b.test").stdout
    assert re.search(r'\d{6}r2\._domainkey\.b\.test\. IN TXT "v=DKIM1; k=rsa; p=', out)
    listing = [line.split("\t") for line in srv.cli("dkim", "list").stdout.splitlines() if line.startswith("b.test")]
    assert sorted(state for *_, state in listing) == ["published", "published", "signing", "signing"]
    old = next(sel for _, sel, algo, state in listing if state == "published" and algo == "rsa")
    refused = srv.cli("dkim", "retire", "b.test", old + "2", check=False)
    assert refused.returncode == 1 and "rotate first" in refused.stderr
    assert "retired" in srv.cli("dkim", "retire", "b.test", old).stdout
    assert not (keydir / f"{old}.key").exists()
    assert srv.cli("dkim", "rotate", "nowhere.test", check=False).returncode == 1
