"""contrib/systemd/pigeon.service: ``systemd-analyze verify`` accepts it, and it says what
issue 19 asks (Type=notify, hardening, the data directory writable, the capability alternative).

``systemd-analyze`` comes from the Debian package ``systemd`` (``make test-deps`` installs it).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
UNIT = ROOT / "contrib" / "systemd" / "pigeon.service"
SHIPPED_BINARY = "/usr/local/bin/pigeon"


def _analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.fail("systemd-analyze is not installed (`make test-deps` installs the systemd package)")
    return path


def _verify(text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Verify ``text`` as pigeon.service, its pigeon command an executable of ``tmp_path``
    (verify checks that ExecStart= exists; the shipped path is where pip puts it on a server)."""
    binary = tmp_path / "pigeon"
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(0o755)
    unit = tmp_path / "pigeon.service"
    unit.write_text(text.replace(SHIPPED_BINARY, str(binary)))
    return subprocess.run([_analyze(), "verify", str(unit)], capture_output=True, text=True, timeout=60)


def _settings(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    res = _verify(UNIT.read_text(), tmp_path)
    assert res.returncode == 0, res.stderr
    assert "pigeon.service" not in res.stderr, res.stderr  # no warning about it either


def test_the_alternative_without_root_verifies_too(tmp_path: Path) -> None:
    text = UNIT.read_text()
    for line in ("User=pigeon", "Group=pigeon", "AmbientCapabilities=CAP_NET_BIND_SERVICE"):
        assert f"#{line}\n" in text
        text = text.replace(f"#{line}\n", f"{line}\n")
    res = _verify(text, tmp_path)
    assert res.returncode == 0, res.stderr


def test_verify_is_not_vacuous(tmp_path: Path) -> None:
    res = _verify(UNIT.read_text().replace("Type=notify", "Type=notifyy"), tmp_path)
    assert "notifyy" in res.stderr


def test_the_unit_is_notify_and_hardened() -> None:
    s = _settings(UNIT.read_text())
    assert s["Type"] == ["notify"]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]  # RELOADING=1 … READY=1 (app.sdnotify)
    assert any(v.endswith("pigeon --config /etc/pigeon/pigeon.toml serve") for v in s["ExecStart"])
    assert s["ProtectSystem"] == ["strict"]
    assert "/var/lib/pigeon" in s["ReadWritePaths"][0].split()
    for key in ("NoNewPrivileges", "PrivateTmp", "ProtectHome", "PrivateDevices", "ProtectKernelTunables",
                "ProtectControlGroups", "RestrictSUIDSGID", "LockPersonality"):
        assert s[key] == ["yes"], key
    assert "CAP_NET_BIND_SERVICE" in s["CapabilityBoundingSet"][0].split()
