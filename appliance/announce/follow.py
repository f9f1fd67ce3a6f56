"""The health agent follows the box's running config for what a reload changes live: the agent's
timers ([announce] interval, timeout, rise, fall, hold_down) and the backbone's peers.

The box puts them in its answer to each of the agent's reports (control.py) and the agent takes them
(agent.py), so that a reload of the box reaches the agent within one round, by whichever way it came
(`appliance reload`, SIGHUP, `systemctl reload appliance`), with no signal or file of its own.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from appliance.config import AnnounceConfig, BackbonePeerConfig, Config
from appliance.config.loader import load

TIMERS = ("interval", "timeout", "rise", "fall", "hold_down")


def offer(config: Config) -> dict[str, Any]:
    """The box's live values as JSON, for its answer to a report."""
    out: dict[str, Any] = {"announce": {name: getattr(config.announce, name) for name in TIMERS}}
    if config.backbone is not None:
        # Each of a peer's values is written as its TOML string, which the loader parses back.
        out["backbone_peers"] = [
            {f.name: str(getattr(peer, f.name)) for f in dataclasses.fields(peer) if getattr(peer, f.name) is not None}
            for peer in config.backbone.peers]
    return out


def merge(config: Config, offered: Any) -> Config:
    """`config` with the live values `offered` (offer's output); as it was where they do not load."""
    if not isinstance(offered, dict):
        return config
    timers = offered.get("announce")
    if isinstance(timers, dict):
        announce, problems = load(AnnounceConfig, {**timers, "bird_dir": config.announce.bird_dir}, {})
        if announce is not None and not problems:
            config = dataclasses.replace(config, announce=announce)
    peers = offered.get("backbone_peers")
    if config.backbone is not None and isinstance(peers, list):
        loaded = [load(BackbonePeerConfig, peer, {}) for peer in peers]
        if all(peer is not None and not problems for peer, problems in loaded):
            backbone = dataclasses.replace(config.backbone, peers=tuple(peer for peer, _ in loaded if peer is not None))
            config = dataclasses.replace(config, backbone=backbone)
    return config
