"""Mail client autoconfiguration documents: Thunderbird autoconfig, Outlook autodiscover, an
Apple configuration profile, all made from the configured listeners.

Rules:
1. The settings come from ``[listen]`` and ``hostname`` only: IMAP is offered on ``imaps``
   (implicit TLS, RFC 8314 §3.3 prefers it) and/or ``imap`` with STARTTLS; POP3 likewise;
   outgoing mail on ``submissions`` (465, implicit TLS) and/or ``submission`` (587, STARTTLS).
   Each advertised port is the first configured endpoint's port. Plain ports without TLS are
   never advertised: a client must not be told to send a password in the clear.
2. The user name is the whole address (Pigeon's logins are addresses).
3. Documents are built with ``xml.etree.ElementTree`` and ``plistlib``: every value is escaped
   by them, never pasted into markup by hand.
4. Autodiscover requests are parsed with ElementTree (expat; Python's expat refuses external
   entities and, since 2.4.1, entity expansion bombs), at most ``MAX_AUTODISCOVER_BODY``
   octets; the address must be in a local domain or the answer is an error document.
5. The Apple profile's UUIDs are name-based (UUID v5 of the address and hostname): the same
   account always gets the same profile, so installing it again replaces it.

References: Thunderbird's autoconfig format (https://wiki.mozilla.org/Thunderbird:Autoconfiguration:ConfigFileFormat),
[MS-OXDSCLI] (POX autodiscover), Apple's Configuration Profile Reference (com.apple.mail.managed).
"""

from __future__ import annotations

import plistlib
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Literal

from pigeon.config import Config

# An autodiscover request is a few hundred octets (an address and a schema URL); 16 KiB is ample.
MAX_AUTODISCOVER_BODY = 16 * 1024
AUTODISCOVER_RESPONSE_NS = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
AUTODISCOVER_OUTLOOK_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
AUTODISCOVER_REQUEST_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
# A fixed namespace for rule 5's name-based UUIDs (uuid5 of NAMESPACE_DNS and "pigeon.mobileconfig").
PROFILE_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_DNS, "pigeon.mobileconfig")

Kind = Literal["imap", "pop3", "smtp"]
Security = Literal["SSL", "STARTTLS"]


@dataclass(frozen=True, slots=True)
class MailServer:
    kind: Kind
    host: str
    port: int
    security: Security


def mail_servers(config: Config) -> list[MailServer]:
    """Rule 1: what a client should use, best first within each kind."""
    listen = config.listen
    out: list[MailServer] = []
    for kind, implicit, starttls in (("imap", listen.imaps, listen.imap), ("pop3", listen.pop3s, listen.pop3),
                                     ("smtp", listen.submissions, listen.submission)):
        k: Kind = "imap" if kind == "imap" else "pop3" if kind == "pop3" else "smtp"
        if implicit:
            out.append(MailServer(k, config.hostname, implicit[0].port, "SSL"))
        if starttls:
            out.append(MailServer(k, config.hostname, starttls[0].port, "STARTTLS"))
    return out


def autoconfig_xml(config: Config, domain: str) -> bytes:
    """Thunderbird's ``config-v1.1.xml`` for ``domain``."""
    root = ET.Element("clientConfig", version="1.1")
    provider = ET.SubElement(root, "emailProvider", id=domain)
    ET.SubElement(provider, "domain").text = domain
    ET.SubElement(provider, "displayName").text = f"{domain} mail"
    ET.SubElement(provider, "displayShortName").text = domain
    for server in mail_servers(config):
        tag = "outgoingServer" if server.kind == "smtp" else "incomingServer"
        el = ET.SubElement(provider, tag, type=server.kind)
        ET.SubElement(el, "hostname").text = server.host
        ET.SubElement(el, "port").text = str(server.port)
        ET.SubElement(el, "socketType").text = server.security
        ET.SubElement(el, "authentication").text = "password-cleartext"  # over TLS only (rule 1)
        ET.SubElement(el, "username").text = "%EMAILADDRESS%"  # rule 2
    return bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True))


class AutodiscoverError(ValueError):
    """The request body is not an autodiscover request."""


def autodiscover_address(body: bytes) -> str:
    """Rule 4: the ``EMailAddress`` of a POX autodiscover request."""
    if len(body) > MAX_AUTODISCOVER_BODY:
        raise AutodiscoverError("request too large")
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise AutodiscoverError(f"not XML: {exc}") from None
    for el in root.iter():
        if el.tag.rsplit("}", 1)[-1] == "EMailAddress" and el.text:
            return el.text.strip()
    raise AutodiscoverError("no EMailAddress in the request")


