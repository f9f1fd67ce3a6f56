import struct

from hypothesis import given, strategies as st

from appliance.sfu.forward import Leg, payload_offset
from appliance.sfu.rtcp import bye, fir, full_intra_requests, keyframe_requests, pli, sender_report

from .harness import Downstream, Sent, forward, rtp


def test_a_leg_rewrites_ssrc_payload_type_and_drops_extensions_and_csrcs():
    sent = Sent()
    leg = Leg(sent, 0xABCDEF01, {111: 96}, "0", Downstream())
    forward(leg, rtp(100, 5000, marker=True, extension=b"\x10\xff\x00\x00", csrcs=(7, 8)))
    (out,) = sent
    first, second, seq, ts, ssrc = struct.unpack(">BBHII", out[:12])
    assert first == 0x80 and second == 0x80 | 96 and ssrc == 0xABCDEF01
    assert out[12:] == b"payload"
    assert leg.packets == 1 and leg.octets == len(b"payload")


def test_unknown_payload_types_are_not_forwarded():
    sent = Sent()
    forward(Leg(sent, 1, {111: 96}, "0", Downstream()), rtp(1, 1, pt=100))
    assert sent == []


def test_sequence_and_timestamp_stay_continuous_across_a_source_change_and_wrap():
    sent = Sent()
    leg = Leg(sent, 1, {111: 96}, "0", Downstream())
    for i in range(3):
        forward(leg, rtp(65534 + i & 0xFFFF, 4294967000 + 960 * i & 0xFFFFFFFF))
    leg.rebase = True  # another publisher now feeds this leg
    for i in range(2):
        forward(leg, rtp(500 + i, 123 + 960 * i, ssrc=2222))
    seqs = [struct.unpack(">H", p[2:4])[0] for p in sent]
    stamps = [struct.unpack(">I", p[4:8])[0] for p in sent]
    assert [(b - a) & 0xFFFF for a, b in zip(seqs, seqs[1:])] == [1, 1, 1, 1]
    steps = [(b - a) & 0xFFFFFFFF for a, b in zip(stamps, stamps[1:])]
    assert steps[0] == steps[1] == steps[3] == 960 and 0 < steps[2] < 90000


def test_payload_offset_refuses_a_header_longer_than_the_packet():
    assert payload_offset(rtp(1, 1, extension=b"\x10\xff\x00\x00")) == 12 + 4 + 4
    assert payload_offset(rtp(1, 1)[:12] + b"") == 12
    truncated = bytearray(rtp(1, 1, extension=b"\x10\xff\x00\x00", payload=b""))
    truncated[15] = 200  # the extension claims 800 bytes
    assert payload_offset(bytes(truncated)) == -1


def test_keyframe_requests_in_compound_rtcp():
    fir = struct.pack(">BBHII", 0x84, 206, 4, 9, 0) + struct.pack(">IBxxx", 0xCAFE, 1)
    compound = sender_report(5, 1, 2, 3, now=0.0) + pli(9, 0xBEEF) + fir + bye(5)
    assert keyframe_requests(compound) == [0xBEEF, 0xCAFE]


@given(st.binary(max_size=200))
def test_rtcp_and_rtp_readers_take_any_bytes(data):
    keyframe_requests(data)
    if len(data) >= 12:
        offset = payload_offset(data)
        assert offset == -1 or 12 <= offset <= len(data)


def test_forwarded_extensions_take_the_subscribers_ids_and_others_are_dropped():
    from appliance.sfu import extensions

    # Publisher: mid as id 4, audio level as id 1 (one byte: voice activity + level 42).
    ext = b"\x40" + b"0" + b"\x10" + b"\xaa" + b"\x00" * 0  # id 4 len 1 "0", id 1 len 1 0xaa
    ext += b"\x00" * (-len(ext) % 4)
    packet = rtp(7, 960, extension=ext)
    found = extensions.elements(packet)
    assert found == {4: b"0", 1: b"\xaa"}
    sent = Sent()
    leg = Leg(sent, 9, {111: 96}, "0", Downstream())
    leg.set_extensions(extensions.id_map({extensions.AUDIO_LEVEL: 1, "urn:ietf:params:rtp-hdrext:sdes:mid": 4},
                                         {extensions.AUDIO_LEVEL: 3}))
    leg.forward(packet, packet[payload_offset(packet):], 7, 960, extensions.body(found, leg.ext_map))
    (out,) = sent
    assert out[0] & 0x10 and out[12:16] == b"\xbe\xde\x00\x01" and out[16:20] == b"\x30\xaa\x00\x00"
    assert out[20:] == b"payload"
    assert extensions.elements(out) == {3: b"\xaa"}


def test_extension_ids_keep_the_clients_and_run_out_cleanly():
    from appliance.sfu.extensions import AUDIO_LEVEL, VIDEO_ORIENTATION, ExtensionIds

    ids = ExtensionIds()
    ids.reserve({AUDIO_LEVEL: 1, "urn:ietf:params:rtp-hdrext:sdes:mid": 9})
    assert ids.assign(AUDIO_LEVEL) == 1 and ids.assign(VIDEO_ORIENTATION) == 2
    for n in range(20):
        ids.assign(f"urn:x:{n}")
    assert ids.assign("urn:x:last") is None


@given(st.binary(min_size=12, max_size=120))
def test_extension_reader_takes_any_bytes(data):
    from appliance.sfu import extensions

    found = extensions.elements(bytes([0x90]) + data[1:])
    assert found is None or all(1 <= i <= 14 and 1 <= len(v) <= 16 for i, v in found.items())


def test_a_full_intra_request_is_a_keyframe_request_that_says_it_is_one():
    compound = pli(1, 0xBEEF) + fir(1, 0xCAFE, 7)
    assert keyframe_requests(compound) == [0xBEEF, 0xCAFE]
    assert full_intra_requests(compound) == [0xCAFE]
