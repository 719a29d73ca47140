"""pyuvm environment for ``pqa_top``.

A *job* is one build directory (``pqcompile`` output: manifest + memory image), optionally with stimulus
knobs in its manifest (``stim``, see tb/pqa_gen.py). The driver plays the host: it loads the image into
external memory (cocotbext-axi AxiRam on the AXI4 master), programs the registers over AXI4-Lite,
starts the accelerator, waits for the interrupt and reads back registers and memory; per job it applies
random AXI backpressure (all five AXI4 channels and the AXI4-Lite ones) and AR/AW latency, answers
SLVERR on chosen words and on every access beyond the image (the memory is exactly the image's size,
as for the golden simulator), resets the design in the middle of a run, writes START while busy, or
starts back to back without a reset.
The reference model runs the golden simulator (``pqcompile.sim``) on the same image, with the fault
model of ``expected_result`` for injected SLVERRs; the scoreboard compares every memory byte (but the
cycle words of the stamp records, which the golden simulator only estimates; their compute-cycle and byte
counters are compared exactly) and the status, error code, error PC and retired-instruction count; the coverage
subscriber samples tb/pqa_coverage.py.
Sequences: ``BuildSeq`` (build directories named in $PQA_BUILDS) and ``RandomSeq`` (constrained-random
jobs generated in the simulator process by tb/pqa_gen.py from $PQA_RANDOM = "seed:count[:first[:kinds]]").
"""

from __future__ import annotations

import ast
import itertools
import json
import os
import random
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cocotb
import numpy as np
import pqa_coverage
import pqa_gen
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, First, RisingEdge, Timer
from cocotb.utils import get_sim_time
from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster, AxiRam
from pqa_runner import CLK_NS, hang_bound
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

from pqcompile import build as pqbuild
from pqcompile import sim
from pqcompile.isa import encode
from pqcompile.spec import HwConfig
from pqcompile.spec import load as load_spec

RAM_BYTES = 1 << 20  # the AxiRam; each job's memory is its image's size (accesses beyond: SLVERR)


# ---------------------------------------------------------------------------------------------------
# Reference: the golden simulator plus the documented behaviour on an AXI error (docs/verification.md)
# ---------------------------------------------------------------------------------------------------
def parse_trace(line: str) -> tuple[int, str, dict[str, int]]:
    pc, mn, ops = line.split(" ", 2)
    return int(pc, 16), mn, ast.literal_eval(ops)


def estimated_words(addr: int) -> list[tuple[int, int]]:
    """Byte ranges [lo, hi) of the stamp record at ``addr`` whose counters the golden simulator only estimates
    (its cycle model: ``cycles``, ``compute_cycles``); the others (the byte counters) are exact."""
    spec = load_spec()
    nb = spec.cycles_bits // 8
    return [(addr + nb * c.index, addr + nb * c.index + nb) for c in spec.perf_counters if not c.exact]


@dataclass
class Expected:
    res: sim.Result
    mask: np.ndarray  # bytes to compare (False: an estimated counter of a stamp record, or unspecified)
    opcodes: list[str]
    fault: str = ""  # "", or "<mnemonic>@<pc>" of the instruction that met an injected / out-of-range SLVERR
    plain: sim.Result | None = None  # the golden simulator on the image as it is (what the build expects)


