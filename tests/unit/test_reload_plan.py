"""A reload's plan (config/reload.py): which changed keys a running box takes live, which need a restart
and keep their running value, and live changes that do not fit the running values refused."""
from __future__ import annotations

import dataclasses

from appliance.config import parse_config
from appliance.config.reload import LIVE, plan_reload
from appliance.config.schema import Config

BASE = """
[node]
id = "ams-1"
[api]
listen = "127.0.0.1:8080"
admin_token = "admin-1"
[[apps]]
id = "demo"
secret = "demo-secret"
[[apps]]
id = "other"
secret = "other-secret"
max_sessions = 10
[sfu]
udp = "127.0.0.1:3479"
[turn]
listen = ["udp://127.0.0.1:3478"]
secrets = ["rest-1"]
relay_ports = "61000-61499"
[[turn.keys]]
id = "key-1"
token = "token-1"
[meet]
app = "demo"
[announce]
rise = 3
[backbone]
underlay = "198.51.100.1"
overlay = "192.0.2.129/25"
[[backbone.peers]]
node = "fra-1"
underlay = "198.51.100.2"
overlay = "192.0.2.130"
relay_ports = "61500-61999"
"""


def config(text: str = BASE, **replace: str) -> Config:
    """BASE with each `old=new` line pair of `replace` swapped in (keys named for readability)."""
    for old_new in replace.values():
        old, new = old_new.split("=>")
        assert old in text, old
        text = text.replace(old, new, 1)
    return parse_config(text, "box.toml")


def test_an_unchanged_file_changes_nothing():
    running = config()
    plan = plan_reload(running, config(), may_change_network=True)
    assert (plan.applied, plan.restart, plan.conflicts, plan.net_apply) == ((), (), (), False)
    assert plan.config == running


def test_secrets_keys_tokens_and_limits_are_taken_live():
    running = config()
    wanted = config(BASE + '[[turn.keys]]\nid = "key-2"\ntoken = "token-2"\n',
                    app='secret = "demo-secret"=>secret = "demo-secret-2"',
                    limit="max_sessions = 10=>max_sessions = 20",
                    rest='secrets = ["rest-1"]=>secrets = ["rest-2", "rest-1"]',
                    admin='admin_token = "admin-1"=>admin_token = "admin-2"',
                    timer="rise = 3=>rise = 5")
    plan = plan_reload(running, wanted, may_change_network=False)
    assert plan.applied == ("api.admin_token", "apps[demo].secret", "apps[other].max_sessions", "turn.secrets",
                            "turn.keys[key-2]", "announce.rise")
    assert plan.restart == () and plan.conflicts == ()
    assert plan.config == wanted


def test_apps_added_and_removed_are_named_by_id():
    running = config()
    wanted = config(app='[[apps]]\nid = "other"\nsecret = "other-secret"\nmax_sessions = 10\n'
                        '=>[[apps]]\nid = "third"\nsecret = "third-secret"\n')
    plan = plan_reload(running, wanted, may_change_network=False)
    assert plan.applied == ("apps[other]", "apps[third]")
    assert [a.id for a in plan.config.apps] == ["demo", "third"]


def test_keys_that_need_a_restart_keep_their_running_value_and_are_named():
    running = config()
    wanted = config(node='id = "ams-1"=>id = "ams-2"',
                    api='listen = "127.0.0.1:8080"=>listen = "127.0.0.1:8081"',
                    media='udp = "127.0.0.1:3479"=>udp = "127.0.0.1:3480"',
                    turn='listen = ["udp://127.0.0.1:3478"]=>listen = ["udp://127.0.0.1:3478", "tcp://127.0.0.1:3478"]',
                    app='secret = "demo-secret"=>secret = "demo-secret-2"')
    wanted = dataclasses.replace(wanted, cluster=dataclasses.replace(wanted.cluster, trunk_fanout=4))
    plan = plan_reload(running, wanted, may_change_network=True)
    assert plan.applied == ("apps[demo].secret",)
    assert plan.restart == ("node.id", "api.listen", "sfu.udp", "turn.listen", "cluster.trunk_fanout")
    assert plan.config == dataclasses.replace(running, apps=wanted.apps)


def test_a_table_added_or_removed_needs_a_restart():
    running = config()
    wanted = config(BASE + '[bgp]\nlocal_asn = 65010\nrouter_id = "192.0.2.2"\n')
    plan = plan_reload(running, wanted, may_change_network=True)
    assert plan.restart == ("bgp",) and plan.config.bgp is None


def test_the_meeting_app_is_live_only_while_one_is_set():
    running = config()
    other = config(meet='app = "demo"=>app = "other"')
    assert plan_reload(running, other, may_change_network=False).applied == ("meet.app",)
    unset = config(meet='[meet]\napp = "demo"=>[meet]')
    plan = plan_reload(running, unset, may_change_network=False)
    assert plan.restart == ("meet.app",) and plan.config.meet.app == "demo"


def test_backbone_peers_are_live_through_net_apply_only_where_the_process_may_change_the_network():
    running = config()
    wanted = config(BASE + '[[backbone.peers]]\nnode = "par-1"\nunderlay = "198.51.100.3"\noverlay = "192.0.2.131"\n'
                           'relay_ports = "62000-62499"\n',
                    slice='relay_ports = "61500-61999"=>relay_ports = "61500-61799"')
    plan = plan_reload(running, wanted, may_change_network=True)
    assert plan.applied == ("backbone.peers[fra-1].relay_ports", "backbone.peers[par-1]") and plan.net_apply
    assert plan.config.backbone == wanted.backbone
    held = plan_reload(running, wanted, may_change_network=False)
    assert held.restart == plan.applied and held.applied == () and not held.net_apply
    assert held.config == running


def test_live_changes_that_clash_with_running_values_are_conflicts():
    # The running relay ports stay until a restart, and the peer's new slice overlaps them.
    running = config()
    wanted = config(ours='relay_ports = "61000-61499"=>relay_ports = "63000-63499"',
                    theirs='relay_ports = "61500-61999"=>relay_ports = "61400-61999"')
    plan = plan_reload(running, wanted, may_change_network=True)
    assert plan.restart == ("turn.relay_ports",)
    assert plan.conflicts == ((("backbone", "peers", 0, "relay_ports"),
                               "relay port range 61400-61999 overlaps turn.relay_ports (61000-61499)"),)


def test_every_live_key_names_a_key_of_the_schema():
    def names(table: object, prefix: str = "") -> set[str]:
        out = set()
        for f in dataclasses.fields(table):  # type: ignore[arg-type]
            value = getattr(table, f.name)
            name = f"{prefix}{f.name}"
            out.add(name)
            if dataclasses.is_dataclass(value) and not hasattr(value, "parse"):
                out |= names(value, name + ".")
        return out

    assert LIVE <= names(config())
