"""Backup, restore, import and export on the real server (issue 19, "Backup, import, export").

- backup of a running server → wipe → restore → the same mail, flags, keywords, UIDs,
  UIDVALIDITY and queue, checked over IMAP and ``pigeon queue list``;
- ``import maildir`` of a Dovecot Maildir keeps UIDVALIDITY, UIDs, flags, keywords, subfolders;
- ``import mbox`` / ``export mbox`` round trip; ``user import`` of a Dovecot passwd-file whose
  hashes log in over IMAP and are rehashed to argon2id after the first login.
"""

from __future__ import annotations

import base64
import hashlib
import imaplib
import json
import os
import re
import shutil
import smtplib
import sqlite3
from pathlib import Path

import bcrypt
import pytest
from passlib.hash import sha512_crypt

from tests.integration.harness import Server, free_port

pytestmark = pytest.mark.integration

USER = "alice@example.test"
PW = "secret-pw-123"


def _server(tmp_path: Path) -> tuple[Server, int]:
    imap_port = free_port()
    srv = Server(tmp_path, listen_toml=f'imap = ["127.0.0.1:{imap_port}"]\n',
                 extra_toml="[auth]\nfailure_delay = 0\nallow_plaintext_on_loopback = true\n")
    return srv, imap_port


def _imap(port: int, user: str = USER, password: str = PW) -> imaplib.IMAP4:
    m = imaplib.IMAP4("127.0.0.1", port, timeout=15)
    m.login(user, password)
    return m


def _state(port: int) -> dict[str, object]:
    """What a client remembers of each folder: UIDVALIDITY, and per UID its flags and body hash."""
    m = _imap(port)
    try:
        out: dict[str, object] = {}
        for folder in ("INBOX", "Archive"):
            typ, _ = m.select(folder, readonly=True)
            assert typ == "OK"
            uidvalidity = m.untagged_responses.get("UIDVALIDITY", [b"?"])[-1]
            typ, data = m.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[])")
            assert typ == "OK"
            msgs = {}
            for item in data:
                if isinstance(item, tuple):
                    meta = item[0].decode()
                    uid = re.search(r"UID (\d+)", meta)
                    flags = re.search(r"FLAGS \(([^)]*)\)", meta)
                    assert uid and flags
                    msgs[int(uid.group(1))] = (sorted(set(flags.group(1).split()) - {"\\Recent"}),
                                               hashlib.sha256(item[1]).hexdigest())
            out[folder] = (uidvalidity, msgs)
        return out
    finally:
        m.logout()


def test_backup_of_running_server_then_restore_gives_back_everything(tmp_path: Path) -> None:
    srv, imap_port = _server(tmp_path)
    srv.add_user(USER)
    srv.cli("alias", "add", "ext@example.test", "carol@elsewhere.test")
    srv.start()
    try:
        with smtplib.SMTP("127.0.0.1", srv.smtp_port, timeout=15) as s:
            for i in range(5):
                s.sendmail("bob@remote.test", [USER], f"Subject: m{i}\r\n\r\nbody {i}\r\n".encode())
            # A message to another domain stays deferred (the test DNS answers SERVFAIL).
            s.sendmail("bob@remote.test", ["ext@example.test"], b"Subject: out\r\n\r\nqueued\r\n")
        srv.wait_messages(USER, 5)
        m = _imap(imap_port)
        m.select("INBOX")
        assert m.uid("STORE", "2", "+FLAGS", r"(\Seen \Flagged $Important)")[0] == "OK"
        assert m.uid("COPY", "3:4", "Archive")[0] == "OK"
        assert m.uid("STORE", "5", "+FLAGS", r"(\Deleted)")[0] == "OK"
        m.expunge()  # UID 5 gone: the restored INBOX must not reuse it
        m.logout()
        queued = srv.wait_queue(lambda q: len(q) == 1)
        assert len(queued) == 1
        before = _state(imap_port)

        dest = tmp_path / "backup"
        res = srv.cli("backup", str(dest))
        assert "backup written" in res.stdout
        manifest = json.loads((dest / "pigeon-backup.json").read_text())
        assert manifest["accounts"] == 1 and manifest["queue_messages"] == 1
        # The backup refuses an existing non-empty destination.
        again = srv.cli("backup", str(dest), check=False)
        assert again.returncode == 1 and "not empty" in again.stderr
        # Restore refuses while the server runs.
        busy = srv.cli("restore", str(dest), check=False)
        assert busy.returncode == 1 and "running" in busy.stderr
    finally:
        srv.stop()

    shutil.rmtree(srv.data_dir)
    res = srv.cli("restore", str(dest))
    assert "restored" in res.stdout
    srv.start()
    try:
        assert _state(imap_port) == before
        q = srv.queue_list()
        assert [r["address"] for r in q[0]["recipients"]] == ["carol@elsewhere.test"]
        assert q[0]["id"] == queued[0]["id"]
        m = _imap(imap_port)
        m.select("INBOX")
        with smtplib.SMTP("127.0.0.1", srv.smtp_port, timeout=15) as s:
            s.sendmail("bob@remote.test", [USER], b"Subject: after\r\n\r\nnew\r\n")
        srv.wait_messages(USER, 7)  # 4 in INBOX + 2 copies in Archive + the new one
        m.noop()
        typ, data = m.uid("SEARCH", "SUBJECT", "after")
        assert typ == "OK" and int(data[0].split()[-1]) > 5  # never a reused UID
        m.logout()
    finally:
        srv.stop()


