"""Is the box healthy, as a slot on trial must be before it is marked good: the boot step and the
service up, /healthz answering 200, and with [bgp] the anycast prefixes announced."""
from __future__ import annotations

import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from ..config import ConfigError, load_config

# A failed one is final; the first and the last must be active (net apply is skipped when there is
# nothing to make).
UNITS = ("appliance-config.service", "appliance-net.service", "appliance.service")
MUST_RUN = ("appliance-config.service", "appliance.service")
EFFECTIVE_CONFIG = "/run/appliance/appliance.toml"  # what the boot step chose (appliance/boot)


@dataclass(frozen=True)
class Health:
    healthy: bool
    reason: str
    final: bool = False  # it cannot get better by waiting (a unit gave up)


def unit_state(unit: str) -> str:
    done = subprocess.run(["systemctl", "is-active", unit], capture_output=True, text=True, timeout=30)
    return done.stdout.strip() or "unknown"


def probe(config_path: str = EFFECTIVE_CONFIG, state_of: Callable[[str], str] = unit_state) -> Health:
    states = {unit: state_of(unit) for unit in UNITS}
    for unit, state in states.items():
        if state == "failed":
            return Health(False, f"{unit} failed", final=True)
    for unit in MUST_RUN:
        if states[unit] != "active":
            return Health(False, f"{unit} is {states[unit]}")
    try:
        config = load_config(config_path)
    except ConfigError as e:
        return Health(False, "no configuration to serve with: " + (str(e).splitlines() or [e.source])[0])
    url = f"http://{config.api.listen}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            status = response.status
    except urllib.error.HTTPError as e:
        status = e.code
    except (urllib.error.URLError, OSError) as e:
        return Health(False, f"{url}: {e}")
    if status != 200:
        return Health(False, f"{url} answers {status}")
    if config.bgp is not None:
        from netconfig.bgp_state import read_bgp

        bgp = read_bgp(config)
        missing = {str(p) for p in config.anycast.prefixes} - set(bgp.announced)
        if bgp.error or missing:
            return Health(False, f"BGP: {bgp.error or 'not announced: ' + ', '.join(sorted(missing))}")
    return Health(True, "healthy")
