"""The Janus API over Janus's HTTP transport (POST requests, GET long-poll for events), as much of it as
the bench uses: sessions, plugin handles, plugin messages with JSEP, and waiting for a handle's event.

Every request has a timeout and every wait a deadline. Requests open their connections from the calling
thread, so a caller in a lab namespace reaches Janus on that namespace's link.
"""
from __future__ import annotations

import json
import secrets
import time
import urllib.request
from collections import defaultdict, deque
from typing import Any

REQUEST_TIMEOUT = 10.0
LONG_POLL = 30.0  # Janus answers a long poll with a keepalive after 30 s of nothing
EVENT_TIMEOUT = 20.0


class JanusError(RuntimeError):
    """Janus or its plugin refused a request."""


class JanusApi:
    def __init__(self, url: str) -> None:
        self.url = url  # the transport's base path, e.g. http://198.51.100.2:8088/janus
        self._events: defaultdict[int, deque[dict[str, Any]]] = defaultdict(deque)

    def _request(self, path: str, body: dict[str, Any] | None, timeout: float = REQUEST_TIMEOUT) -> Any:
        data = None if body is None else json.dumps({**body, "transaction": secrets.token_hex(6)}).encode()
        request = urllib.request.Request(self.url + path, data=data, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.loads(response.read())
        if isinstance(answer, dict) and answer.get("janus") == "error":
            raise JanusError(f"Janus refused {body}: {answer['error']}")
        return answer

    def info(self) -> dict[str, Any]:
        return self._request("/info", None)

    def create_session(self) -> int:
        return self._request("", {"janus": "create"})["data"]["id"]

    def attach(self, session: int, plugin: str) -> int:
        return self._request(f"/{session}", {"janus": "attach", "plugin": plugin})["data"]["id"]

    def message(self, session: int, handle: int, body: dict[str, Any],
                jsep: dict[str, str] | None = None) -> dict[str, Any]:
        """Send a plugin message; the plugin's synchronous answer (its data), or {} when it acknowledged
        and will answer with an event (`event`)."""
        request: dict[str, Any] = {"janus": "message", "body": body}
        if jsep is not None:
            request["jsep"] = jsep
        answer = self._request(f"/{session}/{handle}", request)
        if answer["janus"] == "ack":
            return {}
        return _plugin_data(answer)

    def event(self, session: int, handle: int) -> tuple[dict[str, Any], dict[str, str] | None]:
        """The next plugin event for `handle`: (its data, its JSEP if any)."""
        event = self._next(session, handle, "event")
        return _plugin_data(event), event.get("jsep")

    def webrtcup(self, session: int, handle: int) -> None:
        """Wait until Janus says `handle`'s PeerConnection is up (ICE and DTLS done on its side too)."""
        self._next(session, handle, "webrtcup")

    def _next(self, session: int, handle: int, kind: str) -> dict[str, Any]:
        """The next event of `kind` ("janus" field) from `handle`; other events are kept for later."""
        deadline = time.monotonic() + EVENT_TIMEOUT
        while True:
            queue = self._events[handle]
            for event in queue:
                if event["janus"] == kind:
                    queue.remove(event)
                    return event
                if event["janus"] == "hangup":
                    raise JanusError(f"Janus hung up handle {handle}: {event.get('reason')}")
            if time.monotonic() > deadline:
                raise JanusError(f"no {kind!r} from Janus for handle {handle} within {EVENT_TIMEOUT} s")
            events = self._request(f"/{session}?maxev=10", None, timeout=LONG_POLL + REQUEST_TIMEOUT)
            for event in events if isinstance(events, list) else [events]:  # one keepalive is not a list
                if "sender" in event:
                    self._events[event["sender"]].append(event)

def _plugin_data(answer: dict[str, Any]) -> dict[str, Any]:
    data = answer.get("plugindata", {}).get("data", {})
    if "error" in data:
        raise JanusError(f"the plugin refused: {data['error']} ({data.get('error_code')})")
    return data
