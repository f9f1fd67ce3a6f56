"""`appliance reboot` (and the reboot after an update) drains the box through its control socket and
waits `[drain] time` before the reboot: a real box's control service, in-process; the reboot itself is recorded."""
from __future__ import annotations

import asyncio
import os
import shutil
import tempfile

import pytest

from appliance import control
from appliance.config import parse_config
from appliance.control import ControlService
from appliance.runner import Box
from appliance.update.reboot import drain_then_reboot
from tests.lab.appliance import free_port


@pytest.fixture
def runtime(monkeypatch):
    directory = tempfile.mkdtemp(prefix="ec-")
    monkeypatch.setattr(control, "SYSTEM_DIR", os.path.join(directory, "edgecall"))
    os.mkdir(control.SYSTEM_DIR, 0o700)
    yield directory
    shutil.rmtree(directory)


def config(drain_time: float):
    return parse_config(f'[api]\nlisten = "127.0.0.1:{free_port()}"\n[turn]\nenabled = false\n'
                        f'[drain]\ntime = {drain_time}\n', "test.toml")


async def test_the_box_drains_for_its_drain_time_before_the_reboot(runtime):
    box = Box(config(7))
    service = ControlService(box)
    box.services.append(service)
    await service.start()
    events: list[object] = []
    try:
        await asyncio.to_thread(drain_then_reboot, box.config, reboot=lambda: events.append(("reboot", box.drain.active)),
                                sleep=lambda seconds: events.append(("wait", seconds, box.drain.active)),
                                say=lambda line: events.append(line))
    finally:
        await service.stop()
    assert events[1:] == [("wait", 7.0, True), ("reboot", True)]
    assert events[0] == "draining: the health agent withdraws the anycast prefixes; rebooting in 7 s ([drain] time)"


def test_with_no_box_answering_it_reboots_without_waiting(runtime):
    events: list[object] = []
    drain_then_reboot(config(7), reboot=lambda: events.append("reboot"), sleep=lambda seconds: events.append(seconds),
                      say=lambda line: events.append(line))
    assert events[-1] == "reboot" and 7 not in events
    assert "the service does not answer on its control socket" in str(events[0])
