"""`appliance status`: one screen for an operator, from the running box and from BIRD itself."""
from __future__ import annotations

from typing import Any

from netconfig.bgp_state import BgpState


def render(box: dict[str, Any] | None, box_error: str | None, bgp: BgpState | None) -> str:
    """The screen: the service and its drain state, the agent's probes and decision, BGP."""
    lines = []
    if box is None:
        lines.append(f"service: not answering ({box_error})")
    else:
        drain = f"draining for {box['draining_for']:.1f} s" if box["draining"] else "serving"
        lines.append(f"node {box['node']}: {drain}")
        lines.append("services: " + _pairs(box["services"]))
        agent = box.get("agent")
        if agent is None:
            lines.append("health agent: no report yet (is `appliance announce` running?)")
        else:
            probes = {name: p["detail"] for name, p in agent.get("probes", {}).items()}
            lines.append(f"health agent ({agent['age_seconds']:.1f} s ago): {agent['state']}")
            lines.append("probes: " + _pairs(probes))
    if bgp is not None:
        if bgp.error:
            lines.append(f"BGP: {bgp.error}")
        for s in bgp.sessions:
            exported = ", ".join(s.exported) or "nothing"
            lines.append(f"BGP {s.name}: {s.neighbor} AS{s.asn} {s.info or s.state} since {s.since}; exports {exported}")
        lines.append("announced: " + (", ".join(bgp.announced) or "nothing"))
    return "\n".join(lines)


def _pairs(mapping: dict[str, str]) -> str:
    return ", ".join(f"{name} {state}" for name, state in mapping.items()) or "none"
