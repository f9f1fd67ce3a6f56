"""Media port hot path: microseconds per packet on this machine, with timeit, on loopback.

One session is keyed by a real in-memory DTLS handshake; the port's listener then sends on
a real UDP socket to a loopback socket nobody reads (the kernel drops what overflows it,
sendto still does all its work). Each figure is the best of REPEATS runs of COUNT packets,
and its ratio to the anchor, a bare `sendto` of the same size measured in the same run:

- protect:  SRTP protect alone
- send_rtp: `MediaPort.send_rtp`: protect + sendto (what each subscriber costs)
- receive:  `MediaPort.datagram_received` of SRTP: demux + unprotect + the handler call
- forward:  the same with the handler calling `send_rtp`: unprotect + protect + sendto,
            one publisher packet to one subscriber, the whole synchronous path
"""
from __future__ import annotations

import socket
import timeit

from appliance.rtc.port import Listener, MediaPort
from tests.unit.rtc.harness import PORT_CONTEXT, PWD, UFRAG, PEER_CONTEXT, PEER_UFRAG, Peer, Sink, rtp

COUNT, REPEATS = 10_000, 3  # 2 x 3 x COUNT inbound packets must fit 16-bit sequence numbers
SIZES = {"audio": 160, "video": 1100}


class _Forward:
    def __init__(self, port: MediaPort) -> None:
        self.port = port
        self.session = None
        self.echo = False

    def rtp(self, packet: bytes, now: float) -> None:
        if self.echo:
            self.port.send_rtp(self.session, packet)

    def rtcp(self, packet: bytes, now: float) -> None:
        pass

    def data(self, data: bytes) -> None:
        pass

    def event(self, event, now: float) -> None:
        pass


def _best(statement, packets_per_run: int = COUNT) -> float:
    """Microseconds per packet, best of REPEATS."""
    return min(timeit.repeat(statement, number=1, repeat=REPEATS)) / packets_per_run * 1e6


def _measure(payload_size: int, sender: socket.socket, drain: socket.socket) -> dict[str, float]:
    port = MediaPort(PORT_CONTEXT)
    handler = _Forward(port)
    handler.session = port.add_session(handler, UFRAG, PWD, remote_ufrag=PEER_UFRAG,
                                       remote_fingerprints=[PEER_CONTEXT.fingerprint], server=True)
    listener = Listener(Sink())
    peer = Peer(port, listener, drain.getsockname())
    peer.check()
    peer.dtls.start()
    peer.deliver()
    listener.sink = sender
    session, address = handler.session, drain.getsockname()
    packet = rtp(1, payload=bytes(payload_size))
    protected = peer.dtls.srtp_tx.protect(packet)
    srtp = session.srtp_tx

    sequence = iter(range(1, 1 << 16))
    # Inbound SRTP must be fresh each time (replay protection): protected ahead, outside the timing.
    def fresh():
        return [peer.dtls.srtp_tx.protect(rtp(next(sequence), payload=bytes(payload_size))) for _ in range(COUNT)]

    def receive_all(batch):
        received, now = port.datagram_received, 0.0
        for data in batch:
            received(listener, data, address, now)

    def timed_receive(echo: bool) -> float:
        handler.echo = echo
        runs = []
        for _ in range(REPEATS):
            batch = fresh()
            runs.append(timeit.timeit(lambda: receive_all(batch), number=1))
        return min(runs) / COUNT * 1e6

    figures = {
        "sendto (anchor)": _best(lambda: [sender.sendto(protected, address) for _ in range(COUNT)]),
        "protect": _best(lambda: [srtp.protect(packet) for _ in range(COUNT)]),
        "send_rtp": _best(lambda: [port.send_rtp(session, packet) for _ in range(COUNT)]),
        "receive": timed_receive(False),
        "forward": timed_receive(True),
    }
    assert port.counters.srtp_errors == 0 and port.counters.unmatched == 0
    return figures


def main() -> None:
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    drain = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind(("127.0.0.1", 0))
    drain.bind(("127.0.0.1", 0))
    try:
        for kind, size in SIZES.items():
            figures = _measure(size, sender, drain)
            anchor = figures["sendto (anchor)"]
            print(f"  {kind} RTP, {size}-byte payload, best of {REPEATS} x {COUNT} packets:")
            for name, micros in figures.items():
                print(f"    {name:16} {micros:6.2f} us/packet  {micros / anchor:5.2f} x sendto")
    finally:
        sender.close()
        drain.close()


if __name__ == "__main__":
    main()
