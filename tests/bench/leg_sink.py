"""Subscriber legs drained by a forked process, so that a bench's load generator stays cheap and off the
bench's own thread: after the legs' DTLS handshakes the bench forks a `Sink` that owns their sockets,
reads every datagram (recv only, nothing decrypted), counts RTP media by its first bytes, and does what
a Chrome subscriber's transport does meanwhile: transport-cc feedback about every FEEDBACK_INTERVAL,
consent checks toward the box, answers to Janus's checks.

The sink also reads the kernel's drop count of its own sockets (a full receive buffer: the generator,
not the forwarder, lost those), from /proc/net/udp of the sockets' network namespace, which it enters
(SIOCGSKNS names it) when the legs were made in a lab namespace.
"""
from __future__ import annotations

import ctypes
import fcntl
import os
import select
import socket
import struct
import time
import traceback
from collections.abc import Sequence
from typing import Protocol

import psutil

from appliance.plumbing.udp import udp_drops
from appliance.sfu import extensions
from appliance.sfu.extensions import ONE_BYTE_PROFILE
from tests.bench.janus_peer import JanusPeer
from tests.bench.sfu_load import LoadPeer
from tests.lab.netns import CLONE_NEWNET

FEEDBACK_INTERVAL = 0.05  # as the load peers' (sfu_load.py, janus_peer.py): how often libwebrtc's receivers report
KEEPALIVE_INTERVAL = 10.0  # consent checks toward the box, which drops a path 30 s after the last one
SWEEP_INTERVAL = 0.025  # between reads of all sockets: a leg queues about 4 packets (its 1 MB buffer, hundreds)
LIFETIME = 3600.0  # a sink left behind by a parent that never stops it ends after this long
REPLY_TIMEOUT = 10.0
SIOCGSKNS = 0x894C  # <linux/sockios.h>: a socket's network namespace, as a file descriptor
RECEIVE_SIZE = 2048
_COUNTS = struct.Struct("<QQ")


class Leg(Protocol):
    """A subscriber's PeerConnection as a sink drains it."""

    sock: socket.socket

    def drain_rtp(self) -> int:
        """Read what arrived; how many RTP media packets."""

    def keepalive(self) -> None: ...


