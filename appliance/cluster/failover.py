"""What every box keeps so that it can carry on another box's PeerConnections at once (issue 19).

Each box checkpoints its connected sessions' media (sfu/continuation.py) into the media bucket,
sealed with the cluster secret: when a session connects or anything of the checkpoint's shape
changes (a track bound, a leg added), and every EVERY seconds while it lives. Every box watches that
bucket and the sessions bucket, so when a failed box's clients' packets reach it, what rebuilds their
sessions is already in memory: the takeover (handover.py) waits for no store round trip, and the
store may well be electing new leaders after the same failure.

Memory: one sealed checkpoint per connected session of the cluster (about 1 KB with a few legs).
Store writes: one per connected session every EVERY seconds, plus one per change of shape.
"""
from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

from ..logs import get_logger
from ..rtc.ice import Address
from ..sfu import continuation
from ..sfu.sfu import Sfu
from .records import SessionRecord, path_key
from .seal import Sealer, Unsealed
from .store import MEDIA, SESSIONS, Bucket

log = get_logger("cluster")

EVERY = 2.0  # seconds between two checkpoints of a session whose shape did not change
TICK = 0.25  # how often the box looks for checkpoints due

Write = Callable[[Bucket, str, bytes | None], None]


class Checkpoints:
    def __init__(self, sfu: Sfu, sessions: dict[str, SessionRecord], sealer: Sealer, write: Write,
                 wall: Callable[[], float]) -> None:
        self.sfu = sfu
        self.sessions = sessions  # the sessions bucket, as the service's watch keeps it
        self.sealer = sealer
        self.write = write
        self.wall = wall
        self.sealed: dict[str, bytes] = {}  # the media bucket, as the watch keeps it
        self._by_path: dict[str, str] = {}  # client address -> session id
        self.written = 0

    # --- this box's sessions ----------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Checkpoint the connected sessions that are due."""
        wall = self.wall()
        for session in list(self.sfu.sessions.values()):
            if session.connected_at is None or session.closed or session.checkpoint_due > now:
                continue
            session.checkpoint_due = now + EVERY
            state = continuation.capture(self.sfu.port, session, wall)
            if state is None:
                continue
            context = f"{MEDIA.name}/{session.id}"
            self.write(MEDIA, session.id, self.sealer.seal(json.dumps(state).encode(), context))
            self.written += 1

    # --- the watches ------------------------------------------------------------------------------

    def media_record(self, session_id: str, value: bytes | None) -> None:
        if value is None:
            self.sealed.pop(session_id, None)
        else:
            self.sealed[session_id] = value

    def session_record(self, session_id: str, old: SessionRecord | None, new: SessionRecord | None) -> None:
        """Index the change of a session's record by its client's address."""
        if old is not None and old.path and self._by_path.get(old.path) == session_id:
            del self._by_path[old.path]
        if new is not None and new.path:
            self._by_path[new.path] = session_id

    # --- what a takeover reads --------------------------------------------------------------------

    def by_path(self, addr: Address) -> tuple[str, str] | None:
        """The session whose client sends from `addr`, and the box that holds it."""
        session_id = self._by_path.get(self.sealer.tag(path_key(addr), "path"))
        record = self.sessions.get(session_id) if session_id is not None else None
        return None if record is None or session_id is None else (session_id, record.owner)

    def saved(self, session_id: str) -> dict | None:
        """What rebuilds the session, opened: its journal (journal.Moved's encoding) and its latest
        media checkpoint (None before it connected); None when there is nothing, or it does not open."""
        record = self.sessions.get(session_id)
        if record is None or not record.state:
            return None
        try:
            moved = json.loads(self.sealer.open(base64.b64decode(record.state), f"{SESSIONS.name}/{session_id}"))
            sealed = self.sealed.get(session_id)
            media: Any = None
            if sealed is not None:
                media = json.loads(self.sealer.open(sealed, f"{MEDIA.name}/{session_id}"))
        except (Unsealed, ValueError) as e:
            log.warning("a session's saved state does not open", session=session_id, reason=str(e))
            return None
        return {"session": moved, "media": media}
