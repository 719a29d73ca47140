"""Block bench of ``pqa_vec`` (the ``pool`` / ``add`` vector unit, with its ``pqa_postproc``) against the
golden simulator's functions (``pqcompile.sim.requantize``, ``round_shift_clamp``, ``isa.clamp_range``), on
the act and output buffers (``pqa_widemem``, as in ``pqa_top``; wrapper ``tb_vec.sv``).

- ``pool``: channels-last fmaps with h, w, ch of 1, odd values, one pixel of many channels, one channel of
  many pixels, fmaps filling the act buffer exactly; int8 extremes (all -128, all 127, mixed) and
  channel sums built to land on exact rounding halves (and one either side) at shifts >= 1; shift 0 and
  the spec's limit; mult 0, 1, 0xFFFF; every output width, ReLU, and the unsigned clamp at every width below ActW.
- ``add``: n = 1, 2, 3, odd, the whole of the smaller buffer; ma / mb of 0, 1, 0x8000, 0xFFFF and random,
  int8 extremes, the second operand either loaded or left by the previous ``pool`` / ``add``; quant's mult
  driven with junk (it must be ignored), as are the fmap inputs during ``add`` and n / ma / mb during
  ``pool``.
- every op: the whole output buffer is read back and compared with the model (bytes beyond the written
  range untouched); the act buffer beyond the fmap / n holds junk; the cycle count from the start cycle to
  the done cycle (both included) is exactly h*w*ceil(ch/VL) + 3 (pool) or ceil(n/VL) + 3 (add), the vector
  unit's share of docs/theory.md's figures (the other 8 are the controller's fetch, decode and retire);
  exactly ch / n bytes written, each write at the byte after the ones before, its enables on lanes 0 ..
  j-1, none outside the op, one done pulse (HDL monitor in tb_vec.sv). Lanes VL = 3 (fast; ch and n leave
  the last group partially full), 1 and 18 (slow).
- back-to-back chains: the next op starts in the cycle after done (the earliest the unit accepts),
  reading bytes the previous op wrote in its done cycle.
A tally of the corners reached (exact halves up and down, saturation at both ends, ReLU, unsigned top
range and clamps, shift 0, every output width) must be complete for both ops. Parametrized over buffer
sizes that are not powers of two (odd word counts), act buffer larger and smaller than the output buffer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import cocotb
import numpy as np
import pytest
from block_util import SIMS, check_block, load_words, params, start_clock
from cocotb.triggers import FallingEdge, RisingEdge, with_timeout
from pqa_runner import TB, block_sources

from pqcompile import sim
from pqcompile.isa import clamp_range, field_limit

SHIFT_MAX = field_limit("quant", "shift")  # the largest requantization shift (the spec's limit)

ACT, OUT = 0, 1  # tb_vec's load_sel_i
CLK_NS = 10  # block_util.start_clock's period
ERRS = ("byte enable not one-hot", "k-th write not at output byte k", "write outside an op",
        "done outside an op or twice")


@dataclass
class Quant:
    mult: int
    shift: int
    relu: int
    unsigned: int
    bits: int


@dataclass
class Op:
    add: bool
    q: Quant
    h: int = 1
    w: int = 1
    ch: int = 1
    n: int = 1
    ma: int = 0
    mb: int = 0

    @property
    def length(self) -> int:
        """Elements walked."""
        return self.n if self.add else self.h * self.w * self.ch

    def issue_cycles(self, vl: int) -> int:
        """The unit's issue cycles with VL lanes: VL elements each (pool: a group of VL channels of a pixel)."""
        return -(-self.n // vl) if self.add else self.h * self.w * -(-self.ch // vl)

    @property
    def written(self) -> int:
        return self.n if self.add else self.ch

    def __str__(self) -> str:
        q = self.q
        what = f"add n={self.n} ma={self.ma:#x} mb={self.mb:#x}" if self.add else \
            f"pool h={self.h} w={self.w} ch={self.ch} mult={q.mult:#x}"
        return f"{what} shift={q.shift} relu={q.relu} unsigned={q.unsigned} bits={q.bits}"


def model(op: Op, act: np.ndarray, out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the value before rounding, the output values) of ``op`` over the buffers, as pqcompile.sim.run."""
    q = op.q
    if op.add:
        a = act[: op.n].view(np.int8).astype(np.int64)
        b = out[: op.n].view(np.int8).astype(np.int64)
        raw = a * op.ma + b * op.mb
        return raw, sim.round_shift_clamp(raw, q.shift, bool(q.relu), q.bits, bool(q.unsigned))
    x = act[: op.length].view(np.int8).astype(np.int64).reshape(op.h * op.w, op.ch)
    acc = x.sum(0)
    return acc * q.mult, sim.requantize(acc, q.mult, q.shift, bool(q.relu), q.bits, bool(q.unsigned))


CORNERS = ("half_up_pos", "half_up_neg", "shift0", "sat_hi", "sat_lo", "relu", "uns_hi", "uns_top", "uns_lo")


def tally(hit: dict[str, int], widths: set[tuple[int, int]], op: Op, raw: np.ndarray) -> None:
    q = op.q
    lo, hi = clamp_range(bool(q.relu), q.bits, bool(q.unsigned))
    r = (raw + (1 << (q.shift - 1))) >> q.shift if q.shift else raw  # rounded, not clamped
    inside = (r >= lo) & (r <= hi)
    if q.shift:
        half = ((raw & ((1 << q.shift) - 1)) == 1 << (q.shift - 1)) & inside
        hit["half_up_pos"] += int((half & (raw > 0)).sum())
        hit["half_up_neg"] += int((half & (raw < 0)).sum())
    else:
        hit["shift0"] += int(inside.sum())
    if q.unsigned:
        hit["uns_hi"] += int((r > hi).sum())
        hit["uns_top"] += int((inside & (r >= 1 << (q.bits - 1))).sum())
        hit["uns_lo"] += int((r < 0).sum())
    else:
        hit["sat_hi"] += int((r > hi).sum())
        hit["sat_lo"] += int((r < lo).sum()) if not q.relu else 0
        hit["relu"] += int((r < 0).sum()) if q.relu else 0
    if inside.any():
        widths.add((q.bits, q.unsigned))


WIDTHS = [(b, 0) for b in range(2, 9)] + [(b, 1) for b in range(2, 8)]  # (bits, unsigned), ActW = 8


def pick_quant(rng: random.Random, mag: int, mult: int, width: tuple[int, int] | None = None) -> Quant:
    """Output range ``width`` (bits, unsigned) or a random one; the shift is 0, SHIFT_MAX, random, or set so that
    |raw| <= ``mag`` spans about the output range (some rounding, some saturation)."""
    bits, unsigned = width or rng.choice(WIDTHS)
    span = max(1, mag).bit_length()
    fitted = min(SHIFT_MAX, max(0, span - bits + rng.randint(-1, 2)))
    shift = rng.choice([0, SHIFT_MAX, rng.randint(0, SHIFT_MAX)] + [fitted] * 5)
    return Quant(mult, shift, rng.randint(0, 1), unsigned, bits)


def sums_to(np_rng: np.random.Generator, targets: np.ndarray, hw: int) -> np.ndarray:
    """[hw, ch] int8 values whose column sums are ``targets`` (each within [-128*hw, 127*hw])."""
    x = np_rng.integers(-128, 128, (hw, len(targets)))
    for c, t in enumerate(targets):
        diff = int(t) - int(x[:, c].sum())
        for p in np_rng.permutation(hw):
            if diff == 0:
                break
            v = int(np.clip(x[p, c] + diff, -128, 127))
            diff -= v - int(x[p, c])
            x[p, c] = v
        assert diff == 0
    return x


GEOMS = ("unit", "pixel", "channel", "full", "odd", "odd")
VALUES = ("random", "extreme", "min", "max", "halves", "halves")


def pool_geometry(rng: random.Random, act_bytes: int, out_bytes: int, kind: str) -> tuple[int, int, int]:
    chmax = min(act_bytes, out_bytes)
    if kind == "unit":
        return 1, 1, 1
    if kind == "pixel":  # one pixel, many channels
        return 1, 1, rng.choice([chmax, chmax - 1, rng.randint(2, chmax)])
    if kind == "channel":  # one channel, many pixels
        h = rng.choice([1, 3, rng.randint(1, 40)])
        return h, rng.randint(1, act_bytes // h), 1
    if kind == "full":  # h*w*ch == ActBytes
        ch = rng.choice([d for d in range(1, chmax + 1) if act_bytes % d == 0])
        hw = act_bytes // ch
        h = rng.choice([d for d in range(1, hw + 1) if hw % d == 0])
        return h, hw // h, ch
    while True:
        ch = rng.choice([1, 3, 5, 7, 9, 13, 2 * rng.randint(0, 20) + 1, rng.randint(1, chmax)])
        h, w = rng.choice([1, 3, 5, 7, rng.randint(1, 16)]), rng.choice([1, 3, 7, 9, rng.randint(1, 16)])
        if h * w * ch <= act_bytes and ch <= out_bytes:
            return h, w, ch


def pool_case(rng: random.Random, np_rng: np.random.Generator, act_bytes: int, out_bytes: int,
              i: int) -> tuple[Op, np.ndarray]:
    """(op, the fmap bytes [h*w*ch] int8) for case ``i`` (geometry and value kinds cycle)."""
    h, w, ch = pool_geometry(rng, act_bytes, out_bytes, GEOMS[i % len(GEOMS)])
    hw = h * w
    vals = VALUES[(i // len(GEOMS)) % len(VALUES)]
    if vals == "halves":  # channel sums k*2^e + 2^(e-1) (+-1 sometimes), e = shift - log2(mult) >= 1
        bits, unsigned = WIDTHS[i % len(WIDTHS)]
        relu = rng.randint(0, 1)
        lo, hi = clamp_range(bool(relu), bits, bool(unsigned))
        j = rng.choice([0, 0, 1, 3])
        e = rng.randint(1, max(1, (127 * hw).bit_length() - bits))
        targets = []
        for _ in range(ch):
            k = rng.randint(lo - 1, hi)
            t = k * (1 << e) + (1 << (e - 1)) + rng.choice([0, 0, 0, -1, 1])
            targets.append(min(max(t, -128 * hw), 127 * hw))
        x = sums_to(np_rng, np.array(targets, np.int64), hw)
        q = Quant(1 << j, e + j, relu, unsigned, bits)
        return Op(False, q, h, w, ch), x.reshape(-1)
    if vals == "random":
        x = np_rng.integers(-128, 128, hw * ch)
    elif vals == "extreme":
        x = np_rng.choice([-128, 127], hw * ch)
    else:
        x = np.full(hw * ch, -128 if vals == "min" else 127)
    mult = rng.choice([0, 1, 1, 0xFFFF, rng.randint(1, 16), rng.randint(1, 0xFFFF)])
    mag = int(np.abs(x.reshape(hw, ch).sum(0)).max()) * mult
    return Op(False, pick_quant(rng, mag, mult, WIDTHS[i % len(WIDTHS)]), h, w, ch), x


def add_case(rng: random.Random, act_bytes: int, out_bytes: int, i: int) -> Op:
    """Op with n, ma, mb for case ``i`` (the quant is picked once the operands are known)."""
    nmax = min(act_bytes, out_bytes)
    n = [1, 2, 3, nmax, nmax - 1, 2 * rng.randint(0, (nmax - 1) // 2) + 1, rng.randint(1, nmax),
         rng.randint(1, 24)][i % 8]

    def mul() -> int:
        return rng.choice([0, 1, 0x8000, 0xFFFF, rng.randint(1, 8), rng.randint(0, 0xFFFF)])

    ma, mb = mul(), mul()
    if i % 11 == 0:
        ma, mb = 0, 0
    elif i % 11 == 1:
        ma, mb = 0xFFFF, 0xFFFF
    return Op(True, Quant(0, 0, 0, 0, 8), n=n, ma=ma, mb=mb)


class VecBench:
    """The buffers' mirror, the drivers and the checks."""

    def __init__(self, dut: object, seed: int) -> None:
        p = params()
        self.dut, self.act_bytes, self.out_bytes = dut, p["ActBytes"], p["OutBytes"]
        self.vl = p["VL"]
        self.rng = random.Random(seed)
        self.np_rng = np.random.default_rng(seed)
        self.act = np.zeros(self.act_bytes, np.uint8)
        self.out = np.zeros(self.out_bytes, np.uint8)
        self.hit = {"pool": dict.fromkeys(CORNERS, 0), "add": dict.fromkeys(CORNERS, 0)}
        self.widths: dict[str, set[tuple[int, int]]] = {"pool": set(), "add": set()}
        self.ops = 0

    async def reset(self) -> None:
        d = self.dut
        d.start_i.value = 0
        d.load_we_i.value = 0
        d.peek_i.value = 0
        d.out_raddr_i.value = 0
        for s in ("op_add_i", "fmap_h_i", "fmap_w_i", "fmap_ch_i", "n_i", "ma_i", "mb_i", "mult_i", "shift_i",
                  "relu_i", "unsigned_i", "bits_i", "load_sel_i", "load_addr_i", "load_data_i"):
            getattr(d, s).value = 0
        await start_clock(d)
        await self.load(ACT, self.junk(self.act_bytes))  # the RAMs have no reset: define every byte
        await self.load(OUT, self.junk(self.out_bytes))

    def junk(self, n: int) -> np.ndarray:
        return self.np_rng.integers(0, 256, n, dtype=np.uint8)

    async def load(self, sel: int, data: np.ndarray) -> None:
        """Write a whole buffer (ActBytes / OutBytes are whole words)."""
        (self.act if sel == ACT else self.out)[:] = data
        await load_words(self.dut, sel, data.tobytes())

    async def load_act_prefix(self, x: np.ndarray) -> None:
        """The act buffer: ``x`` (int8 values) at byte 0, junk after it."""
        act = self.junk(self.act_bytes)
        act[: x.size] = x.astype(np.int8).view(np.uint8)
        await self.load(ACT, act)

    async def issue(self, op: Op) -> None:
        """Drive ``op`` (the inputs an op ignores get junk), pulse start, wait for done; check the cycle count,
        the writes and the monitor's flags; update the mirror. Returns just after the clock edge that ends
        the done cycle, so that a following issue() starts in the next cycle (back to back)."""
        d, r, q = self.dut, self.rng, op.q
        d.op_add_i.value = int(op.add)
        d.fmap_h_i.value = r.randint(0, 0xFFFF) if op.add else op.h
        d.fmap_w_i.value = r.randint(0, 0xFFFF) if op.add else op.w
        d.fmap_ch_i.value = r.randint(0, 0xFFFF) if op.add else op.ch
        d.n_i.value = op.n if op.add else r.randint(0, (1 << 24) - 1)
        d.ma_i.value = op.ma if op.add else r.randint(0, 0xFFFF)
        d.mb_i.value = op.mb if op.add else r.randint(0, 0xFFFF)
        d.mult_i.value = r.randint(0, 0xFFFF) if op.add else q.mult
        d.shift_i.value, d.relu_i.value, d.unsigned_i.value, d.bits_i.value = q.shift, q.relu, q.unsigned, q.bits
        raw, y = model(op, self.act, self.out)
        kind = "add" if op.add else "pool"
        tally(self.hit[kind], self.widths[kind], op, raw)
        d.start_i.value = 1
        await RisingEdge(d.clk_i)
        d.start_i.value = 0
        await with_timeout(RisingEdge(d.done_o), (op.length + 20) * CLK_NS, "ns")
        await FallingEdge(d.clk_i)  # the middle of the done cycle
        cycles, writes, err = int(d.cycles_o.value), int(d.writes_o.value), int(d.err_o.value)
        tag = f"op {self.ops} ({op})"
        want = op.issue_cycles(self.vl) + 3
        assert cycles == want, f"{tag}: {cycles} cycles from start to done, expected {want}"
        assert writes == op.written, f"{tag}: {writes} output writes, expected {op.written}"
        assert err == 0, f"{tag}: " + ", ".join(m for b, m in enumerate(ERRS) if err >> b & 1)
        self.out[: op.written] = y.astype(np.int8).view(np.uint8)
        self.ops += 1
        await RisingEdge(d.clk_i)

    async def idle(self) -> None:
        n = self.rng.choice([0, 0, 1, 2, 5])
        for _ in range(n):
            await RisingEdge(self.dut.clk_i)

    async def check_out(self, what: str) -> None:
        """Read the whole output buffer through the test's read port (one word a cycle) and compare it with
        the mirror: the written bytes with the model, the others unchanged."""
        d = self.dut
        words = self.out_bytes // 8
        await FallingEdge(d.clk_i)
        d.peek_i.value = 1
        d.out_raddr_i.value = 0
        got = bytearray()
        for w in range(words):
            await FallingEdge(d.clk_i)  # the word addressed before the last rising edge
            got += int(d.out_rdata_o.value).to_bytes(8, "little")
            if w + 1 < words:
                d.out_raddr_i.value = w + 1
        d.peek_i.value = 0
        g = np.frombuffer(bytes(got), np.uint8)
        bad = np.flatnonzero(g != self.out)
        if bad.size:
            b = int(bad[0])
            raise AssertionError(f"{what}: {bad.size} output bytes differ, first at byte {b}: RTL "
                                 f"{g[b]:#04x}, model {self.out[b]:#04x} (bytes {bad[:12].tolist()})")

    def check_corners(self, kind: str) -> None:
        missing = [k for k, v in self.hit[kind].items() if not v]
        assert not missing, f"{kind}: corners not reached: {missing} ({self.hit[kind]})"
        need = set(WIDTHS)
        assert need <= self.widths[kind], f"{kind}: output widths not reached: {sorted(need - self.widths[kind])}"


@cocotb.test()
async def pool_matches_golden(dut: object) -> None:
    tb = VecBench(dut, cocotb.RANDOM_SEED)
    await tb.reset()
    for i in range(3 * len(GEOMS) * len(VALUES)):
        op, x = pool_case(tb.rng, tb.np_rng, tb.act_bytes, tb.out_bytes, i)
        await tb.load_act_prefix(x)
        if i % 4 == 0:
            await tb.load(OUT, tb.junk(tb.out_bytes))
        await tb.idle()
        await tb.issue(op)
        await tb.check_out(f"case {i}: {op}")
    tb.check_corners("pool")


@cocotb.test()
async def add_matches_golden(dut: object) -> None:
    tb = VecBench(dut, cocotb.RANDOM_SEED + 1)
    await tb.reset()
    for i in range(110):
        op = add_case(tb.rng, tb.act_bytes, tb.out_bytes, i)
        ext = i % 5 == 4  # int8 extremes in both operands
        a = tb.np_rng.choice([-128, 127], tb.act_bytes) if ext else tb.np_rng.integers(-128, 128, tb.act_bytes)
        await tb.load_act_prefix(a)
        if ext or i % 3 == 0:  # else the second operand is the previous result
            b = tb.np_rng.choice([-128, 127], tb.out_bytes) if ext else tb.np_rng.integers(-128, 128, tb.out_bytes)
            await tb.load(OUT, b.astype(np.int8).view(np.uint8))
        raw, _ = model(op, tb.act, tb.out)
        op.q = pick_quant(tb.rng, int(np.abs(raw).max()), 0, WIDTHS[i % len(WIDTHS)])
        if i % 7 == 3:  # small multipliers and shifts: many exact halves
            op.ma, op.mb = tb.rng.randint(0, 3), tb.rng.randint(1, 3)
            op.q.shift = tb.rng.randint(1, 3)
        await tb.idle()
        await tb.issue(op)
        await tb.check_out(f"case {i}: {op}")
    tb.check_corners("add")


@cocotb.test()
async def back_to_back_chains(dut: object) -> None:
    """Chains of 2..5 pool / add ops, each started in the cycle after the previous one's done; the output
    buffer is checked at the end of each chain (every op's cycles and writes are checked as it ends)."""
    tb = VecBench(dut, cocotb.RANDOM_SEED + 2)
    await tb.reset()
    for chain in range(16):
        await tb.load_act_prefix(tb.np_rng.integers(-128, 128, tb.act_bytes))
        if chain % 2:
            await tb.load(OUT, tb.junk(tb.out_bytes))
        ops = []
        for j in range(tb.rng.randint(2, 5)):
            if tb.rng.random() < 0.5:
                h, w, ch = pool_geometry(tb.rng, tb.act_bytes, tb.out_bytes, tb.rng.choice(GEOMS))
                mult = tb.rng.choice([1, tb.rng.randint(1, 0xFFFF)])
                mag = 128 * h * w * mult
                ops.append(Op(False, pick_quant(tb.rng, mag, mult), h, w, ch))
            else:
                op = add_case(tb.rng, tb.act_bytes, tb.out_bytes, tb.rng.randint(0, 10))
                if j and tb.rng.random() < 0.5:
                    op.n = min(op.n, 3)  # short ops: reads right after the previous op's last writes
                op.q = pick_quant(tb.rng, 256 * max(op.ma, op.mb, 1), 0)
                ops.append(op)
        await tb.idle()
        for op in ops:
            await tb.issue(op)  # the next start is in the cycle after this done
        await tb.check_out(f"chain {chain}: " + "; ".join(map(str, ops)))


PARAMS = [
    {"ActBytes": 520, "OutBytes": 200, "VL": 3},
    pytest.param({"ActBytes": 136, "OutBytes": 1000, "VL": 1}, marks=pytest.mark.slow),
    pytest.param({"ActBytes": 4096, "OutBytes": 4096, "VL": 18}, marks=pytest.mark.slow),
]


def sources() -> list:
    return block_sources("pqa_ram", "pqa_widemem", "pqa_postproc", "pqa_vec", extra=[TB / "vec" / "tb_vec.sv"])


@pytest.mark.rtl
@pytest.mark.parametrize("sim_name", SIMS)
@pytest.mark.parametrize("parameters", PARAMS, ids=lambda p: f"act{p['ActBytes']}_out{p['OutBytes']}_vl{p['VL']}")
def test_vec(sim_name: str, parameters: dict[str, int]) -> None:
    check_block(sim_name, "tb_vec", __file__, sources(), parameters)


@pytest.mark.rtl
def test_vec_bench_catches_trunc_mutant() -> None:
    """The bench can fail: with PQA_MUTANT_TRUNC (pqa_postproc's shift truncates) it must report a
    mismatch."""
    with pytest.raises(AssertionError, match="cocotb tests failed"):
        check_block("icarus", "tb_vec", __file__, sources(), PARAMS[0], defines={"PQA_MUTANT_TRUNC": 1})
