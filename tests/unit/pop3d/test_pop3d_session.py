"""POP3 sessions over a real loopback socket, driven by Python's poplib and a raw line client.

The server is the real ``net.listener.Listener`` with ``Pop3SessionFactory``, the real
``Authenticator`` and throttle; the store is the in-memory stand-in from ``fakes``.
"""

from __future__ import annotations

import base64
import poplib
import time

import pytest

from pigeon.auth.throttle import ThrottleSettings
from pigeon.pop3d import MaildropLocks, Pop3SessionFactory, Pop3Settings
from tests.unit.pop3d.fakes import PASSWORD, FakeStore, RawClient, ServerThread, message

ALICE = "alice@example.test"


def store_with(n: int, key: str = ALICE) -> FakeStore:
    store = FakeStore()
    folder = store.folder(key)
    for i in range(1, n + 1):
        folder.deliver(message(i))
    return store


def pop(server: ServerThread) -> poplib.POP3:
    return poplib.POP3("127.0.0.1", server.port, timeout=10)


def logged_in(server: ServerThread, user: str = ALICE) -> poplib.POP3:
    client = pop(server)
    client.user(user)
    client.pass_(PASSWORD)
    return client


def test_greeting_capa_before_login() -> None:
    with ServerThread(FakeStore()) as server:
        client = pop(server)
        try:
            assert client.getwelcome().startswith(b"+OK pop.example.test Pigeon POP3 server ready")
            caps = client.capa()
            for name in ("TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "USER"):
                assert name in caps
            assert caps["SASL"] == ["PLAIN", "LOGIN"]  # loopback plaintext allowed in this server
            assert "STLS" not in caps  # no TLS configured
        finally:
            client.quit()


def test_stat_list_retr_top_uidl() -> None:
    store = store_with(3)
    store.folder(ALICE).deliver(b"Subject: dots\r\n\r\n.starts with dot\r\n..two\r\n.\r\nend\r\n")
    with ServerThread(store) as server:
        client = logged_in(server)
        try:
            sizes = [len(m) for m in store.folder(ALICE).messages.values()]
            assert client.stat() == (4, sum(sizes))
            resp, listing, _ = client.list()
            assert resp.startswith(b"+OK 4 messages")
            assert listing == [f"{i + 1} {s}".encode() for i, s in enumerate(sizes)]
            assert client.list(2) == f"+OK 2 {sizes[1]}".encode()
            resp, lines, octets = client.retr(1)
            assert b"\r\n".join(lines) + b"\r\n" == message(1)
            # dot-stuffing round-trips through poplib's un-stuffing
            _, lines, _ = client.retr(4)
            assert lines == [b"Subject: dots", b"", b".starts with dot", b"..two", b".", b"end"]
            _, lines, _ = client.top(2, 1)
            assert lines == [b"From: sender@example.org", b"To: alice@example.test", b"Subject: message 2", b"",
                             b"line 0 of message 2"]
            _, lines, _ = client.top(2, 0)
            assert lines[-1] == b""
            _, uids, _ = client.uidl()
            assert uids == [b"1 1234.1", b"2 1234.2", b"3 1234.3", b"4 1234.4"]
            assert client.uidl(3) == b"+OK 3 1234.3"
            assert client.noop() == b"+OK"
        finally:
            client.quit()


def test_read_ahead_serves_the_next_retr_once() -> None:
    """Session rule 9: RETR n reads n+1 ahead; each message is read once, in order, and a
    read-ahead of a message deleted or skipped meanwhile is never sent."""
    store = store_with(5)
    folder = store.folder(ALICE)
    with ServerThread(store) as server:
        client = logged_in(server)
        try:
            for n in (1, 2, 3):
                _, lines, _ = client.retr(n)
                assert b"\r\n".join(lines) + b"\r\n" == message(n)
            assert folder.reads[:3] == [1, 2, 3]
            client.dele(4)  # read ahead after RETR 3, then deleted: RETR 4 must fail
            with pytest.raises(poplib.error_proto, match="deleted"):
                client.retr(4)
            _, lines, _ = client.retr(5)  # not the read-ahead's message: read afresh
            assert b"\r\n".join(lines) + b"\r\n" == message(5)
            _, lines, _ = client.retr(1)  # again, out of order
            assert b"\r\n".join(lines) + b"\r\n" == message(1)
        finally:
            client.quit()
    # 2, 3 and 4 were read ahead, once each; 5 has no successor; RETR 1 again reads 2 ahead.
    assert folder.reads == [1, 2, 3, 4, 5, 1, 2]


def test_errors_for_bad_message_numbers() -> None:
    with ServerThread(store_with(2)) as server:
        client = logged_in(server)
        try:
            for call in (lambda: client.retr(3), lambda: client.list(0), lambda: client.dele(9),
                         lambda: client.top(5, 1), lambda: client.uidl(3)):
                with pytest.raises(poplib.error_proto, match="No such message"):
                    call()
            client.dele(1)
            for call in (lambda: client.retr(1), lambda: client.dele(1), lambda: client.list(1)):
                with pytest.raises(poplib.error_proto, match="already deleted"):
                    call()
        finally:
            client.quit()


def test_deletions_only_at_quit_and_rset() -> None:
    store = store_with(4)
    folder = store.folder(ALICE)
    with ServerThread(store) as server:
        client = logged_in(server)
        client.dele(1)
        client.dele(3)
        assert client.stat()[0] == 2
        _, uids, _ = client.uidl()
        assert uids == [b"2 1234.2", b"4 1234.4"]  # deleted ones vanish from listings; numbers stay
        client.rset()
        assert client.stat()[0] == 4
        client.dele(2)
        client.retr(4)
        assert len(folder.messages) == 4  # nothing removed before QUIT
        assert client.quit().startswith(b"+OK pop.example.test POP3 server signing off (3 messages left)")
        assert sorted(folder.messages) == [1, 3, 4]
        assert folder.flags[4] == frozenset({"\\Seen"})  # retrieved and kept
        assert folder.flags[1] == frozenset()
        assert all(box.closed for box in store.opened)


def test_dropped_connection_deletes_nothing() -> None:
    store = store_with(2)
    with ServerThread(store) as server:
        client = logged_in(server)
        client.dele(1)
        client.dele(2)
        client.close()  # no QUIT: no UPDATE state (RFC 1939 §6)
        # the lock is released once the server noticed the close: a new session works
        deadline = time.monotonic() + 5
        while True:
            try:
                again = logged_in(server)
                break
            except poplib.error_proto:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert again.stat()[0] == 2
        again.quit()
    assert sorted(store.folder(ALICE).messages) == [1, 2]


def test_snapshot_is_fixed_and_uidl_stable_across_sessions() -> None:
    store = store_with(2)
    folder = store.folder(ALICE)
    with ServerThread(store) as server:
        client = logged_in(server)
        _, first, _ = client.uidl()
        folder.deliver(message(3))  # arrives during the session
        assert client.stat()[0] == 2
        folder.messages.pop(2)  # an IMAP client expunges message 2 meanwhile
        with pytest.raises(poplib.error_proto, match="removed by another session"):
            client.retr(2)
        client.dele(1)
        client.quit()
        client = logged_in(server)
        _, second, _ = client.uidl()
        assert second == [b"1 1234.3"]  # the unique id did not change with the number
        assert first[0] == b"1 1234.1"
        client.quit()


def test_in_use_lock_and_release() -> None:
    store = store_with(1)
    with ServerThread(store) as server:
        first = logged_in(server)
        second = pop(server)
        second.user(ALICE)
        with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
            second.pass_(PASSWORD)
        # still in AUTHORIZATION: another user may log in on the same connection
        second.user("bob@example.test")
        assert second.pass_(PASSWORD).startswith(b"+OK")
        second.quit()
        first.quit()
        third = logged_in(server)  # released at QUIT
        third.quit()


def test_wrong_password_is_auth_code_and_throttle_closes() -> None:
    throttle = ThrottleSettings(failure_delay=0.0, max_failure_delay=0.0, account_ip_max_failures=2)
    with ServerThread(store_with(1), throttle=throttle) as server:
        client = pop(server)
        client.user(ALICE)
        with pytest.raises(poplib.error_proto, match=r"-ERR \[AUTH\] Authentication failed"):
            client.pass_("wrong")
        client.user(ALICE)
        with pytest.raises(poplib.error_proto, match=r"\[SYS/TEMP\] Too many authentication failures"):
            client.pass_("wrong")
        assert client.file.read() == b""  # closed
        client.close()
        client = pop(server)
        client.user(ALICE)
        with pytest.raises(poplib.error_proto, match=r"\[SYS/TEMP\]"):
            client.pass_(PASSWORD)  # blocked: the right password is not even tried
        client.close()


def test_plaintext_refused_off_loopback_policy() -> None:
    with ServerThread(store_with(1), allow_plaintext_on_loopback=False) as server:
        client = pop(server)
        try:
            caps = client.capa()
            assert "USER" not in caps and "SASL" not in caps
            with pytest.raises(poplib.error_proto, match="disallowed before STLS"):
                client.user(ALICE)
            with pytest.raises(poplib.error_proto, match="STLS must follow|PASS must follow"):
                client.pass_(PASSWORD)
            with RawClient(server.port) as raw:
                raw.line()
                assert raw.cmd("AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABw").startswith(b"-ERR Plaintext")
                assert raw.cmd("STLS") == b"-ERR STLS not available\r\n"
                assert raw.cmd("QUIT").startswith(b"+OK")
        finally:
            client.quit()


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_auth_plain_and_login() -> None:
    with ServerThread(store_with(2)) as server:
        with RawClient(server.port) as raw:
            raw.line()
            assert raw.cmd("AUTH") == b"+OK Mechanisms follow\r\n"
            assert raw.multiline() == [b"PLAIN\r\n", b"LOGIN\r\n"]
            assert raw.cmd("AUTH PLAIN " + b64(f"\0{ALICE}\0{PASSWORD}")).startswith(b"+OK Logged in, maildrop has 2")
            assert raw.cmd("STAT") == b"+OK 2 " + str(2 * len(message(1))).encode() + b"\r\n"
            assert raw.cmd("QUIT").startswith(b"+OK")
        with RawClient(server.port) as raw:
            raw.line()
            assert raw.cmd("AUTH PLAIN") == b"+ \r\n"
            assert raw.cmd(b64(f"\0bob@example.test\0{PASSWORD}")).startswith(b"+OK Logged in")
            raw.cmd("QUIT")
        with RawClient(server.port) as raw:
            raw.line()
            assert raw.cmd("AUTH LOGIN") == b"+ " + b64("Username:").encode() + b"\r\n"
            assert raw.cmd(b64(ALICE)) == b"+ " + b64("Password:").encode() + b"\r\n"
            assert raw.cmd(b64(PASSWORD)).startswith(b"+OK Logged in")
            raw.cmd("QUIT")


def test_auth_failures() -> None:
    with ServerThread(store_with(1)) as server, RawClient(server.port) as raw:
        raw.line()
        assert raw.cmd("AUTH CRAM-MD5") == b"-ERR Unrecognized authentication mechanism\r\n"
        assert raw.cmd("AUTH PLAIN") == b"+ \r\n"
        assert raw.cmd("*") == b"-ERR Authentication cancelled\r\n"
        assert raw.cmd("AUTH PLAIN") == b"+ \r\n"
        assert raw.cmd("not base64!") == b"-ERR Cannot decode the authentication response\r\n"
        assert raw.cmd("AUTH PLAIN " + b64(f"\0{ALICE}\0nope")) == b"-ERR [AUTH] Authentication failed\r\n"
        assert raw.cmd("AUTH PLAIN =") == b"-ERR Cannot decode the authentication response\r\n"
        assert raw.cmd("QUIT").startswith(b"+OK")


def test_pipelining_answers_in_order() -> None:
    with ServerThread(store_with(3)) as server, RawClient(server.port) as raw:
        raw.line()
        raw.send(f"USER {ALICE}\r\nPASS {PASSWORD}\r\nSTAT\r\nRETR 1\r\nDELE 2\r\nLIST\r\nQUIT\r\n".encode())
        assert raw.line() == b"+OK Send your password\r\n"
        assert raw.line().startswith(b"+OK Logged in")
        assert raw.line().startswith(b"+OK 3 ")
        assert raw.line().startswith(b"+OK ")
        assert b"".join(raw.multiline()) == message(1)
        assert raw.line() == b"+OK Message 2 deleted\r\n"
        assert raw.line().startswith(b"+OK 2 messages")
        assert [x.split()[0] for x in raw.multiline()] == [b"1", b"3"]
        assert raw.line().startswith(b"+OK pop.example.test POP3 server signing off")
        assert raw.closed()


def test_bad_commands_and_line_limit_close_the_session() -> None:
    with ServerThread(store_with(1), max_bad_commands=3) as server, RawClient(server.port) as raw:
        raw.line()
        assert raw.cmd("HELO") == b"-ERR Unknown command\r\n"
        assert raw.cmd("USER " + "x" * 300) == b"-ERR Line too long\r\n"
        assert raw.cmd("STAT") == b"-ERR Command not valid in this state\r\n"
        assert raw.line() == b"-ERR Too many bad commands, closing connection\r\n"
        assert raw.closed()


def test_store_failures_are_sys_temp() -> None:
    store = store_with(1)
    store.fail_select = True
    with ServerThread(store) as server:
        client = pop(server)
        client.user(ALICE)
        with pytest.raises(poplib.error_proto, match=r"\[SYS/TEMP\]"):
            client.pass_(PASSWORD)
        store.fail_select = False
        store.fail_read = True
        client.user(ALICE)  # the lock was released after the failure
        client.pass_(PASSWORD)
        with pytest.raises(poplib.error_proto, match=r"\[SYS/TEMP\]"):
            client.retr(1)
        client.quit()


def test_autologout_closes_silently_without_update() -> None:
    store = store_with(2)
    with ServerThread(store, idle_timeout=0.3) as server:
        client = logged_in(server)
        client.dele(1)
        # RFC 1939 §3: no response, no UPDATE state, just the close
        assert client.file.readline() == b""
        client.close()
        again = logged_in(server)  # the lock was released
        assert again.stat()[0] == 2
        again.quit()


def test_shutdown_says_goodbye_without_update() -> None:
    store = store_with(2)
    server = ServerThread(store)
    with server:
        client = logged_in(server)
        client.dele(1)
    # the server stopped: the idle session got a -ERR and the deletion was not applied
    assert client.file.readline() == b"-ERR [SYS/TEMP] Server shutting down\r\n"
    client.close()
    assert sorted(store.folder(ALICE).messages) == [1, 2]


def test_factory_validation() -> None:
    server = ServerThread(FakeStore())
    with pytest.raises(ValueError, match="idle_timeout"):
        Pop3Settings(hostname="x", idle_timeout=30).validate()
    with pytest.raises(ValueError, match="max_bad_commands"):
        Pop3Settings(hostname="x", max_bad_commands=0).validate()
    locks = MaildropLocks()
    from pigeon.auth.sasl import Authenticator
    from pigeon.auth.throttle import AuthThrottle
    from pigeon.clocks import SystemClock
    from tests.unit.pop3d.fakes import Verifier

    auth = Authenticator(Verifier({}), AuthThrottle(ThrottleSettings(), SystemClock()), SystemClock())
    with pytest.raises(ValueError, match="implicit TLS"):
        Pop3SessionFactory(FakeStore(), auth, None, True, server.settings)
    factory = Pop3SessionFactory(FakeStore(), auth, None, False, server.settings, locks=locks)
    assert factory.locks is locks and factory.service == "pop3"
    assert locks.acquire("a") and not locks.acquire("a") and locks.held("a")
    locks.release("a")
    locks.release("a")  # a no-op
    assert not locks.held("a")
