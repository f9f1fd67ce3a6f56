"""The retransmission cache of one received stream: the last packets by sequence number, so the
box answers a subscriber's NACK itself instead of asking the publisher (issue 5's "NACK shield").

A ring indexed by the sequence number's low bits: one store per packet, one lookup per NACKed
packet, memory bounded by the slot count. Entries also expire by age, so the cache holds about
`max_age` seconds of media whatever the stream's packet rate (up to the slot count).
"""
from __future__ import annotations

# Slots and age per kind: about 1 s of audio (50 packets/s) and 2 s of video (the slots hold
# 2 s up to ~500 packets/s, about 5 Mbit/s of full-size packets).
AUDIO = (64, 1.0)
VIDEO = (1024, 2.0)


class RetransmissionCache:
    __slots__ = ("mask", "max_age", "seqs", "packets", "times")

    def __init__(self, slots: int, max_age: float) -> None:
        if slots & (slots - 1):
            raise ValueError("slots must be a power of two")
        self.mask = slots - 1
        self.max_age = max_age
        self.seqs = [-1] * slots
        self.packets: list[bytes | None] = [None] * slots
        self.times = [0.0] * slots

    @classmethod
    def for_kind(cls, kind: str) -> RetransmissionCache:
        return cls(*(VIDEO if kind == "video" else AUDIO))

    def put(self, seq: int, packet: bytes, now: float) -> None:
        # Also done by the compiled receive path (_fanout.c): a change here is one there.
        i = seq & self.mask
        self.seqs[i] = seq
        self.packets[i] = packet
        self.times[i] = now

    def get(self, seq: int, now: float) -> bytes | None:
        i = seq & self.mask
        if self.seqs[i] != seq or now - self.times[i] > self.max_age:
            return None
        return self.packets[i]
