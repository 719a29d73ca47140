"""Block bench of ``pqa_encoder`` against ``pqcompile.sim.encode``: nearest prototype per subspace for
both metrics, exact ties (duplicated prototypes, prototypes mirrored around the input, all-equal
prototypes) that must go to the lowest index, v not dividing d (padded elements read as 0 even when the
act buffer holds other data there), column bases that are not word aligned, k = 1 and k = KMax-sized
walks, the extreme int8 values; runs of several columns streamed back to back (the feeder filling one
column-register slot while the walker encodes the other), with the look-up unit's index queue withholding
its credit now and then; and the documented cycle count without stalls (:func:`done_cycles`; gather reads
by the mode, ``sim.group_costs``). The prototypes are packed into rows by ``pqcompile.layout`` for the
bench's lanes (NS, NP, PL: odd counts by default, so that k, v and c leave lanes partially full and ties
fall between distance units).
Conv mode (the convolution address generator, pqa_convgen): random fmap / window / stride / padding
geometries, whole runs (run_start, then the encoder steps the pixels itself), against ``sim.encode`` of
``sim.conv_gather``, with junk beyond the fmap in the act buffer, in all three gather modes: v = kh*kw
(lanes: window rows and positions of NS channels a read), 1x1 windows with v > 1 (contiguous) and v
across window rows and channels (element); same cycle count.
Parametrized over buffer sizes that are not powers of two."""

from __future__ import annotations

import random

import cocotb
import numpy as np
import pytest
from block_util import SIMS, check_block, load_words, params, start_clock
from cocotb.triggers import ClockCycles, RisingEdge
from pqa_runner import TB, block_sources

from pqcompile import layout, sim
from pqcompile.spec import HwConfig, load


def lanes(p: dict[str, int]) -> HwConfig:
    """The bench's parameters as a configuration: lanes and the 64-bit bus (for the prototype layout)."""
    return HwConfig("bench", "", {**load().config("small").params, "VMax": 9, "CMax": 64, **p})  # tb_encoder's


def done_cycles(cfg: HwConfig, st: sim._State, n: int) -> int:
    """Cycles from the start cycle (0) to done, the run's last index write, when the index queue always takes
    a group: the feeder reads group q from s_q = max(s_{q-1} + F_{q-1}, e_{q-2} + R - 1) (its slot freed),
    the walker encodes it from e_q = max(e_{q-1} + R, s_q + F_q + 1), the write comes R cycles later
    (pqa_encoder header; sim.run_cycles adds the look-up unit)."""
    reads, rows, _ = sim.group_costs(cfg, st)
    s_next, e = 1, []
    for q in range(n * len(reads)):
        sq = s_next if q < 2 else max(s_next, e[q - 2] + rows - 1)
        e.append(max(sq + reads[q % len(reads)] + 1, e[q - 1] + rows if q else 0))
        s_next = sq + reads[q % len(reads)]
    return e[-1] + rows


def make_case(rng: random.Random, np_rng: np.random.Generator, act_bytes: int, cfg: HwConfig,
              kind: str) -> tuple[np.ndarray, np.ndarray, int, int, int, int]:
    """(x [d] int8, protos [c, k, v] int8, d, v, col_base, metric)."""
    while True:
        v = rng.randint(1, 9)
        c = rng.randint(1, 12)  # well inside tb_encoder's CCap index capture
        k = rng.choice([1, 2, 3, 5, 7, 16])
        d = rng.randint((c - 1) * v + 1, c * v)
        base = rng.randint(0, 37)
        if layout.proto_bytes(cfg, c, k, v) <= cfg.proto_cap and base + d <= act_bytes:
            break
    metric = rng.randint(0, 1)
    x = np_rng.integers(-128, 128, d)
    protos = np_rng.integers(-128, 128, (c, k, v))
    if kind == "small":  # few values: many ties
        x = np_rng.integers(-2, 2, d)
        protos = np_rng.integers(-2, 2, (c, k, v))
    elif kind == "dup":  # duplicated prototypes: exact ties with the lower copy winning
        for ci in range(c):
            for ki in range(1, k):
                if rng.random() < 0.5:
                    protos[ci, ki] = protos[ci, rng.randrange(ki)]
    elif kind == "mirror":  # x = 0 and prototypes +a / -a: equal distance in both metrics
        x = np.zeros(d, np.int64)
        for ci in range(c):
            for ki in range(1, k, 2):
                protos[ci, ki] = -protos[ci, ki - 1]
    elif kind == "equal":
        protos[:] = protos[:, :1, :]
    elif kind == "extreme":
        x = np_rng.choice([-128, 127], d)
        protos = np_rng.choice([-128, 127], (c, k, v))
    return x.astype(np.int64), protos.astype(np.int64), d, v, base, metric


