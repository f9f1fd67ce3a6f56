"""BirdControl against a fake BIRD (for replies a real one will not give on demand) and a real one."""
from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from netconfig.bird_control import BirdControl, BirdError, BirdProtocolError, ProtocolState

GREETING = "0001 BIRD 2.0.12 ready.\n"

# Replies as a real BIRD 2.0.12 sent them, byte for byte, over its control socket (only the
# session's name and state were picked for the test).
SHOW_PROTOCOLS = (
    "2002-Name       Proto      Table      State  Since         Info\n"
    "1002-device1    Device     ---        up     12:23:02.963  \n"
    " anycast4   Static     master4    up     12:23:02.963  \n"
    " peer_192_0_2_1 BGP        ---        up     12:21:59.403  Established   \n"
    " peer_2001_db8__1 BGP        ---        start  12:21:59.403  Active        Socket: Connection refused\n"
    "0000 \n"
)
SHOW_STATUS = (
    "1000-BIRD 2.0.12\n"
    "1011-Router ID is 192.0.2.2\n"
    " Hostname is vm\n"
    " Current server time is 2026-11-25 12:23:03.566\n"
    " Last reboot on 2026-11-25 12:23:02.963\n"
    " Last reconfiguration on 2026-11-25 12:23:02.963\n"
    "0013 Daemon is up and running\n"
)
STATUS_RECONFIGURING = SHOW_STATUS.replace("0013 Daemon is up and running", "0013 Reconfiguration in progress")
SHOW_ROUTE = (
    "1007-Table master4:\n"
    " 203.0.113.10/32      blackhole [anycast4 12:23:02.963] * (200)\n"
    " \n"
    " Table master6:\n"
    " 2001:db8:ffff::10/128 blackhole [anycast6 12:23:02.963] * (200)\n"
    "0000 \n"
)
READING = "0002-Reading configuration from /etc/bird/bird.conf\n"


class HangUp(str):
    """A canned reply after which FakeBird closes the connection."""


class FakeBird:
    """A stand-in for BIRD's control socket that replays canned replies in BIRD's reply format.

    It knows nothing of BIRD's commands; `replies` maps each command line to the replies it gets
    in turn (the last one repeats). It serves one connection at a time and records the commands.
    """

    def __init__(self, path: Path, replies: dict[str, list[str]], greeting: str = GREETING):
        self.replies = {command: list(texts) for command, texts in replies.items()}
        self.greeting = greeting
        self.commands: list[str] = []
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(path))
        self._listener.listen()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return  # closed by stop()
            with conn, conn.makefile("rb") as reader, contextlib.suppress(ConnectionError):
                conn.sendall(self.greeting.encode())
                for raw in reader:
                    command = raw.decode().rstrip("\n")
                    self.commands.append(command)
                    queue = self.replies.get(command, ["9001 syntax error, unexpected CF_SYM_UNDEFINED\n"])
                    reply = queue.pop(0) if len(queue) > 1 else queue[0]
                    conn.sendall(reply.encode())
                    if isinstance(reply, HangUp):
                        break

    def stop(self) -> None:
        self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(timeout=5)


@pytest.fixture
def fake_bird(tmp_path):
    """Start a FakeBird on `tmp_path/bird.ctl`: `fake_bird(replies, greeting=...)` returns it."""
    started: list[FakeBird] = []

    def start(replies: dict[str, list[str]], **kwargs) -> FakeBird:
        fake = FakeBird(tmp_path / "bird.ctl", replies, **kwargs)
        started.append(fake)
        return fake

    yield start
    for fake in started:
        fake.stop()


def connect(tmp_path: Path, timeout: float = 5.0) -> BirdControl:
    return BirdControl(str(tmp_path / "bird.ctl"), timeout=timeout)


def test_reply_lines_keep_their_codes_across_continuations(fake_bird, tmp_path):
    fake_bird({"show route": [SHOW_ROUTE]})
    with connect(tmp_path) as bird:
        assert bird.greeting == "BIRD 2.0.12 ready."
        reply = bird.command("show route")
    assert reply.code == 0
    assert reply.message == ""
    assert reply.texts(1007) == [
        "Table master4:",
        "203.0.113.10/32      blackhole [anycast4 12:23:02.963] * (200)",
        "",
        "Table master6:",
        "2001:db8:ffff::10/128 blackhole [anycast6 12:23:02.963] * (200)",
    ]


def test_protocols_parses_show_protocols(fake_bird, tmp_path):
    fake_bird({"show protocols": [SHOW_PROTOCOLS]})
    with connect(tmp_path) as bird:
        protocols = bird.protocols()
    assert list(protocols) == ["device1", "anycast4", "peer_192_0_2_1", "peer_2001_db8__1"]
    assert protocols["anycast4"] == ProtocolState("anycast4", "Static", "master4", "up", "12:23:02.963", "")
    assert protocols["peer_192_0_2_1"] == ProtocolState("peer_192_0_2_1", "BGP", "---", "up", "12:21:59.403", "Established")
    assert protocols["peer_2001_db8__1"].state == "start"
    assert protocols["peer_2001_db8__1"].info == "Active        Socket: Connection refused"


