"""The start banner goes to the journal: it shows secrets whole only for the generated demo defaults."""
from __future__ import annotations

import ipaddress

from appliance.boot import firstboot
from appliance.config import embedded_default, parse_config
from appliance.runner import assemble, banner
from appliance.service import banner_secret

OPERATOR = """\
[[apps]]
id = "app-a"
secret = "app-a-secret-0123456789"
[turn]
secrets = ["rest-secret"]
[[turn.keys]]
id = "key-1"
token = "key-1-token-0123456789"
"""


def test_an_operators_secrets_are_masked():
    text = banner(assemble(parse_config(OPERATOR, "box.toml")))
    assert "app-a-secret-0123456789" not in text and "key-1-token-0123456789" not in text
    assert "id app-a  secret app-…" in text and "id key-1  token key-…" in text


def test_the_generated_demo_defaults_are_printed_whole():
    config = embedded_default()
    text = banner(assemble(config))
    assert f"id demo  secret {config.apps[0].secret}\n" in text
    assert f"id demo-key  token {config.turn.keys[0].token} " in text


def test_the_first_boot_default_is_printed_whole(tmp_path):
    config = parse_config(firstboot.render(ipaddress.IPv4Address("127.0.0.1"), str(tmp_path / "kept.json")), "first")
    assert config.api.print_secrets
    assert f"secret {config.apps[0].secret}\n" in banner(assemble(config))


def test_a_short_secret_shows_no_more_than_a_quarter_of_itself():
    assert banner_secret("demo-secret", False) == "de…"
    assert banner_secret("abc", False) == "…"
    assert banner_secret("abc", True) == "abc"
