"""Value types of the configuration and their parsers.

Each parser takes the raw TOML value and returns the typed value, or raises
`Invalid` with what was expected; the loader adds the key, the line and what
was found.
"""
from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from typing import Annotated

IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network
IPIface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


class Invalid(ValueError):
    """A raw value that does not parse; the message says what was expected."""


def _text(raw: object, expected: str) -> str:
    if not isinstance(raw, str):
        raise Invalid(expected)
    return raw


def parse_ip(raw: object) -> IPAddr:
    expected = "an IP address"
    try:
        return ipaddress.ip_address(_text(raw, expected))
    except ValueError:
        raise Invalid(expected) from None


def parse_ipv4(raw: object) -> ipaddress.IPv4Address:
    expected = "an IPv4 address"
    try:
        return ipaddress.IPv4Address(_text(raw, expected))
    except ValueError:
        raise Invalid(expected) from None


def parse_network(raw: object) -> IPNet:
    expected = "a CIDR prefix with no host bits set (like 203.0.113.10/32)"
    try:
        return ipaddress.ip_network(_text(raw, expected), strict=True)
    except ValueError:
        raise Invalid(expected) from None


def parse_interface(raw: object) -> IPIface:
    expected = "an address with its prefix length (like 192.0.2.129/25)"
    text = _text(raw, expected)
    if "/" not in text:
        raise Invalid(expected)
    try:
        return ipaddress.ip_interface(text)
    except ValueError:
        raise Invalid(expected) from None


def parse_interface_name(raw: object) -> str:
    # Linux's IFNAMSIZ is 16 with the terminating NUL; '/' and blanks cannot appear in a name.
    expected = "a network interface name (1 to 15 characters, no '/' or blanks, like eth0)"
    text = _text(raw, expected)
    if not 0 < len(text) <= 15 or text in (".", "..") or any(c == "/" or c.isspace() for c in text):
        raise Invalid(expected)
    return text


ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def parse_id(raw: object) -> str:
    # Ids travel into URL paths, metric labels, interface names and bird.conf: an alphabet none of them quote.
    expected = "an id of 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit"
    text = _text(raw, expected)
    if not ID_PATTERN.fullmatch(text):
        raise Invalid(expected)
    return text


def parse_port(raw: object) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= 65535:
        raise Invalid("a port from 1 to 65535")
    return raw


def parse_asn(raw: object) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= 4294967295:
        raise Invalid("an AS number from 1 to 4294967295")
    return raw


def parse_positive(raw: object) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or raw <= 0:
        raise Invalid("a positive integer")
    return raw


def parse_non_negative(raw: object) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
        raise Invalid("an integer, 0 or more")
    return raw


def parse_seconds(raw: object) -> float:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or raw < 0:
        raise Invalid("a number of seconds, 0 or more")
    return float(raw)


def parse_share(raw: object) -> float:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not 0 <= raw < 1:
        raise Invalid("a share from 0 up to (not including) 1, like 0.2")
    return float(raw)


def parse_absolute_path(raw: object) -> str:
    # A service's working directory is /: a relative path would land wherever it was started.
    text = _text(raw, "an absolute path")
    if not os.path.isabs(text):
        raise Invalid("an absolute path")
    return text


IP = Annotated[IPAddr, parse_ip]
IPv4 = Annotated[ipaddress.IPv4Address, parse_ipv4]
Network = Annotated[IPNet, parse_network]
Interface = Annotated[IPIface, parse_interface]
InterfaceName = Annotated[str, parse_interface_name]
Id = Annotated[str, parse_id]
Port = Annotated[int, parse_port]
ASN = Annotated[int, parse_asn]
Count = Annotated[int, parse_positive]
NonNegative = Annotated[int, parse_non_negative]
Seconds = Annotated[float, parse_seconds]
Share = Annotated[float, parse_share]
AbsolutePath = Annotated[str, parse_absolute_path]


@dataclass(frozen=True, order=True)
class Endpoint:
    """An IP address and a port, written `host:port` (IPv6 as `[::1]:3478`)."""

    host: IPAddr
    port: int

    EXPECTED = "host:port with an IP address (IPv6 as [::1]:3478)"

    @classmethod
    def parse(cls, raw: object) -> Endpoint:
        text = _text(raw, cls.EXPECTED)
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit():
            raise Invalid(cls.EXPECTED)
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
            if ":" not in host:
                raise Invalid(cls.EXPECTED)
        elif ":" in host:
            raise Invalid(cls.EXPECTED)
        try:
            return cls(ipaddress.ip_address(host), parse_port(int(port)))
        except ValueError:
            raise Invalid(cls.EXPECTED) from None

    def __str__(self) -> str:
        if self.host.version == 6:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


def parse_endpoints(raw: object) -> tuple[Endpoint, ...]:
    """One `host:port` or an array of them: one socket each (IPv4 and IPv6 side by side)."""
    expected = "host:port, or a non-empty array of them (IPv6 as [::1]:3479)"
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not items:
        raise Invalid(expected)
    try:
        return tuple(Endpoint.parse(item) for item in items)
    except Invalid:
        raise Invalid(expected) from None


Endpoints = Annotated[tuple[Endpoint, ...], parse_endpoints]


@dataclass(frozen=True)
class Listener:
    """A TURN/STUN listener: `udp://`, `tcp://` or `tls://` and an endpoint."""

    transport: str
    endpoint: Endpoint

    TRANSPORTS = ("udp", "tcp", "tls")
    EXPECTED = "udp://, tcp:// or tls:// followed by host:port"

    @classmethod
    def parse(cls, raw: object) -> Listener:
        text = _text(raw, cls.EXPECTED)
        scheme, sep, rest = text.partition("://")
        if not sep or scheme not in cls.TRANSPORTS:
            raise Invalid(cls.EXPECTED)
        try:
            return cls(scheme, Endpoint.parse(rest))
        except Invalid:
            raise Invalid(cls.EXPECTED) from None

    @property
    def protocol(self) -> str:
        """The socket protocol under the transport: TLS rides on TCP."""
        return "udp" if self.transport == "udp" else "tcp"

    def __str__(self) -> str:
        return f"{self.transport}://{self.endpoint}"


@dataclass(frozen=True)
class PortRange:
    """An inclusive range of ports, written `first-last`."""

    first: int
    last: int

    EXPECTED = "a port range first-last within 1-65535 (like 49152-65535)"

    @classmethod
    def parse(cls, raw: object) -> PortRange:
        text = _text(raw, cls.EXPECTED)
        first, sep, last = text.partition("-")
        if not sep or not first.strip().isdigit() or not last.strip().isdigit():
            raise Invalid(cls.EXPECTED)
        a, b = int(first), int(last)
        if not 1 <= a <= b <= 65535:
            raise Invalid(cls.EXPECTED)
        return cls(a, b)

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.first <= port <= self.last

    def overlaps(self, other: PortRange) -> bool:
        return self.first <= other.last and other.first <= self.last

    def __len__(self) -> int:
        return self.last - self.first + 1

    def __str__(self) -> str:
        return f"{self.first}-{self.last}"
