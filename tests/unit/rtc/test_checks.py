"""The controlling ICE agent of relay sessions: its checks, their retransmission and matching, consent."""
import pytest

from appliance.rtc.checks import FIRST_RTO, MAX_PAIRS, MAX_RTO, ChecksFailed, IceControlling
from appliance.rtc.dtls import Connected
from appliance.rtc.ice import ConsentExpired, IceLite, PathSelected
from appliance.rtc.port import Listener, MediaPort
from appliance.stun import Attr, Class, Message, Method, short_term_key
from tests.unit.rtc.harness import PEER_CONTEXT, PORT_CONTEXT, Handler, Sink, rtp

UFRAG = "sfuU"
REMOTE_UFRAG, REMOTE_PWD = "lite", "lite-peer-password-22ch"
KEY = short_term_key(REMOTE_PWD)
UDP4, UDP6 = object(), object()
A = ("192.0.2.20", 3478)
B = ("198.51.100.7", 3478)


def agent(pairs=((UDP4, A),), now=0.0, **kwargs):
    checks = IceControlling(**kwargs)
    checks.start("session", UFRAG, REMOTE_UFRAG, REMOTE_PWD, list(pairs), now)
    return checks


def sent(checks):
    return [(local, addr, Message.parse(data)) for local, addr, data in checks.datagrams_to_send()]


def events(checks):
    out = []
    while (event := checks.next_event()) is not None:
        out.append(event)
    return out


def answer(request, key=KEY, error=None):
    response = request.error(error) if error else request.success((Attr.XOR_MAPPED_ADDRESS, ("192.0.2.1", 40000)))
    return response.encode(key, fingerprint=True)


def run(checks, until, step=0.01, start=0.0):
    """Fire the timer as a shell would, up to `until`; every request sent, with its time."""
    out = []
    now = start
    while now <= until:
        timer = checks.get_timer()
        if timer is None or timer > until:
            break
        now = max(now, timer)
        checks.handle_timer(now)
        out += [(now, request) for _, _, request in sent(checks)]
    return out


def test_a_check_is_a_signed_controlling_nomination_for_the_lite_peer():
    checks = agent()
    ((local, addr, request),) = sent(checks)
    assert (local, addr) == (UDP4, A)
    assert request.method == Method.BINDING and request.message_class == Class.REQUEST
    assert request.get(Attr.USERNAME) == f"{REMOTE_UFRAG}:{UFRAG}"
    assert request.check_integrity(KEY) and request.fingerprinted
    assert Attr.USE_CANDIDATE in request and Attr.PRIORITY in request
    assert isinstance(request.get(Attr.ICE_CONTROLLING), int) and Attr.ICE_CONTROLLED not in request


def test_our_own_ice_lite_responder_answers_the_check_and_selects_on_its_side():
    # The lite peer may be another Edgecall box: its responder, keyed with the pwd we were given.
    lite = IceLite()
    lite.add("far", REMOTE_UFRAG, REMOTE_PWD, UFRAG)
    checks = agent()
    ((local, addr, request_bytes),) = checks.datagrams_to_send()
    response = lite.receive(request_bytes, "far-socket", ("203.0.113.1", 5000), 0.0)
    assert lite.next_event() == PathSelected("far", "far-socket", ("203.0.113.1", 5000))
    checks.receive(response, local, addr, 0.02)
    assert events(checks) == [PathSelected("session", UDP4, A)]
    assert checks.selected("session") == (UDP4, A)


def test_checks_are_retransmitted_with_backoff_then_fail_after_the_timeout():
    checks = agent(checks_timeout=10.0)
    (first,) = sent(checks)
    times = run(checks, 12.0)
    assert all(request.transaction_id == first[2].transaction_id for _, request in times)
    gaps = [round(b - a, 6) for (a, _), (b, _) in zip([(0.0, None)] + times, times)]
    assert gaps[:5] == [FIRST_RTO, 2 * FIRST_RTO, 4 * FIRST_RTO, 8 * FIRST_RTO, 16 * FIRST_RTO]
    assert max(gaps) == MAX_RTO and times[-1][0] < 10.0
    assert events(checks) == [ChecksFailed("session")]
    assert checks.get_timer() is None


def test_each_pair_is_checked_and_the_first_success_selects_and_stops_the_others():
    checks = agent([(UDP4, A), (UDP4, B)])
    (_, _, to_a), (_, _, to_b) = sent(checks)
    checks.receive(answer(to_b), UDP4, B, 0.03)
    assert events(checks) == [PathSelected("session", UDP4, B)]
    checks.receive(answer(to_a), UDP4, A, 0.04)  # too late: that check was dropped
    assert events(checks) == [] and checks.counters.unmatched == 1
    assert run(checks, 4.9) == []  # no retransmission of either once selected


