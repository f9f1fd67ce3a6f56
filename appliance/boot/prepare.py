"""Choose the configuration the services run with, write what they read, and say so on the console."""
from __future__ import annotations

import grp
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Callable

from .. import __version__
from ..config import Config, ConfigError, load_config, parse_config
from . import firstboot, networkd
from .interfaces import FirstInterface, first_interface

EXIT_INVALID = 2
EXIT_NO_ADDRESS = 1


@dataclass(frozen=True)
class Paths:
    """Where the boot step reads and writes; the image's layout by default."""

    operator: str = "/etc/appliance/appliance.toml"  # on the FAT partition labelled EDGECALL
    run_dir: str = "/run/appliance"
    state_dir: str = "/var/lib/appliance"  # on the state partition: survives reboots and root slot swaps
    issue: str = "/run/issue"  # agetty shows it above every login prompt (the image has no /etc/issue)
    consoles: tuple[str, ...] = ("/dev/console", "/dev/tty1")
    # The services' group may read the files under run_dir; None leaves them root's.
    group: str | None = "edgecall"
    # networkd's file for [[net.uplinks]] (networkd.py), on the state partition: networkd reads it through
    # /etc/systemd/network at its start, before any DHCP, from the second boot with a configuration on.
    networkd_dir: str = "/var/lib/appliance-network"

    @property
    def effective(self) -> str:
        return os.path.join(self.run_dir, "appliance.toml")

    @property
    def bird_conf(self) -> str:
        return os.path.join(self.run_dir, "bird.conf")

    @property
    def bird_env(self) -> str:
        # bird.service's EnvironmentFile: where [bgp] control_socket puts BIRD's control socket.
        return os.path.join(self.run_dir, "bird.env")

    @property
    def nats_conf(self) -> str:
        # nats-server.service starts only when it exists, and reads it as a credential (it holds the
        # cluster's NATS token and route password, so only root may read it here).
        return os.path.join(self.run_dir, "nats.conf")

    @property
    def net_wanted(self) -> str:
        # appliance-net.service runs only when it exists (or when `net apply` made something this boot).
        return os.path.join(self.run_dir, "net-wanted")

    @property
    def last_good(self) -> str:
        return os.path.join(self.state_dir, "last-good.toml")

    @property
    def secrets(self) -> str:
        return os.path.join(self.state_dir, "first-boot-secrets.json")


@dataclass
class Outcome:
    code: int
    lines: list[str] = field(default_factory=list)


def prepare(paths: Paths, find_interface: Callable[[], FirstInterface | None] = first_interface,
            address_timeout: float = 90.0,
            reload_network: Callable[[], None] = networkd.networkctl_reload) -> Outcome:
    """Write the effective configuration (and bird.conf, and nats.conf) under `paths.run_dir`,
    or remove them when the operator's file does not validate; the outcome says what happened."""
    os.makedirs(paths.run_dir, exist_ok=True)
    if os.path.exists(paths.operator):
        outcome = _operator_file(paths, reload_network)
    else:
        outcome = _first_boot(paths, find_interface, address_timeout, reload_network)
    outcome.lines.insert(0, f"Edgecall {__version__}")
    return outcome


def _operator_file(paths: Paths, reload_network: Callable[[], None]) -> Outcome:
    try:
        config = load_config(paths.operator)
    except ConfigError as e:
        _withdraw(paths)
        lines = [f"{paths.operator} does not validate, so the services are not started:"]
        lines += [f"  {line}" for line in str(e).splitlines()]
        if os.path.exists(paths.last_good):
            lines.append(f"The last good configuration is kept in {paths.last_good}: copy it back to "
                         "the EDGECALL partition as appliance.toml to serve with it again.")
        else:
            lines.append("There is no last good configuration on this box yet.")
        lines.append(_how_to_configure(paths))
        return Outcome(EXIT_INVALID, lines)
    with open(paths.operator, encoding="utf-8") as f:
        text = f.read()
    notes = _install(paths, text, config, reload_network)
    os.makedirs(paths.state_dir, exist_ok=True)
    _write(paths.last_good, text, 0o600, None)
    return Outcome(0, [f"Serving with {paths.operator}:", *_where(config), *notes])


def stage(paths: Paths) -> Outcome:
    """`systemctl reload appliance`, first step (as root): the operator's edited file becomes the one
    the running box re-reads (`appliance reload`, the next step), when it validates; else nothing
    changes and the problems are the answer. Only that file: bird.conf, nats.conf and the network
    follow the keys that need a restart, which take effect with `systemctl restart appliance-config`."""
    try:
        config = load_config(paths.operator)
    except ConfigError as e:
        return Outcome(EXIT_INVALID, [f"{paths.operator} does not validate; nothing changed:",
                                      *(f"  {line}" for line in str(e).splitlines())])
    except OSError as e:
        return Outcome(EXIT_INVALID, [f"{paths.operator} cannot be read ({e.strerror or e}); nothing changed"])
    with open(paths.operator, encoding="utf-8") as f:
        text = f.read()
    _write(paths.effective, text, 0o640, paths.group)
    _write(paths.last_good, text, 0o600, None)
    return Outcome(0, [f"{paths.operator} validates: the box re-reads it", *_where(config)])


