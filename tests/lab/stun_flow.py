"""A STUN flow for the lab: Binding requests at a fixed pace from one socket, each answered or lost.

Run inside a lab host: `python -m tests.lab.stun_flow HOST PORT --count N --every S`. It prints one
JSON object: for each request, when it was sent (seconds since the start, wall clock) and whether
its answer came. One socket and one source port throughout, so the router hashes every request
of the flow the same way.
"""
from __future__ import annotations

import argparse
import json
import socket
import time

from appliance.stun import Class, Message, Method, StunError


def flow(host: str, port: int, count: int, every: float, timeout: float) -> dict:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    pending: dict[bytes, int] = {}
    sent_at: list[float] = []
    answered: list[bool] = []
    start = time.time()
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.connect((host, port))
        sock.settimeout(0.005)
        next_send = time.monotonic()
        last_send = None
        while True:
            now = time.monotonic()
            if len(sent_at) < count and now >= next_send:
                request = Message(Method.BINDING, Class.REQUEST)
                pending[request.transaction_id] = len(sent_at)
                sent_at.append(round(time.time() - start, 4))
                answered.append(False)
                try:
                    sock.send(request.encode())
                except ConnectionRefusedError:
                    pass  # an ICMP error from an earlier request; this one still went out
                next_send += every
                last_send = now
            if len(sent_at) == count and (not pending or now > last_send + timeout):
                break
            try:
                data = sock.recv(2048)
            except (TimeoutError, ConnectionRefusedError):
                continue
            try:
                response = Message.parse(data)
            except StunError:
                continue
            index = pending.pop(response.transaction_id, None)
            if index is not None and response.message_class == Class.SUCCESS:
                answered[index] = True
    return {"start": start, "sent_at": sent_at, "answered": answered}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--every", type=float, default=0.02)
    parser.add_argument("--timeout", type=float, default=1.0)
    args = parser.parse_args()
    print(json.dumps(flow(args.host, args.port, args.count, args.every, args.timeout)), flush=True)


if __name__ == "__main__":
    main()
