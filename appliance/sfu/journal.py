"""A session's journal: the Calls operations that made it what it is, in order, with their inputs.
Replayed on another box from the session's seed (its SSRCs, names and ids come from it), they
rebuild the same session, m-section for m-section: how a box of a cluster takes over a
PeerConnection whose API requests another box served (appliance.cluster.handover).

The operations that change a session are marked `@journaled` where they are defined (the Sfu's,
and its ChannelRouter's for data channels): each one that returns is noted; one that raises changed
nothing. An operation called by another (establish pushes) is not noted on its own. A journal that
grows past MAX_BYTES is dropped: such a session stays on its box.
"""
from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

if TYPE_CHECKING:
    from .session import CallSession
    from .sfu import Sfu

MAX_BYTES = 1 << 20

P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S")


@dataclass(frozen=True)
class Moved:
    """What a session is, beyond its journal: how another box makes it again."""

    id: str
    app: str
    ufrag: str
    pwd: str
    seed: int
    certificate: str | None
    journal: list
    label: str = ""
    # How many boxes held it before the one that wrote this: each takeover adds one, and of two boxes
    # that both hold a session the later holder keeps it (appliance.cluster.handover).
    generation: int = 0

    @classmethod
    def of(cls, session: CallSession) -> Moved:
        return cls(session.id, session.app, session.ufrag, session.pwd, session.seed, session.certificate,
                   list(session.journal or []), session.label, session.generation)

    def encode(self) -> dict:
        return asdict(self)

    @classmethod
    def decode(cls, raw: dict) -> Moved:
        return cls(**raw)


def journaled(name: str) -> Callable[[Callable[Concatenate[S, CallSession, P], R]],
                                      Callable[Concatenate[S, CallSession, P], R]]:
    """Note each call of the decorated operation on a session that returns, under `name`, without
    its `now` (a replay passes its own)."""
    def decorate(operation: Callable[Concatenate[S, CallSession, P], R]) -> Callable[Concatenate[S, CallSession, P], R]:
        timed = list(inspect.signature(operation).parameters)[-1] == "now"

        @functools.wraps(operation)
        def noted(self: S, session: CallSession, *args: P.args, **kwargs: P.kwargs) -> R:
            outer = not session.journaling
            session.journaling = True
            try:
                result = operation(self, session, *args, **kwargs)
            finally:
                if outer:
                    session.journaling = False
            if outer and session.journal is not None:
                _note(session, [name, list(args[:-1] if timed else args), timed])
                session.owner.session_changed(session)
            return result
        return noted
    return decorate


def _note(session: CallSession, entry: list) -> None:
    assert session.journal is not None
    session.journal.append(entry)
    if len(json.dumps(session.journal)) > MAX_BYTES:
        session.journal = None


def replay(sfu: Sfu, session: CallSession, journal: list, now: float) -> None:
    """Apply `journal` to `session` (new, made from the same seed); raises SfuError when an operation
    fails here that succeeded where it was recorded (the session is then not the same)."""
    kept, session.journal = session.journal, None  # replaying notes nothing
    try:
        for name, args, timed in journal:
            owner: Any = sfu.channels if name.startswith("channels.") else sfu
            getattr(owner, name.removeprefix("channels."))(session, *args, *([now] if timed else []))
    finally:
        session.journal = kept
    if session.journal is not None:
        session.journal.extend([list(entry) for entry in journal])
