"""The TURN shell on loopback sockets: a UDP client's allocation and each of its channels get a
socket connected to their remote, on the listener's and the relay's address, and the kernel hands
those sockets the relayed data."""
import asyncio
import ipaddress
import select
import socket
import time

from appliance.plumbing.udp import IP_MTU_DISCOVER, PMTUDISC_DO
from appliance.stun import TRANSPORT_UDP, Attr, Class, Message, Method, pack_channel_data, unpack_channel_data
from appliance.turn import io as turn_io
from appliance.turn import PeerPolicy, RestCredentials, TurnServer, TurnSettings
from appliance.turn.io import TurnIO
from tests.lab.turn_client import TurnUdpClient

SECRET = "io-test-secret"
RELAY_PORTS = (61000, 61999)  # where the lab's boxes relay too: outside the kernel's ephemeral range


def _remote_port(sock: socket.socket) -> int | None:
    try:
        return sock.getpeername()[1]
    except OSError:  # not connected
        return None


class Shell:
    """A TurnIO listening on `listen`, a client of it and two peers, all on loopback."""

    def __init__(self, listen: str) -> None:
        self.loop = asyncio.get_running_loop()
        self.io = TurnIO(self.loop, lambda binder: TurnServer(
            TurnSettings(relay_addresses=("127.0.0.1",), relay_ports=RELAY_PORTS), RestCredentials([SECRET], 3600),
            PeerPolicy([ipaddress.ip_network("127.0.0.0/8")]), binder, wall=time.time))
        self.io.open_udp_listener(listen, 0)
        self.server = ("127.0.0.1", next(iter(self.io._udp.values())).getsockname()[1])
        self.client = TurnUdpClient(self.server, *RestCredentials([SECRET], 3600).mint(time.time(), 600, "io"))
        self.peers = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
        for peer in self.peers:
            peer.settimeout(2)
            peer.bind(("127.0.0.1", 0))

    async def request(self, method: int, *attributes: tuple[int, object]) -> Message:
        answer = await asyncio.to_thread(self.client.request, method, *attributes)
        assert answer.get(Attr.ERROR_CODE) is None, answer
        return answer

    def connected(self) -> list[int]:
        """The remote ports of the connected sockets open."""
        return sorted(port for port in map(_remote_port, self.io._udp.values()) if port is not None)

    def read_connected_only(self) -> None:
        for sock in self.io._udp.values():
            if _remote_port(sock) is None:
                self.loop.remove_reader(sock.fileno())

    async def close(self) -> None:
        self.client.close()
        for peer in self.peers:
            peer.close()
        await self.io.close()


async def _relay_through(listen: str) -> tuple[tuple[int, int], list[int], list[int]]:
    """Allocate, bind a channel to one peer and permit the other; each peer's datagram reaches the
    client, then only connected sockets are read while the channel carries a datagram each way. The
    client's and the channel peer's ports, and the remote ports of the connected sockets open after
    the bind and at the end."""
    shell = Shell(listen)
    client, (peer, other) = shell.client, shell.peers
    try:
        relayed = (await shell.request(Method.ALLOCATE, (Attr.REQUESTED_TRANSPORT, TRANSPORT_UDP))).get(
            Attr.XOR_RELAYED_ADDRESS)
        await shell.request(Method.CHANNEL_BIND, (Attr.CHANNEL_NUMBER, 0x4001), (Attr.XOR_PEER_ADDRESS, peer.getsockname()))
        await shell.request(Method.CREATE_PERMISSION, (Attr.XOR_PEER_ADDRESS, other.getsockname()))
        after_bind = shell.connected()
        # The channel's peer comes through the socket connected to it, the other through the relay socket.
        other.sendto(b"other", relayed)
        assert Message.parse(await asyncio.to_thread(client.sock.recv, 2048)).get(Attr.DATA) == b"other"
        peer.sendto(b"peer", relayed)
        assert unpack_channel_data(await asyncio.to_thread(client.sock.recv, 2048)) == (0x4001, b"peer")
        if not ipaddress.ip_address(listen).is_unspecified:
            shell.read_connected_only()
        client.sock.sendto(pack_channel_data(0x4001, b"ping"), shell.server)
        assert await asyncio.to_thread(peer.recvfrom, 2048) == (b"ping", relayed)
        peer.sendto(b"pong", relayed)
        assert unpack_channel_data(await asyncio.to_thread(client.sock.recv, 2048)) == (0x4001, b"pong")
        await shell.request(Method.REFRESH, (Attr.LIFETIME, 0))
        return (client.sock.getsockname()[1], peer.getsockname()[1]), after_bind, shell.connected()
    finally:
        await shell.close()


def test_the_client_and_the_channel_peer_get_connected_sockets_that_carry_the_data():
    ports, after_bind, at_end = asyncio.run(_relay_through("127.0.0.1"))
    assert after_bind == sorted(ports) and at_end == []


def test_a_wildcard_listener_gets_no_connected_client_sockets():
    # A client's datagrams may come to any of the box's addresses: only the listener can answer from the right one.
    (_, peer_port), after_bind, at_end = asyncio.run(_relay_through("0.0.0.0"))
    assert after_bind == [peer_port] and at_end == []


def test_a_channel_of_a_dont_fragment_allocation_sends_with_df():
    async def main() -> list[int]:
        shell = Shell("127.0.0.1")
        try:
            await shell.request(Method.ALLOCATE, (Attr.REQUESTED_TRANSPORT, TRANSPORT_UDP), (Attr.DONT_FRAGMENT, True))
            await shell.request(Method.CHANNEL_BIND, (Attr.CHANNEL_NUMBER, 0x4001),
                                (Attr.XOR_PEER_ADDRESS, shell.peers[0].getsockname()))
            peer_port = shell.peers[0].getsockname()[1]
            return [sock.getsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER) for sock in shell.io._udp.values()
                    if _remote_port(sock) == peer_port]
        finally:
            await shell.close()

    assert asyncio.run(main()) == [PMTUDISC_DO]


def test_a_datagram_that_reaches_a_client_socket_before_its_connect_is_answered_to_its_sender(monkeypatch):
    # The kernel's window between a connected socket's bind and its connect, widened by the test: another
    # client's Binding request lands in it. Its answer must go to that client, not to the allocation's.
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger.bind(("127.0.0.1", 0))
    stranger.settimeout(2)
    landed: list[bytes] = []
    shells: list[Shell] = []

    def widened(local, remote, share):
        for listener in shells[0].io._udp.values():  # steer the kernel's choice off the listener: no CPU is its
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_INCOMING_CPU, 4095)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, share, 1)
        sock.bind(local)
        for _ in range(20):  # the listener may win the kernel's choice: until one lands here
            request = Message(Method.BINDING, Class.REQUEST)
            stranger.sendto(request.encode(), local)
            if select.select([sock], [], [], 0.2)[0]:
                landed.append(request.transaction_id)
                break
        sock.connect(remote)
        sock.setblocking(False)
        return sock

    monkeypatch.setattr(turn_io, "connected_udp_socket", widened)

    async def main() -> list[bytes]:
        shell = Shell("127.0.0.1")
        shells.append(shell)
        try:
            await shell.request(Method.ALLOCATE, (Attr.REQUESTED_TRANSPORT, TRANSPORT_UDP))
            answered = []
            while not landed or landed[0] not in answered:
                answer = Message.parse(await asyncio.to_thread(stranger.recv, 2048))
                assert answer.message_class == Class.SUCCESS
                answered.append(answer.transaction_id)
            return answered
        finally:
            await shell.close()
            stranger.close()

    answered = asyncio.run(main())
    assert landed and landed[0] in answered
