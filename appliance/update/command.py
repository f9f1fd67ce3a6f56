"""The `appliance update` and `appliance reboot` commands (their options are in appliance/cli.py)."""
from __future__ import annotations

import argparse
import subprocess
import sys

from ..config import Config, ConfigError, default_path, load_config
from . import grubenv, lifecycle, store
from .confirm import confirm
from .install import UpdateError, install
from .layout import Layout, NotOnTheImage
from .reboot import drain_then_reboot, say_now

EXIT_REFUSED = 1


def update(args: argparse.Namespace, layout: Layout = Layout()) -> int:
    try:
        if args.status:
            print("\n".join(status(layout)))
            return 0
        if args.confirm:
            return confirm(layout, args.deadline)
        if not args.source:
            print("appliance update: give a bundle (FILE or URL), --status or --confirm", file=sys.stderr)
            return 2
        done = install(args.source, layout, say=say_now)
    except (UpdateError, NotOnTheImage, grubenv.GrubEnvError, OSError) as e:
        print(f"appliance update: {e}", file=sys.stderr)
        return EXIT_REFUSED
    say_now(f"slot {done.slot} holds {done.version}; the next boot tries it once (now running "
            f"{done.running_version} from slot {done.running}).")
    if args.no_reboot:
        print("Reboot when it suits (`appliance reboot` drains first); `appliance update --status` shows the slots.")
        return 0
    return reboot(args)


def reboot(args: argparse.Namespace) -> int:
    try:
        drain_then_reboot(_config(args.config))
    except (OSError, subprocess.SubprocessError) as e:
        print(f"appliance: the reboot failed: {e}", file=sys.stderr)
        return 1
    return 0


def status(layout: Layout) -> list[str]:
    running = layout.booted_slot()
    return lifecycle.status_lines(store.load(layout), grubenv.read(layout.grubenv), running,
                                  layout.running_version())


def _config(path: str | None) -> Config | None:
    try:
        return load_config(path or default_path())
    except ConfigError as e:
        print(f"appliance: {e.source} does not validate: {str(e).splitlines()[0]}", file=sys.stderr)
        return None