class BoxLeg:
    """A load peer of the box (sfu_load.py) in Chrome mode: its own drain counts RTCP and STUN too, so the
    reading is done here, noting transport-wide numbers as the peer's does. Media is RTP under one of
    `media_pts` (the box's numbers in its offer); RTX (resends, padding) is not."""

    def __init__(self, peer: LoadPeer, media_pts: frozenset[int]) -> None:
        self.peer, self.sock, self.media_pts = peer, peer.sock, media_pts
        self._feedback_at = 0.0
        self._media_ssrc = 0

    def drain_rtp(self) -> int:
        receiver, recv, media_pts = self.peer.transport_in, self.sock.recv, self.media_pts
        element = -1 if receiver is None else receiver.ext_id << 4 | 1  # a two-byte element's header
        now = time.monotonic()  # one time per read-out: the packets queued since the last one arrived in between
        count = 0
        media_ssrc = b""
        while True:
            try:
                data = recv(RECEIVE_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            if not 127 < data[0] < 192 or 191 < data[1] < 224:  # STUN answers, DTLS, RTCP
                continue
            if data[1] & 0x7F in media_pts:
                count += 1
            if receiver is not None:  # every numbered packet is acknowledged, or the box resends it
                # The box writes the number first; anything else is looked for.
                if data[0] == 0x90 and data[12:14] == ONE_BYTE_PROFILE and data[16] == element:
                    receiver.arrived(data[17] << 8 | data[18], now)
                else:
                    number = extensions.find(data, receiver.ext_id)
                    if number is None or len(number) != 2:
                        continue
                    receiver.arrived(number[0] << 8 | number[1], now)
                media_ssrc = data[8:12]
        if media_ssrc:
            self._media_ssrc = int.from_bytes(media_ssrc, "big")
        if receiver is not None and now - self._feedback_at >= FEEDBACK_INTERVAL:
            self._feedback_at = now
            packet = receiver.report(self.peer.rtcp_ssrc, self._media_ssrc)
            dtls = self.peer.dtls
            if packet is not None and dtls is not None and dtls.srtp_tx is not None:
                try:
                    self.sock.send(dtls.srtp_tx.protect_rtcp(packet))
                except BlockingIOError:
                    pass
        return count

    def keepalive(self) -> None:
        self.peer.keepalive()


class JanusLeg:
    """A load peer of Janus (janus_peer.py): its drain already counts RTP only (Janus resends only what is
    NACKed, and these peers send no NACK), answers Janus's checks and sends feedback."""

    def __init__(self, peer: JanusPeer) -> None:
        self.peer, self.sock = peer, peer.sock

    def drain_rtp(self) -> int:
        return self.peer.drain()

    def keepalive(self) -> None:
        pass


class Sink:
    """A forked process draining `legs` until `stop()`: their RTP media count and their sockets' drops
    on demand. The bench must not read the legs' sockets itself once the sink runs."""

    def __init__(self, legs: Sequence[Leg]) -> None:
        commands_r, self._commands = os.pipe()
        self._replies, replies_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the sink: never returns into the bench (whose cleanup is the bench's)
            code = 1
            try:
                os.close(self._commands)
                os.close(self._replies)
                _serve(legs, commands_r, replies_w)
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        os.close(commands_r)
        os.close(replies_w)
        self._process = psutil.Process(self.pid)

    def counts(self) -> tuple[int, int]:
        """(RTP media packets received, datagrams the kernel dropped at the legs' sockets), both since
        the sink started, after one more read of every socket."""
        os.write(self._commands, b"c")
        if not _readable(self._replies, REPLY_TIMEOUT):
            raise RuntimeError(f"the sink {self.pid} did not answer within {REPLY_TIMEOUT} s")
        reply = os.read(self._replies, _COUNTS.size)
        if len(reply) != _COUNTS.size:
            raise RuntimeError(f"the sink {self.pid} exited")
        received, dropped = _COUNTS.unpack(reply)
        return received, dropped

    def cpu(self) -> float:
        times = self._process.cpu_times()
        return times.user + times.system

    def stop(self) -> None:
        """End the sink (asked, then killed) and reap it."""
        try:
            os.write(self._commands, b"q")
        except BrokenPipeError:
            pass
        try:
            self._process.wait(REPLY_TIMEOUT)
        except psutil.TimeoutExpired:
            self._process.kill()
        finally:
            try:
                os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass
            os.close(self._commands)
            os.close(self._replies)


def _serve(legs: Sequence[Leg], commands: int, replies: int) -> None:
    """The sink's loop: read every socket each SWEEP_INTERVAL, answer the bench's commands."""
    if legs:
        _enter_namespace_of(legs[0].sock)
    inodes = {os.fstat(leg.sock.fileno()).st_ino for leg in legs}
    received = 0
    keepalive_at = 0.0
    deadline = time.monotonic() + LIFETIME
    while time.monotonic() < deadline:
        received += sum(leg.drain_rtp() for leg in legs)
        now = time.monotonic()
        if now >= keepalive_at:
            keepalive_at = now + KEEPALIVE_INTERVAL
            for leg in legs:
                leg.keepalive()
        if not _readable(commands, SWEEP_INTERVAL):
            continue
        command = os.read(commands, 1)
        if command != b"c":  # b"q", or the bench went away
            return
        received += sum(leg.drain_rtp() for leg in legs)
        os.write(replies, _COUNTS.pack(received, udp_drops(inodes)))


def _readable(fd: int, timeout: float) -> bool:
    """Whether `fd` has something to read within `timeout` seconds: poll, as select() refuses the
    descriptors past 1023 that a thousand legs' sockets push pipes to."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(timeout * 1000))


def _enter_namespace_of(sock: socket.socket) -> None:
    """Move this (single-threaded) process into `sock`'s network namespace, if it is not there already,
    so that /proc/self/net shows the socket."""
    namespace = fcntl.ioctl(sock.fileno(), SIOCGSKNS)
    try:
        if os.fstat(namespace).st_ino == os.stat("/proc/self/ns/net").st_ino:
            return
        if ctypes.CDLL(None, use_errno=True).setns(namespace, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns into a leg's namespace")
    finally:
        os.close(namespace)
