"""TURN REST credentials and revocation."""
import base64
import hashlib
import hmac

import pytest

from appliance.turn import RestCredentials, Revocations, parse_username, rest_password

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
     ("-5:x", None), (" 17:x", None)],
)
def test_parse_username(username, parsed):
    assert parse_username(username) == parsed


def test_usable_until_expiry():
    credentials = RestCredentials(["s"], 600)
    username, _ = credentials.mint(NOW, 60)
    assert credentials.usable(username, NOW + 59)
    assert not credentials.usable(username, NOW + 60)
    assert not credentials.usable("alice", NOW)


def test_keys_are_one_per_secret():
    credentials = RestCredentials(["a", "b"], 600)
    assert len(list(credentials.keys("1700003600:x", "edgecall"))) == 2


def test_revocations_are_kept_until_the_username_expires():
    revocations = Revocations()
    assert revocations.add("1700000100:alice", NOW)
    assert revocations.add("1700000100:alice", NOW)  # again: still one entry
    assert not revocations.add("1699999999:old", NOW)  # already expired: nothing to keep
    assert not revocations.add("static-user", NOW)
    assert "1700000100:alice" in revocations and len(revocations) == 1
    assert revocations.next_expiry() == 1700000100
    revocations.prune(NOW + 99)
    assert "1700000100:alice" in revocations
    revocations.prune(NOW + 100)
    assert len(revocations) == 0 and revocations.next_expiry() is None
