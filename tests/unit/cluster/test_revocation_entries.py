"""The REVOCATIONS bucket's entries, without I/O: what a box writes reads back, and nothing else reads
as a revocation (a value that is not the object, a key or an expiry that is not its username's)."""
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.cluster.revocation_entries import Unreadable, decode, encode, missing
from appliance.cluster.store import key

NOW = 1_700_000_000


@pytest.mark.parametrize("username", ["1700003600:alice", "1700003600.0a1b2c3d:user 7", "1700003600", "1700003600:ü/*>"])
def test_an_entry_reads_back_as_the_revocation_it_was_written_for(username):
    expiry = int(username.partition(":")[0].partition(".")[0])
    entry_key, value = encode(username, expiry)
    assert entry_key == key(username)
    assert decode(entry_key, value) == (username, expiry)


def _value(**fields) -> bytes:
    return json.dumps(fields).encode()


@pytest.mark.parametrize("entry_key, value, reason", [
    ("1700003600", b"{not json", "not JSON"),
    ("1700003600", b"\xff\xfe", "not JSON"),
    ("1700003600", b"[" * 100_000, "not JSON"),
    ("1700003600", b'["1700003600", 1700003600]', "not a JSON object"),
    ("1700003600", _value(username="1700003600"), "whole-number expiry"),
    ("1700003600", _value(username="1700003600", expiry="1700003600"), "whole-number expiry"),
    ("1700003600", _value(username="1700003600", expiry=True), "whole-number expiry"),
    ("1700003600", _value(username="1700003600", expiry=1700003600.0), "whole-number expiry"),
    ("1700003600", _value(username=1700003600, expiry=1700003600), "whole-number expiry"),
    ("1700007200", _value(username="1700003600", expiry=1700003600), "key is not its username's"),
    (key("1700003600:bob"), _value(username="1700003600:alice", expiry=1700003600), "key is not its username's"),
    ("1700003600", _value(username="1700003600", expiry=1800000000), "expiry is not its username's"),
    ("alice", _value(username="alice", expiry=1700003600), "expiry is not its username's"),
])
def test_what_is_no_revocation_is_refused_with_the_reason(entry_key, value, reason):
    with pytest.raises(Unreadable, match=reason):
        decode(entry_key, value)


@given(st.text(), st.binary())
def test_any_entry_reads_as_a_revocation_or_raises_unreadable(entry_key, value):
    try:
        username, expiry = decode(entry_key, value)
    except Unreadable:
        return
    assert encode(username, expiry) == (entry_key, json.dumps({"username": username, "expiry": expiry}).encode())


def test_missing_is_what_the_other_side_holds_in_force_and_this_one_lacks():
    filed = {"1700003600:both": 1700003600, "1700007200:file": 1700007200, "1699990000:gone": 1699990000}
    stored = {"1700003600:both": 1700003600, "1700010800:store": 1700010800, "1700000000:now": NOW}
    assert missing(filed, stored, NOW) == {"1700010800:store": 1700010800}  # for the file: expired ones not
    assert missing(stored, filed, NOW) == {"1700007200:file": 1700007200}  # for the store
    assert missing(filed, filed, NOW) == {}
