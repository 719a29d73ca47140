"""Constrained-random programs for ``pqa_top``, all built through the compiler's own back end
(``pqcompile.backend.emit`` / ``raw_program`` / ``write_build``), and the stimulus knobs of each job.

``random_job(seed, index, cfg, outdir)`` is a pure function of (seed, index): the same pair always gives
the same build directory and knobs, so any failing job of a regression is reproduced by its pair.

Job kinds:
- ``legal``: 1..3 chained PQ layers with random shapes (d, m, K, v, both metrics, ReLU, tiling), random
  activation width (2..ActW: inputs and prototypes in that range, ``quant.bits``) and table width
  (entries in 2..LutW bits), random biases and requantization (mult, shift 0..47);
- ``error``: a legal program with one instruction replaced by an illegal / out-of-limit / misaligned /
  out-of-memory one, somewhere in the middle;
- ``words``: random instruction words (fully random, random fields under a valid opcode, and legal
  instructions with random small operands) followed by ``end``. The ISA has no branches, so every
  program ends after at most (memory size / 8) instructions: at its ``end``, at an error, or at the
  fetch beyond memory (``bus``). Stores and stamps never target the instruction stream (no
  self-modifying code; the fault model of ``pqa_env.expected_result`` relies on it).
Knobs (manifest ``stim``): AXI backpressure / latency, SLVERR injection on chosen words, reset in the
middle of a run (then a clean run), a START while busy, back-to-back start without reset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pqcompile import backend, sim
from pqcompile.isa import IllegalInstruction, decode, encode, reserved_mask, with_field
from pqcompile.spec import HwConfig, load

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
            shift = min(47, max(0, top.bit_length() - (act_bits - 1) + int(rng.integers(-1, 2))))
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


ERROR_KINDS = ("illegal_opcode", "reserved_bit", "misaligned", "k_beyond", "bits_bad", "shift_bad",
               "load_beyond_buffer", "run_too_many", "store_beyond_mem")


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
        i = pick("store", "shape", "quant", "run", "stamp", "end")
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
            mn = str(rng.choice(["load", "load", "store", "shape", "quant", "run", "stamp"]))
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
                w = encode("shape", metric=int(rng.integers(0, 2)), k=int(rng.integers(1, cfg.KMax + 2)), v=v, c=c,
                           d=max(1, int(rng.integers((c - 1) * v, c * v + 2))), m=int(rng.integers(1, cfg.MMax + 2)))
            elif mn == "quant":
                w = encode("quant", relu=int(rng.integers(0, 2)), shift=int(rng.integers(0, 50)),
                           mult=int(rng.integers(0, 1 << 16)), bits=int(rng.integers(1, cfg.ActW + 2)))
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
            prog.insn_base = 4  # misaligned INSN_BASE: fetch `bus` at once
            prog.manifest["insn_base"] = 4
    else:
        prog, info = legal_program(rng, cfg)
        if kind == "error":
            err = str(rng.choice(ERROR_KINDS))
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
