"""Progress of long commands (imports, backups): a bar on a terminal, plain lines otherwise.

Rules:
1. On a terminal (stderr is a TTY) a ``rich`` progress bar; otherwise one line on stderr every
   ``PLAIN_EVERY`` items and at the end, so logs of a scripted run stay short and greppable.
2. Progress never goes to stdout: a command's output (an exported mbox) stays clean.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import TypeVar

from rich.progress import BarColumn, MofNCompleteColumn, TaskID, TextColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress

T = TypeVar("T")

PLAIN_EVERY = 1000  # items between two plain progress lines (Rule 1)


class Progress:
    def __init__(self, what: str, total: int | None) -> None:
        self._what = what
        self._total = total
        self._done = 0
        self._bar: RichProgress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> Progress:
        if sys.stderr.isatty():
            from rich.console import Console

            self._bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeRemainingColumn(), console=Console(stderr=True), transient=True)
            self._bar.start()
            self._task = self._bar.add_task(self._what, total=self._total)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.stop()
        elif self._done:
            print(f"{self._what}: {self._done} done", file=sys.stderr)

    def track(self, items: Iterable[T]) -> Iterator[T]:
        for item in items:
            yield item
            self.advance()

    def advance(self) -> None:
        self._done += 1
        if self._bar is not None and self._task is not None:
            self._bar.advance(self._task)
        elif self._done % PLAIN_EVERY == 0:
            of = f" of {self._total}" if self._total else ""
            print(f"{self._what}: {self._done}{of}", file=sys.stderr)

    def note(self, text: str) -> None:
        if self._bar is not None:
            self._bar.console.print(text)
        else:
            print(text, file=sys.stderr)