def expected_result(cfg: HwConfig, mem: np.ndarray, insn_base: int, poison: set[int] | frozenset[int] = frozenset()
                    ) -> Expected:
    """What the RTL must produce on memory ``mem`` whose words ``poison`` (word addresses) and every byte
    from ``mem.size`` on answer SLVERR.

    The golden simulator knows only the out-of-range part. The first executed instruction that fetches,
    loads, stores or stamps a bad word stops with ``bus`` at its address; it is found from the simulator's
    trace and the simulator is rerun with that word replaced by a ``stamp`` beyond memory (which stops
    with ``bus`` at the same address, after the same retired instructions). A failing *store* has
    written, in the RTL, every beat of its INCR bursts (256 beats at most, never across 4 KiB) up to and
    including the first burst that meets a bad word, except the refused beats; those bytes are taken
    from a third run that stores the output buffer to scratch memory. The bursts after it that were in
    flight when the error came back (pqa_dma keeps several) may have been written too: those bytes are
    unspecified. A failing *stamp* leaves its record's
    bytes unspecified (not compared). Programs must not write their own instruction stream (tb/pqa_gen.py
    guarantees it).
    """
    spec = load_spec()
    err = spec.errors
    size = int(mem.size)
    bus = cfg.bus_bytes  # bytes of a bus word: the unit of the AXI responses

    def bad_word(w: int) -> bool:
        return (w + 1) * bus > size or w in poison

    def bad(a: int, nbytes: int) -> bool:
        return any(bad_word(w) for w in range(a // bus, -(-(a + nbytes) // bus)))

    first = sim.run(cfg, mem, insn_base, trace=True)
    steps = [parse_trace(line) for line in first.trace]
    fault: tuple[int, str, dict[str, int]] | None = None
    for i, (pc, mn, ops) in enumerate(steps):
        if bad(pc, 8):
            fault = (pc, "fetch", ops)
            break
        if i == len(steps) - 1 and first.err_code in (err["align"], err["limit"]):
            break  # refused before any transfer
        if mn in ("load", "store", "stamp"):
            lo, hi = sim.transfer_words(cfg, mn, ops)
            if bad(lo, hi - lo):
                fault = (pc, mn, ops)
                break
    else:
        if first.err_code == err["illegal_insn"] and bad(first.err_pc, 8):
            fault = (first.err_pc, "fetch", {})
    stop = np.frombuffer(encode("stamp", addr=pqa_gen.STOP_ADDR).to_bytes(8, "little"), np.uint8)
    res = first
    unspecified: tuple[int, int] | None = None  # of a failing store: the bytes after its failing burst
    if fault is not None:
        pc, mn, ops = fault
        m2 = np.array(mem, copy=True)
        m2[pc : pc + 8] = stop
        res = sim.run(cfg, m2, insn_base)
        res.mem[pc : pc + 8] = mem[pc : pc + 8]
        if mn == "store":
            nb, addr = ops["nbytes"], ops["addr"]
            scratch = -(-(size + 16) // 4096) * 4096
            m3 = np.zeros(scratch + cfg.OutBytes + 64, np.uint8)
            m3[:size] = mem
            again = encode("store", nbytes=nb, addr=scratch, half=ops["half"])  # the same bytes of out
            m3[pc : pc + 8] = np.frombuffer(again.to_bytes(8, "little"), np.uint8)
            m3[pc + 8 : pc + 16] = stop
            out = sim.run(cfg, m3, insn_base).mem[scratch : scratch + nb]
            for ba, bn in pqa_gen.bursts(addr, -(-nb // bus), bus):
                failed = False
                for w in range(ba // bus, ba // bus + bn):
                    if bad_word(w):
                        failed = True
                        continue
                    lo, hi = bus * w, min(bus * w + bus, addr + nb)
                    res.mem[lo:hi] = out[lo - addr : hi - addr]
                if failed:
                    unspecified = (ba + bus * bn, addr + nb)  # bursts in flight after it may be written
                    break
    mask = np.ones(size, bool)
    for _pc, mn, ops in steps[: res.insn_count]:
        if mn == "stamp":
            for lo, hi in estimated_words(ops["addr"]):
                mask[lo:hi] = False
        elif mn == "store":
            mask[ops["addr"] : ops["addr"] + ops["nbytes"]] = True
    if fault is not None and fault[1] == "stamp":  # the failing stamp's record: unspecified
        mask[fault[2]["addr"] : fault[2]["addr"] + spec.perf_bytes] = False
    if unspecified is not None:
        mask[unspecified[0] : unspecified[1]] = False
    opcodes = sorted({mn for _, mn, _ in steps} | ({"illegal"} if res.err_code == err["illegal_insn"] else set()))
    return Expected(res, mask, opcodes, f"{fault[1]}@{fault[0]:#x}" if fault else "", first)


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
    notes: list[str] = field(default_factory=list)  # host-side checks that failed (reset, restart)


class PqaJob(uvm_sequence_item):
    def __init__(self, name: str, builddir: str) -> None:
        super().__init__(name)
        self.builddir = builddir
        self.manifest, self.mem = pqbuild.load(builddir)
        self.observed: Observed | None = None


class BuildSeq(uvm_sequence):
    async def body(self) -> None:
        for b in ConfigDB().get(None, "", "BUILDS"):
            job = PqaJob(Path(b).name, b)
            await self.start_item(job)
            await self.finish_item(job)


class RandomSeq(uvm_sequence):
    """Constrained-random jobs (tb/pqa_gen.py), generated here through the compiler's back end, one
    build directory each in a temporary directory (kept under sim_build/regress-failures/ when a job
    fails, by the scoreboard)."""

    async def body(self) -> None:
        seed, count, first, kinds = ConfigDB().get(None, "", "RANDOM")
        cfg = load_spec().config(os.environ.get("PQA_CONFIG", "small"))
        gen_args: dict[str, Any] = {}
        if kinds:  # e.g. "legal": only those kinds, no fault injection (quick mutant runs)
            gen_args = {"kinds": tuple(kinds.split(",")), "weights": (1.0,) * len(kinds.split(",")), "faults": False}
        tmp = Path(tempfile.mkdtemp(prefix="pqa-random-"))
        ConfigDB().set(None, "*", "RANDOM_DIR", str(tmp))
        for i in range(first, first + count):
            out = tmp / f"seed{seed}-job{i}"
            pqa_gen.random_job(seed, i, cfg, out, **gen_args)
            job = PqaJob(out.name, str(out))
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
        self.rng = random.Random(int(os.environ.get("PQA_SEED", "1")))
        self.mem_limit = size
        self.poison: set[int] = set()
        self.latency = 0
        self.first_job = True
        self._wrap_ram()
        while True:
            job = await self.seq_item_port.get_next_item()
            await self.execute(job)
            self.ap.write(job)
            self.seq_item_port.item_done()

    def _wrap_ram(self) -> None:
        """SLVERR on poisoned words and beyond the job's memory; random AR/AW latency."""
        rd, wr = self.ram.read_if._read, self.ram.write_if._write
        bus = len(self.dut.m_axi_wdata) // 8  # bytes of a bus word (poison is a set of bus-word addresses)

        def check(address: int, length: int) -> None:
            if address + length > self.mem_limit or any(w in self.poison for w in
                                                        range(address // bus, -(-(address + length) // bus))):
                raise OSError(f"SLVERR at {address:#x}")

        async def read(address: int, length: int) -> bytes:
            check(address, length)
            return await rd(address, length)

        async def write(address: int, data: bytes) -> None:
            check(address, len(data))
            await wr(address, data)

        self.ram.read_if._read = read
        self.ram.write_if._write = write
        for ch in (self.ram.read_if.ar_channel, self.ram.write_if.aw_channel):
            orig = ch.recv

            async def recv(orig=orig) -> object:  # noqa: ANN001
                t = await orig()
                if self.latency:
                    await ClockCycles(self.dut.clk_i, self.rng.randint(0, self.latency))
                return t

            ch.recv = recv

    def _channels(self) -> list[object]:
        return [self.ram.write_if.aw_channel, self.ram.write_if.w_channel, self.ram.write_if.b_channel,
                self.ram.read_if.ar_channel, self.ram.read_if.r_channel, self.axil.write_if.aw_channel,
                self.axil.write_if.w_channel, self.axil.write_if.b_channel, self.axil.read_if.ar_channel,
                self.axil.read_if.r_channel]

    def set_stimulus(self, stim: dict[str, Any], mem_size: int) -> None:
        self.mem_limit = mem_size
        self.poison = set(stim.get("poison", []))
        self.latency = int(stim.get("latency", 0))
        p = float(stim.get("pause", 0.0))
        for ch in self._channels():
            if p:
                r = random.Random(self.rng.random())
                ch.set_pause_generator(r.random() < p for _ in itertools.count())
            else:
                ch.clear_pause_generator()
                ch.pause = False  # clear_pause_generator leaves the last value set

    async def start(self) -> None:
        bits = self.spec.ctrl_bits
        await self.reg_write("ctrl", (1 << bits["start"]) | (1 << bits["irq_en"]))

    async def execute(self, job: PqaJob) -> None:
        dut, spec = self.dut, self.spec
        stim = job.manifest.get("stim", {})
        notes: list[str] = []
        self.set_stimulus(stim, int(job.mem.size))
        if self.first_job or not stim.get("back_to_back"):
            await self.reset()
        self.first_job = False
        self.ram.write(0, job.mem.tobytes())
        assert await self.reg_read("id") == spec.reg_id_value
        await self.reg_write("insn_base", job.manifest["insn_base"])
        if "reset_after" in stim:  # a run cut by a reset, then the clean run below
            await self.start()
            await ClockCycles(dut.clk_i, int(stim["reset_after"]))
            await self.reset()
            after = {r: await self.reg_read(r) for r in ("status", "err_code", "insn_count", "insn_base", "ctrl")}
            if any(after.values()) or int(dut.irq_o.value):
                notes.append(f"registers after a reset in the middle of a run: {after}, irq {int(dut.irq_o.value)}")
            self.ram.write(0, job.mem.tobytes())
            await self.reg_write("insn_base", job.manifest["insn_base"])
        est = int(job.manifest.get("expected", {}).get("sim_cycle_estimate", 0))
        bound = int(hang_bound(est) * (1 + 10 * float(stim.get("pause", 0)) + 0.2 * int(stim.get("latency", 0))))
        await self.start()
        t0 = get_sim_time("ns")
        restarted = False
        if "restart_after" in stim:  # START while busy: ignored (the run goes on, cycles keep counting)
            await ClockCycles(dut.clk_i, int(stim["restart_after"]))
            if not int(dut.irq_o.value):
                await self.start()
                restarted = True
        hang = False
        if not dut.irq_o.value:
            t = await First(RisingEdge(dut.irq_o), Timer(bound * CLK_NS, unit="ns"))
            hang = isinstance(t, Timer)
        elapsed = int((get_sim_time("ns") - t0) // CLK_NS)
        status = await self.reg_read("status")
        sb = spec.status_bits
        cycles = await self.reg_read("cycles_lo") | (await self.reg_read("cycles_hi") << 32)
        obs = Observed(
            done=bool(status >> sb["done"] & 1), error=bool(status >> sb["error"] & 1),
            err_code=await self.reg_read("err_code"), err_pc=await self.reg_read("err_pc"),
            insn_count=await self.reg_read("insn_count"), cycles=cycles,
            mem=np.frombuffer(self.ram.read(0, job.mem.size), np.uint8).copy(), hang=hang, notes=notes,
        )
        if not hang and restarted and cycles < elapsed - 4:
            obs.notes.append(f"CYCLES {cycles} < {elapsed} cycles since the first START: the START while busy "
                             "restarted the run")
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
        poison = set(job.manifest.get("stim", {}).get("poison", []))
        self.ap.write((job, expected_result(cfg, job.mem, job.manifest["insn_base"], poison)))


class CoverageCollector(uvm_subscriber):
    """Samples the functional coverage model (tb/pqa_coverage.py) once per job; writes the report to
    $PQA_COVERAGE (JSON) in the report phase."""

    def build_phase(self) -> None:
        self.sample = pqa_coverage.sampler(load_spec().config(os.environ.get("PQA_CONFIG", "small")))
        self.errs = {v: k for k, v in load_spec().errors.items()}

    def write(self, item: tuple[PqaJob, Expected]) -> None:
        job, exp = item
        self.sample(pqa_coverage.job_sample(job.manifest, exp.opcodes, self.errs[exp.res.err_code]))

    def report_phase(self) -> None:
        path = os.environ.get("PQA_COVERAGE")
        if path:
            pqa_coverage.write(path)


@dataclass
class JobResult:
    build: str
    passed: bool = True
    errors: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    output: np.ndarray | None = None  # the RTL's output region (not written into the results JSON)


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
            Path(path).write_text(json.dumps([{k: v for k, v in r.__dict__.items() if k != "output"}
                                              for r in self.results], indent=1))

    def compare(self, job: PqaJob, expected: Expected) -> JobResult:
        assert job.observed is not None
        res = check_run(job.builddir, job.manifest, expected, job.observed)
        res.info["stim"] = job.manifest.get("stim", {})
        if res.errors and job.manifest.get("stim", {}).get("kind"):  # a random job: keep it to reproduce it
            keep = Path(__file__).resolve().parents[1] / "sim_build" / "regress-failures" / Path(job.builddir).name
            shutil.rmtree(keep, ignore_errors=True)
            shutil.copytree(job.builddir, keep)
            res.info["kept"] = str(keep)
        out = os.environ.get("PQA_RESULTS")
        if out and res.output is not None:  # the RTL's output region, for the runner (never into the build)
            np.save(f"{out}.{len(self.results)}.npy", res.output)
        return res


def check_run(builddir: str | Path, manifest: dict[str, Any], expected: Expected, obs: Observed) -> JobResult:
    """The one pass/fail rule of the testbench (pyuvm scoreboard and the HDL-memory runner alike): the RTL's
    status, ERR_CODE, ERR_PC, INSN_COUNT and every memory byte equal the golden simulator's, but the
    counters of the stamp records that the simulator only estimates (cycles: compared in the benchmarks);
    the exact counters of every record (``compute_cycles``, ``rd_bytes``, ``wr_bytes``) are compared, and
    named record by record. And the golden simulator's run equals what the compiler wrote into the build
    (``pqcompile.build.check_expected``: error state, retired instructions, ``expected_output.npy``).
    ``JobResult.output`` is the RTL's output region when the program completed."""
    ref = expected.res
    res = JobResult(str(builddir))
    err = res.errors
    err += obs.notes
    build_errors = pqbuild.check_expected(builddir, manifest, expected.plain) if expected.plain is not None else []
    err += build_errors
    if obs.hang:
        err.append("no interrupt within the cycle bound (hang)")
    if (obs.done, obs.error) != (ref.done, not ref.done):
        err.append(f"status done={obs.done} error={obs.error}, expected done={ref.done}")
    for what, got, exp in (("err_code", obs.err_code, ref.err_code), ("err_pc", obs.err_pc, ref.err_pc),
                           ("insn_count", obs.insn_count, ref.insn_count)):
        if got != exp:
            err.append(f"{what} = {got:#x}, golden simulator {exp:#x}")
    if not obs.hang and not obs.irq_cleared:
        err.append("interrupt still high after clearing DONE/ERROR")
    mask = expected.mask.copy()
    st = manifest.get("stamps")
    if st:
        for i in range(len(st["labels"])):
            for lo, hi in estimated_words(pqbuild.stamp_addr(st, i)):
                mask[lo:hi] = False
        if ref.done and obs.done:
            got, want = pqbuild.read_perf(manifest, obs.mem), pqbuild.read_perf(manifest, ref.mem)
            for c in load_spec().perf_counters:
                for label, g, w in zip(st["labels"], got[c.name], want[c.name], strict=True):
                    if c.exact and g != w:
                        err.append(f"stamp '{label}': {c.name} = {g}, golden simulator {w}")
    diff = np.flatnonzero((obs.mem != ref.mem) & mask)
    if diff.size:
        a = int(diff[0])
        err.append(f"{diff.size} memory bytes differ from the golden simulator; first at {a:#x}: "
                   f"RTL {obs.mem[a]:#04x}, simulator {ref.mem[a]:#04x}")
    res.passed = not err
    res.info = {
        "done": obs.done, "err_code": obs.err_code, "err_pc": obs.err_pc, "insn_count": obs.insn_count,
        "cycles": obs.cycles, "stamps": pqbuild.read_stamps(manifest, obs.mem) if st and ref.done else [],
        "perf": pqbuild.read_perf(manifest, obs.mem) if st and ref.done else {},
        "bytes_compared": int(mask.sum()), "sim_cycle_estimate": ref.cycles, "hang": obs.hang,
        "fault": expected.fault, "build_mismatches": len(build_errors),
    }
    if ref.done and obs.done and "output" in manifest:
        res.output = pqbuild.read_output(manifest, obs.mem)
    return res


class PqaEnv(uvm_env):
    def build_phase(self) -> None:
        self.seqr = uvm_sequencer("seqr", self)
        ConfigDB().set(None, "*", "SEQR", self.seqr)
        self.driver = HostDriver("driver", self)
        self.model = ReferenceModel("model", self)
        self.scoreboard = Scoreboard("scoreboard", self)
        self.coverage = CoverageCollector("coverage", self)

    def connect_phase(self) -> None:
        self.driver.seq_item_port.connect(self.seqr.seq_item_export)
        self.driver.ap.connect(self.model.analysis_export)
        self.model.ap.connect(self.scoreboard.export)
        self.model.ap.connect(self.coverage.analysis_export)


class PqaBuildTest(uvm_test):
    """Runs every build directory named in $PQA_BUILDS through the environment."""

    def build_phase(self) -> None:
        builds = [b for b in os.environ["PQA_BUILDS"].split(os.pathsep) if b]
        ConfigDB().set(None, "*", "BUILDS", builds)
        ConfigDB().set(None, "*", "MEM_BYTES", max(int(pqbuild.read(b)["mem_bytes"]) for b in builds))
        self.env = PqaEnv("env", self)

    async def run_phase(self) -> None:
        self.raise_objection()
        await BuildSeq("builds").start(ConfigDB().get(None, "", "SEQR"))
        self.drop_objection()


class PqaRandomTest(uvm_test):
    """Constrained-random regression: $PQA_RANDOM = "seed:count[:first[:kinds]]" jobs of tb/pqa_gen.py."""

    def build_phase(self) -> None:
        seed, count, first, kinds = (os.environ["PQA_RANDOM"].split(":") + ["0", ""])[:4]
        ConfigDB().set(None, "*", "RANDOM", (int(seed), int(count), int(first), kinds))
        ConfigDB().set(None, "*", "MEM_BYTES", RAM_BYTES)
        self.env = PqaEnv("env", self)

    async def run_phase(self) -> None:
        self.raise_objection()
        await RandomSeq("random").start(ConfigDB().get(None, "", "SEQR"))
        self.drop_objection()

    def final_phase(self) -> None:
        shutil.rmtree(ConfigDB().get(None, "", "RANDOM_DIR"), ignore_errors=True)
