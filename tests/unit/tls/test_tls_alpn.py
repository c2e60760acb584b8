"""tls-alpn-01 (RFC 8737) on the https listener's context: while a validation is pending for a
name, a handshake with that SNI gets the challenge certificate with ALPN ``acme-tls/1``, whose
critical acmeIdentifier extension holds SHA-256 of the key authorization (checked here
independently, by parsing the DER); other names, and every name once the validation ended, get
the server's certificate."""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from pathlib import Path

from cryptography import x509
from josepy.jwk import JWKRSA
from cryptography.hazmat.primitives.asymmetric import rsa

from pigeon.net.tls import ACME_TLS_ALPN, AlpnChallenges, TlsManager, ensure_self_signed
from pigeon.web.acme import key_authorization, tls_alpn_certificate


async def _handshake(port: int, name: str, alpn: list[str]) -> tuple[x509.Certificate, str | None]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(alpn)
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=name)
    tls = writer.get_extra_info("ssl_object")
    der = tls.getpeercert(binary_form=True)
    selected = tls.selected_alpn_protocol()
    writer.close()
    return x509.load_der_x509_certificate(der), selected


def test_the_https_context_serves_the_challenge_certificate_only_for_a_pending_name(tmp_path: Path) -> None:
    account = JWKRSA(key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
    key_auth = key_authorization("evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA", account)
    assert key_auth.startswith("evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.") and "=" not in key_auth
    manager = TlsManager(ensure_self_signed("mx.example.test", tmp_path))
    challenges = AlpnChallenges(tmp_path / "alpn")
    challenges.put("MTA-STS.example.test", *tls_alpn_certificate("mta-sts.example.test", key_auth))
    assert not list((tmp_path / "alpn").iterdir())  # the PEM files were only for loading

    async def main() -> None:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=manager.https_context(challenges))
        port = server.sockets[0].getsockname()[1]
        try:
            cert, selected = await _handshake(port, "mta-sts.example.test", [ACME_TLS_ALPN])
            assert selected == ACME_TLS_ALPN
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            assert san.get_values_for_type(x509.DNSName) == ["mta-sts.example.test"]  # §3: only that name
            ext = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier("1.3.6.1.5.5.7.1.31"))
            assert ext.critical
            assert ext.value.value == b"\x04\x20" + hashlib.sha256(key_auth.encode()).digest()

            normal, selected = await _handshake(port, "mx.example.test", [ACME_TLS_ALPN])
            assert selected is None and normal.subject != cert.subject
            challenges.remove("mta-sts.example.test")
            after, _ = await _handshake(port, "mta-sts.example.test", ["http/1.1"])
            assert after.serial_number == normal.serial_number
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(main())
