"""Plumbing that several capabilities share (TURN, the media port, the API): deadline heaps, UDP
sockets, bounded stream sinks, token buckets. It imports no capability, so any of them may import it."""
