"""The user directory: local domains, users and their passwords, forwards and aliases.

``Directory`` (SQLite, in ``data_dir/directory.sqlite3``) is what smtpd asks at RCPT
(``accepts``), what cleanup asks for the final recipients (``expand``) and what AUTH asks
(``verify_password``). The rules of lookup and expansion are in ``resolve``; the aliases(5)
import format in ``aliasfile``.
"""

from pigeon.directory.aliasfile import AliasEntry, parse_aliases
from pigeon.directory.directory import Directory
from pigeon.directory.errors import DirectoryError
from pigeon.directory.resolve import MAX_DEPTH, fold

__all__ = ["MAX_DEPTH", "AliasEntry", "Directory", "DirectoryError", "fold", "parse_aliases"]
