"""The cluster on `appliance status`'s screen: the store, the boxes heard from, the trunks."""
from appliance.status import render

CLUSTER = {
    "store": "NATS nats://192.0.2.129:4222", "store_connected": False, "store_writes_lost": 2,
    "nodes": ["ams-1", "fra-1"],
    "trunks": {"receiving": [{"session": "s1", "track": "cam", "from": "fra-1", "legs": 3}],
               "sending": [{"session": "s2", "track": "mic", "to": ["fra-1", "par-1"]}]},
    "trunk_peers": {"fra-1": {"packets_in": 10, "packets_out": 20, "errors": 1}},
}


def test_status_shows_the_store_nodes_and_trunks():
    box = {"node": "ams-1", "draining": False, "services": {"sfu": "ok"}, "agent": None, "cluster": CLUSTER}
    lines = render(box, None, None).splitlines()
    assert "cluster store: NATS nats://192.0.2.129:4222, NOT CONNECTED, 2 writes lost; nodes: ams-1, fra-1" in lines
    assert "trunk in: s1/cam from fra-1, 3 legs here" in lines
    assert "trunk out: s2/mic to fra-1, par-1" in lines
    assert "trunk peer fra-1: packets in 10, out 20, errors 1" in lines
