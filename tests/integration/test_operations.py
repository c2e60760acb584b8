"""Running Pigeon as an admin does (issue 19): systemd's notify socket, logrotate's signals,
bad configurations refused by ``serve`` and reported by ``check-config``, the data directory
that only ``serve``, ``domain add`` and ``user add`` create, ``pigeon --version``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.conftest import MakeServer
from tests.integration.harness import Server


def _serve(srv: Server) -> subprocess.CompletedProcess[str]:
    """``pigeon serve`` expected to refuse: it must end by itself."""
    return subprocess.run([*srv.pigeon, "--config", str(srv.config_path), "serve"], env=srv.env(),
                          capture_output=True, text=True, timeout=60)


def _openssl_cert(tmp: Path, name: str) -> tuple[Path, Path]:
    cert, key = tmp / f"{name}.crt", tmp / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
                    f"/CN={name}", "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def test_systemd_notify_ready_reloading_stopping(make_server: MakeServer, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(20)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        srv = make_server()
        srv.add_user("alice@example.test")
        srv.start()

        def state() -> dict[str, str]:
            return dict(line.split("=", 1) for line in sock.recv(4096).decode().splitlines())

        ready = state()
        assert ready["READY"] == "1" and ready["MAINPID"] == str(srv.pid)
        os.kill(srv.pid, signal.SIGHUP)
        assert state()["RELOADING"] == "1"
        assert state()["READY"] == "1"
        srv.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        assert state()["STOPPING"] == "1"
        assert srv.stop() == 0


def _fd_targets(pid: int) -> set[str]:
    out = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            out.add(os.readlink(fd))
        except OSError:
            continue
    return out


def test_log_file_reopened_on_sigusr1_and_sighup_in_server_and_workers(make_server: MakeServer) -> None:
    srv = make_server(extra_toml='log_file = "pigeon.log"\n[smtp]\nprocesses = 2\n')
    srv.add_user("alice@example.test")
    srv.start()
    log = srv.config_path.parent / "pigeon.log"
    srv.wait_log(r"smtp worker 1 ready pid=(\d+)")
    worker = int(srv.wait_log(r"smtp worker 1 ready pid=(\d+)").group(1))
    for n, sig in enumerate((signal.SIGUSR1, signal.SIGHUP), start=1):
        rotated = log.with_name(f"pigeon.log.{n}")
        log.rename(rotated)  # logrotate, without copytruncate
        os.kill(srv.pid, sig)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if log.exists() and str(log) in _fd_targets(srv.pid) and str(log) in _fd_targets(worker):
                break
            time.sleep(0.1)
        assert str(log) in _fd_targets(srv.pid) and str(log) in _fd_targets(worker), sig
        assert str(rotated) not in _fd_targets(srv.pid) | _fd_targets(worker)
    assert srv.stop() == 0
    assert "stopped" in log.read_text()  # the last lines went to the new file


def test_bad_tls_files_log_file_and_postmaster_refuse_to_start(make_server: MakeServer, tmp_path: Path) -> None:
    a_cert, _ = _openssl_cert(tmp_path, "a")
    _, b_key = _openssl_cert(tmp_path, "b")
    cases = {
        "missing": (f'[tls]\ncert = "{tmp_path}/none.crt"\nkey = "{tmp_path}/none.key"\n', "none.crt: no such file"),
        "mismatch": (f'[tls]\ncert = "{a_cert}"\nkey = "{b_key}"\n', "cannot load the certificate and key"),
        "log_file": (f'log_file = "{tmp_path}"\n', f"log_file: {tmp_path}: not a regular file"),
        "postmaster": ('postmaster = "nobody-here@example.test"\n',
                       "postmaster: nobody-here@example.test is neither a user nor an alias"),
    }
    for name, (toml, message) in cases.items():
        srv = make_server(name, extra_toml=toml)
        srv.add_user("alice@example.test")
        check = srv.cli("check-config", check=False)
        assert check.returncode == 1 and message in check.stderr, (name, check.stderr)
        assert str(srv.config_path) in check.stderr
        res = _serve(srv)
        assert res.returncode == 1 and message in res.stderr, (name, res.stderr)
        assert "Traceback" not in res.stderr
    good = make_server("good", extra_toml=f'postmaster = "alice@example.test"\n[tls]\ncert = "{a_cert}"\nkey = "{a_cert.with_suffix(".key")}"\n')
    good.add_user("alice@example.test")
    assert good.cli("check-config").stdout.startswith(f"{good.config_path}: OK")


def test_only_serve_domain_add_and_user_add_create_the_data_directory(make_server: MakeServer) -> None:
    srv = make_server()
    for args in (["queue", "list"], ["user", "list"], ["alias", "add", "a@example.test", "b@example.test"],
                 ["domain", "list"], ["mailq"]):
        res = srv.cli(*args, check=False)
        assert res.returncode == 1, args
        assert f"{srv.data_dir}: no such data directory (data_dir in {srv.config_path})" in res.stderr, res.stderr
        assert not srv.data_dir.exists()
    note = srv.cli("check-config")
    assert "does not exist yet" in note.stdout and not srv.data_dir.exists()
    srv.cli("domain", "add", "other.test")
    assert srv.data_dir.is_dir() and oct(srv.data_dir.stat().st_mode & 0o777) == "0o700"
    assert srv.cli("domain", "list").returncode == 0


def test_version(make_server: MakeServer) -> None:
    srv = make_server()
    from pigeon import __version__

    for args in (["--version"], ["version"]):
        res = subprocess.run([*srv.pigeon, *args], env=srv.env(), capture_output=True, text=True, timeout=60)
        assert res.returncode == 0 and res.stdout.strip() == f"pigeon {__version__}"
