"""Block bench of ``pqa_lookup`` (with its ``pqa_postproc``) against ``pqcompile.sim.lookup`` and
``pqcompile.sim.requantize``: table entries at the extremes of LutW (sign extension from LUT_BYTES bytes), int32
biases at the extremes, accumulators that wrap at AccW, odd m (output bytes not word aligned: column j at byte j*m),
every third case at an output offset and stride (``run.ooff``, ``run.ostride``: column j at byte ooff + j*ostride,
the bytes between untouched), c = 1 and c = CMax, k = 1, every output width and ReLU; runs of several columns
streamed through the index queue by an encoder stand-in (tb_lookup), which stalls now and then, lanes past c holding
junk; and the documented cycle count without stalls (:func:`done_cycles`). The table is packed into rows of NS lanes
of NOUT entries by ``pqcompile.layout`` (c leaves the last subspace group partially full, m the last output group);
at LutW > 8 every other case is packed (``shape.pack``: byte entries, two table rows to a buffer row, each lane
picking its half). Parametrized over LutW (8, and 12 stored in two bytes), AccW (32, 20), CMax (32, 5), the lanes NS
x NOUT (3 x 4 and 2 x 3; slow: 1 x 1 and 5 x 32, the three layouts of pqa_rowmem's writes and bias / output groups
wider than a bus word) and buffer sizes that are not powers of two."""

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


