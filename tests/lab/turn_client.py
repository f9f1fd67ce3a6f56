"""Real TURN clients for the tests: coturn's `turnutils_uclient` and `turnutils_peer`, and a
minimal UDP client on the project's codec for flows uclient cannot script (revocation)."""
from __future__ import annotations

import re
import socket
import subprocess
from dataclasses import dataclass

from appliance.stun import Attr, Class, Message, Method, TRANSPORT_UDP, long_term_key

from .appliance import free_port


@dataclass
class UclientResult:
    sent: int
    received: int
    lost: int
    output: str


def run_uclient(server: str, port: int, *flags: str, timeout: float = 120.0, netns: str | None = None) -> tuple[int, str]:
    """Run turnutils_uclient to completion (bounded by -n and by `timeout`), in the lab namespace
    `netns` if given; (exit status, output)."""
    inside = ["ip", "netns", "exec", netns] if netns else []
    result = subprocess.run([*inside, "turnutils_uclient", *flags, "-p", str(port), server], capture_output=True,
                            text=True, timeout=timeout)
    return result.returncode, result.stdout + result.stderr


def uclient(server: str, port: int, *flags: str, timeout: float = 120.0, netns: str | None = None) -> UclientResult:
    """Run turnutils_uclient; its totals."""
    status, output = run_uclient(server, port, *flags, timeout=timeout, netns=netns)
    totals = re.findall(r"tot_send_msgs=(\d+), tot_recv_msgs=(\d+)\n", output)
    lost = re.findall(r"Total lost packets (\d+)", output)
    if not totals or not lost:
        raise AssertionError(f"turnutils_uclient (exit {status}) printed no totals:\n{output[-3000:]}")
    sent, received = map(int, totals[-1])
    return UclientResult(sent, received, int(lost[-1]), output)


class EchoPeer:
    """`turnutils_peer`: a UDP echo peer on a free port of `host`."""

    def __init__(self, host: str = "127.0.0.1"):
        self.host = host
        self.port = free_port("udp") if ":" not in host else _free_udp6(host)
        self.proc = subprocess.Popen(["turnutils_peer", "-L", host, "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _free_udp6(host: str) -> int:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class TurnUdpClient:
    """One long-term-credential TURN client over UDP (RFC 8656), request by request."""

    def __init__(self, server: tuple[str, int], username: str, password: str, realm: str = "edgecall"):
        self.server = server
        self.username, self.password, self.realm = username, password, realm
        self.nonce: bytes | None = None
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(2)

    def close(self) -> None:
        self.sock.close()

    def request(self, method: int, *attributes: tuple[int, object]) -> Message:
        """Send a signed request (learning the nonce from a 401/438 first); the response."""
        for _ in range(3):
            message = Message(method, Class.REQUEST, None, list(attributes))
            key = None
            if self.nonce is not None:
                message.add(Attr.USERNAME, self.username).add(Attr.REALM, self.realm).add(Attr.NONCE, self.nonce)
                key = long_term_key(self.username, self.realm, self.password)
            self.sock.sendto(message.encode(key), self.server)
            response = Message.parse(self.sock.recv(2048))
            error = response.get(Attr.ERROR_CODE)
            if response.message_class == Class.ERROR and error and error[0] in (401, 438) and Attr.NONCE in response:
                if self.nonce is not None and error[0] == 401:
                    return response
                self.nonce = response.get(Attr.NONCE)
                continue
            return response
        return response

    def allocate(self) -> Message:
        return self.request(Method.ALLOCATE, (Attr.REQUESTED_TRANSPORT, TRANSPORT_UDP))


def allocate_over_tcp(server: tuple[str, int], username: str, password: str, realm: str = "edgecall") -> Message:
    """One UDP-relay Allocate over a new TCP connection (answering the 401 challenge); the answer."""
    with socket.create_connection(server, timeout=10) as sock:
        request = Message(Method.ALLOCATE, Class.REQUEST, None, [(Attr.REQUESTED_TRANSPORT, TRANSPORT_UDP)])
        sock.sendall(request.encode())
        challenge = _read_message(sock)
        signed = Message(Method.ALLOCATE, Class.REQUEST, None, [(Attr.REQUESTED_TRANSPORT, TRANSPORT_UDP)])
        signed.add(Attr.USERNAME, username).add(Attr.REALM, realm).add(Attr.NONCE, challenge.get(Attr.NONCE))
        sock.sendall(signed.encode(long_term_key(username, realm, password)))
        return _read_message(sock)


def _read_message(sock: socket.socket) -> Message:
    head = _read_exactly(sock, 20)
    return Message.parse(head + _read_exactly(sock, int.from_bytes(head[2:4], "big")))


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the server closed the connection")
        data += chunk
    return data
