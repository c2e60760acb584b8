"""Durability: the only place that flushes to disk (``fsync``, ``fdatasync``, ``syncfs``).

Below ``queue`` and ``store``; it imports nothing of Pigeon but ``core``.

* ``io`` — the file-IO seam: ``FileIO`` (the system calls durable code makes), ``REAL`` over
  ``os``, and the one copy of ``unlink_quietly``, ``makedirs_durable``, ``write_file_synced``.
* ``flushes`` — the flush kinds: ``FileSync`` (fsync), ``DataSync`` (fdatasync), ``DirSync``
  (a directory's fsync), ``FsSync`` (syncfs of a file system), and the ordered steps ``Close``
  and ``Unlink``.
* ``commit`` — the group-commit engine, ``GroupCommit``: "make this durable", shared among
  concurrent callers, from the event loop (``flush``, batched in one thread) or from a worker
  thread (``flush_blocking``).
* ``journal``, ``journal_read``, ``segments`` — the intake journal: fresh local mail made
  durable by appending to a made-ahead segment, one ``fdatasync`` per batch.
* ``testing`` — ``FaultyIO`` for tests: ``ENOSPC``, ``EIO`` or a crash at the Nth call of an
  operation, and the states a crash at that point may leave on the disk.

Rules:
1. Every ``fsync``, ``fdatasync`` and ``syncfs`` of the project goes through a ``FileIO`` (the
   queue, the journal, the Maildir store, the IMAP mailboxes, the TLS certificate). Each call
   site states its reason in its module's docstring, in one of the forms below.
2. A file's flush comes before the name that makes it reachable (a rename or link into a
   directory that readers or recovery scan): a crash never shows a name whose bytes are not
   on disk.
3. A directory's flush comes after the names in it changed and before anything is promised
   that rests on them (a ``250``, a ``delivered``, forgetting a copy elsewhere): a crash never
   undoes a step someone was told about.
4. The journal's ``fdatasync`` is the commit point of fast-path mail; ``syncfs`` stands for the
   flushes of rules 2 and 3 where it reports errors (``flushes`` Rule 1).

SQLite (the directory, the mailbox index) flushes its own files; it is outside this seam,
except the mailbox index's commits made without a flush, whose WAL is flushed here
(``flushes.PathDataSync``, ``store.mailbox.index`` Rule 2).
"""