def test_a_short_protocols_row_is_refused(fake_bird, tmp_path):
    fake_bird({"show protocols": ["1002-device1    Device\n0000 \n"]})
    with connect(tmp_path) as bird, pytest.raises(BirdProtocolError, match="fewer than 5 columns"):
        bird.protocols()


def test_status(fake_bird, tmp_path):
    fake_bird({"show status": [SHOW_STATUS]})
    with connect(tmp_path) as bird:
        status = bird.status()
    assert (status.version, status.router_id, status.message) == ("BIRD 2.0.12", "192.0.2.2", "Daemon is up and running")
    assert status.running


@pytest.mark.parametrize(
    ("command", "reply", "code", "message"),
    [
        ('show protocols "nope"', "8003 No protocols match\n", 8003, "No protocols match"),
        ("foo", "9001 syntax error, unexpected CF_SYM_UNDEFINED\n", 9001, "syntax error, unexpected CF_SYM_UNDEFINED"),
    ],
)
def test_error_codes_raise_bird_error(fake_bird, tmp_path, command, reply, code, message):
    fake_bird({command: [reply], "show status": [SHOW_STATUS]})
    with connect(tmp_path) as bird:
        with pytest.raises(BirdError) as caught:
            bird.command(command)
        assert (caught.value.code, caught.value.message) == (code, message)
        assert bird.status().running  # an error reply leaves the connection usable


def test_configure_returns_on_reconfigured(fake_bird, tmp_path):
    fake = fake_bird({"configure": [READING + "0003 Reconfigured\n"]})
    with connect(tmp_path) as bird:
        bird.configure()
    assert fake.commands == ["configure"]


def test_configure_in_progress_waits_for_the_daemon_to_settle(fake_bird, tmp_path):
    fake = fake_bird({
        "configure": [READING + "0004 Reconfiguration in progress\n"],
        "show status": [STATUS_RECONFIGURING, STATUS_RECONFIGURING, SHOW_STATUS],
    })
    with connect(tmp_path) as bird:
        bird.configure(poll=0.01)
    assert fake.commands == ["configure", "show status", "show status", "show status"]


def test_configure_gives_up_when_reconfiguration_never_ends(fake_bird, tmp_path):
    fake_bird({"configure": [READING + "0004 Reconfiguration in progress\n"], "show status": [STATUS_RECONFIGURING]})
    with connect(tmp_path) as bird, pytest.raises(TimeoutError, match="Reconfiguration in progress"):
        bird.configure(timeout=0.05, poll=0.01)


def test_configure_raises_on_a_bad_file(fake_bird, tmp_path):
    fake_bird({"configure": [READING + "8002 /etc/bird/bird.conf:4:46 Invalid prefix length 33\n"]})
    with connect(tmp_path) as bird, pytest.raises(BirdError) as caught:
        bird.configure()
    assert caught.value.code == 8002
    assert caught.value.message == "/etc/bird/bird.conf:4:46 Invalid prefix length 33"


def test_configure_refuses_other_replies(fake_bird, tmp_path):
    fake_bird({"configure": [READING + "0006 Reconfiguration ignored, shutting down\n"]})
    with connect(tmp_path) as bird, pytest.raises(BirdError, match="0006: Reconfiguration ignored"):
        bird.configure()


def test_a_greeting_that_is_not_birds_is_refused(fake_bird, tmp_path):
    fake_bird({}, greeting="0000 hello\n")
    with pytest.raises(BirdProtocolError, match="greeted with 0000"):
        connect(tmp_path)


def test_a_line_outside_the_format_is_refused(fake_bird, tmp_path):
    fake_bird({"show status": ["1000-BIRD 2.0.12\nHTTP/1.1 400 Bad Request\n"]})
    with connect(tmp_path) as bird, pytest.raises(BirdProtocolError, match="not a BIRD reply line"):
        bird.status()


def test_hanging_up_mid_reply_closes_the_connection(fake_bird, tmp_path):
    fake_bird({"show status": [HangUp("1000-BIRD 2.0.12\n")]})
    bird = connect(tmp_path)
    with pytest.raises(BirdProtocolError, match="closed in the middle of a reply"):
        bird.status()
    with pytest.raises(OSError):
        bird.command("show status")


def test_silence_times_out_and_closes_the_connection(fake_bird, tmp_path):
    fake_bird({"show status": ["1000-BIRD 2.0.12\n"]})  # never sends the last line
    bird = connect(tmp_path, timeout=0.2)
    with pytest.raises(TimeoutError):
        bird.status()
    with pytest.raises(OSError):
        bird.command("show status")


def test_a_command_is_one_line(fake_bird, tmp_path):
    fake = fake_bird({})
    with connect(tmp_path) as bird, pytest.raises(ValueError, match="one line"):
        bird.command("show status\nconfigure")
    assert fake.commands == []


# --- a real BIRD ---------------------------------------------------------------------------
# Safe on the host: with only `protocol device` and static protocols BIRD opens no network
# socket and, with no `protocol kernel`, touches no routing table.

