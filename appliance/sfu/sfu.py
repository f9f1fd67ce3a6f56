"""The SFU's session model behind the Calls API: sessions, pushed and pulled tracks, offers and
answers. Sans-I/O: the API layer calls it and the media port calls the sessions it registers, each
passing `now` (the event loop's clock); its periodic work runs from `handle_timer`, when
`get_timer` says (aioquic's verbs, as the media port and the TURN core)."""
from __future__ import annotations

import secrets
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from itertools import chain
from typing import Any

from aiortc.rtcdtlstransport import RTCDtlsFingerprint
from aiortc.rtcicetransport import RTCIceCandidate

from ..logs import get_logger
from ..rtc.checks import ChecksFailed
from ..rtc.dtls import Closed, Connected, Failed
from ..rtc.ice import ConsentExpired, PathSelected
from ..rtc.port import Event, MediaPort
from . import extensions, rtcp, sdp
from .channel_router import Associate, ChannelRouter
from .codecs import (OFFERED, Codec, accept, accept_extensions, accept_rtx, feedback, match, rtx_for, rtx_pairs,
                     subscriber_feedback)
from .errors import ItemError, SfuError
from .forward import Leg
from .journal import Moved, journaled
from .layers import preferences
from .remote import Remote
from .repair import Repair
from .reports import Reports
from .session import CallSession, IngestCounters, Transceiver
from .streams import PACKET_OVERHEAD
from .switching import LayerSwitcher
from .tracks import PublishedTrack
from .transport import FEEDBACK_INTERVAL, TransportReceiver

log = get_logger("sfu")

# CALLS_API.md 4: a session that never connects, or a track with no media, goes after 30 s.
IDLE_TIMEOUT = 30.0
REPORT_INTERVAL = 1.0  # sender and receiver reports
ADAPT_INTERVAL = 0.5  # simulcast layer choice
SWEEP_INTERVAL = 5.0  # sessions that never connected, tracks without media


