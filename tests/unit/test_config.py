import ipaddress
import textwrap

import pytest
from hypothesis import given, strategies as st

from appliance.cli import main
from appliance.config import ConfigError, Endpoint, PortRange, load_config, parse_config
from appliance.config.values import Invalid, Listener, parse_id

GOOD = textwrap.dedent(
    """
    [node]
    id = "ams-1"

    [api]
    listen = "[::1]:8080"

    [[apps]]
    id = "demo"
    secret = "s"

    [sfu]
    udp = "0.0.0.0:3479"
    tcp = "0.0.0.0:3479"
    public_addresses = ["203.0.113.10", "2001:db8::10"]

    [turn]
    listen = [
        "udp://0.0.0.0:3478",   # a comment, and a multi-line array
        "tcp://0.0.0.0:3478",
    ]
    secrets = ["one", "two"]
    relay_address = "203.0.113.10"
    relay_ports = "49152-49999"

    [[turn.keys]]
    id = "k1"
    token = "t1"

    [anycast]
    prefixes = ["203.0.113.10/32", "2001:db8::10/128"]

    [bgp]
    local_asn = 65010
    router_id = "192.0.2.2"

    [[bgp.neighbors]]
    address = "192.0.2.1"
    asn = 65000

    [backbone]
    underlay = "198.51.100.1"
    overlay = "192.0.2.129/25"
    [[backbone.peers]]
    node = "fra-1"
    underlay = "198.51.100.2"
    overlay = "192.0.2.130"
    relay_ports = "50000-50999"

    [cluster]
    nats = ["nats://192.0.2.130:4222"]
    secret = "a-cluster-secret-of-some-length"
    """
)


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(textwrap.dedent(text), "box.toml")
    return str(info.value).splitlines()


def test_a_full_file_parses_into_typed_values():
    config = parse_config(GOOD, "box.toml")
    assert config.api.listen == Endpoint(ipaddress.ip_address("::1"), 8080)
    assert str(config.api.listen) == "[::1]:8080"
    assert [str(listener) for listener in config.turn.listen] == ["udp://0.0.0.0:3478", "tcp://0.0.0.0:3478"]
    assert config.turn.relay_ports == PortRange(49152, 49999)
    assert config.bgp.neighbors[0].bfd is True  # BFD on toward routers unless turned off
    assert config.backbone.kind == "vxlan"
    assert config.backbone.overlay == ipaddress.ip_interface("192.0.2.129/25")
    assert config.anycast.prefixes[1] == ipaddress.ip_network("2001:db8::10/128")


def test_embedded_default_is_a_loopback_box_with_a_fresh_demo_app():
    first, second = load_config(None), load_config(None)
    assert str(first.api.listen) == "127.0.0.1:8080"
    assert [str(e) for e in first.sfu.udp] == ["127.0.0.1:3479"] and first.sfu.tcp == ()
    assert [str(listener) for listener in first.turn.listen] == ["udp://127.0.0.1:3478", "tcp://127.0.0.1:3478"]
    assert [app.id for app in first.apps] == ["demo"]
    assert first.apps[0].secret != second.apps[0].secret
    assert first.bgp is None and first.backbone is None and first.cluster.nats == ()


def test_an_empty_file_means_every_default():
    config = parse_config("", "empty.toml")
    assert config.apps == () and config.turn.enabled and config.sfu.enabled


def test_three_mistakes_are_all_reported_with_their_lines():
    lines = problems(
        """\
        [api]
        listen = "localhost:8080"

        [sfu]
        udp = "127.0.0.1:3479"
        upd = "127.0.0.1:3479"

        [turn]
        relay_ports = "50000-40000"
        """
    )
    assert lines == [
        'box.toml:2: api.listen: expected host:port with an IP address (IPv6 as [::1]:3478), found "localhost:8080"',
        "box.toml:6: sfu.upd: unknown key; did you mean 'udp'?",
        'box.toml:9: turn.relay_ports: expected a port range first-last within 1-65535 (like 49152-65535), found "50000-40000"',
    ]


