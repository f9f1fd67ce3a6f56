"""TURN (RFC 8656, RFC 5766 clients, RFC 6156 IPv6, RFC 6062 TCP relays): the sans-I/O server
core, REST credentials, the peer address policy. The asyncio shell lives elsewhere."""
from .allocation import Allocation, peer_key
from .clients import StreamClient, UdpListener
from .credentials import RestCredentials, Revocations, parse_username, rest_password
from .policy import PeerPolicy, canonical
from .server import Counters, TurnServer
from .settings import TurnSettings
from .shell import CloseConnected, CloseRelay, CloseStream, ConnectToPeer, Event, RelayBinder
from .usage import Usage

__all__ = [
    "Allocation", "CloseConnected", "CloseRelay", "CloseStream", "ConnectToPeer", "Counters", "Event", "PeerPolicy",
    "RelayBinder", "RestCredentials", "Revocations", "StreamClient", "TurnServer", "TurnSettings", "UdpListener",
    "Usage", "canonical", "parse_username", "peer_key", "rest_password",
]