def test_pairs_are_capped():
    checks = agent([(UDP4, ("192.0.2.1", port)) for port in range(1000, 1100)])
    assert len(sent(checks)) == MAX_PAIRS


@pytest.mark.parametrize("case", ["bad integrity", "no integrity", "other address", "other socket", "unknown id"])
def test_responses_that_do_not_match_or_verify_are_ignored(case):
    checks = agent()
    ((_, _, request),) = sent(checks)
    data, local, addr = answer(request), UDP4, A
    if case == "bad integrity":
        data = answer(request, key=short_term_key("not-the-remote-password"))
    elif case == "no integrity":
        data = request.success((Attr.XOR_MAPPED_ADDRESS, A)).encode(fingerprint=True)
    elif case == "other address":
        addr = B
    elif case == "other socket":
        local = UDP6
    else:
        data = Message(Method.BINDING, Class.SUCCESS).encode(KEY, fingerprint=True)
    checks.receive(data, local, addr, 0.01)
    assert events(checks) == [] and checks.selected("session") is None
    assert len(run(checks, 0.06)) == 1  # still retransmitted
    checks.receive(answer(request), UDP4, A, 0.07)  # and the real answer still selects
    assert events(checks) == [PathSelected("session", UDP4, A)]


def test_an_error_answer_fails_the_pair_and_with_no_pair_left_the_session():
    checks = agent()
    ((_, _, request),) = sent(checks)
    checks.receive(answer(request, error=400), UDP4, A, 0.01)
    assert checks.counters.errors == 1
    checks.handle_timer(0.01)
    assert sent(checks) == [] and events(checks) == [ChecksFailed("session")]


def test_consent_checks_every_interval_keep_the_path_until_answers_stop():
    checks = agent(consent_interval=5.0, consent_timeout=30.0)
    ((_, _, request),) = sent(checks)
    checks.receive(answer(request), UDP4, A, 0.1)
    events(checks)
    consent = run(checks, 12.0)
    assert [round(t, 6) for t, _ in consent] == [5.1, 10.1]
    for _, check in consent:
        assert Attr.USE_CANDIDATE not in check and check.check_integrity(KEY)
        assert check.get(Attr.USERNAME) == f"{REMOTE_UFRAG}:{UFRAG}"
    assert consent[0][1].transaction_id != consent[1][1].transaction_id
    checks.receive(answer(consent[1][1]), UDP4, A, 10.2)  # consent now runs to 40.2
    later = run(checks, 40.1, start=12.0)
    assert [round(t, 6) for t, _ in later] == [15.1, 20.1, 25.1, 30.1, 35.1, 40.1] and events(checks) == []
    checks.handle_timer(40.2)
    assert events(checks) == [ConsentExpired("session", UDP4, A)]
    assert checks.selected("session") is None and run(checks, 60.0, start=40.2) == []


def test_a_consent_answer_with_bad_integrity_refreshes_nothing():
    checks = agent(consent_interval=5.0, consent_timeout=30.0)
    ((_, _, request),) = sent(checks)
    checks.receive(answer(request), UDP4, A, 0.0)
    events(checks)
    ((_, check),) = run(checks, 5.0)
    checks.receive(answer(check, key=short_term_key("forged-password-of-22c")), UDP4, A, 5.1)
    run(checks, 29.9, start=5.0)
    checks.handle_timer(30.0)
    assert events(checks) == [ConsentExpired("session", UDP4, A)]
    assert checks.counters.bad_integrity == 1


def test_remove_forgets_the_agent_and_its_transactions():
    checks = agent()
    ((_, _, request),) = sent(checks)
    checks.remove("session")
    checks.receive(answer(request), UDP4, A, 0.01)
    checks.handle_timer(20.0)
    assert events(checks) == [] and sent(checks) == [] and checks.counters.unmatched == 1


def test_a_controlling_responder_answers_the_peer_but_selects_nothing():
    ice = IceLite()
    ice.add("session", UFRAG, "our-password-of-22-chars", REMOTE_UFRAG, controlling=True)
    key = short_term_key("our-password-of-22-chars")
    for role, expected in ((Attr.ICE_CONTROLLED, Class.SUCCESS), (Attr.ICE_CONTROLLING, Class.ERROR)):
        request = Message(Method.BINDING, Class.REQUEST, attributes=[
            (Attr.USERNAME, f"{UFRAG}:{REMOTE_UFRAG}"), (role, 1), (Attr.PRIORITY, 1)])
        response = Message.parse(ice.receive(request.encode(key, fingerprint=True), UDP4, A, 0.0))
        assert response.message_class == expected
    assert ice.next_event() is None and ice.selected("session") is None


