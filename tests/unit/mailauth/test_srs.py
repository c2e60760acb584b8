"""SRS (mailauth.srs): the postsrsd/libsrs2 forms, their hashes, age and every way to forge one."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from pathlib import Path

import pytest

from pigeon.core.address import Address
from pigeon.mailauth.srs import MAX_AGE_DAYS, Srs, SrsError, is_srs, load_secret

SECRET = b"0123456789abcdef0123456789abcdef"
DAY = 86400.0
NOW = 20_000 * DAY + 3600.0  # a fixed instant (the clock is passed in)


def test_srs0_form_and_hash_as_libsrs2_computes_it() -> None:
    srs = Srs(SECRET)
    out = srs.forward(Address("User", "Origin.example"), "fwd.test", NOW)
    assert out.domain == "fwd.test"
    tag, h, tt, origin, user = out.local.split("=")
    assert (tag, origin, user) == ("SRS0", "Origin.example", "User")
    day = int(NOW // DAY) % 1024
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    assert tt == alphabet[day >> 5] + alphabet[day & 31]
    mac = hmac.new(SECRET, (tt + origin + user).lower().encode(), hashlib.sha1).digest()
    assert h == base64.b64encode(mac).decode()[:4]
    assert srs.reverse(out, NOW) == Address("User", "origin.example")  # domains fold


def test_reverse_is_case_insensitive_and_accepts_other_separators() -> None:
    srs = Srs(SECRET)
    out = srs.forward(Address("bob", "origin.example"), "fwd.test", NOW)
    lowered = Address(out.local.lower(), out.domain)
    assert srs.reverse(lowered, NOW + DAY) == Address("bob", "origin.example")
    plus = Address("SRS0+" + out.local[5:], out.domain)
    assert srs.reverse(plus, NOW) == Address("bob", "origin.example")


def test_expired_and_future_addresses_are_refused() -> None:
    srs = Srs(SECRET)
    out = srs.forward(Address("bob", "origin.example"), "fwd.test", NOW)
    assert srs.reverse(out, NOW + MAX_AGE_DAYS * DAY) == Address("bob", "origin.example")
    with pytest.raises(SrsError, match="expired"):
        srs.reverse(out, NOW + (MAX_AGE_DAYS + 1) * DAY)
    with pytest.raises(SrsError, match="expired"):
        srs.reverse(out, NOW - 2 * DAY)  # from the future: it wraps to ~1022 days old


@pytest.mark.parametrize("local", [
    "SRS0=AAAA=AB=origin.example=bob",  # wrong hash
    "SRS0=xx=origin.example=bob",  # too few fields
    "SRS0====",  # empty fields
    "SRS0=",
    "SRS1=AAAA=fwd1.test==HHHH=TT=origin.example=bob",  # wrong SRS1 hash
    "SRS1=AAAA",  # malformed SRS1
    "SRS0=ZZZZ=!!=origin.example=bob",  # bad timestamp characters
])
def test_forged_and_malformed_addresses_raise_srs_error(local: str) -> None:
    with pytest.raises(SrsError):
        Srs(SECRET).reverse(Address(local, "fwd.test"), NOW)


def test_a_hash_made_with_another_secret_does_not_verify() -> None:
    other = Srs(b"another-secret-of-sufficient-len").forward(Address("bob", "origin.example"), "fwd.test", NOW)
    with pytest.raises(SrsError, match="hash"):
        Srs(SECRET).reverse(other, NOW)


def test_bad_original_address_inside_a_valid_hash_is_refused() -> None:
    srs = Srs(SECRET)
    out = srs.forward(Address("bad local", "origin.example"), "fwd.test", NOW)  # hash over junk
    with pytest.raises(SrsError, match="bad original"):
        srs.reverse(out, NOW)


def test_srs1_for_double_forwarding_and_its_reverse() -> None:
    first = Srs(b"first-forwarder-secret-0123456789")
    second = Srs(SECRET)
    srs0 = first.forward(Address("bob", "origin.example"), "fwd1.test", NOW)
    srs1 = second.forward(srs0, "fwd2.test", NOW)
    assert srs1.domain == "fwd2.test"
    assert srs1.local.startswith("SRS1=") and "=fwd1.test==" in srs1.local
    back = second.reverse(srs1, NOW)
    assert back == srs0  # the bounce goes to the first forwarder, which decodes its SRS0
    assert first.reverse(back, NOW) == Address("bob", "origin.example")
    # Forwarded a third time: the opaque part is kept, the hash is the new forwarder's.
    third = Srs(b"third-forwarder-secret-0123456789")
    srs1b = third.forward(srs1, "fwd3.test", NOW)
    assert srs1b.local.split("=", 2)[2] == srs1.local.split("=", 2)[2]
    assert third.reverse(srs1b, NOW) == srs0


def test_is_srs() -> None:
    assert is_srs("SRS0=x") and is_srs("srs1+y") and is_srs("SRS0-z")
    assert not is_srs("srs") and not is_srs("bob") and not is_srs("SRS2=x")


def test_secret_is_made_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "srs.secret"
    first = load_secret(path)
    assert len(first) >= 32 and os.stat(path).st_mode & 0o777 == 0o600
    assert load_secret(path) == first
    path.write_bytes(b"short\n")
    with pytest.raises(ValueError):
        load_secret(path)
