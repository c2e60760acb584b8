"""Started as root with ``user`` set, the server binds, then serves as that user — and so do its
workers and the command line run as root (issue 19, "Process and privileges").

Checked from outside, through ``/proc/<pid>/status`` (Uid, Gid, Groups, CapEff) of the server
and of each worker process. Needs root: skipped otherwise. The test user is ``nobody`` (it
exists on every Debian system; nothing to create or clean up). The data directory lives in a
directory of ``/tmp`` that ``nobody`` can reach (pytest's own is root's, mode 0700).
"""

from __future__ import annotations

import os
import pwd
import shutil
import smtplib
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import Server

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the privilege drop needs root")

USER = "nobody"


def _status(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if _status(int(entry.name)).get("PPid") == str(pid):
                    kids.append(int(entry.name))
            except (FileNotFoundError, ProcessLookupError):
                continue
    return kids


def _python_for(user: str) -> str:
    """An interpreter of this Python version that ``user`` may run: this one, unless it lives
    under a directory only root enters (pyenv under /root), then the system's."""
    want = f"{sys.version_info.major}.{sys.version_info.minor}"
    pw = pwd.getpwnam(user)
    for candidate in (sys.executable, f"/usr/bin/python{want}"):
        try:
            res = subprocess.run([candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                 user=pw.pw_uid, group=pw.pw_gid, extra_groups=[], capture_output=True,
                                 text=True, timeout=30, cwd="/")
        except (OSError, subprocess.SubprocessError):
            continue
        if res.returncode == 0 and res.stdout.strip() == want:
            return candidate
    pytest.skip(f"no Python {want} that {user} can run (sys.executable is {sys.executable})")


@pytest.fixture
def reachable_tmp() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="pigeon-priv-", dir="/tmp"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _server(tmp: Path, extra: str = "") -> Server:
    srv = Server(tmp, extra_toml=f'user = "{USER}"\n{extra}', python=_python_for(USER))
    srv.config_path.chmod(0o644)  # the workers read it again, as the user
    return srv


def _assert_is_user(pid: int) -> None:
    pw = pwd.getpwnam(USER)
    st = _status(pid)
    assert st["Uid"].split() == [str(pw.pw_uid)] * 4, st["Uid"]  # real, effective, saved, fs
    assert st["Gid"].split() == [str(pw.pw_gid)] * 4, st["Gid"]
    assert sorted(st["Groups"].split()) == sorted(str(g) for g in set(os.getgrouplist(USER, pw.pw_gid)))
    assert "0" not in st["Groups"].split()  # root's group is gone (setgroups before setgid)
    assert int(st["CapEff"], 16) == 0 and int(st["CapPrm"], 16) == 0  # and no capability left


def test_server_and_workers_run_as_the_user_after_binding(reachable_tmp: Path) -> None:
    srv = _server(reachable_tmp, "[smtp]\nprocesses = 3\n")
    pw = pwd.getpwnam(USER)
    # The command line run as root creates the data directory for the user, and acts as the user.
    srv.add_user("alice@example.test")
    assert srv.data_dir.stat().st_uid == pw.pw_uid
    assert (srv.data_dir / "directory.sqlite3").stat().st_uid == pw.pw_uid
    srv.start()
    try:
        srv.wait_log(r"privileges dropped user=nobody")
        for n in (1, 2):
            srv.wait_log(rf"smtp worker {n} ready pid=")
        _assert_is_user(srv.pid)
        workers = [p for p in _children(srv.pid) if b"worker" in Path(f"/proc/{p}/cmdline").read_bytes()]
        assert len(workers) == 2
        for pid in workers:
            _assert_is_user(pid)
        tok = uuid.uuid4().hex
        with smtplib.SMTP(srv.host, srv.smtp_port, timeout=15) as c:
            c.sendmail("x@remote.test", ["alice@example.test"], f"Subject: {tok}\r\n\r\nhi\r\n".encode())
        assert len(srv.wait_messages("alice@example.test", 1)) == 1
        [path] = srv.message_paths("alice@example.test")
        assert tok.encode() in path.read_bytes() and path.stat().st_uid == pw.pw_uid
        assert srv.cli("queue", "list").returncode == 0  # root's CLI, through the control socket
    finally:
        assert srv.stop() == 0
    # Root's CLI while stopped: whatever it creates is the user's, so the next start works.
    srv.add_user("bob@example.test")
    srv.cli("alias", "add", "info@example.test", "bob@example.test")
    foreign = [p for p in srv.data_dir.rglob("*") if p.stat().st_uid != pw.pw_uid]
    assert foreign == []
    srv.start()
    try:
        srv.wait_log(r"pigeon started(.|\n)*pigeon started", timeout=30)  # the second start
    finally:
        assert srv.stop() == 0
    assert "Traceback" not in srv.log


def test_files_of_another_owner_refuse_the_start_with_the_fix(reachable_tmp: Path) -> None:
    srv = _server(reachable_tmp)
    srv.add_user("alice@example.test")
    stray = srv.data_dir / "queue"
    stray.mkdir()  # as root, as an old version of a tool would have left it
    proc = subprocess.run([*srv.pigeon, "--config", str(srv.config_path), "serve"], env=srv.env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert f"chown -R {USER}: {srv.data_dir}" in proc.stderr and str(stray) in proc.stderr
    assert "Traceback" not in proc.stderr


def test_root_without_user_warns(reachable_tmp: Path) -> None:
    srv = Server(reachable_tmp)
    srv.add_user("alice@example.test")
    srv.start()
    try:
        srv.wait_log(r"WARNING .*running as root: set user in ")
    finally:
        srv.stop()


def test_a_user_that_does_not_exist_refuses_to_start(reachable_tmp: Path) -> None:
    srv = Server(reachable_tmp, extra_toml='user = "pigeon-no-such-user"\n')
    check = srv.cli("check-config", check=False)
    assert check.returncode == 1 and "no such user 'pigeon-no-such-user'" in check.stderr
    proc = subprocess.run([*srv.pigeon, "--config", str(srv.config_path), "serve"], env=srv.env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "no such user" in proc.stderr and "Traceback" not in proc.stderr
