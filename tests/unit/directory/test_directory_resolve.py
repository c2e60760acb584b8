"""Recipient policy and expansion rules (pigeon.directory.resolve) on hand-built snapshots."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import pytest

from pigeon.core.address import Address, parse_address
from pigeon.directory.resolve import MAX_DEPTH, Forward, Snapshot, accepts, expand, fold, fold_local


def A(text: str) -> Address:
    return parse_address(text, utf8=True)


def snap(
    users: tuple[str, ...] = ("bob@ex.org", "alice@ex.org"),
    aliases: Mapping[str, tuple[str, ...]] | None = None,
    forwards: dict[str, Forward] | None = None,
    postmaster: str | None = "alice@ex.org",
    domains: tuple[str, ...] = ("ex.org", "ex.net"),
) -> Snapshot:
    return Snapshot(
        domains=frozenset(domains),
        users=frozenset(users),
        forwards=forwards or {},
        aliases={k: tuple(A(t) for t in v) for k, v in (aliases or {}).items()},
        postmaster=A(postmaster) if postmaster else None,
    )


def names(addresses: list[Address]) -> list[str]:
    return [str(a) for a in addresses]


def test_fold() -> None:
    assert fold(A("Bob.Smith@EX.org")) == "bob.smith@ex.org"
    assert fold_local('"bob"') == "bob"  # needless quotes removed (RFC 5321 §4.1.2)
    assert fold_local('"Bob Smith"') == '"bob smith"'  # needed quotes kept


def test_users_and_case() -> None:
    s = snap()
    assert accepts(s, A("Bob@EX.ORG"), "+")
    assert names(expand(s, A("BOB@ex.org"), "+")) == ["bob@ex.org"]
    assert not accepts(s, A("carol@ex.org"), "+")
    assert not accepts(s, A("bob@elsewhere.example"), "+")  # not a local domain


def test_plus_addressing() -> None:
    s = snap(users=("bob@ex.org", "bob+list@ex.org"))
    assert accepts(s, A("bob+news@ex.org"), "+")
    assert names(expand(s, A("Bob+News@ex.org"), "+")) == ["bob@ex.org"]
    # the full name wins when it exists itself
    assert names(expand(s, A("bob+list@ex.org"), "+")) == ["bob+list@ex.org"]
    # split at the first delimiter; several delimiter characters
    assert names(expand(s, A("bob-x+y@ex.org"), "+-")) == ["bob@ex.org"]
    assert not accepts(s, A("bob-x@ex.org"), "+")
    assert not accepts(s, A("bob+x@ex.org"), "")  # disabled
    assert not accepts(s, A("+x@ex.org"), "+")  # nothing before the delimiter


def test_postmaster_always_exists() -> None:
    s = snap(users=("bob@ex.org",), postmaster="bob@ex.org")
    for text in ("postmaster@ex.org", "PostMaster@ex.net", '"postmaster"@ex.org', "postmaster+x@ex.org"):
        assert accepts(s, A(text), "+"), text
        assert names(expand(s, A(text), "+")) == ["bob@ex.org"], text
    # an explicit alias wins over the default
    s2 = snap(aliases={"postmaster@ex.net": ("alice@ex.org",)})
    assert names(expand(s2, A("postmaster@ex.net"), "+")) == ["alice@ex.org"]
    assert names(expand(s2, A("postmaster@ex.org"), "+")) == ["alice@ex.org"]  # the configured one


def test_postmaster_without_any_mailbox_is_kept_as_is(caplog: pytest.LogCaptureFixture) -> None:
    s = snap(users=(), postmaster=None)
    assert accepts(s, A("postmaster@ex.org"), "+")
    with caplog.at_level(logging.WARNING):
        assert names(expand(s, A("postmaster@ex.org"), "+")) == ["postmaster@ex.org"]
    assert "no postmaster" in caplog.text


def test_aliases_nested_remote_and_dedup() -> None:
    s = snap(aliases={
        "team@ex.org": ("bob@ex.org", "list@ex.org", "Carol@Remote.Example"),
        "list@ex.org": ("alice@ex.org", "BOB@ex.org", "dave@remote.example"),
    })
    assert accepts(s, A("team@ex.org"), "+")
    assert names(expand(s, A("team@ex.org"), "+")) == [
        "bob@ex.org", "alice@ex.org", "dave@remote.example", "Carol@remote.example"]


def test_self_reference_delivers_to_the_mailbox_too() -> None:
    s = snap(aliases={"bob@ex.org": ("bob@ex.org", "bob@remote.example")})
    assert names(expand(s, A("bob@ex.org"), "+")) == ["bob@ex.org", "bob@remote.example"]


def test_alias_loop_stops_and_keeps_what_resolved(caplog: pytest.LogCaptureFixture) -> None:
    s = snap(aliases={
        "a@ex.org": ("b@ex.org", "alice@ex.org"),
        "b@ex.org": ("a@ex.org", "x@remote.example"),
    })
    with caplog.at_level(logging.WARNING):
        assert names(expand(s, A("a@ex.org"), "+")) == ["x@remote.example", "alice@ex.org"]
    assert "alias loop" in caplog.text
    # a loop through a user ends in that user's mailbox
    s2 = snap(
        aliases={"list@ex.org": ("bob@ex.org",)},
        forwards={"bob@ex.org": Forward((A("list@ex.org"),), keep=False)},
    )
    assert names(expand(s2, A("bob@ex.org"), "+")) == ["bob@ex.org"]


def test_pure_loop_gives_nothing() -> None:
    s = snap(aliases={"a@ex.org": ("b@ex.org",), "b@ex.org": ("a@ex.org",)})
    assert accepts(s, A("a@ex.org"), "+")
    assert expand(s, A("a@ex.org"), "+") == []


def test_depth_limit(caplog: pytest.LogCaptureFixture) -> None:
    chain = {f"l{i}@ex.org": (f"l{i + 1}@ex.org", f"r{i}@remote.example") for i in range(MAX_DEPTH + 5)}
    s = snap(aliases=chain)
    with caplog.at_level(logging.WARNING):
        result = names(expand(s, A("l0@ex.org"), "+"))
    assert result == [f"r{i}@remote.example" for i in reversed(range(MAX_DEPTH))]  # depth first
    assert f"deeper than {MAX_DEPTH}" in caplog.text


def test_catch_all() -> None:
    s = snap(aliases={"@ex.net": ("bob@ex.org",), "info@ex.net": ("alice@ex.org",)})
    assert accepts(s, A("anything@ex.net"), "+")
    assert names(expand(s, A("anything@ex.net"), "+")) == ["bob@ex.org"]
    assert names(expand(s, A("info@ex.net"), "+")) == ["alice@ex.org"]  # explicit beats catch-all
    assert not accepts(s, A("anything@ex.org"), "+")  # other domain has no catch-all


def test_forward_replaces_delivery_unless_keep() -> None:
    fwd = {"bob@ex.org": Forward((A("bob@remote.example"), A("alice@ex.org")), keep=False)}
    assert names(expand(snap(forwards=fwd), A("bob@ex.org"), "+")) == ["bob@remote.example", "alice@ex.org"]
    keep = {"bob@ex.org": Forward((A("bob@remote.example"),), keep=True)}
    assert names(expand(snap(forwards=keep), A("bob+tag@ex.org"), "+")) == ["bob@ex.org", "bob@remote.example"]


def test_unknown_local_target_is_returned_as_is() -> None:
    s = snap(aliases={"team@ex.org": ("Ghost@EX.org", "bob@ex.org")})
    assert names(expand(s, A("team@ex.org"), "+")) == ["ghost@ex.org", "bob@ex.org"]


def test_remote_address_expands_to_itself() -> None:
    assert names(expand(snap(), A("Someone@Remote.Example"), "+")) == ["Someone@remote.example"]