def test_restore_refuses_incomplete_backup_and_moves_old_data_aside(tmp_path: Path) -> None:
    srv, _ = _server(tmp_path)
    srv.add_user(USER)
    dest = tmp_path / "backup"
    srv.cli("backup", str(dest))
    (dest / "pigeon-backup.json").rename(tmp_path / "manifest.json")
    res = srv.cli("restore", str(dest), check=False)
    assert res.returncode == 1 and "not a complete Pigeon backup" in res.stderr
    (tmp_path / "manifest.json").rename(dest / "pigeon-backup.json")
    res = srv.cli("restore", str(dest), check=False)
    assert res.returncode == 1 and "--replace" in res.stderr
    res = srv.cli("restore", "--replace", str(dest))
    aside = re.search(r"moved to (\S+)", res.stdout)
    assert aside and Path(aside.group(1)).is_dir()
    assert "alice@example.test" in srv.cli("user", "list").stdout


def _dovecot_maildir(root: Path) -> None:
    """A Maildir as Dovecot leaves it: dovecot-uidlist v3, dovecot-keywords, a subfolder."""
    for folder in (root, root / ".Lists.Python"):
        for sub in ("cur", "new", "tmp"):
            (folder / sub).mkdir(parents=True)
    (root / "dovecot-keywords").write_text("0 $Forwarded\n1 Work\n")
    files = {
        "1700000001.M1P1.old,S=40": ("2,Sa", "Subject: one\n\nfirst\n"),
        "1700000002.M2P1.old,S=41": ("2,FRb", "Subject: two\n\nsecond\n"),
        "1700000003.M3P1.old,S=40": ("2,", "Subject: three\n\nthird\n"),
    }
    uidlist = ["3 V1234567 N20 G0123456789abcdef"]
    for uid, (base, (info, text)) in zip((4, 7, 19), files.items()):
        (root / "cur" / f"{base}:{info}").write_text(text)
        uidlist.append(f"{uid} W{len(text)} :{base}")
    (root / "dovecot-uidlist").write_text("\n".join(uidlist) + "\n")
    (root / "new" / "1700000009.M9P1.old").write_text("Subject: unlisted\n\nnew mail\n")
    sub = root / ".Lists.Python"
    (sub / "cur" / "1700000005.M5P1.old:2,S").write_text("Subject: py\n\nlist mail\n")
    (sub / "dovecot-uidlist").write_text("3 V7654321 N3\n2 :1700000005.M5P1.old\n")
    os.utime(root / "cur" / "1700000001.M1P1.old,S=40:2,Sa", (1_600_000_000, 1_600_000_000))


