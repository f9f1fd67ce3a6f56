"""Who is in each room, as this box sees it: the participants' records from the cluster store (one
entry per person, written by the box that holds the person's WebSocket), each timed out when it has
not been written for EXPIRY (its box refreshes it every REFRESH; a box that dies stops). Sans-I/O:
the service feeds it the store's changes and the clock."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

REFRESH = 5.0
EXPIRY = 3 * REFRESH
MAX_NAME = 64
MAX_TRACKS = 8
MAX_TRACK_NAME = 64
KINDS = ("audio", "video")
SOURCES = ("camera", "microphone", "screen", "other")


@dataclass(frozen=True)
class Published:
    trackName: str
    kind: str
    source: str = "other"
    muted: bool = False


@dataclass
class Participant:
    app: str
    room: str
    id: str
    joined: float  # wall clock: the roster's order
    name: str = ""
    sessionId: str = ""
    # The session its data channels (the chat) are published under (empty: sessionId): the client moves
    # them to a data-only session when the media session lost its SCTP association (cluster failover).
    dataSessionId: str = ""
    tracks: list[Published] = field(default_factory=list)

    def public(self) -> dict:
        """What the room's other pages see."""
        return {"id": self.id, "name": self.name, "sessionId": self.sessionId, "dataSessionId": self.dataSessionId,
                "tracks": [asdict(t) for t in self.tracks]}

    def encode(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def decode(cls, data: bytes) -> Participant:
        """Raises ValueError for what is not a participant's record."""
        raw = json.loads(data)
        if not isinstance(raw, dict):
            raise ValueError("a participant's record is an object")
        try:
            participant = cls(**{**raw, "tracks": []})
        except TypeError as e:
            raise ValueError(str(e)) from None
        if not all(isinstance(v, str) for v in (participant.app, participant.room, participant.id, participant.name,
                                                participant.sessionId, participant.dataSessionId)):
            raise ValueError("a participant's names are strings")
        if isinstance(participant.joined, bool) or not isinstance(participant.joined, (int, float)):
            raise ValueError("joined: expected a time")
        participant.update({"name": participant.name, "sessionId": participant.sessionId,
                            "dataSessionId": participant.dataSessionId, "tracks": raw.get("tracks", [])})
        return participant

    def update(self, message: dict) -> None:
        """Take what a page says of itself (its name, its sessions, the tracks it publishes); ValueError
        names what is wrong, and nothing changes then."""
        name = message.get("name", self.name)
        if not isinstance(name, str) or len(name) > MAX_NAME or not name.isprintable():
            raise ValueError(f"name: expected printable text of at most {MAX_NAME} characters")
        session = _session_id(message, "sessionId", self.sessionId)
        data_session = _session_id(message, "dataSessionId", self.dataSessionId)
        raw_tracks = message.get("tracks", [asdict(t) for t in self.tracks])
        if not isinstance(raw_tracks, list) or len(raw_tracks) > MAX_TRACKS:
            raise ValueError(f"tracks: expected a list of at most {MAX_TRACKS}")
        tracks = [_published(i, raw) for i, raw in enumerate(raw_tracks)]
        self.name, self.sessionId, self.dataSessionId, self.tracks = name, session, data_session, tracks


def _session_id(message: dict, key: str, current: str) -> str:
    session = message.get(key, current)
    if not isinstance(session, str) or len(session) > 64 or not session.isalnum() and session:
        raise ValueError(f"{key}: expected a Calls session id")
    return session


def _published(index: int, raw: object) -> Published:
    if not isinstance(raw, dict):
        raise ValueError(f"tracks[{index}]: expected an object")
    name, kind = raw.get("trackName"), raw.get("kind")
    source, muted = raw.get("source", "other"), raw.get("muted", False)
    if not isinstance(name, str) or not 0 < len(name) <= MAX_TRACK_NAME or not name.isprintable():
        raise ValueError(f"tracks[{index}].trackName: expected a track name of at most {MAX_TRACK_NAME} characters")
    if kind not in KINDS:
        raise ValueError(f"tracks[{index}].kind: expected \"audio\" or \"video\"")
    if source not in SOURCES:
        raise ValueError(f"tracks[{index}].source: expected one of {', '.join(SOURCES)}")
    if not isinstance(muted, bool):
        raise ValueError(f"tracks[{index}].muted: expected true or false")
    return Published(name, kind, source, muted)


Room = tuple[str, str]  # (app, room)


class Rosters:
    def __init__(self) -> None:
        self._rooms: dict[Room, dict[str, tuple[Participant, float]]] = {}
        self._by_key: dict[str, tuple[Room, str]] = {}

    def heard(self, key: str, participant: Participant | None, now: float) -> Room | None:
        """A change of the store's entry `key` (None: deleted); the room whose roster it changed."""
        previous = self._by_key.pop(key, None)
        if previous is not None:
            room, pid = previous
            people = self._rooms.get(room, {})
            people.pop(pid, None)
            if not people:
                self._rooms.pop(room, None)
        if participant is None:
            return None if previous is None else previous[0]
        room = (participant.app, participant.room)
        self._rooms.setdefault(room, {})[participant.id] = (participant, now)
        self._by_key[key] = (room, participant.id)
        return room

    def expire(self, now: float) -> set[Room]:
        """Forget entries not written for EXPIRY; the rooms that changed."""
        changed = set()
        for key, (room, pid) in list(self._by_key.items()):
            if now - self._rooms[room][pid][1] > EXPIRY:
                self.heard(key, None, now)
                changed.add(room)
        return changed

    def roster(self, room: Room) -> list[Participant]:
        return sorted((p for p, _ in self._rooms.get(room, {}).values()), key=lambda p: (p.joined, p.id))

    def count(self, room: Room) -> int:
        return len(self._rooms.get(room, {}))
