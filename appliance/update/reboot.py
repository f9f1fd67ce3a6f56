"""`appliance reboot`, and the reboot after `appliance update`: drain first, so that anycast moves the
clients to other boxes before this one goes. Draining is the box's own (`appliance drain`): /healthz
says draining, the health agent withdraws the prefixes, and the box keeps serving for `[drain] time`."""
from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

from .. import control
from ..config import Config


def say_now(line: str) -> None:
    # Flushed: the reboot ends the operator's ssh session, and what was buffered would be lost.
    print(line, flush=True)


def systemctl_reboot() -> None:
    # appliance.service's own stop drains for what is left of its --drain-time, then closes.
    subprocess.run(["systemctl", "reboot"], check=True, timeout=60)


def drain_then_reboot(config: Config | None, reboot: Callable[[], None] = systemctl_reboot,
                      sleep: Callable[[float], None] = time.sleep, say: Callable[[str], None] = say_now) -> None:
    if config is None:
        say("no valid configuration, so no service to drain: rebooting")
    else:
        try:
            answer = control.request(config, "drain")
        except (OSError, control.Untrusted) as e:
            say(f"the service does not answer on its control socket ({e}), so there is nothing to drain: rebooting")
        else:
            wait = config.drain.time
            if answer.get("draining"):
                say(f"draining: the health agent withdraws the anycast prefixes; rebooting in {wait:g} s ([drain] time)")
                sleep(wait)
            else:
                say(f"the service did not start draining ({answer.get('error', answer)}): rebooting")
    reboot()
