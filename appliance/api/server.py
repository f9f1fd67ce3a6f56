"""The HTTP service: the Calls-compatible API, TURN credentials, health, metrics and the status page."""
from __future__ import annotations

import errno
import time
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import Counter, Histogram

from ..dashboard import routes as dashboard
from ..logs import get_logger
from ..plumbing.listeners import tcp_listener
from ..service import StartError, banner_secret
from . import calls, meet, stream_tokens, turn_credentials, whep, whip
from .auth import SECRETS, Secrets
from .body import MAX_BODY_BYTES
from .cors import cors_middleware
from .errors import error_middleware
from .forwarding import Forwarder
from .health import BOX, healthz, metrics
from .limits import LIMITS, AppLimits

if TYPE_CHECKING:
    from ..config import Config
    from ..runner import Box

log = get_logger("api")

# A directory on disk (package-data): FileResponse serves files by path.
STATIC = Path(__file__).with_name("static")


def _metrics_middleware(registry):
    requests = Counter(
        "edgecall_http_requests", "HTTP requests answered.", ["method", "route", "status"], registry=registry
    )
    latency = Histogram("edgecall_http_request_seconds", "Time to answer an HTTP request.", ["route"], registry=registry)

    @web.middleware
    async def middleware(request: web.Request, handler) -> web.StreamResponse:
        start = time.perf_counter()
        response = await handler(request)
        resource = request.match_info.route.resource
        # The route's pattern, not the path: ids in paths would make unbounded label sets.
        route = resource.canonical if resource is not None else "unmatched"
        requests.labels(request.method, route, str(response.status)).inc()
        latency.labels(route).observe(time.perf_counter() - start)
        log.debug("request", method=request.method, path=request.path, status=response.status)
        return response

    return middleware


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


# The JavaScript client and its types (static/sdk/). A short max-age: a box's upgrade reaches pages soon.
SDK_FILES = {"edgecall.js": "text/javascript", "edgecall.d.ts": "application/typescript"}
SDK_CACHE = "public, max-age=300"


def _sdk_file(name: str, content_type: str):
    async def handler(request: web.Request) -> web.FileResponse:
        headers = {"Content-Type": content_type, "Cache-Control": SDK_CACHE}
        return web.FileResponse(STATIC / "sdk" / name, headers=headers)

    return handler


def make_app(box: Box) -> web.Application:
    config = box.config
    app = web.Application(
        middlewares=[
            _metrics_middleware(box.registry),
            cors_middleware(config.api.cors_origins),
            error_middleware,
        ],
        client_max_size=MAX_BODY_BYTES,
    )
    app[BOX] = box
    app[SECRETS] = Secrets(config)
    app[LIMITS] = AppLimits(config.apps, time.monotonic(), box.registry)
    app.router.add_get("/", index)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    for name, content_type in SDK_FILES.items():
        app.router.add_get(f"/sdk/{name}", _sdk_file(name, content_type))
    secret = getattr(box.service("cluster"), "secret", None)
    if secret is not None:
        app[calls.FORWARDER] = Forwarder(config.node.id, secret)
    turn_credentials.add_routes(app.router)
    calls.add_routes(app.router)
    stream_tokens.add_routes(app.router)
    whip.add_routes(app.router)
    whep.add_routes(app.router)
    meet.add_routes(app.router)
    dashboard.add_routes(app)
    # The pages' scripts and styles (the meeting page's under /static/meet/).
    app.router.add_static("/static/", STATIC)
    return app


class ApiService:
    name = "api"

    def __init__(self, box: Box) -> None:
        self.box = box
        self.app = make_app(box)
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        listen = self.box.config.api.listen
        self._runner = web.AppRunner(
            self.app, access_log=None, shutdown_timeout=self.box.config.api.shutdown_timeout, handle_signals=False,
            keepalive_timeout=self.box.config.api.idle_timeout,
        )
        await self._runner.setup()
        # A worker also listens where other workers and boxes forward it requests (workers/plan.py).
        worker = self.box.source.worker
        endpoints = [(str(listen.host), listen.port, "api.listen")]
        if worker is not None:
            endpoints.append((*worker.api, "the worker's forwarded requests"))
        try:
            for host, port, what in endpoints:
                try:
                    await web.SockSite(self._runner, tcp_listener(host, port)).start()
                except OSError as e:
                    reason = "address already in use" if e.errno == errno.EADDRINUSE else e.strerror or str(e)
                    raise StartError(f"cannot listen on {host}:{port} ({what}): {reason}") from None
        except StartError:
            await self._runner.cleanup()
            self._runner = None
            raise
        log.info("listening", url=self.base_url)

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()
            self._runner = None
        forwarder = self.app.get(calls.FORWARDER)
        if forwarder is not None:
            await forwarder.close()

    def health(self) -> str | None:
        return None if self._runner else "not listening"

    def reconfigure(self, config: Config) -> None:
        """A reload's live values: the apps' and TURN keys' secrets, the apps' limits (the tokens and
        the rest are read from the box's config per request)."""
        self.app[SECRETS].configure(config)
        self.app[LIMITS].configure(config.apps, time.monotonic())

    @property
    def base_url(self) -> str:
        return f"http://{self.box.config.api.listen}"

    def urls(self) -> list[str]:
        whole = self.box.config.api.print_secrets
        lines = [f"API        {self.base_url}/  (health {self.base_url}/healthz, metrics {self.base_url}/metrics)"]
        for app in self.box.config.apps:
            lines.append(f"app        id {app.id}  secret {banner_secret(app.secret, whole)}")
        admin = self.box.config.api.admin_token
        if admin is not None:
            lines.append(f"dashboard  {self.base_url}/dashboard  admin token {banner_secret(admin, whole)}")
        return lines
