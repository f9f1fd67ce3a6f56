"""What BIRD says about the box's BGP sessions and what they export, for `appliance status`,
/healthz and /metrics. Read through the control socket, never by scraping `birdc`."""
from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass, replace

from appliance.config import Config

from .bird_conf import CHANNEL, protocol_name
from .bird_control import BirdControl, BirdError


@dataclass(frozen=True)
class Session:
    name: str  # the BIRD protocol
    neighbor: str
    asn: int
    state: str  # BIRD's protocol state: up, start, down
    info: str  # the BGP state (Established, Active, Connect...) and any error
    since: str
    exported: tuple[str, ...] = ()  # the prefixes announced on it

    @property
    def established(self) -> bool:
        return self.info.split(None, 1)[:1] == ["Established"]


@dataclass(frozen=True)
class BgpState:
    sessions: tuple[Session, ...] = ()
    error: str | None = None  # why BIRD could not be asked

    @property
    def announced(self) -> list[str]:
        """Prefixes announced on at least one established session."""
        prefixes = {ipaddress.ip_network(p) for s in self.sessions if s.established for p in s.exported}
        return [str(p) for p in sorted(prefixes, key=lambda p: (p.version, p))]

    def to_dict(self) -> dict:
        return {"sessions": [asdict(s) | {"established": s.established} for s in self.sessions],
                "announced": self.announced, "error": self.error}

    @classmethod
    def from_dict(cls, data: dict) -> BgpState:
        sessions = tuple(
            Session(**{k: v for k, v in s.items() if k != "established"} | {"exported": tuple(s.get("exported", ()))})
            for s in data.get("sessions", ())
        )
        return cls(sessions, data.get("error"))


def read_bgp(config: Config, timeout: float = 1.0) -> BgpState:
    if config.bgp is None:
        return BgpState(error="no [bgp] in the configuration")
    families = {p.version for p in config.anycast.prefixes}
    try:
        with BirdControl(config.bgp.control_socket, timeout=timeout) as bird:
            protocols = bird.protocols()
            sessions = []
            for neighbor in config.bgp.neighbors:
                name = protocol_name(neighbor)
                row = protocols.get(name)
                session = Session(name, str(neighbor.address), neighbor.asn, row.state if row else "missing",
                                  row.info if row else "not in BIRD's configuration", row.since if row else "")
                if session.established:
                    channels = sorted(families | {neighbor.address.version})
                    exported = [p for v in channels for p in bird.exported(f"{name}.{CHANNEL[v]}")]
                    session = replace(session, exported=tuple(exported))
                sessions.append(session)
    except (OSError, BirdError) as e:
        return BgpState(error=f"BIRD's control socket {config.bgp.control_socket}: {e}")
    return BgpState(tuple(sessions))
