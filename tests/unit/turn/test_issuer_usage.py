"""TURN usage per credential issuer (a TURN key's id, or "rest"), which the usage figures and /metrics read:
live allocations and ended ones, kept for good (an identifier's totals go after usage_retention)."""
from appliance.stun import Attr, Method, pack_channel_data
from appliance.turn import Usage
from tests.unit.turn.harness import NOW, PEER, Lab, ok
from tests.unit.turn.test_server import bind_channel, relay_of


def test_usage_by_issuer_counts_live_and_ended_allocations_and_keeps_them():
    lab = Lab(keys={"key-1": "token-1"})
    keyed = lab.client(("198.51.100.20", 1), issuer="key-1")
    ok(keyed.allocate())
    ok(bind_channel(keyed))
    ok(lab.client(("198.51.100.20", 2), identifier="bob").allocate())  # signed with the secret: "rest"
    keyed.send(pack_channel_data(0x4001, b"12345"))
    lab.server.from_peer(relay_of(lab), b"123", PEER, NOW)
    usage = lab.server.usage_by_issuer(NOW + 10)
    assert set(usage) == {"rest", "key-1"}
    key = usage["key-1"]
    assert (key.bytes_from_client, key.bytes_to_client, key.allocations) == (5, 3, 1)
    assert (usage["rest"].allocations, usage["rest"].bytes_from_client) == (1, 0)
    keyed.request(Method.REFRESH, (Attr.LIFETIME, 0), now=NOW + 20)
    ended = Usage(allocations=1, seconds=20.0, bytes_from_client=5, packets_from_client=1, bytes_to_client=3,
                  packets_to_client=1)
    assert lab.server.usage_by_issuer(NOW + 30)["key-1"] == ended
    lab.server.handle_timer(NOW + 20 + 3600)  # past usage_retention
    assert "alice" not in lab.server.usage_by_identifier(NOW + 3620)
    assert lab.server.usage_by_issuer(NOW + 3620)["key-1"].bytes_from_client == 5
