"""TLS for every listener and for the relay client: contexts, certificates, reload.

What lives here: building the server ``ssl.SSLContext`` from the ``[tls] cert`` / ``key`` PEM
files, generating a self-signed development certificate when none is configured, the
``TlsManager`` that reloads certificates on SIGHUP, ``tls_info`` for ``Received:`` and the log,
and the relay client's contexts.

Rules:
1. TLS 1.2 or newer, both ways (RFC 8996 deprecates TLS 1.0 and 1.1; RFC 8314 §4.1). TLS
   compression is off (CRIME) and renegotiation is refused. Ciphers are OpenSSL's defaults
   for the version, which exclude anonymous and export suites.
2. ``[tls] cert`` is a PEM file holding the certificate followed by its chain; ``[tls] key`` the
   private key (PEM, unencrypted). Both or neither: with neither, a self-signed certificate for
   ``hostname`` is generated once into ``data_dir/tls/`` (``selfsigned.crt``/``selfsigned.key``,
   the key with mode 0600) and reused at every later start; a WARNING says so, since remote
   clients will not trust it.
3. The certificate is generated with the ``openssl`` command (``req -x509``), not with the
   ``cryptography`` package: the command is on every system that has the OpenSSL library
   Python's ``ssl`` already links against, so Pigeon gains no runtime dependency (DESIGN.md:
   keep the runtime dependencies few). Files are written under temporary names, checked
   (not empty, and they load as a matching pair: ``openssl`` on a full disk may exit 0 having
   written nothing), fsynced, and renamed, key first; then the directory is fsynced. So a
   crash or a full disk never leaves an empty or half-written certificate in place. The files'
   fsyncs: their bytes are on disk before the names point at them; the directory's: the new
   pair is what the next start finds (the fsyncs go through ``durable.io``).
4. ``TlsManager.context()`` is the context for *new* connections. ``reload()`` reads the files
   again; when they cannot be loaded, the previous context stays in use and the error is
   logged (a broken renewal must not take TLS down). Sessions already under way keep theirs.
5. ``TlsManager.listener_context()`` is one stable context, for listeners that must be given a
   context once (implicit TLS on 465/993/995: ``asyncio.start_server(ssl=...)``). During each
   handshake its ``sni_callback`` switches the connection to the current context, so a reload
   reaches implicit-TLS listeners too. OpenSSL calls it with or without SNI.
6. The relay client does not verify certificates by default (opportunistic TLS, RFC 7435 §1:
   an unauthenticated encrypted channel beats plaintext, and most MX certificates would fail
   verification); ``client_context(verify=True)`` checks the chain and the host name (for
   MTA-STS/DANE policies and smarthosts).
7. A start (or reload) that finds a self-signed pair that does not load (empty, truncated, a
   key that does not match, one of the two missing) makes a new one; one that cannot be made
   leaves the old files as they were and is a ``TlsError``.
8. ACME tls-alpn-01 (RFC 8737): ``AlpnChallenges`` holds, per DNS name, a context serving
   that name's challenge certificate with ALPN ``acme-tls/1`` only (§3, §4: the validation
   handshake negotiates that protocol). ``https_context(challenges)`` is the https listener's
   stable context: a handshake whose SNI names a pending challenge is switched to it, every
   other one to the current context. Python's ``ssl`` runs the SNI callback before ALPN and
   does not show the client's offer, so an ordinary client asking for that name in the seconds
   a validation is pending gets the challenge certificate too; only the https listener does
   this, never the mail listeners.

What can go wrong: ``TlsError`` (a ``ValueError``) names the file and the reason when a
certificate or key cannot be read or do not match, or when ``openssl`` is missing or fails.
"""

from __future__ import annotations

import logging
import os
import shutil
import ssl
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from pigeon.durable.io import REAL, fsync_path

log = logging.getLogger(__name__)

SELF_SIGNED_CERT = "selfsigned.crt"
SELF_SIGNED_KEY = "selfsigned.key"
TLS_DIR = "tls"  # under data_dir

# Ten years: a development certificate nobody verifies; renewing it would only break pinned
# test clients. Operators of real servers configure [tls] cert/key (e.g. from Let's Encrypt).
SELF_SIGNED_DAYS = 3650
# RSA 2048 is what every TLS 1.2 client accepts (NIST SP 800-57: 112-bit strength, fine to 2030);
# generation takes well under a second.
SELF_SIGNED_KEY_SPEC = "rsa:2048"
# How long generating the certificate may take before we give up (RSA 2048 needs < 1 s).
OPENSSL_TIMEOUT_SECONDS = 60.0
# RFC 5280 §4.1.2.4 / X.520 ub-common-name: a Common Name is at most 64 characters.
MAX_COMMON_NAME = 64


