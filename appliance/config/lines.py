"""Where each key of a TOML document is written.

tomllib validates and parses but keeps no positions, so errors about values
(which it cannot know are wrong) would have no line. This scanner runs only on
text tomllib has already accepted, and maps every key path, such as
("turn", "keys", 1, "token"), to its 1-based line.
"""
from __future__ import annotations

Path = tuple[str | int, ...]


def _split_key(text: str) -> tuple[str, ...]:
    """Split a (possibly dotted, possibly quoted) key into its parts."""
    parts: list[str] = []
    current: list[str] = []
    quote = None
    for ch in text.strip():
        if quote:
            if ch == quote:
                quote = None
            else:
                current.append(ch)
        elif ch in "\"'":
            quote = ch
        elif ch == ".":
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    parts.append("".join(current).strip())
    return tuple(parts)


def _key_end(line: str, stop: str) -> int:
    """Index of the first `stop` character outside quotes, or -1."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch == stop:
            return i
    return -1


class _ValueScanner:
    """Tracks, across lines, whether a value is still open (array, inline table, multi-line string)."""

    def __init__(self) -> None:
        self.depth = 0
        self.multiline: str | None = None

    @property
    def open(self) -> bool:
        return self.depth > 0 or self.multiline is not None

    def feed(self, text: str) -> None:
        i, n = 0, len(text)
        while i < n:
            if self.multiline:
                end = text.find(self.multiline, i)
                if end < 0:
                    return
                i = end + 3
                self.multiline = None
                continue
            ch = text[i]
            if text.startswith(('"""', "'''"), i):
                self.multiline = text[i : i + 3]
                i += 3
            elif ch in "\"'":
                i = self._skip_string(text, i)
            elif ch == "#":
                return
            elif ch in "[{":
                self.depth += 1
                i += 1
            elif ch in "]}":
                self.depth -= 1
                i += 1
            else:
                i += 1

    @staticmethod
    def _skip_string(text: str, i: int) -> int:
        quote, i = text[i], i + 1
        while i < len(text) and text[i] != quote:
            i += 2 if quote == '"' and text[i] == "\\" else 1
        return i + 1


def key_lines(text: str) -> dict[Path, int]:
    lines: dict[Path, int] = {}
    table: Path = ()
    array_counts: dict[Path, int] = {}
    value = _ValueScanner()
    for number, raw in enumerate(text.splitlines(), start=1):
        if value.open:
            value.feed(raw)
            continue
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[["):
            path = _split_key(line[2 : _key_end(line, "]")])
            index = array_counts.get(path, -1) + 1
            array_counts[path] = index
            table = path + (index,)
            lines.setdefault(path, number)
            lines[table] = number
        elif line.startswith("["):
            table = _split_key(line[1 : _key_end(line, "]")])
            lines.setdefault(table, number)
        else:
            eq = _key_end(line, "=")
            if eq < 0:
                continue
            lines.setdefault(table + _split_key(line[:eq]), number)
            value.feed(line[eq + 1 :])
    return lines


def dotted(path: Path) -> str:
    """A key path as an operator writes it: turn.keys[1].token."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def line_of(lines: dict[Path, int], path: Path) -> int:
    """The line of `path`, else of its nearest ancestor that is written (a table may appear only
    through its sub-tables, like [turn] through [[turn.keys]]); 1 when none is."""
    while path:
        if path in lines:
            return lines[path]
        inside = [line for key, line in lines.items() if key[: len(path)] == path]
        if inside:
            return min(inside)
        path = path[:-1]
    return 1
