"""Packets missing from a received stream, and the NACKs (RFC 4585 6.2.1) the box sends its
publisher for them: each lost packet is asked for once, and again only after a round trip
without an answer, whatever the number of subscribers that miss it (they are answered from the
retransmission cache when it arrives). Sans-I/O: the caller passes the time and sends the NACKs.
"""
from __future__ import annotations

# What `received` says of a packet.
NEW, RECOVERED, DUPLICATE, JUMP = 0, 1, 2, 3

MAX_GAP = 256  # a jump this large is not NACKed packet by packet: a keyframe costs less (JUMP)
MAX_MISSING = 512  # bound on what is tracked at once; beyond it the oldest are given up
MAX_TRIES = 3  # NACKs per lost packet (a retransmission can be lost too)
MAX_AGE = 1.0  # seconds after which a packet still missing is given up
MIN_INTERVAL = 0.02  # seconds between two rounds of retries
INITIAL_RTT = 0.1  # until the first unambiguous retransmission measures it (Karn's rule)


class LossTracker:
    __slots__ = ("highest", "missing", "rtt", "next_round", "fresh", "nacked", "recovered", "given_up")

    def __init__(self) -> None:
        self.highest = -1
        # seq -> [when it went missing, when last NACKed, NACKs sent]
        self.missing: dict[int, list] = {}
        self.rtt = INITIAL_RTT
        self.next_round = 0.0
        self.fresh = False  # new gaps since the last `nacks`: NACK them at once
        self.nacked = self.recovered = self.given_up = 0

    def received(self, seq: int, now: float) -> int:
        # The compiled receive path (_fanout.c) takes the next seq (NEW) itself: a change here is one
        # there (tests/unit/sfu/test_receive_compiled.py compares them).
        highest = self.highest
        diff = (seq - highest) & 0xFFFF
        if diff == 1 or highest < 0:
            self.highest = seq
            return NEW
        if diff == 0:
            return DUPLICATE
        if diff < 0x8000:
            self.highest = seq
            if diff > MAX_GAP:
                self.given_up += len(self.missing) + diff - 1
                self.missing.clear()
                return JUMP
            missing = self.missing
            for lost in range(highest + 1, highest + diff):
                missing[lost & 0xFFFF] = [now, None, 0]
            self.fresh = True
            if len(missing) > MAX_MISSING:
                for old in list(missing)[:len(missing) - MAX_MISSING]:
                    del missing[old]
                    self.given_up += 1
            return NEW
        entry = self.missing.pop(seq, None)
        if entry is None:
            return DUPLICATE  # a copy, or older than anything still tracked
        self.recovered += 1
        if entry[2] == 1:  # one NACK: the wait is a round trip (plus the publisher's turnaround)
            self.rtt += (now - entry[1] - self.rtt) / 8
        return RECOVERED

    def nacks(self, now: float) -> tuple[list[int], int]:
        """(sequence numbers to NACK now, how many were given up since the last call). New gaps
        go at once; retries after 1.5 round trips, checked at most every MIN_INTERVAL."""
        if not self.missing or (not self.fresh and now < self.next_round):
            return [], 0
        self.fresh = False
        self.next_round = now + MIN_INTERVAL
        retry_after = max(1.5 * self.rtt, MIN_INTERVAL)
        due: list[int] = []
        gone = 0
        for seq, entry in list(self.missing.items()):
            last = entry[1]
            if last is None:
                entry[1], entry[2] = now, 1
                due.append(seq)
            elif now - last >= retry_after:
                if entry[2] >= MAX_TRIES or now - entry[0] > MAX_AGE:
                    del self.missing[seq]
                    gone += 1
                else:
                    entry[1] = now
                    entry[2] += 1
                    due.append(seq)
        self.nacked += len(due)
        self.given_up += gone
        return due, gone
