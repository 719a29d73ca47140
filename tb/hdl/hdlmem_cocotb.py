"""cocotb side of the HDL-memory testbench (tb/hdl/pqa_tb_top.sv): a handful of Python events per run.

The top holds the external memory (pqa_axi_mem, loaded from the build's mem.hex by plusargs) and the
host (AXI4-Lite writes of INSN_BASE and START, register reads, memory dump), so this test only starts
the clock (when it is not generated in the HDL), sets the inputs, raises start_i and waits for done_o
with one awaited edge (plus a safety timer), then writes what the host read to $PQA_HDLMEM_RESULT
(JSON). tb/pqa_runner.py ``run_hdlmem`` launches it and compares the dumped memory with the golden
simulator.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import First, RisingEdge, Timer
from cocotb.utils import get_sim_time


@cocotb.test()
async def hdlmem_run(dut) -> None:  # noqa: ANN001
    job = json.loads(os.environ["PQA_HDLMEM"])
    clk_ns = int(job["clk_ns"])
    max_cycles = int(job["max_cycles"])
    if not job["hdl_clock"]:
        cocotb.start_soon(Clock(dut.clk_i, clk_ns, unit="ns", impl="gpi").start(start_high=False))
    dut.insn_base_i.value = int(job["insn_base"])
    dut.max_cycles_i.value = max_cycles
    dut.abort_i.value = 0
    dut.start_i.value = 1
    t0 = time.perf_counter()
    # The host stops itself after max_cycles; the timer only guards against a stuck host.
    guard = Timer((max_cycles + 100_000) * clk_ns, unit="ns")
    trig = await First(RisingEdge(dut.done_o), guard)
    stuck = trig is guard
    if stuck:
        dut.abort_i.value = 1
        await First(RisingEdge(dut.done_o), Timer(100_000 * clk_ns, unit="ns"))
    wall = time.perf_counter() - t0
    done = int(dut.done_o.value) == 1
    res = {
        "host_done": done,
        "hang": stuck or not done or int(dut.hang_o.value) == 1,
        "irq_cleared": done and int(dut.irq_cleared_o.value) == 1,
        "status": int(dut.status_o.value) if done else 0,
        "err_code": int(dut.err_code_o.value) if done else 0,
        "err_pc": int(dut.err_pc_o.value) if done else 0,
        "insn_count": int(dut.insn_count_o.value) if done else 0,
        "cycles": int(dut.cycles_o.value) if done else 0,
        "host_cycles": int(dut.host_cycles_o.value),
        "sim_ns": get_sim_time("ns"),
        "run_wall_s": wall,
    }
    Path(os.environ["PQA_HDLMEM_RESULT"]).write_text(json.dumps(res))
