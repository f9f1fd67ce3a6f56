"""Edgecall: a self-hosted real-time media edge (WebRTC SFU and TURN on anycast)."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("edgecall")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
