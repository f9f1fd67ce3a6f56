"""TURN REST credentials and revocation."""
import base64
import hashlib
import hmac

import pytest

from appliance.stun import long_term_key
from appliance.turn import RestCredentials, Revocations, parse_username, rest_password
from appliance.turn.credentials import MAX_IDENTIFIER, RevocationsFull
from tests.unit.turn.harness import REALM, SECRET, Lab, error_code, ok

NOW = 1_700_000_000.0


def test_password_is_base64_hmac_sha1_of_the_username():
    expected = base64.b64encode(hmac.new(b"secret", b"1700003600:alice", hashlib.sha1).digest()).decode()
    assert rest_password("secret", "1700003600:alice") == expected


def test_mint_signs_with_the_first_secret_and_caps_the_ttl():
    credentials = RestCredentials(["new", "old"], max_ttl=600)
    username, password = credentials.mint(NOW, 3600, "alice")
    assert username == f"{int(NOW) + 600}:alice"
    assert password == rest_password("new", username)
    assert credentials.mint(NOW, 60)[0] == str(int(NOW) + 60)


@pytest.mark.parametrize("ttl", [0, -5])
def test_mint_refuses_a_non_positive_ttl(ttl):
    with pytest.raises(ValueError):
        RestCredentials(["s"], 600).mint(NOW, ttl)


def test_mint_needs_a_secret():
    with pytest.raises(ValueError):
        RestCredentials([], 600).mint(NOW, 60)


@pytest.mark.parametrize(
    ("username", "parsed"),
    [("1700003600:alice", (1700003600, "alice")), ("1700003600", (1700003600, "")),
     ("1700003600:a:b", (1700003600, "a:b")), ("alice:1700003600", None), ("", None), ("١٢٣", None),
     ("-5:x", None), (" 17:x", None), ("9" * 5000 + ":x", None)],
)
def test_parse_username(username, parsed):
    assert parse_username(username) == parsed


def test_usable_until_expiry():
    credentials = RestCredentials(["s"], 600)
    username, _ = credentials.mint(NOW, 60)
    assert credentials.usable(username, NOW + 59)
    assert not credentials.usable(username, NOW + 60)
    assert not credentials.usable("alice", NOW)


def test_usable_no_further_ahead_than_max_ttl():
    credentials = RestCredentials(["s"], 600)
    assert credentials.usable(credentials.mint(NOW, 600)[0], NOW)
    assert credentials.usable(f"{int(NOW) + 600 + 60}:x", NOW)  # another box's clock, a minute ahead
    assert not credentials.usable(f"{int(NOW) + 600 + 61}:x", NOW)
    assert not credentials.usable(f"{int(NOW) + 31 * 365 * 86400}:x", NOW)


def _signed_by_hand(lab, username):
    """A client whose username was signed with the box's secret by someone else (a coturn-style app)."""
    client = lab.client()
    client.username = username
    client.key = long_term_key(username, REALM, rest_password(SECRET, username))
    return client


def test_a_31_year_username_signed_with_the_secret_gets_401():
    lab = Lab()
    ok(_signed_by_hand(lab, f"{int(NOW) + 3600}:app").allocate())
    assert error_code(_signed_by_hand(lab, f"{int(NOW) + 31 * 365 * 86400}:app").allocate()) == 401


def test_a_username_of_thousands_of_digits_gets_401_not_an_exception():
    lab = Lab()
    assert error_code(_signed_by_hand(lab, "9" * 5000 + ":x").allocate()) == 401


def test_keys_are_one_per_secret():
    credentials = RestCredentials(["a", "b"], 600)
    assert len(list(credentials.keys("1700003600:x", "edgecall"))) == 2


def test_revocations_are_kept_until_the_username_expires():
    revocations = Revocations(RestCredentials(["s"], 48 * 3600), capacity=10)
    assert revocations.add("1700000100:alice", NOW, NOW)
    assert revocations.add("1700000100:alice", NOW, NOW)  # again: still one entry
    assert not revocations.add("1699999999:old", NOW, NOW)  # already expired: nothing to keep
    assert not revocations.add("static-user", NOW, NOW)
    assert "1700000100:alice" in revocations and len(revocations) == 1
    assert revocations.next_expiry() == 1700000100
    revocations.prune(NOW + 99, NOW + 99)
    assert "1700000100:alice" in revocations
    revocations.prune(NOW + 100, NOW + 100)
    assert len(revocations) == 0 and revocations.next_expiry() is None


@pytest.mark.parametrize(
    "username",
    ["1700000100:" + "x" * (MAX_IDENTIFIER + 1),  # longer than the minting API allows
     "1700000100:a\nb",  # not printable
     f"{int(NOW) + 48 * 3600 + 61}:alice",  # further ahead than credential_max_ttl
     "9317254400:alice",  # the year 2265
     "9" * 5000],
)
def test_revocations_refuse_names_the_box_could_not_have_minted(username):
    revocations = Revocations(RestCredentials(["s"], 48 * 3600), capacity=10)
    assert not revocations.add(username, NOW, NOW)
    assert len(revocations) == 0


def test_ten_thousand_revocations_of_4kb_names_expiring_in_2286_keep_nothing():
    revocations = Revocations(RestCredentials(["s"], 48 * 3600), capacity=50_000)
    refused = sum(not revocations.add(f"9999999999:{i:04d}" + "x" * 4096, NOW, NOW) for i in range(10_000))
    assert refused == 10_000 and len(revocations) == 0 and revocations.next_expiry() is None


def test_revocations_are_capped_and_free_as_credentials_expire():
    revocations = Revocations(RestCredentials(["s"], 48 * 3600), capacity=3)
    for i in range(3):
        assert revocations.add(f"{int(NOW) + 10 + i}:user{i}", NOW, NOW)
    assert revocations.add(f"{int(NOW) + 10}:user0", NOW, NOW)  # already held: no room needed
    with pytest.raises(RevocationsFull, match="3 revocations are held"):
        revocations.add(f"{int(NOW) + 3600}:another", NOW, NOW)
    assert len(revocations) == 3
    revocations.prune(NOW + 10, NOW + 10)
    assert revocations.add(f"{int(NOW) + 3600}:another", NOW + 10, NOW + 10)
