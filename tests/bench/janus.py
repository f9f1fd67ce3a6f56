"""Janus (Debian's package) as the SFU bench's peer: the same fan-out as the box's, one publisher to N
subscribers through Janus's VideoRoom plugin, every PeerConnection a WebRTC one (full ICE, DTLS, SRTP), so
that Janus unprotects the publisher's SRTP and protects each subscriber's as the box does.

Janus skips loopback interfaces when it gathers candidates, so it runs in a lab namespace ("janus") on a
veth address, and the load peers' sockets and API requests come from a second lab namespace ("client")
at the other end of the veth pair: a thread of the bench moved there (setns acts per thread) makes them.
Sockets stay in the namespace they were made in, so the bench drives the load from its own thread.
Nothing here touches the machine's interfaces; the lab removes namespaces and processes whatever happens.

The bench installs nothing: without `janus`, `janus_missing()` says how to install it.
"""
from __future__ import annotations

import re
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.bench.janus_api import JanusApi
from tests.bench.janus_peer import JanusPeer
from tests.bench.janus_sdp import RemoteDescription
from tests.lab.netns import Lab, enter_netns, lab_unavailable, wait_for

INSTALL = "apt-get install -y janus"
CLIENT_ADDRESS, JANUS_ADDRESS, PREFIX = "198.51.100.1", "198.51.100.2", 30
HTTP_PORT = 8088
VIDEOROOM = "janus.plugin.videoroom"
ROOM = 1234
START_TIMEOUT = 20.0
EVENTS_PER_ANSWER = 5  # events a handle may see before the one carrying Janus's SDP
LOG_LINES = 30  # of Janus's log, in a failure's message


def janus_modules() -> Path | None:
    """Where the package put Janus's plugins and transports (a multiarch library directory), if anywhere."""
    found = sorted(Path("/usr/lib").glob("*/janus/plugins/libjanus_videoroom.so"))
    return found[0].parent.parent if found else None


def janus_missing() -> str | None:
    """Why Janus cannot run here (and how to fix that), or None."""
    if shutil.which("janus") is None or janus_modules() is None:
        return f"Janus is not installed: no Janus rows (Debian: {INSTALL})"
    reason = lab_unavailable()
    return None if reason is None else f"Janus runs in a lab namespace, and {reason}: no Janus rows"


def janus_version() -> str:
    """The installed Janus's name and version, e.g. "Janus 1.1.2"."""
    out = subprocess.run(["janus", "--version"], capture_output=True, text=True, timeout=10).stdout
    match = re.search(r"\((\d+(?:\.\d+)+)\)", out)
    return f"Janus {match[1]}" if match else "Janus"


def render_config(directory: Path, event_loops: int | None) -> Path:
    """Janus's configuration in `directory`, with only the HTTP transport and the VideoRoom plugin
    (linked into folders of their own, as Janus loads every module of its folders); the main file."""
    modules = janus_modules()
    assert modules is not None, "render_config without Janus installed"
    for folder, module in (("plugins", "libjanus_videoroom.so"), ("transports", "libjanus_http.so")):
        (directory / folder).mkdir()
        (directory / folder / module).symlink_to(modules / folder / module)
    for folder in ("events", "loggers"):
        (directory / folder).mkdir()
    loops = "" if event_loops is None else f"\n\tevent_loops = {event_loops}"
    (directory / "janus.jcfg").write_text(f"""general: {{
\tconfigs_folder = "{directory}"
\tplugins_folder = "{directory}/plugins"
\ttransports_folder = "{directory}/transports"
\tevents_folder = "{directory}/events"
\tloggers_folder = "{directory}/loggers"
\tdebug_level = 4
\tdebug_colors = false
\tsession_timeout = 0{loops}
}}
media: {{
\trtp_port_range = "20000-40000"
}}
nat: {{
\tnice_debug = false
\tfull_trickle = false
\tice_lite = false
\tice_enforce_list = "{JANUS_ADDRESS}"
}}
""")
    (directory / "janus.transport.http.jcfg").write_text(f"""general: {{
\tjson = "plain"
\tbase_path = "/janus"
\thttp = true
\tport = {HTTP_PORT}
\tip = "{JANUS_ADDRESS}"
\thttps = false
}}
admin: {{
\tadmin_http = false
\tadmin_https = false
}}
""")
    (directory / f"{VIDEOROOM}.jcfg").write_text("general: {\n}\n")
    return directory / "janus.jcfg"


@dataclass
class Fanout:
    """One publisher's PeerConnection and N subscribers', all connected through Janus."""

    janus_pid: int
    publisher: JanusPeer
    ssrcs: dict[str, int]
    subscribers: list[JanusPeer]


