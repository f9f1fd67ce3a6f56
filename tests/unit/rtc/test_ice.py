"""The ICE-lite responder: checks as browsers and aioice send them, path selection, consent."""
import re

from aioice import stun as aioice_stun
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.rtc.ice import ConsentExpired, IceLite, PathSelected, host_candidates, new_credentials
from appliance.stun import Attr, Class, Message, Method, short_term_key
from tests.unit.stun.test_rfc5769 import PASSWORD, REQUEST

UFRAG, PWD = "sfuU", "sfu-password-of-22-chars"
REMOTE_UFRAG, REMOTE_PWD = "brws", "browser-password-22-chars"
UDP, TCP = object(), object()  # the local transports, opaque to the core
A = ("192.0.2.10", 50000)
B = ("2001:db8::10", 50001)
GOOG_NETWORK_INFO = 0xC057  # comprehension-optional, sent by Chrome


def browser_check(use_candidate=False, username=f"{UFRAG}:{REMOTE_UFRAG}", password=PWD, sha256=False,
                  controlled=False, extra=()):
    """A check as Chrome sends it: PRIORITY, ICE-CONTROLLING (tie-breaker), GOOG-NETWORK-INFO, USE-CANDIDATE."""
    attributes = [(Attr.USERNAME, username), (GOOG_NETWORK_INFO, b"\x00\x01\x03\xe7"), *extra,
                  (Attr.ICE_CONTROLLED if controlled else Attr.ICE_CONTROLLING, 0x1122334455667788),
                  (Attr.PRIORITY, 0x6E7F1EFF)]
    if use_candidate:
        attributes.append((Attr.USE_CANDIDATE, True))
    return Message(Method.BINDING, Class.REQUEST, attributes=attributes).encode(
        short_term_key(password), sha256=sha256, fingerprint=True
    )


def responder(**kwargs):
    ice = IceLite(**kwargs)
    ice.add("session", UFRAG, PWD, REMOTE_UFRAG)
    return ice


def events(ice):
    out = []
    while (event := ice.next_event()) is not None:
        out.append(event)
    return out


def test_a_browser_check_gets_a_signed_answer_with_its_address_and_selects_the_path():
    ice = responder()
    request = browser_check()
    answer = Message.parse(ice.receive(request, UDP, A, 0.0))
    assert answer.message_class == Class.SUCCESS
    assert answer.transaction_id == Message.parse(request).transaction_id
    assert answer.get(Attr.XOR_MAPPED_ADDRESS) == A
    assert answer.check_integrity(short_term_key(PWD)) and answer.fingerprinted
    assert events(ice) == [PathSelected("session", UDP, A)]
    assert ice.selected("session") == (UDP, A)


def test_aioice_reads_our_answer_to_its_own_check():
    ice = responder()
    request = aioice_stun.Message(aioice_stun.Method.BINDING, aioice_stun.Class.REQUEST)
    request.attributes["USERNAME"] = f"{UFRAG}:{REMOTE_UFRAG}"
    request.attributes["PRIORITY"] = 1853824767
    request.attributes["ICE-CONTROLLING"] = 42
    request.attributes["USE-CANDIDATE"] = None
    request.add_message_integrity(PWD.encode())
    answer = aioice_stun.parse_message(ice.receive(bytes(request), UDP, B, 0.0))
    assert answer.check_message_integrity(PWD.encode())
    assert answer.message_class == aioice_stun.Class.RESPONSE
    assert answer.transaction_id == request.transaction_id
    assert answer.attributes["XOR-MAPPED-ADDRESS"] == B
    assert "FINGERPRINT" in answer.attributes


def test_the_rfc5769_request_is_a_role_conflict_for_a_lite_agent():
    # RFC 5769 2.1 carries ICE-CONTROLLED: a lite agent cannot take the controlling role.
    ice = IceLite()
    ice.add("session", "evtj", PASSWORD, "h6vY")
    answer = Message.parse(ice.receive(REQUEST, UDP, A, 0.0))
    assert answer.message_class == Class.ERROR and answer.get(Attr.ERROR_CODE)[0] == 487
    assert answer.check_integrity(short_term_key(PASSWORD))
    assert events(ice) == [] and ice.counters.role_conflicts == 1


def test_use_candidate_from_another_address_moves_the_session_and_a_plain_check_does_not():
    ice = responder()
    ice.receive(browser_check(), UDP, A, 0.0)
    plain = Message.parse(ice.receive(browser_check(), TCP, B, 1.0))
    assert plain.message_class == Class.SUCCESS  # answered, so the remote can validate the pair
    assert events(ice) == [PathSelected("session", UDP, A)]
    ice.receive(browser_check(use_candidate=True), TCP, B, 2.0)
    assert events(ice) == [PathSelected("session", TCP, B)]
    ice.receive(browser_check(use_candidate=True), TCP, B, 3.0)
    assert events(ice) == []  # nominating the selected path again changes nothing


