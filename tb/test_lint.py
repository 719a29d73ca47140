"""The RTL is lint-clean under ``verilator --lint-only -Wall`` (waivers in lint/verilator_waiver.vlt) and
compiles under Icarus 11, for every named configuration."""

from __future__ import annotations

import subprocess

import pytest
from pqa_runner import hdl_parameters, lint, sources

from pqcompile.spec import load


@pytest.mark.rtl
@pytest.mark.parametrize("config", list(load().configs))
def test_verilator_lint_clean(config: str) -> None:
    r = lint(config)
    assert r.returncode == 0 and "%Warning" not in r.stderr, r.stderr


@pytest.mark.rtl
@pytest.mark.parametrize("config", list(load().configs))
def test_icarus_compiles(config: str, tmp_path) -> None:  # noqa: ANN001
    params = [f"-Ppqa_top.{k}={v}" for k, v in hdl_parameters(config).items()]
    r = subprocess.run(["iverilog", "-g2012", "-o", str(tmp_path / "a.vvp"), "-s", "pqa_top", *params,
                        *map(str, sources())], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "error" not in r.stderr.lower()
