"""The mark a box puts on a request it forwards to the session's owner (appliance/api/forwarding.py):
honoured only with a MAC under the cluster secret, for that request, recently made."""
import time

from aiohttp.test_utils import make_mocked_request

from appliance.api.forwarding import HEADER, MARK_LIFETIME, Forwarder

PATH = "/v1/apps/demo/sessions/abc/tracks/new"


def marked(forwarder: Forwarder, method: str = "POST", path: str = PATH, at: float | None = None) -> str:
    at = int(time.time() if at is None else at)
    return f"{forwarder.node} {at} {forwarder._mac(method, path, forwarder.node, at)}"


def test_only_a_box_with_the_secret_marks_a_request_as_forwarded():
    a, b = Forwarder("a", "the cluster secret!"), Forwarder("b", "the cluster secret!")
    stranger = Forwarder("a", "another cluster's secret")
    assert b.forwarded(make_mocked_request("POST", PATH, headers={HEADER: marked(a)}))
    assert not b.forwarded(make_mocked_request("POST", PATH, headers={HEADER: marked(stranger)}))
    assert not b.forwarded(make_mocked_request("POST", PATH))
    assert not b.forwarded(make_mocked_request("POST", PATH, headers={HEADER: "a 1 0"}))
    # The mark is for one request: another path or method, or an old mark, is not honoured.
    assert not b.forwarded(make_mocked_request("PUT", PATH, headers={HEADER: marked(a)}))
    assert not b.forwarded(make_mocked_request("POST", PATH + "x", headers={HEADER: marked(a)}))
    old = marked(a, at=time.time() - MARK_LIFETIME - 5)
    assert not b.forwarded(make_mocked_request("POST", PATH, headers={HEADER: old}))


def test_a_forwarded_request_goes_on_only_to_a_box_it_has_not_been_through_and_not_far():
    a, b = Forwarder("a", "the cluster secret!"), Forwarder("b", "the cluster secret!")
    first = make_mocked_request("GET", PATH, headers={HEADER: marked(a, "GET")})
    assert b.via(first) == ["a"]
    assert b.may_forward(first, "c") and not b.may_forward(first, "a") and not b.may_forward(first, "b")
    at = int(time.time())
    long = make_mocked_request("GET", PATH, headers={HEADER: f"a,c,d {at} {b._mac('GET', PATH, 'a,c,d', at)}"})
    assert b.via(long) == ["a", "c", "d"] and not b.may_forward(long, "e")
    assert b.may_forward(make_mocked_request("GET", PATH), "a")  # a client's own request
