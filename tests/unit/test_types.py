"""The type checker passes over appliance/ and netconfig/ with the settings of pyproject.toml."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_mypy_reports_no_error():
    # A subprocess, so the checker sees the tree as a fresh interpreter would (no test imports, no patches).
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml")],
        cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, f"mypy found errors:\n{run.stdout}{run.stderr}"