def test_wrong_types_name_what_was_expected_and_found():
    lines = problems(
        """\
        [sfu]
        enabled = "yes"
        [[apps]]
        id = "a"
        secret = 5
        [[apps]]
        id = "b"
        [bgp]
        local_asn = 65000
        router_id = "2001:db8::1"
        """
    )
    assert lines == [
        'box.toml:2: sfu.enabled: expected true or false, found "yes"',
        "box.toml:5: apps[0].secret: expected a string, found 5",
        "box.toml:6: apps[1].secret: required key is missing",
        'box.toml:10: bgp.router_id: expected an IPv4 address, found "2001:db8::1"',
    ]


def test_syntax_errors_carry_the_line():
    (line,) = problems('[api]\nlisten = "127.0.0.1:80\n')
    assert line.startswith("box.toml:2: (syntax): not valid TOML")


def test_port_clashes_and_overlapping_relay_ranges():
    lines = problems(
        """\
        [api]
        listen = "0.0.0.0:3478"
        [sfu]
        udp = "127.0.0.1:3478"
        [turn]
        listen = ["udp://127.0.0.1:3478", "tcp://[::]:5000"]
        relay_ports = "50000-50999"
        [backbone]
        underlay = "198.51.100.1"
        overlay = "192.0.2.129/25"
        [[backbone.peers]]
        node = "b"
        underlay = "198.51.100.2"
        overlay = "192.0.2.130"
        relay_ports = "50900-51999"
        [[backbone.peers]]
        node = "c"
        underlay = "198.51.100.3"
        overlay = "192.0.2.131"
        relay_ports = "51500-52000"
        """
    )
    assert lines == [
        "box.toml:6: turn.listen[0]: udp port 127.0.0.1:3478 clashes with sfu.udp (127.0.0.1:3478)",
        "box.toml:15: backbone.peers[0].relay_ports: relay port range 50900-51999 overlaps turn.relay_ports (50000-50999)",
        "box.toml:20: backbone.peers[1].relay_ports: relay port range 51500-52000 overlaps backbone.peers[0].relay_ports (50900-51999)",
    ]


def test_a_listener_inside_the_relay_range_is_a_clash():
    (line,) = problems('[sfu]\nudp = "127.0.0.1:50010"\n[turn]\nrelay_ports = "50000-50999"\n')
    assert line == "box.toml:2: sfu.udp: port 50010 lies inside turn.relay_ports (50000-50999) on the relay address"


def test_tls_listeners_need_readable_certificate_files(tmp_path):
    lines = problems(
        f"""\
        [turn]
        listen = ["tls://127.0.0.1:5349"]
        tls_key = "{tmp_path}/missing.key"
        """
    )
    assert lines == [
        "box.toml:1: turn.tls_cert: expected a file path because turn.listen has a tls:// listener, found nothing",
        f"box.toml:3: turn.tls_key: expected a readable file, found '{tmp_path}/missing.key' (missing or unreadable)",
    ]


def test_duplicates_and_keys_without_a_signing_secret():
    lines = problems(
        """\
        [[apps]]
        id = "a"
        secret = "x"
        [[apps]]
        id = "a"
        secret = "y"
        [[turn.keys]]
        id = "k"
        token = "t"
        """
    )
    assert lines == [
        "box.toml:5: apps[1].id: duplicate id 'a'",
        "box.toml:7: turn.secrets: expected at least one secret to sign the credentials of turn.keys, found none",
    ]