def test_bad_integrity_is_refused_with_an_unsigned_401():
    ice = responder()
    answer = Message.parse(ice.receive(browser_check(password="not-the-password-at-all"), UDP, A, 0.0))
    assert answer.get(Attr.ERROR_CODE)[0] == 401 and not answer.has_integrity
    assert events(ice) == [] and ice.counters.bad_integrity == 1


def test_unknown_ufrag_and_wrong_remote_ufrag_are_dropped_silently():
    ice = responder()
    assert ice.receive(browser_check(username=f"nope:{REMOTE_UFRAG}"), UDP, A, 0.0) is None
    assert ice.receive(browser_check(username=UFRAG), UDP, A, 0.0) is None
    assert ice.receive(browser_check(username=f"{UFRAG}:other"), UDP, A, 0.0) is None
    assert ice.counters.unknown_ufrag == 2 and ice.counters.wrong_remote_ufrag == 1
    assert events(ice) == []


def test_a_check_for_an_unknown_ufrag_is_handed_to_the_cluster_only_when_it_could_be_a_session():
    ice = responder()
    told = []
    ice.on_unknown = lambda *args: told.append(args)
    check = browser_check(username=f"nope:{REMOTE_UFRAG}")
    assert ice.receive(check, UDP, A, 1.0) is None
    assert told == [("nope", UDP, check, A, 1.0)]
    ice.receive(browser_check(username="nope"), UDP, A, 1.0)  # no colon: not a connectivity check
    unsigned = Message(Method.BINDING, Class.REQUEST, attributes=[(Attr.USERNAME, "nope:x")]).encode()
    ice.receive(unsigned, UDP, A, 1.0)  # no integrity: no session's check
    assert len(told) == 1


def test_checks_before_the_remote_ufrag_is_known_are_accepted():
    # The SFU offered; the browser checks while its answer is still on its way to the API.
    ice = IceLite()
    ice.add("session", UFRAG, PWD)
    assert Message.parse(ice.receive(browser_check(username=f"{UFRAG}:any"), UDP, A, 0.0)).message_class == Class.SUCCESS
    ice.set_remote("session", REMOTE_UFRAG)
    assert ice.receive(browser_check(username=f"{UFRAG}:any"), UDP, A, 1.0) is None


def test_username_without_integrity_is_a_400():
    ice = responder()
    request = Message(Method.BINDING, Class.REQUEST, attributes=[(Attr.USERNAME, f"{UFRAG}:{REMOTE_UFRAG}")])
    answer = Message.parse(ice.receive(request.encode(fingerprint=True), UDP, A, 0.0))
    assert answer.get(Attr.ERROR_CODE)[0] == 400
    integrity_alone = Message(Method.BINDING, Class.REQUEST).encode(short_term_key(PWD))
    assert Message.parse(ice.receive(integrity_alone, UDP, A, 0.0)).get(Attr.ERROR_CODE)[0] == 400


def test_unknown_required_attribute_is_a_signed_420():
    ice = responder()
    answer = Message.parse(ice.receive(browser_check(extra=[(0x7F00, b"????")]), UDP, A, 0.0))
    assert answer.get(Attr.ERROR_CODE)[0] == 420 and answer.get(Attr.UNKNOWN_ATTRIBUTES) == (0x7F00,)
    assert answer.check_integrity(short_term_key(PWD)) and events(ice) == []


def test_sha256_integrity_is_answered_in_kind():
    ice = responder()
    answer = Message.parse(ice.receive(browser_check(sha256=True), UDP, A, 0.0))
    assert answer.uses_sha256 and answer.check_integrity(short_term_key(PWD))


def test_the_health_probe_gets_its_address_alone():
    ice = responder()
    probe = Message(Method.BINDING, Class.REQUEST)
    answer = Message.parse(ice.receive(probe.encode(fingerprint=True), UDP, B, 0.0))
    assert answer.message_class == Class.SUCCESS and answer.transaction_id == probe.transaction_id
    assert answer.attributes == [(Attr.XOR_MAPPED_ADDRESS, B), (Attr.FINGERPRINT, answer.get(Attr.FINGERPRINT))]
    assert events(ice) == [] and ice.counters.probes == 1


def test_indications_and_responses_get_no_answer():
    ice = responder()
    indication = Message(Method.BINDING, Class.INDICATION).encode(fingerprint=True)
    response = Message(Method.BINDING, Class.SUCCESS, attributes=[(Attr.XOR_MAPPED_ADDRESS, A)]).encode()
    allocate = Message(Method.ALLOCATE, Class.REQUEST).encode()
    assert [ice.receive(m, UDP, A, 0.0) for m in (indication, response, allocate)] == [None, None, None]


def test_consent_expires_30_s_after_the_last_check_on_the_selected_path():
    ice = responder()
    ice.receive(browser_check(), UDP, A, 100.0)
    events(ice)
    assert ice.get_timer() == 130.0
    ice.receive(browser_check(), UDP, A, 120.0)  # consent refresh
    ice.receive(browser_check(), TCP, B, 125.0)  # a check elsewhere refreshes nothing
    ice.handle_timer(130.0)
    assert events(ice) == [] and ice.get_timer() == 150.0
    ice.handle_timer(149.9)
    assert events(ice) == []
    ice.handle_timer(150.0)
    assert events(ice) == [ConsentExpired("session", UDP, A)]
    assert ice.selected("session") is None and ice.get_timer() is None
    ice.receive(browser_check(), TCP, B, 151.0)  # the next valid check selects again
    assert events(ice) == [PathSelected("session", TCP, B)]