class TlsError(ValueError):
    """A certificate or key cannot be used; the message names the file."""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """Where the certificate chain and the private key are (PEM)."""

    cert: Path
    key: Path
    self_signed: bool = False


def _harden(ctx: ssl.SSLContext) -> ssl.SSLContext:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # rule 1
    ctx.options |= ssl.OP_NO_COMPRESSION
    ctx.options |= ssl.OP_NO_RENEGOTIATION
    return ctx


def server_context(files: TlsFiles) -> ssl.SSLContext:
    """A server context loaded from ``files``; raises TlsError naming the file."""
    for path in (files.cert, files.key):
        if not path.is_file():
            raise TlsError(f"{path}: no such file")
    ctx = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    try:
        ctx.load_cert_chain(str(files.cert), str(files.key))
    except ssl.SSLError as exc:
        raise TlsError(
            f"{files.cert} / {files.key}: cannot load the certificate and key: {exc.reason or exc}"
        ) from None
    except OSError as exc:
        raise TlsError(f"{files.cert} / {files.key}: cannot read: {exc.strerror or exc}") from None
    return ctx


def client_context(verify: bool = False, cafile: Path | None = None) -> ssl.SSLContext:
    """The relay client's context (rule 6): no verification unless ``verify``."""
    ctx = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    if verify:
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
        if cafile is not None:
            ctx.load_verify_locations(cafile=str(cafile))
        else:
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        ctx.check_hostname = False  # must be cleared before verify_mode can be CERT_NONE
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def no_verify_context() -> ssl.SSLContext:
    """Opportunistic TLS between MX hosts (rule 6): encrypt, do not verify (RFC 7435 §1.3).
    Python's default client context with verification off."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def tls_info(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> str | None:
    """``"TLSv1.3 TLS_AES_256_GCM_SHA384"``: the version and cipher of a finished handshake,
    in the form ``ClientInfo.tls`` holds (cleanup renders it as ``(using V with cipher C)``).
    None when there is no TLS."""
    if ssl_object is None:
        return None
    version = ssl_object.version() or "TLS"
    cipher = ssl_object.cipher()
    return f"{version} {cipher[0]}" if cipher else version


def ensure_self_signed(hostname: str, data_dir: Path, openssl: str | None = None) -> TlsFiles:
    """The development certificate for ``hostname`` in ``data_dir/tls/`` (rule 2), generated
    with ``openssl`` on first use (rule 3). Raises TlsError when it cannot be made."""
    directory = data_dir / TLS_DIR
    files = TlsFiles(directory / SELF_SIGNED_CERT, directory / SELF_SIGNED_KEY, self_signed=True)
    if files.cert.exists() or files.key.exists():
        try:
            server_context(files)
            return files
        except TlsError as exc:  # rule 7
            log.warning("tls: the self-signed certificate cannot be used (%s); making a new one", exc)
    exe = openssl or shutil.which("openssl")
    if exe is None:
        raise TlsError(
            "no [tls] cert/key configured and the openssl command is not installed to make a "
            "self-signed certificate; install openssl or set [tls] cert and key"
        )
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise TlsError(f"{directory}: cannot create: {exc.strerror or exc}") from None
    tmp_cert = directory / f".{SELF_SIGNED_CERT}.{os.getpid()}.tmp"
    tmp_key = directory / f".{SELF_SIGNED_KEY}.{os.getpid()}.tmp"
    name = hostname.strip().rstrip(".") or "localhost"
    san = f"IP:{name}" if _is_ip(name) else f"DNS:{name}"
    cmd = [
        exe, "req", "-x509", "-newkey", SELF_SIGNED_KEY_SPEC, "-nodes", "-sha256",
        "-days", str(SELF_SIGNED_DAYS), "-subj", f"/CN={name[:MAX_COMMON_NAME]}",
        "-addext", f"subjectAltName={san}",
        "-keyout", str(tmp_key), "-out", str(tmp_cert),
    ]  # fmt: skip
    old_umask = os.umask(0o077)  # the key is private from its first byte
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=OPENSSL_TIMEOUT_SECONDS, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        _remove(tmp_cert, tmp_key)
        raise TlsError(f"running {exe}: {exc}") from None
    finally:
        os.umask(old_umask)
    if proc.returncode != 0:
        _remove(tmp_cert, tmp_key)
        detail = proc.stderr.strip().splitlines()[-1:] or ["no message"]
        raise TlsError(f"{exe} req failed (exit {proc.returncode}): {detail[0]}")
    try:
        _check_written(TlsFiles(tmp_cert, tmp_key))  # rule 3
        os.chmod(tmp_key, 0o600)
        for path in (tmp_key, tmp_cert):
            fsync_path(path, REAL)  # rule 3
        REAL.rename(tmp_key, files.key)  # key first: a cert without its key is never left alone
        REAL.rename(tmp_cert, files.cert)
        REAL.fsync_dir(directory)  # rule 3
    except OSError as exc:
        _remove(tmp_cert, tmp_key)
        raise TlsError(f"{directory}: cannot store the self-signed certificate: {exc.strerror or exc}") from None
    except TlsError:
        _remove(tmp_cert, tmp_key)
        raise
    log.warning(
        "tls: no [tls] cert/key configured; generated a self-signed certificate for %s in %s "
        "(remote clients will not trust it; set [tls] cert and key for real use)",
        name, files.cert,
    )
    return files


def _is_ip(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _remove(*paths: Path) -> None:
    for path in paths:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("tls: could not remove %s: %s", path, exc)


def _check_written(files: TlsFiles) -> None:
    """Rule 3: what ``openssl`` wrote is a whole, matching pair (it may exit 0 on a full disk)."""
    for path in (files.cert, files.key):
        if path.stat().st_size == 0:
            raise TlsError(f"{path}: openssl wrote an empty file (is the disk full?)")
    server_context(files)


class TlsManager:
    """The current server context; ``reload`` picks up renewed files (rules 4 and 5)."""

    def __init__(self, files: TlsFiles) -> None:
        self._lock = threading.Lock()
        self._files = files
        self._context = server_context(files)
        self._front: ssl.SSLContext | None = None

    @classmethod
    def from_config(
        cls, cert: Path | None, key: Path | None, hostname: str, data_dir: Path
    ) -> TlsManager:
        """From the ``[tls] cert``/``key`` settings, or the self-signed fallback (rule 2)."""
        return cls(resolve_files(cert, key, hostname, data_dir))

    @property
    def files(self) -> TlsFiles:
        return self._files

    def context(self) -> ssl.SSLContext:
        """The context for a new connection (STARTTLS: ``stream.start_tls(manager.context())``)."""
        with self._lock:
            return self._context

    def reload(self, files: TlsFiles | None = None) -> bool:
        """Read the certificate files again (or ``files``, after a config change). On failure
        the running context stays and the error is logged; returns whether it was replaced."""
        target = files or self._files
        try:
            ctx = server_context(target)
        except TlsError as exc:
            log.error("tls: reload failed, keeping the current certificate: %s", exc)
            return False
        with self._lock:
            self._context = ctx
            self._files = target
        log.info("tls: certificate reloaded from %s", target.cert)
        return True

    def listener_context(self) -> ssl.SSLContext:
        """One stable context for implicit-TLS listeners; each handshake switches to the
        current context (rule 5)."""
        with self._lock:
            if self._front is None:
                front = server_context(self._files)
                front.sni_callback = self._switch
                self._front = front
            return self._front

    def _switch(self, conn: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext) -> None:
        conn.context = self.context()

    def https_context(self, challenges: AlpnChallenges) -> ssl.SSLContext:
        """Rule 8: the https listener's stable context, answering tls-alpn-01 validations."""
        front = server_context(self.files)

        def switch(conn: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext) -> None:
            conn.context = challenges.get(server_name) or self.context()

        front.sni_callback = switch
        return front


