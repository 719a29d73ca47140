"""Block bench of ``pqa_regs`` (AXI4-Lite slave) with cocotbext-axi's AxiLiteMaster; every offset, bit and
value comes from the spec (``pqcompile.spec``): ID value, reset values, INSN_BASE read/write with partial
byte strobes, unmapped offsets (read 0, writes ignored, OKAY), CTRL.START gives one start pulse and
reads 0, a START while BUSY is ignored (no pulse), STATUS.BUSY follows the core, DONE / ERROR set by
the core's finish with the error code, write-1-to-clear, the interrupt = IRQ_EN and (DONE or ERROR), a new
START clears DONE/ERROR, the read-only counters, all under random AXI4-Lite backpressure."""

from __future__ import annotations

import itertools
import random

import cocotb
import pytest
from block_util import SIMS, check_block, start_clock
from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge
from cocotbext.axi import AxiLiteBus, AxiLiteMaster
from pqa_runner import block_sources

from pqcompile.spec import load


class Regs:
    def __init__(self, dut: object) -> None:
        self.dut, self.spec = dut, load()
        self.m = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), dut.clk_i, dut.rst_ni, reset_active_level=False)
        self.starts = 0
        cocotb.start_soon(self._count_starts())

    async def _count_starts(self) -> None:
        while True:
            await RisingEdge(self.dut.start_o)
            self.starts += 1
            await RisingEdge(self.dut.clk_i)
            await FallingEdge(self.dut.clk_i)
            assert not int(self.dut.start_o.value), "START is a single-cycle pulse"

    async def read(self, name_or_off: str | int) -> int:
        off = self.spec.reg(name_or_off) if isinstance(name_or_off, str) else name_or_off
        r = await self.m.read(off, 4)
        assert int(r.resp) == 0
        return int.from_bytes(r.data, "little")

    async def write(self, name_or_off: str | int, value: int, nbytes: int = 4, lane: int = 0) -> None:
        off = self.spec.reg(name_or_off) if isinstance(name_or_off, str) else name_or_off
        r = await self.m.write(off + lane, value.to_bytes(nbytes, "little"))
        assert int(r.resp) == 0


async def finish(dut: object, code: int) -> None:
    await FallingEdge(dut.clk_i)
    dut.err_code_i.value = code
    dut.finish_i.value = 1
    await FallingEdge(dut.clk_i)
    dut.finish_i.value = 0


@cocotb.test()
async def registers_follow_the_spec(dut: object) -> None:
    spec = load()
    for s in ("busy_i", "finish_i", "err_code_i", "err_pc_i", "insn_count_i", "cycles_i"):
        getattr(dut, s).value = 0
    dut.rst_ni.value = 0
    r = Regs(dut)
    await start_clock(dut)
    rng = random.Random(cocotb.RANDOM_SEED)
    for rnd in range(2):
        if rnd:  # random backpressure on the five AXI4-Lite channels
            for ch in (r.m.write_if.aw_channel, r.m.write_if.w_channel, r.m.write_if.b_channel,
                       r.m.read_if.ar_channel, r.m.read_if.r_channel):
                g = random.Random(rng.random())
                ch.set_pause_generator(g.random() < 0.5 for _ in itertools.count())
        cb, sb = spec.ctrl_bits, spec.status_bits
        if rnd == 0:  # reset values
            for name in ("ctrl", "status", "insn_base"):
                assert await r.read(name) == 0, f"{name} after reset"
            assert int(dut.irq_o.value) == 0
        assert await r.read("id") == spec.reg_id_value
        # the counters and error registers read what the core drives
        vals = {"err_pc": rng.getrandbits(32), "insn_count": rng.getrandbits(32)}
        cyc = rng.getrandbits(64)
        dut.err_pc_i.value, dut.insn_count_i.value, dut.cycles_i.value = vals["err_pc"], vals["insn_count"], cyc
        dut.err_code_i.value = 3
        await ClockCycles(dut.clk_i, 1)
        for k, v in vals.items():
            assert await r.read(k) == v, k
        assert await r.read("cycles_lo") == cyc & 0xFFFFFFFF and await r.read("cycles_hi") == cyc >> 32
        assert await r.read("err_code") == 3
        # INSN_BASE: full and byte-lane writes
        base = rng.getrandbits(32)
        await r.write("insn_base", base)
        assert await r.read("insn_base") == base
        await r.write("insn_base", 0xA5, nbytes=1, lane=2)
        base = (base & ~0x00FF0000) | 0x00A50000
        assert await r.read("insn_base") == base
        # unmapped offsets: read 0, writes ignored
        used = {reg["offset"] for reg in spec.registers}
        for off in (0x24, 0x40, 0xFC):
            assert off not in used
            await r.write(off, 0xFFFFFFFF)
            assert await r.read(off) == 0
        assert await r.read("insn_base") == base
        # START: one pulse, reads 0; IRQ_EN reads back
        s0 = r.starts
        await r.write("ctrl", (1 << cb["start"]) | (1 << cb["irq_en"]))
        await ClockCycles(dut.clk_i, 2)
        assert r.starts == s0 + 1, "START gave no start pulse"
        assert await r.read("ctrl") == 1 << cb["irq_en"]
        # while BUSY: STATUS.BUSY reads 1 and START is ignored
        dut.busy_i.value = 1
        await ClockCycles(dut.clk_i, 1)
        assert await r.read("status") >> sb["busy"] & 1
        await r.write("ctrl", (1 << cb["start"]) | (1 << cb["irq_en"]))
        await ClockCycles(dut.clk_i, 2)
        assert r.starts == s0 + 1, "START while BUSY was not ignored"
        dut.busy_i.value = 0
        # finish with and without error: DONE / ERROR, interrupt, write-1-to-clear
        for code in (0, rng.randint(1, 4)):
            await finish(dut, code)
            st = await r.read("status")
            assert (st >> sb["done"] & 1, st >> sb["error"] & 1) == (int(code == 0), int(code != 0))
            assert int(dut.irq_o.value) == 1
            await r.write("ctrl", 0)  # IRQ_EN off masks the interrupt, status stays
            await ClockCycles(dut.clk_i, 1)
            assert int(dut.irq_o.value) == 0 and await r.read("status") == st
            await r.write("ctrl", 1 << cb["irq_en"])
            await ClockCycles(dut.clk_i, 1)
            assert int(dut.irq_o.value) == 1
            other = sb["error"] if code == 0 else sb["done"]
            await r.write("status", 1 << other)  # clearing the other bit changes nothing
            assert await r.read("status") == st
            await r.write("status", (1 << sb["done"]) | (1 << sb["error"]))
            await ClockCycles(dut.clk_i, 1)
            assert await r.read("status") == 0 and int(dut.irq_o.value) == 0
        # a new START clears DONE / ERROR
        await finish(dut, 2)
        assert await r.read("status") >> sb["error"] & 1
        await r.write("ctrl", 1 << cb["start"])
        await ClockCycles(dut.clk_i, 1)
        assert await r.read("status") & ((1 << sb["done"]) | (1 << sb["error"])) == 0
        assert r.starts == s0 + 2


@pytest.mark.rtl
@pytest.mark.parametrize("sim_name", SIMS)
def test_regs(sim_name: str) -> None:
    check_block(sim_name, "pqa_regs", __file__, block_sources("pqa_regs"), {})
