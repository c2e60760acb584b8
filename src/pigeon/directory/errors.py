"""The directory's one exception: a refused change or an unusable database.

``DirectoryError`` messages are written for the operator (the CLI prints them as
``pigeon: <message>``); they never contain a password.
"""

from __future__ import annotations


class DirectoryError(Exception):
    """A directory operation was refused (unknown user, non-local domain, bad alias line...)."""
