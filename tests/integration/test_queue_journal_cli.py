"""Mail held in the intake journal, acted on from the command line (issue 15, "the queue is one
road"; control.queueops rules 1-3), on the real server with its data directory on a small
tmpfs that the test fills, so that accepted mail stays in the journal.

1. Server running: ``pigeon queue show`` shows a held journal message (state ``journal``,
   its last results, its header section); ``queue delete`` removes it for good (it is never
   delivered once there is room); ``queue hold`` that cannot be written says so and leaves
   the message where it was (delivered once there is room).
2. Server stopped: ``show`` reads the journal; ``delete`` and ``hold`` move what the journals
   hold into the queue files first, then act; the next start delivers what is left, keeps the
   held one on hold, and ``queue release`` lets it go.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.fulldisk import fill, small_fs
from tests.integration.harness import Server
from tests.integration.test_full_disk import (
    ALICE,
    PASSWORD,
    SEGMENT,
    queue_ids,
    send,
    subjects,
    wait,
    wait_spare,
)

pytestmark = pytest.mark.integration


def cli_when_idle(srv: Server, *args: str) -> subprocess.CompletedProcess[str]:
    """``pigeon *args``, again if it met one of the lane's own tries under way (a held message
    is tried every few seconds; such a try takes milliseconds): "try again in a moment"."""
    for _ in range(5):
        res = srv.cli(*args, check=False)
        if "try again in a moment" not in res.stderr:
            return res
        time.sleep(0.2)
    raise AssertionError(f"pigeon {' '.join(args)}: always busy: {res.stderr}")


def start_and_fill(srv: Server, data: Path, *subjects_: str) -> tuple[Path, dict[str, str]]:
    """Start, deliver one message (the journal's segment is then made ahead), fill the disk,
    and send ``subjects_``: each accepted into the journal and held there. Returns the filler
    and the queue id of each subject."""
    srv.add_user(ALICE, PASSWORD)
    srv.start()
    wait_spare(data / "queue" / "journal" / "main")
    assert send(srv, "first")[0] == 250
    wait(lambda: subjects(srv) == ["first"], "the first message delivered")
    filler = fill(data)
    ids = {}
    for subject in subjects_:
        code, text = send(srv, subject)
        assert code == 250, text
        ids[subject] = text.split()[-1]
    wait(lambda: len(queue_ids(srv, "journal")) == len(subjects_), "the messages held", timeout=15)
    return filler, ids


def test_show_delete_and_hold_reach_journal_mail_of_the_running_server(tmp_path: Path) -> None:
    srv = Server(tmp_path)
    with small_fs(srv.data_dir, f"{6 * SEGMENT // (1024 * 1024)}m") as data:
        try:
            filler, ids = start_and_fill(srv, data, "kept", "deleted")
            shown = srv.queue_show(ids["kept"])
            assert shown["state"] == "journal" and shown["id"] == ids["kept"]
            (rcpt,) = shown["recipients"]
            assert rcpt["status"] == "deferred" and "held in the intake journal" in rcpt["last_reply"]
            assert "Subject: kept" in shown["headers"]
            text = srv.cli("queue", "show", ids["kept"]).stdout
            assert "State:     journal" in text and "Subject: kept" in text

            res = cli_when_idle(srv, "queue", "delete", ids["deleted"])
            assert res.returncode == 0 and res.stdout.strip() == f"{ids['deleted']}: deleted", res
            assert queue_ids(srv, "journal") == [ids["kept"]]
            res = cli_when_idle(srv, "queue", "hold", ids["kept"])  # the disk is still full
            assert res.returncode != 0 and "No space left" in res.stderr, res
            assert queue_ids(srv, "journal") == [ids["kept"]]  # where it was

            filler.unlink()
            srv.cli("queue", "flush")
            wait(lambda: "kept" in subjects(srv), "the kept message delivered", timeout=15)
            wait(lambda: srv.queue_list() == [], "the queue empty")
            assert subjects(srv) == ["first", "kept"]  # the deleted one, never
            missing = srv.cli("queue", "show", ids["deleted"], check=False)
            assert missing.returncode != 0
            assert "Traceback" not in srv.log
        finally:
            srv.stop()


def test_show_delete_hold_and_release_reach_journal_mail_of_a_stopped_server(tmp_path: Path) -> None:
    srv = Server(tmp_path)
    with small_fs(srv.data_dir, f"{6 * SEGMENT // (1024 * 1024)}m") as data:
        try:
            filler, ids = start_and_fill(srv, data, "held", "deleted", "delivered")
            srv.stop()  # the held messages stay in the journal (qmgr.lane rule 5)
            filler.unlink()

            assert queue_ids(srv, "journal") == sorted(ids.values())  # read from the data directory
            shown = srv.queue_show(ids["delivered"])
            assert shown["state"] == "journal" and "Subject: delivered" in shown["headers"]
            assert srv.cli("queue", "delete", ids["deleted"]).stdout.strip() == f"{ids['deleted']}: deleted"
            assert srv.cli("queue", "hold", ids["held"]).stdout.strip() == f"{ids['held']}: put on hold"
            listed = {m["id"]: m["state"] for m in srv.queue_list()}
            assert listed == {ids["held"]: "hold", ids["delivered"]: "active"}  # moved, as a start would

            srv.start()
            wait(lambda: "delivered" in subjects(srv), "the active message delivered", timeout=15)
            assert {m["id"]: m["state"] for m in srv.queue_list()} == {ids["held"]: "hold"}
            srv.cli("queue", "release", ids["held"])
            wait(lambda: "held" in subjects(srv), "the released message delivered", timeout=15)
            assert subjects(srv) == ["delivered", "first", "held"]  # "deleted", never
            wait(lambda: srv.queue_list() == [], "the queue empty")
            assert "Traceback" not in srv.log
        finally:
            srv.stop()
