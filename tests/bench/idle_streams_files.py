"""Files the box holds with 1,100 idle TURN TCP connections (issue 12, item 3), at once and after 60 s.

    .venv/bin/python -m tests.bench.idle_streams_files [--tree DIR]

Starts `python -m appliance run` on free loopback ports with the default `[turn]` settings and a soft
limit of 1024 open files (systemd's default), as `DIR` has it when given (say, an earlier commit from
`git archive`), else this checkout. Opens 1,100 TCP connections to the TURN port that never send a
byte, then reads the process's open files (psutil `num_fds`) and tries an Allocate over a new TCP
connection, at once and 60 s later. Takes a little over a minute; not one of `./build.sh bench`'s.
"""
import argparse
import resource
import socket
import sys
import tempfile
import time
from pathlib import Path

import psutil

from appliance.turn import RestCredentials
from tests.lab.appliance import REPO, free_port, request, start_process
from tests.lab.turn_client import allocate_over_tcp

IDLE = 1100
AFTER = 60.0
# Keys every version of the box knows, so that an earlier checkout runs the same box.
CONFIG = """
[api]
listen = "127.0.0.1:{api}"
[sfu]
udp = "127.0.0.1:{media}"
workers = 1
[turn]
workers = 1
listen = ["udp://127.0.0.1:{turn}", "tcp://127.0.0.1:{turn}"]
secrets = ["test-rest-secret"]
relay_ports = "61000-61999"
"""


def _allocate(turn: tuple[str, int]) -> str:
    username, password = RestCredentials(["test-rest-secret"], 3600).mint(time.time(), 600, "bench")
    try:
        answer = allocate_over_tcp(turn, username, password)
    except OSError as e:
        return f"failed ({type(e).__name__})"
    code = answer.get(0x0009)  # ERROR-CODE
    return "succeeds" if code is None else f"answers {code[0]}"


def _healthz(api: int) -> str:
    try:
        return str(request("GET", f"http://127.0.0.1:{api}/healthz")[0])
    except OSError as e:
        return f"failed ({type(e).__name__})"


def _closed(sockets: list[socket.socket]) -> int:
    closed = 0
    for sock in sockets:
        sock.setblocking(False)
        try:
            closed += sock.recv(1) == b""
        except BlockingIOError:
            pass
        except ConnectionResetError:
            closed += 1
    return closed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tree", type=Path, default=REPO, help="the checkout to run the box from")
    tree = parser.parse_args().tree
    api, turn = free_port("tcp"), free_port("udp", "tcp")
    with tempfile.TemporaryDirectory() as directory:
        config = Path(directory) / "box.toml"
        config.write_text(CONFIG.format(api=api, media=free_port("udp"), turn=turn))
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))
        proc, _, ready = start_process([sys.executable, "-m", "appliance", "run", "--config", str(config)],
                                       Path(directory) / "box.log", cwd=tree)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        try:
            if not ready.wait(30) or proc.poll() is not None:
                raise SystemExit(f"the box did not start:\n{(Path(directory) / 'box.log').read_text()}")
            box = psutil.Process(proc.pid)
            print(f"box from {tree}: soft limit {box.rlimit(psutil.RLIMIT_NOFILE)[0]}, {box.num_fds()} files idle")
            idle = [socket.create_connection(("127.0.0.1", turn)) for _ in range(IDLE)]
            opened = time.monotonic()
            time.sleep(1.0)  # let the box accept them all
            print(f"{IDLE} idle connections open: {box.num_fds()} files; Allocate over TCP {_allocate(('127.0.0.1', turn))}"
                  f"; /healthz {_healthz(api)}")
            time.sleep(max(0.0, opened + AFTER - time.monotonic()))
            print(f"{AFTER:.0f} s later: {box.num_fds()} files; {_closed(idle)} of {IDLE} closed by the box; "
                  f"Allocate over TCP {_allocate(('127.0.0.1', turn))}")
            for sock in idle:
                sock.close()
        finally:
            proc.terminate()
            proc.wait(10)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


if __name__ == "__main__":
    main()