def _first_boot(paths: Paths, find_interface: Callable[[], FirstInterface | None], timeout: float,
                reload_network: Callable[[], None]) -> Outcome:
    deadline = time.monotonic() + timeout
    found = find_interface()
    while (found is None or found.address is None) and time.monotonic() < deadline:
        time.sleep(1.0)
        found = find_interface()
    if found is None or found.address is None:
        _withdraw(paths)
        where = f"its first interface {found.name}" if found else "any Ethernet interface"
        return Outcome(EXIT_NO_ADDRESS, [
            f"No configuration in {paths.operator}, and no DHCP address on {where} within {timeout:.0f} s:"
            " the services are not started.", _how_to_configure(paths)])
    text = firstboot.render(found.address, paths.secrets)
    config = parse_config(text, "<first-boot default>")
    notes = _install(paths, text, config, reload_network)
    app = config.apps[0]
    return Outcome(0, [
        f"No configuration in {paths.operator}: serving the first-boot default on {found.name} "
        f"(DHCP address {found.address}).",
        *_where(config), *notes,
        f"  app {app.id!r}, secret {app.secret!r} (Authorization: Bearer <secret>)",
        _how_to_configure(paths)])


def _where(config: Config) -> list[str]:
    lines = [f"  API: http://{config.api.listen}/ (health: /healthz, status page: /)"]
    if config.sfu.enabled:
        lines.append(f"  Calls API: http://{config.api.listen}/v1/apps/<appId>; media port udp {', '.join(map(str, config.sfu.udp))}")
    if config.turn.enabled:
        lines.append(f"  TURN: {', '.join(map(str, config.turn.listen))}")
    return lines


def _how_to_configure(paths: Paths) -> str:
    return (f"To configure: write appliance.toml (and authorized_keys for ssh as root) on the FAT partition "
            f"labelled EDGECALL, mounted at {os.path.dirname(paths.operator)}, then reboot or run "
            "`systemctl restart appliance-config`. `appliance check-config FILE` checks a file.")


def _install(paths: Paths, text: str, config: Config, reload_network: Callable[[], None]) -> list[str]:
    """What the services read: the configuration, bird.conf when there is BGP, nats.conf when clustered;
    and networkd's file for the statically configured interfaces. Lines for the console, if any."""
    from netconfig.bird_conf import render_bird_conf

    _write(paths.effective, text, 0o640, paths.group)
    if config.bgp is not None:
        _write(paths.bird_conf, render_bird_conf(config), 0o644, None)
        _write(paths.bird_env, f"BIRD_CONTROL_SOCKET={config.bgp.control_socket}\n", 0o644, None)
    else:
        _remove(paths.bird_conf)
        _remove(paths.bird_env)
    if config.cluster.nats:
        from ..cluster.nats_server import render_nats_conf  # here: only a clustered box pays its import

        _write(paths.nats_conf, render_nats_conf(config), 0o600, None)
    else:
        _remove(paths.nats_conf)
    if wants_host_network(config):
        _write(paths.net_wanted, "", 0o644, None)
    else:
        _remove(paths.net_wanted)
    note = networkd.install(config, paths.networkd_dir, reload_network)
    return [note] if note else []


def wants_host_network(config: Config) -> bool:
    """Whether `appliance net apply` has anything to make for `config` (netconfig.netstate.wanted, which
    imports pyroute2: too slow to load here just to find a box has nothing to make)."""
    return bool(config.anycast.prefixes or config.net.uplinks or config.net.routes or config.backbone)


def _withdraw(paths: Paths) -> None:
    """Nothing for the services to start with: a restart after a bad edit must not run the previous file."""
    for path in (paths.effective, paths.bird_conf, paths.bird_env, paths.nats_conf, paths.net_wanted):
        _remove(path)


def _write(path: str, text: str, mode: int, group: str | None) -> None:
    tmp = path + ".new"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    if group is not None:
        shutil.chown(tmp, group=grp.getgrnam(group).gr_gid)
    os.replace(tmp, path)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def announce(paths: Paths, outcome: Outcome) -> None:
    """Say it on every console and above every login prompt."""
    text = "\n".join(outcome.lines) + "\n"
    for console in paths.consoles:
        try:
            with open(console, "w", encoding="utf-8") as tty:
                tty.write("\n" + text)
        except OSError:
            pass  # a box without a VGA console (or without a serial port) has fewer places to say it
    # agetty reads backslashes as escapes: \n is the host name, \l the terminal.
    issue = "Debian GNU/Linux 12 \\n \\l\n\n" + text.replace("\\", "\\\\") + "\n"
    _write(paths.issue, issue, 0o644, None)
