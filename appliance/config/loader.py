"""Turns a parsed TOML document into the schema's frozen dataclasses, collecting every problem."""
from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from .lines import Path, dotted, line_of
from .values import Invalid

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

D = TypeVar("D", bound="DataclassInstance")


@dataclass(frozen=True, order=True)
class Problem:
    line: int
    key: str
    message: str

    def render(self, source: str) -> str:
        return f"{source}:{self.line}: {self.key}: {self.message}"


def describe(raw: object) -> str:
    if isinstance(raw, dict):
        return "a table"
    if isinstance(raw, list):
        return "an array"
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, (str, int, float)):
        return json.dumps(raw)
    return str(raw)


class _Skip(Exception):
    """A value already reported as a problem; its parent is not built."""


class Loader:
    def __init__(self, lines: dict[Path, int]):
        self.lines = lines
        self.problems: list[Problem] = []

    def problem(self, path: Path, message: str) -> None:
        self.problems.append(Problem(line_of(self.lines, path), dotted(path), message))

    def build(self, cls: type[D], data: Any, path: Path) -> D:
        if not isinstance(data, dict):
            self.problem(path, f"expected a table, found {describe(data)}")
            raise _Skip
        hints = typing.get_type_hints(cls, include_extras=True)
        names = [f.name for f in dataclasses.fields(cls)]
        kwargs: dict[str, Any] = {}
        failed = False
        for key in data:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f" (known keys: {', '.join(names)})"
                self.problem(path + (key,), f"unknown key{hint}")
                failed = True
        for f in dataclasses.fields(cls):
            if f.name in data:
                try:
                    kwargs[f.name] = self.convert(hints[f.name], data[f.name], path + (f.name,))
                except _Skip:
                    failed = True
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                self.problem(path + (f.name,), "required key is missing")
                failed = True
        if failed:
            raise _Skip
        return cls(**kwargs)

    def convert(self, hint: Any, raw: Any, path: Path) -> Any:
        origin = typing.get_origin(hint)
        if origin is typing.Annotated:
            return self._parse(hint.__metadata__[0], raw, path)
        if origin in (types.UnionType, typing.Union):
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            return self.convert(args[0], raw, path)
        if origin is tuple:
            return self._array(typing.get_args(hint)[0], raw, path)
        if origin is typing.Literal:
            choices = typing.get_args(hint)
            if raw not in choices:
                self.problem(path, f"expected one of {', '.join(map(json.dumps, choices))}, found {describe(raw)}")
                raise _Skip
            return raw
        if isinstance(hint, type) and dataclasses.is_dataclass(hint) and not hasattr(hint, "parse"):
            return self.build(hint, raw, path)
        if hasattr(hint, "parse"):
            return self._parse(hint.parse, raw, path)
        return self._parse(_PLAIN[hint], raw, path)

    def _array(self, item: Any, raw: Any, path: Path) -> tuple:
        if not isinstance(raw, list):
            self.problem(path, f"expected an array, found {describe(raw)}")
            raise _Skip
        out, failed = [], False
        for i, element in enumerate(raw):
            try:
                out.append(self.convert(item, element, path + (i,)))
            except _Skip:
                failed = True
        if failed:
            raise _Skip
        return tuple(out)

    def _parse(self, parse: Callable[[Any], Any], raw: Any, path: Path) -> Any:
        try:
            return parse(raw)
        except Invalid as e:
            self.problem(path, f"expected {e}, found {describe(raw)}")
            raise _Skip from None


def _plain(kind: type, expected: str) -> Callable[[Any], Any]:
    def parse(raw: Any) -> Any:
        if isinstance(raw, bool) != (kind is bool) or not isinstance(raw, kind):
            raise Invalid(expected)
        return raw

    return parse


_PLAIN = {
    str: _plain(str, "a string"),
    int: _plain(int, "an integer"),
    bool: _plain(bool, "true or false"),
}


def load(cls: type[D], data: dict, lines: dict[Path, int]) -> tuple[D | None, list[Problem]]:
    loader = Loader(lines)
    try:
        return loader.build(cls, data, ()), loader.problems
    except _Skip:
        return None, loader.problems
