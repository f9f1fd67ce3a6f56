"""What boxes read off the backbone and out of the store, as bytes: data channel datagrams, the RTCP
of trunks, session and track records. Any input gives a value or the reader's own error, never
another exception."""
import json

from hypothesis import given
from hypothesis import strategies as st

from appliance.cluster.channels import PARTIAL, PARTIAL_FOR, PIECE, Reassembly, decode, encode, pieces
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


@given(st.binary(max_size=20_000), st.randoms(use_true_random=False))
def test_a_message_in_pieces_in_any_order_is_put_together(payload, order):
    parts = pieces(7, payload)
    order.shuffle(parts)
    reassembly = Reassembly()
    got = [reassembly.piece(part, 0.0) for part in parts]
    assert got[-1] == payload and all(g is None for g in got[:-1])


@given(st.lists(st.binary(max_size=40), max_size=20))
def test_any_pieces_put_together_or_are_refused(datagrams):
    reassembly = Reassembly()
    for datagram in datagrams:
        try:
            reassembly.piece(datagram, 0.0)
        except ValueError:
            pass
    assert len(reassembly.partial) <= PARTIAL


def test_pieces_of_a_message_never_complete_after_their_time():
    reassembly = Reassembly()
    first, second = pieces(1, bytes(3 * PIECE))[:2]
    reassembly.piece(first, 0.0)
    reassembly.piece(second, PARTIAL_FOR + 1.0)  # the first is forgotten: this one starts over
    assert list(reassembly.partial) == [1] and reassembly.partial[1][1][0] is None
