"""Peer address policy: every denied range, and every IPv6 spelling of a denied IPv4 address."""
import ipaddress

import pytest

from appliance.turn import PeerPolicy, canonical

DENIED_IPV4 = [
    ("0.0.0.0", "unspecified / this network"),
    ("0.1.2.3", "unspecified / this network"),
    ("10.0.0.1", "private"),
    ("10.255.255.255", "private"),
    ("100.64.0.1", "shared address space (CGNAT)"),
    ("100.127.255.254", "shared address space (CGNAT)"),
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("169.254.0.1", "link-local"),
    ("169.254.169.254", "cloud metadata"),
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("192.0.0.9", "IETF protocol assignments"),
    ("192.0.2.1", "documentation"),
    ("192.88.99.1", "6to4 relay anycast"),
    ("192.168.1.1", "private"),
    ("198.18.0.1", "benchmarking"),
    ("198.19.255.255", "benchmarking"),
    ("198.51.100.1", "documentation"),
    ("203.0.113.1", "documentation"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "broadcast"),
]

DENIED_IPV6 = [
    ("::", "unspecified"),
    ("::1", "loopback"),
    ("64:ff9b:1::1", "local-use IPv4/IPv6 translation"),
    ("100::1", "discard-only"),
    ("2001::1", "Teredo"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
    ("2001:2::1", "benchmarking"),
    ("2001:10::1", "ORCHID"),
    ("2001:db8::1", "documentation"),
    ("2002:7f00:1::1", "6to4"),
    ("3fff::1", "documentation"),
    ("5f00::1", "SRv6 SIDs"),
    ("fc00::1", "unique local (private)"),
    ("fd12:3456::1", "unique local (private)"),
    ("fe80::1", "link-local"),
    ("febf::1", "link-local"),
    ("fec0::1", "site-local"),
    ("ff02::1", "multicast"),
    ("ff0e::1", "multicast"),
    ("1::1", "reserved"),
    ("4000::1", "reserved"),
    ("e000::1", "reserved"),
]

ALLOWED = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "100.63.255.255", "100.128.0.0", "172.15.255.255", "172.32.0.0",
           "192.0.1.255", "192.169.0.0", "198.17.255.255", "198.20.0.0", "223.255.255.255",
           "2001:4860:4860::8888", "2606:4700:4700::1111", "2a00:1450:4001::1",
           "::ffff:8.8.8.8", "64:ff9b::808:808"]


def spellings(v4: str) -> list[str]:
    """IPv6 ways to write an IPv4 address: mapped, SIIT-translated, compatible, NAT64."""
    n = int(ipaddress.IPv4Address(v4))
    return [
        f"::ffff:{v4}",
        str(ipaddress.IPv6Address((0xFFFF << 32) | n)),
        str(ipaddress.IPv6Address((0xFFFF << 48) | n)),
        str(ipaddress.IPv6Address(n)) if n > 1 else f"::ffff:{v4}",
        f"64:ff9b::{v4}",
        str(ipaddress.IPv6Address((0x64FF9B << 96) | n)),
    ]


@pytest.mark.parametrize(("host", "why"), DENIED_IPV4 + DENIED_IPV6)
def test_denied_ranges(host, why):
    assert PeerPolicy().refusal(host) == why


@pytest.mark.parametrize(("v4", "why"), DENIED_IPV4)
def test_every_ipv6_spelling_of_a_denied_ipv4_address_is_denied(v4, why):
    policy = PeerPolicy()
    for spelling in spellings(v4):
        assert policy.refusal(spelling) is not None, spelling


@pytest.mark.parametrize("host", ALLOWED)
def test_public_addresses_are_allowed(host):
    assert PeerPolicy().permits(host)


def test_canonical_forms():
    c = lambda s: str(canonical(ipaddress.ip_address(s)))  # noqa: E731
    assert c("::ffff:127.0.0.1") == "127.0.0.1"
    assert c("::ffff:0:127.0.0.1") == "127.0.0.1"
    assert c("::127.0.0.1") == "127.0.0.1"
    assert c("64:ff9b::7f00:1") == "127.0.0.1"
    assert c("::") == "::" and c("::1") == "::1"
    assert c("2001:db8::1") == "2001:db8::1" and c("10.0.0.1") == "10.0.0.1"


def test_own_addresses_are_denied_in_any_spelling():
    policy = PeerPolicy(own=["93.184.216.34", ipaddress.ip_address("2606:4700::1")])
    assert policy.refusal("93.184.216.34") == "this box's own address"
    assert policy.refusal("::ffff:93.184.216.34") == "this box's own address"
    assert policy.refusal("64:ff9b::93.184.216.34") == "this box's own address"
    assert policy.refusal("2606:4700::1") == "this box's own address"
    assert policy.permits("93.184.216.35")


def test_allow_list_opens_ranges_against_the_canonical_address():
    policy = PeerPolicy(allow=[ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")],
                        own=["127.0.0.1"])
    assert policy.permits("127.0.0.1")  # opened on purpose, even though it is the box's own
    assert policy.permits("::ffff:127.0.0.2")  # the same address, spelled in IPv6
    assert policy.permits("::1")
    assert not policy.permits("10.0.0.1")
    # Allowing an IPv6 range does not open the IPv4 addresses that range could spell.
    wide = PeerPolicy(allow=[ipaddress.ip_network("::/0")])
    assert not wide.permits("::ffff:127.0.0.1") and not wide.permits("::ffff:10.0.0.1")
    assert wide.permits("fe80::1")


@pytest.mark.parametrize("host", ["", "not an address", "127.0.0.1%lo", "1.2.3"])
def test_garbage_is_refused(host):
    assert PeerPolicy().refusal(host) == "not an IP address"