REAL_CONF = """router id 192.0.2.2;
protocol device {
}
protocol static anycast4 {
    ipv4;
    route 203.0.113.10/32 blackhole;
}
"""
EXTRA_STATIC = """protocol static anycast6 {
    ipv6;
    route 2001:db8:ffff::10/128 blackhole;
}
"""


@pytest.fixture
def real_bird(tmp_path):
    """A BIRD running in the foreground on tmp_path/bird.conf, controlled through tmp_path/bird.ctl."""
    if shutil.which("bird") is None:
        pytest.skip("BIRD 2 is not installed (Debian package bird2)")
    conf, ctl = tmp_path / "bird.conf", tmp_path / "bird.ctl"
    conf.write_text(REAL_CONF)
    with open(tmp_path / "bird.log", "wb") as log:
        process = subprocess.Popen(
            ["bird", "-f", "-c", str(conf), "-s", str(ctl), "-P", str(tmp_path / "bird.pid")],
            stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 10
        while not ctl.exists():
            assert process.poll() is None, f"bird exited: {(tmp_path / 'bird.log').read_text()}"
            assert time.monotonic() < deadline, "bird made no control socket within 10 s"
            time.sleep(0.02)
        yield conf, str(ctl)
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_real_bird_protocols_and_status(real_bird):
    _, ctl = real_bird
    with BirdControl(ctl) as bird:
        assert bird.greeting.startswith("BIRD 2.")
        protocols = bird.protocols()
        status = bird.status()
    assert {name: (p.proto, p.state) for name, p in protocols.items()} == {
        "device1": ("Device", "up"),
        "anycast4": ("Static", "up"),
    }
    assert protocols["anycast4"].table == "master4"
    assert status.running
    assert status.router_id == "192.0.2.2"
    assert status.version.startswith("BIRD 2.")


def test_real_bird_errors(real_bird):
    _, ctl = real_bird
    with BirdControl(ctl) as bird:
        with pytest.raises(BirdError) as caught:
            bird.command('show protocols "nope"')
        assert caught.value.code == 8003
        with pytest.raises(BirdError) as caught:
            bird.command("no such command")
        assert caught.value.code == 9001


def test_real_bird_configure_adds_and_removes(real_bird):
    conf, ctl = real_bird
    with BirdControl(ctl) as bird:
        conf.write_text(REAL_CONF + EXTRA_STATIC)
        bird.configure()  # a new protocol: BIRD answers 0003 at once
        assert "2001:db8:ffff::10/128" in "\n".join(bird.command("show route").texts(1007))
        assert bird.protocols()["anycast6"].state == "up"

        conf.write_text(REAL_CONF)
        bird.configure()  # a protocol to shut down: BIRD answers 0004 and finishes later
        assert "anycast6" not in bird.protocols()
        assert "2001:db8:ffff::10/128" not in "\n".join(bird.command("show route").texts(1007))


def test_real_bird_keeps_running_config_when_file_is_bad(real_bird):
    conf, ctl = real_bird
    with BirdControl(ctl) as bird:
        conf.write_text(REAL_CONF.replace("203.0.113.10/32", "203.0.113.10/33"))
        with pytest.raises(BirdError) as caught:
            bird.configure()
        assert caught.value.code == 8002
        assert "Invalid prefix length 33" in caught.value.message
        assert bird.protocols()["anycast4"].state == "up"
        assert bird.status().running


# Recorded from BIRD 2.0.12 over an Established session to FRR (the lab's topology).
SHOW_ROUTE_EXPORT = "1007-Table master4:\n 203.0.113.10/32      blackhole [anycast4 12:51:34.671] * (200)\n0000 \n"
SHOW_ROUTE_EXPORT_NONE = "0000 \n"
SHOW_ROUTE_EXPORT_TWO_PATHS = (
    "1007-Table master6:\n"
    " 2001:db8:ffff::10/128 blackhole [anycast6 12:51:34.671] * (200)\n"
    "                     blackhole [other6 12:51:34.671] (200)\n"
    " 2001:db8:ffff::11/128 blackhole [anycast6 12:51:34.671] * (200)\n"
    "0000 \n"
)


def test_exported_lists_the_prefixes_of_a_channel(fake_bird, tmp_path):
    fake = fake_bird({
        "show route export peer_192_0_2_1.ipv4": [SHOW_ROUTE_EXPORT],
        "show route export peer_192_0_2_1.ipv6": [SHOW_ROUTE_EXPORT_TWO_PATHS],
        "show route export peer_2001_db8__1.ipv4": [SHOW_ROUTE_EXPORT_NONE],
    })
    with connect(tmp_path) as bird:
        assert bird.exported("peer_192_0_2_1.ipv4") == ["203.0.113.10/32"]
        assert bird.exported("peer_192_0_2_1.ipv6") == ["2001:db8:ffff::10/128", "2001:db8:ffff::11/128"]
        assert bird.exported("peer_2001_db8__1.ipv4") == []
    assert fake.commands[0] == "show route export peer_192_0_2_1.ipv4"
