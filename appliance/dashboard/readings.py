"""The box's counters as the usage figures read them, from the same sources /metrics reads: the SFU's
bytes and sessions per app, TURN's relayed bytes and allocations per credential issuer and per
customIdentifier, and the box's own totals. Nothing here counts anything: it sums what the SFU's
streams and legs and TURN's allocations count anyway."""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from .usage import Figures

if TYPE_CHECKING:
    from ..runner import Box
    from ..sfu.sfu import Sfu
    from ..turn.server import TurnServer


@runtime_checkable
class SfuHost(Protocol):
    """What the figures read of the SFU service (sfu/service.py)."""

    sfu: Sfu


@runtime_checkable
class TurnHost(Protocol):
    """What the figures read of the TURN service (turn/service.py): its core once started, and the core's clock."""

    core: TurnServer | None
    clock: Callable[[], float]


def sfu_of(box: Box) -> Sfu | None:
    service = box.service("sfu")
    return service.sfu if isinstance(service, SfuHost) else None


def turn_of(box: Box) -> tuple[TurnServer, float] | None:
    """The TURN core and its clock's time now; None while TURN is off or not started."""
    service = box.service("turn")
    if not isinstance(service, TurnHost) or service.core is None:
        return None
    return service.core, service.clock()


def read(box: Box) -> dict[str, dict[str, Figures]]:
    """One reading for usage.Sampler: per dimension and key, bytes since the box started and gauges now.
    Every configured app and TURN issuer is there, idle or not."""
    apps = {app.id: Figures() for app in box.config.apps}
    sfu = sfu_of(box)
    if sfu is not None:
        sent = sfu.app_bytes()
        for app in set(apps) | {app for app, _ in sent} | set(sfu.live):
            apps[app] = Figures(sent[app, "ingress"], sent[app, "egress"], sfu.live[app])
    issuers: dict[str, Figures] = {}
    identifiers: dict[str, Figures] = {}
    allocations = 0
    turn = turn_of(box)
    if turn is not None:
        core, now = turn
        allocations = len(core.allocations)
        held = Counter(allocation.identifier for allocation in core.allocations)
        for issuer, usage in core.usage_by_issuer(now).items():
            issuers[issuer] = Figures(usage.bytes_from_client, usage.bytes_to_client,
                                      allocations=core.quotas.held.get(issuer, 0))
        for identifier, usage in core.usage_by_identifier(now).items():
            identifiers[identifier] = Figures(usage.bytes_from_client, usage.bytes_to_client,
                                              allocations=held[identifier])
    # The box: its SFU and its relays together (issuers' totals are never forgotten, identifiers' are).
    total = Figures(
        sum(f.ingress_bytes for f in apps.values()) + sum(f.ingress_bytes for f in issuers.values()),
        sum(f.egress_bytes for f in apps.values()) + sum(f.egress_bytes for f in issuers.values()),
        len(sfu.sessions) if sfu is not None else 0,
        allocations,
    )
    return {"app": apps, "issuer": issuers, "customIdentifier": identifiers, "box": {box.config.node.id: total}}
