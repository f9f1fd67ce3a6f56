"""The first-boot default: what the box serves with when its EDGECALL partition holds no appliance.toml."""
from __future__ import annotations

import ipaddress
import json
import os
import secrets
import string

# Kept beside the code rather than as package data, so the wheel needs nothing more than the modules.
TEMPLATE = """\
# The first-boot default: the image found no appliance.toml on its EDGECALL partition.
# The box serves on its first interface's DHCP address; the secrets are made once and kept on the state partition.

[node]
id = "edgecall"

[api]
listen = "$address:8080"
# The service's start banner shows the generated secrets whole, as the console does.
print_secrets = true

[[apps]]
id = "demo"
secret = "$demo_secret"

[sfu]
udp = "$address:3479"

[turn]
listen = ["udp://$address:3478", "tcp://$address:3478"]
relay_address = "$address"
secrets = ["$turn_secret"]

[[turn.keys]]
id = "demo-key"
token = "$turn_key_token"

[drain]
time = 0
"""

_SECRETS = ("demo_secret", "turn_secret", "turn_key_token")


def render(address: ipaddress.IPv4Address, secrets_file: str) -> str:
    """The first-boot configuration on `address`, with the secrets kept in `secrets_file`
    (made on the first boot, so the operator's notes stay valid across reboots)."""
    return string.Template(TEMPLATE).substitute(address=address, **_kept_secrets(secrets_file))


def _kept_secrets(path: str) -> dict[str, str]:
    try:
        with open(path, encoding="utf-8") as f:
            kept = json.load(f)
        if all(isinstance(kept.get(name), str) for name in _SECRETS):
            return {name: kept[name] for name in _SECRETS}
    except (OSError, ValueError):
        pass
    made = {name: secrets.token_urlsafe(18) for name in _SECRETS}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path + ".new", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(made, f)
    os.replace(path + ".new", path)
    return made