# --- two media ports in memory: a relay session checking toward a lite session --------------------

RELAY4, RELAY6, LITE = ("192.0.2.1", 40000), ("2001:db8::1", 40000), ("203.0.113.9", 50000)


def relay_pair(lite_server=True):
    """Port `relay` (PORT_CONTEXT) with a controlling session, port `lite` (PEER_CONTEXT) with an
    ordinary one that answered it; DTLS roles as the lite side's answer says."""
    relay, lite = MediaPort(PORT_CONTEXT), MediaPort(PEER_CONTEXT)
    udp4, udp6, far = Listener(Sink()), Listener(Sink()), Listener(Sink())
    relay.add_udp(udp4, RELAY4)
    relay.add_udp(udp6, RELAY6)
    ours, theirs = Handler(relay), Handler(lite)
    ours.session = relay.add_session(ours, UFRAG, "relay-password-of-22ch", controlling=True)
    theirs.session = lite.add_session(theirs, REMOTE_UFRAG, REMOTE_PWD, remote_ufrag=UFRAG,
                                      remote_fingerprints=[PORT_CONTEXT.fingerprint], server=lite_server)
    relay.set_remote(ours.session, REMOTE_UFRAG, [PEER_CONTEXT.fingerprint], not lite_server, 0.0)
    return relay, lite, (udp4, udp6, far), ours, theirs


def shuttle(relay, lite, listeners, now=0.0):
    """Carry datagrams between the two ports until neither sends any more."""
    udp4, udp6, far = listeners
    while True:
        moved = False
        for data, addr in udp4.sink.take():
            assert addr == LITE
            moved = True
            lite.datagram_received(far, data, RELAY4, now)
        for data, addr in far.sink.take():
            assert addr == RELAY4
            moved = True
            relay.datagram_received(udp4, data, LITE, now)
        if not moved:
            return


@pytest.mark.parametrize("lite_server", [True, False])
def test_a_relay_session_checks_a_lite_port_connects_dtls_in_either_role_and_carries_media(lite_server):
    relay, lite, listeners, ours, theirs = relay_pair(lite_server)
    relay.connect(ours.session, UFRAG, REMOTE_UFRAG, REMOTE_PWD, [LITE], 0.0)
    assert listeners[1].sink.sent == []  # no IPv6 socket for an IPv4 candidate
    shuttle(relay, lite, listeners)
    assert ours.events[0] == PathSelected(ours.session, listeners[0], LITE)
    assert theirs.events[0] == PathSelected(theirs.session, listeners[2], RELAY4)
    assert any(isinstance(e, Connected) for e in ours.events) and any(isinstance(e, Connected) for e in theirs.events)
    assert relay.send_rtp(ours.session, rtp(1))
    shuttle(relay, lite, listeners)
    assert lite.send_rtp(theirs.session, rtp(2))
    shuttle(relay, lite, listeners)
    assert theirs.rtp_packets == [rtp(1)] and ours.rtp_packets == [rtp(2)]


def test_consent_checks_keep_both_sides_alive_and_the_relay_notices_when_the_peer_goes():
    relay, lite, listeners, ours, theirs = relay_pair()
    relay.connect(ours.session, UFRAG, REMOTE_UFRAG, REMOTE_PWD, [LITE], 0.0)
    shuttle(relay, lite, listeners)
    for now in range(5, 65, 5):  # a minute of consent: the lite side's 30 s never runs out
        relay.handle_timer(now)
        lite.handle_timer(now)
        shuttle(relay, lite, listeners, now)
    assert not any(isinstance(e, ConsentExpired) for e in ours.events + theirs.events)
    lite.remove_session(theirs.session)  # the third party goes: its port answers no more
    for now in range(65, 100, 5):
        relay.handle_timer(now)
        shuttle(relay, lite, listeners, now)
    assert isinstance(ours.events[-1], ConsentExpired)
    assert relay.send_rtp(ours.session, b"\x80" * 20) is False


def test_a_relay_session_with_no_reachable_candidate_fails():
    relay, lite, listeners, ours, _ = relay_pair()
    relay.connect(ours.session, UFRAG, REMOTE_UFRAG, REMOTE_PWD, [("2001:db8::9", 9)], 0.0)
    assert listeners[0].sink.sent == [] and len(listeners[1].sink.take()) == 1
    while (timer := relay.get_timer()) is not None and not ours.events:
        relay.handle_timer(timer)
    assert ours.events == [ChecksFailed(ours.session)]
