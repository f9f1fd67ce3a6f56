"""The media lab: the box in one network namespace, browser clients (Chromium or Firefox) each in
their own, joined by veths on which tests drop packets (nftables) or limit the rate (tc), as
../shared/TESTING.md says: nothing leaves the namespaces the test made."""
from __future__ import annotations

import asyncio
import contextlib
import sys
import time

from tests.e2e.test_sfu import CLIENT
from tests.lab.appliance import APPLIANCE
from tests.lab.browser import browser_in
from tests.lab.firefox import firefox_in

BOX_PUB, PUB = "192.0.2.1", "192.0.2.2"  # the publisher's link
BOX_SUB, SUB = "192.0.2.65", "192.0.2.66"  # the subscribers' link
BOX_SLOW, SLOW = "192.0.2.129", "192.0.2.130"  # a subscriber behind a rate limit
API_PORT, MEDIA_PORT = 8080, 3479
URL = f"http://{BOX_PUB}:{API_PORT}"
# getUserMedia needs a secure context: the lab's box is neither https nor localhost.
SECURE = (f"--unsafely-treat-insecure-origin-as-secure={URL}",)
LOSS_PERCENT = 5
ENGINES = ("chromium", "firefox")

PUBLISH_VIDEO = """
async ([name, encodings, video]) => {
  if (!calls.sessionId) await calls.open();
  const stream = await navigator.mediaDevices.getUserMedia({audio: false, video});
  const pushed = await calls.push([[stream.getVideoTracks()[0], name, encodings]]);
  await calls.connected;
  return {id: calls.sessionId, tracks: pushed};
}
"""
VIDEO_IN = """
async () => {
  for (const s of (await calls.pc.getStats()).values())
    if (s.type === "inbound-rtp" && s.kind === "video")
      return {freezeCount: s.freezeCount, freezes: s.totalFreezesDuration, packetsLost: s.packetsLost,
              packetsReceived: s.packetsReceived, framesDecoded: s.framesDecoded, nackCount: s.nackCount,
              retransmittedPacketsReceived: s.retransmittedPacketsReceived,
              jitter: s.jitter, frameWidth: s.frameWidth};
  return null;
}
"""


METRICS = "() => fetch('/metrics').then(r => r.text())"


def box_toml(retransmissions: bool = True) -> str:
    return f"""
[node]
id = "lab-box"

[api]
listen = "{BOX_PUB}:{API_PORT}"

[[apps]]
id = "test-app"
secret = "test-app-secret"

[sfu]
workers = 1
udp = "{BOX_PUB}:{MEDIA_PORT}"
retransmissions = {str(retransmissions).lower()}

[turn]
enabled = false
"""


def media_lab(lab, slow: bool = False):
    """The box, the publisher's and the subscribers' hosts (and with `slow`, a third client host
    whose link the test can rate-limit: its interface on the box is `eth2`)."""
    box, pub, sub = lab.host("box"), lab.host("pub"), lab.host("sub")
    links = [(pub, BOX_PUB, PUB), (sub, BOX_SUB, SUB)]
    if slow:
        links.append((lab.host("slow"), BOX_SLOW, SLOW))
    for host, near, far in links:
        lab.link(box, host, [f"{near}/26"], [f"{far}/26"])
        host.run(["ip", "route", "add", "default", "via", near])
    return (box, *[host for host, _, _ in links])


def start_box(host, retransmissions: bool = True):
    path = host.dir / f"appliance-{retransmissions}.toml"
    path.write_text(box_toml(retransmissions))
    process = host.popen([*APPLIANCE, "run", "--config", path], log=f"appliance-{retransmissions}")
    probe = "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(host.log_path(f"appliance-{retransmissions}").read_text())
        if host.run([sys.executable, "-c", probe, f"{URL}/healthz"], check=False).returncode == 0:
            return process
        time.sleep(0.2)
    raise RuntimeError("the lab box never answered /healthz")


def stop_box(process) -> None:
    process.terminate()
    process.wait(15)


def add_loss(receiver, sender: str, port: str, payload_type: int | None = None) -> None:
    """Drop LOSS_PERCENT of the media `receiver` gets from `sender` (port "sport" or "dport":
    the box's media port on the sender's side or on the receiver's); with `payload_type`, of the
    RTP packets of that payload type only (not the retransmissions, padding or RTCP, whose
    header's second byte the SRTP keeps in the clear as well). Dropped on arrival, so the
    sender sees nothing (a drop in its own output hook would fail its sendto with EPERM)."""
    rtp = "" if payload_type is None else f" @th,73,7 {payload_type}"  # after the 8-byte UDP header: M, then PT
    receiver.run(["nft", "-f", "-"], input=f"""table inet loss {{
  counter dropped {{ }}
  chain input {{ type filter hook input priority 0; ip saddr {sender} udp {port} {MEDIA_PORT}{rtp} numgen random mod 100 < {LOSS_PERCENT} counter name dropped drop; }}
}}
""")


def remove_loss(receiver) -> int:
    """Packets dropped; the rule goes."""
    text = receiver.run(["nft", "list", "counter", "inet", "loss", "dropped"]).stdout
    receiver.run(["nft", "delete", "table", "inet", "loss"])
    return int(text.split("packets")[1].split()[0])


def browser_on(engine: str, host):
    """A browser of `engine` inside the lab host `host`, to which the box's page is a secure context:
    Playwright's Chromium, or Firefox through Marionette behind the same page methods."""
    if engine == "firefox":
        return firefox_in(host, [URL])
    return browser_in(host, SECURE)


@contextlib.asynccontextmanager
async def browsers_on(engine: str, *hosts):
    """Browsers of `engine` in each of `hosts` (browser_on), started together."""
    async with contextlib.AsyncExitStack() as stack:
        yield await asyncio.gather(*(stack.enter_async_context(browser_on(engine, host)) for host in hosts))


async def client(browser, url: str):
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(url + "/")
    await page.add_script_tag(content=CLIENT)
    await page.evaluate("([api]) => { window.calls = new Calls(api, 'test-app', 'test-app-secret'); }", [url])
    return context, page


def repair_metrics(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line.startswith("edgecall_sfu_repair_total{"):
            event = line.split('event="')[1].split('"')[0]
            out[event] = float(line.rsplit(" ", 1)[1])
    return out


def delta(after: dict, before: dict) -> dict:
    return {k: (after[k] or 0) - (before[k] or 0) for k in after if isinstance(after[k], (int, float))}
