"""The TURN/STUN service as the runner hosts it: listeners from `[turn] listen`, metrics, credentials."""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from ..logs import get_logger
from ..plumbing.drops import count_drops
from ..service import StartError, banner_secret
from .credentials import REST, RevocationsFull, parse_username
from .io import TurnIO
from .revocation_store import RevocationFile, RevocationStore, SharedRevocations
from .server import TurnServer
from .usage import top_identifiers

if TYPE_CHECKING:
    from ..config import Config, TurnConfig
    from ..runner import Box

log = get_logger("turn")

# Usage per customIdentifier (Cloudflare's TURN analytics dimension), from the core's usage book:
# the top `[turn] metrics_identifiers` of them, the rest summed as identifier="other".
USAGE_METRICS = {
    "allocations": "Allocations made, by customIdentifier.",
    "seconds": "Allocation time used, by customIdentifier.",
    "bytes_from_client": "Bytes relayed from clients to peers (ingress), by customIdentifier.",
    "bytes_to_client": "Bytes relayed from peers to clients (egress), by customIdentifier.",
    "packets_from_client": "Packets relayed from clients to peers, by customIdentifier.",
    "packets_to_client": "Packets relayed from peers to clients, by customIdentifier.",
    "dropped": "Packets dropped (no permission, over a rate limit), by customIdentifier.",
}
# Family names where the usage's own would take another family's: edgecall_turn_dropped is by reason. A
# scrape that names a family twice is refused whole by Prometheus.
USAGE_FAMILIES = {name: f"edgecall_turn_{name}" for name in USAGE_METRICS} | {
    "dropped": "edgecall_turn_dropped_by_identifier"}

# RFC 7443: the ALPN ids of TURN and STUN over TLS.
ALPN = ["stun.turn", "stun.nat-discovery"]