ACME_TLS_ALPN = "acme-tls/1"  # RFC 8737 §6.2: the ALPN protocol ID of the validation


class AlpnChallenges:
    """Rule 8: DNS name → the context of its pending tls-alpn-01 certificate. ``put`` and
    ``remove`` run in the ACME thread, ``get`` in the SNI callback: a lock between them."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory  # where the PEM files are written for a moment (ssl loads files only)
        self._lock = threading.Lock()
        self._contexts: dict[str, ssl.SSLContext] = {}

    def put(self, name: str, cert_pem: bytes, key_pem: bytes) -> None:
        ctx = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
        ctx.set_alpn_protocols([ACME_TLS_ALPN])
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        stem = self.directory / f"{name}.{os.getpid()}.{threading.get_ident()}"
        cert, key = stem.with_suffix(".crt"), stem.with_suffix(".key")
        try:
            for path, data in ((cert, cert_pem), (key, key_pem)):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
            ctx.load_cert_chain(str(cert), str(key))
        finally:
            _remove(cert, key)
        with self._lock:
            self._contexts[name.lower()] = ctx

    def remove(self, name: str) -> None:
        with self._lock:
            self._contexts.pop(name.lower(), None)

    def get(self, name: str | None) -> ssl.SSLContext | None:
        if not name:
            return None
        with self._lock:
            return self._contexts.get(name.lower().rstrip("."))


def resolve_files(cert: Path | None, key: Path | None, hostname: str, data_dir: Path) -> TlsFiles:
    """Both configured: those files. Neither: the self-signed certificate. One: TlsError."""
    if cert is not None and key is not None:
        return TlsFiles(cert, key)
    if cert is not None or key is not None:
        raise TlsError("[tls] cert and key must be set together")
    return ensure_self_signed(hostname, data_dir)
