"""The self-signed certificate on a full disk (pigeon.net.tls rules 3 and 7): never left empty
in place, and an empty or broken pair found at start-up is made again.

The full-disk probe found ``selfsigned.crt`` and ``.key`` written empty on an 8 MiB data
directory (``openssl`` exited 0), after which 465, 993 and 995 never started.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from pigeon.net.tls import TlsError, TlsManager, ensure_self_signed, server_context

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")

HOST = "mail.example.test"


def empty_openssl(tmp_path: Path) -> str:
    """An ``openssl`` that behaves as the real one did on the full disk: it creates the files
    it was asked for, writes nothing into them, and exits 0."""
    script = tmp_path / "openssl-on-a-full-disk"
    script.write_text('#!/bin/sh\nwhile [ $# -gt 0 ]; do\n  case "$1" in -keyout|-out) : > "$2"; shift;; esac\n'
                      "  shift\ndone\nexit 0\n")
    script.chmod(0o755)
    return str(script)


@pytest.mark.parametrize("broken", ["both empty", "cert empty", "key missing", "garbage"])
def test_a_broken_self_signed_pair_is_made_again_at_start(tmp_path: Path, broken: str) -> None:
    tls = tmp_path / "tls"
    tls.mkdir(mode=0o700)
    cert, key = tls / "selfsigned.crt", tls / "selfsigned.key"
    if broken == "both empty":
        cert.write_bytes(b"")
        key.write_bytes(b"")
    elif broken == "cert empty":
        good = ensure_self_signed(HOST, tmp_path / "other")
        shutil.copy(good.key, key)
        cert.write_bytes(b"")
    elif broken == "key missing":
        good = ensure_self_signed(HOST, tmp_path / "other")
        shutil.copy(good.cert, cert)
    else:
        cert.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64\n")
        key.write_bytes(b"\0" * 100)
    manager = TlsManager.from_config(None, None, HOST, tmp_path)  # what the server does at start
    assert manager.files.cert == cert
    assert cert.stat().st_size > 0 and key.stat().st_size > 0
    assert os.stat(key).st_mode & 0o777 == 0o600
    server_context(manager.files)


def test_openssl_writing_empty_files_is_an_error_and_leaves_nothing_in_place(tmp_path: Path) -> None:
    with pytest.raises(TlsError, match="empty"):
        ensure_self_signed(HOST, tmp_path, openssl=empty_openssl(tmp_path))
    assert list((tmp_path / "tls").iterdir()) == []  # no empty pair, no temporary file


def test_a_failed_regeneration_leaves_the_files_it_found(tmp_path: Path) -> None:
    tls = tmp_path / "tls"
    tls.mkdir(mode=0o700)
    (tls / "selfsigned.crt").write_bytes(b"")
    (tls / "selfsigned.key").write_bytes(b"")
    with pytest.raises(TlsError):
        ensure_self_signed(HOST, tmp_path, openssl=empty_openssl(tmp_path))
    assert sorted(p.name for p in tls.iterdir()) == ["selfsigned.crt", "selfsigned.key"]
    good = ensure_self_signed(HOST, tmp_path)  # the next start, with room: a good pair
    server_context(good)
