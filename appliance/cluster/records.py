"""What the store holds about sessions and tracks, so that any box can find them: JSON, one entry per
session (key: its id) and per published track (key: `<sessionId>.<trackName>` made a store key)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from ..sfu import extensions
from ..sfu.codecs import Codec
from ..sfu.tracks import PublishedTrack
from .store import key


def path_key(addr: tuple) -> str:
    """A client address as session records carry it."""
    return f"{addr[0]} {addr[1]}"


def track_key(session_id: str, name: str) -> str:
    return key(f"{session_id}.{name}")


@dataclass(frozen=True)
class SessionRecord:
    app: str
    owner: str  # the node that holds it
    ufrag: str = ""  # its ICE ufrag's tag (seal.Sealer.tag): how a box its checks reach finds it (handover.py)
    # What rebuilds it on another box (journal.Moved), sealed with the cluster secret, base64.
    state: str | None = None
    # The tag of the client's address ("host port") on the selected path: how a box its SRTP reaches finds it.
    path: str = ""
    generation: int = 0  # the owner's journal.Moved.generation: a later holder outranks an earlier one

    def encode(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def decode(cls, data: bytes) -> SessionRecord:
        """Raises ValueError or TypeError for what is not a session record."""
        record = cls(**_object(data))
        if not all(isinstance(v, str) for v in (record.app, record.owner, record.ufrag, record.path)) or not (
                record.state is None or isinstance(record.state, str)) or type(record.generation) is not int:
            raise TypeError("a session record's fields are strings")
        return record


@dataclass(frozen=True)
class TrackRecord:
    """What a box needs to subscribe its clients to a track published elsewhere: the codecs and
    layers to offer them, and the root of the track's tree (the publisher's box)."""

    app: str
    session: str
    name: str
    kind: str
    owner: str
    codecs: list[dict] = field(default_factory=list)
    extensions: dict[str, int] = field(default_factory=dict)  # the forwarded ones, as trunks carry them
    rids: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, track: PublishedTrack, owner: str) -> TrackRecord:
        forwarded = {uri: i for uri, i in track.extensions.items() if uri in extensions.FORWARDED[track.kind]}
        return cls(track.session.app, track.session.id, track.name, track.kind, owner,
                   [asdict(codec) for codec in track.codecs], forwarded, list(track.rids))

    def codec_list(self) -> list[Codec]:
        return [Codec(**raw) for raw in self.codecs]

    def encode(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def decode(cls, data: bytes) -> TrackRecord:
        """Raises ValueError or TypeError for what is not a track record (its codecs included)."""
        record = cls(**_object(data))
        if not all(isinstance(v, str) for v in (record.app, record.session, record.name, record.kind, record.owner)):
            raise TypeError("a track record's names are strings")
        if not isinstance(record.codecs, list) or not all(isinstance(c, dict) for c in record.codecs):
            raise TypeError("a track record's codecs are objects")
        record.codec_list()
        if not isinstance(record.extensions, dict) or not all(
                isinstance(k, str) and type(v) is int for k, v in record.extensions.items()):
            raise TypeError("a track record's extensions map URIs to ids")
        if not isinstance(record.rids, list) or not all(isinstance(r, str) for r in record.rids):
            raise TypeError("a track record's rids are strings")
        return record


def _object(data: bytes) -> dict:
    raw = json.loads(data)
    if not isinstance(raw, dict):
        raise TypeError("a record is a JSON object")
    return raw