def test_ids_outside_the_safe_alphabet_are_refused_with_key_and_line():
    # An id reaches bird.conf, URL paths and interface names: '"; }' or a line break would inject into them.
    lines = problems(
        """\
        [node]
        id = "x\\"; } protocol static evil {"
        [[apps]]
        id = "a\\nb"
        secret = "s"
        [[turn.keys]]
        id = "../k"
        token = "t"
        [turn]
        secrets = ["s"]
        [backbone]
        underlay = "198.51.100.1"
        overlay = "192.0.2.129/25"
        [[backbone.peers]]
        node = ["b"]
        underlay = "198.51.100.2"
        overlay = "192.0.2.130"
        relay_ports = "50000-50999"
        """
    )
    expected = "expected an id of 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit, found"
    assert lines == [
        f'box.toml:2: node.id: {expected} "x\\"; }} protocol static evil {{"',
        f'box.toml:4: apps[0].id: {expected} "a\\nb"',
        f'box.toml:7: turn.keys[0].id: {expected} "../k"',
        f"box.toml:15: backbone.peers[0].node: {expected} an array",
    ]


@pytest.mark.parametrize("text", ["a", "ams-1", "demo-key", "Edge_1.eu", "0" * 63])
def test_ids_in_the_safe_alphabet_are_kept(text):
    assert parse_config(f'[node]\nid = "{text}"\n', "box.toml").node.id == text


@pytest.mark.parametrize("text", ["", "-a", ".a", "a b", "a/b", "a%2Fb", "é", "0" * 64, "a\x00"])
def test_ids_outside_the_safe_alphabet(text):
    with pytest.raises(Invalid):
        parse_id(text)


def test_an_unreadable_file_is_a_problem_not_a_crash(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path / "nope.toml"))
    assert "cannot read the file" in str(info.value)


