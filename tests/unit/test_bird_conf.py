"""render_bird_conf: what it writes, checked by reading it and by BIRD's own parser (`bird -p`)."""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from appliance.config import ConfigError, NodeConfig, parse_config
from netconfig.bird_conf import render_announcement, render_bird_conf

BGP = """
[node]
id = "ams-1"

[bgp]
local_asn = 65010
router_id = "192.0.2.2"
"""

IPV4_ONLY = BGP + """
[anycast]
prefixes = ["203.0.113.10/32", "203.0.113.11/32"]

[[bgp.neighbors]]
address = "192.0.2.1"
asn = 65000
bfd = false
"""

IPV6_PASSWORD_BFD = BGP + """
[anycast]
prefixes = ["2001:db8:ffff::10/128"]

[[bgp.neighbors]]
address = "2001:db8::1"
asn = 65000
password = "s3cret #1 /* not a comment */ \\\\ back'slash"
bfd = true
"""

MIXED = BGP + """
[anycast]
prefixes = ["203.0.113.10/32", "2001:db8:ffff::10/128"]

[[bgp.neighbors]]
address = "192.0.2.1"
asn = 65000
bfd = true

[[bgp.neighbors]]
address = "2001:db8::1"
asn = 65001
password = "other"
bfd = false

[[bgp.neighbors]]
address = "fe80::1%eth0"
asn = 65002
bfd = false
"""

SAMPLES = {"ipv4-only": IPV4_ONLY, "ipv6-password-bfd": IPV6_PASSWORD_BFD, "mixed": MIXED, "no-neighbors": BGP}


def render(text: str) -> str:
    return render_bird_conf(parse_config(text, "test.toml"))


def block(conf: str, header: str) -> str:
    """The text of the top-level block that starts with `header`, up to its closing brace."""
    start = conf.index(header + " {\n")
    return conf[start:conf.index("\n}\n", start) + 3]


def with_neighbor(extra: str) -> str:
    return BGP + '[[bgp.neighbors]]\naddress = "192.0.2.1"\nasn = 65000\n' + extra


@pytest.mark.skipif(shutil.which("bird") is None, reason="BIRD 2 is not installed (Debian package bird2)")
@pytest.mark.parametrize("sample", SAMPLES, ids=list(SAMPLES))
def test_bird_parses_the_rendered_config(sample, tmp_path):
    # With the announcement in the included directory, as the health agent writes it.
    config = parse_config(SAMPLES[sample] + f'\n[announce]\nbird_dir = "{tmp_path}"\n', "test.toml")
    (tmp_path / "announce.conf").write_text(render_announcement(config))
    path = tmp_path / "bird.conf.main"
    path.write_text(render_bird_conf(config))
    result = subprocess.run(["bird", "-p", "-c", str(path)], capture_output=True, text=True, timeout=10)
    assert result.returncode == 0, f"{result.stderr}\n{path.read_text()}"


def test_ipv4_only():
    conf = render(IPV4_ONLY)
    announcement = render_announcement(parse_config(IPV4_ONLY, "test.toml"))
    assert "router id 192.0.2.2;" in conf.splitlines()
    assert "protocol device {" in conf
    assert 'include "/run/appliance/bird/*.conf";' in conf.splitlines()
    assert "protocol static" not in conf
    assert block(announcement, "protocol static anycast4") == (
        "protocol static anycast4 {\n"
        "    ipv4;\n"
        "    route 203.0.113.10/32 blackhole;\n"
        "    route 203.0.113.11/32 blackhole;\n"
        "}\n"
    )
    assert "anycast6" not in announcement
    assert block(conf, "protocol bgp peer_192_0_2_1") == (
        "protocol bgp peer_192_0_2_1 {\n"
        "    local as 65010;\n"
        "    neighbor 192.0.2.1 as 65000;\n"
        "    graceful restart off;\n"
        "    error wait time 1, 30;\n"
        "    connect retry time 5;\n"
        "    ipv4 {\n"
        "        import none;\n"
        '        export where proto = "anycast4";\n'
        "    };\n"
        "}\n"
    )
    assert "protocol bfd" not in conf
    assert "kernel" not in conf


def test_ipv6_neighbor_with_password_and_bfd():
    conf = render(IPV6_PASSWORD_BFD)
    assert "protocol bfd {\n}\n" in conf
    announcement = render_announcement(parse_config(IPV6_PASSWORD_BFD, "test.toml"))
    assert "route 2001:db8:ffff::10/128 blackhole;" in block(announcement, "protocol static anycast6")
    assert block(conf, "protocol bgp peer_2001_db8__1") == (
        "protocol bgp peer_2001_db8__1 {\n"
        "    local as 65010;\n"
        "    neighbor 2001:db8::1 as 65000;\n"
        "    password \"s3cret #1 /* not a comment */ \\ back'slash\";\n"
        "    bfd on;\n"
        "    graceful restart off;\n"
        "    error wait time 1, 30;\n"
        "    connect retry time 5;\n"
        "    ipv6 {\n"
        "        import none;\n"
        '        export where proto = "anycast6";\n'
        "    };\n"
        "}\n"
    )


def test_mixed_prefixes_give_every_session_both_channels():
    conf = render(MIXED)
    assert conf.count("protocol bfd {") == 1
    for name in ("peer_192_0_2_1", "peer_2001_db8__1", "peer_fe80__1_eth0"):
        session = block(conf, f"protocol bgp {name}")
        assert '    ipv4 {\n        import none;\n        export where proto = "anycast4";\n    };\n' in session
        assert '    ipv6 {\n        import none;\n        export where proto = "anycast6";\n    };\n' in session
    assert "bfd on;" in block(conf, "protocol bgp peer_192_0_2_1")
    assert "bfd on;" not in block(conf, "protocol bgp peer_2001_db8__1")
    assert 'password "other";' in block(conf, "protocol bgp peer_2001_db8__1")


