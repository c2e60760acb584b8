"""Typed reading of one TOML table, with errors that name the file and the dotted key.

Rules:
1. Every value is read through a ``Table`` method that checks its type; TOML booleans are never
   accepted where a number is expected (Python's ``bool`` is an ``int``, TOML's is not).
2. Every key a ``Table`` was asked about is remembered; ``finish()`` turns any other key into an
   error, so a typo (``max_recipents``) fails loudly instead of silently using the default.
3. Durations are seconds: a number, or a string with a unit (``"90s"``, ``"30m"``, ``"4h"``,
   ``"5d"``, ``"1w"``). Sizes are bytes: an integer, or a string with a binary unit (``"512K"``,
   ``"50M"``, ``"1G"``; ``KiB``/``MB`` spellings accepted, always powers of 1024).

What can go wrong: every problem raises ``ConfigError("<file>: <key>: <problem>")``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class ConfigError(Exception):
    """The configuration is unreadable or invalid; the message names the file and the key."""


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_DURATION_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_SIZE = re.compile(r"^\s*(\d+)\s*(?:([kmg])(?:i?b)?|b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {None: 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def _type_name(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


class Table:
    """One TOML table (``data``) found at ``prefix`` ("" for the top level) in ``source``."""

    def __init__(self, data: dict[str, object], prefix: str, source: str) -> None:
        self._data = data
        self._prefix = prefix
        self._source = source
        self._seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self._prefix}.{name}" if self._prefix else name

    def error(self, name: str, problem: str) -> ConfigError:
        return ConfigError(f"{self._source}: {self.key(name)}: {problem}")

    def has(self, name: str) -> bool:
        self._seen.add(name)
        return name in self._data

    def _get(self, name: str) -> object:
        self._seen.add(name)
        return self._data[name]

    def table(self, name: str) -> Table:
        if not self.has(name):
            return Table({}, self.key(name), self._source)
        value = self._get(name)
        if not isinstance(value, dict):
            raise self.error(name, f"expected a table ([{self.key(name)}]), got {_type_name(value)}")
        return Table(value, self.key(name), self._source)

    def keys(self) -> list[str]:
        """The table's keys (for tables whose keys are data, such as domain → setting maps)."""
        return list(self._data)

    def finish(self) -> None:
        unknown = sorted(set(self._data) - self._seen)
        if unknown:
            others = f" (also unknown: {', '.join(unknown[1:])})" if unknown[1:] else ""
            raise self.error(unknown[0], "unknown key" + others)

    # -- scalars ---------------------------------------------------------------------------

    def string(self, name: str, default: str) -> str:
        if not self.has(name):
            return default
        return self._string_value(name, self._get(name))

    def opt_string(self, name: str) -> str | None:
        if not self.has(name):
            return None
        return self._string_value(name, self._get(name))

    def required_string(self, name: str) -> str:
        if not self.has(name):
            raise self.error(name, "required key is missing")
        return self._string_value(name, self._get(name))

    def _string_value(self, name: str, value: object) -> str:
        if not isinstance(value, str):
            raise self.error(name, f"expected a string, got {_type_name(value)}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        if not self.has(name):
            return default
        value = self._get(name)
        if not isinstance(value, bool):
            raise self.error(name, f"expected true or false, got {_type_name(value)}")
        return value

    def integer(self, name: str, default: int, minimum: int | None = None, maximum: int | None = None) -> int:
        if not self.has(name):
            return default
        value = self._get(name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(name, f"expected an integer, got {_type_name(value)}")
        self._check_range(name, value, minimum, maximum)
        return value

    def number(
        self, name: str, default: float, minimum: float | None = None, maximum: float | None = None
    ) -> float:
        if not self.has(name):
            return default
        value = self._get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.error(name, f"expected a number, got {_type_name(value)}")
        self._check_range(name, float(value), minimum, maximum)
        return float(value)

    def size(self, name: str, default: int, minimum: int = 1) -> int:
        """Bytes: an integer or a string like ``"50M"``."""
        if not self.has(name):
            return default
        value = self._get(name)
        if isinstance(value, str):
            m = _SIZE.match(value)
            if not m:
                raise self.error(name, f"{value!r} is not a size (e.g. 1048576, \"512K\", \"50M\", \"1G\")")
            unit = m.group(2).lower() if m.group(2) else None
            result = int(m.group(1)) * _SIZE_UNITS[unit]
        elif isinstance(value, int) and not isinstance(value, bool):
            result = value
        else:
            raise self.error(name, f"expected a size (bytes, or like \"50M\"), got {_type_name(value)}")
        self._check_range(name, result, minimum, None)
        return result

    def duration(self, name: str, default: float, minimum: float = 0.0, exclusive_min: bool = True) -> float:
        """Seconds: a number or a string like ``"4h"``."""
        if not self.has(name):
            return default
        return self._duration_value(name, self._get(name), minimum, exclusive_min)

    def _duration_value(self, name: str, value: object, minimum: float, exclusive_min: bool) -> float:
        if isinstance(value, str):
            m = _DURATION.match(value)
            if not m:
                raise self.error(name, f"{value!r} is not a duration (e.g. 300, \"90s\", \"4h\", \"5d\")")
            result = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            result = float(value)
        else:
            raise self.error(name, f"expected a duration (seconds, or like \"4h\"), got {_type_name(value)}")
        if result < minimum or (exclusive_min and result == minimum):
            bound = "greater than" if exclusive_min else "at least"
            raise self.error(name, f"must be {bound} {minimum:g} seconds, got {result:g}")
        return result

    @staticmethod
    def _range_text(minimum: float | None, maximum: float | None) -> str:
        if minimum is not None and maximum is not None:
            return f"between {minimum:g} and {maximum:g}"
        if minimum is not None:
            return f"at least {minimum:g}"
        return f"at most {maximum:g}"

    def _check_range(self, name: str, value: float, minimum: float | None, maximum: float | None) -> None:
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise self.error(name, f"must be {self._range_text(minimum, maximum)}, got {value:g}")

    # -- lists -----------------------------------------------------------------------------

    def string_list(
        self, name: str, default: tuple[str, ...] = (), allow_single: bool = False
    ) -> tuple[str, ...]:
        """An array of strings (or, with ``allow_single``, one string standing for a 1-array)."""
        if not self.has(name):
            return default
        value = self._get(name)
        if allow_single and isinstance(value, str):
            return (value,)
        if not isinstance(value, list):
            raise self.error(name, f"expected an array of strings, got {_type_name(value)}")
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise self.error(name, f"item {i + 1}: expected a string, got {_type_name(item)}")
        return tuple(value)

    def duration_list(self, name: str, default: tuple[float, ...]) -> tuple[float, ...]:
        if not self.has(name):
            return default
        value = self._get(name)
        if not isinstance(value, list):
            raise self.error(name, f"expected an array of durations, got {_type_name(value)}")
        if not value:
            raise self.error(name, "must not be empty")
        return tuple(self._duration_value(name, item, 0.0, True) for item in value)

    def mapped(self, name: str, values: tuple[str, ...], convert: Callable[[str], T]) -> tuple[T, ...]:
        """Convert each string of ``values`` (read from ``name``); a ValueError names the key."""
        out: list[T] = []
        for item in values:
            try:
                out.append(convert(item))
            except ValueError as exc:
                raise self.error(name, str(exc)) from None
        return tuple(out)
