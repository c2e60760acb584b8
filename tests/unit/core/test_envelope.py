"""The envelope and its JSON form in the queue record (pigeon.core.envelope)."""

from __future__ import annotations

import json
from dataclasses import fields

import pytest

from pigeon.core.address import Address, AddressError
from pigeon.core.envelope import ClientInfo, Envelope, Recipient

ALICE = Address("alice", "example.org")
BOB = Address("bob", "example.com")


def full() -> Envelope:
    return Envelope(
        sender=ALICE,
        recipients=[
            Recipient(BOB, ("SUCCESS", "FAILURE"), "rfc822;bob@example.com"),
            Recipient(Address("jürgen", "exämple.org")),
        ],
        body="8BITMIME",
        smtputf8=True,
        ret="HDRS",
        envid="QQ314159",
        client=ClientInfo("192.0.2.7", "mail.example.org", "ESMTPSA", "alice@example.org",
                          "TLSv1.3 TLS_AES_256_GCM_SHA384"),
    )


def test_json_round_trip_through_text() -> None:  # rule 4
    env = full()
    again = Envelope.from_json(json.loads(json.dumps(env.to_json())))
    assert again == env


def test_null_sender_and_defaults() -> None:  # rule 1
    env = Envelope(None, [Recipient(BOB)])
    d = env.to_json()
    assert d["sender"] == ""  # <> in the record
    again = Envelope.from_json(d)
    assert again.sender is None and again == env
    assert env.body == "7BIT" and not env.smtputf8 and env.ret is None and env.envid is None
    assert env.client == ClientInfo("local")  # the sendmail command's client


def test_recipient_defaults_mean_not_given() -> None:  # rule 2
    r = Recipient(BOB)
    assert r.notify == () and r.orcpt is None
    assert Recipient.from_json({"address": "bob@example.com"}) == r


def test_unknown_values_fall_back_to_safe_ones() -> None:
    d = full().to_json()
    d["body"] = "QUANTUM"
    d["ret"] = "ALL"
    env = Envelope.from_json(d)
    assert env.body == "7BIT" and env.ret is None


def test_a_record_missing_optional_fields_still_loads() -> None:
    env = Envelope.from_json({"sender": "alice@example.org"})
    assert env == Envelope(ALICE)


@pytest.mark.parametrize(
    "d",
    [
        {"sender": "", "recipients": "bob@example.com"},  # recipients must be a list
        {"sender": "", "client": ["local"]},  # client must be an object
        {"sender": "", "recipients": [{"address": "bob@example.com", "notify": "NEVER"}]},
    ],
)
def test_malformed_records_raise_value_error(d: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Envelope.from_json(d)


def test_a_bad_address_in_a_record_raises_address_error() -> None:
    with pytest.raises(AddressError):
        Envelope.from_json({"sender": "not an address"})
    with pytest.raises(KeyError):
        Recipient.from_json({"notify": []})  # no address at all


def test_utf8_addresses_load_from_the_record() -> None:
    d = {"sender": "jürgen@exämple.org", "recipients": [{"address": "ü@exämple.org"}], "smtputf8": True}
    env = Envelope.from_json(d)
    assert env.sender == Address("jürgen", "exämple.org")
    assert env.recipients[0].address == Address("ü", "exämple.org")


def test_copy_keeps_every_field() -> None:
    """``Envelope.copy`` names each field: a field added later and not copied fails here."""
    env = Envelope(Address("a", "example.org"), [Recipient(Address("b", "example.net"))], "8BITMIME", True,
                   "HDRS", "envid", ClientInfo("192.0.2.1", "helo"), True, "Junk")
    copy = env.copy()
    assert copy is not env
    default = Envelope(None)
    for f in fields(Envelope):
        assert getattr(env, f.name) != getattr(default, f.name), f"give {f.name} a value in this test"
        assert getattr(copy, f.name) is getattr(env, f.name), f.name