def test_link_local_neighbor_names_its_interface_apart():
    session = block(render(MIXED), "protocol bgp peer_fe80__1_eth0")
    assert "    neighbor fe80::1 as 65002;\n    interface \"eth0\";\n" in session


def test_bfd_is_on_by_default():
    assert "bfd on;" in render(with_neighbor(""))


def test_no_bgp_table_is_refused():
    with pytest.raises(ValueError, match=r"no \[bgp\] table"):
        render('[anycast]\nprefixes = ["203.0.113.10/32"]\n')


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ('"say \\"hi\\""', "cannot quote"),
        ('"line\\nbreak"', "cannot quote"),
        ('"nul\\u0000"', "cannot quote"),
        ('""', "non-empty"),
        ('"' + "x" * 81 + '"', "at most 80 bytes"),
    ],
    ids=["double-quote", "newline", "nul", "empty", "too-long"],
)
def test_passwords_bird_cannot_take_are_refused(password, message):
    """By the config, with the key and line; and by the renderer, for a Config built in code."""
    text = with_neighbor(f"password = {password}\n")
    with pytest.raises(ConfigError, match=rf"test\.toml:{text.count(chr(10))}: bgp\.neighbors\[0\]\.password: .*{message}"):
        parse_config(text, "test.toml")
    config = parse_config(with_neighbor('password = "ok"\n'), "test.toml")
    neighbor = dataclasses.replace(config.bgp.neighbors[0], password=tomllib.loads(f"p = {password}")["p"])
    with pytest.raises(ValueError, match=rf"bgp\.neighbors\[0\]\.password: .*{message}"):
        render_bird_conf(dataclasses.replace(config, bgp=dataclasses.replace(config.bgp, neighbors=(neighbor,))))


def test_every_string_from_the_configuration_is_quoted_or_refused():
    # The config refuses such ids; the renderer must not rely on it (a Config is also built in code).
    config = parse_config(IPV4_ONLY, "test.toml")
    assert render_bird_conf(config).startswith('# Rendered by Edgecall for node "ams-1" from')
    for evil in ('x"; } protocol static evil {', "x\nprotocol static evil {", "x\x00"):
        with pytest.raises(ValueError, match=r"node\.id: BIRD cannot quote"):
            render_bird_conf(dataclasses.replace(config, node=NodeConfig(evil)))
    bird_dir = dataclasses.replace(config.announce, bird_dir='/run/x"; include "/etc/shadow')
    with pytest.raises(ValueError, match=r"announce\.bird_dir: BIRD cannot quote"):
        render_bird_conf(dataclasses.replace(config, announce=bird_dir))


def test_link_local_neighbor_without_interface_is_refused():
    text = BGP + '[[bgp.neighbors]]\naddress = "fe80::1"\nasn = 65000\n'
    with pytest.raises(ValueError, match=r"bgp\.neighbors\[0\]: fe80::1 is link-local"):
        render(text)


def test_neighbors_that_would_share_a_protocol_name_are_refused():
    text = BGP + "".join(f'[[bgp.neighbors]]\naddress = "fe80::1%{iface}"\nasn = 65000\n' for iface in ("eth.0", "eth_0"))
    with pytest.raises(ValueError, match=r"bgp\.neighbors\[1\]: .* peer_fe80__1_eth_0, already taken"):
        render(text)


# --- golden files: the whole output for each sample, reviewed once and kept --------------------
# Regenerate after an intended change with EDGECALL_UPDATE_GOLDEN=1 and read the diff.
GOLDEN = Path(__file__).parent / "golden" / "bird"


@pytest.mark.parametrize("sample", SAMPLES, ids=list(SAMPLES))
def test_rendered_files_match_the_golden_files(sample):
    config = parse_config(SAMPLES[sample], "test.toml")
    rendered = {f"{sample}.conf": render_bird_conf(config), f"{sample}.announce.conf": render_announcement(config)}
    for name, text in rendered.items():
        if os.environ.get("EDGECALL_UPDATE_GOLDEN"):
            (GOLDEN / name).write_text(text)
        assert text == (GOLDEN / name).read_text(), name


@pytest.mark.skipif(shutil.which("bird") is None, reason="BIRD 2 is not installed (Debian package bird2)")
@pytest.mark.parametrize("sample", SAMPLES, ids=list(SAMPLES))
def test_bird_parses_the_golden_files(sample, tmp_path):
    # The golden bird.conf includes /run/appliance/bird/*.conf; a copy pointing at tmp_path reads the announcement.
    main = (GOLDEN / f"{sample}.conf").read_text().replace("/run/appliance/bird/", f"{tmp_path}/")
    (tmp_path / "announce.conf").write_text((GOLDEN / f"{sample}.announce.conf").read_text())
    (tmp_path / "bird.conf.main").write_text(main)
    result = subprocess.run(["bird", "-p", "-c", str(tmp_path / "bird.conf.main")], capture_output=True, text=True, timeout=10)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("key, toml", [
    ("bgp.neighbors[0].password", '[[bgp.neighbors]]\naddress = "192.0.2.1"\nasn = 65000\npassword = "a\\"; }"\n'),
    ("announce.bird_dir", '[announce]\nbird_dir = "/run/x\\"y"\n'),
])
def test_strings_bird_cannot_quote_are_refused_in_the_config_with_key_and_line(key, toml):
    text = BGP + toml
    with pytest.raises(ConfigError, match=rf"test\.toml:{text.count(chr(10))}: {re.escape(key)}: BIRD cannot quote"):
        parse_config(text, "test.toml")
