"""Golden simulator against cases computed by hand."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from pqcompile import backend, layout, sim
from pqcompile.isa import encode, field_limit
from pqcompile.spec import load

SHIFT_MAX = field_limit("quant", "shift")

SPEC = load()
CFG = SPEC.config("small")
L2, L1 = SPEC.enums["metric"]["l2"], SPEC.enums["metric"]["l1"]
BUF = SPEC.enums["buffer"]


def test_encode_l2_l1_and_ties() -> None:
    protos = np.array([[[0, 0], [2, 2], [1, 1]]])  # one subspace, k=3
    # x=[1,1]: L2 distances 2, 2, 0 -> 2; x=[2,0]: L2 4, 4, 2 -> 2; x=[1,0]: L2 1, 5, 1 -> tie 0 and 2 -> 0
    x = np.array([[[1, 1]], [[2, 0]], [[1, 0]], [[3, -1]]])
    assert sim.encode(x, protos, L2)[:, 0].tolist() == [2, 2, 0, 2]
    # L1: x=[2,0]: 2, 2, 2 -> 0; x=[1,0]: 1, 3, 1 -> 0; x=[3,-1]: 4, 4, 4 -> 0 (L2 gave 10, 10, 8 -> 2)
    assert sim.encode(x, protos, L1)[:, 0].tolist() == [2, 0, 0, 0]


def test_lookup_and_wrap() -> None:
    lut = np.array([[[1, 2], [3, 4]], [[10, 20], [30, 40]]])  # [c=2][k=2][m=2]
    idx = np.array([[1, 0], [0, 1]])
    assert sim.lookup(idx, lut, np.array([100, -100])).tolist() == [[113, -76], [131, -58]]
    big = np.array([[[2**31 - 1]]])
    assert sim.lookup(np.array([[0]]), big, np.array([1])).tolist() == [[-(2**31)]]  # int32 wrap-around


@pytest.mark.parametrize(("acc", "mult", "shift", "relu", "y"), [
    (5, 1, 1, False, 3),      # 2.5 -> 3 (half up)
    (-5, 1, 1, False, -2),    # -2.5 -> -2 (half up, toward +inf)
    (-7, 1, 2, False, -2),    # -1.75 -> -2
    (7, 3, 0, False, 21),     # no shift, no rounding term
    (1000, 1, 0, False, 127), # saturate high
    (-1000, 1, 0, False, -128),
    (-1000, 1, 0, True, 0),   # ReLU
    (50, 3, 2, True, 38),     # 150/4 = 37.5 -> 38
    # the widest product at the largest shift the spec allows, rounded exactly (no overflow anywhere)
    (2**31 - 1, 65535, SHIFT_MAX, False, round(Fraction((2**31 - 1) * 65535, 1 << SHIFT_MAX))),
])
def test_requantize_corners(acc: int, mult: int, shift: int, relu: bool, y: int) -> None:
    assert sim.requantize(np.array([acc]), mult, shift, relu).tolist() == [y]


@pytest.mark.parametrize(("bits", "relu", "y"), [
    (4, False, [-8, -8, -3, 0, 5, 7, 7]),
    (4, True, [0, 0, 0, 0, 5, 7, 7]),
    (2, False, [-2, -2, -2, 0, 1, 1, 1]),
])
def test_requantize_narrow_activations(bits: int, relu: bool, y: list[int]) -> None:
    acc = np.array([-100, -9, -3, 0, 5, 8, 100])
    assert sim.requantize(acc, 1, 0, relu, bits).tolist() == y


def _program(metric: str, x: list[int]) -> backend.Program:
    """d=3, v=2 (c=2, the last subspace padded), k=2, m=2, computed by hand in the tests."""
    protos = np.array([[[0, 0], [2, 2]], [[1, 0], [-1, 0]]], np.int8)
    lut = np.array([[[100, 100], [10, -3]], [[-100, -100], [5, 7]]], np.int8)  # 8-bit entries, config small
    bias = np.array([1, 2], "<i4")
    packed = layout.pack_protos(CFG, protos)  # config small's prototype rows
    table = layout.pack_lut(CFG, lut)  # and table rows (2 lanes: one bus word)
    words = [
        encode("load", buf=BUF["proto"], nbytes=len(packed), addr=0x200),
        encode("load", buf=BUF["lut"], nbytes=len(table), addr=0x240),
        encode("load", buf=BUF["bias"], nbytes=8, addr=0x258),
        encode("load", buf=BUF["act"], nbytes=3, addr=0x260),
        encode("shape", metric=metric, k=2, v=2, c=2, d=3, m=2),
        encode("quant", relu=1, shift=2, mult=3, bits=8),
        encode("run", n=1),
        encode("store", nbytes=2, addr=0x300),
        encode("stamp", addr=0x308),
        encode("end"),
    ]
    assert len(table) == 16  # two rows of 2 lanes x 3 entries (a lane word rounded to 4 bytes)
    data = [(0x200, packed, "p"), (0x240, table, "l"),
            (0x258, bias.view(np.uint8), "b"), (0x260, np.array(x, np.int8).view(np.uint8), "x")]
    return backend.raw_program(CFG, words, data)


def test_one_layer_by_hand() -> None:
    # x=[2,1,-1]: c0 -> [2,1]: d(k0)=5, d(k1)=1 -> 1; c1 -> [-1,0]: d(k0)=4, d(k1)=0 -> 1
    # acc = [1+10+5, 2-3+7] = [16, 6]; y = (3*acc + 2) >> 2 = [12, 5]
    res = sim.run(CFG, _program("l2", [2, 1, -1]).mem, 0)
    assert res.done and res.err_code == 0 and res.insn_count == 10
    assert res.mem[0x300:0x302].view(np.int8).tolist() == [12, 5]
    assert res.mem[0x302] == 0  # store writes nbytes only
    assert 0 < int.from_bytes(res.mem[0x308:0x310].tobytes(), "little") < res.cycles  # stamp before end
    # x=[1,1,1]: c0 ties (2 vs 2) -> k0; c1: d(k0)=0, d(k1)=4 -> k0: acc = [1+100-100, 2+100-100] = [1, 2]
    # y = [(3+2)>>2, (6+2)>>2] = [1, 2]
    res = sim.run(CFG, _program("l1", [1, 1, 1]).mem, 0)
    assert res.mem[0x300:0x302].view(np.int8).tolist() == [1, 2]


def test_error_codes_and_pc() -> None:
    err = SPEC.errors
    cases = [
        ([encode("end") | 1 << 33], "illegal_insn", 0),
        ([encode("stamp", addr=0x100), 0xE], "illegal_insn", 8),
        ([encode("stamp", addr=0x104)], "align", 0),
        ([encode("shape", metric="l2", k=CFG.KMax + 1, v=1, c=1, d=1, m=1), encode("run", n=1)], "limit", 8),
        ([encode("shape", metric="l2", k=1, v=2, c=2, d=2, m=1), encode("run", n=1)], "limit", 8),  # d <= (c-1)*v
        ([encode("load", buf=BUF["lut"], nbytes=CFG.LutBytes + 8, addr=0)], "limit", 0),
        ([encode("load", buf=7, nbytes=8, addr=0)], "limit", 0),
        ([encode("load", buf=0, nbytes=8, addr=1 << 20)], "bus", 0),
        ([encode("shape", metric="l2", k=1, v=1, c=1, d=1, m=1), encode("quant", relu=0, shift=0, mult=1, bits=1),
          encode("run", n=1)], "limit", 16),  # bits below 2
        ([encode("shape", metric="l2", k=1, v=1, c=1, d=1, m=1), encode("quant", relu=0, shift=0, mult=1, bits=9),
          encode("run", n=1)], "limit", 16),  # bits beyond ActW
        ([encode("shape", metric="l2", k=1, v=1, c=1, d=1, m=1, pack=1), encode("run", n=1)], "limit", 8),  # LutW 8
    ]
    for words, name, pc in cases:
        res = sim.run(CFG, backend.raw_program(CFG, [*words, encode("end")]).mem, 0)
        assert (res.done, res.err_code, res.err_pc) == (False, err[name], pc), (words, name)
    with pytest.raises(sim.SimError, match="illegal_insn"):
        sim.run(CFG, backend.raw_program(CFG, [0]).mem, 0, strict=True)
    for base in (1, 4, 7):  # an unaligned INSN_BASE is the spec's `align`, at the first fetch (was `bus`)
        res = sim.run(CFG, backend.raw_program(CFG, [encode("end")] * 2).mem, base)
        assert (res.done, res.err_code, res.err_pc, res.insn_count) == (False, err["align"], base, 0)


def _perf(mem: np.ndarray, addr: int) -> dict[str, int]:
    """The stamp record at ``addr`` by counter name (docs/isa.md, "Performance counters")."""
    nb = SPEC.cycles_bits // 8
    return {c.name: int.from_bytes(mem[addr + nb * c.index : addr + nb * (c.index + 1)].tobytes(), "little")
            for c in SPEC.perf_counters}


def test_stamp_record_counts_bytes_exactly() -> None:
    """The record of the stamp at 0x308 in :func:`_program`: 9 fetches of one bus word (the 8 instructions
    before it and its own) and 6 bus words of loads (16 bytes of prototype rows, 16 of table rows, 8 and 3
    bytes) read; the 2-byte store wrote one word; the run's compute cycles (sim.run_cycles): the feeder
    reads the column's one group at cycle 1 (config small: a fully connected group of NS*v = 4 bytes is one
    read), its slot is full at 3, the encoder's one row (c=2, k=2, v=2 is one prototype row of 2 x 3 x 2)
    is issued at 3, its indices reach the look-up's queue at 4, the look-up's one output group (m=2 of
    NOUT=3) is issued at 4 (bypassing the empty queue) and written at 6: 7 cycles, 0 to 6; cycles as the
    cycle model says. After it the end's
    fetch is read and the record (4 words) written."""
    bb = CFG.bus_bytes
    res = sim.run(CFG, _program("l2", [2, 1, -1]).mem, 0)
    rec = _perf(res.mem, 0x308)
    assert rec["rd_bytes"] == 9 * bb + 6 * bb and rec["wr_bytes"] == bb
    assert CFG.proto_rows(2, 2, 2) == 1 and CFG.gather_cycles(2, 2, False, 0, 0, 0) == 1
    assert sim.group_costs(CFG, sim._State(conv=0, k=2, v=2, c=2, d=3, m=2)) == ([1], 1, 1)
    assert rec["compute_cycles"] == 7
    assert 0 < rec["cycles"] < res.cycles
    assert res.perf["rd_bytes"] == rec["rd_bytes"] + bb and res.perf["wr_bytes"] == bb + SPEC.perf_bytes
    assert res.perf["cycles"] == res.cycles and res.perf["compute_cycles"] == rec["compute_cycles"]
    assert SPEC.perf_bytes == len(SPEC.perf_counters) * bb == 64
    assert res.mem[0x308 + SPEC.perf_bytes : 0x400].tolist() == [0] * (0x400 - 0x308 - SPEC.perf_bytes)


def test_stamp_records_of_consecutive_stamps() -> None:
    """Two stamps around a load of 17 bytes (3 bus words), a pool (h*w*ceil(ch/VL) + 3 compute cycles) and an
    add (ceil(n/VL) + 3; config small's vector unit has VL = 8 lanes): the differences of the records are
    the instructions' own counts; a stamp's own write counts in the next record."""
    bb = CFG.bus_bytes
    words = [encode("stamp", addr=0x100), encode("load", buf=BUF["act"], nbytes=17, addr=0x200),
             encode("fmap", h=2, w=3, ch=2), encode("quant", relu=0, shift=0, mult=1, bits=8), encode("pool"),
             encode("add", n=5, ma=1, mb=1), encode("stamp", addr=0x140), encode("end")]
    res = sim.run(CFG, backend.raw_program(CFG, words).mem, 0)
    a, b = _perf(res.mem, 0x100), _perf(res.mem, 0x140)
    assert a == {"cycles": a["cycles"], "compute_cycles": 0, "rd_bytes": bb, "wr_bytes": 0, "load_cycles": 0,
                 "store_cycles": 0, "dep_cycles": 0, "fetch_cycles": sim.FETCH_CYCLES - 1}
    assert b["rd_bytes"] - a["rd_bytes"] == 6 * bb + 3 * bb  # 6 fetches (5 instructions and the stamp), 3 words
    assert b["wr_bytes"] - a["wr_bytes"] == SPEC.perf_bytes  # the first stamp's record
    assert CFG.vec_lanes == 8
    assert b["compute_cycles"] - a["compute_cycles"] == (2 * 3 * 1 + sim.VEC_CYCLES) + (1 + sim.VEC_CYCLES)
    # the cycle model (sim.Timeline), from the first stamp's dispatch at 0: the load is dispatched at 6 (its
    # fetch and decode) and holds the read engine to 6 + 4 + 3 beats = 13, so fmap's fetch starts at 13 and it
    # is dispatched at 18, quant at 24, pool at 30 (computing to 40: 2*3 + 3 cycles, and one to hand over),
    # add decoded at 36 waits for the compute unit to 40 (to 45), and the second stamp is dispatched at 46
    assert sim.FETCH_CYCLES == 6 and sim.XFER_CYCLES == 4
    assert b["cycles"] - a["cycles"] == 46
    # the units' counters (models, exact: false): the load holds the read engine 4 + 3 - 1 cycles after its
    # dispatch, the first stamp's record (8 words) the write engine 4 + 8 - 1; the add waits 4 cycles in decode
    # for the pool; fetches: 5 cycles each, the fmap's 6 more while the load holds the read engine
    assert {k: b[k] - a[k] for k in ("load_cycles", "store_cycles", "dep_cycles", "fetch_cycles")} == {
        "load_cycles": 6, "store_cycles": 11, "dep_cycles": 4, "fetch_cycles": 6 * 5 + 6}


def test_stamp_record_beyond_memory_is_a_bus_error() -> None:
    """A record that does not fit the memory (even partly) stops with `bus` at the stamp, writing nothing."""
    size = 4096
    for addr in (size - SPEC.perf_bytes + 8, size - 8, size):
        mem = backend.raw_program(CFG, [encode("stamp", addr=addr), encode("end")], mem_bytes=size).mem
        res = sim.run(CFG, mem, 0)
        assert (res.done, res.err_code, res.err_pc) == (False, SPEC.errors["bus"], 0)
        assert (res.mem == mem).all()
    res = sim.run(CFG, backend.raw_program(CFG, [encode("stamp", addr=size - SPEC.perf_bytes), encode("end")]).mem, 0)
    assert res.done


def test_run_cycles_extrapolation_is_exact() -> None:
    """The cycle model of a run (sim.run_cycles) extrapolates once a column repeats the previous one's times
    shifted: on random shapes, gather modes and lane counts it equals the group-by-group walk."""
    rng = np.random.default_rng(7)
    for name in ("small", "default", "pqa"):
        cfg = SPEC.config(name)
        for _ in range(60):
            c, k, v, m = (int(rng.integers(1, 40)), int(rng.integers(1, 33)), int(rng.integers(1, 10)),
                          int(rng.integers(1, 70)))
            kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
            conv = int(rng.integers(0, 2))
            if conv and rng.random() < 0.5:
                v = kh * kw
            st = sim._State(conv=conv, k=k, v=v, c=c, d=c * v, m=m,
                            geom=sim.ConvGeom(8, 8, int(rng.integers(1, 65)), 1, kh, kw, 0, 0, 8))
            n = int(rng.integers(1, 60))
            assert sim.run_cycles(cfg, st, n) == sim.run_cycles(cfg, st, n, extrapolate=False), (name, st, n)


def test_resources_and_the_overlap_they_allow() -> None:
    """sim.resources: what each instruction reads and writes for the controller's dependency checks; a
    `pool` into an act bank runs beside an older `store` (no shared resource), one into the output buffer
    waits for it (docs/theory.md, "Decoupled units")."""
    tgt = SPEC.enums["target"]
    st = sim._State(bank=1)
    assert sim.resources("load", {"buf": BUF["lut"], "bank": 1}, st, "lut") == (set(), {"tbl1"})
    assert sim.resources("load", {"buf": BUF["act"], "bank": 1}, st, "act") == (set(), {"act1"})
    both = {"out0", "out1"}  # the output buffer's halves
    assert sim.resources("store", {"half": 0, "nbytes": 8, "addr": 0}, st) == (set(), both)  # no OutBytes: both
    assert sim.resources("run", {"n": 1, "src": 0, "dst": tgt["act1"]}, st) == ({"act0", "tbl1"}, {"act1"})
    assert sim.resources("add", {"n": 1, "src": 1, "dst": tgt["act0"], "ma": 1, "mb": 1}, st) == (
        {"act1"}, {"act0"} | both)
    assert sim.resources("pool", {"src": 0, "dst": tgt["out"]}, st) == ({"act0"}, both)
    # with OutBytes / 2 = 2048 a store and a run into the output buffer use the halves their bytes lie in
    h = 2048
    assert sim.resources("load", {"buf": BUF["out"], "bank": 0}, st, "out", h) == (set(), both)
    for half, nbytes, res in ((0, 8, {"out0"}), (0, h, {"out0"}), (0, h + 1, both), (1, 8, {"out1"}), (1, h, {"out1"})):
        assert sim.resources("store", {"half": half, "nbytes": nbytes, "addr": 0}, st, "", h) == (set(), res)
    st.m = 10
    out = tgt["out"]
    s = (h - 10) // 2  # 3 columns of 10 outputs at this stride end at byte h
    for ooff, n, ostride, res in ((0, 1, 0, {"out0"}), (h - 10, 1, 0, {"out0"}), (h - 9, 1, 0, both),
                                  (h, 4, 0, {"out1"}), (0, 3, s, {"out0"}), (0, 3, s + 1, both)):
        assert sim.resources("run", {"n": n, "src": 0, "dst": out, "ooff": ooff, "ostride": ostride}, st, "", h) == (
            {"act0", "tbl1"}, res), (ooff, n, ostride)
    assert sim.resources("run", {"n": 1, "src": 0, "dst": tgt["none"], "ooff": h}, st, "", h)[1] == both
    assert sim.target({"src": 0, "dst": tgt["act0"]}) is None and sim.target({"src": 1, "dst": 3}) is None

    def pool_dispatch(dst: int) -> tuple[int, int]:
        """(the pool's dispatch cycle, the store's end) on sim.Timeline after a load and a store of 2 KiB."""
        tl = sim.Timeline(CFG)
        st = sim._State()
        tl.step("load", {"buf": BUF["out"], "bank": 0, "nbytes": 2048, "addr": 0x1000}, st, 0, "out")
        tl.step("store", {"half": 0, "nbytes": 2048, "addr": 0x2000}, st, 0)
        tl.step("pool", {"src": 0, "dst": dst}, st, 7)
        return tl.cycles, tl.st_free

    beside, store_end = pool_dispatch(tgt["act1"])
    after, _ = pool_dispatch(tgt["out"])
    assert beside < store_end - 2048 // CFG.bus_bytes // 2  # while the store writes
    assert after == store_end  # once it has written the output buffer

    def run_dispatch(ooff: int) -> tuple[int, int]:
        """(a run's dispatch cycle, the store's end) after a store of the output buffer's first half."""
        tl = sim.Timeline(CFG)
        st = sim._State(m=8)
        tl.step("store", {"half": 0, "nbytes": CFG.OutBytes // 2, "addr": 0x2000}, st, 0)
        tl.step("run", {"n": 4, "src": 0, "dst": tgt["out"], "ooff": ooff, "ostride": 0}, st, 9)
        return tl.cycles, tl.st_free

    beside, store_end = run_dispatch(CFG.OutBytes // 2)  # into the other half: while the store reads
    after, _ = run_dispatch(CFG.OutBytes // 2 - 8)  # into the half the store reads: once it is done
    assert beside < store_end - CFG.OutBytes // 2 // CFG.bus_bytes // 2 and after == store_end


def test_a_load_waits_for_a_store_of_the_memory_it_reads() -> None:
    """sim.Timeline (pqa_ctrl's mem_conflict): the read and write engines are separate AXI channels, so a
    `load` whose bus words overlap those the store unit's `store` or `stamp` writes waits until it has
    written them (else it could read the old bytes); one of other memory goes beside it. Words, not bytes:
    a store of a partial last word holds that whole word."""
    bus = CFG.bus_bytes

    def load_dispatch(addr: int, nbytes: int = 64, first: str = "store") -> tuple[int, int]:
        """(the load's dispatch cycle, the store unit's end) after a store of 2 KiB at 0x2000 (or a stamp)."""
        tl = sim.Timeline(CFG)
        st = sim._State()
        if first == "store":
            tl.step("store", {"half": 0, "nbytes": 2047, "addr": 0x2000}, st, 0)
        else:
            tl.step("stamp", {"addr": 0x2000}, st, 0)
        tl.step("load", {"buf": BUF["act"], "bank": 0, "nbytes": nbytes, "addr": addr}, st, 0, "act")
        return tl.cycles, tl.st_free

    end = load_dispatch(0x2800)[1]
    for addr, nbytes in ((0x2800, 64), (0x2000 - 64, 64), (0x2000 - 64, 57), (0x3000, 4096)):  # other words
        assert load_dispatch(addr, nbytes)[0] < end - 2048 // bus // 2, (addr, nbytes)
    for addr, nbytes in ((0x2000, 8), (0x2800 - bus, 8), (0x2000 - 64, 65), (0x1000, 8192)):  # its words
        assert load_dispatch(addr, nbytes) == (end, end), (addr, nbytes)
    rec = SPEC.perf_bytes
    stamp_end = load_dispatch(0x2000, 8, "stamp")[1]
    assert load_dispatch(0x2000 + rec - 1 - (rec - 1) % bus, 8, "stamp") == (stamp_end, stamp_end)
    assert load_dispatch(0x2000 + -(-rec // bus) * bus, 8, "stamp")[0] < stamp_end


def test_setup_decodes_while_the_compute_unit_works() -> None:
    """sim.Timeline (pqa_ctrl): `shape`, `quant`, `fmap` and `conv` wait for nothing (the units read a copy of
    the layer state that holds while they work), one a cycle from the fetch buffer; a conv-mode `run` waits
    until the compute unit has been idle GEO_SETTLE cycles after the last `shape` / `fmap` / `conv`, a
    matrix-mode one only for the compute unit."""
    tgt = SPEC.enums["target"]
    run = {"n": 4, "src": 0, "dst": tgt["act1"]}
    fmap = {"h": 2, "w": 2, "ch": 1}
    assert sim.FETCH_HIT_CYCLES == 1 and sim.GEO_SETTLE == 3

    def second_run(conv: int, setup: bool) -> tuple[int, list[int]]:
        tl = sim.Timeline(CFG)
        st = sim._State(conv=conv)
        tl.step("run", run, st, 100, hit=True)
        d0, cycles = tl.cycles, []
        for name in ("shape", "fmap", "quant") if setup else ():
            tl.step(name, fmap if name == "fmap" else {}, st, 0, hit=True)
            cycles.append(tl.cycles - d0)
        tl.step("run", run, st, 100, hit=True)
        return tl.cycles - d0, cycles

    # while the first run computes (to d0 + 101): the set-up one a cycle, no wait
    assert second_run(1, True) == (101 + sim.GEO_SETTLE, [1, 2, 3])
    assert second_run(0, True) == (101, [1, 2, 3])  # a matrix-mode run: no set-up wait
    assert second_run(1, False) == (101, [])  # no set-up since the last run: no wait
    # with the compute unit idle: fmap at d, the conv-mode run at d + 1 + GEO_SETTLE
    tl = sim.Timeline(CFG)
    st = sim._State(conv=1)
    tl.step("fmap", fmap, st, 0, hit=True)
    d = tl.cycles
    tl.step("run", run, st, 100, hit=True)
    assert tl.cycles == d + 1 + sim.GEO_SETTLE
    # a pool between them: its busy cycles do not count
    tl = sim.Timeline(CFG)
    tl.step("fmap", fmap, st, 0, hit=True)
    d = tl.cycles
    tl.step("pool", {"src": 1, "dst": tgt["out"]}, st, 20, hit=True)  # at d + 1: one idle cycle counted
    assert tl.cycles == d + 1
    tl.step("run", run, st, 100, hit=True)
    assert tl.cycles == d + 1 + 21 + sim.GEO_SETTLE - 1
