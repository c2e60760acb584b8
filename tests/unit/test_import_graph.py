"""The rules of the import graph that import-linter cannot state (docs/architecture.md, "Layers").

import-linter (``[tool.importlinter]`` in pyproject.toml, run by ``make test``) holds the layers
and the forbidden imports. This module holds the rest:
1. No import cycles between modules, except through imports under ``TYPE_CHECKING`` (they never
   run: a command module of imapd may name the session type that imports it).
2. Network connections are opened only in ``net``: outside it no code calls asyncio's
   connection or server functions (import-linter sees ``import asyncio``, not which function
   is called).
3. ``proto`` and ``core`` read no clock and touch no file: no ``datetime.now()``/``today()``,
   no ``open()``, no ``print()`` (``datetime`` itself is allowed, for date arithmetic and
   formatting of instants passed in).
4. Every flush to disk goes through the file-IO seam (``pigeon.durable.io``, issue 15): outside
   ``durable`` no code calls ``os.fsync``, ``os.fdatasync``, ``os.sync`` or ``syncfs`` itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

import grimp

SRC = Path(__file__).resolve().parents[2] / "src" / "pigeon"

# Cycles that other work of issue 15 removes; each entry must still exist (a stale one fails).
KNOWN_CYCLES: dict[frozenset[str], str] = {}

CONNECTING = frozenset({
    "open_connection", "open_unix_connection", "start_server", "start_unix_server",
    "create_connection", "create_unix_connection", "create_server", "create_unix_server",
    "create_datagram_endpoint", "connect_accepted_socket", "sock_connect", "sock_accept",
})
# app and admin are the entry points (they may bind and hand over sockets); net is the rule.
CONNECTING_ALLOWED = ("net", "app", "admin")


def _cycles() -> list[frozenset[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    graph = grimp.build_graph("pigeon", exclude_type_checking_imports=True, cache_dir=None)
    succ = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in sorted(graph.modules)}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    for root in succ:
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            if i < len(succ[node]):
                work.append((node, i + 1))
                nxt = succ[node][i]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                component = set()
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    component.add(m)
                    if m == node:
                        break
                if len(component) > 1:
                    found.append(frozenset(component))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return found


def test_no_import_cycles_outside_type_checking() -> None:  # rule 1
    cycles = set(_cycles())
    new = [sorted(c) for c in cycles - set(KNOWN_CYCLES)]
    assert not new, f"import cycles: {new}"
    gone = [KNOWN_CYCLES[c] for c in set(KNOWN_CYCLES) - cycles]
    assert not gone, f"a known cycle is gone; remove it from KNOWN_CYCLES: {gone}"


def _modules(*packages: str) -> list[tuple[str, ast.Module]]:
    out = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        if packages and rel.parts[0].removesuffix(".py") not in packages:
            continue
        out.append((str(rel), ast.parse(path.read_text(encoding="utf-8"), str(path))))
    return out


def test_connections_are_opened_only_in_net() -> None:  # rule 2
    offenders = []
    for rel, tree in _modules():
        if rel.split("/")[0].removesuffix(".py") in CONNECTING_ALLOWED:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in CONNECTING:
                offenders.append(f"{rel}:{node.lineno} {node.func.attr}")
    assert not offenders


def test_proto_and_core_read_no_clock_and_touch_no_file() -> None:  # rule 3
    offenders = []
    for rel, tree in _modules("proto", "core"):
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            if isinstance(f, ast.Name) and f.id in ("open", "print", "input"):
                offenders.append(f"{rel}:{node.lineno} {f.id}()")
            if isinstance(f, ast.Attribute) and f.attr in ("now", "today", "utcnow"):
                offenders.append(f"{rel}:{node.lineno} .{f.attr}()")
    assert not offenders


FLUSHES = frozenset({"fsync", "fdatasync", "sync", "syncfs"})


def _os_flush_calls(*packages: str) -> list[str]:
    return [f"{rel}:{n.lineno} os.{n.func.attr}" for rel, t in _modules(*packages) for n in ast.walk(t)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr in FLUSHES
            and isinstance(n.func.value, ast.Name) and n.func.value.id == "os"]


def test_flushes_only_through_the_durable_seam() -> None:  # rule 4
    packages = sorted({p.relative_to(SRC).parts[0].removesuffix(".py") for p in SRC.rglob("*.py")} - {"durable"})
    assert not _os_flush_calls(*packages)


def test_the_checks_see_what_they_look_for() -> None:
    """The walkers are not vacuous: they find the calls where they are allowed."""
    net_calls = [n.func.attr for _, t in _modules("net") for n in ast.walk(t)
                 if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr in CONNECTING]
    assert "open_connection" in net_calls and "start_unix_server" in net_calls
    assert len(_modules("proto", "core")) > 40
    assert any(c.endswith("os.fdatasync") for c in _os_flush_calls("durable"))
