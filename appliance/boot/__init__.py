"""The image's boot step, `appliance boot config`: decide which configuration the services run with.

The operator's file on the EDGECALL partition when it validates (and it becomes the last good
one); the first-boot default on the first interface's DHCP address when there is no file; and
when the file does not validate, nothing: the services are not started, the last good file is
kept untouched, and the console says why. Everything the services read goes under /run/appliance.
"""
from .prepare import Outcome, Paths, announce, prepare, stage

__all__ = ["Outcome", "Paths", "announce", "command", "prepare", "stage"]


def command(args) -> int:
    """`appliance boot config`: run by appliance-config.service before every other service;
    `appliance boot stage`: the first step of `systemctl reload appliance` (prepare.stage)."""
    paths = Paths()
    if args.action == "stage":
        outcome = stage(paths)
        print("\n".join(outcome.lines), flush=True)
        return outcome.code
    outcome = prepare(paths)
    print("\n".join(outcome.lines), flush=True)
    announce(paths, outcome)
    return outcome.code