class Sfu:
    """The session model (sessions, their transceivers and tracks) and the composition of the parts
    that act on media: `repair` (keyframes, NACKs), `switcher` (which stream each leg forwards),
    `reports` (the SFU's own RTCP), `channels` (data channels). The sessions it creates reach it
    as their SessionOwner."""

    def __init__(self, port: MediaPort, candidates: Callable[[], Sequence[RTCIceCandidate]], associate: Associate,
                 retransmissions: bool = True) -> None:
        self.port = port
        self.candidates = candidates  # the media port's host candidates, written into every description
        # [sfu] retransmissions: the cache answers NACKs and the box NACKs its publishers.
        self.retransmissions = retransmissions
        self.sessions: dict[str, CallSession] = {}
        self.live: Counter[str] = Counter()  # live sessions per app, for the API's per-app cap
        self.ingest = IngestCounters()
        self.repair = Repair()
        self.switcher = LayerSwitcher(self.repair)
        self.reports = Reports(port)
        # The data channels and each session's SCTP association.
        self.channels = ChannelRouter(associate, self.sessions)
        # Packets of legs that have ended, so the forwarded total never goes down.
        self._ended_leg_packets = 0
        # Bytes of tracks and legs that have ended, per (app, "ingress" or "egress"): app_bytes adds the live ones.
        self._ended_bytes: Counter[tuple[str, str]] = Counter()
        # When each periodic job is due next; set by `start`.
        self._due: dict[Callable[[float], None], float] = {}
        # The rest of the cluster, when the box is part of one (appliance.cluster sets it).
        self.remote: Remote | None = None

    def start(self, now: float) -> None:
        """Arm the periodic jobs: reports, transport feedback, layer choice, the idle sweep."""
        self._due = {job: now + interval for job, interval in self._periodic()}

    def _periodic(self) -> list[tuple[Callable[[float], None], float]]:
        return [(self.send_reports, REPORT_INTERVAL), (self.send_transport_feedback, FEEDBACK_INTERVAL),
                (self.adapt, ADAPT_INTERVAL), (self.sweep, SWEEP_INTERVAL)]

    def get_timer(self) -> float | None:
        return min(self._due.values(), default=None)

    def handle_timer(self, now: float) -> None:
        """Run the jobs that are due, each then due again one interval later (not sooner than now)."""
        for job, interval in self._periodic():
            due = self._due.get(job)
            if due is not None and due <= now:
                self._due[job] = max(due + interval, now)
                try:
                    job(now)
                except Exception:  # one failed round must not end the job for the box's lifetime
                    log.exception("periodic job failed", job=job.__name__)

    # --- sessions -------------------------------------------------------------------------------

    def new_session(self, app: str, now: float, thirdparty: bool = False, moved: Moved | None = None,
                    label: str = "") -> CallSession:
        """A new session; or (`moved`) one another box made, rebuilt here: the caller replays its journal."""
        if moved is None:
            session = CallSession(secrets.token_hex(16), app, now, self, thirdparty=thirdparty, label=label,
                                  certificate=self.port.context.fingerprint.value)
        else:
            session = CallSession(moved.id, app, now, self, ufrag=moved.ufrag, pwd=moved.pwd, seed=moved.seed,
                                  certificate=moved.certificate, label=moved.label, generation=moved.generation + 1)
        self.sessions[session.id] = session
        self.live[app] += 1
        if self.remote is not None:
            self.remote.opened(session)
        return session

    def session(self, app: str, session_id: str) -> CallSession:
        session = self.sessions.get(session_id)
        # Another app's session is reported exactly like a missing one.
        if session is None or session.app != app or session.closed:
            raise SfuError(410, "session_error", f"session {session_id!r} does not exist, has expired or was closed")
        return session

    def close_session(self, session: CallSession, quietly: bool = False) -> None:
        """End the session; `quietly` when it goes on on another box (no DTLS close_notify)."""
        session.closed = True
        if quietly and session.port_session is not None:
            self.port.remove_session(session.port_session, quietly)  # first: no goodbye reaches the client
        for transceiver in session.transceivers:
            self._stop(session, transceiver)
        self.channels.close_session(session)
        if session.port_session is not None and not quietly:
            self.port.remove_session(session.port_session)
        if self.sessions.pop(session.id, None) is not None:
            self.live[session.app] -= 1
            if self.remote is not None:
                self.remote.closed(session)

    def session_event(self, session: CallSession, event: Event, now: float) -> None:
        if isinstance(event, Connected):
            session.connected_at = now
            session.checkpoint_due = now
            resumed = session.port_session is not None and session.port_session.resumed is not None
            log.info("session carried on from another box" if resumed else "session connected", session=session.id,
                     after=round(now - session.created, 3))
            for transceiver in session.transceivers:
                if transceiver.leg is not None and not transceiver.closed:
                    self.repair.keyframe_for(transceiver.leg, now)
            if resumed:
                # The SCTP association rode the DTLS association that stayed on the other box.
                session.datachannels_lost = True
            else:
                self.channels.sync(session)
        elif isinstance(event, PathSelected):
            self.session_changed(session)  # the record carries the client's address (cluster failover)
        elif isinstance(event, (Failed, Closed, ConsentExpired, ChecksFailed)):
            log.info("session ended", session=session.id, reason=type(event).__name__)
            self.close_session(session)

    def session_data(self, session: CallSession, data: bytes) -> None:
        self.channels.receive(session, data)

    def session_changed(self, session: CallSession) -> None:
        session.checkpoint_due = 0.0
        if self.remote is not None and not session.closed:
            self.remote.changed(session)

    # --- pushing: the client offers ---------------------------------------------------------------

    @journaled("push")
    def push(self, session: CallSession, offer_text: Any, items: list[dict], auto_discover: bool, now: float):
        """Apply a client offer carrying local tracks; (answer, per-item results)."""
        self._check_not_negotiating(session)
        offer = self._parse(offer_text, "offer")
        _check_room(session, offer)
        wanted = {item.get("mid"): item for item in items if isinstance(item, dict)}
        results: list[dict] = []
        for section in offer.sections:
            transceiver = session.transceiver(section.mid)
            if transceiver is not None:
                if section.rejected and not transceiver.closed:
                    self._stop(session, transceiver)
                continue
            item = wanted.pop(section.mid, None)
            sending = section.direction in ("sendonly", "sendrecv") and not section.rejected
            if section.kind in ("audio", "video") and sending and (item is not None or auto_discover):
                name = (item or {}).get("trackName") or f"{session.rng.getrandbits(128):032x}"
                results.append(self._publish(session, section, name))
                continue
            if item is not None:  # asked for, but its m-section cannot carry it: said, never dropped
                results.append(_item_error(item, "invalid_params", f"the offer's m-section with mid {section.mid} "
                                           f"does not send media (rejected, inactive or recvonly)"))
            session.add(self._answer_unused(session, section))
        for mid, item in wanted.items():
            results.append(_item_error(item, "invalid_params", f"the offer has no sending m-section with mid {mid!r}"))
        self._set_remote(session, offer, now)
        return self._describe(session, "answer", offer), results

    def _publish(self, session: CallSession, section: sdp.RemoteSection, name: str) -> dict:
        codecs = accept(section.kind, section.codecs, self.retransmissions)
        rtx_codecs = accept_rtx(section.codecs, codecs) if self.retransmissions else []
        taken = accept_extensions(section.extensions)
        # RID simulcast needs the rid extension: without it the layers' SSRCs cannot be told apart.
        rids = section.rids if extensions.RID in taken else []
        local = sdp.LocalSection(section.mid, section.kind, "recvonly", codecs + rtx_codecs, taken, rids=rids)
        session.extension_ids.reserve(local.extensions)
        if not codecs or name in session.tracks:
            local.rejected = True
            session.add(Transceiver(local, "idle"))
            if name in session.tracks:
                return {"trackName": name, "mid": "", "errorCode": "repeated_local_track_error",
                        "errorDescription": f"this session already publishes a track named {name!r}"}
            return {"trackName": name, "mid": "", "errorCode": "invalid_session_description",
                    "errorDescription": f"no codec the SFU forwards is offered for mid {section.mid}"}
        session.payload_types.reserve(codecs + rtx_codecs)
        track = self._register(session, self._track(session, name, section, codecs, rtx_codecs, local.extensions))
        session.add(Transceiver(local, "push", track=track))
        # autoDiscover clients read the kind of each track the SFU named (CALLS_API.md 1.3).
        return {"trackName": name, "mid": section.mid, "kind": section.kind}

    def _track(self, session: CallSession, name: str, section: sdp.RemoteSection, codecs: list,
               rtx_codecs: list, negotiated: dict[str, int]) -> PublishedTrack:
        ids = {uri: negotiated[uri] for uri in (extensions.MID, extensions.RID, extensions.REPAIRED_RID)
               if uri in negotiated}
        session.stream_ids.update(ids)  # BUNDLE: one id space for the whole session
        if extensions.TRANSPORT_CC in negotiated and session.transport_in is None:
            session.transport_in = TransportReceiver(negotiated[extensions.TRANSPORT_CC])
        rids = section.rids if extensions.RID in negotiated else []
        return PublishedTrack(session, session, self, name, section.mid, section.kind, codecs, section.ssrcs,
                              extensions=dict(negotiated), rids=rids, rtx=rtx_pairs(rtx_codecs),
                              rtx_ssrcs=section.rtx_ssrcs if rtx_codecs else {}, retransmissions=self.retransmissions)

    def _register(self, session: CallSession, track: PublishedTrack) -> PublishedTrack:
        """Make `track` findable by name (pulls) and its streams by SSRC (the hot path)."""
        session.tracks[track.name] = track
        for stream in track.streams:
            if stream.ssrc is not None:
                session.by_ssrc[stream.ssrc] = stream
            if stream.rtx_ssrc is not None:
                session.rtx_by_ssrc[stream.rtx_ssrc] = stream
        if self.remote is not None:
            self.remote.published(track)
        return track

    @journaled("offer_push")
    def offer_push(self, session: CallSession, items: list[dict], now: float):
        """Local tracks without a client offer: the SFU offers to receive them (`kind` is required);
        (offer, per-item results). The tracks are published when the answer comes to `renegotiate`."""
        self._check_not_negotiating(session)
        results = []
        taken = {t.pending_name for t in session.transceivers if t.pending} | set(session.tracks)
        for item in items:
            name, kind = item.get("trackName"), item.get("kind")
            if kind not in ("audio", "video"):
                results.append(_item_error(item, "invalid_params", "kind: \"audio\" or \"video\" is required "
                                                                   "when the SFU generates the offer"))
                continue
            if not isinstance(name, str) or not name or name in taken:
                results.append(_item_error(item, "repeated_local_track_error",
                                           f"trackName: expected a name this session does not publish yet, found {name!r}"))
                continue
            full = _no_room_for_one(session)
            if full:
                results.append(_item_error(item, "invalid_params", full))
                continue
            wanted = feedback(self.retransmissions)
            try:
                codecs = [session.payload_types.assign(c.with_feedback(wanted)) for c in OFFERED[kind]]
                if self.retransmissions and kind == "video":
                    codecs += [session.payload_types.assign(rtx_for(codec)) for codec in codecs]
            except ItemError as e:
                results.append(_item_error(item, e.code, e.description))
                continue
            taken.add(name)
            mid = session.next_mid()
            # A bidirectional stream also carries what a pull with mid "#<trackName>" sends back.
            direction = "sendrecv" if item.get("bidirectionalMediaStream") else "recvonly"
            offered = {uri: session.extension_ids.assign(uri) for uri in (*extensions.FORWARDED[kind],
                                                                           extensions.TRANSPORT_CC)}
            local = sdp.LocalSection(mid, kind, direction, codecs, {u: i for u, i in offered.items() if i is not None})
            session.add(Transceiver(local, "push", pending=True, pending_name=name), recycle=True)
            results.append({"trackName": name, "mid": mid})
        if not any(t.pending for t in session.transceivers):
            return None, results
        return self._offer(session), results

    @journaled("pull_with_offer")
    def pull_with_offer(self, session: CallSession, offer_text: Any, items: list[dict], now: float):
        """Remote tracks into the receiving m-sections of a client offer (as a WHEP player sends);
        (answer, per-item results). Each track takes the next new section of its kind, and the
        client's own payload type numbers."""
        self._check_not_negotiating(session)
        offer = self._parse(offer_text, "offer")
        _check_room(session, offer)
        free: dict[str, deque[sdp.RemoteSection]] = {}  # the new receiving sections, by kind, in order
        for s in offer.sections:
            if session.transceiver(s.mid) is None and not s.rejected and s.direction in ("recvonly", "sendrecv"):
                free.setdefault(s.kind, deque()).append(s)
        results = []
        for item in items:
            try:
                track = self._find_track(session, item if isinstance(item, dict) else {}, now)
                sections = free.get(track.kind)
                if not sections:
                    raise ItemError("invalid_session_description", f"the offer has no free receiving {track.kind} section")
                section = sections[0]
                pt_map, taken = match(track.codecs, section.codecs)
                if not pt_map:
                    raise ItemError("invalid_session_description", "the offer takes none of the track's codecs")
            except ItemError as e:
                results.append(_item_error(item, e.code, e.description))
                continue
            sections.popleft()
            codecs = [self._subscriber_codec(theirs, True) for theirs in taken]
            rtx_codecs = accept_rtx(section.codecs, codecs) if self.retransmissions and track.kind == "video" else []
            leg = self._leg(session, track, section.mid, codecs + rtx_codecs, pt_map, section.extensions,
                            _repairing(rtx_codecs))
            leg.preferences = preferences(item.get("simulcast"))
            self.switcher.attach(leg, now)
            results.append({"sessionId": track.session.id, "trackName": track.name, "mid": section.mid})
        for section in offer.sections:
            if session.transceiver(section.mid) is None:
                session.add(self._answer_unused(session, section))
        self._set_remote(session, offer, now)
        return self._describe(session, "answer", offer), results

    def _subscriber_codec(self, codec: Codec, offered: bool) -> Codec:
        """A codec line as the SFU sends it: the feedback it answers for that kind (of what the
        client offered, when it answers an offer)."""
        wanted = subscriber_feedback(codec)
        if offered:
            return codec.with_feedback(wanted)
        return Codec(codec.pt, codec.name, codec.clock, codec.channels, codec.fmtp, sorted(wanted))

    def _leg(self, session: CallSession, track: PublishedTrack, mid: str, codecs: list[Codec], pt_map: dict[int, int],
             offered_extensions: dict[str, int] | None = None, rtx_pts: dict[int, int] | None = None,
             pending: bool = False) -> Leg:
        """A pulled transceiver and its leg. The forwarded extensions get the session's ids, or the
        ids of the client's offer when the SFU answers one."""
        ssrc = self._new_ssrc(session)
        msid = _msid(session, track, mid)
        uris = [uri for uri in extensions.FORWARDED[track.kind] if uri in track.extensions]
        uris.append(extensions.TRANSPORT_CC)
        if offered_extensions is None:
            assigned = {uri: session.extension_ids.assign(uri) for uri in uris}
        else:
            assigned = {uri: offered_extensions[uri] for uri in uris if uri in offered_extensions}
        ids = {uri: ext_id for uri, ext_id in assigned.items() if ext_id is not None}
        local = sdp.LocalSection(mid, track.kind, "sendonly", codecs, ids, ssrc, session.cname, msid)
        leg = Leg(self.port.send_rtp, ssrc, pt_map, mid, session)
        leg.source = track
        if rtx_pts:
            leg.rtx_ssrc = local.rtx_ssrc = self._new_ssrc(session)
            leg.rtx_pts = rtx_pts
        self._map_extensions(leg, track, ids)
        session.legs[ssrc] = leg
        # Without the client's offer, the SFU offers it: it may take a free m-line.
        session.add(Transceiver(local, "pull", source=track, leg=leg, pending=pending),
                    recycle=offered_extensions is None)
        return leg

    @staticmethod
    def _map_extensions(leg: Leg, track: PublishedTrack, subscribed: dict[str, int]) -> None:
        forwarded = {uri: i for uri, i in subscribed.items() if uri in extensions.FORWARDED[track.kind]}
        leg.set_extensions(extensions.id_map(track.extensions, forwarded))
        track.reads_extensions = track.reads_extensions or bool(leg.ext_map)

    # --- pulling: the SFU offers --------------------------------------------------------------------

    @journaled("pull")
    def pull(self, session: CallSession, items: list[dict], now: float):
        """Add remote tracks; (offer, per-item results). The offer waits for `renegotiate`."""
        self._check_not_negotiating(session)
        results = []
        for item in items:
            try:
                results.append(self._subscribe(session, item, now))
            except ItemError as e:
                results.append(_item_error(item, e.code, e.description))
        if not any(t.pending for t in session.transceivers):
            return None, results
        return self._offer(session), results

    def _subscribe(self, session: CallSession, item: dict, now: float) -> dict:
        if not isinstance(item, dict) or item.get("location") != "remote":
            raise ItemError("invalid_params", "expected location \"remote\" with sessionId and trackName")
        track = self._find_track(session, item, now)
        mid = item.get("mid")
        if isinstance(mid, str) and mid.startswith("#"):
            return self._subscribe_back(session, track, mid[1:])
        full = _no_room_for_one(session)
        if full:
            raise ItemError("invalid_params", full)
        prefs = preferences(item.get("simulcast"))
        codecs = [self._subscriber_codec(session.payload_types.assign(codec), False) for codec in track.codecs]
        pt_map = {original.pt: mine.pt for original, mine in zip(track.codecs, codecs)}
        rtx_codecs = []
        if self.retransmissions and track.kind == "video":
            rtx_codecs = [session.payload_types.assign(rtx_for(codec)) for codec in codecs]
        mid = session.next_mid()
        leg = self._leg(session, track, mid, codecs + rtx_codecs, pt_map, None, _repairing(rtx_codecs), pending=True)
        leg.preferences = prefs
        result = {"sessionId": track.session.id, "trackName": track.name, "mid": mid}
        if "simulcast" in item:
            result["simulcast"] = item["simulcast"]
        return result

    def _subscribe_back(self, session: CallSession, track: PublishedTrack, name: str) -> dict:
        """A pull with mid "#<trackName>": the track goes out on the m-section of this session's own
        bidirectional local track (bidirectionalMediaStream), as a third-party relay needs."""
        transceiver = next((t for t in session.transceivers if t.role == "push" and not t.closed
                            and name in (t.pending_name, t.track.name if t.track else None)), None)
        if transceiver is None or transceiver.section.direction != "sendrecv":
            raise ItemError("invalid_params", f"mid: this session has no bidirectional local track named {name!r}")
        if transceiver.leg is not None:
            raise ItemError("invalid_params", f"mid: the m-section of {name!r} already carries a remote track")
        if track.kind != transceiver.section.kind:
            raise ItemError("invalid_params", f"a {track.kind} track cannot go out on a {transceiver.section.kind} m-section")
        pt_map = match(track.codecs, transceiver.section.codecs)[0]
        if not pt_map:
            raise ItemError("invalid_session_description", "the m-section negotiated none of the track's codecs")
        section = transceiver.section
        section.ssrc, section.cname, section.msid = self._new_ssrc(session), session.cname, _msid(session, track, section.mid)
        leg = Leg(self.port.send_rtp, section.ssrc, pt_map, section.mid, session)
        leg.source = track
        rtx_pts = _repairing(section.codecs)
        if rtx_pts:
            leg.rtx_ssrc = section.rtx_ssrc = self._new_ssrc(session)
            leg.rtx_pts = rtx_pts
        self._map_extensions(leg, track, section.extensions)
        session.legs[leg.ssrc] = leg
        transceiver.leg, transceiver.source, transceiver.pending = leg, track, True
        return {"sessionId": track.session.id, "trackName": track.name, "mid": section.mid}

    @journaled("restart_ice")
    def restart_ice(self, session: CallSession, remote_ufrag: str, ufrag: str, pwd: str) -> None:
        """An ICE restart without an offer (WHIP and WHEP PATCH one, RFC 9725 4.3.2): the client's new
        ufrag, and the session's new credentials, which the caller draws (a replay makes the same)."""
        if session.port_session is None or session.remote is None:
            raise SfuError(409, "session_error", "the session has not negotiated ICE yet: nothing to restart")
        self.port.restart_ice(session.port_session, ufrag, pwd, remote_ufrag)
        session.ufrag, session.pwd = ufrag, pwd
        session.remote.ufrag = remote_ufrag

    @journaled("renegotiate")
    def renegotiate(self, session: CallSession, answer_text: Any, now: float) -> None:
        if not session.pending_offer:
            raise SfuError(400, "invalid_session_description", "there is no offer of the SFU waiting for an answer")
        answer = self._parse(answer_text, "answer")
        for transceiver in session.transceivers:
            if not transceiver.pending:
                continue
            transceiver.pending = False
            section = answer.section(transceiver.mid)
            if section is None or section.rejected:
                self._stop(session, transceiver)
                continue
            if transceiver.role == "push" and transceiver.track is None:
                self._publish_answered(session, transceiver, section)
            leg = transceiver.leg
            if leg is not None and transceiver.source is not None and leg not in transceiver.source.legs:
                self.switcher.attach(leg, now)
        session.pending_offer = False
        self._set_remote(session, answer, now)

    @journaled("update")
    def update(self, session: CallSession, items: list[dict], now: float) -> list[dict]:
        """Point pulled transceivers at other tracks (and store simulcast preferences), with no
        renegotiation: the leg keeps its SSRC and continues its sequence numbers."""
        results = []
        for item in items:
            try:
                results.append(self._repoint(session, item, now))
            except ItemError as e:
                results.append(_item_error(item, e.code, e.description))
        return results

    def _repoint(self, session: CallSession, item: Any, now: float) -> dict:
        if not isinstance(item, dict) or item.get("location") != "remote":
            raise ItemError("invalid_params", "expected location \"remote\" with mid, sessionId and trackName")
        transceiver = session.transceiver(item.get("mid") or "")
        if transceiver is None or transceiver.role != "pull" or transceiver.closed or transceiver.pending:
            raise ItemError("update_track_error", f"no negotiated remote track with mid {item.get('mid')!r}")
        prefs = preferences(item.get("simulcast")) if "simulcast" in item else None
        track = self._find_track(session, item, now)
        leg = transceiver.leg
        if leg is None:  # every pull has its leg
            raise ItemError("update_track_error", f"no negotiated remote track with mid {item.get('mid')!r}")
        if track is not transceiver.source:
            if track.kind != transceiver.section.kind:
                raise ItemError("update_track_error", f"a {track.kind} track cannot go to a {transceiver.section.kind} m-section")
            offered = {codec.key: codec.pt for codec in transceiver.section.codecs}
            pt_map = {codec.pt: offered[codec.key] for codec in track.codecs if codec.key in offered}
            if not pt_map:
                raise ItemError("update_track_error", "the new track's codecs were not negotiated on this m-section")
            self.switcher.detach(leg)
            leg.pt_map, leg.source = pt_map, track
            self._map_extensions(leg, track, transceiver.section.extensions)
            transceiver.source = track
            transceiver.section.msid = _msid(session, track, transceiver.mid)
            if prefs is not None:
                leg.preferences = prefs
            self.switcher.attach(leg, now)
        elif prefs is not None:
            leg.preferences = prefs
            self.switcher.choose(leg, now)
        return {"mid": transceiver.mid, "sessionId": track.session.id, "trackName": track.name}

    def _find_track(self, session: CallSession, item: dict, now: float) -> PublishedTrack:
        for key in ("sessionId", "trackName"):
            if not isinstance(item.get(key), str):
                raise ItemError("invalid_params", f"{key}: expected a string, found {type(item.get(key)).__name__}")
        source_session = self.sessions.get(item["sessionId"])
        track = None
        if source_session is not None and source_session.app == session.app and not source_session.closed:
            track = source_session.tracks.get(item["trackName"])
        elif source_session is None and self.remote is not None:
            track = self.remote.find(session.app, item["sessionId"], item["trackName"], now)
        if track is None or track.closed:
            raise ItemError("not_found_track_error", "Track not found on remote peer. Make sure the publisher peer "
                                                     "is connected and sending packets for this track")
        return track

    def _publish_answered(self, session: CallSession, transceiver: Transceiver, section: sdp.RemoteSection) -> None:
        """The client answered an SFU offer to receive a track: publish it with what it will send."""
        offered = {codec.pt for codec in transceiver.section.codecs}
        codecs = [c for c in accept(section.kind, section.codecs, self.retransmissions) if c.pt in offered]
        rtx_codecs = [c for c in accept_rtx(section.codecs, codecs) if c.pt in offered] if self.retransmissions else []
        name = transceiver.pending_name
        if not codecs or section.direction not in ("sendonly", "sendrecv") or name is None or name in session.tracks:
            self._stop(session, transceiver)
            return
        kept = {x.pt for x in codecs + rtx_codecs}
        transceiver.section.codecs = [c for c in transceiver.section.codecs if c.pt in kept]
        accepted = {uri: i for uri, i in section.extensions.items() if transceiver.section.extensions.get(uri) == i}
        transceiver.section.extensions = accepted
        transceiver.track = self._register(session, self._track(session, name, section, codecs, rtx_codecs, accepted))

    # --- data channels: the m=application ------------------------------------------------------------

    @journaled("establish")
    def establish(self, session: CallSession, offer_text: Any, now: float):
        """`datachannels/establish`: the `server-events` channel on the session's m=application, which
        a client offer carries or else the SFU offers (unless the session has one already);
        (answer, offer or None; the channel)."""
        self.channels.check_establish(session)
        self._check_not_negotiating(session)
        if offer_text is not None and all(s.kind != "application" for s in self._parse(offer_text, "offer").sections):
            raise SfuError(400, "invalid_session_description", "the offer has no m=application for the data channels")
        channel = self.channels.establish(session)
        if offer_text is not None:
            return self.push(session, offer_text, [], False, now)[0], channel
        if self.channels.section(session) is not None:
            return None, channel
        full = _no_room_for_one(session)
        if full:
            raise SfuError(400, "invalid_params", full)
        session.add(self.channels.offer_section(session), recycle=True)
        return self._offer(session), channel

    # --- closing ----------------------------------------------------------------------------------

    @journaled("close_tracks")
    def close_tracks(self, session: CallSession, mids: list[str], offer_text: Any, force: bool, now: float):
        """(answer or None, per-item results)."""
        if not force:
            self._check_not_negotiating(session)
        offer = None if force or offer_text is None else self._parse(offer_text, "offer")
        results = []
        for mid in mids:
            transceiver = session.transceiver(mid) if isinstance(mid, str) else None
            if transceiver is None or transceiver.closed or transceiver.role == "idle":
                results.append({"mid": mid, "errorCode": "close_track_error",
                                "errorDescription": "Track doesn't exist or was already closed"})
                continue
            self._stop(session, transceiver)
            results.append({"mid": mid})
        if offer is None:
            return None, results
        self._set_remote(session, offer, now)
        return self._describe(session, "answer", offer), results

    def _stop(self, session: CallSession, transceiver: Transceiver) -> None:
        transceiver.closed = True
        transceiver.pending = False
        transceiver.section.direction = "inactive"
        if transceiver.role == "push" and transceiver.track is not None:
            track = transceiver.track
            track.closed = True
            if session.tracks.get(track.name) is track:  # not twice when a closed session stops it again
                self._ended_bytes[session.app, "ingress"] += sum(stream.octets for stream in track.streams)
            session.tracks.pop(track.name, None)
            if self.remote is not None:
                self.remote.ended(track)
            for stream in track.streams:
                if stream.ssrc is not None and session.by_ssrc.get(stream.ssrc) is stream:
                    del session.by_ssrc[stream.ssrc]
                if stream.rtx_ssrc is not None and session.rtx_by_ssrc.get(stream.rtx_ssrc) is stream:
                    del session.rtx_by_ssrc[stream.rtx_ssrc]
            # Its subscribers' legs end too: a BYE tells each subscriber, GET shows them inactive.
            self.end_legs(track)
        if transceiver.leg is not None:  # a pull, or what a bidirectional push carried back
            leg = transceiver.leg
            self.switcher.detach(leg)
            if session.legs.pop(leg.ssrc, None) is not None:
                self._ended_leg_packets += leg.packets
                self._ended_bytes[session.app, "egress"] += _wire_bytes(leg)

    def end_legs(self, track: PublishedTrack) -> None:
        """A track has ended: a BYE tells each subscriber (a client, or a box at the end of a trunk),
        GET shows its pulls inactive."""
        for leg in list(track.legs):
            if leg.subscriber.port_session is not None:
                leg.subscriber.send_rtcp(rtcp.bye(leg.ssrc))
            self.switcher.detach(leg)

    # --- what the API reads -----------------------------------------------------------------------

    def describe_session(self, session: CallSession) -> dict[str, Any]:
        tracks: list[dict[str, Any]] = []
        for t in session.transceivers:
            if t.role == "push":
                # A push the SFU offered is named before its answer publishes it.
                name = t.track.name if t.track is not None else t.pending_name
                described: dict[str, Any] = {"location": "local", "mid": t.mid, "trackName": name,
                             "status": "inactive" if t.closed or t.track is None else "active"}
                if t.track is not None and t.track.audio_level is not None:
                    # RFC 6464: the last packet's level, in dBov (0 is the loudest, -127 silence).
                    described["audioLevel"] = -t.track.audio_level
                tracks.append(described)
            elif t.role == "pull" and t.source is not None:
                ended = t.closed or t.source.closed
                tracks.append({"location": "remote", "mid": t.mid, "sessionId": t.source.session.id,
                               "trackName": t.source.name, "status": "inactive" if ended else "active"})
        return {"tracks": tracks, "dataChannels": self.channels.describe(session)}

    def legs(self) -> Iterator[Leg]:
        """Every leg the box sends."""
        return (leg for session in self.sessions.values() for leg in session.legs.values())

    def tracks(self) -> Iterator[PublishedTrack]:
        """Every published track of the box."""
        return (track for session in self.sessions.values() for track in session.tracks.values())

    def send_reports(self, now: float) -> None:
        tracks, legs = self.tracks(), self.legs()
        if self.remote is not None:
            tracks, legs = chain(tracks, self.remote.tracks()), chain(legs, self.remote.legs())
        self.reports.send_reports(tracks, legs, now)

    def send_transport_feedback(self, now: float) -> None:
        self.reports.send_transport_feedback(self.sessions.values(), now)

    def adapt(self, now: float) -> None:
        if self.remote is None:
            self.switcher.adapt(self.tracks(), now)
            return
        self.switcher.adapt(chain(self.tracks(), self.remote.tracks()), now)
        self.remote.adapt(now)

    def forwarded_packets(self) -> int:
        return self._ended_leg_packets + sum(leg.packets for leg in self.legs())

    def app_bytes(self) -> Counter[tuple[str, str]]:
        """Media bytes per (app, "ingress" or "egress") since the box started: received on the app's
        published tracks, and forwarded to its subscribers, on the wire. Summed when read from what
        each stream and leg counts anyway, so the hot path does nothing more for it."""
        out = Counter(self._ended_bytes)
        for session in self.sessions.values():
            out[session.app, "ingress"] += sum(stream.octets for track in session.tracks.values()
                                               for stream in track.streams)
            out[session.app, "egress"] += sum(_wire_bytes(leg) for leg in session.legs.values())
        return out

    def sweep(self, now: float) -> None:
        """End sessions that never connected, and tracks with no media, after IDLE_TIMEOUT."""
        for session in list(self.sessions.values()):
            if session.connected_at is None and now - session.created > IDLE_TIMEOUT:
                log.info("session never connected; closed", session=session.id)
                self.close_session(session)
                continue
            self.channels.sweep(session, now)
            for transceiver in session.transceivers:
                track = transceiver.track
                if track is not None and not transceiver.closed and session.connected_at is not None:
                    last = track.last_packet if track.last_packet is not None else session.connected_at
                    if now - last > IDLE_TIMEOUT:
                        log.info("track without media; closed", session=session.id, track=track.name)
                        self._stop(session, transceiver)
        if self.remote is not None:
            self.remote.sweep(now)

    # --- helpers ------------------------------------------------------------------------------------

    @staticmethod
    def _new_ssrc(session: CallSession) -> int:
        """An SSRC for what the SFU sends `session`, none of its other streams' (RFC 3550 8.1)."""
        taken = {leg.rtx_ssrc for leg in session.legs.values()} | {session.rtcp_ssrc}
        while True:
            ssrc = session.rng.getrandbits(32)
            if ssrc and ssrc not in session.legs and ssrc not in taken:
                return ssrc

    @staticmethod
    def _check_not_negotiating(session: CallSession) -> None:
        if session.pending_offer:
            raise SfuError(406, "invalid_session_description",
                           "an offer of the SFU is waiting for its answer (PUT renegotiate) before another change")

    @staticmethod
    def _parse(text: Any, kind: str) -> sdp.RemoteDescription:
        try:
            return sdp.parse(text, kind)
        except sdp.SdpError as e:
            raise SfuError(400, e.code, str(e)) from None

    def _set_remote(self, session: CallSession, remote: sdp.RemoteDescription, now: float) -> None:
        if remote.type == "offer":
            for recycled in session.follow([s.mid for s in remote.sections]):
                if not recycled.closed:
                    self._stop(session, recycled)
        first = session.remote is None
        session.remote = remote
        # We are the DTLS server unless the client insists on being it (a=setup:passive).
        server = remote.setup != "passive"
        port = self.port
        if session.port_session is None:
            session.port_session = port.add_session(session, session.ufrag, session.pwd, remote_ufrag=remote.ufrag,
                                                    remote_fingerprints=remote.fingerprints, server=server,
                                                    controlling=session.thirdparty, certificate=session.certificate)
        elif first:
            port.set_remote(session.port_session, remote.ufrag, remote.fingerprints, server, now)
        if first and session.thirdparty:
            # The third party is (usually) ICE-lite: it never checks, so we do.
            port.connect(session.port_session, session.ufrag, remote.ufrag, remote.pwd, remote.candidates, now)
        self.reports.transport_out(session, remote)
        self.channels.sync(session)

    def _offer(self, session: CallSession) -> dict:
        """An SFU offer of the session's sections; changes wait for its answer (`renegotiate`)."""
        session.pending_offer = True
        if session.port_session is None:
            session.port_session = self.port.add_session(session, session.ufrag, session.pwd,
                                                         controlling=session.thirdparty,
                                                         certificate=session.certificate)
        return self._describe(session, "offer")

    def _fingerprint(self, session: CallSession) -> RTCDtlsFingerprint:
        """The fingerprint of the certificate the session presents (the box's current one when the
        session's is no longer held)."""
        return self.port.contexts.get(session.certificate or "", self.port.context).fingerprint

    def _answer_unused(self, session: CallSession, section: sdp.RemoteSection) -> Transceiver:
        """A new offered m-section that carries no track of the request: an m=application is
        answered for the data channels, anything else rejected."""
        if section.kind == "application":
            return self.channels.answer_section(session, section)
        return Transceiver(sdp.LocalSection(section.mid, section.kind, "inactive", rejected=True), "idle")

    def host_candidates(self) -> list[tuple[str, int, str]]:
        """The media port's candidates as descriptions carry them: (address, port, "udp" | "tcp")."""
        return [(c.ip, c.port, c.protocol) for c in self.candidates()]

    def _describe(self, session: CallSession, kind: str, offer: sdp.RemoteDescription | None = None) -> dict:
        session.sdp_version += 1
        if offer is None:
            setup = "actpass"
        else:
            setup = "active" if offer.setup == "passive" else "passive"
        params = sdp.LocalParameters(
            session.ufrag, session.pwd, self._fingerprint(session), setup, self.host_candidates(),
            session.sdp_id, session.sdp_version, lite=not session.thirdparty,
        )
        if offer is None:
            sections = [t.section for t in session.transceivers]
        else:
            # An answer has the offer's m-sections, in the offer's order; what the offer rejects
            # (a stopped transceiver) stays rejected: Unified Plan never reuses its mid.
            by_mid = {t.mid: t.section for t in session.transceivers}
            sections = [by_mid[s.mid] for s in offer.sections]
            for section, offered in zip(sections, offer.sections):
                section.rejected = section.rejected or offered.rejected
        return sdp.write(kind, params, sections)


