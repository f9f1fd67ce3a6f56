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
            lines += [_peer(node, state) for node, state in agent.get("backbone", {}).items()]
        cluster = box.get("cluster")
        if cluster is not None:
            lines += _cluster(cluster)
        for worker in box.get("workers", []):
            runs = " and ".join(name for name in ("sfu", "turn") if worker[name]) or "the API"
            state = "ready" if worker["ready"] else "starting" if worker["pid"] else "down"
            lines.append(f"worker {worker['index']} ({worker['node']}, pid {worker['pid']}, {runs}): {state}, "
                         f"restarted {worker['restarts']} times; its API {worker['api']}")
    if bgp is not None:
        if bgp.error:
            lines.append(f"BGP: {bgp.error}")
        for s in bgp.sessions:
            exported = ", ".join(s.exported) or "nothing"
            lines.append(f"BGP {s.name}: {s.neighbor} AS{s.asn} {s.info or s.state} since {s.since}; exports {exported}")
        lines.append("announced: " + (", ".join(bgp.announced) or "nothing"))
    return "\n".join(lines)


def _peer(node: str, state: dict[str, Any]) -> str:
    """One backbone peer: its health, where its slice goes, and the kernel's counts."""
    route = {True: "its slice forwarded", False: "its slice dropped here", None: "its slice not routed"}
    line = f"backbone {node} ({state['interface']}): {state['state']}, {route[state.get('forwarding')]}"
    if not state["up"]:
        line += f" ({state['probe']})"
    counts = [f"{key.replace('_', ' ')} {state[key]}" for key in ("forwarded", "dropped", "tunnel_tx_packets")
              if state.get(key) is not None]
    return line + ("; packets " + ", ".join(counts) if counts else "")


def _cluster(cluster: dict[str, Any]) -> list[str]:
    """The store, the boxes heard from, what crosses the trunks."""
    reach = "connected" if cluster["store_connected"] else "NOT CONNECTED"
    lost = f", {cluster['store_writes_lost']} writes lost" if cluster["store_writes_lost"] else ""
    lines = [f"cluster store: {cluster['store']}, {reach}{lost}; nodes: {', '.join(cluster['nodes']) or 'none'}"]
    trunks = cluster.get("trunks", {})
    for track in trunks.get("receiving", []):
        lines.append(f"trunk in: {track['session']}/{track['track']} from {track['from']}, {track['legs']} legs here")
    for track in trunks.get("sending", []):
        lines.append(f"trunk out: {track['session']}/{track['track']} to {', '.join(track['to'])}")
    for node, counts in cluster.get("trunk_peers", {}).items():
        lines.append(f"trunk peer {node}: packets in {counts['packets_in']}, out {counts['packets_out']}, "
                     f"errors {counts['errors']}")
    return lines


def _pairs(mapping: dict[str, str]) -> str:
    return ", ".join(f"{name} {state}" for name, state in mapping.items()) or "none"
