"""qmgr's choice of a delivery agent (qmgr.manager rules 2 and 7)."""

from __future__ import annotations

from pigeon.qmgr.manager import transport


def test_journaled_mail_goes_to_the_fast_agent_or_the_relay_agent_by_domain() -> None:
    assert transport(True, True) == "fastlane"
    assert transport(True, False) == "relay"  # relayed from memory on the fast road (qmgr.lane)


def test_a_message_in_the_queue_files_goes_to_local_or_relay_by_domain() -> None:
    assert transport(False, True) == "local"
    assert transport(False, False) == "relay"
