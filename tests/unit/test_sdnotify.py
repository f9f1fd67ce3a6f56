import os
import socket

from appliance.sdnotify import Notifier


def test_notifications_reach_the_socket(tmp_path):
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        notifier = Notifier({"NOTIFY_SOCKET": path})
        assert notifier.ready("serving") and notifier.watchdog() and notifier.stopping()
        received = [sock.recv(4096).decode() for _ in range(3)]
    assert received == ["READY=1\nSTATUS=serving", "WATCHDOG=1", "STOPPING=1"]


def test_abstract_socket():
    name = f"edgecall-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).ready()
        assert sock.recv(100) == b"READY=1"


def test_without_systemd_nothing_is_sent():
    notifier = Notifier({})
    assert not notifier.enabled and not notifier.ready() and notifier.watchdog_interval is None


def test_watchdog_interval_is_half_and_only_for_this_process():
    assert Notifier({"WATCHDOG_USEC": "3000000"}).watchdog_interval == 1.5
    assert Notifier({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid())}).watchdog_interval == 1.5
    assert Notifier({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "1"}).watchdog_interval is None
