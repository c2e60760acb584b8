"""TLS contexts, the self-signed fallback and certificate reload (pigeon.net.tls).

Handshakes run in memory (ssl.MemoryBIO): real OpenSSL on both sides, no sockets.
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import warnings
from pathlib import Path

import pytest

from pigeon.net.tls import (
    TlsError,
    TlsFiles,
    TlsManager,
    client_context,
    ensure_self_signed,
    resolve_files,
    server_context,
    tls_info,
)

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, server_hostname: str | None = None
              ) -> tuple[ssl.SSLObject, ssl.SSLObject]:
    """Run a full TLS handshake between two in-memory SSL objects; raises ssl.SSLError."""
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(c_in, c_out, server_side=False, server_hostname=server_hostname)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"c": False, "s": False}
    for _ in range(20):
        for name, obj in (("c", client), ("s", server)):
            if not done[name]:
                try:
                    obj.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return client, server
    raise AssertionError("handshake did not finish")


def peer_subject(client: ssl.SSLObject) -> str:
    der = client.getpeercert(binary_form=True)
    assert der is not None
    out = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-subject"],
                         input=der, capture_output=True, check=True)
    return out.stdout.decode()


def make_cert(directory: Path, name: str) -> TlsFiles:
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(cert)],
                   capture_output=True, check=True)
    return TlsFiles(cert, key)


def test_self_signed_is_generated_once_private_and_usable(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    files = ensure_self_signed("mail.example.test", tmp_path)
    assert files.self_signed
    assert files.cert == tmp_path / "tls" / "selfsigned.crt"
    assert os.stat(files.key).st_mode & 0o777 == 0o600
    assert "self-signed certificate for mail.example.test" in caplog.text
    first = files.cert.read_bytes()
    again = ensure_self_signed("mail.example.test", tmp_path)
    assert again.cert.read_bytes() == first  # reused at the next start, not regenerated
    assert not [p for p in (tmp_path / "tls").iterdir() if p.name.endswith(".tmp")]

    ca = client_context(verify=True, cafile=files.cert)
    client, server = handshake(server_context(files), ca, server_hostname="mail.example.test")
    assert "CN = mail.example.test" in peer_subject(client)
    with pytest.raises(ssl.SSLCertVerificationError):  # the SAN names the host, nothing else
        handshake(server_context(files), client_context(verify=True, cafile=files.cert), "other.example")


def test_server_context_refuses_tls_1_1_and_speaks_1_3(tmp_path: Path) -> None:
    files = ensure_self_signed("localhost", tmp_path)
    ctx = server_context(files)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.options & ssl.OP_NO_COMPRESSION
    client, server = handshake(ctx, client_context())
    info = tls_info(server)
    assert info is not None and info.startswith("TLSv1.3 TLS_")
    assert tls_info(None) is None
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname = False
    old.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():  # setting TLS 1.1 at all is deprecated, which is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises(ssl.SSLError):
        handshake(ctx, old)


def test_client_context_verifies_only_when_asked(tmp_path: Path) -> None:
    files = ensure_self_signed("localhost", tmp_path)
    plain = client_context()
    assert plain.verify_mode == ssl.CERT_NONE and not plain.check_hostname
    assert plain.minimum_version == ssl.TLSVersion.TLSv1_2
    handshake(server_context(files), plain)  # self-signed accepted: opportunistic TLS
    strict = client_context(verify=True)
    assert strict.verify_mode == ssl.CERT_REQUIRED and strict.check_hostname
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(server_context(files), strict, server_hostname="localhost")


def test_reload_serves_the_renewed_certificate_to_new_connections(tmp_path: Path) -> None:
    live = tmp_path / "live"
    first = make_cert(tmp_path / "gen", "first.example")
    second = make_cert(tmp_path / "gen", "second.example")
    live.mkdir()
    files = TlsFiles(live / "cert.pem", live / "key.pem")
    shutil.copy(first.cert, files.cert)
    shutil.copy(first.key, files.key)
    manager = TlsManager(files)
    front = manager.listener_context()
    client, _ = handshake(manager.context(), client_context())
    assert "first.example" in peer_subject(client)

    shutil.copy(second.cert, files.cert)  # the renewal lands on disk (certbot, acme.sh)
    shutil.copy(second.key, files.key)
    client, _ = handshake(manager.context(), client_context())
    assert "first.example" in peer_subject(client)  # not before reload
    assert manager.reload()
    client, _ = handshake(manager.context(), client_context())
    assert "second.example" in peer_subject(client)
    # The stable listener context (implicit TLS) follows the reload too, with and without SNI.
    assert manager.listener_context() is front
    client, _ = handshake(front, client_context())
    assert "second.example" in peer_subject(client)
    client, _ = handshake(front, client_context(), server_hostname="anything.example")
    assert "second.example" in peer_subject(client)


def test_failed_reload_keeps_the_running_certificate(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    files = make_cert(tmp_path, "kept.example")
    manager = TlsManager(files)
    files.key.write_text("-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n")
    assert not manager.reload()
    assert "keeping the current certificate" in caplog.text
    client, _ = handshake(manager.context(), client_context())
    assert "kept.example" in peer_subject(client)
    other = make_cert(tmp_path / "o", "other.example")
    assert manager.reload(other)  # a config change pointing at new files
    assert manager.files == other


def test_mismatched_or_missing_files_name_the_file(tmp_path: Path) -> None:
    a = make_cert(tmp_path, "a.example")
    b = make_cert(tmp_path, "b.example")
    with pytest.raises(TlsError, match="a.example.crt"):
        server_context(TlsFiles(a.cert, b.key))
    with pytest.raises(TlsError, match="no such file"):
        server_context(TlsFiles(tmp_path / "nope.crt", a.key))
    with pytest.raises(TlsError, match="together"):
        resolve_files(a.cert, None, "localhost", tmp_path)
    assert resolve_files(a.cert, a.key, "localhost", tmp_path) == a
    manager = TlsManager.from_config(None, None, "localhost", tmp_path / "data")
    assert manager.files.self_signed


def test_missing_openssl_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TlsError, match="running"):
        ensure_self_signed("localhost", tmp_path, openssl=str(tmp_path / "no-openssl"))
    assert not list((tmp_path / "tls").iterdir())
