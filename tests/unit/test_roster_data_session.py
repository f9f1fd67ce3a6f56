"""A room participant's data session (appliance/rooms/roster.py): the session the meeting page's chat
is published under once the JavaScript client moved its data channels off the media session (a box
failed and another carried the media on, issue 19). The roster passes it on so that the other pages
subscribe to the chat there."""
from __future__ import annotations

import pytest

from appliance.rooms.roster import Participant

MEDIA = "a" * 32
DATA = "b" * 32


def participant() -> Participant:
    person = Participant("demo", "standup", "p1", 1.0)
    person.update({"name": "Alice", "sessionId": MEDIA, "tracks": [{"trackName": "cam", "kind": "video"}]})
    return person


def test_a_page_that_names_no_data_session_has_none_and_the_roster_says_so():
    assert participant().public()["dataSessionId"] == ""


def test_a_data_session_is_taken_kept_across_updates_and_through_the_store():
    person = participant()
    person.update({"dataSessionId": DATA})
    person.update({"name": "Alice B."})  # an update that does not name it keeps it
    assert (person.sessionId, person.dataSessionId) == (MEDIA, DATA)
    assert person.public()["dataSessionId"] == DATA
    assert Participant.decode(person.encode()) == person


@pytest.mark.parametrize("bad", [3, "not a session!", "c" * 65])
def test_a_bad_data_session_is_refused_with_its_key_and_nothing_changes(bad):
    person = participant()
    with pytest.raises(ValueError, match="dataSessionId"):
        person.update({"name": "Mallory", "dataSessionId": bad})
    assert (person.name, person.dataSessionId) == ("Alice", "")