def _tls_context(cert: str | None, key: str | None) -> ssl.SSLContext:
    if cert is None or key is None:
        # The config's checks refuse a tls:// listener without both; only a Config built in code gets here.
        raise ssl.SSLError("a tls:// listener needs turn.tls_cert and turn.tls_key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(ALPN)
    return context


class TurnService:
    name = "turn"

    def __init__(self, box: Box, wall: Callable[[], float] = time.time) -> None:
        self.box = box
        self.core: TurnServer | None = None
        self.io: TurnIO | None = None
        # The core's clocks: `now` is the event loop's from start (time.monotonic, asyncio's own, until then);
        # `wall` only mints and checks REST usernames' expiries, which are Unix times.
        self.clock: Callable[[], float] = time.monotonic
        self.wall = wall
        self.revocation_store: RevocationStore = RevocationFile(
            os.path.join(box.config.node.state_dir, "turn-revocations.jsonl"), self.wall
        )
        self._shared: SharedRevocations | None = None
        self._following: asyncio.Task[None] | None = None
        box.registry.register(_TurnCollector(self))
        count_drops(box.registry, "turn", lambda: self.io.udp_sockets if self.io else [])

    @property
    def config(self) -> TurnConfig:
        return self.box.config.turn

    def reconfigure(self, config: Config) -> None:
        """A reload's live `[turn]` values; before start there is no core yet, and start reads the box's config."""
        if self.core is not None:
            self.core.reconfigure(config.turn)

    def share_revocations(self, store: SharedRevocations) -> None:
        """Before start: keep revocations in `store`, which other boxes share, and refuse the ones
        they make as they come (runner.assemble does this when the box is in a cluster)."""
        self.revocation_store = self._shared = store

    def _own_addresses(self) -> list:
        config = self.box.config
        own = [config.api.listen.host, *(e.host for e in config.sfu.udp), *config.sfu.public_addresses]
        own += [p.network_address for p in config.anycast.prefixes if p.num_addresses == 1]
        return own

    async def start(self) -> None:
        own = self._own_addresses()
        loop = asyncio.get_running_loop()
        self.clock = loop.time
        self.io = TurnIO(loop, lambda binder: TurnServer.from_config(self.config, binder, own=own, wall=self.wall))
        self.core = self.io.core
        # Before any listener opens: no request may slip in ahead of a revocation.
        await self._restore_revocations()
        if self._shared is not None:
            self._following = asyncio.create_task(self._shared.follow(self._revoked_elsewhere))
        tls = None
        for index, listener in enumerate(self.config.listen):
            host, port = str(listener.endpoint.host), listener.endpoint.port
            try:
                if listener.transport == "udp":
                    self.io.open_udp_listener(host, port)
                else:
                    if listener.transport == "tls" and tls is None:
                        tls = _tls_context(self.config.tls_cert, self.config.tls_key)
                    await self.io.open_stream_listener(listener.transport, host, port, tls if listener.transport == "tls" else None)
            except (OSError, ssl.SSLError) as e:
                await self.stop()
                reason = e.strerror or str(e)
                raise StartError(f"cannot listen on {listener} (turn.listen[{index}]): {reason}") from None
            log.info("listening", url=str(listener))

    async def stop(self) -> None:
        if self._following is not None:
            self._following.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._following
            self._following = None
        if self.io is not None:
            await self.io.close()
            self.io = None

    def health(self) -> str | None:
        return None if self.io is not None else "not listening"

    def urls(self) -> list[str]:
        lines = [f"TURN       {', '.join(map(str, self.config.listen))}  (STUN binding on each)"]
        api = f"http://{self.box.config.api.listen}"
        for key in self.config.keys:
            lines.append(
                f"TURN key   id {key.id}  token {banner_secret(key.token, self.box.config.api.print_secrets)}  "
                f"(POST {api}/v1/turn/keys/{key.id}/credentials/generate-ice-servers)"
            )
        return lines

    # --- what the credentials API asks ---------------------------------------------------------

    def mint(self, ttl: int, identifier: str, issuer: str = REST) -> tuple[str, str]:
        """A credential of `issuer` (a TURN key's id): its allocations count toward that issuer's quota."""
        return self._core().credentials.mint(self.wall(), ttl, identifier, issuer)

    async def revoke(self, username: str) -> bool:
        """Refuse `username` from now on and end its allocations, and keep that across restarts;
        False when it is no credential this box could have minted, or one that has expired anyway.
        Raises `RevocationsFull`."""
        parsed = parse_username(username)
        if parsed is None:
            return False
        ended = self._core().revoke(username, self.clock())
        if ended is None:
            return False
        if self.io is not None:
            self.io.flush()
        log.info("credential revoked", username=username, allocations_ended=ended)
        try:
            # Shielded: a client that hangs up does not cut the write short.
            await asyncio.shield(self.revocation_store.add(username, parsed[0]))
        except OSError as e:
            log.error("revocation not saved: the credential works again after a restart", username=username,
                      reason=str(e))
        return True

    def _core(self) -> TurnServer:
        if self.core is None:
            raise RuntimeError("the TURN service has not started")
        return self.core

    def _revoked_elsewhere(self, username: str) -> bool:
        """A revocation the shared store reports (another box's, or this box's own coming back):
        refused from now on, with the checks of a new one; whether it was news to this box."""
        core = self._core()
        if username in core.revocations:
            return False
        try:
            ended = core.revoke(username, self.clock())
        except RevocationsFull as e:
            log.error("a revocation made on another box is not held here", username=username, reason=str(e))
            return False
        if ended is None:
            return False  # expired since, or no credential this box could have minted
        if self.io is not None:
            self.io.flush()
        log.info("credential revoked on another box", username=username, allocations_ended=ended)
        return True

    async def _restore_revocations(self) -> None:
        kept = await self.revocation_store.load()
        now = self.clock()
        restored = 0
        for username in kept:
            try:
                # The checks of a new revocation: entries expired since (or malformed) are dropped.
                restored += self._core().revoke(username, now) is not None
            except RevocationsFull as e:
                log.error("revocations not all restored", restored=restored, reason=str(e))
                return
        if kept:
            log.info("revocations restored", restored=restored, dropped=len(kept) - restored)


class _TurnCollector:
    """Reads the core's counters at scrape time: the hot path only increments plain ints."""

    def __init__(self, service: TurnService) -> None:
        self.service = service

    def describe(self):
        return []

    def collect(self):
        core = self.service.core
        if core is None:
            return
        allocations = GaugeMetricFamily("edgecall_turn_allocations", "TURN allocations now.")
        allocations.add_metric([], len(core.allocations))
        yield allocations
        dropped = CounterMetricFamily(
            "edgecall_turn_dropped", "Packets dropped and requests refused, by reason.", labels=["reason"]
        )
        for field in dataclasses.fields(core.counters):
            dropped.add_metric([field.name], getattr(core.counters, field.name))
        yield dropped
        revocations = GaugeMetricFamily("edgecall_turn_revocations", "Revoked credentials held, each until it expires.")
        revocations.add_metric([], len(core.revocations))
        yield revocations
        streams = GaugeMetricFamily("edgecall_turn_streams", "TCP/TLS client connections now (max_streams caps them).")
        streams.add_metric([], core.streams)
        yield streams
        # Issuers are the config's TURN keys and "rest": a bounded label set.
        held = GaugeMetricFamily("edgecall_turn_issuer_allocations", "TURN allocations now, by credential issuer.",
                                 labels=["issuer"])
        for issuer in core.credentials.issuers:
            held.add_metric([issuer], core.quotas.held.get(issuer, 0))
        yield held
        by_issuer = core.usage_by_issuer(self.service.clock())
        for name in ("bytes_from_client", "bytes_to_client"):
            relayed = CounterMetricFamily(f"edgecall_turn_issuer_{name}", USAGE_METRICS[name].replace(
                "customIdentifier", "credential issuer"), labels=["issuer"])
            for issuer, usage in by_issuer.items():
                relayed.add_metric([issuer], getattr(usage, name))
            yield relayed
        refused = CounterMetricFamily(
            "edgecall_turn_quota_refused", "Allocate requests refused with 486, by credential issuer and the quota "
            "reached (user: user_quota; issuer: the issuer's quota or reserve).", labels=["issuer", "quota"],
        )
        for issuer in core.credentials.issuers:
            for quota in ("user", "issuer"):
                refused.add_metric([issuer, quota], core.quotas.refused.get((issuer, quota), 0))
        yield refused
        families = {
            name: CounterMetricFamily(USAGE_FAMILIES[name], help_text, labels=["identifier"])
            for name, help_text in USAGE_METRICS.items()
        }
        top = top_identifiers(core.usage_by_identifier(self.service.clock()), self.service.config.metrics_identifiers)
        for identifier, usage in top.items():
            for name, family in families.items():
                family.add_metric([identifier], getattr(usage, name))
        yield from families.values()
        if self.service.io is not None:
            errors = CounterMetricFamily("edgecall_turn_send_errors", "Datagrams the kernel refused to send.")
            errors.add_metric([], self.service.io.send_errors)
            yield errors
