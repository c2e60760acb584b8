"""``pigeon mail``: the small user agent, sending through submission and reading over IMAP."""

from __future__ import annotations

import email
import email.policy
import subprocess
from pathlib import Path

import pytest

from tests.integration.harness import PIGEON, Server, free_port

pytestmark = pytest.mark.integration

PASSWORD = "secret-pw-123"


def mail(srv: Server, *args: str, stdin: str = "", user: str = "alice@example.test",
         extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = srv.env()
    env.update({"PIGEON_MAIL_USER": user, "PIGEON_MAIL_PASSWORD": PASSWORD, **(extra_env or {})})
    return subprocess.run([*PIGEON, "--config", str(srv.config_path), "mail", *args], input=stdin,
                          capture_output=True, text=True, env=env, timeout=60)


@pytest.fixture
def srv(tmp_path: Path) -> Server:
    s = Server(tmp_path, listen_toml=f'submissions = ["127.0.0.1:{free_port()}"]\n'
                                     f'imaps = ["127.0.0.1:{free_port()}"]')
    for u in ("alice", "bob", "carol"):
        s.add_user(f"{u}@example.test", PASSWORD)
    return s


def test_mail_send_with_cc_bcc_and_attachment(srv: Server, tmp_path: Path) -> None:
    srv.start()
    try:
        att = tmp_path / "report.csv"
        att.write_text("a,b\n1,2\n")
        res = mail(srv, "send", "-s", "Quarterly report", "-c", "bob@example.test", "-b", "carol@example.test",
                   "-a", str(att), "bob@example.test", stdin="Numbers attached.\n")
        assert res.returncode == 0, res.stderr
        for user in ("bob", "carol"):
            [raw] = srv.wait_messages(f"{user}@example.test", 1)
            m = email.message_from_bytes(raw, policy=email.policy.default)
            assert isinstance(m, email.message.EmailMessage)
            assert m["Subject"] == "Quarterly report" and m["From"] == "alice@example.test"
            assert m["Bcc"] is None  # envelope only
            body = m.get_body(preferencelist=("plain",))
            assert body is not None and body.get_content() == "Numbers attached.\n"
            [part] = list(m.iter_attachments())
            assert part.get_filename() == "report.csv" and part.get_content_type() == "text/csv"
    finally:
        srv.stop()


def test_mail_send_refused_login_is_one_clear_line(srv: Server) -> None:
    srv.start()
    try:
        res = mail(srv, "send", "-s", "x", "bob@example.test", stdin="x\n",
                   extra_env={"PIGEON_MAIL_PASSWORD": "wrong-password"})
        assert res.returncode == 1
        assert res.stderr.startswith("mail: the server refused: 535") and "Traceback" not in res.stderr
    finally:
        srv.stop()


def test_mail_without_credentials_says_how_to_set_them(srv: Server, tmp_path: Path) -> None:
    env = srv.env()
    env.pop("PIGEON_MAIL_USER", None)
    env["PIGEON_MAIL_CONFIG"] = str(tmp_path / "nope.toml")
    res = subprocess.run([*PIGEON, "--config", str(srv.config_path), "mail", "send", "bob@example.test"],
                         input="x", capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 1 and "PIGEON_MAIL_USER" in res.stderr


def test_mail_list_and_read_over_imap(srv: Server) -> None:
    srv.start()
    try:
        res = mail(srv, "send", "-s", "Lunch?", "bob@example.test", stdin="At noon, the usual place.\n")
        assert res.returncode == 0, res.stderr
        srv.wait_messages("bob@example.test", 1)
        listing = mail(srv, "list", user="bob@example.test")
        assert listing.returncode == 0, listing.stderr
        assert "alice@example.test" in listing.stdout and "Lunch?" in listing.stdout
        assert listing.stdout.lstrip().startswith("N")  # unread
        shown = mail(srv, "read", "1", user="bob@example.test")
        assert shown.returncode == 0, shown.stderr
        assert "Subject: Lunch?" in shown.stdout and "At noon, the usual place." in shown.stdout
        missing = mail(srv, "read", "7", user="bob@example.test")
        assert missing.returncode == 1 and "no message 7" in missing.stderr
        sent = mail(srv, "list", "--folder", "Sent", user="bob@example.test")
        assert sent.returncode == 0 and "No mail in Sent." in sent.stdout
    finally:
        srv.stop()