@cocotb.test()
async def encoder_matches_golden(dut: object) -> None:
    p = params()
    cfg = lanes(p)
    rng = random.Random(cocotb.RANDOM_SEED)
    np_rng = np.random.default_rng(cocotb.RANDOM_SEED)
    idle_conv(dut)
    await start_clock(dut)
    kinds = ["random", "small", "dup", "mirror", "equal", "extreme"]
    ties = 0
    for i in range(48):
        x, protos, d, v, base, metric = make_case(rng, np_rng, p["ActBytes"], cfg, kinds[i % len(kinds)])
        c, k, _ = protos.shape
        # a run of n columns at base + j*d (the first one the case's, the others random), the index queue
        # stalling in every third case; junk everywhere else: padded elements must still read as 0
        n = max(1, min(rng.randint(1, 4), (p["ActBytes"] - base - c * v) // d + 1))
        stall = i % 3 == 2
        cols = [x] + [np_rng.integers(-128, 128, d) for _ in range(n - 1)]
        act = bytearray(np_rng.integers(0, 256, min(p["ActBytes"], base + (n - 1) * d + c * v + 16),
                                        dtype=np.uint8).tobytes())
        for j, col in enumerate(cols):
            act[base + j * d : base + (j + 1) * d] = col.astype(np.int8).tobytes()
        await load_words(dut, 0, bytes(act))
        await load_words(dut, 1, layout.pack_protos(cfg, protos).tobytes())
        dut.metric_i.value = metric
        dut.k_i.value, dut.v_i.value, dut.c_i.value, dut.d_i.value = k, v, c, d
        dut.col_base_i.value = base
        xp = np.zeros((n, c * v), np.int64)
        xp[:, :d] = np.stack(cols)
        exp = sim.encode(xp.reshape(n, c, v), protos, metric)
        for j, got in enumerate(await run_columns(dut, n, c, stall)):
            assert got == [int(e) for e in exp[j]], \
                f"case {i}: column {j}: c={c} k={k} v={v} d={d} metric={metric}: {got} != {exp[j]}"
        assert int(dut.idx_writes_o.value) == n * -(-c // cfg.NS)  # one write per group of NS subspaces
        if not stall:
            st = sim._State(conv=0, k=k, v=v, c=c, d=d)
            assert int(dut.cycles_o.value) == done_cycles(cfg, st, n), f"cycles {int(dut.cycles_o.value)}"
        xp = xp[0]
        diff = xp.reshape(c, 1, v) - protos
        dist = np.abs(diff).sum(-1) if metric == load().enums["metric"]["l1"] else (diff * diff).sum(-1)
        ties += int(((dist == dist.min(-1, keepdims=True)).sum(-1) > 1).sum())
    assert ties > 20, f"only {ties} subspaces with tied minima: the tie cases did not happen"


CCAP = 64  # tb_encoder's CCap: subspaces captured per column


async def run_columns(dut: object, n: int, c: int, stall: bool) -> list[list[int]]:
    """Start a run of n columns (the shape and geometry set), wait for its last index write and return the
    c indices captured per column."""
    dut.n_i.value, dut.stall_i.value = n, int(stall)
    dut.start_i.value = 1
    await RisingEdge(dut.clk_i)
    dut.start_i.value = 0
    await RisingEdge(dut.done_o)
    await ClockCycles(dut.clk_i, 2)
    flat = int(dut.idx_o.value)
    return [[(flat >> (8 * (j * CCAP + ci))) & 0xFF for ci in range(c)] for j in range(n)]

GEOM = ("fmap_h_i", "fmap_w_i", "fmap_ch_i", "stride_i", "kh_i", "kw_i", "pad_t_i", "pad_l_i", "out_w_i")


def idle_conv(dut: object) -> None:
    dut.start_i.value = 0
    dut.load_we_i.value = 0
    dut.conv_i.value = 0
    dut.run_start_i.value = 0
    dut.stall_i.value = 0
    dut.n_i.value = 1
    for g in GEOM:
        getattr(dut, g).value = 0


def conv_geometry(rng: random.Random, act_bytes: int, cfg: HwConfig,
                  want: str) -> tuple[sim.ConvGeom, int, int, int]:
    """(geometry, v, k, n columns) with h*w*ch inside the act buffer, the prototypes inside theirs, gathered
    in mode ``want`` (``HwConfig.gather_mode``)."""
    while True:
        ch = rng.choice([1, 2, 3, 5, 8, 16])
        h, w = rng.randint(1, 9), rng.randint(1, 9)
        kh, kw = rng.randint(1, min(h + 2, 5)), rng.randint(1, min(w + 2, 5))
        if rng.random() < 0.15:
            kh, kw = h, w  # flatten: the window is the whole fmap
        stride = rng.choice([1, 1, 2, 3])
        pt, pl = rng.randint(0, min(kh - 1, 2)), rng.randint(0, min(kw - 1, 2))
        out_h = max(1, (h + 2 * pt - kh) // stride + 1)
        out_w = max(1, (w + 2 * pl - kw) // stride + 1)
        d = ch * kh * kw
        if want == "lanes":
            v = kh * kw
        elif want == "contiguous":
            kh, kw, pt, pl = 1, 1, 0, 0  # a 1x1 window
            out_h, out_w = (h - 1) // stride + 1, (w - 1) // stride + 1
            d = ch
            v = rng.randint(1, min(ch, 9))
        elif -(-d // 60) <= 9:
            v = rng.randint(-(-d // 60), 9)
        else:
            continue
        k = rng.choice([1, 2, 3, 5])
        c = -(-d // v)
        if (1 <= v <= 9 and c <= 60 and cfg.gather_mode(True, v, kh, kw) == want
                and layout.proto_bytes(cfg, c, k, v) <= cfg.proto_cap and h * w * ch <= act_bytes):
            n = min(out_h * out_w + rng.randint(0, 2), 40)  # sometimes pixels below the fmap (all padding)
            return sim.ConvGeom(h, w, ch, stride, kh, kw, pt, pl, out_w), v, k, n


@cocotb.test()
async def encoder_conv_matches_golden(dut: object) -> None:
    p = params()
    cfg = lanes(p)
    rng = random.Random(cocotb.RANDOM_SEED + 1)
    np_rng = np.random.default_rng(cocotb.RANDOM_SEED + 1)
    idle_conv(dut)
    await start_clock(dut)
    for i in range(12):
        g, v, k, n = conv_geometry(rng, p["ActBytes"], cfg, ("lanes", "contiguous", "element")[i % 3])
        d = g.ch * g.kh * g.kw
        c = -(-d // v)
        fmap = np_rng.integers(-128, 128, g.h * g.w * g.ch)
        act = np_rng.integers(0, 256, p["ActBytes"], dtype=np.uint8)  # junk beyond the fmap
        act[: fmap.size] = fmap.astype(np.int8).view(np.uint8)
        protos = np_rng.integers(-128, 128, (c, k, v))
        await load_words(dut, 0, act.tobytes())
        await load_words(dut, 1, layout.pack_protos(cfg, protos).tobytes())
        metric = rng.randint(0, 1)
        dut.metric_i.value = metric
        dut.k_i.value, dut.v_i.value, dut.c_i.value, dut.d_i.value = k, v, c, d
        dut.col_base_i.value = rng.randint(0, 1000)  # ignored in conv mode
        dut.conv_i.value = 1
        for name, val in zip(GEOM, (g.h, g.w, g.ch, g.stride, g.kh, g.kw, g.pad_t, g.pad_l, g.out_w), strict=True):
            getattr(dut, name).value = val
        await ClockCycles(dut.clk_i, 3)  # the generator's derived products settle (pqa_convgen header)
        dut.run_start_i.value = 1
        await RisingEdge(dut.clk_i)
        dut.run_start_i.value = 0
        x = np.zeros((n, c * v), np.int64)
        x[:, :d] = sim.conv_gather(fmap.astype(np.int64), g, d, n)
        exp = sim.encode(x.reshape(n, c, v), protos, metric)
        stall = i % 4 == 3
        for j, got in enumerate(await run_columns(dut, n, c, stall)):
            assert got == [int(e) for e in exp[j]], f"case {i} {g} v={v} k={k}: column {j}: {got} != {exp[j]}"
        if not stall:
            st = sim._State(conv=1, k=k, v=v, c=c, d=d, geom=g)
            assert int(dut.cycles_o.value) == done_cycles(cfg, st, n), f"case {i}: cycles {int(dut.cycles_o.value)}"
    dut.conv_i.value = 0


# Lanes: odd counts (partially full lanes, a comparator tree of 3 leaves padded to 4), the narrow datapath,
# and more lanes than most shapes fill; buffer sizes that are not powers of two.
FAST = {"ActBytes": 520, "ProtoBytes": 1000, "NS": 2, "NP": 3, "PL": 2}
PARAMS = [FAST,
          pytest.param({"ActBytes": 4096, "ProtoBytes": 4096, "NS": 1, "NP": 1, "PL": 1}, marks=pytest.mark.slow),
          pytest.param({"ActBytes": 4096, "ProtoBytes": 8192, "NS": 5, "NP": 4, "PL": 3}, marks=pytest.mark.slow)]
SRCS = ["pqa_ram", "pqa_rowmem", "pqa_protomem", "pqa_widemem", "pqa_convgen", "pqa_encoder"]


def _id(p: dict[str, int]) -> str:
    return f"act{p['ActBytes']}_proto{p['ProtoBytes']}_ns{p['NS']}_np{p['NP']}_pl{p['PL']}"


@pytest.mark.rtl
@pytest.mark.parametrize("sim_name", SIMS)
@pytest.mark.parametrize("parameters", PARAMS, ids=_id)
def test_encoder(sim_name: str, parameters: dict[str, int]) -> None:
    srcs = block_sources(*SRCS, extra=[TB / "encoder" / "tb_encoder.sv"])
    check_block(sim_name, "tb_encoder", __file__, srcs, parameters)


@pytest.mark.rtl
@pytest.mark.parametrize("mutant", ["PQA_MUTANT_TIES", "PQA_MUTANT_TREE"])
def test_encoder_bench_catches_tie_mutants(mutant: str) -> None:
    """The bench can fail: ties to the highest index across prototype groups (PQA_MUTANT_TIES) or between
    the distance units of one group (PQA_MUTANT_TREE, the comparator tree) must be reported as mismatches."""
    srcs = block_sources(*SRCS, extra=[TB / "encoder" / "tb_encoder.sv"])
    with pytest.raises(AssertionError, match="cocotb tests failed"):
        check_block("icarus", "tb_encoder", __file__, srcs, FAST, defines={mutant: 1})