def done_cycles(groups: int, outs: int, n: int) -> int:
    """Cycles from the start cycle (0) to done when the stand-in never stalls: it asks for group q at
    e_q = max(e_{q-1} + 1, 1, l_{q-D} + M) (the queue's credit; D = sim.IDX_DEPTH) and writes it a cycle
    later, the unit issues its M = ceil(m/NOUT) output groups from l_q = max(l_{q-1} + M, e_q + 1) (an
    empty queue bypassed), and the
    last write comes two cycles after the last issue (sim.run_cycles, the look-up's part)."""
    e: list[int] = []
    lk: list[int] = []
    for q in range(n * groups):
        eq = max(e[-1] + 1 if e else 1, lk[q - sim.IDX_DEPTH] + outs if q >= sim.IDX_DEPTH else 0)
        e.append(eq)
        lk.append(max(lk[-1] + outs if lk else 0, eq + 1))
    return lk[-1] + outs - 1 + 2


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
    dut.pack_i.value = 0
    dut.load_we_i.value = 0
    dut.stall_i.value = 0
    dut.ostride_i.value = 0
    dut.ooff_i.value = 0
    dut.hold_i.value = 0
    dut.acc_i.value = 0
    await start_clock(dut)
    lo, hi = -(1 << (lutw - 1)), (1 << (lutw - 1)) - 1
    wrapped = packed = 0
    for i in range(40):
        pack = cfg.can_pack and i % 2 == 1  # byte entries, two table rows to a buffer row (shape.pack)
        while True:
            c = rng.choice([1, cmax, rng.randint(1, cmax)])
            k = rng.choice([1, 2, 3, 7, 16])
            m = rng.randint(1, min(2 * p["BiasWords"], 70))
            n = rng.choice([1, 2, rng.randint(1, 6)])
            # every third case writes column j at ooff + j*step (run.ooff, run.ostride), else dense from 0
            step = rng.choice([m, m + 1, m + rng.randint(0, 9)]) if i % 3 == 1 else m
            off = rng.randint(1, 13) if i % 3 == 1 else 0
            fits = layout.lut_bytes(cfg, c, k, m, pack) <= cfg.lut_cap
            if fits and off + (n - 1) * step + m <= p["OutBytes"] - 8 and n * -(-c // ns) <= 256:
                break
        extreme = i % 3 == 0
        stall = i % 4 == 3
        tlo, thi = (-128, 127) if pack else (lo, hi)
        lut = np_rng.choice([tlo, thi], (c, k, m)) if extreme else np_rng.integers(tlo, thi + 1, (c, k, m))
        bias = np_rng.choice([-(1 << 31), (1 << 31) - 1], m) if extreme else np_rng.integers(-(1 << 20), 1 << 20, m)
        idx = np_rng.integers(0, k, (n, c))
        mult, shift = rng.randint(0, 0xFFFF), rng.choice([0, 1, rng.randint(0, SHIFT_MAX)])
        relu, bits = rng.randint(0, 1), rng.randint(2, 8)
        junk = bytes(np_rng.integers(0, 256, p["OutBytes"], dtype=np.uint8).tobytes())
        await load_words(dut, 2, junk)
        await load_words(dut, 0, layout.pack_lut(cfg, lut, pack).tobytes())
        packed += pack
        await load_words(dut, 1, bias.astype("<i4").tobytes())
        groups = -(-c // ns)
        words = b""
        for j in range(n):
            for g in range(groups):  # lanes past c get junk: the unit must ignore them
                lanes = [int(idx[j, g * ns + s]) if g * ns + s < c else rng.randrange(256) for s in range(ns)]
                words += sum(v << (8 * s) for s, v in enumerate(lanes)).to_bytes(8, "little")
        await load_words(dut, 3, words)
        dut.k_i.value, dut.c_i.value, dut.m_i.value, dut.n_i.value, dut.pack_i.value = k, c, m, n, int(pack)
        dut.ostride_i.value = 0 if step == m and i % 2 == 0 else step  # 0 and m mean the same
        dut.ooff_i.value = off
        dut.mult_i.value, dut.shift_i.value, dut.relu_i.value, dut.bits_i.value = mult, shift, relu, bits
        dut.stall_i.value = int(stall)
        dut.start_i.value = 1
        await RisingEdge(dut.clk_i)
        dut.start_i.value = 0
        await RisingEdge(dut.done_o)
        await ClockCycles(dut.clk_i, 2)
        outs = -(-m // nout)
        if not stall:
            assert int(dut.cycles_o.value) == done_cycles(groups, outs, n), \
                f"case {i}: done after {int(dut.cycles_o.value)} cycles, expected {done_cycles(groups, outs, n)}"
        acc = sim.lookup(idx, lut, bias, accw)
        y = sim.requantize(acc, mult, shift, bool(relu), bits).astype(np.int8).view(np.uint8)
        span = off + (n - 1) * step + m + 1  # the outputs and one byte past them
        exp = bytearray(junk[:span])
        for j in range(n):
            exp[off + j * step : off + j * step + m] = y[j].tobytes()
        got = await read_out(dut, 0, span)
        assert got == bytes(exp), (f"case {i}: n={n} c={c} k={k} m={m} ooff={off} step={step}: RTL {got.hex()} "
                                   f"!= {bytes(exp).hex()} (bytes outside the outputs must keep their values)")
        full = lut[np.arange(c), idx, :].astype(np.int64).sum(1) + bias
        wrapped += int((full != acc).sum())
    if accw < 34:
        assert wrapped > 0, "no accumulator wrapped at AccW"
    assert packed == (20 if cfg.can_pack else 0)


async def _one_column(dut: object, cfg: HwConfig, lut: np.ndarray, bias: np.ndarray, idx: np.ndarray, pack: bool,
                      hold: bool, acc: bool) -> None:
    """Load ``lut`` / ``bias`` and one column's index groups, run it (n = 1) with ``hold`` / ``acc``."""
    c, ns = lut.shape[0], cfg.NS
    await load_words(dut, 0, layout.pack_lut(cfg, lut, pack).tobytes())
    await load_words(dut, 1, bias.astype("<i4").tobytes())
    words = b""
    for g in range(-(-c // ns)):
        lanes = [int(idx[g * ns + s]) if g * ns + s < c else 0 for s in range(ns)]
        words += sum(v << (8 * s) for s, v in enumerate(lanes)).to_bytes(8, "little")
    await load_words(dut, 3, words)
    dut.k_i.value, dut.c_i.value, dut.m_i.value, dut.n_i.value = lut.shape[1], c, lut.shape[2], 1
    dut.pack_i.value, dut.hold_i.value, dut.acc_i.value = int(pack), int(hold), int(acc)
    dut.start_i.value = 1
    await RisingEdge(dut.clk_i)
    dut.start_i.value = 0
    await RisingEdge(dut.done_o)
    await ClockCycles(dut.clk_i, 2)


@cocotb.test()
async def lookup_chains_a_column_over_runs(dut: object) -> None:
    """A column's subspaces summed over two to four runs (``run.dst`` = none holds the accumulators, ``run.acc``
    starts from them): each run its own table of some of the c subspaces; the held runs write nothing, the
    last one writes requantize(bias + every run's entries, wrapped at AccW), equal to one run over all c."""
    p = params()
    lutw, accw, cmax = p["LutW"], p["AccW"], p["CMax"]
    cfg = HwConfig("tb", "block bench", {**load().config("small").params, "LutW": lutw, "NS": p["NS"],
                                         "NOUT": p["NOUT"], "LutBytes": p["LutBytes"]})
    rng = random.Random(cocotb.RANDOM_SEED + 1)
    np_rng = np.random.default_rng(cocotb.RANDOM_SEED + 1)
    dut.load_we_i.value = dut.stall_i.value = dut.ostride_i.value = dut.ooff_i.value = 0
    await start_clock(dut)
    lo, hi = -(1 << (lutw - 1)), (1 << (lutw - 1)) - 1
    for i in range(12):
        while True:
            parts = [rng.choice([1, cmax, rng.randint(1, cmax)]) for _ in range(rng.randint(2, 4))]
            k, m = rng.choice([1, 3, 16]), rng.randint(1, min(2 * p["BiasWords"], 40))
            if all(layout.lut_bytes(cfg, c, k, m) <= cfg.lut_cap for c in parts) and m <= p["OutBytes"] - 8:
                break
        luts = [np_rng.integers(lo, hi + 1, (c, k, m)) for c in parts]
        bias = np_rng.integers(-(1 << 30), 1 << 30, m)
        idx = [np_rng.integers(0, k, c) for c in parts]
        mult, shift, bits = rng.randint(1, 0xFFFF), rng.randint(0, 20), rng.randint(2, 8)
        dut.mult_i.value, dut.shift_i.value, dut.relu_i.value, dut.bits_i.value = mult, shift, 0, bits
        dut.ostride_i.value, dut.ooff_i.value = 0, 0
        junk = bytes(np_rng.integers(0, 256, p["OutBytes"], dtype=np.uint8).tobytes())
        await load_words(dut, 2, junk)
        for r, (lut, ix) in enumerate(zip(luts, idx, strict=True)):
            last = r == len(parts) - 1
            # the held runs' bias is junk: only the first run reads it
            b = bias if r == 0 else np_rng.integers(-(1 << 30), 1 << 30, m)
            await _one_column(dut, cfg, lut, b, ix, False, hold=not last, acc=r > 0)
            if not last:
                assert await read_out(dut, 0, m + 1) == junk[: m + 1], f"case {i}: run {r} (held) wrote outputs"
        whole = np.concatenate(luts)
        acc = sim.lookup(np.concatenate(idx)[None, :], whole, bias, accw)
        exp = sim.requantize(acc, mult, shift, False, bits).astype(np.int8).tobytes()
        got = await read_out(dut, 0, m + 1)
        assert got[:m] == exp and got[m:] == junk[m : m + 1], \
            f"case {i}: subspaces {parts} k={k} m={m}: RTL {got[:m].hex()} != {exp.hex()}"
    dut.hold_i.value = dut.acc_i.value = 0


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
