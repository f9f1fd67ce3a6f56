"""One session's SCTP association (RFC 8831) on its DTLS connection of the shared media port. It
runs on asyncio (aiortc's SCTP stack), so it belongs to the shell: the SFU's channel router drives it
through its own Association protocol and is handed one by the SFU service.

aiortc's `RTCSctpTransport` is the SCTP stack (ARCHITECTURE.md principle 2). It asks of the DTLS
transport under it only `state`, `_role`, `_register_data_receiver`, `_unregister_data_receiver`
and an async `_send_data`, and is fed through its `_handle_data`: `PortDtls` gives it exactly that
over `MediaPort.send_data` and the session handler's `data()`, so no socket or RTCDtlsTransport of
its own is involved. Every channel is negotiated out of band (the Calls API hands out the ids), so
the association opens `RTCDataChannel`s with `negotiated=True` and never announces one by DCEP.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from aiortc.rtcdatachannel import RTCDataChannel, RTCDataChannelParameters
from aiortc.rtcsctptransport import RTCSctpCapabilities, RTCSctpTransport

from ..logs import get_logger
from .port import MediaPort
from .port import Session as PortSession

log = get_logger("rtc.sctp")

Message = str | bytes


class ChannelSpec(Protocol):
    """A negotiated data channel as the association opens it (RFC 8832's parameters, agreed out of band)."""

    @property
    def id(self) -> int: ...

    @property
    def name(self) -> str: ...

    @property
    def ordered(self) -> bool: ...

    @property
    def max_retransmits(self) -> int | None: ...

    @property
    def max_packet_life_time(self) -> int | None: ...


C = TypeVar("C", bound=ChannelSpec)

# RFC 8841 6: no a=max-message-size means 64 KiB.
DEFAULT_MAX_MESSAGE_SIZE = 65536
# SCTP packets waiting for the association's reader: a peer's burst of a full congestion window
# fits; past that, drops are losses SCTP retransmits, so a stalled reader cannot grow memory.
RECEIVE_QUEUE = 256


class PortDtls:
    """What RTCSctpTransport needs of an RTCDtlsTransport, over a media port session that is
    already DTLS-connected. SCTP packets received go through a queue to one reader task, so they
    reach `_handle_data` in arrival order, one at a time, as aiortc's own DTLS transport feeds them."""

    def __init__(self, port: MediaPort, port_session: PortSession, clock: Callable[[], float]) -> None:
        self.state = "connected"  # RTCSctpTransport refuses a "closed" transport
        # RFC 8832 6 and aiortc: SCTP behaviour follows the DTLS role, not the ICE role.
        self._role = "server" if port_session.server else "client"
        self._port = port
        self._session = port_session
        self._clock = clock
        self._receiver: RTCSctpTransport | None = None
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(RECEIVE_QUEUE)

    def _register_data_receiver(self, receiver: RTCSctpTransport) -> None:
        self._receiver = receiver

    def _unregister_data_receiver(self, receiver: RTCSctpTransport) -> None:
        if self._receiver is receiver:
            self._receiver = None

    async def _send_data(self, data: bytes) -> None:
        # A packet the port cannot send now (DTLS closed, no selected path) is a loss to SCTP, which
        # retransmits or gives the association up on its own timers.
        self._port.send_data(self._session, data, self._clock())

    def feed(self, data: bytes) -> bool:
        """An SCTP packet from the session's DTLS; False when dropped (the reader is behind)."""
        try:
            self._queue.put_nowait(data)
        except asyncio.QueueFull:
            return False
        return True

    async def read(self) -> None:
        while True:
            data = await self._queue.get()
            if self._receiver is None:
                continue
            try:
                await self._receiver._handle_data(data)
            except Exception:  # noqa: BLE001 - one bad packet (aiortc asserts on some) must not end the reader
                log.exception("SCTP packet not handled")


class Association(Generic[C]):
    """The session's SCTP association and its negotiated channels, by stream id.

    `on_message(channel, message)` gets every message the client sends on a channel opened here.
    """

    _closing: set[asyncio.Task] = set()  # stops under way, held so that they are not collected mid-flight

    def __init__(self, port: MediaPort, port_session: PortSession, clock: Callable[[], float], remote_port: int,
                 max_message_size: int | None, on_message: Callable[[C, Message], None]) -> None:
        self.dtls = PortDtls(port, port_session, clock)
        # aiortc types its transport as its own RTCDtlsTransport; PortDtls gives it the few members it uses.
        self.sctp = RTCSctpTransport(self.dtls)  # type: ignore[arg-type]
        self.channels: dict[int, RTCDataChannel] = {}
        self._on_message = on_message
        # RFC 8841 6: a=max-message-size:0 means no limit, which aiortc also reads from 0.
        capabilities = RTCSctpCapabilities(
            maxMessageSize=DEFAULT_MAX_MESSAGE_SIZE if max_message_size is None else max_message_size)
        # RFC 8841 9.3: both ends send INIT; aiortc resolves the collision (RFC 9260 5.2.1).
        self._tasks = [
            asyncio.ensure_future(self.dtls.read()),
            asyncio.ensure_future(self.sctp.start(capabilities, remote_port)),
        ]

    def receive(self, data: bytes) -> bool:
        return self.dtls.feed(data)

    def open(self, channel: C) -> None:
        parameters = RTCDataChannelParameters(
            label=channel.name, ordered=channel.ordered, maxRetransmits=channel.max_retransmits,
            maxPacketLifeTime=channel.max_packet_life_time, negotiated=True, id=channel.id)
        transport = RTCDataChannel(self.sctp, parameters)
        transport.on("message", lambda message: self._on_message(channel, message))
        self.channels[channel.id] = transport

    def close(self, channel_id: int) -> None:
        """Reset the channel's stream (RFC 8831 6.7): the client's end closes too."""
        transport = self.channels.pop(channel_id, None)
        if transport is not None:
            transport.close()

    def state(self, channel_id: int) -> str | None:
        """The channel's readyState (connecting, open, closing, closed), or None if not opened here."""
        transport = self.channels.get(channel_id)
        return None if transport is None else transport.readyState

    def send(self, channel_id: int, message: Message) -> bool:
        """Queue one message on a channel; False when it is not open or the message is larger than
        the client accepts (its a=max-message-size)."""
        if self.state(channel_id) != "open":
            return False
        try:
            self.channels[channel_id].send(message)
        except ValueError:
            return False
        return True

    def stop(self) -> None:
        """ABORT the association (best effort: the DTLS under it may be gone already) and end its tasks."""
        for task in self._tasks:
            task.cancel()
        task = asyncio.ensure_future(self.sctp.stop())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
