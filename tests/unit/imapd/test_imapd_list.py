"""Issue 14 at the session level: LIST patterns that made the old regex backtrack are answered at
once while other sessions are served, patterns over the limits are BAD, and the answers to
ordinary LIST/LSUB commands are those of the old matcher."""

from __future__ import annotations

import time

import pytest

from tests.unit.imapd.helpers import RawClient, ServerThread


def test_hostile_list_patterns_answer_at_once_and_others_are_served(server: ServerThread) -> None:
    with RawClient(server.port, timeout=5) as c, RawClient(server.port, timeout=5) as other:
        c.login()
        other.login()
        start = time.monotonic()  # 7 s with the old regex on the default folders (0.4 s with 30 stars)
        assert c.cmd(b"l0", b'LIST "" "' + b"*" * 45 + b'x"') == [b"l0 OK LIST completed\r\n"]
        assert time.monotonic() - start < 1.0
        for i in range(20):
            c.cmd(b"c%d" % i, b"CREATE a%d/%s" % (i, b"a" * 200))
        for tag, pattern in [(b"l1", b"*" * 30 + b"x"), (b"l2", b"*%" * 300), (b"l3", b"*a" * 250 + b"%b")]:
            start = time.monotonic()
            resp = c.cmd(tag, b'LIST "" "' + pattern + b'"')
            assert resp[-1] == tag + b" OK LIST completed\r\n"
            assert time.monotonic() - start < 1.0
        # many LISTs in flight on one connection; the other session is answered meanwhile
        c.send(b"".join(b'm%d LIST "" ("*a%s%%b" "*%%a*a*%d")\r\n' % (i, b"*a" * 200, i) for i in range(30)))
        for i in range(5):
            start = time.monotonic()
            assert other.cmd(b"n%d" % i, b"NOOP") == [b"n%d OK NOOP completed\r\n" % i]
            assert time.monotonic() - start < 0.5
        c.until(b"m29")


def test_list_pattern_over_the_limit_is_bad(server: ServerThread) -> None:
    with RawClient(server.port) as c:
        c.login()
        assert c.cmd(b"a", b'LIST "" "' + b"%" * 1025 + b'"') == [
            b"a BAD mailbox pattern longer than 1024 octets\r\n"]
        many = b" ".join(b"p%d" % i for i in range(17))
        assert c.cmd(b"b", b'LIST "" (' + many + b")") == [b"b BAD more than 16 mailbox patterns\r\n"]


def test_list_and_lsub_answers_are_unchanged(server: ServerThread) -> None:
    """The answers of the old regex matcher (recorded on it), for a tree with subscriptions, a
    deleted subscribed folder, INBOX in another case, and parents of subscribed names."""
    with RawClient(server.port) as c:
        c.login()
        for name in (b"Work/Projects/Alpha", b"Work/Notes", b"INBOX/Lists", b"Old"):
            assert c.cmd(b"c", b"CREATE " + name)[-1].startswith(b"c OK")
        for name in (b"Work/Projects/Alpha", b"INBOX/Lists", b"Old"):
            assert c.cmd(b"s", b"SUBSCRIBE " + name)[-1].startswith(b"s OK")
        c.cmd(b"d", b"DELETE Old")
        got = {}
        for i, command in enumerate(RECORDED):
            got[command] = c.cmd(b"t%d" % i, command)[:-1]
        assert got == RECORDED