def test_consent_timeout_is_configurable_and_a_removed_session_expires_silently():
    ice = responder(consent_timeout=5.0)
    ice.receive(browser_check(), UDP, A, 0.0)
    events(ice)
    ice.remove("session")
    ice.handle_timer(10.0)
    assert events(ice) == [] and ice.receive(browser_check(), UDP, A, 11.0) is None


def test_a_forgotten_path_is_selected_again_by_the_next_check():
    ice = responder()
    ice.receive(browser_check(), TCP, A, 0.0)
    ice.forget_path("session")
    ice.receive(browser_check(), UDP, B, 1.0)
    assert events(ice) == [PathSelected("session", TCP, A), PathSelected("session", UDP, B)]


def test_two_sessions_are_told_apart_by_ufrag():
    ice = responder()
    ice.add("other", "othr", "other-password-22-chars", REMOTE_UFRAG)
    ice.receive(browser_check(username=f"othr:{REMOTE_UFRAG}", password="other-password-22-chars"), UDP, B, 0.0)
    ice.receive(browser_check(), UDP, A, 0.0)
    assert events(ice) == [PathSelected("other", UDP, B), PathSelected("session", UDP, A)]


def test_new_credentials_are_ice_chars_long_enough():
    ufrag, pwd = new_credentials()
    assert re.fullmatch(r"[A-Za-z0-9+/]{8}", ufrag) and re.fullmatch(r"[A-Za-z0-9+/]{24}", pwd)
    assert new_credentials() != new_credentials()


@settings(max_examples=2000)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(data):
    ice = responder()
    answer = ice.receive(data, UDP, A, 0.0)
    assert answer is None or isinstance(answer, bytes)


@settings(max_examples=2000)
@given(st.data())
def test_mutated_checks_never_raise_and_never_select_without_integrity(data):
    check = bytearray(browser_check(use_candidate=True))
    for _ in range(data.draw(st.integers(1, 4))):
        check[data.draw(st.integers(0, len(check) - 1))] = data.draw(st.integers(0, 255))
    ice = responder()
    ice.receive(bytes(check), UDP, A, 0.0)
    if events(ice):
        # A mutation that still selects must have kept the integrity valid over the bytes that matter.
        assert Message.parse(bytes(check)).check_integrity(short_term_key(PWD))


def test_host_candidates_prefer_udp_then_order():
    candidates = host_candidates([("203.0.113.10", 3479), ("2001:db8::10", 3479)], [("203.0.113.10", 3479)])
    assert [c.protocol for c in candidates] == ["udp", "udp", "tcp"]
    assert candidates[0].priority > candidates[1].priority > candidates[2].priority
    assert candidates[0].priority == (126 << 24) | (0xFFFF << 8) | 255
    assert candidates[2].tcpType == "passive" and candidates[2].priority >> 24 == 126


def test_validated_paths_are_known_for_the_consent_timeout_and_can_be_selected():
    ice = responder()
    ice.receive(browser_check(use_candidate=True), UDP, A, 0.0)
    ice.receive(browser_check(use_candidate=True), UDP, B, 5.0)
    assert events(ice) == [PathSelected("session", UDP, A), PathSelected("session", UDP, B)]
    assert ice.owner_at(UDP, A, 30.0) == "session" and ice.owner_at(UDP, A, 30.1) is None
    assert ice.owner_at(TCP, A, 1.0) is None
    ice.select("session", UDP, A)
    assert events(ice) == [PathSelected("session", UDP, A)]
    ice.handle_timer(30.0)  # consent runs from A's last check, not from the move
    assert events(ice) == [ConsentExpired("session", UDP, A)]
    ice.remove("session")
    assert ice.owner_at(UDP, B, 6.0) is None


def test_a_session_keeps_a_bounded_number_of_validated_paths():
    ice = responder()
    for port in range(20):
        ice.receive(browser_check(), UDP, ("192.0.2.10", 40000 + port), float(port))
    kept = [port for port in range(20) if ice.owner_at(UDP, ("192.0.2.10", 40000 + port), 20.0)]
    assert kept == list(range(12, 20))


def test_moving_to_a_path_checked_earlier_brings_the_expiry_forward():
    ice = responder()
    ice.receive(browser_check(), UDP, A, 0.0)
    ice.receive(browser_check(), UDP, A, 15.0)
    ice.receive(browser_check(use_candidate=True), UDP, B, 20.0)
    ice.handle_timer(30.0)
    ice.select("session", UDP, A)
    events(ice)
    assert ice.get_timer() == 45.0
    ice.handle_timer(45.0)
    assert events(ice) == [ConsentExpired("session", UDP, A)]
    ice.handle_timer(50.0)  # B's old deadline: nothing selected any more
    assert events(ice) == [] and ice.get_timer() is None
