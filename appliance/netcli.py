"""`appliance net apply | show | bird-conf`: the thin shell over netconfig for an operator."""
from __future__ import annotations

import sys

from pyroute2 import IPRoute

from netconfig.apply import ApplyError, apply, survey
from netconfig.bird_conf import render_bird_conf
from netconfig.kernel import Kernel

from .config import Config


def net_apply(config: Config) -> int:
    try:
        outcome = apply(config)
    except ApplyError as e:
        print(f"appliance: net apply: {e}", file=sys.stderr)
        return 1
    for change in outcome.plan.changes:
        print(change)
    if not outcome.plan.changes:
        print("nothing to change")
    return 0


def net_show(config: Config) -> int:
    """Each wanted item and whether the kernel holds it, what netconfig made, and what apply would do."""
    try:
        with IPRoute() as ipr:
            outcome = survey(config, Kernel(ipr))
    except ApplyError as e:
        print(f"appliance: net show: {e}", file=sys.stderr)
        return 1
    p = outcome.plan
    adding = {c.item.key for c in p.changes if c.action == "add"}
    print(f"wanted, from the configuration (netconfig's record: {config.net.state_file}):")
    for item in sorted(outcome.wanted, key=lambda i: (i.rank, str(i))):
        state = ("present, made by netconfig" if item in p.present else "present, made by someone else"
                 if item in p.foreign else "missing" if item.key in adding else "in the way")
        print(f"  {item}: {state}")
    if outcome.down:
        print(f"backbone peers down (their slices dropped, as the health agent set): {', '.join(sorted(outcome.down))}")
    print("net apply would:" if p.changes or p.problems else "net apply would change nothing")
    for change in p.changes:
        print(f"  {change}")
    for problem in p.problems:
        print(f"  refuse: {problem}")
    return 0


def bird_conf(config: Config) -> int:
    try:
        print(render_bird_conf(config), end="")
    except ValueError as e:
        print(f"appliance: net bird-conf: {e}", file=sys.stderr)
        return 2
    return 0