def test_check_config_exits_2_listing_problems(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('[api]\nlisten = "nowhere"\n[sfu]\nudp = 5\n[bogus]\n')
    assert main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:2: api.listen:" in err
    assert f"{bad}:4: sfu.udp:" in err
    assert f"{bad}:5: bogus: unknown key" in err


def test_check_config_exits_0_with_a_summary(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("appliance.workers.plan.usable_cores", lambda: 3)
    good = tmp_path / "good.toml"
    good.write_text(GOOD)
    assert main(["check-config", str(good)]) == 0
    out = capsys.readouterr().out
    assert "OK" in out and "node ams-1" in out and "bgp: AS65010" in out and "backbone: vxlan" in out
    assert "processes here: 3 (SFU in 3, TURN in 3)" in out  # no workers key: one per core


@pytest.mark.parametrize(
    "text, host, port",
    [("127.0.0.1:80", "127.0.0.1", 80), ("[::1]:3478", "::1", 3478), ("[2001:db8::1]:1", "2001:db8::1", 1)],
)
def test_endpoints(text, host, port):
    assert Endpoint.parse(text) == Endpoint(ipaddress.ip_address(host), port)


@pytest.mark.parametrize("text", ["::1:3478", "[127.0.0.1]:80", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:65536", "h:1", ":80"])
def test_bad_endpoints(text):
    with pytest.raises(Invalid):
        Endpoint.parse(text)


@given(st.one_of(st.text(), st.integers(), st.none(), st.booleans(), st.lists(st.text())))
def test_value_parsers_raise_only_invalid(raw):
    for parse in (Endpoint.parse, Listener.parse, PortRange.parse):
        try:
            parse(raw)
        except Invalid:
            pass


def test_the_media_port_on_several_addresses():
    config = parse_config('[sfu]\nudp = ["127.0.0.1:3479", "[::1]:3479"]\ntcp = "127.0.0.1:3480"\n', "box.toml")
    assert [str(e) for e in config.sfu.udp] == ["127.0.0.1:3479", "[::1]:3479"]
    assert [str(e) for e in config.sfu.tcp] == ["127.0.0.1:3480"]
    (line,) = problems('[sfu]\nudp = ["127.0.0.1:3479", "127.0.0.1:3479"]\n')
    assert line == "box.toml:2: sfu.udp[1]: udp port 127.0.0.1:3479 clashes with sfu.udp[0] (127.0.0.1:3479)"
    (line,) = problems('[sfu]\nudp = []\n')
    assert line.startswith("box.toml:2: sfu.udp: expected host:port, or a non-empty array of them")


def test_state_dir_and_the_turn_bounds_are_checked():
    lines = problems(
        """\
        [node]
        state_dir = "var/lib/edgecall"
        [turn]
        max_revocations = 0
        metrics_identifiers = -1
        """
    )
    assert lines == [
        'box.toml:2: node.state_dir: expected an absolute path, found "var/lib/edgecall"',
        "box.toml:4: turn.max_revocations: expected a positive integer, found 0",
        "box.toml:5: turn.metrics_identifiers: expected an integer, 0 or more, found -1",
    ]


def test_an_empty_metrics_token_is_refused():
    assert problems('[api]\nmetrics_token = ""\n') == [
        'box.toml:2: api.metrics_token: expected a non-empty token, found "" (leave the key out for an open /metrics)'
    ]


def test_the_embedded_default_keeps_state_where_its_user_can_write(monkeypatch, tmp_path):
    assert parse_config("", "box.toml").node.state_dir == "/var/lib/edgecall"  # the image's, the unit's StateDirectory
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert load_config(None).node.state_dir == str(tmp_path / "edgecall")
    monkeypatch.setenv("XDG_STATE_HOME", "relative")  # ignored, as the XDG spec says
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert load_config(None).node.state_dir == str(tmp_path / "home" / ".local" / "state" / "edgecall")


def test_turn_issuer_quotas_and_stream_limits_are_checked():
    lines = problems(
        """\
        [turn]
        secrets = ["s"]
        issuer_reserve = 1
        rest_quota = 0
        max_streams = -3
        [[turn.keys]]
        id = "k"
        token = "t"
        quota = 2.5
        """
    )
    assert lines == [
        "box.toml:3: turn.issuer_reserve: expected a share from 0 up to (not including) 1, like 0.2, found 1",
        "box.toml:4: turn.rest_quota: expected a positive integer, found 0",
        "box.toml:5: turn.max_streams: expected a positive integer, found -3",
        "box.toml:9: turn.keys[0].quota: expected a positive integer, found 2.5",
    ]
    lines = problems('[turn]\nsecrets = ["s"]\nstream_idle_timeout = 0\n[[turn.keys]]\nid = "rest"\ntoken = "t"\n')
    assert lines == [
        "box.toml:3: turn.stream_idle_timeout: expected more than 0 seconds",
        'box.toml:5: turn.keys[0].id: expected an id other than "rest", the issuer name of turn.secrets',
    ]


def test_turn_issuer_quotas_and_stream_limits_parse():
    turn = parse_config(
        '[turn]\nsecrets = ["s"]\nrest_quota = 100\nissuer_reserve = 0\nstream_idle_timeout = 2.5\n'
        '[[turn.keys]]\nid = "k"\ntoken = "t"\nquota = 500\n', "box.toml",
    ).turn
    assert (turn.rest_quota, turn.issuer_reserve, turn.stream_idle_timeout, turn.keys[0].quota) == (100, 0.0, 2.5, 500)
    assert parse_config("", "box.toml").turn.keys == ()


def test_a_cluster_needs_nats_urls_and_a_secret_long_enough():
    assert problems(
        """\
        [cluster]
        nats = ["nats://192.0.2.20:4222", "http://192.0.2.21:4222"]
        """
    ) == [
        "box.toml:2: cluster.nats: a cluster needs [cluster] secret: it seals the store and authenticates trunks",
        "box.toml:2: cluster.nats[1]: expected a nats:// or tls:// URL, found 'http://192.0.2.21:4222'",
    ]
    assert problems('[cluster]\ntrunk_fanout = 0\n') == [
        "box.toml:2: cluster.trunk_fanout: expected a positive integer, found 0"]
    assert problems('[cluster]\nsecret = "short"\n') == [
        "box.toml:2: cluster.secret: expected at least 16 characters (a random string shared by every box)"]
    config = parse_config('[cluster]\nnats = ["tls://192.0.2.20:4222"]\nsecret = "0123456789abcdef"\n'
                          'trunk = "192.0.2.129:3480"\n', "box.toml")
    assert config.cluster.trunk_fanout == 8 and str(config.cluster.trunk) == "192.0.2.129:3480"
