"""The envelope: what delivery follows (never the To:/Cc: headers).

Rules:
1. ``sender`` is ``None`` for the null reverse path ``<>`` (bounces, RFC 5321 §4.5.5).
2. Each recipient keeps the DSN parameters given at RCPT (RFC 3461 §4.1 NOTIFY, §4.2 ORCPT);
   the message keeps RET and ENVID (RFC 3461 §4.3, §4.4) for the bounce stage.
3. ``body`` is the declared BODY= type (7BIT, 8BITMIME, BINARYMIME); ``smtputf8`` is set when
   the client asked for SMTPUTF8 (RFC 6531 §3.4).
4. Values are plain data, serialisable to JSON by ``to_json``/``from_json`` (the queue record).
5. ``requiretls`` is set when the client gave ``REQUIRETLS`` on MAIL FROM (RFC 8689 §3): the
   message may only leave over TLS to an authenticated host. It is written to the queue
   record only when set, so older records read as False.
6. ``folder`` names the mailbox folder local delivery files the message into instead of
   INBOX: ``"Junk"`` for mail the inbound checks quarantined (DMARC ``p=quarantine``, a
   milter's verdict); ``None`` (absent from the JSON) for INBOX.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pigeon.core.address import Address, parse_address

JUNK = "Junk"  # rule 6: the only folder the inbound checks choose (RFC 6154 \\Junk)
BodyType = Literal["7BIT", "8BITMIME", "BINARYMIME"]
Notify = Literal["NEVER", "SUCCESS", "FAILURE", "DELAY"]


@dataclass(frozen=True, slots=True)
class Recipient:
    address: Address
    notify: tuple[str, ...] = ()  # empty: not given (default FAILURE,DELAY per RFC 3461 §4.1)
    orcpt: str | None = None  # "rfc822;addr" as given, xtext-decoded

    def to_json(self) -> dict[str, object]:
        return {"address": str(self.address), "notify": list(self.notify), "orcpt": self.orcpt}

    @staticmethod
    def from_json(d: dict[str, object]) -> Recipient:
        notify = d.get("notify") or []
        if not isinstance(notify, list):
            raise ValueError("recipient notify must be a list")
        orcpt = d.get("orcpt")
        return Recipient(
            parse_address(str(d["address"]), utf8=True),
            tuple(str(n) for n in notify),
            str(orcpt) if orcpt is not None else None,
        )


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """Who handed us the message: for Received:, the log and policy."""

    address: str  # peer IP ("127.0.0.1", "::1"), or "local" for the sendmail command
    helo: str = ""
    protocol: str = "ESMTP"  # SMTP, ESMTP, ESMTPS, ESMTPA, ESMTPSA, LMTP, local
    authenticated_as: str | None = None
    tls: str | None = None  # "TLSv1.3 TLS_AES_256_GCM_SHA384" when the session was encrypted


@dataclass(slots=True)
class Envelope:
    sender: Address | None
    recipients: list[Recipient] = field(default_factory=list)
    body: BodyType = "7BIT"
    smtputf8: bool = False
    ret: Literal["FULL", "HDRS"] | None = None
    envid: str | None = None
    client: ClientInfo = field(default_factory=lambda: ClientInfo("local"))
    requiretls: bool = False  # rule 5
    folder: str | None = None  # rule 6

    def copy(self) -> Envelope:
        """A shallow copy (the same recipients list): ``dataclasses.replace`` without its
        per-field work, for a copy made on every message's path (``cleanup.intake``). Every
        field is named here (tests/unit/core/test_envelope.py checks that none is missed)."""
        return Envelope(self.sender, self.recipients, self.body, self.smtputf8, self.ret, self.envid,
                        self.client, self.requiretls, self.folder)

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "sender": str(self.sender) if self.sender is not None else "",
            "recipients": [r.to_json() for r in self.recipients],
            "body": self.body,
            "smtputf8": self.smtputf8,
            "ret": self.ret,
            "envid": self.envid,
            "client": {
                "address": self.client.address,
                "helo": self.client.helo,
                "protocol": self.client.protocol,
                "authenticated_as": self.client.authenticated_as,
                "tls": self.client.tls,
            },
        }
        if self.requiretls:
            out["requiretls"] = True
        if self.folder is not None:
            out["folder"] = self.folder
        return out

    @staticmethod
    def from_json(d: dict[str, object]) -> Envelope:
        sender = str(d.get("sender") or "")
        rcpts = d.get("recipients") or []
        client = d.get("client") or {}
        if not isinstance(rcpts, list) or not isinstance(client, dict):
            raise ValueError("envelope recipients must be a list and client an object")
        body = str(d.get("body") or "7BIT")
        ret = d.get("ret")
        return Envelope(
            sender=parse_address(sender, utf8=True) if sender else None,
            recipients=[Recipient.from_json(r) for r in rcpts],
            body=body if body in ("7BIT", "8BITMIME", "BINARYMIME") else "7BIT",  # type: ignore[arg-type]
            smtputf8=bool(d.get("smtputf8")),
            ret=ret if ret in ("FULL", "HDRS") else None,
            envid=str(d["envid"]) if d.get("envid") is not None else None,
            client=ClientInfo(
                address=str(client.get("address", "local")),
                helo=str(client.get("helo", "")),
                protocol=str(client.get("protocol", "ESMTP")),
                authenticated_as=client.get("authenticated_as"),
                tls=client.get("tls"),
            ),
            requiretls=d.get("requiretls") is True,
            folder=JUNK if d.get("folder") == JUNK else None,
        )
