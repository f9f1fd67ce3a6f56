"""The cluster as the runner hosts it (service "cluster"), its only asyncio part: the store (in the
process for a single box, NATS when `[cluster] nats` is set), this box's heartbeat, the watches that
keep membership and the tracks directory fresh, the trunk socket, and requests between boxes.

Writes to the store go through one queue, in order, so a track's record is never deleted before it
was written; the API waits for the queue (`settled`) before it answers, so what it announces (a
session, a track) can be found on every box once the client hears of it.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from ..logs import get_logger
from ..rtc.dtls import DtlsContext
from ..plumbing.listeners import udp_listener
from ..plumbing.udp import READ_BATCH, RECV_SIZE
from ..service import StartError
from . import certificate
from .memory import MemoryStore
from .metrics import ClusterCollector
from .nodes import Membership, NodeRecord
from .records import SessionRecord, TrackRecord, track_key
from .seal import Sealer, Unsealed
from .streams import StreamDirectory
from .store import MEDIA, NODES, SECRETS, SESSIONS, TRACKS, Bucket, Store, StoreUnavailable, key
from .trunk_port import TrunkPort
from .channels import TrunkChannels
from .failover import TICK, Checkpoints
from .handover import ASK_TIMEOUT, Failover, Handover
from .trunks import Trunks

log = get_logger("cluster")
T = TypeVar("T")

TRUNK_PORT = 3480
TRUNK_BUFFER = 4 << 20
REQUEST_TIMEOUT = 1.0
# Heartbeats go out on NATS core (every box hears them at once, whatever the buckets do: a bucket
# whose leader died elects another for seconds, and a box must not seem gone meanwhile); the nodes
# bucket keeps the records for boxes that start later.
HEARTBEATS = "edgecall.nodes"
FAILOVER = "edgecall.failover"  # a box taken for gone, a session carried on (handover.Failover), sealed
WRITE_RETRIES = 5
RENEW_CHECK = 3600.0  # how often a box looks whether the cluster's certificate is due for renewal
GIVEN_FOR = 10.0
ARRIVE_WAIT = 1.0  # how long a request sent here for a session being taken over waits for it
# A box's first store operations are retried this long: on a cluster starting together, buckets
# have no leader for a few seconds.
START_PATIENCE = 30.0


class ClusterService:
    name = "cluster"

    def __init__(self, box, store: Store | None = None) -> None:
        self.box = box
        config = box.config
        self.config = config.cluster
        self.me = config.node.id
        # A single box seals with a secret of its own: nothing outside the process reads its store.
        self.secret = self.config.secret or secrets.token_hex(32)
        self.sealer = Sealer(self.secret, "requests")
        self.store_sealer = Sealer(self.secret, "store")
        self._given_store = store
        self.store: Store | None = None
        self.membership = Membership(self.me, self.config.heartbeat)
        self.streams = StreamDirectory(lambda: self.store)
        self.sessions: dict[str, SessionRecord] = {}
        self._by_ufrag: dict[str, str] = {}  # the sessions bucket indexed by ICE ufrag
        # Sessions this box handed over: to whom, until when that outranks the watched bucket (its
        # own earlier writes of them may still come back through the watch).
        self._given: dict[str, tuple[str, float]] = {}
        sfu_service = box.service("sfu")
        self.sfu = getattr(sfu_service, "sfu", None)
        self.port = TrunkPort(self.me, secrets.token_hex(8), self.secret)
        # Trunks carry tracks between SFUs: a box without one (TURN only) has none.
        self.trunks: Trunks | None = None
        self.handover: Handover | None = None
        self.checkpoints: Checkpoints | None = None
        self.channels: TrunkChannels | None = None
        if self.sfu is not None:
            self.trunks = Trunks(self.me, self.port, self.sfu, self.membership, self.config.trunk_fanout,
                                 self._ask, self.write, self.store_sealer)
            self.port.handler = self.trunks
            self.sfu.remote = self.trunks
            self.checkpoints = checkpoints = Checkpoints(self.sfu, self.sessions, self.store_sealer, self.write,
                                                         time.time)
            failover = Failover(self._tell, self._owned_by, lambda: list(self.membership.nodes),
                                self.sfu.port.udp_listener)
            handover = Handover(self.me, self.sfu, self.trunks, self._session_by_ufrag, checkpoints.by_path,
                                self._ask, self.sfu.port.datagram_received, self.membership.alive, checkpoints.saved,
                                failover)
            self.sfu.port.ice.on_unknown = handover.stranger
            self.sfu.port.on_stray = handover.stray
            self.handover = handover
            channels = TrunkChannels(self.me, self.sfu.channels, self.trunks, self.port, self.sfu.sessions)
            self.trunks.channels = self.sfu.channels.remote = self.channels = channels
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sock: socket.socket | None = None
        self._tasks: list[asyncio.Task] = []
        self._writes: asyncio.Queue[tuple[Bucket, str, bytes | None]] = asyncio.Queue()
        self._pending_writes = 0
        self._settled = asyncio.Event()
        self._settled.set()
        self.trunk_address: tuple[str, int] | None = None
        self.failures = 0  # store operations that failed after their retries
        box.registry.register(ClusterCollector(self))

    # --- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.store = self._given_store or await self._connect()
        await self.store.serve(f"edgecall.{self.me}.trunk", self._answer)
        await self.store.listen(HEARTBEATS, self._heard)
        await self.store.listen(FAILOVER, self._failover_word)
        jobs = [self._beat, self._watch_nodes, self._watch_sessions, self._writer]
        if self.sfu is not None:
            await self._certificates()
            await self._open_trunks()
            jobs += [self._watch_tracks, self._watch_certificates]
            if self.config.nats:  # a lone box has no other box to carry its sessions on
                jobs += [self._watch_media, self._checkpoint]
        await self._patiently("the first heartbeat", self._heartbeat)
        self._tasks = [asyncio.create_task(job()) for job in jobs]

    async def _certificates(self) -> None:
        """Present the cluster's DTLS certificate (made here if this is the first box)."""
        store = self.store
        assert store is not None
        try:
            self._use(await self._patiently("the cluster's DTLS certificate",
                                            lambda: certificate.shared(store, self.store_sealer)))
        except StoreUnavailable as e:
            await self._close_store()
            raise StartError(f"cannot read the cluster's DTLS certificate from the store: {e}") from None
        except (Unsealed, ValueError) as e:
            await self._close_store()
            raise StartError(f"the cluster's DTLS certificate in the store does not open with this box's "
                             f"[cluster] secret (do the boxes' secrets differ?): {e}") from None

    async def _patiently(self, what: str, operation: Callable[[], Awaitable[T]]) -> T:
        """`operation()`, again while the store is unavailable, for up to START_PATIENCE seconds."""
        assert self._loop is not None
        deadline = self._loop.time() + START_PATIENCE
        while True:
            try:
                return await operation()
            except StoreUnavailable as e:
                if self._loop.time() >= deadline:
                    raise
                log.warning("the store is not ready; trying again", what=what, reason=str(e))
                await asyncio.sleep(1.0)

    def _use(self, certificates: certificate.Certificates) -> None:
        if self.sfu is not None:
            current, *others = [DtlsContext(c) for c in certificates.all()]
            self.sfu.port.use_certificates(current, others)

    async def _watch_certificates(self) -> None:
        def apply(entry_key: str, value: bytes | None) -> None:
            if entry_key == certificate.KEY and value is not None:
                self._use(certificate.unseal(value, self.store_sealer))
        await self.watch(SECRETS, apply)

    async def _close_store(self) -> None:
        if self.store is not None and self._given_store is None:
            await self.store.close()

    async def _open_trunks(self) -> None:
        assert self.store is not None and self._loop is not None
        trunk = self._trunk_endpoint()
        try:
            self._sock = udp_listener(*trunk)
        except OSError as e:
            await self._close_store()
            raise StartError(f"cannot listen for trunks on {trunk[0]}:{trunk[1]} (cluster.trunk): "
                             f"{e.strerror or e}") from None
        # A large data channel message leaves as a burst of pieces, and every track of the box
        # shares the socket: room for bursts both ways (the kernel caps it at its r/wmem_max).
        for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            self._sock.setsockopt(socket.SOL_SOCKET, option, TRUNK_BUFFER)
        self.trunk_address = self._sock.getsockname()[:2]
        self.port.sink = self._sock
        self._loop.add_reader(self._sock.fileno(), self._on_readable)

    async def _connect(self) -> Store:
        if not self.config.nats:
            return MemoryStore()
        from .nats_server import client_token
        from .nats_store import NatsStore
        try:
            # The boxes' own servers (nats.conf) admit only clients with the token derived from the secret.
            token = client_token(self.config.secret) if self.config.secret else None
            return await NatsStore.connect(list(self.config.nats), self.me, credentials=self.config.nats_credentials,
                                           ca=self.config.nats_ca, token=token)
        except StoreUnavailable as e:
            raise StartError(f"cannot reach the cluster store (cluster.nats): {e}") from None

    def _trunk_endpoint(self) -> tuple[str, int]:
        if self.config.trunk is not None:
            return str(self.config.trunk.host), self.config.trunk.port
        backbone = self.box.config.backbone
        if backbone is not None:
            return str(backbone.overlay.ip), TRUNK_PORT
        # A box with no backbone has no other box to trunk with but those of a test on loopback.
        return "127.0.0.1", 0

    def api_address(self) -> str:
        """Where other boxes send this box's forwarded API requests."""
        if self.config.api is not None:
            return str(self.config.api)
        listen = self.box.config.api.listen
        backbone = self.box.config.backbone
        if backbone is not None:
            host = backbone.overlay.ip
            return f"[{host}]:{listen.port}" if host.version == 6 else f"{host}:{listen.port}"
        return str(listen)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self.store is not None:
            with contextlib.suppress(StoreUnavailable):
                await asyncio.wait_for(self.store.delete(NODES, key(self.me)), REQUEST_TIMEOUT)
            if self._given_store is None:
                await self.store.close()
        if self._sock is not None and self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None

    def health(self) -> str | None:
        # A store out of reach is reported (status, /healthz details, metrics) but does not fail
        # the box: sessions, tracks and trunks it has go on, and a lone box still serves.
        return "not started" if self.store is None else None

    def describe(self) -> dict:
        """For `appliance status` and /healthz: the store, the boxes, the trunks, the takeovers."""
        store = self.store
        out: dict = {
            "store": "NATS " + ", ".join(self.config.nats) if self.config.nats else "in the process (single box)",
            "store_connected": bool(store is not None and store.connected),
            "store_writes_lost": self.failures,
            "nodes": sorted(self.membership.nodes),
        }
        if self.trunks is not None:
            out["trunks"] = self.trunks.describe()
            out["trunk_peers"] = {peer.node: {"packets_in": peer.counters.packets_in,
                                              "packets_out": peer.counters.packets_out,
                                              "errors": peer.counters.errors}
                                  for peer in self.port.peers.values()}
        if self.handover is not None:
            out["handover"] = dataclasses.asdict(self.handover.counters)
        return out

    def urls(self) -> list[str]:
        where = "NATS " + ", ".join(self.config.nats) if self.config.nats else "single box (store in the process)"
        trunk = f"{self.trunk_address[0]}:{self.trunk_address[1]}" if self.trunk_address else "none"
        return [f"Cluster    {where}; trunks udp {trunk}"]

    # --- heartbeat and watches ----------------------------------------------------------------------

    def _record(self) -> NodeRecord:
        sessions = len(self.sfu.sessions) if self.sfu is not None else 0
        return NodeRecord(self.me, self.api_address(), self.trunk_address or ("", 0), self.port.epoch, sessions,
                          self.box.drain.active)

    async def _heartbeat(self) -> None:
        assert self.store is not None
        await self.store.put(NODES, key(self.me), self._record().encode())

    def _heard(self, data: bytes) -> None:
        """Another box's heartbeat (or this box's own)."""
        if self._loop is None:
            return
        try:
            node = json.loads(data)["id"]
        except (ValueError, KeyError, TypeError):
            log.warning("unreadable heartbeat")
            return
        if isinstance(node, str):
            self.membership.heard(node, data, self._loop.time())

    async def _beat(self) -> None:
        assert self._loop is not None and self.store is not None
        renew_at = self._loop.time() + RENEW_CHECK
        written: asyncio.Task[None] | None = None
        while True:
            await asyncio.sleep(self.config.heartbeat)
            try:
                await self.store.publish(HEARTBEATS, self._record().encode())
            except StoreUnavailable as e:
                log.warning("heartbeat not sent", reason=str(e))
            if written is None or written.done():  # the bucket's copy: not waited for by the next beat
                written = self._spawn(self._write_heartbeat())
            if self.sfu is not None and self._loop.time() >= renew_at:
                renew_at = self._loop.time() + RENEW_CHECK
                try:
                    self._use(await certificate.shared(self.store, self.store_sealer))
                except StoreUnavailable as e:
                    log.warning("the cluster's certificate not checked for renewal", reason=str(e))
            now = self._loop.time()
            self._given = {session: given for session, given in self._given.items() if given[1] > now}
            for node in self.membership.expire(now):
                if self.trunks is not None:
                    self.trunks.node_gone(node, now)
                if self.handover is not None:
                    self.handover.box_lost(node, now)

    def _tell(self, word: dict) -> None:
        if self.store is not None:
            store = self.store
            sealed = self.sealer.seal(json.dumps(word).encode(), FAILOVER)
            self._spawn(self._publish(store, sealed))

    async def _publish(self, store: Store, data: bytes) -> None:
        try:
            await store.publish(FAILOVER, data)
        except StoreUnavailable as e:
            log.warning("failover word not sent", reason=str(e))

    def _failover_word(self, data: bytes) -> None:
        if self.handover is None or self._loop is None:
            return
        try:
            word = json.loads(self.sealer.open(data, FAILOVER))
        except (Unsealed, ValueError):
            log.warning("a failover word not sealed with this cluster's secret")
            return
        now = self._loop.time()
        if isinstance(word.get("lost"), str):
            self.handover.box_lost(word["lost"], now)
        elif isinstance(word.get("carried"), str) and isinstance(word.get("by"), str) and type(
                word.get("generation")) is int:
            self.handover.carried(word["carried"], word["by"], word["generation"], now)

    def _owned_by(self, node: str) -> list[str]:
        return [session_id for session_id, record in self.sessions.items() if record.owner == node]

    async def _write_heartbeat(self) -> None:
        try:
            await self._heartbeat()
        except StoreUnavailable as e:
            log.warning("heartbeat not written", reason=str(e))

    async def watch(self, bucket: Bucket, apply: Callable[[str, bytes | None], None]) -> None:
        """Apply every change of `bucket`, watching again after the store drops the watch."""
        assert self.store is not None
        while True:
            try:
                async for entry in self.store.watch(bucket):
                    if entry is not None:
                        try:
                            apply(entry.key, entry.value)
                        except Exception:
                            log.exception("applying a store change failed", bucket=bucket.name, key=entry.key)
            except StoreUnavailable as e:
                log.warning("watch lost; watching again", bucket=bucket.name, reason=str(e))
            await asyncio.sleep(1.0)

    async def _watch_nodes(self) -> None:
        def apply(node: str, value: bytes | None) -> None:
            assert self._loop is not None
            now = self._loop.time()
            record = self.membership.heard(node, value, now)
            if record is None and self.trunks is not None:
                self.trunks.node_gone(node, now)
                if self.handover is not None:
                    self.handover.box_lost(node, now)
        await self.watch(NODES, apply)

    async def _watch_tracks(self) -> None:
        trunks, loop = self.trunks, self._loop
        if trunks is not None and loop is not None:
            await self.watch(TRACKS, lambda track_id, value: trunks.track_record(track_id, value, loop.time()))

    async def _watch_sessions(self) -> None:
        def apply(session_id: str, value: bytes | None) -> None:
            old = self.sessions.pop(session_id, None)
            if old is not None and self._by_ufrag.get(old.ufrag) == session_id:
                del self._by_ufrag[old.ufrag]
            record = None
            if value is not None:
                try:
                    record = self.sessions[session_id] = SessionRecord.decode(value)
                except (ValueError, TypeError) as e:
                    log.warning("unreadable session record", key=session_id, reason=str(e))
            if self.checkpoints is not None:
                self.checkpoints.session_record(session_id, old, record)
            if record is None:
                return
            if record.ufrag:
                self._by_ufrag[record.ufrag] = session_id
            self._outranked(session_id, record)
        await self.watch(SESSIONS, apply)

    def _outranked(self, session_id: str, record: SessionRecord) -> None:
        """Another box took a session this box holds, later than this box did: let it go."""
        session = self.sfu.sessions.get(session_id) if self.sfu is not None else None
        if session is None or self.handover is None or self._loop is None or record.owner == self.me:
            return
        if (record.generation, record.owner) > (session.generation, self.me):
            self.handover.lost(session_id, record.owner, self._loop.time())

    async def _watch_media(self) -> None:
        if self.checkpoints is not None:
            await self.watch(MEDIA, self.checkpoints.media_record)

    async def _checkpoint(self) -> None:
        assert self._loop is not None
        while True:
            await asyncio.sleep(TICK)
            if self.checkpoints is not None:
                try:
                    self.checkpoints.tick(self._loop.time())
                except Exception:  # one failed round must not end checkpoints for the box's lifetime
                    log.exception("checkpointing sessions failed")

    # --- writes, in order -------------------------------------------------------------------------

    def write(self, bucket: Bucket, entry_key: str, value: bytes | None) -> None:
        self._pending_writes += 1
        self._settled.clear()
        self._writes.put_nowait((bucket, entry_key, value))

    async def _writer(self) -> None:
        assert self.store is not None
        while True:
            bucket, entry_key, value = await self._writes.get()
            for attempt in range(WRITE_RETRIES):
                try:
                    if value is None:
                        await self.store.delete(bucket, entry_key)
                    else:
                        await self.store.put(bucket, entry_key, value)
                    break
                except StoreUnavailable as e:
                    if attempt == WRITE_RETRIES - 1:
                        self.failures += 1
                        log.error("store write lost", bucket=bucket.name, key=entry_key, reason=str(e))
                    else:
                        await asyncio.sleep(0.2 * 2 ** attempt)
            self._pending_writes -= 1
            if not self._pending_writes:
                self._settled.set()

    async def settled(self, timeout: float = REQUEST_TIMEOUT) -> None:
        """Wait until what the box wrote so far is in the store (bounded: the API answers anyway)."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._settled.wait(), timeout)

    def _session_by_ufrag(self, ufrag: str) -> tuple[str, str] | None:
        session_id = self._by_ufrag.get(self.store_sealer.tag(ufrag, "ufrag"))
        record = self.sessions.get(session_id) if session_id is not None else None
        return None if record is None or session_id is None else (session_id, record.owner)

    # --- what the API asks --------------------------------------------------------------------------

    async def owner_of(self, session_id: str) -> NodeRecord | None:
        """The other box that holds `session_id`, when one of the cluster's live boxes does."""
        given = self._given.get(session_id)
        if given is not None and self._loop is not None:
            if self._loop.time() < given[1]:
                return self.membership.get(given[0])
            del self._given[session_id]
        record = self.sessions.get(session_id)
        if record is None and self.store is not None:
            with contextlib.suppress(StoreUnavailable, ValueError, TypeError):  # unreadable: as if absent
                entry = await self.store.get(SESSIONS, key(session_id))
                if entry is not None and entry.value is not None:
                    record = SessionRecord.decode(entry.value)
        if record is None or record.owner == self.me:
            return None
        return self.membership.get(record.owner)

    async def session_live(self, session_id: str) -> bool:
        """Whether a live box of the cluster (this one included) holds the session."""
        if self.sfu is not None and session_id in self.sfu.sessions:
            return True
        return await self.owner_of(session_id) is not None

    async def arriving(self, session_id: str) -> None:
        """Wait (bounded) for a session this box is taking over to be here."""
        if self.handover is None or self.sfu is None:
            return
        for _ in range(int(ARRIVE_WAIT / 0.01)):
            if session_id not in self.handover.taking or session_id in self.sfu.sessions:
                return
            await asyncio.sleep(0.01)

    async def find_tracks(self, items: list) -> None:
        """Make sure the tracks a request pulls from other boxes are known here, reading the store
        for any the watch has not brought yet (a track published a moment ago on another box)."""
        if self.trunks is None or self.store is None or self.sfu is None:
            return
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("sessionId"), str):
                continue
            if not isinstance(item.get("trackName"), str) or item["sessionId"] in self.sfu.sessions:
                continue
            track_id = track_key(item["sessionId"], item["trackName"])
            if track_id in self.trunks.records or track_id in self.trunks.remote:
                continue
            with contextlib.suppress(StoreUnavailable, ValueError, TypeError):  # unreadable: as if absent
                entry = await self.store.get(TRACKS, track_id)
                if entry is not None and entry.value is not None:
                    self.trunks.records[track_id] = TrackRecord.decode(entry.value)

    # --- requests between boxes -------------------------------------------------------------------

    def _ask(self, node: str, message: dict, answered: Callable[[dict | None, float], None]) -> None:
        subject = f"edgecall.{node}.trunk"
        # A handover is not waited for long: a box that does not answer at once died or is cut off.
        timeout = ASK_TIMEOUT if message.get("op") == "handover" else REQUEST_TIMEOUT
        self._spawn(self._request(subject, message, answered, timeout))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run `work` beside the box's jobs (cancelled with them at stop)."""
        task = asyncio.create_task(work)
        self._tasks.append(task)
        task.add_done_callback(self._tasks.remove)
        return task

    async def _request(self, subject: str, message: dict, answered: Callable[[dict | None, float], None],
                       timeout: float = REQUEST_TIMEOUT) -> None:
        assert self.store is not None and self._loop is not None
        reply = None
        try:
            data = await self.store.request(subject, self.sealer.seal(json.dumps(message).encode(), subject),
                                            timeout)
            reply = json.loads(self.sealer.open(data, subject + " reply"))
        except (StoreUnavailable, Unsealed, ValueError) as e:
            log.warning("no answer from a box", subject=subject, reason=str(e))
        answered(reply if isinstance(reply, dict) else None, self._loop.time())

    async def _answer(self, data: bytes) -> bytes:
        assert self._loop is not None
        subject = f"edgecall.{self.me}.trunk"
        try:
            request = json.loads(self.sealer.open(data, subject))
        except (Unsealed, ValueError) as e:
            log.warning("refused a request", reason=str(e))
            reply: dict = {"error": "not sealed with this cluster's secret"}
        else:
            if request.get("op") == "handover":
                # What this box wrote of the session lands before the taker writes it as its own (within
                # what the taker waits: past it, it carries the session on from the store's watches).
                await self.settled(ASK_TIMEOUT / 2)
            reply = self._handle(request, self._loop.time())
        return self.sealer.seal(json.dumps(reply).encode(), subject + " reply")

    def _handle(self, request: dict, now: float) -> dict:
        if self.trunks is None or self.handover is None or self.channels is None:
            return {"error": "this box has no SFU"}
        op = request.get("op")
        if op in ("subscribe_channel", "channel_closed"):
            return self.channels.handle(request)
        if op == "handover":
            reply = self.handover.give(request, now)
            if "session" in reply:  # forward its API requests there from now on, whatever the watch says
                self._given[str(request.get("session"))] = (str(request.get("to")), now + GIVEN_FOR)
            return reply
        if op == "taken":
            return self.handover.taken(request, now)
        return self.trunks.handle(request, now)

    # --- the trunk socket -------------------------------------------------------------------------

    def _on_readable(self) -> None:
        sock, loop = self._sock, self._loop
        if sock is None or loop is None:
            return
        received = self.port.datagram_received
        now = loop.time()
        for _ in range(READ_BATCH):
            try:
                data, addr = sock.recvfrom(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                continue
            received(data, addr, now)

