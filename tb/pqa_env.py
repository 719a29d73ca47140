"""pyuvm environment for ``pqa_top``.

A *job* is one build directory (``pqcompile`` output: manifest + memory image). The driver plays the
host: it loads the image into external memory (cocotbext-axi AxiRam on the AXI4 master), programs the
registers over AXI4-Lite, starts the accelerator, waits for the interrupt and reads back registers and
memory. The reference model runs the golden simulator (``pqcompile.sim``) on the same image; the
scoreboard compares every memory byte (but the cycle stamps, which only the RTL measures) and the
status, error code, error PC and retired-instruction count.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, First, RisingEdge, Timer
from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster, AxiRam
from pyuvm import (
    ConfigDB,
    uvm_analysis_port,
    uvm_component,
    uvm_driver,
    uvm_env,
    uvm_sequence,
    uvm_sequence_item,
    uvm_sequencer,
    uvm_subscriber,
    uvm_test,
    uvm_tlm_analysis_fifo,
)

from pqcompile import backend, sim
from pqcompile.spec import load as load_spec

CLK_NS = 10


@dataclass
class Observed:
    """What the host sees after a run."""

    done: bool
    error: bool
    err_code: int
    err_pc: int
    insn_count: int
    cycles: int
    mem: np.ndarray
    hang: bool = False
    irq_cleared: bool = True


class PqaJob(uvm_sequence_item):
    def __init__(self, name: str, builddir: str) -> None:
        super().__init__(name)
        self.builddir = builddir
        self.manifest, self.mem = backend.load_build(builddir)
        self.observed: Observed | None = None


class BuildSeq(uvm_sequence):
    async def body(self) -> None:
        for b in ConfigDB().get(None, "", "BUILDS"):
            job = PqaJob(Path(b).name, b)
            await self.start_item(job)
            await self.finish_item(job)


class HostDriver(uvm_driver):
    """Host-side agent: AXI4-Lite register master, external memory, interrupt."""

    def build_phase(self) -> None:
        self.ap = uvm_analysis_port("ap", self)  # jobs after they ran (observed filled in)
        self.dut = cocotb.top
        self.spec = load_spec()

    async def reg_read(self, name: str) -> int:
        r = await self.axil.read(self.spec.reg(name), 4)
        assert int(r.resp) == 0, f"AXI4-Lite read of {name} answered {r.resp}"
        return int.from_bytes(r.data, "little")

    async def reg_write(self, name: str, value: int) -> None:
        r = await self.axil.write(self.spec.reg(name), value.to_bytes(4, "little"))
        assert int(r.resp) == 0, f"AXI4-Lite write of {name} answered {r.resp}"

    async def reset(self) -> None:
        self.dut.rst_ni.value = 0
        await ClockCycles(self.dut.clk_i, 8)
        self.dut.rst_ni.value = 1
        await ClockCycles(self.dut.clk_i, 2)

    async def run_phase(self) -> None:
        dut = self.dut
        dut.rst_ni.value = 0
        cocotb.start_soon(Clock(dut.clk_i, CLK_NS, unit="ns", impl="gpi").start(start_high=False))
        await ClockCycles(dut.clk_i, 4)
        size = 1 << max(12, (int(ConfigDB().get(None, "", "MEM_BYTES")) - 1).bit_length())
        self.ram = AxiRam(AxiBus.from_prefix(dut, "m_axi"), dut.clk_i, dut.rst_ni, reset_active_level=False,
                          size=size)
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), dut.clk_i, dut.rst_ni,
                                  reset_active_level=False)
        self.ram_size = size
        while True:
            job = await self.seq_item_port.get_next_item()
            await self.execute(job)
            self.ap.write(job)
            self.seq_item_port.item_done()

    async def execute(self, job: PqaJob) -> None:
        dut, spec = self.dut, self.spec
        await self.reset()
        self.ram.write(0, bytes(self.ram_size))
        self.ram.write(0, job.mem.tobytes())
        assert await self.reg_read("id") == spec.reg_id_value
        await self.reg_write("insn_base", job.manifest["insn_base"])
        bits = spec.ctrl_bits
        await self.reg_write("ctrl", (1 << bits["start"]) | (1 << bits["irq_en"]))
        est = int(job.manifest.get("expected", {}).get("sim_cycle_estimate", 0))
        bound = 4 * est + 200_000
        hang = False
        if not dut.irq_o.value:
            t = await First(RisingEdge(dut.irq_o), Timer(bound * CLK_NS, unit="ns"))
            hang = isinstance(t, Timer)
        status = await self.reg_read("status")
        sb = spec.status_bits
        cycles = await self.reg_read("cycles_lo") | (await self.reg_read("cycles_hi") << 32)
        obs = Observed(
            done=bool(status >> sb["done"] & 1), error=bool(status >> sb["error"] & 1),
            err_code=await self.reg_read("err_code"), err_pc=await self.reg_read("err_pc"),
            insn_count=await self.reg_read("insn_count"), cycles=cycles,
            mem=np.frombuffer(self.ram.read(0, job.mem.size), np.uint8).copy(), hang=hang,
        )
        if not hang:
            await self.reg_write("status", (1 << sb["done"]) | (1 << sb["error"]))
            await ClockCycles(dut.clk_i, 2)
            obs.irq_cleared = not int(dut.irq_o.value)
        job.observed = obs


class ReferenceModel(uvm_subscriber):
    """Runs the golden instruction-set simulator on each job's image."""

    def build_phase(self) -> None:
        self.ap = uvm_analysis_port("ap", self)

    def write(self, job: PqaJob) -> None:
        cfg = load_spec().config(job.manifest["config"])
        self.ap.write((job, sim.run(cfg, job.mem, job.manifest["insn_base"])))


