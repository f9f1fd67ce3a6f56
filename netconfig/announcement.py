"""The announcement switch: the file in BIRD's include directory, then `configure`.

Writing the file (atomically: aside, then renamed) and reconfiguring announces; removing it and
reconfiguring withdraws. A plain `configure`, not `soft`: BIRD then starts or stops the static
protocols at once without resetting the BGP sessions (verified on 2.0.12).
"""
from __future__ import annotations

import os
import tempfile

from appliance.config import Config

from .bird_conf import announcement_path, render_announcement
from .bird_control import BirdControl


class Announcement:
    def __init__(self, config: Config, timeout: float = 2.0):
        if config.bgp is None:
            raise ValueError("the configuration has no [bgp] table: there is no BIRD to announce through")
        self.path = announcement_path(config)
        self.text = render_announcement(config)
        self.control_socket = config.bgp.control_socket
        self.timeout = timeout

    def written(self) -> bool:
        """Whether the file says "announce" (with this config's prefixes)."""
        try:
            with open(self.path, encoding="utf-8") as f:
                return f.read() == self.text
        except FileNotFoundError:
            return False

    def set(self, announced: bool) -> None:
        """Write or remove the file, then have BIRD reload it; raises OSError or BirdError."""
        if announced:
            directory = os.path.dirname(self.path)
            os.makedirs(directory, mode=0o755, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=".announce-", suffix=".tmp")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(self.text)
                os.chmod(tmp, 0o644)  # BIRD reads it as its own user
                os.replace(tmp, self.path)
            except BaseException:
                os.unlink(tmp)
                raise
        else:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
        with BirdControl(self.control_socket, timeout=self.timeout) as bird:
            bird.configure(timeout=self.timeout)
