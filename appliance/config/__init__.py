"""The appliance's configuration: one TOML file, refused whole when anything in it is wrong."""
from __future__ import annotations

import json
import os
import secrets
import string
import tomllib
from importlib import resources

from . import checks
from .lines import key_lines, line_of, dotted
from .loader import Problem, load
from .schema import (
    AnnounceConfig,
    AnycastConfig,
    ApiConfig,
    AppConfig,
    BackboneConfig,
    BackbonePeerConfig,
    BgpConfig,
    BgpNeighborConfig,
    ClusterConfig,
    Config,
    DrainConfig,
    NetConfig,
    NodeConfig,
    RouteConfig,
    SfuConfig,
    TurnConfig,
    TurnKeyConfig,
    UplinkConfig,
)
from .values import Endpoint, Listener, PortRange

SYSTEM_PATH = "/etc/appliance/appliance.toml"
# On the image: the file the boot step chose for the services (`appliance boot config`).
BOOT_PATH = "/run/appliance/appliance.toml"
EMBEDDED = "<embedded default>"

__all__ = [
    "AnnounceConfig", "DrainConfig", "NetConfig", "RouteConfig", "UplinkConfig",
    "AnycastConfig", "ApiConfig", "AppConfig", "BackboneConfig", "BackbonePeerConfig", "BgpConfig",
    "BgpNeighborConfig", "ClusterConfig", "Config", "ConfigError", "Endpoint", "Listener", "NodeConfig",
    "PortRange", "Problem", "SfuConfig", "TurnConfig", "TurnKeyConfig", "default_path", "load_config",
    "parse_config", "read_text", "summary",
]


class ConfigError(Exception):
    """A configuration that cannot be used, with every problem found in it."""

    def __init__(self, source: str, problems: list[Problem]):
        self.source = source
        self.problems = sorted(problems)
        super().__init__("\n".join(p.render(source) for p in self.problems))


def parse_config(text: str, source: str) -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        line = getattr(e, "lineno", None) or _line_from_message(str(e))
        raise ConfigError(source, [Problem(line, "(syntax)", f"not valid TOML: {e}")]) from None
    lines = key_lines(text)
    config, problems = load(Config, data, lines)
    if config is not None:
        problems += [Problem(line_of(lines, path), dotted(path), msg) for path, msg in checks.findings(config)]
    if config is None or problems:  # no config without a problem that says why
        raise ConfigError(source, problems)
    return config


def _line_from_message(message: str) -> int:
    # Python 3.11's TOMLDecodeError has no lineno attribute, only "(at line N, column M)".
    marker = "at line "
    if marker in message:
        digits = message.split(marker, 1)[1].split(",", 1)[0].rstrip(")")
        if digits.isdigit():
            return int(digits)
    return 1


def _demo_state_dir() -> str:
    base = os.environ.get("XDG_STATE_HOME", "")
    if not os.path.isabs(base):  # the XDG spec: a relative value is ignored
        base = os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "edgecall")


def embedded_default() -> Config:
    template = resources.files(__package__).joinpath("default.toml").read_text()
    text = string.Template(template).substitute(
        # JSON's string escapes are TOML's.
        state_dir=json.dumps(_demo_state_dir(), ensure_ascii=False),
        demo_secret=secrets.token_urlsafe(18),
        turn_secret=secrets.token_urlsafe(24),
        turn_key_token=secrets.token_urlsafe(24),
        admin_token=secrets.token_urlsafe(18),
    )
    return parse_config(text, EMBEDDED)


def default_path() -> str | None:
    return next((path for path in (BOOT_PATH, SYSTEM_PATH) if os.path.exists(path)), None)


def load_config(path: str | None) -> Config:
    """Load `path`, or the embedded default when `path` is None."""
    if path is None:
        return embedded_default()
    return parse_config(read_text(path), path)


def read_text(path: str) -> str:
    """The text of the configuration file `path`; ConfigError when it cannot be read."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(path, [Problem(1, "(file)", f"cannot read the file: {e}")]) from None


def summary(config: Config) -> list[str]:
    """A few lines an operator reads to confirm what the file asks for."""
    out = [f"node {config.node.id}", f"api: http://{config.api.listen}"]
    out.append(f"apps: {', '.join(a.id for a in config.apps) or 'none'}")
    if config.sfu.enabled:
        tcp = f", tcp {', '.join(map(str, config.sfu.tcp))}" if config.sfu.tcp else ""
        out.append(f"sfu: udp {', '.join(map(str, config.sfu.udp))}{tcp}")
    if config.turn.enabled:
        t = config.turn
        out.append(
            f"turn: {', '.join(map(str, t.listen))}; relay {t.relay_address} ports {t.relay_ports}; "
            f"{len(t.secrets)} secret(s), {len(t.keys)} key(s)"
        )
    if config.anycast.prefixes:
        out.append(f"anycast: {', '.join(map(str, config.anycast.prefixes))}")
    if config.bgp:
        peers = ", ".join(f"{n.address} AS{n.asn}" for n in config.bgp.neighbors) or "no neighbors"
        out.append(f"bgp: AS{config.bgp.local_asn} router id {config.bgp.router_id}; {peers}")
    if config.backbone:
        b = config.backbone
        out.append(f"backbone: {b.kind} from {b.underlay}, {len(b.peers)} peer(s)")
    out.append(f"cluster: {'NATS ' + ', '.join(config.cluster.nats) if config.cluster.nats else 'single box'}")
    return out
