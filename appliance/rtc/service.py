"""The media port as the runner hosts it (service name "sfu"): binds `[sfu] udp` and,
when set, `[sfu] tcp`; the SFU layer registers sessions on `port`."""
from __future__ import annotations

import asyncio

from aiortc.rtcdtlstransport import RTCCertificate
from aiortc.rtcicetransport import RTCIceCandidate

from ..logs import get_logger
from ..plumbing.drops import count_drops
from ..service import StartError
from .dtls import DtlsContext
from .ice import host_candidates
from .io import MediaIO
from .port import MediaPort

log = get_logger("sfu")


class MediaService:
    name = "sfu"

    def __init__(self, box) -> None:
        self.config = box.config.sfu
        # One certificate for the box's sessions: its fingerprint goes into every SDP we write.
        self.certificate = RTCCertificate.generateCertificate()
        self.port = MediaPort(DtlsContext(self.certificate))
        self.io: MediaIO | None = None
        count_drops(box.registry, "media", lambda: self.io.udp_sockets if self.io else [])
        self.udp: list[tuple[str, int]] = []
        self.tcp: list[tuple[str, int]] = []

    async def start(self) -> None:
        self.io = MediaIO(asyncio.get_running_loop(), self.port)
        key, endpoint = "sfu.udp", None
        try:
            for i, endpoint in enumerate(self.config.udp):
                key = f"sfu.udp[{i}]"
                self.udp.append(self.io.open_udp(str(endpoint.host), endpoint.port))
            for i, endpoint in enumerate(self.config.tcp):
                key = f"sfu.tcp[{i}]"
                self.tcp.append(await self.io.open_tcp(str(endpoint.host), endpoint.port))
        except OSError as e:
            await self.stop()
            raise StartError(f"cannot listen on {endpoint} ({key}): {e.strerror or e}") from None
        log.info("listening", udp=_listed(self.config.udp), tcp=_listed(self.config.tcp))

    async def stop(self) -> None:
        if self.io is not None:
            await self.io.close()
            self.io = None
        self.udp.clear()
        self.tcp.clear()

    def health(self) -> str | None:
        return None if self.udp else "not listening"

    def urls(self) -> list[str]:
        tcp = f", ICE-TCP {_listed(self.config.tcp)}" if self.config.tcp else ""
        return [f"SFU media  udp {_listed(self.config.udp)}{tcp}  (ICE-lite, DTLS-SRTP, one port for every session)"]

    def candidates(self) -> tuple[RTCIceCandidate, ...]:
        """The host candidates for our SDP: the public addresses when configured (anycast),
        else the bound ones, each with the bound port."""
        public = [str(address) for address in self.config.public_addresses]
        return host_candidates(_advertised(self.udp, public), _advertised(self.tcp, public))


def _listed(endpoints) -> str:
    return ", ".join(map(str, endpoints)) or "none"


def _advertised(bound: list[tuple[str, int]], public: list[str]) -> list[tuple[str, int]]:
    if not bound or not public:
        return bound
    port = bound[0][1]
    return [(ip, port) for ip in public]
