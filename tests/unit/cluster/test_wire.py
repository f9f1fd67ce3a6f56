"""What boxes read off the backbone and out of the store, as bytes: data channel datagrams, the RTCP
of trunks, session and track records. Any input gives a value or the reader's own error, never
another exception."""
import json

from hypothesis import given
from hypothesis import strategies as st

from appliance.cluster.channels import decode, encode
from appliance.cluster.records import SessionRecord, TrackRecord
from appliance.sfu import rtcp

messages = st.one_of(st.text(), st.binary())


@given(st.text(), st.text(), messages, st.booleans())
def test_a_data_datagram_reads_back_as_written(session_id, name, message, reply):
    assert decode(encode(session_id, name, message, reply)) == (session_id, name, message, reply)


@given(st.binary())
def test_any_data_datagram_reads_or_is_refused(payload):
    try:
        session_id, name, message, reply = decode(payload)
    except ValueError:
        return
    assert isinstance(session_id, str) and isinstance(name, str) and isinstance(reply, bool)


@given(st.binary(max_size=200))
def test_any_rtcp_gives_lists_of_ssrcs(packet):
    for found in (rtcp.byes(packet), rtcp.full_intra_requests(packet), rtcp.keyframe_requests(packet)):
        assert all(isinstance(ssrc, int) and 0 <= ssrc < 1 << 32 for ssrc in found)


def test_a_bye_and_a_fir_read_back():
    assert rtcp.byes(rtcp.pli(1, 2) + rtcp.bye(0xDEADBEEF)) == [0xDEADBEEF]
    assert rtcp.full_intra_requests(rtcp.fir(1, 0xCAFE, 300)) == [0xCAFE]


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=4),
                           max_leaves=12)


@given(st.one_of(st.binary(), json_values.map(lambda v: json.dumps(v).encode()),
                 st.fixed_dictionaries({"app": st.text(), "session": st.text(), "name": st.text(),
                                        "kind": st.text(), "owner": st.text(), "codecs": json_values,
                                        "extensions": json_values, "rids": json_values})
                 .map(lambda v: json.dumps(v).encode())))
def test_any_record_in_the_store_reads_or_is_refused(data):
    for record in (TrackRecord, SessionRecord):
        try:
            record.decode(data)
        except (ValueError, TypeError):
            pass
