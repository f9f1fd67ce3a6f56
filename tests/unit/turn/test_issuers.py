"""Quotas per credential issuer (issue 12, item 6): usernames are free to mint, so each TURN key
(and "rest", the shared secrets themselves) is held to a quota and to the relay ports less a
reserve kept for the others."""
import types

import pytest

from appliance.config import TurnConfig
from appliance.stun import Attr, Method, long_term_key
from appliance.turn import RestCredentials, rest_password
from appliance.turn.credentials import REST, split_username
from appliance.turn.service import _TurnCollector
from tests.unit.turn.harness import NOW, SECRET, Lab, error_code, ok

KEYS = {"key-a": "token-a", "key-b": "token-b"}


def clients(lab, count, issuer=None, first_port=1):
    """`count` clients, each with a username of its own (as an attacker mints them)."""
    return [lab.client(("198.51.100.20", first_port + i), identifier=f"u{first_port + i}", issuer=issuer)
            for i in range(count)]


def test_a_keys_credential_names_its_issuer():
    lab = Lab(keys=KEYS)
    key_client, rest_client = lab.client(("198.51.100.20", 1), issuer="key-a"), lab.client(("198.51.100.20", 2))
    assert split_username(key_client.username)[1] is not None and split_username(rest_client.username)[1] is None
    ok(key_client.allocate())
    ok(rest_client.allocate())
    assert sorted(a.auth.issuer for a in lab.server.allocations) == ["key-a", REST]
    assert lab.server.quotas.held == {"key-a": 1, REST: 1}


def test_one_keys_usernames_stop_at_its_quota_and_others_still_allocate():
    lab = Lab(keys=KEYS, issuer_quotas=(("key-a", 5),))
    answers = [client.allocate() for client in clients(lab, 8, "key-a")]
    assert [error_code(a) if a.get(Attr.ERROR_CODE) else 0 for a in answers] == [0] * 5 + [486] * 3
    assert lab.server.quotas.refused == {("key-a", "issuer"): 3}
    ok(lab.client(("198.51.100.21", 1), issuer="key-b").allocate())
    ok(lab.client(("198.51.100.21", 2)).allocate())


def test_the_reserve_keeps_relay_ports_for_other_issuers():
    # Ten ports and a fifth kept: one issuer gets eight, whatever number of usernames it mints.
    lab = Lab(keys=KEYS, ports=(50000, 50009), issuer_reserve=0.2)
    answers = [client.allocate() for client in clients(lab, 10, "key-a")]
    assert sum(a.get(Attr.ERROR_CODE) is None for a in answers) == 8
    assert {error_code(a) for a in answers[8:]} == {486}
    ok(lab.client(("198.51.100.21", 1), issuer="key-b").allocate())
    ok(lab.client(("198.51.100.21", 2)).allocate())


def test_an_ended_allocation_gives_its_place_back():
    lab = Lab(keys=KEYS, issuer_quotas=(("key-a", 1),))
    first, second = clients(lab, 2, "key-a")
    ok(first.allocate())
    assert error_code(second.allocate()) == 486
    ok(first.request(Method.REFRESH, (Attr.LIFETIME, 0)))
    assert lab.server.quotas.held == {"key-a": 0}
    ok(second.allocate())


def test_revoking_a_keys_credential_ends_its_allocations_and_frees_the_quota():
    lab = Lab(keys=KEYS, issuer_quotas=(("key-b", 1),))
    victim, other = clients(lab, 2, "key-b")
    ok(victim.allocate())
    assert lab.server.revoke(victim.username, NOW) == 1
    assert not lab.server.allocations and lab.server.quotas.held == {"key-b": 0}
    ok(other.allocate())


def test_per_username_quota_refusals_are_counted_for_the_issuer():
    lab = Lab(keys=KEYS, user_quota=1)
    first = lab.client(("198.51.100.20", 1), issuer="key-a")
    second = lab.client(("198.51.100.20", 2))
    second.username, second.key = first.username, first.key
    ok(first.allocate())
    assert error_code(second.allocate()) == 486
    assert lab.server.quotas.refused == {("key-a", "user"): 1}


@pytest.mark.parametrize("forge", ["other key's secret", "shared secret", "unknown tag"])
def test_no_credential_passes_for_another_issuer(forge):
    lab = Lab(keys=KEYS)
    client = lab.client(issuer="key-a")
    other = RestCredentials([SECRET], 3600, {"key-b": "token-b"})
    if forge == "other key's secret":
        # key-b's secret over a username carrying key-a's tag.
        password = other._signers["key-b"][1]
    elif forge == "shared secret":
        password = SECRET
    else:
        client.username = client.username.replace(split_username(client.username)[1], "0123abcd")
        password = SECRET
    client.key = long_term_key(client.username, "edgecall", rest_password(password, client.username))
    assert error_code(client.allocate()) == 401
    assert not lab.server.allocations


def test_a_keys_credentials_survive_secret_rotation_and_cost_one_try_whatever_the_number_of_keys():
    keys = {f"key-{i}": f"token-{i}" for i in range(50)}
    username, password = RestCredentials(["old"], 3600, keys).mint(NOW, 60, "alice", "key-7")
    rotated = RestCredentials(["new", "old"], 3600, keys)
    # The tag names the key and the shared secret its secret was derived from.
    assert list(rotated.keys(username, "edgecall")) == [("key-7", long_term_key(username, "edgecall", password))]
    rest_username, _ = rotated.mint(NOW, 60, "bob")
    assert [issuer for issuer, _ in rotated.keys(rest_username, "edgecall")] == [REST, REST]


def test_a_keys_credential_depends_on_its_token():
    one = RestCredentials(["s"], 3600, {"k": "token-1"}).mint(NOW, 60, "", "k")
    other = RestCredentials(["s"], 3600, {"k": "token-2"}).mint(NOW, 60, "", "k")
    assert one != other


def test_minting_for_an_unknown_key_is_refused():
    with pytest.raises(ValueError):
        RestCredentials(["s"], 3600, KEYS).mint(NOW, 60, "", "key-z")


def test_metrics_have_allocations_and_refusals_per_issuer_and_nothing_else():
    lab = Lab(keys=KEYS, issuer_quotas=(("key-a", 1),))
    for client in clients(lab, 3, "key-a"):
        client.allocate()
    service = types.SimpleNamespace(core=lab.server, io=None, config=TurnConfig(), clock=lambda: NOW)
    families = {family.name: family for family in _TurnCollector(service).collect()}
    held = {s.labels["issuer"]: s.value for s in families["edgecall_turn_issuer_allocations"].samples}
    assert held == {REST: 0, "key-a": 1, "key-b": 0}
    refused = {(s.labels["issuer"], s.labels["quota"]): s.value
               for s in families["edgecall_turn_quota_refused"].samples if s.name.endswith("_total")}
    assert refused[("key-a", "issuer")] == 2 and len(refused) == 2 * len(held)
