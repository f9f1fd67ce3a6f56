"""Per-stream tokens (appliance/api/stream_tokens.py): a token lets its bearer do one kind of thing
with one stream of one app until it expires, and nothing else; the wall clock is passed in."""
from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from appliance.api.stream_tokens import PREFIX, mint, valid
from appliance.plumbing.signed import MAX_EXPIRY_DIGITS

SECRET = b"demo-secret"
APP, NAME = "demo", "cam-1"
NOW = 1_700_000_000.0
EXPIRY = int(NOW) + 3600


def token(kind: str = "publish", app: str = APP, name: str = NAME, expiry: int = EXPIRY,
          secret: bytes = SECRET) -> bytes:
    return mint(secret, app, name, kind, expiry).encode()


@pytest.mark.parametrize("kind", ["publish", "play"])
def test_a_token_is_valid_for_its_app_name_and_kind_until_it_expires(kind):
    assert valid(SECRET, APP, NAME, kind, token(kind), NOW)
    assert valid(SECRET, APP, NAME, kind, token(kind), EXPIRY - 0.5)
    assert not valid(SECRET, APP, NAME, kind, token(kind), EXPIRY)  # the expiry itself is too late
    assert not valid(SECRET, APP, NAME, kind, token(kind), EXPIRY + 86400)


def test_a_token_is_refused_for_another_name_app_kind_or_secret():
    assert not valid(SECRET, APP, "cam-2", "publish", token(), NOW)
    assert not valid(SECRET, "other", NAME, "publish", token(), NOW)
    assert not valid(SECRET, APP, NAME, "play", token("publish"), NOW)
    assert not valid(SECRET, APP, NAME, "publish", token("play"), NOW)
    assert not valid(b"new-secret", APP, NAME, "publish", token(), NOW)  # a changed secret revokes them all


def test_a_token_whose_fields_shift_between_app_and_name_is_refused():
    # The MAC covers app and name apart: "de" + "mo\ncam-1" is not "demo" + "cam-1".
    assert not valid(SECRET, APP, NAME, "publish", token(app="de", name="mo\ncam-1"), NOW)
    assert not valid(SECRET, APP, NAME, "publish", token(app="democam-1", name=""), NOW)


def test_a_tampered_token_is_refused():
    good = token().decode()
    prefix, kind, expiry, mac = good.split(".")
    flipped = ("B" if mac[0] == "A" else "A") + mac[1:]
    for bad in (
        f"{prefix}.{kind}.{expiry}.{flipped}",  # another MAC
        f"{prefix}.{kind}.{int(expiry) + 86400}.{mac}",  # a later expiry under the old MAC
        f"{prefix}.play.{expiry}.{mac}",  # another kind under the old MAC
        f"{prefix}.{kind}.{expiry}.{mac[:-1]}",  # a MAC cut short
        f"{prefix}.{kind}.{expiry}.{mac}=",
        f"{prefix}.{kind}.{expiry}.",
        f"{prefix}.{kind}.{expiry}.{mac}.extra",
        f"{prefix}.{kind}.{expiry}",
        good.upper(),
        good + " ",
    ):
        assert not valid(SECRET, APP, NAME, kind, bad.encode(), NOW), bad
    assert valid(SECRET, APP, NAME, kind, good.encode(), NOW)


def test_a_token_with_another_prefix_is_refused():
    rest = token().decode().partition(".")[2]
    for prefix in ("ecs2", "ECS1", "", "ecs1 ", "Bearer ecs1"):
        assert not valid(SECRET, APP, NAME, "publish", f"{prefix}.{rest}".encode(), NOW), prefix
    assert PREFIX == "ecs1"


def test_non_ascii_bytes_are_refused():
    good = token()
    for bad in (good + b"\xff", b"\xc3\xa9" + good, good.replace(b"publish", "publísh".encode()),
                good.replace(str(EXPIRY).encode(), "١٧٠٠٠٠٣٦٠٠".encode())):  # Arabic-Indic digits
        assert not valid(SECRET, APP, NAME, "publish", bad, NOW), bad


def test_an_expiry_of_too_many_digits_is_refused_even_with_its_own_mac():
    far = 10 ** MAX_EXPIRY_DIGITS  # one digit more than the most allowed
    assert not valid(SECRET, APP, NAME, "publish", token(expiry=far), NOW)
    most = 10 ** MAX_EXPIRY_DIGITS - 1
    assert valid(SECRET, APP, NAME, "publish", token(expiry=most), NOW)
    # Refused before it is read as a number (int() refuses past 4300 digits with ValueError).
    assert not valid(SECRET, APP, NAME, "publish", f"{PREFIX}.publish.{'9' * 5000}.AAAA".encode(), NOW)


def test_an_expiry_that_is_not_a_plain_number_is_refused():
    rest = token().decode().split(".")
    for expiry in ("-1", "+1700003600", " 1700003600", "1.7e9", "0x65", ""):
        bad = ".".join([rest[0], rest[1], expiry, rest[3]])
        assert not valid(SECRET, APP, NAME, "publish", bad.encode(), NOW), expiry


@settings(max_examples=2000)
@given(raw=st.binary(max_size=120))
@example(raw=b"")
@example(raw=b"ecs1.publish.99999999999.AAAAAAAAAAAAAAAAAAAAAAAA")
@example(raw=b"....")
def test_no_random_bytes_are_a_valid_token(raw):
    for kind in ("publish", "play"):
        assert not valid(SECRET, APP, NAME, kind, raw, NOW)


@settings(max_examples=500)
@given(expiry=st.integers(int(NOW) + 1, 10 ** MAX_EXPIRY_DIGITS - 1), mac=st.text(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", min_size=24, max_size=24))
def test_no_guessed_mac_is_valid(expiry, mac):
    """Well-formed tokens with a MAC not minted under the secret (each is one guess in 2^144)."""
    guess = f"{PREFIX}.publish.{expiry}.{mac}"
    assert guess == mint(SECRET, APP, NAME, "publish", expiry) or not valid(
        SECRET, APP, NAME, "publish", guess.encode(), NOW)
