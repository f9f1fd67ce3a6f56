"""Fixture: the lab, network namespaces joined by veth pairs, torn down whatever happens (a run killed
outright tears down nothing: the next lab made sweeps what it left, `sweep_orphans`).

Network safety (../shared/TESTING.md): everything the lab makes lives inside its own
namespaces. It never touches the machine's interfaces, never adds a route or a rule in the root
namespace, creates each veth end directly inside its namespace, and accepts only addresses
from the documentation ranges. Names carry a random per-run id (`ec1a2b3c-rtr`), so two
runs never collide. Tests may shell out to `ip`; the product uses pyroute2.
"""
from __future__ import annotations

import atexit
import ctypes
import ipaddress
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

import pytest

LAB_NETWORKS = tuple(
    ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
)
STOP_TIMEOUT = 5.0
OWNER = "owner"  # in a lab's directory: the pid of the process that made the lab, written before any namespace
NETNS_DIR = Path("/run/netns")  # where `ip netns` names namespaces
T = TypeVar("T")


class CommandFailed(subprocess.CalledProcessError):
    """A command that exited non-zero; unlike its base class, it shows what the command printed."""

    def __str__(self) -> str:
        return "\n".join(filter(None, [super().__str__(), self.stdout, self.stderr])).rstrip()


def _run(argv: Sequence[str], check: bool = True, timeout: float = 30.0, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        raise CommandFailed(result.returncode, result.args, result.stdout, result.stderr)
    return result


def check_lab_address(address: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    """`address` (with its prefix length) if its whole subnet lies in a documentation range."""
    interface = ipaddress.ip_interface(address)
    if not any(interface.network.subnet_of(n) for n in LAB_NETWORKS if n.version == interface.version):
        allowed = ", ".join(map(str, LAB_NETWORKS))
        raise ValueError(f"the lab only uses addresses inside {allowed}, not {address}")
    return interface


def lab_unavailable() -> str | None:
    """Why the lab cannot run on this machine, or None when it can."""
    if os.geteuid() != 0:
        return "the lab needs root to make network namespaces"
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    result = _run(["ip", "netns", "list"], check=False)
    if result.returncode != 0:
        return f"`ip netns` does not work here: {result.stderr.strip()}"
    return None


def wait_for(condition: Callable[[], T], what: str, timeout: float = 20.0, detail: Callable[[], str] | None = None) -> T:
    """Poll `condition` until it returns something true and return that; fail after `timeout` s.

    The deadline only bounds a hang: tests never assert how long anything took.
    """
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s" + (f"\n{detail()}" if detail else ""))
        time.sleep(0.1)
    return value


class Host:
    """One lab host: a network namespace with loopback up, and a directory for its files."""

    def __init__(self, lab: Lab, name: str):
        self.lab = lab
        self.name = name
        self.netns = f"{lab.id}-{name}"
        self.dir = lab.dir / name
        self._interfaces = 0

    def __repr__(self) -> str:
        return f"Host({self.netns})"

    def run(self, argv: Sequence[str], check: bool = True, timeout: float = 30.0, **kwargs) -> subprocess.CompletedProcess:
        """Run `argv` inside the namespace to completion; text output captured."""
        return _run(["ip", "netns", "exec", self.netns, *map(str, argv)], check=check, timeout=timeout, **kwargs)

    def popen(self, argv: Sequence[str], log: str | None = None, **kwargs) -> subprocess.Popen:
        """Start a long-lived `argv` inside the namespace; the lab stops it at teardown.

        Its stdout and stderr go to `<host dir>/<log>.log` (by default the program's name).
        """
        path = self.log_path(log or Path(str(argv[0])).name)
        with open(path, "ab") as out:
            # Its own session: a Ctrl-C at the terminal reaches pytest, whose teardown stops it.
            process = subprocess.Popen(
                ["ip", "netns", "exec", self.netns, *map(str, argv)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, **kwargs,
            )
        self.lab._processes.append(process)
        return process

    def log_path(self, log: str) -> Path:
        return self.dir / f"{log}.log"

    def _next_interface(self) -> str:
        name = f"eth{self._interfaces}"
        self._interfaces += 1
        return name


class Lab:
    """A set of hosts for one test. `close()` (also run at interpreter exit) removes all of it."""

    def __init__(self) -> None:
        sweep_orphans()
        self.id = "ec" + secrets.token_hex(3)
        self.dir = Path(tempfile.mkdtemp(prefix=f"{self.id}-"))
        (self.dir / OWNER).write_text(str(os.getpid()))
        # Daemons that drop root (FRR runs as `frr`) must reach their files below it.
        self.dir.chmod(0o755)
        self.hosts: dict[str, Host] = {}
        self._processes: list[subprocess.Popen] = []
        atexit.register(self.close)

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def host(self, name: str) -> Host:
        if not re.fullmatch(r"[a-z][a-z0-9]{0,15}", name):
            raise ValueError(f"a lab host name is a lowercase letter then up to 15 letters or digits, not {name!r}")
        if name in self.hosts:
            raise ValueError(f"the lab already has a host {name!r}")
        host = Host(self, name)
        # Known before it exists, so that teardown removes it even if what follows fails.
        self.hosts[name] = host
        host.dir.mkdir()
        _run(["ip", "netns", "add", host.netns])
        _run(["ip", "-n", host.netns, "link", "set", "lo", "up"])
        # New interfaces skip duplicate address detection, so IPv6 link-local addresses (which
        # BGP uses as next hops) are usable at once rather than after a second or two.
        for scope in ("all", "default"):
            host.run(["sysctl", "-qw", f"net.ipv6.conf.{scope}.accept_dad=0"])
        return host

    def link(self, a: Host, b: Host, a_addrs: Iterable[str] = (), b_addrs: Iterable[str] = ()) -> tuple[str, str]:
        """Join `a` and `b` with a veth pair, address both ends, bring them up; the two interface names."""
        ends = [(a, a._next_interface(), [check_lab_address(x) for x in a_addrs]),
                (b, b._next_interface(), [check_lab_address(x) for x in b_addrs])]
        (_, a_if, _), (_, b_if, _) = ends
        # Made inside `a`'s namespace with its peer inside `b`'s: no end ever exists in the root namespace.
        _run(["ip", "-n", a.netns, "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", b.netns])
        for host, interface, addresses in ends:
            for address in addresses:
                nodad = ["nodad"] if address.version == 6 else []
                _run(["ip", "-n", host.netns, "address", "add", str(address), "dev", interface, *nodad])
            _run(["ip", "-n", host.netns, "link", "set", interface, "up"])
        return a_if, b_if

    def close(self) -> None:
        """Stop every process, delete every namespace (and with them the veths) and the files."""
        atexit.unregister(self.close)
        for process in self._processes:
            _stop(process)
        self._processes.clear()
        for host in self.hosts.values():
            _delete_netns(host.netns)
        self.hosts.clear()
        shutil.rmtree(self.dir, ignore_errors=True)


def sweep_orphans() -> None:
    """Remove what labs of processes that are gone left: a run killed outright (SIGKILL, a session's
    end) runs neither its fixtures' teardown nor atexit, and its namespaces would outlive it. A lab is
    an orphan when the process its owner file names is not alive, or it has no owner file (one is
    written before any namespace is made; labs of older test code had none)."""
    names = [path.name for path in NETNS_DIR.iterdir()] if NETNS_DIR.is_dir() else []
    for lab_id in {name.split("-")[0] for name in names if re.fullmatch(r"ec[0-9a-f]{6}-[a-z][a-z0-9]{0,15}", name)}:
        dirs = list(Path(tempfile.gettempdir()).glob(f"{lab_id}-*"))
        owners = [directory / OWNER for directory in dirs if (directory / OWNER).is_file()]
        if any(_alive(int(owner.read_text() or 0)) for owner in owners):
            continue
        for name in names:
            if name.startswith(f"{lab_id}-"):
                _delete_netns(name)
        for directory in dirs:
            shutil.rmtree(directory, ignore_errors=True)


def _delete_netns(netns: str) -> None:
    # Anything a process left behind in the namespace (a forked child) goes too.
    for pid in _run(["ip", "netns", "pids", netns], check=False).stdout.split():
        _kill(int(pid))
    _run(["ip", "netns", "delete", netns], check=False)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process, but alive
        return True
    return True


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture
def lab():
    """A fresh Lab for the test, removed after it, pass or fail; skips where namespaces cannot be made."""
    reason = lab_unavailable()
    if reason:
        pytest.skip(reason)
    with Lab() as the_lab:
        yield the_lab


CLONE_NEWNET = 0x40000000  # <sched.h>


def enter_netns(netns: str) -> None:
    """Move the calling thread (only it: setns acts per thread) into a lab namespace."""
    fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {netns}")
    finally:
        os.close(fd)
