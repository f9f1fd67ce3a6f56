"""The JavaScript client's operation queue under node's own test runner (tests/unit/sdk/*.test.mjs):
the client's logic that needs no browser. The browser tests are tests/e2e/test_sdk.py."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def test_node_test_runner_passes_the_sdk_tests():
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (./build.sh setup installs Debian's npm, which brings it)")
    files = sorted(str(p) for p in (HERE / "sdk").glob("*.test.mjs"))
    assert files, "no node tests found"
    run = subprocess.run([node, "--test", *files], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, f"node --test failed:\n{run.stdout}{run.stderr}"
    assert "# fail 0" in run.stdout and "# pass 0" not in run.stdout, run.stdout
