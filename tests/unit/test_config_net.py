"""The [net], [announce] and [drain] tables: defaults, and what the checks refuse."""
import pytest

from appliance.config import ConfigError, parse_config


def test_defaults():
    config = parse_config("", "test.toml")
    assert config.net.anycast_interface == "lo" and config.net.uplinks == () and config.net.routes == ()
    assert (config.announce.interval, config.announce.rise, config.announce.fall) == (0.5, 3, 2)
    assert config.drain.time == 0.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[net.routes]]\nto = "0.0.0.0/0"\n', "net.routes[0].via: expected a gateway (via) or an interface"),
        ('[[net.routes]]\nto = "::/0"\nvia = "192.0.2.1"\n', "net.routes[0].via: expected an IPv6 gateway"),
        ('[[net.routes]]\nto = "0.0.0.0/0"\nvia = "192.0.2.1"\n[[net.routes]]\nto = "0.0.0.0/0"\nvia = "192.0.2.9"\n',
         "net.routes[1].to: duplicate route to 0.0.0.0/0"),
        ('[[net.uplinks]]\ninterface = "eth0"\n[[net.uplinks]]\ninterface = "eth0"\n',
         "net.uplinks[1].interface: duplicate interface 'eth0'"),
        ('[[net.uplinks]]\ninterface = "a/b"\n', "net.uplinks[0].interface: expected a network interface name"),
        ('[[net.uplinks]]\ninterface = "eth0"\naddresses = ["192.0.2.2"]\n', "expected an address with its prefix length"),
        ("[announce]\ninterval = 0\n", "announce.interval: expected more than 0 seconds"),
        ("[announce]\ntimeout = 1.0\n", "announce.timeout: expected more than 0 and less than announce.interval"),
        ("[announce]\nrise = 0\n", "announce.rise: expected a positive integer"),
        ("[drain]\ntime = -1\n", "drain.time: expected a number of seconds"),
    ],
)
def test_refused(text, message):
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "test.toml")
    assert message in str(caught.value)
