"""Lookups run at every RCPT: they must stay cheap (target < 50 µs each, brief H3).

The assertion is looser than the target (a loaded CI machine running tests in parallel is slow);
the measured figure is printed so a regression shows up in ``pytest -s`` long before it fails.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from pigeon.auth.passwords import hash_password
from pigeon.core.address import parse_address
from pigeon.directory import Directory

USERS = 5000  # a mid-sized organisation
LOOKUPS = 5000
# 4x the 50 µs target: fails only on a real regression (e.g. a reload per lookup), not on noise.
CEILING_SECONDS = 200e-6


def test_lookup_cost(tmp_path: Path) -> None:
    db = tmp_path / "directory.sqlite3"
    with Directory(db, ["example.test"], None) as d:
        d.add_user("user0@example.test", "pw")
        hashed = hash_password("pw")  # one hash for all: argon2 is slow by design
        conn = sqlite3.connect(db)
        with conn:
            conn.executemany(
                "INSERT INTO users (address, domain, password_hash, created) VALUES (?, 'example.test', ?, 0)",
                [(f"user{i}@example.test", hashed) for i in range(1, USERS)],
            )
        conn.close()
        d.add_alias("team@example.test", ["user1@example.test", "user2@example.test", "x@remote.example"])
        hit = parse_address("User4321+tag@Example.test")
        miss = parse_address("nobody@example.test")
        team = parse_address("team@example.test")
        assert d.accepts(hit) and not d.accepts(miss)  # warms the snapshot

        start = time.perf_counter()
        for _ in range(LOOKUPS):
            d.accepts(hit)
            d.accepts(miss)
        accept_cost = (time.perf_counter() - start) / (2 * LOOKUPS)

        start = time.perf_counter()
        for _ in range(LOOKUPS):
            d.expand(team)
        expand_cost = (time.perf_counter() - start) / LOOKUPS

    print(f"\naccepts: {accept_cost * 1e6:.1f} µs, expand(3 targets): {expand_cost * 1e6:.1f} µs")
    assert accept_cost < CEILING_SECONDS
    assert expand_cost < CEILING_SECONDS
