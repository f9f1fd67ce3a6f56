"""Per-app limits of the Calls API: requests per second, new sessions per second, live sessions.

Sans-I/O: the handlers pass `now` (the event loop's clock) and the app's live session count; past a
limit the answer is an ApiError 429 that says which limit and when to retry (Retry-After).
"""
from __future__ import annotations

import math
from collections.abc import Iterable

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from ..plumbing.buckets import TokenBucket, unlimited
from ..config.schema import AppConfig
from .errors import ApiError


class RateLimited(ApiError):
    """429 with Retry-After in whole seconds, at least one (RFC 9110 delay-seconds); the errorCode is the
    contract's one for "try again" (CALLS_API.md 1.5), which Calls clients already handle."""

    def __init__(self, description: str, retry_after: float) -> None:
        super().__init__(429, "retryable_transient_error", description,
                         {"Retry-After": str(max(1, math.ceil(retry_after)))})


def _bucket(rate: int, now: float) -> TokenBucket:
    """`rate` a second with a burst of one second's worth; 0: no limit (an endless burst)."""
    return TokenBucket(unlimited(rate), unlimited(rate), now)


class AppLimits:
    """Each app's buckets, and the 429s counted per app and limit (apps come from the config: a bounded label)."""

    def __init__(self, apps: Iterable[AppConfig], now: float, registry: CollectorRegistry) -> None:
        self._apps: dict[str, AppConfig] = {}
        self._requests: dict[str, TokenBucket] = {}
        self._sessions: dict[str, TokenBucket] = {}
        self.configure(apps, now)
        self.refused = Counter("edgecall_api_limited", "Calls API requests refused with 429, by app and limit.",
                               ["app", "limit"], registry=registry)

    def configure(self, apps: Iterable[AppConfig], now: float) -> None:
        """The apps of a reloaded configuration: an app whose rate is unchanged keeps its bucket (what it
        has spent stays spent), a new rate starts a full one."""
        old = self._apps
        self._apps = {app.id: app for app in apps}
        self._requests = {
            app.id: self._requests[app.id] if app.id in old and old[app.id].requests_per_second == app.requests_per_second
            else _bucket(app.requests_per_second, now) for app in self._apps.values()}
        self._sessions = {
            app.id: self._sessions[app.id] if app.id in old and old[app.id].sessions_per_second == app.sessions_per_second
            else _bucket(app.sessions_per_second, now) for app in self._apps.values()}

    def request(self, app: str, now: float) -> None:
        """Count one API request of `app`; RateLimited past its requests_per_second."""
        bucket = self._requests[app]
        if not bucket.take(1, now):
            self.refused.labels(app, "requests_per_second").inc()
            raise RateLimited(f"app {app!r} is over its limit of {self._apps[app].requests_per_second} API requests "
                              f"per second (apps.requests_per_second)", bucket.wait(1))

    def new_session(self, app: str, live: int, now: float) -> None:
        """Admit one new session of `app`, which holds `live` now; RateLimited past max_sessions or
        sessions_per_second."""
        config = self._apps[app]
        if config.max_sessions and live >= config.max_sessions:
            self.refused.labels(app, "max_sessions").inc()
            # Sessions end when their clients close them or go idle; a client should not hammer meanwhile.
            raise RateLimited(f"app {app!r} holds its limit of {config.max_sessions} live sessions "
                              f"(apps.max_sessions); close sessions first", 5)
        bucket = self._sessions[app]
        if not bucket.take(1, now):
            self.refused.labels(app, "sessions_per_second").inc()
            raise RateLimited(f"app {app!r} is over its limit of {config.sessions_per_second} new sessions per "
                              f"second (apps.sessions_per_second)", bucket.wait(1))


LIMITS = web.AppKey("limits", AppLimits)
