#!/usr/bin/env python3
"""Server CPU per message on port 25 with the inbound checks on and off (issue 16, "Measure").

Two Pigeon servers run side by side on loopback, identical but for ``[inbound]``:
  * ``on``:  SPF, DKIM, DMARC and ARC checked (the defaults; no ``trusted_networks``);
  * ``off``: ``spf = dkim = dmarc = arc = false``.
Both use ``[dns] nameservers`` = a loopback authoritative DNS server started here
(``tests/unit/dns/zone_server.py``, dnslib) that publishes for the sender domain
``sender.example``: SPF (``ip4`` + an ``include`` that lists 127.0.0.5), DKIM keys (RSA-2048
selector ``rsa``, ed25519 selector ``ed``) and DMARC ``p=reject`` with a ``rua``.

The load is ``bench/smtpload.py`` from the source address 127.0.0.5 (so SPF is decided by the
record, not by any loopback exemption), MAIL FROM and From: ``alice@sender.example``, one
message per connection, to a local Maildir user. The message is a 10 KB ``smtpload`` message
DKIM-signed once, before the runs, with dkimpy (relaxed/relaxed): the same signed bytes every
time. One file per key type.

Rules:
  1. Loopback only (servers, DNS, load); only the processes started here are stopped, by PID.
  2. Each server gets an untimed warm-up (``--warmup`` messages of each signed file) so both
     SMTP processes' DNS caches are warm; the DNS queries seen during the measured runs are
     counted and reported (0 expected: every record has a 3600 s TTL).
  3. Runs interleave: round i measures on/off (even i) or off/on (odd i), for each key type, so
     drift on a shared machine weighs on both alike. A run's CPU is utime+stime of the server
     and its workers (``/proc``, as ``bench/run.py``), from before the load until all N messages
     are in Maildir ``new/``, divided by N (all accepted, or the run fails).
  4. After each run one newly delivered file is read: for ``on`` (and ``base``) its
     Authentication-Results must say ``spf=pass``, ``dkim=pass`` (with the key's ``header.a``)
     and ``dmarc=pass``; for ``off`` it must carry no Authentication-Results. Otherwise the run fails: the numbers are of
     real passing checks.
  5. ``--compare-src DIR`` adds a third server, ``base``: checks on, run from another source tree
     (``PYTHONPATH=DIR``), in the same rotation, to measure a change against its parent.

Usage (from the worktree; ~3-5 min):
    PYTHONPATH=$PWD/src:$PWD /work/main/.venv/bin/python bench/authcpu.py --messages 2000 --runs 3
    # against an older commit, a third server in the same rotation:
    git archive <commit> src | tar -x -C /tmp/base
    PYTHONPATH=$PWD/src:$PWD /work/main/.venv/bin/python bench/authcpu.py --compare-src /tmp/base/src
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

import dkim  # noqa: E402

import run as harness  # noqa: E402
import smtpload  # noqa: E402
from tests.unit.dns.zone_server import ZoneServer  # noqa: E402
from tests.unit.mailauth.keys import ed25519_key, rsa_key  # noqa: E402

SENDER_DOMAIN = "sender.example"
SENDER = f"alice@{SENDER_DOMAIN}"
HELO = f"out.{SENDER_DOMAIN}"
SOURCE = "127.0.0.5"
RCPT = harness.RCPT
TTL = 3600
KEYS = ("rsa", "ed25519")
OFF = "[inbound]\nspf = false\ndkim = false\ndmarc = false\narc = false\n"
ON = "[inbound]\nspf = true\ndkim = true\ndmarc = true\narc = true\n"


def zone() -> dict[str, list[tuple[str, str, int]]]:
    return {
        SENDER_DOMAIN: [("TXT", f"v=spf1 ip4:192.0.2.0/24 include:_spf.{SENDER_DOMAIN} -all", TTL)],
        f"_spf.{SENDER_DOMAIN}": [("TXT", f"v=spf1 ip4:{SOURCE} -all", TTL)],
        f"{HELO}": [("A", SOURCE, TTL)],
        f"rsa._domainkey.{SENDER_DOMAIN}": [("TXT", rsa_key()[1], TTL)],
        f"ed._domainkey.{SENDER_DOMAIN}": [("TXT", ed25519_key()[1], TTL)],
        f"_dmarc.{SENDER_DOMAIN}": [("TXT", f"v=DMARC1; p=reject; rua=mailto:dmarc@{SENDER_DOMAIN}", TTL)],
    }


def signed_message(size: int, key: str) -> bytes:
    """A ``size``-byte smtpload message (CRLF), with one DKIM-Signature on top (dkimpy)."""
    body = smtpload.make_message(size, SENDER, RCPT).replace(b"\n", b"\r\n")
    ed = key == "ed25519"
    sig = dkim.sign(body, b"ed" if ed else b"rsa", SENDER_DOMAIN.encode(),
                    ed25519_key()[0] if ed else rsa_key()[0],
                    signature_algorithm=b"ed25519-sha256" if ed else b"rsa-sha256",
                    canonicalize=(b"relaxed", b"relaxed"),
                    include_headers=[b"from", b"to", b"subject", b"date", b"mime-version", b"content-type"])
    return bytes(sig) + body


def new_dir(srv: harness.Pigeon) -> Path:
    return srv.mail_root() / RCPT.split("@")[0] / "new"


def auth_results(path: Path) -> str:
    """The unfolded Authentication-Results value of a delivered file ('' if none)."""
    head = path.read_bytes().split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0].decode("utf-8", "replace")
    fields: list[str] = []
    for line in head.splitlines():
        if line[:1] in (" ", "\t") and fields:
            fields[-1] += " " + line.strip()
        else:
            fields.append(line)
    found = [f.split(":", 1)[1].strip() for f in fields if f.lower().startswith("authentication-results:")]
    return found[0] if found else ""


def check_delivered(mode: str, key: str, path: Path) -> str:
    """Rule 4: '' when the file says what it must, else what is wrong."""
    ar = auth_results(path)
    if mode == "off":
        return f"checks off but Authentication-Results: {ar}" if ar else ""
    alg = "ed25519-sha256" if key == "ed25519" else "rsa-sha256"
    want = ("spf=pass", "dkim=pass", "dmarc=pass", f"header.a={alg}")
    missing = [w for w in want if w not in ar]
    return f"Authentication-Results lacks {missing}: {ar!r}" if missing else ""


def fmt(runs: list[dict[str, Any]]) -> str:
    return ", ".join(f"{r['cpu_ms']:.3f}" for r in runs)


def one_run(srv: harness.Pigeon, mode: str, key: str, msgfile: Path, sessions: int, n: int,
            timeout: float) -> dict[str, Any]:
    nd = new_dir(srv)
    before = set(os.listdir(nd)) if nd.exists() else set()
    base = len(before)
    cpu0 = harness.cpu_seconds(srv.pids())
    argv = [sys.executable, str(HERE / "smtpload.py"), "send", "--port", str(srv.port), "-s", str(sessions),
            "-m", str(n), "--file", str(msgfile), "-f", SENDER, "-t", RCPT, "--source", SOURCE,
            "--helo", HELO, "--timeout", str(timeout), "--json"]
    t0 = time.monotonic()
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 30)
    try:
        res = json.loads(r.stdout)
    except json.JSONDecodeError:
        return {"ok": False, "detail": (r.stderr.strip() or r.stdout.strip())[-300:]}
    if res["sent"] != n or res["timed_out"]:
        return {"ok": False, "detail": f"sent {res['sent']}/{n}, errors {res['errors']}"}
    deadline = t0 + timeout
    count = harness.count_maildir(srv.mail_root())
    while count < base + n and time.monotonic() < deadline:
        time.sleep(0.01)
        count = harness.count_maildir(srv.mail_root())
    t1 = time.monotonic()
    cpu = harness.cpu_seconds(srv.pids()) - cpu0
    if count < base + n:
        return {"ok": False, "detail": f"only {count - base}/{n} in Maildir new/ after {timeout:.0f} s"}
    fresh = sorted(set(os.listdir(nd)) - before)
    problem = check_delivered(mode, key, nd / fresh[len(fresh) // 2])
    out = {"ok": not problem, "detail": problem, "cpu_ms": 1000 * cpu / n, "accept_rate": res["rate"],
           "e2e_rate": n / (t1 - t0)}
    if mode != "off" and not problem:
        out["auth_results"] = auth_results(nd / fresh[len(fresh) // 2])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=2000, help="N per run (default 2000)")
    ap.add_argument("--runs", type=int, default=3, help="rounds (default 3)")
    ap.add_argument("--sessions", type=int, default=10)
    ap.add_argument("--size", type=int, default=10240, help="message size before the signature")
    ap.add_argument("--warmup", type=int, default=500,
                    help="untimed messages per key per server (enough that both SMTP processes get some)")
    ap.add_argument("--keys", default=",".join(KEYS), help="comma list of rsa, ed25519")
    ap.add_argument("--processes", type=int, default=os.cpu_count() or 1, help="Pigeon's [smtp] processes")
    ap.add_argument("--pigeon-cmd", default=f"{sys.executable} -m pigeon")
    ap.add_argument("--ports", default="2635,2636,2637", help="on,off[,base] SMTP ports")
    ap.add_argument("--compare-src", metavar="DIR",
                    help="also run the checks-on server from this src/ (e.g. a git archive of an "
                         "older commit), interleaved with the others (rule 5)")
    ap.add_argument("--max-run-seconds", type=float, default=180.0)
    ap.add_argument("--workdir", default="/tmp/pigeon-authcpu")
    ap.add_argument("--out", help="write the results as JSON here too")
    args = ap.parse_args()
    keys = [k for k in args.keys.split(",") if k]
    if any(k not in KEYS for k in keys):
        ap.error(f"--keys: of {KEYS}")
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(REPO / "src"), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))])
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    msgfiles = {}
    for k in keys:
        msgfiles[k] = workdir / f"signed-{k}.eml"
        msgfiles[k].write_bytes(signed_message(args.size, k))
    ports = [int(p) for p in args.ports.split(",")]
    tail = harness.PIGEON_TOML_TAIL + (f"[smtp]\nprocesses = {args.processes}\n" if args.processes > 1 else "")
    results: dict[str, Any] = {"runs": [], "dns_queries_measured": 0}
    started = dt.datetime.now()
    load0 = os.getloadavg()
    with ZoneServer(zone()) as dns:  # type: ignore[arg-type]
        ns = f'[dns]\nnameservers = ["127.0.0.1:{dns.port}"]\n'
        cmd = shlex.split(args.pigeon_cmd)
        plan = [("on", ports[0], ON, cmd), ("off", ports[1], OFF, cmd)]
        if args.compare_src:  # rule 5: the same checks, from another tree
            base_cmd = ["env", f"PYTHONPATH={Path(args.compare_src).resolve()}", *cmd]
            plan.append(("base", ports[2] if len(ports) > 2 else ports[1] + 1, ON, base_cmd))
        servers = {mode: harness.Pigeon(workdir / mode, port, c, ns + extra, tail) for mode, port, extra, c in plan}
        modes = list(servers)
        try:
            for mode, srv in servers.items():
                srv.setup()
                if srv.unavailable:
                    raise SystemExit(f"authcpu: {mode}: {srv.unavailable}")
                srv.fresh_start()
                for k in keys:
                    w = one_run(srv, mode, k, msgfiles[k], args.sessions, args.warmup, args.max_run_seconds)
                    if not w["ok"]:
                        raise SystemExit(f"authcpu: warm-up of {mode} ({k}) failed: {w['detail']}")
                harness.log(f"{mode}: started and warmed up ({srv.describe()})")
            q0 = len(dns.queries)
            for i in range(args.runs):
                for k in keys:
                    for mode in (modes if i % 2 == 0 else modes[::-1]):
                        r = one_run(servers[mode], mode, k, msgfiles[k], args.sessions, args.messages,
                                    args.max_run_seconds)
                        r.update(round=i + 1, mode=mode, key=k)
                        results["runs"].append(r)
                        if not r["ok"]:
                            harness.log(f"round {i + 1} {k} {mode}: FAILED {r['detail']}")
                            raise SystemExit(1)
                        harness.log(f"round {i + 1} {k} {mode}: {r['cpu_ms']:.3f} ms CPU/msg, "
                                    f"accept {r['accept_rate']:.0f}/s, e2e {r['e2e_rate']:.0f}/s")
            results["dns_queries_measured"] = len(dns.queries) - q0
            results["dns_names_measured"] = sorted({f"{n} {t}" for n, t in dns.queries[q0:]})
        finally:
            for srv in servers.values():
                srv.stop()
    load1 = os.getloadavg()
    runs = results["runs"]
    lines = [f"authcpu {started:%Y-%m-%d %H:%M}: {args.runs} rounds x {args.messages} messages, "
             f"{args.sessions} sessions, {args.size} B + signature, {args.processes} SMTP processes; "
             f"load average {load0[0]:.1f} -> {load1[0]:.1f}; DNS queries during the runs: "
             f"{results['dns_queries_measured']} {results['dns_names_measured']}",
             "| key | checks on, ms CPU/msg | checks off | on - off (medians) | paired diffs: median (each) | "
             "accept on / off, msg/s |",
             "|---|---:|---:|---:|---:|---:|"]
    for k in keys:
        on = [r for r in runs if r["key"] == k and r["mode"] == "on"]
        off = [r for r in runs if r["key"] == k and r["mode"] == "off"]
        m_on = statistics.median(r["cpu_ms"] for r in on)
        m_off = statistics.median(r["cpu_ms"] for r in off)
        pairs = [a["cpu_ms"] - b["cpu_ms"] for a, b in zip(on, off)]
        lines.append(f"| {k} | {m_on:.3f} ({fmt(on)}) | "
                     f"{m_off:.3f} ({fmt(off)}) | **{m_on - m_off:.3f}** | "
                     f"**{statistics.median(pairs):.3f}** ({', '.join(f'{d:.3f}' for d in pairs)}) | "
                     f"{statistics.median(r['accept_rate'] for r in on):.0f} / "
                     f"{statistics.median(r['accept_rate'] for r in off):.0f} |")
        base = [r for r in runs if r["key"] == k and r["mode"] == "base"]
        if base:
            m_base = statistics.median(r["cpu_ms"] for r in base)
            bpairs = [a["cpu_ms"] - b["cpu_ms"] for a, b in zip(base, off)]
            lines.append(f"| {k}, --compare-src | {m_base:.3f} ({fmt(base)}) | (the same) | "
                         f"**{m_base - m_off:.3f}** | **{statistics.median(bpairs):.3f}** "
                         f"({', '.join(f'{d:.3f}' for d in bpairs)}) | "
                         f"{statistics.median(r['accept_rate'] for r in base):.0f} |")
        sample = next((r["auth_results"] for r in on if "auth_results" in r), "")
        lines.append(f"<!-- {k}: Authentication-Results: {sample} -->")
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(json.dumps({"argv": sys.argv[1:], "results": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
