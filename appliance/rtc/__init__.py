"""WebRTC transport on the shared media port: ICE-lite responder, DTLS-SRTP, RTP/RTCP demux,
and the controlling checks of sessions that relay to a third-party ICE-lite endpoint.

Sans-I/O cores (`ice`, `checks`, `dtls`, `port`, `framing`) and their asyncio shell (`io`), hosted by
`service.MediaService`. The SFU layer registers sessions on `MediaPort` and forwards
packets with `MediaPort.send_rtp`.
"""
from .checks import ChecksFailed
from .dtls import Closed, Connected, DtlsContext, Failed
from .ice import ConsentExpired, PathSelected, host_candidates, new_credentials
from .port import Event, MediaPort, PathClosed, Session, SessionHandler

__all__ = [
    "ChecksFailed", "Closed", "ConsentExpired", "Connected", "DtlsContext", "Event", "Failed", "MediaPort",
    "PathClosed", "PathSelected", "Session", "SessionHandler", "host_candidates", "new_credentials",
]
