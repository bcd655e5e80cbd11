"""The command lines start cleanly: `--help` prints the usage (grader.report once read it as a run folder), and a
module the front door imports runs with `python -m` without the warning that the package had already imported it
(grader/__init__.py imports its public names on first use)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("command", ["report", "stretch", "ensemble", "channel", "probe"])
def test_help_prints_the_usage_and_nothing_warns(command):
    done = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-m", f"grader.{command}", "--help"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage:") and "RuntimeWarning" not in done.stderr
