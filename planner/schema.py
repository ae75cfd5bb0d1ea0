"""Reading user files field by field, collecting every problem of a file before failing.

Error shape (STYLE.md):
`profiles/x.yaml: nodes[2].bandwidth_GBps: expected a number > 0, got '450e9'`.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from planner.errors import InputError
from planner.units import is_number


def read_text(path: Path) -> str:
    """A user's text file (a log, a topology dump); errors name the file."""
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file", hint="check the path") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc}") from None


def refuse_overwrite(path: Path, *, force: bool) -> None:
    """Nothing the user wrote is replaced unless they ask (--force)."""
    if path.exists() and not force:
        raise InputError(f"{path}: exists; not overwriting it",
                         hint="pass --force to replace it, or choose another -o path")


def write_new_file(path: Path, text: str, *, force: bool) -> None:
    """Write `text` to `path`; an existing file is replaced only with `force`."""
    refuse_overwrite(path, force=force)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def read_document(path: Path) -> Any:
    """Load a YAML or JSON file; a syntax error becomes an InputError naming the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file", hint="check the path") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, expected a file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read: {exc}") from None
    try:
        if path.suffix == ".json":
            return json.loads(text)
        return yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: line {exc.lineno}: invalid JSON: {exc.msg}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise InputError(f"{path}: {where}invalid YAML: {problem}") from None


def _describe(value: object) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


class Reader:
    """Reads typed fields from one mapping of one file, collecting problems.

    Nested readers (`child`) share the problem list, so one `check()` reports the whole file.
    """

    def __init__(self, source: str, data: object, prefix: str = "",
                 problems: list[str] | None = None) -> None:
        self.source = source
        self.prefix = prefix
        self.problems: list[str] = [] if problems is None else problems
        if isinstance(data, Mapping):
            self.data: Mapping[str, Any] = data
        else:
            self.data = {}
            where = prefix.rstrip(".") or "top level"
            self.problems.append(f"{where}: expected a mapping, got {_describe(data)}")
        self.used: set[str] = set()

    def path(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def fail(self, key: str, message: str) -> None:
        self.problems.append(f"{self.path(key)}: {message}")

    def has(self, key: str) -> bool:
        return key in self.data and self.data[key] is not None

    def raw(self, key: str) -> Any:
        self.used.add(key)
        return self.data.get(key)

    def _missing(self, key: str, what: str) -> None:
        self.fail(key, f"missing; expected {what}")

    def int(self, key: str, *, minimum: int = 1, default: int | None = None,
            required: bool = True) -> int | None:
        """An integer >= minimum. YAML floats such as 8.0 are accepted when integral."""
        value = self.raw(key)
        what = f"an integer >= {minimum}"
        if value is None:
            if default is None and required:
                self._missing(key, what)
            return default
        if is_number(value) and float(value).is_integer() and value >= minimum:
            return int(value)
        self.fail(key, f"expected {what}, got {_describe(value)}")
        return default

    def number(self, key: str, *, positive: bool = True, default: float | None = None,
               required: bool = True, unit_hint: str = "") -> float | None:
        """A finite number (> 0 when positive). '450e9' (a string to PyYAML) is named as such."""
        value = self.raw(key)
        what = "a number > 0" if positive else "a number >= 0"
        if value is None:
            if default is None and required:
                self._missing(key, what)
            return default
        if is_number(value) and (value > 0 if positive else value >= 0):
            return float(value)
        message = f"expected {what}{unit_hint}, got {_describe(value)}"
        if isinstance(value, str):
            try:
                float(value)
                message += (" (YAML reads numbers like 450e9 without a decimal point as text: "
                            "write 450.0e9, or use the unit the key names)")
            except ValueError:
                pass
        self.fail(key, message)
        return default

    def fraction(self, key: str, *, default: float) -> float:
        value = self.raw(key)
        if value is None:
            return default
        if is_number(value) and 0 <= value <= 1:
            return float(value)
        self.fail(key, f"expected a fraction between 0 and 1, got {_describe(value)}")
        return default

    def string(self, key: str, *, default: str | None = None, required: bool = True) -> str | None:
        value = self.raw(key)
        if value is None:
            if default is None and required:
                self._missing(key, "a string")
            return default
        if isinstance(value, str) and value.strip():
            return value
        if is_number(value):  # names like `1` are fine as text
            return str(value)
        self.fail(key, f"expected a non-empty string, got {_describe(value)}")
        return default

    def boolean(self, key: str, *, default: bool) -> bool:
        value = self.raw(key)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        self.fail(key, f"expected true or false, got {_describe(value)}")
        return default

    def choice(self, key: str, choices: Iterable[str], *, default: str | None = None,
               required: bool = True) -> str | None:
        options = list(choices)
        value = self.raw(key)
        if value is None:
            if default is None and required:
                self._missing(key, "one of " + ", ".join(options))
            return default
        if isinstance(value, str) and value.lower() in options:
            return value.lower()
        self.fail(key, f"expected one of {', '.join(options)}, got {_describe(value)}")
        return default

    def child(self, key: str, *, required: bool = False) -> Reader | None:
        value = self.raw(key)
        if value is None:
            if required:
                self._missing(key, "a mapping")
            return None
        return Reader(self.source, value, f"{self.path(key)}.", self.problems)

    def items(self, key: str, *, required: bool = False) -> list[Reader]:
        """The elements of a list of mappings, each as a Reader at `key[i].`."""
        value = self.raw(key)
        if value is None:
            if required:
                self._missing(key, "a list")
            return []
        if not isinstance(value, list):
            self.fail(key, f"expected a list, got {_describe(value)}")
            return []
        return [Reader(self.source, item, f"{self.path(key)}[{i}].", self.problems)
                for i, item in enumerate(value)]

    def unknown_keys(self, allowed: Iterable[str]) -> None:
        """Flag keys that are neither read nor allowed: a misspelt key must not be ignored."""
        known = set(allowed) | self.used
        for key in self.data:
            if key not in known:
                close = difflib.get_close_matches(str(key), sorted(known), n=1, cutoff=0.75)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                self.fail(str(key), f"unknown key{hint}")

    def check(self, what: str = "") -> None:
        """Raise one InputError listing every problem collected so far."""
        if not self.problems:
            return
        first = f"{self.source}: {self.problems[0]}"
        rest = tuple(f"{self.source}: {p}" for p in self.problems)
        more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        raise InputError(first + more, hint=what or None, problems=rest)
