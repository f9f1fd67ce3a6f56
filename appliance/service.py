"""What the runner asks of every service the box hosts (HTTP API, TURN, SFU, ...)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .config import Config


class StartError(Exception):
    """A service could not start; the message names what failed and the config key behind it."""


class Service(Protocol):
    name: str

    async def start(self) -> None:
        """Bind sockets and begin serving; raise StartError when that cannot be done."""

    async def stop(self) -> None:
        """Stop serving and release every socket."""

    def health(self) -> str | None:
        """None when the service answers its own check, else why it does not."""

    def urls(self) -> list[str]:
        """What the service serves, one line each, for the start-up banner."""


@runtime_checkable
class Reconfigurable(Protocol):
    """A service holding values of the config that a reload may change (config/reload.py says which)."""

    def reconfigure(self, config: Config) -> None:
        """Take the live values of `config`, the box's new running config, in place."""


def banner_secret(secret: str, whole: bool) -> str:
    """A secret as the start banner shows it: whole for the generated demo defaults ([api] print_secrets),
    otherwise (the banner goes to the journal) no more than its first 4 characters, to tell which it is."""
    return secret if whole else secret[: min(4, len(secret) // 4)] + "…"