# Recorded with the regex matcher (the code before issue 14) on the tree the test builds.
RECORDED: dict[bytes, list[bytes]] = {
    b'LIST "" "inbox*"': [
        b'* LIST (\\HasChildren) "/" INBOX\r\n',
        b'* LIST (\\HasNoChildren) "/" INBOX/Lists\r\n',
    ],
    b'LIST "" "*"': [
        b'* LIST (\\HasChildren) "/" INBOX\r\n',
        b'* LIST (\\HasNoChildren \\Archive) "/" Archive\r\n',
        b'* LIST (\\HasNoChildren \\Drafts) "/" Drafts\r\n',
        b'* LIST (\\HasNoChildren) "/" INBOX/Lists\r\n',
        b'* LIST (\\HasNoChildren \\Junk) "/" Junk\r\n',
        b'* LIST (\\HasNoChildren \\Sent) "/" Sent\r\n',
        b'* LIST (\\HasNoChildren \\Trash) "/" Trash\r\n',
        b'* LIST (\\HasChildren) "/" Work\r\n',
        b'* LIST (\\HasNoChildren) "/" Work/Notes\r\n',
        b'* LIST (\\HasChildren) "/" Work/Projects\r\n',
        b'* LIST (\\HasNoChildren) "/" Work/Projects/Alpha\r\n',
    ],
    b'LIST "" "%"': [
        b'* LIST (\\HasChildren) "/" INBOX\r\n',
        b'* LIST (\\HasNoChildren \\Archive) "/" Archive\r\n',
        b'* LIST (\\HasNoChildren \\Drafts) "/" Drafts\r\n',
        b'* LIST (\\HasNoChildren \\Junk) "/" Junk\r\n',
        b'* LIST (\\HasNoChildren \\Sent) "/" Sent\r\n',
        b'* LIST (\\HasNoChildren \\Trash) "/" Trash\r\n',
        b'* LIST (\\HasChildren) "/" Work\r\n',
    ],
    b'LIST "Work/" "%"': [
        b'* LIST (\\HasNoChildren) "/" Work/Notes\r\n',
        b'* LIST (\\HasChildren) "/" Work/Projects\r\n',
    ],
    b'LIST "" "Work/%/%"': [
        b'* LIST (\\HasNoChildren) "/" Work/Projects/Alpha\r\n',
    ],
    b'LIST "" "*/Alpha"': [
        b'* LIST (\\HasNoChildren) "/" Work/Projects/Alpha\r\n',
    ],
    b'LIST (SUBSCRIBED) "" "*"': [
        b'* LIST (\\HasChildren \\Subscribed) "/" INBOX\r\n',
        b'* LIST (\\HasNoChildren \\Archive \\Subscribed) "/" Archive\r\n',
        b'* LIST (\\HasNoChildren \\Drafts \\Subscribed) "/" Drafts\r\n',
        b'* LIST (\\HasNoChildren \\Subscribed) "/" INBOX/Lists\r\n',
        b'* LIST (\\HasNoChildren \\Junk \\Subscribed) "/" Junk\r\n',
        b'* LIST (\\NonExistent \\Subscribed) "/" Old\r\n',
        b'* LIST (\\HasNoChildren \\Sent \\Subscribed) "/" Sent\r\n',
        b'* LIST (\\HasNoChildren \\Trash \\Subscribed) "/" Trash\r\n',
        b'* LIST (\\HasNoChildren \\Subscribed) "/" Work/Projects/Alpha\r\n',
    ],
    b'LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"': [
        b'* LIST (\\HasChildren \\Subscribed) "/" INBOX ("CHILDINFO" ("SUBSCRIBED"))\r\n',
        b'* LIST (\\HasNoChildren \\Archive \\Subscribed) "/" Archive\r\n',
        b'* LIST (\\HasNoChildren \\Drafts \\Subscribed) "/" Drafts\r\n',
        b'* LIST (\\HasNoChildren \\Junk \\Subscribed) "/" Junk\r\n',
        b'* LIST (\\NonExistent \\Subscribed) "/" Old\r\n',
        b'* LIST (\\HasNoChildren \\Sent \\Subscribed) "/" Sent\r\n',
        b'* LIST (\\HasNoChildren \\Trash \\Subscribed) "/" Trash\r\n',
        b'* LIST (\\HasChildren) "/" Work ("CHILDINFO" ("SUBSCRIBED"))\r\n',
    ],
    b'LIST "" ("Work*" "INBOX/%") RETURN (SUBSCRIBED CHILDREN)': [
        b'* LIST (\\HasNoChildren \\Subscribed) "/" INBOX/Lists\r\n',
        b'* LIST (\\HasChildren) "/" Work\r\n',
        b'* LIST (\\HasNoChildren) "/" Work/Notes\r\n',
        b'* LIST (\\HasChildren) "/" Work/Projects\r\n',
        b'* LIST (\\HasNoChildren \\Subscribed) "/" Work/Projects/Alpha\r\n',
    ],
    b'LIST (SPECIAL-USE) "" "*"': [
        b'* LIST (\\HasNoChildren \\Archive) "/" Archive\r\n',
        b'* LIST (\\HasNoChildren \\Drafts) "/" Drafts\r\n',
        b'* LIST (\\HasNoChildren \\Junk) "/" Junk\r\n',
        b'* LIST (\\HasNoChildren \\Sent) "/" Sent\r\n',
        b'* LIST (\\HasNoChildren \\Trash) "/" Trash\r\n',
    ],
    b'LSUB "" "*"': [
        b'* LSUB () "/" INBOX\r\n',
        b'* LSUB () "/" Archive\r\n',
        b'* LSUB () "/" Drafts\r\n',
        b'* LSUB () "/" INBOX/Lists\r\n',
        b'* LSUB () "/" Junk\r\n',
        b'* LSUB () "/" Old\r\n',
        b'* LSUB () "/" Sent\r\n',
        b'* LSUB () "/" Trash\r\n',
        b'* LSUB () "/" Work/Projects/Alpha\r\n',
        b'* LSUB (\\Noselect) "/" Work\r\n',
        b'* LSUB (\\Noselect) "/" Work/Projects\r\n',
    ],
    b'LSUB "" "%"': [
        b'* LSUB () "/" INBOX\r\n',
        b'* LSUB () "/" Archive\r\n',
        b'* LSUB () "/" Drafts\r\n',
        b'* LSUB () "/" Junk\r\n',
        b'* LSUB () "/" Old\r\n',
        b'* LSUB () "/" Sent\r\n',
        b'* LSUB () "/" Trash\r\n',
        b'* LSUB (\\Noselect) "/" Work\r\n',
    ],
    b'LSUB "" "Work/%"': [
        b'* LSUB (\\Noselect) "/" Work/Projects\r\n',
    ],
    b'LSUB "Work/" "%"': [
        b'* LSUB (\\Noselect) "/" Work/Projects\r\n',
    ],
    b'LSUB "" "inbox/*"': [
        b'* LSUB () "/" INBOX/Lists\r\n',
    ],
    b'LSUB "" "*/%"': [
        b'* LSUB () "/" INBOX/Lists\r\n',
        b'* LSUB () "/" Work/Projects/Alpha\r\n',
        b'* LSUB (\\Noselect) "/" Work/Projects\r\n',
    ],
}
