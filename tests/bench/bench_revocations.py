"""Memory and file size of TURN revocations: 10,000 realistic ones, and the cap filled with the longest names."""
import asyncio
import os
import tempfile
import time
import tracemalloc

from appliance.config import TurnConfig, TurnKeyConfig
from appliance.turn import TurnServer
from appliance.turn.credentials import MAX_IDENTIFIER
from appliance.turn.revocation_store import RevocationFile
from tests.unit.turn.harness import RecordingBinder


async def _measure(count: int, identifier) -> tuple[int, int]:
    """(bytes the core holds for `count` revocations, bytes of the file), minted as the API does."""
    config = TurnConfig(secrets=("s",), keys=(TurnKeyConfig("key", "token"),))
    server = TurnServer.from_config(config, RecordingBinder(), wall=time.time)
    wall, now = time.time(), time.monotonic()
    usernames = [server.credentials.mint(wall, 86400, identifier(i), "key")[0] for i in range(count)]
    with tempfile.TemporaryDirectory() as directory:
        store = RevocationFile(os.path.join(directory, "turn-revocations.jsonl"))
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for username in usernames:
            server.revoke(username, now)
        held = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        # The names themselves come with the requests; the core keeps them, so they count.
        held += sum(len(u) + 49 for u in usernames)  # sys.getsizeof of an ASCII str
        await asyncio.gather(*(store.add(u, int(u.partition(".")[0])) for u in usernames))
        return held, os.path.getsize(store.path)


def main() -> None:
    for label, count, identifier in [
        ("10,000 realistic (user4523958-style identifiers)", 10_000, lambda i: f"user{4523958 + i}"),
        (f"the cap, {TurnConfig().max_revocations:,} names of {MAX_IDENTIFIER}-character identifiers",
         TurnConfig().max_revocations, lambda i: f"{i:08d}".ljust(MAX_IDENTIFIER, "x")),
    ]:
        held, size = asyncio.run(_measure(count, identifier))
        print(f"{label}: {held / 1e6:.1f} MB held ({held / count:.0f} B each), file {size / 1e6:.2f} MB")
