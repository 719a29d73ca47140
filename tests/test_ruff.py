"""``ruff check`` (the pinned version, pyproject.toml's rules) is clean on every Python tree, so that
``make test`` fails on a lint error and not only ``make lint``."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_is_clean() -> None:
    if importlib.util.find_spec("ruff") is None:
        pytest.skip("ruff is not installed (make setup installs it)")
    res = subprocess.run([sys.executable, "-m", "ruff", "check", "sw", "tb", "tests", "models", "benchmarks"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