def autodiscover_xml(config: Config, address: str) -> bytes:
    """The POX autodiscover answer ([MS-OXDSCLI] §2.2.4) for ``address``."""
    ET.register_namespace("", AUTODISCOVER_RESPONSE_NS)
    root = ET.Element(f"{{{AUTODISCOVER_RESPONSE_NS}}}Autodiscover")
    response = ET.SubElement(root, f"{{{AUTODISCOVER_OUTLOOK_NS}}}Response")
    account = ET.SubElement(response, f"{{{AUTODISCOVER_OUTLOOK_NS}}}Account")

    def sub(parent: ET.Element, tag: str, text: str | None = None) -> ET.Element:
        el = ET.SubElement(parent, f"{{{AUTODISCOVER_OUTLOOK_NS}}}{tag}")
        if text is not None:
            el.text = text
        return el

    sub(account, "AccountType", "email")
    sub(account, "Action", "settings")
    for server in mail_servers(config):
        proto = sub(account, "Protocol")
        sub(proto, "Type", server.kind.upper())
        sub(proto, "Server", server.host)
        sub(proto, "Port", str(server.port))
        sub(proto, "LoginName", address)
        sub(proto, "DomainRequired", "off")
        sub(proto, "SPA", "off")
        sub(proto, "SSL", "on")
        sub(proto, "Encryption", "SSL" if server.security == "SSL" else "TLS")
        sub(proto, "AuthRequired", "on")
    return bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True))


def autodiscover_error_xml(message: str) -> bytes:
    ET.register_namespace("", AUTODISCOVER_RESPONSE_NS)
    root = ET.Element(f"{{{AUTODISCOVER_RESPONSE_NS}}}Autodiscover")
    response = ET.SubElement(root, f"{{{AUTODISCOVER_RESPONSE_NS}}}Response")
    error = ET.SubElement(response, f"{{{AUTODISCOVER_RESPONSE_NS}}}Error")
    ET.SubElement(error, f"{{{AUTODISCOVER_RESPONSE_NS}}}ErrorCode").text = "600"  # "Invalid Request"
    ET.SubElement(error, f"{{{AUTODISCOVER_RESPONSE_NS}}}Message").text = message
    return bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True))


def mobileconfig(config: Config, address: str) -> bytes:
    """An Apple configuration profile (XML plist) with one mail account for ``address``."""
    servers = mail_servers(config)
    incoming = next((s for s in servers if s.kind == "imap"), None) or next((s for s in servers if s.kind == "pop3"), None)
    outgoing = next((s for s in servers if s.kind == "smtp"), None)
    account: dict[str, object] = {
        "PayloadType": "com.apple.mail.managed",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{_reverse(config.hostname)}.pigeon.mail.{address}",
        "PayloadUUID": str(uuid.uuid5(PROFILE_NAMESPACE, f"account:{address}:{config.hostname}")).upper(),
        "PayloadDisplayName": f"Mail ({address})",
        "EmailAccountDescription": address,
        "EmailAccountName": address,
        "EmailAddress": address,
    }
    if incoming is not None:
        account.update({
            "EmailAccountType": "EmailTypeIMAP" if incoming.kind == "imap" else "EmailTypePOP",
            "IncomingMailServerHostName": incoming.host,
            "IncomingMailServerPortNumber": incoming.port,
            "IncomingMailServerUseSSL": True,
            "IncomingMailServerUsername": address,
            "IncomingMailServerAuthentication": "EmailAuthPassword",
        })
    if outgoing is not None:
        account.update({
            "OutgoingMailServerHostName": outgoing.host,
            "OutgoingMailServerPortNumber": outgoing.port,
            "OutgoingMailServerUseSSL": True,
            "OutgoingMailServerUsername": address,
            "OutgoingMailServerAuthentication": "EmailAuthPassword",
            "OutgoingPasswordSameAsIncomingPassword": True,
        })
    profile = {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{_reverse(config.hostname)}.pigeon.{address}",
        "PayloadUUID": str(uuid.uuid5(PROFILE_NAMESPACE, f"profile:{address}:{config.hostname}")).upper(),
        "PayloadDisplayName": f"{address} on {config.hostname}",
        "PayloadContent": [account],
    }
    return plistlib.dumps(profile, fmt=plistlib.FMT_XML)


def _reverse(hostname: str) -> str:
    return ".".join(reversed(hostname.split(".")))
