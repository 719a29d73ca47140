"""Shared helpers of the block-level benches (``tb/<block>/test_<block>.py``).

Each bench module holds the cocotb tests (run inside the simulator) and a pytest wrapper that builds the
block once per (simulator, parameter set) through ``pqa_runner.run_block`` and fails when a cocotb test
failed. Inside the simulator, ``params()`` returns the elaboration parameters the block was built with.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge
from pqa_runner import run_block

SIMS = ["verilator", "icarus"]


def params() -> dict[str, int]:
    return dict(json.loads(os.environ["PQA_PARAMS"]))


def tag(parameters: dict[str, int]) -> str:
    return "-".join(f"{k}{v}" for k, v in sorted(parameters.items())) or "default"


def check_block(sim: str, toplevel: str, test_file: str, srcs: list[Path], parameters: dict[str, int],
                seed: int = 1, defines: dict[str, object] | None = None) -> None:
    """pytest side: build + run, then require that every cocotb test ran and passed. Builds with defines
    (mutants) get their own build directory."""
    name = tag(parameters) + "".join(f"-{k}" for k in sorted(defines or {}))
    tests, failed, log = run_block(sim, toplevel, test_file, srcs, parameters, name, seed=seed, defines=defines)
    assert tests > 0, f"no cocotb test ran:\n{log}"
    assert failed == 0, f"{failed} of {tests} cocotb tests failed:\n{log}"


async def start_clock(dut: object, rst: str = "rst_ni", cycles: int = 4) -> None:
    """Clock from cocotb's GPI clock (fast on both simulators), reset held low for ``cycles`` cycles."""
    getattr(dut, rst).value = 0
    cocotb.start_soon(Clock(dut.clk_i, 10, unit="ns", impl="gpi").start(start_high=False))
    await ClockCycles(dut.clk_i, cycles)
    getattr(dut, rst).value = 1
    await ClockCycles(dut.clk_i, 1)


async def load_words(dut: object, sel: int, data: bytes) -> None:
    """Write ``data`` into the wrapper's buffer ``sel`` through its load port, one bus word per cycle."""
    data = data + bytes(-len(data) % 8)
    dut.load_sel_i.value = sel
    dut.load_we_i.value = 1
    for w in range(len(data) // 8):
        dut.load_addr_i.value = w
        dut.load_data_i.value = int.from_bytes(data[8 * w : 8 * w + 8], "little")
        await RisingEdge(dut.clk_i)
    dut.load_we_i.value = 0