@contextmanager
def janus_fanout(n: int, event_loops: int | None, chrome: bool) -> Iterator[Fanout]:
    """A fresh Janus (`event_loops` shared loop threads, or by default one per handle) in a lab namespace,
    with one publisher fanned out to `n` subscribers, peers in Chrome mode or plain (janus_sdp.py);
    everything removed after the block."""
    peers: list[JanusPeer] = []
    with Lab() as lab:
        client, server = lab.host("client"), lab.host("janus")
        _, interface = lab.link(client, server, [f"{CLIENT_ADDRESS}/{PREFIX}"], [f"{JANUS_ADDRESS}/{PREFIX}"])
        # Janus looks only at running interfaces, both for candidates and for the HTTP transport's address.
        wait_for(lambda: server.run(["ip", "-br", "link", "show", interface]).stdout.split()[1] == "UP",
                 "the veth pair's carrier", START_TIMEOUT)
        config = render_config(server.dir, event_loops)
        janus = server.popen(["janus", "-F", str(server.dir), "-C", str(config)], log="janus")
        api = JanusApi(f"http://{JANUS_ADDRESS}:{HTTP_PORT}/janus")
        log = server.log_path("janus")
        try:
            with ThreadPoolExecutor(1, initializer=enter_netns, initargs=(client.netns,)) as in_client:
                try:
                    in_client.submit(_wait_started, api, janus.poll, log).result()
                    ssrcs = in_client.submit(_fan_out, api, n, chrome, peers).result()
                except (RuntimeError, OSError) as e:  # the lab and its log go at exit: say what Janus said
                    raise RuntimeError(f"{e}\nJanus's log ends:\n{_tail(log)}") from e
            # `ip netns exec` execs the program: the process started is Janus itself.
            yield Fanout(janus.pid, peers[0], ssrcs, peers[1:])
        finally:
            for peer in peers:
                peer.close()


def _wait_started(api: JanusApi, exited: Callable[[], int | None], log: Path) -> None:
    def answers() -> bool:
        if exited() is not None:
            raise RuntimeError("Janus exited at start")
        try:
            return api.info()["janus"] == "server_info"
        except OSError:
            return False

    wait_for(answers, "Janus's HTTP API answers", START_TIMEOUT, lambda: _tail(log))


def _tail(log: Path) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-LOG_LINES:])


def _fan_out(api: JanusApi, n: int, chrome: bool, peers: list[JanusPeer]) -> dict[str, int]:
    """Create the room, publish into it and subscribe `n` times; the publisher's SSRCs. Every peer
    made goes into `peers` first (publisher first), so that the caller closes them whatever happens."""
    session = api.create_session()
    handle = api.attach(session, VIDEOROOM)
    api.message(session, handle, {"request": "create", "room": ROOM, "publishers": 1, "audiocodec": "opus",
                                  "videocodec": "vp8", "bitrate": 0, "fir_freq": 0, "notify_joining": False})
    api.message(session, handle, {"request": "join", "ptype": "publisher", "room": ROOM})
    feed = api.event(session, handle)[0]["id"]
    publisher = JanusPeer(CLIENT_ADDRESS, chrome)
    peers.append(publisher)
    ssrcs = {"audio": secrets.randbits(32), "video": secrets.randbits(32)}
    api.message(session, handle, {"request": "publish"}, {"type": "offer", "sdp": publisher.offer(ssrcs)})
    publisher.publish(_remote(api, session, handle), ssrcs)
    api.webrtcup(session, handle)  # until then the feed cannot be subscribed to
    for _ in range(n):
        handle = api.attach(session, VIDEOROOM)
        api.message(session, handle, {"request": "join", "ptype": "subscriber", "room": ROOM,
                                      "streams": [{"feed": feed}]})
        remote = _remote(api, session, handle)
        subscriber = JanusPeer(CLIENT_ADDRESS, chrome)
        peers.append(subscriber)
        api.message(session, handle, {"request": "start"}, {"type": "answer", "sdp": subscriber.answer(remote)})
        subscriber.subscribe(remote)
        api.webrtcup(session, handle)
    return ssrcs


def _remote(api: JanusApi, session: int, handle: int) -> RemoteDescription:
    """Janus's SDP for `handle`, from the first of its events that carries one."""
    for _ in range(EVENTS_PER_ANSWER):
        data, jsep = api.event(session, handle)
        if jsep is not None:
            return RemoteDescription.parse(jsep["sdp"])
    raise RuntimeError(f"Janus sent {EVENTS_PER_ANSWER} events for handle {handle}, none with SDP (last: {data})")

