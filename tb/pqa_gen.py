"""Constrained-random programs for ``pqa_top``, all built through the compiler's own back end
(``pqcompile.backend.emit_graph`` / ``raw_program`` / ``write_build``), and the stimulus knobs of each job.

``random_job(seed, index, cfg, outdir)`` is a pure function of (seed, index): the same pair always gives
the same build directory and knobs, so any failing job of a regression is reproduced by its pair.

Job kinds:
- ``legal``: a random integer graph (tb/graphgen.py) compiled by the back end's planner: either (60%)
  1..3 chained linear PQ layers with random shapes (d, m, K, v, both metrics, ReLU, signed or unsigned
  outputs) on 1..12 columns or (15%) more than the buffers hold (tiling into column tiles), (15%) the first
  with a table larger than the table buffer (tiled over m), (10%) the first with a column longer than one
  run takes (tiled over c: chained runs); or (40%) a
  conv layer (random fmap, window, stride, padding, flatten windows, v across window rows and channels;
  sometimes a fmap or an output larger than the buffers: bands; sometimes MMax outputs over up to 100
  pixels: a table tiled over m, an output beyond the act buffer that a pool pools in channel blocks), then
  at random a residual add with a second conv of the same geometry, a global pool and a linear classifier.
  Random activation width (2..ActW) and table width (2..LutW), random biases, requantization calibrated on
  the data (or wild: any mult, shift 0..the spec's limit);
- ``error``: a legal program with one instruction replaced by an illegal / out-of-limit / misaligned /
  out-of-memory one, somewhere in the middle;
- ``words``: random instruction words (fully random, random fields under a valid opcode, and legal
  instructions with random small operands, fmap / conv / pool / add included) followed by ``end``. The
  ISA has no branches, so every program ends after at most (memory size / 8) instructions: at its
  ``end``, at an error, or at the fetch beyond memory (``bus``). Stores and stamps never target the
  instruction stream (no self-modifying code; the fault model of ``pqa_env.expected_result`` relies on it).
Knobs (manifest ``stim``): AXI backpressure / latency, SLVERR injection on chosen words, reset in the
middle of a run (then a clean run), a START while busy, back-to-back start without reset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from graphgen import RandomGraph

from pqcompile import backend, ir, layout, sim
from pqcompile.errors import CompileError
from pqcompile.isa import (
    IllegalInstruction,
    decode,
    encode,
    field_limit,
    field_max,
    insn_bytes,
    reserved_mask,
    with_field,
)
from pqcompile.spec import HwConfig, load

SHIFT_MAX = field_limit("quant", "shift")  # the largest requantization shift the hardware accepts
STOP_ADDR = 0xFFFFFF80  # aligned to every bus width (to 1024 bits), beyond every memory: a `stamp` there is `bus`
WILD = 0.2  # share of requantizations with any mult and shift (mostly saturated or zero outputs)


def _metric(rng: np.random.Generator) -> str:
    return str(rng.choice(list(load().enums["metric"])))


def _kvm(rng: np.random.Generator, cfg: HwConfig, d: int, m: int, kmax: int | None = None,
         window: int = 0, big: bool = False, long: bool = False) -> tuple[int, int, int]:
    """(k, v, m) for a PQ layer of column length d inside the configuration's limits (m lowered if needed);
    a conv layer's ``window`` (kh*kw) is taken as v one time in three when it fits (one channel a subspace:
    the encoder's lanes gather mode). ``big``: the table may exceed the table buffer (the back end tiles it
    over m); only the prototypes and one output group's table must fit, and k is drawn large. ``long``: a
    column longer than one run takes (CMax * VMax): any v from 2, the back end tiles the column over c."""
    if long:
        v = int(rng.integers(2, cfg.VMax + 1))
    elif window and window <= cfg.VMax and d // window <= cfg.CMax and rng.random() < 1 / 3:
        v = window
    else:
        v = int(rng.integers(-(-d // cfg.CMax), cfg.VMax + 1))
    c = -(-d // v)
    k = int(rng.choice([1, 2, 3, 5, 7, cfg.KMax, int(rng.integers(1, cfg.KMax + 1))]))
    k = min(k, kmax or k)
    if long:
        k = int(rng.integers(1, cfg.KMax + 1))
        while k > 1 and layout.proto_bytes(cfg, cfg.CMax, k, v) > cfg.proto_cap:
            k -= 1
        return k, v, m
    if big:
        k = min(cfg.KMax, kmax or cfg.KMax)
        while k > 1 and (layout.proto_bytes(cfg, c, k, v) > cfg.proto_cap
                         or layout.lut_bytes(cfg, c, k, cfg.NOUT) > cfg.lut_cap):
            k -= 1
        return k, v, m
    while k > 1 and (c * k * v > cfg.ProtoBytes or c * k * m * cfg.lut_bytes > cfg.LutBytes):
        k -= 1
    while m > 1 and c * k * m * cfg.lut_bytes > cfg.LutBytes:
        m -= 1
    return k, v, m


def _out(rng: np.random.Generator, cfg: HwConfig, bits: int) -> dict[str, Any]:
    """Random output flags of an op: ReLU, unsigned (only below ActW bits), width."""
    return {"relu": bool(rng.random() < 0.5), "unsigned": bool(bits < cfg.ActW and rng.random() < 0.3), "bits": bits}


def mlp_graph(rng: np.random.Generator, cfg: HwConfig, act_bits: int, lut_bits: int) -> RandomGraph:
    """1..3 chained linear PQ layers on n columns; 15% with more columns than the buffers hold (tiling); 15%
    whose first layer has a table larger than the table buffer (MMax outputs, long columns: tiled over m)."""
    dmax = min(cfg.ActBytes, cfg.CMax * cfg.VMax)
    big = rng.random() < 0.15
    long = not big and rng.random() < 0.12  # a column beyond one run: tiled over c, the runs chained
    d = int(rng.integers(dmax // 2, dmax + 1)) if big else int(rng.integers(dmax + 1, 3 * dmax)) if long else \
        int(rng.choice([1, int(rng.integers(1, 40)), int(rng.integers(1, dmax + 1))]))
    nl = int(rng.choice([1, 1, 2, 3]))
    shapes = []
    for i in range(nl):
        last_or_any = i == nl - 1 or rng.random() < 0.5
        m = int(rng.choice([1, 3, cfg.MMax, int(rng.integers(1, cfg.MMax + 1))])) if last_or_any \
            else int(rng.integers(2, cfg.MMax + 1))
        m = cfg.MMax if big and i == 0 else m
        k, v, m = _kvm(rng, cfg, d, m, big=big and i == 0, long=long and i == 0)
        shapes.append((d, m, k, v))
        d = m
    n = int(rng.integers(1, 13))
    fit = min(min(cfg.ActBytes // d_, cfg.OutBytes // m_) for d_, m_, _, _ in shapes)
    if rng.random() < 0.15 and fit >= cfg.bus_bytes and not long:
        n = min(int(rng.integers(fit + 1, 2 * fit + 2)), 200)
    uns_in = bool(act_bits < cfg.ActW and rng.random() < 0.2)
    rg = RandomGraph(cfg, rng, (1, 1, shapes[0][0]), n, act_bits, lut_bits, uns_in, "random", wild=WILD)
    for _, m, k, v in shapes:
        rg.pq(rg.last, m, k, v, _metric(rng), **_out(rng, cfg, act_bits))
    return rg


def conv_graph(rng: np.random.Generator, cfg: HwConfig, act_bits: int, lut_bits: int) -> RandomGraph:
    """A conv layer (sometimes larger than the buffers: bands), then at random a residual add with a second
    conv of the same geometry, a global pool and a linear layer after the pool, on 1..3 images. One in four is
    *wide*: 8..10 x 8..10 pixels of MMax outputs, whose table may exceed the table buffer (tiled over m) and
    whose output may exceed the act buffer (a pool then pools it in channel blocks)."""
    big = rng.random() < 0.1
    wide = not big and rng.random() < 0.25
    while True:
        if big:  # the fmap or the output exceeds the act / output buffer: the planner splits it into bands
            h, w, ch = int(rng.integers(12, 29)), int(rng.integers(12, 29)), int(rng.integers(4, 13))
        elif wide:
            ch = int(rng.integers(1, 17))
            h, w = int(rng.integers(8, 11)), int(rng.integers(8, 11))
        else:
            ch = int(rng.choice([1, 2, 3, 5, 8, 16, int(rng.integers(1, 33))]))
            h, w = int(rng.integers(1, 11)), int(rng.integers(1, 11))
        kh, kw = int(rng.integers(1, min(h + 2, 5) + 1)), int(rng.integers(1, min(w + 2, 5) + 1))
        r = rng.random()
        if r < 0.1 and not big:
            kh, kw = h, w  # flatten: the window is the whole fmap
        elif r < 0.35:
            kh, kw = 1, 1
        elif r < 0.6:
            kh, kw = min(3, h + 2), min(3, w + 2)
        stride = int(rng.choice([1, 1, 2, 3, int(rng.integers(1, field_max("conv", "stride") + 1))]))
        pad = 0 if (kh, kw) == (h, w) and r < 0.1 else int(rng.integers(0, min(kh, kw, 3)))
        if wide:  # as many output pixels as input pixels
            kh = kw = int(rng.choice([1, 3]))
            stride, pad = 1, kh // 2
        oh, ow = (h + 2 * pad - kh) // stride + 1, (w + 2 * pad - kw) // stride + 1
        d = ch * kh * kw
        if oh >= 1 and ow >= 1 and (big or h * w * ch <= cfg.ActBytes) and d <= cfg.CMax * cfg.VMax:
            break
    m = int(rng.choice([1, 3, int(rng.integers(1, cfg.MMax + 1))]))
    m = max(1, min(m, cfg.MMax, 24 if big else cfg.MMax))
    m = cfg.MMax if wide else m
    k, v, m = _kvm(rng, cfg, d, m, kmax=4 if big else None, window=kh * kw, big=wide)
    n = 1 if big else int(rng.choice([1, 1, 2, 3]))
    uns_in = bool(act_bits < cfg.ActW and rng.random() < 0.2)
    rg = RandomGraph(cfg, rng, (h, w, ch), n, act_bits, lut_bits, uns_in, "random_conv", wild=WILD)
    geom = {"kh": kh, "kw": kw, "stride": stride, "pad": pad}
    t = rg.pq("input", m, k, v, _metric(rng), **_out(rng, cfg, act_bits), **geom)
    if rng.random() < (0.1 if wide else 0.4):
        s = rg.pq("input", m, k, v, _metric(rng), **_out(rng, cfg, act_bits), **geom)
        t = rg.add(t, s, **_out(rng, cfg, int(rng.choice([act_bits, int(rng.integers(2, cfg.ActW + 1))]))))
    # a fmap beyond the act buffer is pooled in channel blocks (or refused, then drawn again: after an add)
    if rng.random() < (0.8 if wide else 0.5) and (oh * ow * m <= cfg.ActBytes or wide or rng.random() < 0.5):
        t = rg.pool(t, **_out(rng, cfg, int(rng.choice([act_bits, int(rng.integers(2, cfg.ActW + 1))]))))
        if rng.random() < 0.5:
            m2 = int(rng.integers(1, 17))
            k2, v2, m2 = _kvm(rng, cfg, m, m2)
            rg.pq(t, m2, k2, v2, _metric(rng), **_out(rng, cfg, act_bits))
    return rg


def legal_program(rng: np.random.Generator, cfg: HwConfig) -> tuple[backend.Program, dict]:
    """A random graph compiled by the back end; graphs it refuses (a band that fits no buffer, a memory
    image beyond the address space) are drawn again from the same generator (still a function of the seed).
    Some programs of several images run in passes (``batch``), the ops before a random one image by image
    (``batch_from``); drawn from a stream of their own (spawned: the jobs' other draws do not move), and a
    graph the back end refuses so is compiled in one pass, as before. On a bus of several instructions a word,
    half the programs are scheduled for a slow memory (``mem_bw`` 1 .. bus bytes - 1, drawn from a stream
    spawned from that one), so that ``backend.fetch_order`` moves runs ahead of stores behind long table
    loads; a bus of one instruction (``small``, ``default``) draws nothing more."""
    aux = rng.spawn(1)[0]
    bw_rng = aux.spawn(1)[0]
    per_word = cfg.bus_bytes // insn_bytes()
    for _ in range(50):
        act_bits = int(rng.choice([2, 3, 4, 8, int(rng.integers(2, cfg.ActW + 1))]))
        lut_bits = int(rng.choice([2, cfg.LutW, int(rng.integers(2, cfg.LutW + 1))]))
        rg = conv_graph(rng, cfg, act_bits, lut_bits) if rng.random() < 0.4 else mlp_graph(rng, cfg, act_bits, lut_bits)
        # half the programs draw each PQ op's table bank: a bank reused by the next op makes its table loads
        # wait for the `run` reading it (the controller's dependency check), the others load beside it
        n_pq = sum(isinstance(op, ir.PQOp) for op in rg.ops)
        banks = [int(b) for b in rng.integers(0, 2, n_pq)] if rng.random() < 0.5 else None
        # a quarter of the programs move every result through memory, the others keep results on chip
        # (act banks, the output buffer) where the back end can
        on_chip = bool(rng.random() < 0.75)
        try:
            info = rg.info()
            reused = banks is not None and any(a == b for a, b in zip(banks, banks[1:], strict=False))
            info["table_banks"] = "reused" if reused else "alternate" if n_pq > 1 else None
            n_img = int(rg.x.shape[0])
            batch = int(aux.integers(1, n_img + 1)) if n_img > 1 and aux.random() < 0.3 else None
            frm = rg.ops[int(aux.integers(1, len(rg.ops)))].name if batch and len(rg.ops) > 1 and aux.random() < 0.6 \
                else None
            mem_bw = int(bw_rng.integers(1, cfg.bus_bytes)) if per_word > 1 and bw_rng.random() < 0.5 else 0
            try:
                prog = rg.emit(banks, on_chip, batch, frm, mem_bw)
                info["batching"] = "from" if frm else "passes" if batch else None
            except CompileError:
                prog = rg.emit(banks, on_chip, mem_bw=mem_bw)
            # the schedule (moved loads, stores, runs; passes; fetch order) must compute the graph: the golden
            # simulator's output equals the integer reference the graph was grown with (the regression then
            # checks the RTL against the simulator)
            res = sim.run(cfg, prog.mem, prog.insn_base)
            n = int(rg.x.shape[0])
            got = backend.read_output(prog.manifest, res.mem).astype(np.int64).reshape(n, -1)
            if res.err_code or not np.array_equal(got, rg.output().reshape(n, -1)):
                raise RuntimeError(f"legal_program: the back end's program does not compute its graph (error "
                                   f"code {res.err_code}, {int((got != rg.output().reshape(n, -1)).sum())} outputs "
                                   "differ from the integer reference)")
            kept = set(prog.manifest["memory"]["on_chip"].values())
            info["on_chip"] = sorted({"act" if k.startswith("act") else k for k in kept}) or ["memory"]
            return prog, info
        except CompileError:
            continue
    raise RuntimeError("no random graph of 50 compiled")  # the generator is broken, not the design


ERROR_KINDS = ("illegal_opcode", "reserved_bit", "misaligned", "k_beyond", "bits_bad", "shift_bad",
               "load_beyond_buffer", "run_too_many", "store_beyond_mem", "unsigned_bits", "conv_d_bad",
               "fmap_beyond", "add_n_bad", "run_out_beyond")
CONV_ERROR_KINDS = ("conv_d_bad", "fmap_beyond", "add_n_bad")  # need a conv program (fmap, add)


def _mutate(rng: np.random.Generator, cfg: HwConfig, words: list[int], kind: str, mem_bytes: int) -> list[int]:
    spec = load()
    words = list(words)
    names = [decode(w).mnemonic for w in words]

    def pick(*mn: str) -> int:
        idx = [i for i, n in enumerate(names) if n in mn]
        return int(rng.choice(idx))

    if kind == "illegal_opcode":
        i = int(rng.integers(1, len(words)))
        legal = {d.opcode for d in spec.instructions}
        opf = spec.opcode_field
        op = int(rng.choice([o for o in range(1 << opf.width) if o not in legal]))
        rest = int(rng.integers(0, 1 << (spec.insn_bits - opf.width))) << opf.width
        words[i] = (rest & ~(opf.mask << opf.lsb)) | op << opf.lsb
    elif kind == "reserved_bit":
        # instructions that still have a reserved bit (`shape` has none since `pack` took bit 7)
        with_reserved = [m for m in ("store", "shape", "quant", "run", "stamp", "end", "fmap", "conv", "pool", "add")
                         if reserved_mask(spec.by_mnemonic(m))]
        i = pick(*with_reserved)
        mask = reserved_mask(spec.by_mnemonic(names[i]))
        bits = [b for b in range(64) if mask >> b & 1]
        words[i] |= 1 << int(rng.choice(bits))
    elif kind == "misaligned":
        i = pick("load", "store", "stamp")
        words[i] = with_field(words[i], "addr", decode(words[i]).addr | int(rng.integers(1, cfg.bus_bytes)))
    elif kind == "k_beyond":
        i = pick("shape")
        words[i] = with_field(words[i], "k", int(rng.integers(cfg.KMax + 1, 256)))
    elif kind == "bits_bad":
        i = pick("quant")
        words[i] = with_field(words[i], "bits", int(rng.choice([0, 1, *range(cfg.ActW + 1, 16)])))
    elif kind == "shift_bad":
        i = pick("quant")
        words[i] = with_field(words[i], "shift", int(rng.integers(SHIFT_MAX + 1, field_max("quant", "shift") + 1)))
    elif kind == "load_beyond_buffer":
        i = pick("load")
        biggest = max(cfg.ProtoBytes, cfg.LutBytes, cfg.bias_bytes, cfg.ActBytes)  # beyond every buffer
        words[i] = with_field(words[i], "nbytes", int(rng.integers(biggest + 1, 1 << 24)))
    elif kind == "run_too_many":
        i = pick("run")
        words[i] = with_field(words[i], "n", int(rng.integers(cfg.ActBytes + 1, 1 << 24)))
    elif kind == "run_out_beyond":  # the run's outputs would end past its destination (run.ooff)
        i = pick("run")
        words[i] = with_field(words[i], "ooff", int(rng.integers(max(cfg.ActBytes, cfg.OutBytes), 1 << 16)))
    elif kind == "unsigned_bits":  # unsigned needs bits < ActW: limit at the next run / pool / add
        i = pick("quant")
        words[i] = with_field(with_field(words[i], "unsigned", 1), "bits", cfg.ActW)
    elif kind == "conv_d_bad":  # conv mode needs d == ch*kh*kw
        i = pick("shape")
        ins = decode(words[i])
        d = int(rng.choice([ins.d - 1, ins.d + 1])) if ins.d > 1 else ins.d + 1
        words[i] = with_field(words[i], "d", d)
    elif kind == "fmap_beyond":  # h*w*ch beyond the act buffer
        i = pick("fmap")
        words[i] = with_field(words[i], "h", cfg.ActBytes // decode(words[i]).w // decode(words[i]).ch + 1)
    elif kind == "add_n_bad":
        i = pick("add")
        words[i] = with_field(words[i], "n", int(rng.choice([0, min(cfg.ActBytes, cfg.OutBytes) + 1])))
    elif kind == "store_beyond_mem":  # straddles the end of memory: the in-range bursts may be written
        i = pick("store")
        nb = int(rng.integers(9, cfg.OutBytes + 1))
        addr = mem_bytes - 8 * int(rng.integers(1, -(-nb // 8) + 1))
        words[i] = encode("store", nbytes=nb, addr=addr)
    else:
        raise ValueError(kind)
    return words


def _rebuild(cfg: HwConfig, prog: backend.Program, words: list[int]) -> backend.Program:
    raw = backend.raw_program(cfg, words, data=prog.segments[1:], mem_bytes=prog.manifest["mem_bytes"],
                              name=prog.manifest["model"])
    raw.manifest["stamps"] = prog.manifest["stamps"]
    return raw


def random_words_program(rng: np.random.Generator, cfg: HwConfig) -> tuple[backend.Program, dict]:
    spec = load()
    mem_bytes = int(rng.choice([4096, 8192, 16384]))
    code_end = 0x400
    n = int(rng.integers(1, 40))
    bufs = list(spec.enums["buffer"].values())
    # a stream of its own (spawning leaves rng's draws as they were, so the jobs' other choices do not move):
    # now and then a `load` right after a `store`, of words the store writes (a read after a write through
    # external memory: pqa_ctrl's mem_conflict)
    aux = rng.spawn(1)[0]
    bus = cfg.bus_bytes
    words = []

    def load_back(st: dict[str, int], first: bool = False) -> list[int]:
        """A load of some of the words that store ``st`` writes (from a little before them, or from its last).
        ``first``: into an act bank, copied to the output buffer by an ``add`` (act * 1 + out * 0) and stored
        elsewhere, so that a stale byte reaches memory (the scoreboard compares memory)."""
        if aux.random() < 0.5:  # from up to 4 words before its first word, into it
            at = max(code_end, st["addr"] - bus * int(aux.integers(0, 5)))
            nb = st["addr"] - at + int(aux.integers(1, 600))
        else:  # from its last word on
            at, nb = (st["addr"] + st["nbytes"] - 1) // bus * bus, int(aux.integers(1, 600))
        buf = "act" if first else str(aux.choice(["act", "out", "lut"]))
        bank = int(aux.integers(0, 2)) if buf != "out" else 0
        out = [encode("load", buf=spec.enums["buffer"][buf], bank=bank, nbytes=nb, addr=at)]
        if first:
            n_add = min(nb, cfg.ActBytes, cfg.OutBytes)
            out += [encode("quant", relu=0, shift=0, mult=1, bits=cfg.ActW),
                    encode("add", src=bank, n=n_add, ma=1, mb=0),
                    encode("store", nbytes=n_add,
                           addr=int(aux.integers(code_end, mem_bytes - n_add + 1)) // bus * bus)]
        return out

    if aux.random() < 0.5:  # a store of the output buffer, then a load of its words, at the program's start
        nb = int(aux.integers(1, min(cfg.OutBytes, mem_bytes - code_end) // 2))
        words.append(encode("store", nbytes=nb, addr=int(aux.integers(code_end, mem_bytes - nb)) // bus * bus))
        words += load_back(decode(words[-1]).ops, first=True)
    for _ in range(n):
        mode = rng.choice(["raw", "opcode", "legal", "legal"])
        if mode == "raw":
            w = int(rng.integers(0, 1 << 63)) << 1 | int(rng.integers(0, 2))
        elif mode == "opcode":
            w = (int(rng.integers(0, 1 << 60)) << 4) | int(rng.choice([d.opcode for d in spec.instructions]))
        else:
            mn = str(rng.choice(["load", "load", "store", "shape", "quant", "run", "stamp", "fmap", "conv", "pool",
                                 "add"]))
            addr = int(rng.integers(code_end, mem_bytes + 256)) // 8 * 8 if rng.random() < 0.9 \
                else int(rng.integers(0, 1 << 32))
            if mn == "load":
                w = encode("load", buf=int(rng.choice(bufs)), nbytes=int(rng.integers(1, 700)), addr=addr)
            elif mn == "store":
                w = encode("store", nbytes=int(rng.integers(1, 300)), addr=addr, half=int(rng.integers(0, 2)))
            elif mn == "stamp":
                w = encode("stamp", addr=addr)
            elif mn == "shape":
                v = int(rng.integers(1, cfg.VMax + 2))
                c = int(rng.integers(1, 6))
                w = encode("shape", metric=int(rng.integers(0, 2)), conv=int(rng.random() < 0.3),
                           pack=int(rng.random() < 0.3), k=int(rng.integers(1, cfg.KMax + 2)), v=v, c=c,
                           d=max(1, int(rng.integers((c - 1) * v, c * v + 2))), m=int(rng.integers(1, cfg.MMax + 2)))
            elif mn == "quant":
                w = encode("quant", relu=int(rng.integers(0, 2)), unsigned=int(rng.random() < 0.3),
                           shift=int(rng.integers(0, SHIFT_MAX + 3)), mult=int(rng.integers(0, 1 << 16)),
                           bits=int(rng.integers(1, cfg.ActW + 2)))
            elif mn == "fmap":
                w = encode("fmap", h=int(rng.integers(0, 12)), w=int(rng.integers(0, 12)), ch=int(rng.integers(0, 20)))
            elif mn == "conv":
                kh, kw = int(rng.integers(0, 5)), int(rng.integers(0, 5))
                w = encode("conv", stride=int(rng.integers(0, 4)), kh=kh, kw=kw, pad_t=int(rng.integers(0, kh + 2)),
                           pad_l=int(rng.integers(0, kw + 2)), out_w=int(rng.integers(0, 12)))
            elif mn == "pool":
                w = encode("pool")
            elif mn == "add":
                w = encode("add", n=int(rng.integers(0, 400)), ma=int(rng.integers(0, 1 << 16)),
                           mb=int(rng.integers(0, 1 << 16)))
            else:
                # run.ostride / ooff: mostly dense from byte 0, a stride below m (limit) now and then
                w = encode("run", n=int(rng.choice([1, int(rng.integers(1, 9))])),
                           dst=int(rng.choice([spec.enums["target"]["out"]] * 9 + [spec.enums["target"]["none"]])),
                           acc=int(rng.random() < 0.1),
                           ostride=int(rng.choice([0, 0, 0, int(rng.integers(0, 20))])),
                           ooff=int(rng.choice([0, 0, 0, int(rng.integers(0, 64))])))
        words.append(_no_self_modify(w, code_end, mem_bytes))
        if mode == "legal" and mn == "store" and aux.random() < 0.5:
            words += load_back(decode(words[-1]).ops)
    if rng.random() < 0.9:
        words.append(encode("end"))
    tail = rng.random() < 0.1  # start at the last two words of memory: the stream runs off its end (`bus`)
    data_end = mem_bytes - 16 if tail else mem_bytes
    data = [(code_end, rng.integers(0, 256, data_end - code_end, dtype=np.uint8), "random data")]
    if tail:  # one segment (segments start at bus words, the last two instructions need not)
        nop = encode("shape", metric=0, k=1, v=1, c=1, d=1, m=1)
        nops = np.frombuffer(b"".join(nop.to_bytes(8, "little") for _ in range(2)), np.uint8)
        data = [(code_end, np.concatenate([data[0][1], nops]),
                 "random data, then no-effect instructions in the last 16 bytes of memory")]
    prog = backend.raw_program(cfg, words, data, mem_bytes=mem_bytes, name="words")
    if tail:
        prog.insn_base = data_end
        prog.manifest["insn_base"] = data_end
    return prog, {"n_words": len(words), "runs_off_memory": tail, "mem_raw": mem_raw_loads(prog, cfg)}


def mem_raw_loads(prog: backend.Program, cfg: HwConfig) -> int:
    """Executed `load`s that read bus words the last `store` or `stamp` before them writes (the golden
    simulator's trace)."""
    res = sim.run(cfg, prog.mem, prog.insn_base, trace=True)
    last, hits = (0, 0), 0
    for line in res.trace:
        _, mn, ops = _parse_trace(line)
        if mn in ("store", "stamp"):
            last = sim.transfer_words(cfg, mn, ops)
        elif mn == "load":
            lo, hi = sim.transfer_words(cfg, mn, ops)
            hits += lo < last[1] and last[0] < hi
    return hits


def _no_self_modify(w: int, code_end: int, mem_bytes: int) -> int:
    """Move a store / stamp that would write the instruction stream into the data region (which starts at
    ``code_end``: a store or a stamp record from there on never reaches the instructions below it)."""
    try:
        insn = decode(w)
    except IllegalInstruction:
        return w
    if insn.mnemonic in ("store", "stamp") and insn.ops["addr"] < code_end:
        return (w & 0xFFFFFFFF) | ((code_end + insn.ops["addr"] % (mem_bytes - code_end)) << 32)
    return w


def accessed_words(prog: backend.Program, cfg: HwConfig) -> list[int]:
    """Word addresses the program's executed instructions fetch, load or store (for SLVERR injection)."""
    res = sim.run(cfg, prog.mem, prog.insn_base, trace=True)
    bus = cfg.bus_bytes  # poison is a set of bus-word addresses
    out = []
    for line in res.trace:
        pc, mn, ops = _parse_trace(line)
        out.append(pc // bus)
        if mn in ("load", "store", "stamp") and ops["addr"] % bus == 0:
            lo, hi = sim.transfer_words(cfg, mn, ops)
            words = range(lo // bus, hi // bus)
            out += [a for a in words if a * bus < prog.mem.size][:600]
    return out


def _parse_trace(line: str) -> tuple[int, str, dict[str, int]]:
    import ast

    pc, mn, ops = line.split(" ", 2)
    return int(pc, 16), mn, ast.literal_eval(ops)


def random_job(seed: int, index: int, cfg: HwConfig, outdir: Path, kinds: tuple[str, ...] = ("legal", "error", "words"),
               weights: tuple[float, ...] = (0.6, 0.2, 0.2), faults: bool = True) -> dict:
    """Write build directory ``outdir`` for job (seed, index); return its manifest (with ``stim``, ``gen``)."""
    rng = np.random.default_rng([seed, index])
    kind = str(rng.choice(kinds, p=np.array(weights) / sum(weights)))
    stim: dict[str, Any] = {"kind": kind, "seed": seed, "index": index}
    if kind == "words":
        prog, info = random_words_program(rng, cfg)
        if rng.random() < 0.05:
            prog.insn_base = 4  # misaligned INSN_BASE: `align` at the first fetch
            prog.manifest["insn_base"] = 4
    else:
        prog, info = legal_program(rng, cfg)
        if kind == "error":
            names = {decode(w).mnemonic for w in prog.words}
            err = str(rng.choice([e for e in ERROR_KINDS if e not in CONV_ERROR_KINDS
                                  or ("add" in names if e == "add_n_bad" else "fmap" in names)]))
            info["mutation"] = err
            prog = _rebuild(cfg, prog, _mutate(rng, cfg, prog.words, err, prog.manifest["mem_bytes"]))
    res = sim.run(cfg, prog.mem, prog.insn_base)  # the expected results (and the length of the run)
    if faults:
        # backpressure costs Python on every cycle (cocotbext-axi pause generators): short programs only
        if rng.random() < 0.5 and res.cycles < 40_000:
            stim["pause"] = float(rng.choice([0.2, 0.5, 0.8]))
            stim["latency"] = int(rng.choice([0, 3, 10]))
        if kind != "words" and rng.random() < 0.15:
            acc = accessed_words(prog, cfg)
            if acc:
                stim["poison"] = [int(rng.choice(acc))]
    if faults:
        r = rng.random()
        if r < 0.08:
            stim["reset_after"] = int(rng.integers(5, min(max(6, res.cycles), 20_000)))
        elif r < 0.16 and res.done and res.cycles > 300:  # well before the end: the run is still busy
            stim["restart_after"] = int(rng.integers(20, res.cycles // 3))
        if rng.random() < 0.25:
            stim["back_to_back"] = True
    return backend.write_build(outdir, cfg, prog, res, manifest_extra={"stim": stim, "gen": info})


def bursts(addr: int, beats: int, bus: int = 8) -> list[tuple[int, int]]:
    """How pqa_dma splits a transfer: INCR bursts of at most 256 beats (``bus`` bytes) that never cross 4 KiB."""
    out = []
    while beats:
        n = min(beats, 256, (4096 - addr % 4096) // bus)
        out.append((addr, n))
        addr, beats = addr + bus * n, beats - n
    return out
