"""Packaging (issue 19): every imported package is a declared dependency, the license is an
SPDX expression, and ``pip install .`` into a fresh venv gives a working ``pigeon``."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import tomllib
import venv
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _name(requirement: str) -> str:
    """The normalised distribution name of a requirement (PEP 503)."""
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match is not None, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def _imported_top_level() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "src" / "pigeon").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "pigeon"}


def test_every_imported_package_is_a_declared_dependency() -> None:
    declared = {_name(r) for r in PYPROJECT["project"]["dependencies"]}
    dists = packages_distributions()
    imported = _imported_top_level()
    assert "idna" in imported  # delivery.relay_route: IDNA 2008, never the stdlib's IDNA 2003
    for module in sorted(imported):
        providers = {_name(d) for d in dists.get(module, [])}
        assert providers, f"{module} is imported but not installed here"
        assert providers & declared, f"{module} (from {providers}) is imported but not in [project] dependencies"
    # and nothing declared that is never imported (a dependency nobody uses)
    used = {_name(d) for m in imported for d in dists.get(m, [])}
    assert declared <= used, declared - used


def test_license_is_an_spdx_expression() -> None:
    assert PYPROJECT["project"]["license"] == "MIT"
    assert (ROOT / "LICENSE").is_file() and PYPROJECT["project"]["license-files"] == ["LICENSE"]
    # PEP 639 expressions need setuptools 77 (older ones warn, and break after 2027-02-18).
    assert any(re.fullmatch(r"setuptools>=(7[7-9]|[89]\d|\d{3,})(\.\d+)*", r)
               for r in PYPROJECT["build-system"]["requires"])


def test_pip_install_into_a_fresh_venv(tmp_path: Path) -> None:
    """``pip install .`` of a copy of the project (no build files left in the tree) into a
    new venv; its ``pigeon`` runs, and the wheel carries its metadata and py.typed."""
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, project / name)
    shutil.copytree(ROOT / "src" / "pigeon", project / "src" / "pigeon",
                    ignore=shutil.ignore_patterns("__pycache__"))
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    py = env_dir / "bin" / "python"
    res = subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(project)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert "License classifiers are deprecated" not in res.stderr and "license" not in res.stderr.lower()
    version = subprocess.run([str(env_dir / "bin" / "pigeon"), "--version"], capture_output=True, text=True,
                             timeout=120)
    from pigeon import __version__

    assert version.returncode == 0 and version.stdout.strip() == f"pigeon {__version__}", version.stderr
    probe = ("import importlib.metadata as m, pathlib, pigeon\n"
             "from pigeon.delivery.relay_route import to_ascii\n"
             "md = m.metadata('pigeon')\n"
             "print(md['License-Expression'], to_ascii('faß.de'),"
             " (pathlib.Path(pigeon.__file__).parent / 'py.typed').is_file())\n")
    out = subprocess.run([str(py), "-c", probe], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.stdout.split() == ["MIT", "xn--fa-hia.de", "True"], out.stderr  # IDNA 2008: ß stays