def test_import_dovecot_maildir_keeps_uids_flags_keywords_and_folders(tmp_path: Path) -> None:
    srv, imap_port = _server(tmp_path)
    srv.add_user(USER)
    src = tmp_path / "old-maildir"
    _dovecot_maildir(src)
    res = srv.cli("import", "maildir", str(src), USER)
    assert "imported 5 messages in 2 folders" in res.stdout, res.stdout
    missing = srv.cli("import", "maildir", str(src), "nobody@example.test", check=False)
    assert missing.returncode == 1 and "no such user" in missing.stderr
    srv.start()
    try:
        m = _imap(imap_port)
        typ, _ = m.select("INBOX", readonly=True)
        assert m.untagged_responses["UIDVALIDITY"][-1] == b"1234567"
        typ, data = m.uid("FETCH", "1:*", "(FLAGS INTERNALDATE BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        seen = {}
        for item in data:
            if isinstance(item, tuple):
                meta = item[0].decode()
                uid = int(re.search(r"UID (\d+)", meta).group(1))  # type: ignore[union-attr]
                flags = set(re.search(r"FLAGS \(([^)]*)\)", meta).group(1).split())  # type: ignore[union-attr]
                flags.discard("\\Recent")
                seen[uid] = (flags, item[1].decode().strip(), meta)
        assert seen[4][0] == {"\\Seen", "$Forwarded"} and "one" in seen[4][1]
        assert "2020" in seen[4][2]  # INTERNALDATE from the file's mtime (1600000000)
        assert seen[7][0] == {"\\Flagged", "\\Answered", "Work"}
        assert seen[19][0] == set() and "three" in seen[19][1]
        assert len(seen) == 4 and max(seen) > 19  # the unlisted new/ message comes after
        typ, data = m.list()
        assert any(b'"Lists/Python"' in line or b"Lists/Python" in line for line in data)
        m.select('"Lists/Python"', readonly=True)
        assert m.untagged_responses["UIDVALIDITY"][-1] == b"7654321"
        typ, data = m.uid("SEARCH", "ALL")
        assert data[0] == b"2"
        m.logout()
    finally:
        srv.stop()
    # A second import into folders that hold mail cannot keep the UIDs, and says so.
    res = srv.cli("import", "maildir", str(src), USER)
    assert "got new UIDs" in res.stdout


def test_mbox_import_export_round_trip(tmp_path: Path) -> None:
    srv, _ = _server(tmp_path)
    srv.add_user(USER)
    mbox = tmp_path / "in.mbox"
    mbox.write_bytes(
        b"From bob@remote.test Mon Dec  7 17:43:53 2026\n"
        b"Subject: first\nStatus: RO\nX-Status: AF\n\nhello\n>From the quoted line\n\n"
        b"From carol@remote.test Tue Dec  8 09:00:00 2026\n"
        b"Subject: second\nX-Keywords: $Label1\n\nintro\nFrom here a body line\n\n"
    )
    res = srv.cli("import", "mbox", str(mbox), USER, "--folder", "Old/Mail")
    assert "imported 2 messages into Old/Mail" in res.stdout
    out = tmp_path / "out.mbox"
    srv.cli("export", "mbox", USER, "--folder", "Old/Mail", "-o", str(out))
    text = out.read_bytes()
    assert text.count(b"\nFrom ") + text.startswith(b"From ") == 2
    assert b"\n>From the quoted line\n" in text  # one level of quoting, restored on import
    assert b"\n>From here a body line\n" in text
    assert b"Status: RO" in text and b"X-Status: AF" in text and b"X-Keywords: $Label1" in text
    assert b"From bob@remote.test Mon Dec  7 17:43:53 2026\n" in text  # sender, INTERNALDATE kept
    # Re-import of the export gives the same messages.
    srv.cli("import", "mbox", str(out), USER, "--folder", "Again")
    again = tmp_path / "again.mbox"
    srv.cli("export", "mbox", USER, "--folder", "Again", "-o", str(again))
    assert again.read_bytes() == text
    res = srv.cli("export", "mbox", USER, "--folder", "NoSuch", check=False)
    assert res.returncode == 1 and "does not exist" in res.stderr


def _ssha512(password: str, salt: bytes) -> str:
    return "{SSHA512}" + base64.b64encode(hashlib.sha512(password.encode() + salt).digest() + salt).decode()


def test_user_import_of_dovecot_passwd_file_logs_in_and_rehashes(tmp_path: Path) -> None:
    srv, imap_port = _server(tmp_path)
    hashes = {
        "crypt@example.test": "{SHA512-CRYPT}" + sha512_crypt.using(rounds=5000).hash("pw-crypt-1"),
        "blf@example.test": "{BLF-CRYPT}" + bcrypt.hashpw(b"pw-blf-1", bcrypt.gensalt(5)).decode().replace(
            "$2b$", "$2y$", 1),
        "ssha@example.test": _ssha512("pw-ssha-1", b"saltsalt"),
    }
    from argon2 import PasswordHasher
    hashes["argon@example.test"] = "{ARGON2ID}" + PasswordHasher(time_cost=1, memory_cost=8192).hash("pw-argon-1")
    lines = [f"{user}:{h}:1000:1000::/home/x::" for user, h in hashes.items()]
    lines.append("plain@example.test:{PLAIN}hunter2plain:::")
    passwd = tmp_path / "passwd"
    passwd.write_text("# dovecot users\n" + "\n".join(lines) + "\n")
    res = srv.cli("user", "import", str(passwd), check=False)
    assert res.returncode == 1
    assert "users imported: 4; already present: 0; refused: 1" in res.stdout
    assert "passwd:6" in res.stderr and "PLAIN" in res.stderr and "hunter2plain" not in res.stderr
    srv.start()
    try:
        for user, pw in [("crypt@example.test", "pw-crypt-1"), ("blf@example.test", "pw-blf-1"),
                         ("ssha@example.test", "pw-ssha-1"), ("argon@example.test", "pw-argon-1")]:
            wrong = imaplib.IMAP4("127.0.0.1", imap_port, timeout=15)
            try:
                with pytest.raises(imaplib.IMAP4.error):
                    wrong.login(user, pw + "x")
            finally:
                wrong.shutdown()
            _imap(imap_port, user, pw).logout()
    finally:
        srv.stop()
    db = sqlite3.connect(srv.data_dir / "directory.sqlite3")
    stored = dict(db.execute("SELECT address, password_hash FROM users").fetchall())
    db.close()
    assert all(h.startswith("$argon2id$") for h in stored.values()), stored


def test_malformed_sources_are_refused_or_skipped_with_a_clear_line(tmp_path: Path) -> None:
    srv, _ = _server(tmp_path)
    srv.add_user(USER)
    junk = tmp_path / "not.mbox"
    junk.write_bytes(b"\x00\xffthis is no mbox\n" * 100)
    res = srv.cli("import", "mbox", str(junk), USER, check=False)
    assert res.returncode == 1 and "not an mbox file" in res.stderr and "Traceback" not in res.stderr
    res = srv.cli("import", "maildir", str(tmp_path / "nowhere"), USER, check=False)
    assert res.returncode == 1 and "is not a Maildir" in res.stderr
    src = tmp_path / "md"
    for sub in ("cur", "new", "tmp"):
        (src / sub).mkdir(parents=True)
    (src / "cur" / "1.M1P1.x:2,S").write_text("Subject: a\n\nbody\n")
    (src / "dovecot-uidlist").write_bytes(b"3 Vnot-a-number\n\xff\xfe garbage :1.M1P1.x\nx y\n")
    (src / "dovecot-keywords").write_bytes(b"99 too-big\nnonsense\n")
    res = srv.cli("import", "maildir", str(src), USER)
    assert "imported 1 messages in 1 folders" in res.stdout  # bad lines skipped, mail kept
    res = srv.cli("restore", str(tmp_path / "no-backup"), check=False)
    assert res.returncode == 1 and "not a complete Pigeon backup" in res.stderr
