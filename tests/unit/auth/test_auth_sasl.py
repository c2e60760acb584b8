"""SASL PLAIN/LOGIN exchanges and the Authenticator over a real directory (pigeon.auth.sasl)."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from pigeon.auth.sasl import (
    AuthFailure,
    Authenticator,
    Challenge,
    Credentials,
    Failure,
    LoggedIn,
    LoginExchange,
    PlainExchange,
    account_name,
    plaintext_allowed,
)
from pigeon.auth.throttle import AuthThrottle, ThrottleSettings
from pigeon.clocks import FakeClock
from pigeon.directory import Directory

PASSWORD = "correct horse battery"
IP = "192.0.2.10"


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


class SleeplessClock(FakeClock):
    """A FakeClock whose sleep moves time at once and remembers what was asked."""

    def __init__(self) -> None:
        super().__init__()
        self.slept: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(seconds)


@pytest.fixture(scope="module")
def directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Directory]:
    path = tmp_path_factory.mktemp("dir") / "directory.sqlite3"
    with Directory(path, ["example.org"], None) as d:
        d.add_user("alice@example.org", PASSWORD)
        yield d


@pytest.fixture
def clock() -> SleeplessClock:
    return SleeplessClock()


@pytest.fixture
def auth(directory: Directory, clock: SleeplessClock) -> Authenticator:
    return Authenticator(directory, AuthThrottle(ThrottleSettings(), clock), clock)


# -- the exchanges, byte for byte ------------------------------------------------------------


def test_plain_with_initial_response() -> None:
    step = PlainExchange().start(b64("\0alice@example.org\0secret"))
    assert step == Credentials("alice@example.org", "secret", "")
    step = PlainExchange().start(b64("alice@example.org\0alice@example.org\0pw"))
    assert step == Credentials("alice@example.org", "pw", "alice@example.org")


def test_plain_without_initial_response_gets_an_empty_challenge() -> None:
    ex = PlainExchange()
    step = ex.start(None)
    assert isinstance(step, Challenge)
    assert step.text == ""  # RFC 4954 §4: an empty challenge asks for the initial response
    assert ex.respond(b64("\0bob@example.org\0pw")) == Credentials("bob@example.org", "pw")
    with pytest.raises(ValueError):
        ex.respond(b64("\0x\0y"))


@pytest.mark.parametrize(
    ("initial", "kind"),
    [
        ("not base64!", AuthFailure.BAD_BASE64),
        ("YWJj=ZGVm", AuthFailure.BAD_BASE64),  # padding in the middle: strict decoding refuses it
        (b64("no nul at all"), AuthFailure.MALFORMED),
        (b64("\0a\0b\0c"), AuthFailure.MALFORMED),
        (b64(b"\0al\xffce\0pw"), AuthFailure.MALFORMED),  # not UTF-8 (RFC 4616 §2)
        ("", AuthFailure.MALFORMED),  # "=": an empty initial response
        ("*", AuthFailure.CANCELLED),
    ],
)
def test_plain_errors_are_failures(initial: str, kind: AuthFailure) -> None:
    assert PlainExchange().start(initial) == Failure(kind)


def test_login_two_challenges_and_cancel() -> None:
    ex = LoginExchange()
    first = ex.start(None)
    assert isinstance(first, Challenge) and first.text == "VXNlcm5hbWU6"  # "Username:"
    second = ex.respond(b64("alice@example.org"))
    assert isinstance(second, Challenge) and second.text == "UGFzc3dvcmQ6"  # "Password:"
    assert ex.respond(b64("pw")) == Credentials("alice@example.org", "pw")

    ex = LoginExchange()
    assert isinstance(ex.start(b64("alice@example.org")), Challenge)  # user as initial response
    assert ex.respond("*") == Failure(AuthFailure.CANCELLED)
    assert LoginExchange().start("@@@") == Failure(AuthFailure.BAD_BASE64)


def test_credentials_never_show_the_password() -> None:
    cred = Credentials("alice@example.org", "hunter2")
    assert "hunter2" not in repr(cred) and "hunter2" not in str(cred)


def test_plaintext_policy() -> None:
    assert plaintext_allowed(True, "198.51.100.1", False)
    assert not plaintext_allowed(False, "198.51.100.1", True)
    assert not plaintext_allowed(False, "127.0.0.1", False)
    assert plaintext_allowed(False, "127.0.0.1", True)
    assert plaintext_allowed(False, "::1", True)
    assert plaintext_allowed(False, "::ffff:127.0.0.1", True)
    assert not plaintext_allowed(False, "local", True)
    assert Authenticator.mechanisms(True) == ("PLAIN", "LOGIN")
    assert Authenticator.mechanisms(False) == ()
    assert account_name(" Alice@Example.ORG ") == "alice@example.org"


# -- the Authenticator -----------------------------------------------------------------------


def test_begin_checks_mechanism_then_security(auth: Authenticator) -> None:
    assert auth.begin("CRAM-MD5", None, secure=True, ip=IP) == (None, Failure(AuthFailure.MECHANISM))
    assert auth.begin("SCRAM-SHA-256", None, secure=True, ip=IP)[1] == Failure(AuthFailure.MECHANISM)
    assert auth.begin("PLAIN", None, secure=False, ip=IP) == (None, Failure(AuthFailure.ENCRYPTION_REQUIRED))
    exchange, step = auth.begin("login", None, secure=True, ip=IP)
    assert isinstance(exchange, LoginExchange) and isinstance(step, Challenge)


def test_good_and_bad_passwords(auth: Authenticator, clock: SleeplessClock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    good = asyncio.run(auth.verify(Credentials("Alice@Example.org", PASSWORD), IP))
    assert good == LoggedIn("alice@example.org")
    bad = asyncio.run(auth.verify(Credentials("alice@example.org", "wrong"), IP))
    assert bad == Failure(AuthFailure.BAD_CREDENTIALS) and not bad.close
    assert clock.slept == [1.0]  # the throttle's delay, before answering
    unknown = asyncio.run(auth.verify(Credentials("nobody@example.org", PASSWORD), IP))
    assert unknown == Failure(AuthFailure.BAD_CREDENTIALS)
    proxy = asyncio.run(auth.verify(Credentials("alice@example.org", PASSWORD, "bob@example.org"), IP))
    assert proxy == Failure(AuthFailure.BAD_CREDENTIALS)  # rule 4: no proxy authorization
    assert PASSWORD not in caplog.text and "wrong" not in caplog.text
    assert "failed login for alice@example.org from 192.0.2.10" in caplog.text


def test_repeated_failures_end_throttled_and_other_ips_still_log_in(auth: Authenticator) -> None:
    async def run() -> None:
        outcomes = [await auth.verify(Credentials("alice@example.org", f"guess{i}"), "198.51.100.66")
                    for i in range(5)]
        bad, throttled = Failure(AuthFailure.BAD_CREDENTIALS), Failure(AuthFailure.THROTTLED)
        assert outcomes == [bad, bad, bad, bad, throttled]
        assert throttled.close
        # Even the right password is refused from that address now, without argon2 work ...
        blocked = await auth.verify(Credentials("alice@example.org", PASSWORD), "198.51.100.66")
        assert blocked == throttled
        # ... while alice from her own address logs in.
        ok = await auth.verify(Credentials("alice@example.org", PASSWORD), IP)
        assert ok == LoggedIn("alice@example.org")

    asyncio.run(run())


def test_a_throttled_ip_is_refused_at_auth(directory: Directory, clock: SleeplessClock) -> None:
    throttle = AuthThrottle(ThrottleSettings(ip_max_failures=2), clock)
    auth = Authenticator(directory, throttle, clock)
    throttle.failure(IP, None)
    throttle.failure(IP, None)
    exchange, step = auth.begin("PLAIN", None, secure=True, ip=IP)
    assert exchange is None and isinstance(step, Failure) and step.close
    assert step == Failure(AuthFailure.THROTTLED)


def test_directory_failure_is_a_temporary_failure(clock: SleeplessClock, caplog: pytest.LogCaptureFixture,
                                                tmp_path: Path) -> None:
    directory = Directory(tmp_path / "d.sqlite3", ["example.org"], None)
    directory.close()  # every lookup now raises DirectoryError
    auth = Authenticator(directory, AuthThrottle(ThrottleSettings(), clock), clock)
    outcome = asyncio.run(auth.verify(Credentials("alice@example.org", PASSWORD), IP))
    assert outcome == Failure(AuthFailure.UNAVAILABLE) and not outcome.close
    assert "verifying the password of alice@example.org failed" in caplog.text


def test_oversized_credentials_fail_without_verifying(auth: Authenticator) -> None:
    huge = "a" * 300 + "@example.org"
    assert asyncio.run(auth.verify(Credentials(huge, PASSWORD), IP)) == Failure(AuthFailure.BAD_CREDENTIALS)
    assert asyncio.run(auth.verify(Credentials("alice@example.org", "x" * 5000), IP)) == Failure(AuthFailure.BAD_CREDENTIALS)
    assert asyncio.run(auth.verify(Credentials("alice@example.org", ""), IP)) == Failure(AuthFailure.BAD_CREDENTIALS)
