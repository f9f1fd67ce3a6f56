"""A small synchronous client for BIRD 2's control socket (`bird.ctl`), the one birdc talks to.

BIRD calls the format stable. Each command is one line; each reply line starts with a four-digit
code and then '-' (more lines follow) or ' ' (the last line), or with a single space alone: a
continuation carrying the previous line's code. 0xxx is success, 1xxx/2xxx are table rows and
headings, 8xxx run-time errors and 9xxx syntax errors. BIRD greets with 0001 on connect.
"""
from __future__ import annotations

import ipaddress
import re
import socket
import time
from dataclasses import dataclass

WELCOME = 1
RECONFIGURED = 3
RECONFIGURING = 4
RECONFIGURATION_QUEUED = 5
PROTOCOL_ROW = 1002
ROUTE_ROW = 1007
VERSION_ROW = 1000
STATUS_ROW = 1011
RUNNING = "Daemon is up and running"

_LINE = re.compile(r"(\d{4})([ -])(.*)", re.ASCII | re.DOTALL)


class BirdError(Exception):
    """BIRD refused a command (8xxx, 9xxx) or answered with a code the caller cannot accept."""

    def __init__(self, code: int, message: str):
        super().__init__(f"BIRD replied {code:04d}: {message}")
        self.code = code
        self.message = message


class BirdProtocolError(ConnectionError):
    """What came over the socket is not BIRD's reply format, or it closed in the middle of a reply."""


@dataclass(frozen=True)
class ReplyLine:
    code: int
    text: str


@dataclass(frozen=True)
class Reply:
    code: int  # the last line's
    lines: tuple[ReplyLine, ...]

    @property
    def message(self) -> str:
        return self.lines[-1].text

    def texts(self, code: int) -> list[str]:
        """The text of each line carrying `code`, in order."""
        return [line.text for line in self.lines if line.code == code]


@dataclass(frozen=True)
class ProtocolState:
    """One row of `show protocols`."""

    name: str
    proto: str  # BGP, Static, Device, BFD...
    table: str  # "---" when the protocol has several channels or none
    state: str  # up, down, start, stop
    since: str
    info: str  # for BGP: Established, Active, Connect, Idle, with any error after it


@dataclass(frozen=True)
class Status:
    """`show status`: the version, the router ID, and the daemon's state message."""

    version: str
    router_id: str
    message: str

    @property
    def running(self) -> bool:
        return self.message == RUNNING


class BirdControl:
    """One connection to BIRD's control socket. Any socket error or timeout closes it."""

    def __init__(self, path: str, timeout: float = 5.0):
        self.timeout = timeout
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._reader = self._sock.makefile("rb")
        try:
            self._sock.settimeout(timeout)
            self._sock.connect(path)
            greeting = self._read_reply()
        except BaseException:
            self.close()
            raise
        if greeting.code != WELCOME:
            self.close()
            raise BirdProtocolError(f"{path} greeted with {greeting.code:04d} {greeting.message!r}, not BIRD's 0001")
        self.greeting = greeting.message

    def __enter__(self) -> BirdControl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        # The socket's descriptor stays open until the file reading from it is closed too.
        self._reader.close()
        self._sock.close()

    def command(self, text: str) -> Reply:
        """Send one command and return BIRD's whole reply; raise BirdError on 8xxx or 9xxx."""
        if "\n" in text:
            raise ValueError(f"a BIRD command is one line: {text!r}")
        try:
            self._sock.sendall(text.encode() + b"\n")
            reply = self._read_reply()
        except BaseException:
            # A half-read reply would be taken for the next command's: the connection is done.
            self.close()
            raise
        if reply.code >= 8000:
            raise BirdError(reply.code, reply.message)
        return reply

    def protocols(self) -> dict[str, ProtocolState]:
        """Every protocol by name, from `show protocols`."""
        out = {}
        for row in self.command("show protocols").texts(PROTOCOL_ROW):
            # Columns are split on blanks, not by position: a long name pushes the rest along.
            # `Since` is one word in BIRD's default time format, which the rendered config keeps.
            fields = row.split(None, 5)
            if len(fields) < 5:
                raise BirdProtocolError(f"a `show protocols` row with fewer than 5 columns: {row!r}")
            name, proto, table, state, since = fields[:5]
            info = fields[5].strip() if len(fields) > 5 else ""
            out[name] = ProtocolState(name, proto, table, state, since, info)
        return out

    def exported(self, channel: str) -> list[str]:
        """The prefixes BIRD exports through `channel` (a protocol and channel: peer_192_0_2_1.ipv4)."""
        prefixes = []
        for text in self.command(f"show route export {channel}").texts(ROUTE_ROW):
            # A route's first line starts with its prefix; table headings, blank separators and
            # further paths of the same prefix do not.
            first = text.split(None, 1)[0] if text.strip() else ""
            try:
                prefixes.append(str(ipaddress.ip_network(first)))
            except ValueError:
                continue
        return prefixes

    def status(self) -> Status:
        reply = self.command("show status")
        version = " ".join(reply.texts(VERSION_ROW))
        router_id = ""
        for text in reply.texts(STATUS_ROW):
            if text.startswith("Router ID is "):
                router_id = text.removeprefix("Router ID is ")
        return Status(version, router_id, reply.message)

    def configure(self, timeout: float = 30.0, poll: float = 0.1) -> None:
        """Reload BIRD's config file (a full `configure`, not `soft`, so exports are re-evaluated).

        Returns once the new config is in force. BIRD answers 0004 instead of 0003 when protocols
        must shut down first; the reconfiguration then finishes later, which `show status` tells.
        Raises BirdError on a bad file (8002), leaving the running config as it was.
        """
        reply = self.command("configure")
        if reply.code == RECONFIGURED:
            return
        if reply.code not in (RECONFIGURING, RECONFIGURATION_QUEUED):
            raise BirdError(reply.code, reply.message)
        deadline = time.monotonic() + timeout
        while not (status := self.status()).running:
            if time.monotonic() > deadline:
                raise TimeoutError(f"BIRD still says {status.message!r} {timeout} s after `configure`")
            time.sleep(poll)

    def _read_reply(self) -> Reply:
        lines: list[ReplyLine] = []
        while True:
            raw = self._reader.readline()
            if not raw.endswith(b"\n"):
                raise BirdProtocolError(f"the control socket closed in the middle of a reply: {raw!r}")
            line = raw[:-1].decode("utf-8", "replace")
            match = _LINE.fullmatch(line)
            if match:
                code, last = int(match[1]), match[2] == " "
                lines.append(ReplyLine(code, match[3]))
                if last:
                    return Reply(code, tuple(lines))
            elif line.startswith(" ") and lines:
                lines.append(ReplyLine(lines[-1].code, line[1:]))
            else:
                raise BirdProtocolError(f"not a BIRD reply line: {line!r}")