def _msid(session: CallSession, track: PublishedTrack, mid: str) -> str:
    """The msid of an m-section that carries `track`: its publisher's session and its name; with the
    mid added when another m-section of the session carries the track already (browsers refuse a
    description in which two m-sections share an msid)."""
    msid = f"{track.session.id} {track.name}"
    taken = any(t.section.msid == msid for t in session.transceivers if t.mid != mid and not t.closed)
    return f"{msid}-{mid}" if taken else msid


def _repairing(rtx_codecs: list[Codec]) -> dict[int, int]:
    """Media payload type -> the RTX payload type that repairs it."""
    return {repaired: pt for pt, repaired in rtx_pairs(rtx_codecs).items()}


def _no_room(session: CallSession, adding: int) -> str | None:
    """Why the session cannot take `adding` more m-sections (every description of it lists them
    all, so it has no more than one may), or None."""
    total = len(session.transceivers) + adding
    if total <= sdp.MAX_SECTIONS:
        return None
    return f"the session would have {total} m-sections; at most {sdp.MAX_SECTIONS} (MAX_SECTIONS) are accepted"


def _no_room_for_one(session: CallSession) -> str | None:
    """Why an SFU offer cannot add one m-section to the session, or None: it takes a free m-line when
    there is one (CallSession.add with recycle), and only otherwise grows the session."""
    return None if session.free_line() is not None else _no_room(session, 1)


def _check_room(session: CallSession, offer: sdp.RemoteDescription) -> None:
    """A client offer's new m-sections must fit in the session (Chrome gives a recycled one a new mid)."""
    full = _no_room(session, sum(1 for s in offer.sections if session.transceiver(s.mid) is None))
    if full:
        raise SfuError(400, "invalid_params", full)


def _item_error(item: Any, code: str, description: str) -> dict:
    base = {k: item[k] for k in ("sessionId", "trackName") if isinstance(item, dict) and isinstance(item.get(k), str)}
    return {**base, "mid": "", "errorCode": code, "errorDescription": description}


def _wire_bytes(leg: Leg) -> int:
    """What a leg's forwarded packets took on the wire: it counts their payloads (as its sender reports
    do); each also carried a 12-byte RTP header, the SRTP tag and UDP/IP's headers. Header extensions,
    retransmissions and probing padding are left out."""
    return leg.octets + leg.packets * (12 + PACKET_OVERHEAD)
