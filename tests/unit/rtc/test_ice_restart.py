"""ICE restarts on the ICE-lite responder (IceLite.restart, RFC 8445 9): checks with the new
credentials are answered and keep or select the path, those with the old ones are not, and a
journal replay's restart to the credentials the session has already works."""
import pytest

from appliance.rtc.ice import ConsentExpired, IceLite, PathSelected
from appliance.stun import Attr, Class, Message, short_term_key
from tests.unit.rtc.test_ice import PWD, REMOTE_UFRAG, UDP, UFRAG, A, B, browser_check, events, responder

NEW_UFRAG, NEW_PWD = "nUfr", "new-password-of-22-chars"
NEW_REMOTE = "nbrw"


def check(ufrag=NEW_UFRAG, remote=NEW_REMOTE, password=NEW_PWD, use_candidate=False):
    return browser_check(use_candidate=use_candidate, username=f"{ufrag}:{remote}", password=password)


def answer(ice, request, addr=A, now=0.0):
    raw = ice.receive(request, UDP, addr, now)
    return None if raw is None else Message.parse(raw)


def test_after_a_restart_the_new_credentials_are_answered_and_keep_the_selected_path():
    ice = responder()
    ice.receive(browser_check(), UDP, A, 0.0)
    assert events(ice) == [PathSelected("session", UDP, A)]
    ice.restart("session", NEW_UFRAG, NEW_PWD, NEW_REMOTE)
    assert ice.selected("session") == (UDP, A)  # media goes on while the new checks run
    reply = answer(ice, check(), A, 20.0)
    assert reply is not None and reply.message_class == Class.SUCCESS and reply.get(Attr.XOR_MAPPED_ADDRESS) == A
    assert reply.check_integrity(short_term_key(NEW_PWD)) and not reply.check_integrity(short_term_key(PWD))
    assert events(ice) == []  # the same path: kept, not selected again
    ice.handle_timer(30.0)  # the check after the restart refreshed its consent
    assert events(ice) == [] and ice.selected("session") == (UDP, A)
    ice.handle_timer(50.0)
    assert events(ice) == [ConsentExpired("session", UDP, A)]


def test_a_check_with_the_new_credentials_from_elsewhere_moves_the_session_when_nominated():
    ice = responder()
    ice.receive(browser_check(), UDP, A, 0.0)
    events(ice)
    ice.restart("session", NEW_UFRAG, NEW_PWD, NEW_REMOTE)
    assert answer(ice, check(), B, 1.0).message_class == Class.SUCCESS
    assert events(ice) == []  # answered, but not nominated: nothing moves
    assert answer(ice, check(use_candidate=True), B, 2.0).message_class == Class.SUCCESS
    assert events(ice) == [PathSelected("session", UDP, B)] and ice.selected("session") == (UDP, B)


def test_a_restart_before_any_path_lets_the_first_new_check_select_one():
    ice = responder()
    ice.restart("session", NEW_UFRAG, NEW_PWD, NEW_REMOTE)
    assert answer(ice, check(), A).message_class == Class.SUCCESS
    assert events(ice) == [PathSelected("session", UDP, A)]


def test_the_old_ufrag_gets_no_answer_after_a_restart():
    ice = responder()
    told = []
    ice.on_unknown = lambda *args: told.append(args)
    ice.restart("session", NEW_UFRAG, NEW_PWD, NEW_REMOTE)
    stale = browser_check()  # old ufrag, old remote ufrag, old pwd
    assert ice.receive(stale, UDP, A, 1.0) is None
    assert ice.receive(check(ufrag=UFRAG), UDP, A, 1.0) is None  # the old ufrag with everything else new
    assert ice.counters.unknown_ufrag == 2 and events(ice) == []
    assert told[0] == (UFRAG, UDP, stale, A, 1.0)  # for the cluster, like any ufrag no session has here


def test_the_new_ufrag_with_the_old_remote_ufrag_is_refused():
    ice = responder()
    ice.restart("session", NEW_UFRAG, NEW_PWD, NEW_REMOTE)
    assert ice.receive(check(remote=REMOTE_UFRAG), UDP, A, 0.0) is None
    assert ice.counters.wrong_remote_ufrag == 1 and events(ice) == []


def test_the_new_ufrag_with_the_old_pwd_is_a_401():
    ice = responder()
    ice.restart("session", NEW_UFRAG, NEW_PWD, NEW_REMOTE)
    reply = answer(ice, check(password=PWD))
    assert reply.get(Attr.ERROR_CODE)[0] == 401 and ice.counters.bad_integrity == 1 and events(ice) == []


def test_a_restart_to_the_ufrag_it_has_works_as_a_replay_does():
    ice = responder()
    ice.receive(browser_check(), UDP, A, 0.0)
    events(ice)
    ice.restart("session", UFRAG, NEW_PWD, NEW_REMOTE)  # the same local ufrag, new pwd and remote
    assert answer(ice, check(ufrag=UFRAG), A, 1.0).message_class == Class.SUCCESS
    assert answer(ice, check(ufrag=UFRAG, remote=REMOTE_UFRAG), A, 1.0) is None  # the old remote ufrag
    ice.restart("session", UFRAG, NEW_PWD, NEW_REMOTE)  # again, unchanged: a second replay of the same entry
    reply = answer(ice, check(ufrag=UFRAG), A, 2.0)
    assert reply.message_class == Class.SUCCESS and reply.check_integrity(short_term_key(NEW_PWD))
    assert events(ice) == [] and ice.selected("session") == (UDP, A)


def test_a_restart_onto_another_sessions_ufrag_is_refused_and_changes_nothing():
    ice = responder()
    ice.add("other", "othr", "other-password-22-chars", "obrw")
    with pytest.raises(ValueError, match="othr"):
        ice.restart("session", "othr", NEW_PWD, NEW_REMOTE)
    assert answer(ice, browser_check(), A).message_class == Class.SUCCESS
    other = answer(ice, check(ufrag="othr", remote="obrw", password="other-password-22-chars"), B)
    assert other.message_class == Class.SUCCESS
    assert events(ice) == [PathSelected("session", UDP, A), PathSelected("other", UDP, B)]


def test_after_a_restart_the_old_ufrag_is_free_and_removing_the_session_frees_the_new_one():
    ice = responder()
    ice.restart("session", NEW_UFRAG, NEW_PWD, NEW_REMOTE)
    ice.add("next", UFRAG, PWD, REMOTE_UFRAG)  # the old ufrag is no one's now
    assert answer(ice, browser_check(), A).message_class == Class.SUCCESS
    assert events(ice) == [PathSelected("next", UDP, A)]
    ice.remove("session")
    assert ice.receive(check(), UDP, B, 1.0) is None
    ice.add("later", NEW_UFRAG, NEW_PWD, NEW_REMOTE)
    assert answer(ice, check(), B, 2.0).message_class == Class.SUCCESS


def test_restarting_an_unknown_owner_raises_key_error():
    with pytest.raises(KeyError):
        IceLite().restart("nobody", NEW_UFRAG, NEW_PWD, NEW_REMOTE)
