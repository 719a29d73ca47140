"""Block bench of ``pqa_lookup`` (with its ``pqa_postproc``) against ``pqcompile.sim.lookup`` and
``pqcompile.sim.requantize``: table entries at the extremes of LutW (sign extension from LUT_BYTES bytes),
int32 biases at the extremes, accumulators that wrap at AccW, odd m (output bytes not word aligned,
column offsets not aligned), c = 1 and c = CMax, k = 1, every output width and ReLU, the two banks of the
index store (the other bank holds junk); and the documented
cycle count (ceil(m/NOUT)*ceil(c/NS) + 3 per column, start cycle included). The table is packed into rows
of NS lanes of NOUT entries by ``pqcompile.layout`` (c leaves the last subspace group partially full, m the
last output group). Parametrized over LutW (8, and 12 stored in two bytes), AccW (32, 20), CMax (32, 5),
the lanes NS x NOUT (3 x 4 and 2 x 3; slow: 1 x 1 and 5 x 32, the three layouts of pqa_rowmem's writes and
bias / output groups wider than a bus word) and buffer sizes that are not powers of two."""

from __future__ import annotations

import random

import cocotb
import numpy as np
import pytest
from block_util import SIMS, check_block, load_words, params, start_clock
from cocotb.triggers import ClockCycles, RisingEdge
from pqa_runner import TB, block_sources

from pqcompile import layout, sim
from pqcompile.isa import field_limit
from pqcompile.spec import HwConfig, load

SHIFT_MAX = field_limit("quant", "shift")  # the largest requantization shift (the spec's limit)