@dataclass
class JobResult:
    build: str
    passed: bool = True
    errors: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


class Scoreboard(uvm_component):
    def build_phase(self) -> None:
        self.fifo = uvm_tlm_analysis_fifo("fifo", self)
        self.export = self.fifo.analysis_export
        self.results: list[JobResult] = []

    def check_phase(self) -> None:
        while True:
            ok, item = self.fifo.try_get()
            if not ok:
                break
            self.results.append(self.compare(*item))
        for r in self.results:
            for e in r.errors:
                self.logger.error(f"{r.build}: {e}")
        path = os.environ.get("PQA_RESULTS")
        if path:
            Path(path).write_text(json.dumps([r.__dict__ for r in self.results], indent=1))

    def compare(self, job: PqaJob, ref: sim.Result) -> JobResult:
        obs = job.observed
        assert obs is not None
        man = job.manifest
        res = JobResult(job.builddir)
        err = res.errors
        if obs.hang:
            err.append("no interrupt within the cycle bound (hang)")
        if (obs.done, obs.error) != (ref.done, not ref.done):
            err.append(f"status done={obs.done} error={obs.error}, expected done={ref.done}")
        for what, got, exp in (("err_code", obs.err_code, ref.err_code), ("err_pc", obs.err_pc, ref.err_pc),
                               ("insn_count", obs.insn_count, ref.insn_count)):
            if got != exp:
                err.append(f"{what} = {got:#x}, golden simulator {exp:#x}")
        if not obs.irq_cleared:
            err.append("interrupt still high after clearing DONE/ERROR")
        mask = np.ones(obs.mem.size, bool)
        st = man.get("stamps")
        if st:
            mask[st["addr"] : st["addr"] + 8 * len(st["labels"])] = False
        diff = np.flatnonzero((obs.mem != ref.mem) & mask)
        if diff.size:
            a = int(diff[0])
            err.append(f"{diff.size} memory bytes differ from the golden simulator; first at {a:#x}: "
                       f"RTL {obs.mem[a]:#04x}, simulator {ref.mem[a]:#04x}")
        stamps = backend.read_stamps(man, obs.mem) if st and ref.done else []
        res.passed = not err
        res.info = {
            "done": obs.done, "err_code": obs.err_code, "err_pc": obs.err_pc, "insn_count": obs.insn_count,
            "cycles": obs.cycles, "stamps": stamps, "bytes_compared": int(mask.sum()),
            "sim_cycle_estimate": ref.cycles,
        }
        if ref.done and "output" in man:
            np.save(Path(job.builddir) / "rtl_output.npy", backend.read_output(man, obs.mem))
        return res


class PqaEnv(uvm_env):
    def build_phase(self) -> None:
        self.seqr = uvm_sequencer("seqr", self)
        ConfigDB().set(None, "*", "SEQR", self.seqr)
        self.driver = HostDriver("driver", self)
        self.model = ReferenceModel("model", self)
        self.scoreboard = Scoreboard("scoreboard", self)

    def connect_phase(self) -> None:
        self.driver.seq_item_port.connect(self.seqr.seq_item_export)
        self.driver.ap.connect(self.model.analysis_export)
        self.model.ap.connect(self.scoreboard.export)


class PqaBuildTest(uvm_test):
    """Runs every build directory named in $PQA_BUILDS through the environment."""

    def build_phase(self) -> None:
        builds = [b for b in os.environ["PQA_BUILDS"].split(os.pathsep) if b]
        ConfigDB().set(None, "*", "BUILDS", builds)
        ConfigDB().set(None, "*", "MEM_BYTES", max(json.loads((Path(b) / "manifest.json").read_text())["mem_bytes"]
                                                   for b in builds))
        self.env = PqaEnv("env", self)

    async def run_phase(self) -> None:
        self.raise_objection()
        await BuildSeq("builds").start(ConfigDB().get(None, "", "SEQR"))
        self.drop_objection()
