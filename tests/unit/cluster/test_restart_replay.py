"""An ICE restart travels with the session (Sfu.restart_ice is journaled): a box that takes the
session over (Moved.of, the cluster's JSON, journal.replay, as handover.py does) has the new
credentials and the client's new ufrag, and its media port answers the new checks and not the old.

The SFU lab's recording port does no ICE, so these boxes are Sfus over real MediaPorts."""
from __future__ import annotations

import json

import pytest

from appliance.rtc.ice import new_credentials
from appliance.rtc.port import Listener, MediaPort
from appliance.sfu import journal
from appliance.sfu.errors import SfuError
from appliance.sfu.journal import Moved
from appliance.sfu.sfu import Sfu
from appliance.stun import Attr, Class, Message, Method, short_term_key

from ..rtc.harness import Sink
from ..sfu.harness import CONTEXT, Endpoint, Lab, audio, video

CLIENT = ("198.51.100.7", 50000)
NEW_REMOTE = "rst1"  # the client's ufrag after its restart


class PortLab(Lab):
    """The SFU lab over a real media port (each box of a cluster presents the same certificate)."""

    def __init__(self, now: float = 0.0) -> None:
        super().__init__(now=now)
        self.port = MediaPort(CONTEXT)
        self.sfu = Sfu(self.port, self.candidates, self.associate, True)
        self.sfu.start(now)
        self.listener = Listener(Sink())


def check(lab: PortLab, username: str, password: str, now: float = 0.0) -> Message | None:
    """A client's connectivity check (as Chrome sends one) into the lab's port; the port's answer."""
    request = Message(Method.BINDING, Class.REQUEST, attributes=[
        (Attr.USERNAME, username), (Attr.ICE_CONTROLLING, 0x1122334455667788), (Attr.PRIORITY, 0x6E7F1EFF),
        (Attr.USE_CANDIDATE, True)]).encode(short_term_key(password), fingerprint=True)
    lab.port.datagram_received(lab.listener, request, CLIENT, now)
    sent = lab.listener.sink.take()
    assert len(sent) <= 1 and all(addr == CLIENT for _, addr in sent)
    return Message.parse(sent[0][0]) if sent else None


def answered(lab: PortLab, username: str, password: str) -> bool:
    reply = check(lab, username, password)
    return reply is not None and reply.message_class == Class.SUCCESS and reply.check_integrity(
        short_term_key(password))


def restarted_publisher() -> tuple[PortLab, Endpoint, str, str, str, str]:
    """A box with a publisher whose ICE restarted: (lab, endpoint, old ufrag, old pwd, new ufrag, new pwd)."""
    lab = PortLab()
    pub = lab.endpoint("pub")
    pub.push(video("cam"), audio("mic"))
    old_ufrag, old_pwd = pub.session.ufrag, pub.session.pwd
    assert answered(lab, f"{old_ufrag}:{pub.ufrag}", old_pwd)  # the client's first checks, before the restart
    ufrag, pwd = new_credentials()
    lab.sfu.restart_ice(pub.session, NEW_REMOTE, ufrag, pwd)
    return lab, pub, old_ufrag, old_pwd, ufrag, pwd


def take_over(moved: Moved) -> PortLab:
    """A fresh box rebuilding the session as handover.py does, from what crossed the cluster as JSON."""
    box = PortLab(now=10.0)
    moved = Moved.decode(json.loads(json.dumps(moved.encode())))
    session = box.sfu.new_session(moved.app, box.now, moved=moved)
    journal.replay(box.sfu, session, moved.journal, box.now)
    return box


def test_a_restart_is_journaled_and_answered_where_it_happened():
    lab, pub, old_ufrag, old_pwd, ufrag, pwd = restarted_publisher()
    assert pub.session.journal[-1] == ["restart_ice", [NEW_REMOTE, ufrag, pwd], False]
    assert (pub.session.ufrag, pub.session.pwd, pub.session.remote.ufrag) == (ufrag, pwd, NEW_REMOTE)
    assert answered(lab, f"{ufrag}:{NEW_REMOTE}", pwd)
    assert check(lab, f"{old_ufrag}:{pub.ufrag}", old_pwd) is None


def test_a_session_taken_over_after_a_restart_has_the_new_credentials_and_its_port_answers_them():
    lab, pub, old_ufrag, old_pwd, ufrag, pwd = restarted_publisher()
    moved = Moved.of(pub.session)
    assert (moved.ufrag, moved.pwd) == (ufrag, pwd)
    box = take_over(moved)
    taken = box.sfu.sessions[pub.id]
    assert (taken.ufrag, taken.pwd) == (ufrag, pwd)
    assert taken.remote is not None and taken.remote.ufrag == NEW_REMOTE
    assert [t.mid for t in taken.transceivers] == [t.mid for t in pub.session.transceivers]
    assert answered(box, f"{ufrag}:{NEW_REMOTE}", pwd)
    assert box.port.ice.selected(taken.port_session) == (box.listener, CLIENT)
    assert check(box, f"{old_ufrag}:{pub.ufrag}", old_pwd) is None  # the old session's checks: unknown here
    assert check(box, f"{ufrag}:{pub.ufrag}", pwd) is None  # the new ufrag with the client's old one
    assert taken.journal == pub.session.journal  # it moves on with the restart in it


def test_a_session_restarted_twice_comes_back_with_the_last_credentials():
    lab, pub, _, _, first_ufrag, first_pwd = restarted_publisher()
    last_ufrag, last_pwd = new_credentials()
    lab.sfu.restart_ice(pub.session, "rst2", last_ufrag, last_pwd)
    box = take_over(Moved.of(pub.session))
    taken = box.sfu.sessions[pub.id]
    assert (taken.ufrag, taken.pwd, taken.remote.ufrag) == (last_ufrag, last_pwd, "rst2")
    assert answered(box, f"{last_ufrag}:rst2", last_pwd)
    assert check(box, f"{first_ufrag}:{NEW_REMOTE}", first_pwd) is None


def test_a_restart_before_ice_was_negotiated_is_refused_and_not_journaled():
    lab = PortLab()
    fresh = lab.endpoint("fresh")
    ufrag, pwd = new_credentials()
    with pytest.raises(SfuError) as refused:
        lab.sfu.restart_ice(fresh.session, NEW_REMOTE, ufrag, pwd)
    assert refused.value.status == 409
    assert fresh.session.journal == [] and fresh.session.ufrag != ufrag
