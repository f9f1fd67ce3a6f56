"""The nats-server config each clustered box renders from its appliance.toml (appliance/cluster/
nats_server.py), run by real nats-servers the way the image's unit runs it (`nats-server -c FILE`).

Two boxes whose backbone overlay addresses are loopback ones (127.0.0.2 and 127.0.0.3, each its own
server's address, as the overlay is on the image) form a cluster from their files alone: a key-value
write through one box's server is read through the other's. A client without the token derived from
the cluster secret, or with another secret's, is refused, and a server holding another secret cannot
route into the cluster.
"""
from __future__ import annotations

import asyncio
import json
import secrets
import urllib.request
from collections.abc import Iterator

import pytest

from appliance.cluster.nats_server import client_token, render_nats_conf
from appliance.cluster.nats_store import NatsStore
from appliance.cluster.store import Bucket, StoreUnavailable
from appliance.config import Config, parse_config
from tests.lab.appliance import free_port
from tests.lab.nats import ConfiguredNats, NatsServer, nats_unavailable
from tests.lab.netns import wait_for

SECRET = "a-cluster-secret-of-some-length"
OTHER_SECRET = "another-cluster-secret-entirely"
BOUND = 15.0  # seconds: only a bound on a hang, never a claim about speed
# A refused client retries until this bound (a box never gives up on its cluster): long enough for an
# answer on a loaded machine, short enough to wait out.
REFUSAL_BOUND = 4.0


def box(node: str, me: int, peers: list[int], secret: str, client_port: int) -> Config:
    """A box at overlay address 127.0.0.<me> whose backbone peers are 127.0.0.<peer>, its own NATS
    server first in [cluster] nats."""
    text = f'[node]\nid = "{node}"\n\n[turn]\nrelay_ports = "49152-49999"\n\n'
    text += f'[backbone]\nunderlay = "127.0.0.1"\noverlay = "127.0.0.{me}/24"\n'
    for peer in peers:
        first = 50000 + 1000 * peer
        text += (f'[[backbone.peers]]\nnode = "box-{peer}"\nunderlay = "127.0.0.1"\noverlay = "127.0.0.{peer}"\n'
                 f'relay_ports = "{first}-{first + 999}"\n')
    urls = ", ".join(f'"nats://127.0.0.{n}:{client_port}"' for n in [me, *peers])
    text += f'\n[cluster]\nnats = [{urls}]\nsecret = "{secret}"\n'
    return parse_config(text, f"{node}.toml")


class Pair:
    """Two boxes' servers, started from what each box renders, and one more box's config to try."""

    def __init__(self, tmp_path) -> None:
        self.client_port, route_port = free_port(), free_port()
        self.configs = [
            render_nats_conf(box(f"box-{me}", me, [peer], SECRET, self.client_port), str(tmp_path / f"store-{me}"),
                             route_port)
            for me, peer in ((2, 3), (3, 2))
        ]
        self.intruder = render_nats_conf(box("box-4", 4, [2], OTHER_SECRET, self.client_port),
                                         str(tmp_path / "store-4"), route_port)
        self.servers = ConfiguredNats(self.configs)

    def url(self, me: int) -> str:
        return f"nats://127.0.0.{me}:{self.client_port}"


@pytest.fixture
def pair(tmp_path) -> Iterator[Pair]:
    reason = nats_unavailable()
    if reason:
        pytest.skip(reason)
    started = Pair(tmp_path)
    try:
        yield started
    finally:
        started.servers.close()


def routed_servers(server: NatsServer) -> set[str]:
    """The names of the servers `server` has routes to. Since 2.10 a server opens several routes to
    each peer (a pool, and one for the system account), so connections are not peers."""
    with urllib.request.urlopen(f"http://127.0.0.1:{server.monitor_port}/routez", timeout=2.0) as answer:
        return {route["remote_name"] for route in json.load(answer)["routes"]}


async def test_two_boxes_cluster_from_their_files_alone(pair):
    # Each store knows only its own box's server: what it reads came through the route.
    token = client_token(SECRET)
    a = await NatsStore.connect([pair.url(2)], "box-2", replicas=2, token=token)
    b = await NatsStore.connect([pair.url(3)], "box-3", replicas=2, token=token)
    try:
        bucket = Bucket(f"test-{secrets.token_hex(4)}")
        revision = await asyncio.wait_for(a.put(bucket, "k", b"written on box 2"), BOUND)
        found = await asyncio.wait_for(b.get(bucket, "k"), BOUND)
        assert found is not None and (found.value, found.revision) == (b"written on box 2", revision)
    finally:
        await a.close()
        await b.close()
    assert [routed_servers(server) for server in pair.servers.servers] == [{"box-3"}, {"box-2"}]


@pytest.mark.parametrize("token", [None, client_token(OTHER_SECRET)], ids=["no token", "another secret's"])
async def test_a_client_without_the_clusters_token_is_refused(pair, token):
    # The store retries until its bound. Its last error is the server's "Authorization Violation", or
    # a reset when the server closed before the client read that, so the difference is what shows it.
    with pytest.raises(StoreUnavailable):
        await NatsStore.connect([pair.url(2)], "stranger", connect_timeout=REFUSAL_BOUND, token=token)
    member = await NatsStore.connect([pair.url(2)], "member", connect_timeout=REFUSAL_BOUND,
                                     token=client_token(SECRET))
    await member.close()


def test_a_server_holding_another_secret_cannot_join(pair):
    box_2 = pair.servers.servers[0]
    intruder = pair.servers.launch(pair.intruder)
    # Its route to box 2 is tried and turned away (nats-server logs each refusal).
    wait_for(lambda: "Authentication Failure" in box_2.log.read_text(errors="replace"),
             "box 2 refusing the route of a server with another secret", BOUND, detail=box_2.tail)
    assert routed_servers(box_2) == {"box-3"}
    assert routed_servers(intruder) == set()
