"""Constrained-random programs for ``pqa_top``, all built through the compiler's own back end
(``pqcompile.backend.emit`` / ``raw_program`` / ``write_build``), and the stimulus knobs of each job.

``random_job(seed, index, cfg, outdir)`` is a pure function of (seed, index): the same pair always gives
the same build directory and knobs, so any failing job of a regression is reproduced by its pair.

Job kinds:
- ``legal``: 1..3 chained PQ layers with random shapes (d, m, K, v, both metrics, ReLU, tiling), random
  activation width (2..ActW: inputs and prototypes in that range, ``quant.bits``) and table width
  (entries in 2..LutW bits), random biases and requantization (mult, shift 0..the spec's limit); or (40%) a conv-mode
  layer (``conv_program``: random fmap / window / stride / padding / out_w, v across window rows and
  channels, signed / ReLU / unsigned outputs) followed by a ``pool`` of its output and / or an ``add``
  with a residual, the second operand left in the output buffer or loaded into it;
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

from pqcompile import backend, sim
from pqcompile.isa import IllegalInstruction, decode, encode, field_limit, reserved_mask, with_field
from pqcompile.spec import HwConfig, load

SHIFT_MAX = field_limit("quant", "shift")  # the largest requantization shift the hardware accepts
STOP_ADDR = 0xFFFFFFF8  # an aligned address beyond every memory: a `stamp` there stops with `bus`


def _layer_shapes(rng: np.random.Generator, cfg: HwConfig, d0: int, nl: int) -> list[tuple[int, int, int, int]]:
    """(d, m, k, v) per layer, inside the configuration's limits."""
    out = []
    d = d0
    for i in range(nl):
        m = int(rng.choice([1, 3, cfg.MMax, int(rng.integers(1, cfg.MMax + 1))])) if i == nl - 1 or rng.random() < 0.5 \
            else int(rng.integers(2, cfg.MMax + 1))
        vmin = -(-d // cfg.CMax)
        v = int(rng.integers(vmin, cfg.VMax + 1))
        c = -(-d // v)
        k = int(rng.choice([1, 2, 3, 5, 7, cfg.KMax, int(rng.integers(1, cfg.KMax + 1))]))
        while k > 1 and (c * k * v > cfg.ProtoBytes or c * k * m * cfg.lut_bytes > cfg.LutBytes):
            k -= 1
        while c * k * m * cfg.lut_bytes > cfg.LutBytes:
            m -= 1
        out.append((d, m, k, v))
        d = m
    return out


def random_layers(rng: np.random.Generator, cfg: HwConfig, act_bits: int, lut_bits: int, nl: int,
                  x: np.ndarray | None = None, n: int = 4) -> tuple[list[backend.QLayer], np.ndarray]:
    """Random integer layers and input columns x [n, d0]. The requantization is calibrated on the data
    (most outputs inside the ``bits`` range, some saturating), with occasional uncalibrated ones."""
    dmax = min(cfg.ActBytes, cfg.CMax * cfg.VMax)
    d0 = int(rng.choice([1, int(rng.integers(1, 40)), int(rng.integers(1, dmax + 1))]))
    layers = []
    amax, lmax = 1 << (act_bits - 1), 1 << (lut_bits - 1)
    metrics = list(load().enums["metric"])
    x = rng.integers(-amax, amax, (n, d0)) if x is None else x
    y = x.astype(np.int64)
    for d, m, k, v in _layer_shapes(rng, cfg, d0, nl):
        c = -(-d // v)
        protos = rng.integers(-amax, amax, (c, k, v))
        if k > 1 and rng.random() < 0.5:  # duplicated prototypes: exact ties
            protos[:, -1] = protos[:, 0]
        protos[-1, :, d - (c - 1) * v :] = 0
        lut = rng.integers(-lmax, lmax, (c, k, m))
        bias = rng.integers(-c * lmax, c * lmax + 1, m) if rng.random() < 0.9 \
            else rng.integers(-(1 << 31), 1 << 31, m)
        metric = str(rng.choice(metrics))
        relu = bool(rng.random() < 0.5)
        xp = np.zeros((y.shape[0], c * v), np.int64)
        xp[:, :d] = y
        acc = sim.lookup(sim.encode(xp.reshape(-1, c, v), protos, load().enums["metric"][metric]), lut, bias, cfg.AccW)
        if rng.random() < 0.8:  # calibrated: |acc| * mult / 2^shift about 2^(bits-1)
            mult = int(rng.integers(1 << 14, 1 << 15)) if rng.random() < 0.8 else int(rng.integers(1, 17))
            top = int(np.abs(acc).max(initial=1)) * mult
            shift = min(SHIFT_MAX, max(0, top.bit_length() - (act_bits - 1) + int(rng.integers(-1, 2))))
        else:
            mult = int(rng.integers(0, 1 << 16))
            shift = int(rng.choice([0, 1, int(rng.integers(0, 48))]))
        q = backend.QLayer(protos, lut, bias, d, metric, mult, shift, relu, act_bits, name=f"rand{len(layers)}")
        layers.append(q)
        y = sim.requantize(acc, mult, shift, relu, act_bits)
    return layers, x


def features(cfg: HwConfig, layers: list[backend.QLayer], x: np.ndarray) -> dict[str, Any]:
    """What the coverage model samples about the data: tied minima, saturation, rounding ties."""
    spec = load()
    ties = sat_hi = sat_lo = half = 0
    for q in layers:
        xp = np.zeros((x.shape[0], q.c * q.v), np.int64)
        xp[:, : q.d] = x
        diff = xp.reshape(-1, q.c, 1, q.v) - q.protos[None].astype(np.int64)
        dist = np.abs(diff).sum(-1) if q.metric == "l1" else (diff * diff).sum(-1)
        ties += int(((dist == dist.min(-1, keepdims=True)).sum(-1) > 1).sum())
        idx = sim.encode(xp.reshape(-1, q.c, q.v), q.protos, spec.enums["metric"][q.metric])
        acc = sim.lookup(idx, q.lut, q.bias, cfg.AccW)
        wide = sim.requantize(acc, q.mult, q.shift, False, 63)  # rounded, not clamped
        if q.shift:
            half += int(((acc * q.mult) & ((1 << q.shift) - 1) == 1 << (q.shift - 1)).sum())
        sat_hi += int((wide >= 1 << (q.bits - 1)).sum())
        sat_lo += int((wide < (0 if q.relu else -(1 << (q.bits - 1)))).sum())
        x = sim.requantize(acc, q.mult, q.shift, q.relu, q.bits)
    return {"ties": ties, "sat_hi": sat_hi, "sat_lo": sat_lo, "round_half": half}


def _program_info(cfg: HwConfig, layers: list[backend.QLayer], act_bits: int, lut_bits: int, n: int) -> dict:
    return {"act_bits": act_bits, "lut_bits": lut_bits, "n": n,
            "layers": [{"d": q.d, "m": q.m, "k": q.k, "v": q.v, "c": q.c, "metric": q.metric, "relu": q.relu,
                        "bits": q.bits, "shift": q.shift} for q in layers]}


def legal_program(rng: np.random.Generator, cfg: HwConfig) -> tuple[backend.Program, dict]:
    if rng.random() < 0.4:
        return conv_program(rng, cfg)
    act_bits = int(rng.choice([2, 3, 8, int(rng.integers(2, cfg.ActW + 1))]))
    lut_bits = int(rng.choice([2, cfg.LutW, int(rng.integers(2, cfg.LutW + 1))]))
    nl = int(rng.choice([1, 1, 2, 3]))
    layers, x = random_layers(rng, cfg, act_bits, lut_bits, nl, n=int(rng.integers(1, 13)))
    fit = min(min(cfg.ActBytes // q.d, cfg.OutBytes // q.m) for q in layers)
    if rng.random() < 0.15 and fit >= cfg.bus_bytes:  # more columns than the buffers hold: tiling
        n = min(int(rng.integers(fit + 1, 2 * fit + 2)), 200)
        x = np.concatenate([x] * (-(-n // x.shape[0])))[:n]
    x = x[: max(1, min(x.shape[0], fit))] if fit < cfg.bus_bytes else x
    n = int(x.shape[0])
    prog = backend.emit(cfg, layers, x, name="random")
    info = _program_info(cfg, layers, act_bits, lut_bits, n)
    info.update(features(cfg, layers, x))
    return prog, info


CONV_CODE_END = 0x400  # conv programs: instructions below, then the stamps, then the data
CONV_STAMPS = 0x400


def _calibrated(rng: np.random.Generator, acc: np.ndarray, bits: int) -> tuple[int, int]:
    """(mult, shift): |acc| * mult / 2^shift about 2^(bits-1) (80%), or uncalibrated."""
    if rng.random() < 0.8:
        mult = int(rng.integers(1 << 14, 1 << 15))
        top = int(np.abs(acc).max(initial=1)) * mult
        return mult, min(SHIFT_MAX, max(0, top.bit_length() - (bits - 1) + int(rng.integers(-1, 2))))
    return int(rng.integers(0, 1 << 16)), int(rng.choice([0, 1, int(rng.integers(0, 48))]))


def _conv_geometry(rng: np.random.Generator, cfg: HwConfig) -> tuple[sim.ConvGeom, int, int, int]:
    """(geometry, v, d, n) inside the configuration: h*w*ch <= ActBytes, d = ch*kh*kw <= CMax*VMax."""
    while True:
        ch = int(rng.choice([1, 2, 3, 5, 8, 16, int(rng.integers(1, 33))]))
        h, w = int(rng.integers(1, 11)), int(rng.integers(1, 11))
        kh, kw = int(rng.integers(1, min(h + 2, 5) + 1)), int(rng.integers(1, min(w + 2, 5) + 1))
        r = rng.random()
        if r < 0.1:
            kh, kw = h, w  # flatten: the window is the whole fmap
        elif r < 0.35:
            kh, kw = 1, 1
        elif r < 0.6:
            kh, kw = 3, 3
        stride = int(rng.choice([1, 1, 2, 3, int(rng.integers(1, 16))]))
        pt, pl = int(rng.integers(0, min(kh, 3))), int(rng.integers(0, min(kw, 3)))
        out_h = max(1, (h + 2 * pt - kh) // stride + 1)
        out_w = max(1, (w + 2 * pl - kw) // stride + 1)
        if rng.random() < 0.1:
            out_w = int(rng.integers(1, 12))  # any out_w is legal: rows wrap elsewhere
        d = ch * kh * kw
        if h * w * ch > cfg.ActBytes or d > cfg.CMax * cfg.VMax:
            continue
        v = int(rng.integers(-(-d // cfg.CMax), cfg.VMax + 1))
        n = out_h * out_w if rng.random() < 0.8 else int(rng.integers(1, out_h * out_w + 3))
        return sim.ConvGeom(h, w, ch, stride, kh, kw, pt, pl, out_w), v, d, n


def conv_program(rng: np.random.Generator, cfg: HwConfig) -> tuple[backend.Program, dict]:
    """A conv-mode layer over a random fmap, then (each at random) a ``pool`` of its output and an
    ``add`` of a residual (second operand: the output left in the output buffer, or loaded into it).
    Random activation / table widths, metric, ReLU, unsigned outputs, calibrated requantization."""
    spec = load()
    bufs = spec.enums["buffer"]
    act_bits = int(rng.choice([2, 4, 8, int(rng.integers(2, cfg.ActW + 1))]))
    lut_bits = int(rng.choice([2, cfg.LutW, int(rng.integers(2, cfg.LutW + 1))]))
    g, v, d, n = _conv_geometry(rng, cfg)
    c = -(-d // v)
    m = int(rng.choice([1, 3, int(rng.integers(1, cfg.MMax + 1))]))
    m = max(1, min(m, cfg.OutBytes // n, cfg.MMax))
    k = int(rng.choice([1, 2, 3, 5, cfg.KMax, int(rng.integers(1, cfg.KMax + 1))]))
    while k > 1 and (c * k * v > cfg.ProtoBytes or c * k * m * cfg.lut_bytes > cfg.LutBytes):
        k -= 1
    while c * k * m * cfg.lut_bytes > cfg.LutBytes:
        m -= 1
    n = min(n, cfg.OutBytes // m)
    amax, lmax = 1 << (act_bits - 1), 1 << (lut_bits - 1)
    fmap = rng.integers(-amax, amax, g.h * g.w * g.ch)
    protos = rng.integers(-amax, amax, (c, k, v))
    if k > 1 and rng.random() < 0.5:
        protos[:, -1] = protos[:, 0]  # exact ties
    lut = rng.integers(-lmax, lmax, (c, k, m))
    bias = rng.integers(-c * lmax, c * lmax + 1, m)
    metric = str(rng.choice(list(spec.enums["metric"])))
    relu = bool(rng.random() < 0.5)
    uns = bool(act_bits < cfg.ActW and rng.random() < 0.3)
    x = np.zeros((n, c * v), np.int64)
    x[:, :d] = sim.conv_gather(fmap, g, d, n)
    acc = sim.lookup(sim.encode(x.reshape(n, c, v), protos, spec.enums["metric"][metric]), lut, bias, cfg.AccW)
    mult, shift = _calibrated(rng, acc, act_bits)
    y = sim.requantize(acc, mult, shift, relu, act_bits, uns).reshape(-1)

    segs: list[tuple[int, np.ndarray, str]] = []
    top = CONV_STAMPS + 8 * 4

    def put(data: np.ndarray, what: str) -> int:
        nonlocal top
        a = top
        segs.append((a, np.asarray(data).astype(np.uint8).reshape(-1), what))
        top = -(-(a + data.size) // 8) * 8
        return a

    def i8(a: np.ndarray) -> np.ndarray:
        return np.asarray(a, np.int64).astype(np.int8).view(np.uint8)

    labels = ["start", "conv"]
    words = [
        encode("stamp", addr=CONV_STAMPS),
        encode("load", buf=bufs["proto"], nbytes=c * k * v, addr=put(i8(protos), "prototypes")),
        encode("load", buf=bufs["lut"], nbytes=c * k * m * cfg.lut_bytes,
               addr=put(backend.lut_bytes(cfg, lut), "table")),
        encode("load", buf=bufs["bias"], nbytes=4 * m, addr=put(bias.astype("<i4").view(np.uint8), "bias")),
        encode("load", buf=bufs["act"], nbytes=fmap.size, addr=put(i8(fmap), "fmap")),
        encode("fmap", h=g.h, w=g.w, ch=g.ch),
        encode("conv", stride=g.stride, kh=g.kh, kw=g.kw, pad_t=g.pad_t, pad_l=g.pad_l, out_w=g.out_w),
        encode("shape", metric=metric, conv=1, k=k, v=v, c=c, d=d, m=m),
        encode("quant", relu=int(relu), unsigned=int(uns), shift=shift, mult=mult, bits=act_bits),
        encode("run", n=n),
        encode("stamp", addr=CONV_STAMPS + 8),
    ]
    info: dict[str, Any] = {"act_bits": act_bits, "lut_bits": lut_bits, "n": n, "unsigned": uns,
                            "conv": {"stride": g.stride, "kh": g.kh, "kw": g.kw, "pad": max(g.pad_t, g.pad_l),
                                     "ch": g.ch, "flatten": g.kh == g.h and g.kw == g.w},
                            "layers": [{"d": d, "m": m, "k": k, "v": v, "c": c, "metric": metric, "relu": relu,
                                        "bits": act_bits, "shift": shift}]}
    then = [t for t in ("pool", "add") if rng.random() < 0.6]
    for t in then:
        b2 = int(rng.choice([act_bits, int(rng.integers(2, cfg.ActW + 1))]))
        u2 = int(b2 < cfg.ActW and rng.random() < 0.3)
        r2 = int(rng.random() < 0.5)
        if t == "pool":  # the layer output, stored and loaded back, as an fmap of 1 x n pixels of m channels
            ao = top
            top = -(-(top + n * m) // 8) * 8
            words += [encode("store", nbytes=n * m, addr=ao), encode("load", buf=bufs["act"], nbytes=n * m, addr=ao),
                      encode("fmap", h=1, w=n, ch=m)]
            pm, ps = _calibrated(rng, y.reshape(n, m).sum(0), b2)
            words += [encode("quant", relu=r2, unsigned=u2, shift=ps, mult=pm, bits=b2), encode("pool")]
            y = sim.requantize(y.reshape(n, m).sum(0), pm, ps, bool(r2), b2, bool(u2))
            info["pool"] = True
        else:
            na = int(rng.integers(1, y.size + 1)) if rng.random() < 0.3 else y.size
            res = rng.integers(-128, 128, na)
            loaded = rng.random() < 0.3
            if loaded:  # the second operand loaded into the output buffer
                other = rng.integers(-128, 128, na)
                words.append(encode("load", buf=bufs["out"], nbytes=na, addr=put(i8(other), "add operand b")))
            sh = int(rng.integers(0, 20))
            words += [encode("load", buf=bufs["act"], nbytes=na, addr=put(i8(res), "add operand a")),
                      encode("quant", relu=r2, unsigned=u2, shift=sh, mult=int(rng.integers(0, 1 << 16)), bits=b2),
                      encode("add", n=na, ma=int(rng.integers(0, 1 << 16)) >> int(rng.integers(0, 16 - min(sh, 15))),
                             mb=int(rng.integers(0, 1 << 16)) >> int(rng.integers(0, 16 - min(sh, 15))))]
            info["add"] = "loaded" if loaded else "in_place"
        labels.append(t)
        words.append(encode("stamp", addr=CONV_STAMPS + 8 * (len(labels) - 1)))
    ao = top  # the whole output buffer region the program wrote (pool and add write its first bytes)
    top = -(-(top + n * m) // 8) * 8
    words += [encode("store", nbytes=n * m, addr=ao), encode("end")]
    assert 8 * len(words) <= CONV_STAMPS
    mem_bytes = -(-(top + 64) // 4096) * 4096
    prog = backend.raw_program(cfg, words, segs, mem_bytes=mem_bytes, name="random_conv")
    prog.manifest["stamps"] = {"addr": CONV_STAMPS, "labels": labels}
    return prog, info


ERROR_KINDS = ("illegal_opcode", "reserved_bit", "misaligned", "k_beyond", "bits_bad", "shift_bad",
               "load_beyond_buffer", "run_too_many", "store_beyond_mem", "unsigned_bits", "conv_d_bad",
               "fmap_beyond", "add_n_bad")
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
        i = pick("store", "shape", "quant", "run", "stamp", "end", "fmap", "conv", "pool", "add")
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
        words[i] = with_field(words[i], "shift", int(rng.integers(48, 64)))
    elif kind == "load_beyond_buffer":
        i = pick("load")
        biggest = max(cfg.ProtoBytes, cfg.LutBytes, cfg.bias_bytes, cfg.ActBytes)  # beyond every buffer
        words[i] = with_field(words[i], "nbytes", int(rng.integers(biggest + 1, 1 << 24)))
    elif kind == "run_too_many":
        i = pick("run")
        words[i] = with_field(words[i], "n", int(rng.integers(cfg.ActBytes + 1, 1 << 24)))
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
    words = []
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
                w = encode("store", nbytes=int(rng.integers(1, 300)), addr=addr)
            elif mn == "stamp":
                w = encode("stamp", addr=addr)
            elif mn == "shape":
                v = int(rng.integers(1, cfg.VMax + 2))
                c = int(rng.integers(1, 6))
                w = encode("shape", metric=int(rng.integers(0, 2)), conv=int(rng.random() < 0.3),
                           k=int(rng.integers(1, cfg.KMax + 2)), v=v, c=c,
                           d=max(1, int(rng.integers((c - 1) * v, c * v + 2))), m=int(rng.integers(1, cfg.MMax + 2)))
            elif mn == "quant":
                w = encode("quant", relu=int(rng.integers(0, 2)), unsigned=int(rng.random() < 0.3),
                           shift=int(rng.integers(0, 50)), mult=int(rng.integers(0, 1 << 16)),
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
                w = encode("run", n=int(rng.integers(1, 9)))
        words.append(_no_self_modify(w, code_end, mem_bytes))
    if rng.random() < 0.9:
        words.append(encode("end"))
    tail = rng.random() < 0.1  # start at the last two words of memory: the stream runs off its end (`bus`)
    data_end = mem_bytes - 16 if tail else mem_bytes
    data = [(code_end, rng.integers(0, 256, data_end - code_end, dtype=np.uint8), "random data")]
    if tail:
        nop = encode("shape", metric=0, k=1, v=1, c=1, d=1, m=1)
        data.append((data_end, np.frombuffer(b"".join(nop.to_bytes(8, "little") for _ in range(2)), np.uint8),
                     "no-effect instructions at the end of memory"))
    prog = backend.raw_program(cfg, words, data, mem_bytes=mem_bytes, name="words")
    if tail:
        prog.insn_base = data_end
        prog.manifest["insn_base"] = data_end
    return prog, {"n_words": len(words), "runs_off_memory": tail}


def _no_self_modify(w: int, code_end: int, mem_bytes: int) -> int:
    """Move a store / stamp that would write the instruction stream into the data region."""
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
    out = []
    for line in res.trace:
        pc, mn, ops = _parse_trace(line)
        out.append(pc // 8)
        if mn in ("load", "store", "stamp") and ops["addr"] % 8 == 0:
            nb = 8 if mn == "stamp" else ops["nbytes"]
            out += [a for a in range(ops["addr"] // 8, -(-(ops["addr"] + nb) // 8)) if a * 8 < prog.mem.size][:600]
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
    est = sim.run(cfg, prog.mem, prog.insn_base).cycles
    if faults:
        # backpressure costs Python on every cycle (cocotbext-axi pause generators): short programs only
        if rng.random() < 0.5 and est < 40_000:
            stim["pause"] = float(rng.choice([0.2, 0.5, 0.8]))
            stim["latency"] = int(rng.choice([0, 3, 10]))
        if kind != "words" and rng.random() < 0.15:
            acc = accessed_words(prog, cfg)
            if acc:
                stim["poison"] = [int(rng.choice(acc))]
    res = sim.run(cfg, prog.mem, prog.insn_base)
    if faults:
        r = rng.random()
        if r < 0.08:
            stim["reset_after"] = int(rng.integers(5, min(max(6, res.cycles), 20_000)))
        elif r < 0.16 and res.done and res.cycles > 300:  # well before the end: the run is still busy
            stim["restart_after"] = int(rng.integers(20, res.cycles // 3))
        if rng.random() < 0.25:
            stim["back_to_back"] = True
    return backend.write_build(outdir, cfg, prog, res, manifest_extra={"stim": stim, "gen": info})


def bursts(addr: int, beats: int) -> list[tuple[int, int]]:
    """How pqa_dma splits a transfer: INCR bursts of at most 256 beats (8 bytes) that never cross 4 KiB."""
    out = []
    while beats:
        n = min(beats, 256, (4096 - addr % 4096) // 8)
        out.append((addr, n))
        addr, beats = addr + 8 * n, beats - n
    return out
