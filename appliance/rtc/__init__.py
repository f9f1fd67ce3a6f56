"""WebRTC transport on the shared media port: ICE-lite responder, DTLS-SRTP, RTP/RTCP demux.

Sans-I/O cores (`ice`, `dtls`, `port`, `framing`) and their asyncio shell (`io`), hosted by
`service.MediaService`. The SFU layer registers sessions on `MediaPort` and forwards
packets with `MediaPort.send_rtp`.
"""
from .dtls import Closed, Connected, DtlsContext, Failed
from .ice import ConsentExpired, PathSelected, host_candidates, new_credentials
from .port import Event, MediaPort, PathClosed, Session, SessionHandler

__all__ = [
    "Closed", "ConsentExpired", "Connected", "DtlsContext", "Event", "Failed", "MediaPort", "PathClosed",
    "PathSelected", "Session", "SessionHandler", "host_candidates", "new_credentials",
]
