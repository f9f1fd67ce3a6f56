"""Size of a /metrics scrape when 5,000 TURN customIdentifiers have usage: the default top-N labelling
(`[turn] metrics_identifiers`) against the anchor of every identifier labelled, in the same run."""
from prometheus_client import generate_latest

from appliance.config import parse_config
from appliance.runner import Box
from appliance.turn import Usage
from appliance.turn.service import TurnService
from tests.unit.turn.harness import NOW, Lab

IDENTIFIERS = 5000


def _scrape_bytes(labelled: int) -> int:
    box = Box(parse_config(f'[turn]\nsecrets = ["s"]\nmetrics_identifiers = {labelled}\n', "bench.toml"))
    turn = TurnService(box)
    turn.core = Lab().server
    for i in range(IDENTIFIERS):
        identifier = f"user{4523958 + i}"
        turn.core.usage_book.started(identifier)
        turn.core.usage_book.ended(identifier, Usage(1, 60.0, 10**6 + i, 1000, 10**6, 1000, 3), NOW)
    return len(generate_latest(box.registry))


def main() -> None:
    default = parse_config("", "bench.toml").turn.metrics_identifiers
    top, anchor = _scrape_bytes(default), _scrape_bytes(IDENTIFIERS)
    print(f"/metrics with {IDENTIFIERS} customIdentifiers that have usage:")
    print(f"  top {default} + \"other\" (default)     {top:10,d} bytes  {top / anchor:6.3f} x anchor")
    print(f"  every identifier labelled (anchor) {anchor:10,d} bytes  1.000 x")