async def read_out(dut: object, start: int, n: int) -> bytes:
    out = b""
    for w in range(start // 8, -(-(start + n) // 8)):
        dut.out_raddr_i.value = w
        await ClockCycles(dut.clk_i, 2)
        out += int(dut.out_rdata_o.value).to_bytes(8, "little")
    off = start - 8 * (start // 8)
    return out[off : off + n]


@cocotb.test()
async def lookup_matches_golden(dut: object) -> None:
    p = params()
    lutw, accw, cmax = p["LutW"], p["AccW"], p["CMax"]
    ns, nout = p["NS"], p["NOUT"]
    # the table layout of the bench's lanes (a 64-bit bus)
    cfg = HwConfig("tb", "block bench", {**load().config("small").params, "LutW": lutw, "NS": ns, "NOUT": nout,
                                         "LutBytes": p["LutBytes"]})
    rng = random.Random(cocotb.RANDOM_SEED)
    np_rng = np.random.default_rng(cocotb.RANDOM_SEED)
    dut.start_i.value = 0
    dut.load_we_i.value = 0
    dut.idx_we_i.value = 0
    await start_clock(dut)
    await load_words(dut, 2, bytes(np_rng.integers(0, 256, p["OutBytes"], dtype=np.uint8).tobytes()))
    lo, hi = -(1 << (lutw - 1)), (1 << (lutw - 1)) - 1
    wrapped = 0
    for i in range(40):
        while True:
            c = rng.choice([1, cmax, rng.randint(1, cmax)])
            k = rng.choice([1, 2, 3, 7, 16])
            m = rng.randint(1, min(2 * p["BiasWords"], 70))
            if layout.lut_bytes(cfg, c, k, m) <= cfg.lut_cap and m <= p["OutBytes"] - 8:
                break
        col_out = rng.randint(0, p["OutBytes"] - m)
        extreme = i % 3 == 0
        lut = np_rng.choice([lo, hi], (c, k, m)) if extreme else np_rng.integers(lo, hi + 1, (c, k, m))
        bias = np_rng.choice([-(1 << 31), (1 << 31) - 1], m) if extreme else np_rng.integers(-(1 << 20), 1 << 20, m)
        idx = np_rng.integers(0, k, c)
        mult, shift = rng.randint(0, 0xFFFF), rng.choice([0, 1, rng.randint(0, SHIFT_MAX)])
        relu, bits = rng.randint(0, 1), rng.randint(2, 8)
        await load_words(dut, 0, layout.pack_lut(cfg, lut).tobytes())
        await load_words(dut, 1, bias.astype("<i4").tobytes())
        dut.idx_we_i.value = 1
        groups = -(-c // ns)
        bank = i % 2  # the case's bank of the index store; junk in the other one must not reach the outputs
        for b in (bank, 1 - bank):
            dut.idx_wbank_i.value = b
            for g in range(groups):  # lanes past c get junk: the unit must ignore them
                lanes = [int(idx[g * ns + s]) if g * ns + s < c and b == bank else rng.randrange(256)
                         for s in range(ns)]
                dut.idx_group_i.value = g
                dut.idx_wdata_i.value = sum(v << (8 * s) for s, v in enumerate(lanes))
                await RisingEdge(dut.clk_i)
        dut.idx_we_i.value = 0
        dut.idx_rbank_i.value = bank
        before = await read_out(dut, col_out - 1, 1) if col_out else b""
        after = await read_out(dut, col_out + m, 1) if col_out + m < p["OutBytes"] else b""
        dut.k_i.value, dut.c_i.value, dut.m_i.value = k, c, m
        dut.mult_i.value, dut.shift_i.value, dut.relu_i.value, dut.bits_i.value = mult, shift, relu, bits
        dut.col_out_i.value = col_out
        dut.start_i.value = 1
        await RisingEdge(dut.clk_i)
        dut.start_i.value = 0
        cycles = 0
        ocycles = -(-m // nout) * groups
        while cycles < ocycles + 10:
            await RisingEdge(dut.clk_i)
            cycles += 1
            if dut.done_o.value:
                break
        # done_o ceil(m/NOUT)*ceil(c/NS) + 2 cycles after the start cycle (the header's "+3" counts that cycle)
        assert cycles == ocycles + 2, f"done after {cycles} cycles, expected {ocycles + 2}"
        acc = sim.lookup(idx[None, :], lut, bias, accw)
        exp = sim.requantize(acc, mult, shift, bool(relu), bits)[0].astype(np.int8).tobytes()
        got = await read_out(dut, col_out, m)
        assert got == exp, f"case {i}: c={c} k={k} m={m} col_out={col_out}: RTL {got.hex()} != {exp.hex()}"
        if col_out:
            assert await read_out(dut, col_out - 1, 1) == before, "byte before the column overwritten"
        if col_out + m < p["OutBytes"]:
            assert await read_out(dut, col_out + m, 1) == after, "byte after the column overwritten"
        full = lut[np.arange(c), idx, :].astype(np.int64).sum(0) + bias
        wrapped += int((full != acc[0]).sum())
    if accw < 34:
        assert wrapped > 0, "no accumulator wrapped at AccW"


PARAMS = [
    {"LutW": 12, "AccW": 20, "CMax": 5, "NS": 3, "NOUT": 4, "LutBytes": 3000, "BiasWords": 7, "OutBytes": 200},
    {"LutW": 8, "AccW": 32, "CMax": 32, "NS": 2, "NOUT": 3, "LutBytes": 4096, "BiasWords": 32, "OutBytes": 512},
    pytest.param({"LutW": 8, "AccW": 32, "CMax": 32, "NS": 1, "NOUT": 1, "LutBytes": 16384, "BiasWords": 32,
                  "OutBytes": 4096}, marks=pytest.mark.slow),
    pytest.param({"LutW": 16, "AccW": 32, "CMax": 32, "NS": 5, "NOUT": 32, "LutBytes": 65536, "BiasWords": 32,
                  "OutBytes": 4096}, marks=pytest.mark.slow),
]


def _id(p: dict[str, int]) -> str:
    return f"lutw{p['LutW']}_accw{p['AccW']}_cmax{p['CMax']}_ns{p['NS']}_nout{p['NOUT']}"


@pytest.mark.rtl
@pytest.mark.parametrize("sim_name", SIMS)
@pytest.mark.parametrize("parameters", PARAMS, ids=_id)
def test_lookup(sim_name: str, parameters: dict[str, int]) -> None:
    srcs = block_sources("pqa_ram", "pqa_rowmem", "pqa_widemem", "pqa_postproc", "pqa_lookup",
                         extra=[TB / "lookup" / "tb_lookup.sv"])
    check_block(sim_name, "tb_lookup", __file__, srcs, parameters)
