"""The golden instruction-set simulator: executes a PQA instruction stream over a memory image.

Integer only and bit-exact: the RTL must reproduce every byte it writes. The layer semantics are those
of docs/isa.md; the helpers ``encode``, ``lookup`` and ``requantize`` are the reference functions that
block-level tests and the quantized torch model are checked against.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .isa import IllegalInstruction, decode
from .spec import HwConfig, load


class SimError(RuntimeError):
    """Raised by :func:`run` with ``strict=True`` when the program stops with an error code."""


def encode(x: np.ndarray, protos: np.ndarray, metric: int) -> np.ndarray:
    """Nearest prototype per subspace, lowest index on ties.

    x: [n, c, v] int, protos: [c, k, v] int -> [n, c] int64 indices. ``metric`` is the spec's enum value.
    """
    diff = x[:, :, None, :].astype(np.int64) - protos[None, :, :, :].astype(np.int64)
    l1 = load().enums["metric"]["l1"]
    dist = np.abs(diff).sum(-1) if metric == l1 else (diff * diff).sum(-1)
    return np.argmin(dist, axis=-1)  # argmin returns the first minimum: lowest index wins ties


def wrap(x: np.ndarray, bits: int) -> np.ndarray:
    """Two's-complement wrap of int64 values to ``bits`` bits."""
    x = np.asarray(x, dtype=np.int64) & ((1 << bits) - 1)
    return np.where(x >= 1 << (bits - 1), x - (1 << bits), x)


def lookup(idx: np.ndarray, lut: np.ndarray, bias: np.ndarray, acc_w: int = 32) -> np.ndarray:
    """acc[n, m] = bias[m] + sum_c lut[c, idx[n, c], m], wrapped to ``acc_w`` bits."""
    c = np.arange(lut.shape[0])
    acc = lut[c[None, :], idx, :].astype(np.int64).sum(axis=1) + bias.astype(np.int64)[None, :]
    return wrap(acc, acc_w)


def requantize(acc: np.ndarray, mult: int, shift: int, relu: bool, bits: int = 8) -> np.ndarray:
    """y = clamp(relu((acc * mult + 2^(shift-1)) >> shift)) to signed ``bits`` bits: round half up,
    arithmetic shift."""
    y = np.asarray(acc, dtype=np.int64) * int(mult)
    if shift > 0:
        y = (y + (1 << (shift - 1))) >> shift
    lo = 0 if relu else -(1 << (bits - 1))
    return np.clip(y, lo, (1 << (bits - 1)) - 1)


@dataclass
class Result:
    """Outcome of a run: the final memory, status and counters."""

    mem: np.ndarray
    done: bool
    err_code: int
    err_pc: int
    insn_count: int
    cycles: int
    trace: list[str] = field(default_factory=list)


@dataclass
class _State:
    metric: int = 0
    k: int = 0
    v: int = 0
    c: int = 0
    d: int = 0
    m: int = 0
    relu: int = 0
    shift: int = 0
    mult: int = 0
    bits: int = 0


def cycle_estimate(cfg: HwConfig, mnemonic: str, ops: dict[str, int], st: _State) -> int:
    """Cycle model of the narrow datapath (one element, one prototype, one table entry per cycle):
    a column costs c*k*v encode cycles plus m*c look-up cycles plus a few of control; a transfer costs
    its bus words plus the fetch and handshake overhead of an unloaded memory. Used for the simulator's
    own ``stamp`` values and the compiler's reports; the RTL's cycles are measured, not modelled."""
    if mnemonic in ("load", "store"):
        return 12 + -(-ops["nbytes"] // cfg.bus_bytes)
    if mnemonic == "run":
        return 8 + ops["n"] * (st.c * st.k * st.v + st.m * st.c + 5)
    return 8


def start_cycles(cfg: HwConfig) -> int:
    """Cycles a start spends clearing the on-chip buffers (one word per cycle over the largest buffer)."""
    return max(cfg.ProtoBytes, cfg.LutBytes, cfg.ActBytes, cfg.OutBytes, cfg.bias_bytes) // cfg.bus_bytes


def run(cfg: HwConfig, mem: np.ndarray, insn_base: int, max_insns: int = 1_000_000,
        strict: bool = False, trace: bool = False) -> Result:
    """Execute from ``insn_base`` until ``end`` or an error. ``mem`` (uint8) is copied, not changed."""
    spec = load()
    err = spec.errors
    bufs = {
        "proto": np.zeros(cfg.ProtoBytes, np.uint8),
        "lut": np.zeros(cfg.LutBytes, np.uint8),
        "bias": np.zeros(cfg.bias_bytes, np.uint8),
        "act": np.zeros(cfg.ActBytes, np.uint8),
    }
    buf_names = {v: k for k, v in spec.enums["buffer"].items()}
    out = np.zeros(cfg.OutBytes, np.uint8)
    mem = np.array(mem, dtype=np.uint8, copy=True)
    st = _State()
    bb = cfg.bus_bytes
    pc = insn_base
    cycles = start_cycles(cfg)
    count = 0
    log: list[str] = []

    def stop(code: str) -> Result:
        if strict and code != "none":
            raise SimError(f"stopped with error {code} at pc {pc:#x}")
        return Result(mem, code == "none", err[code], pc if code != "none" else 0, count, cycles, log)

    while count < max_insns:
        if pc % bb or pc + 8 > mem.size:
            return stop("bus")
        word = int.from_bytes(mem[pc : pc + 8].tobytes(), "little")
        try:
            insn = decode(word)
        except IllegalInstruction:
            return stop("illegal_insn")
        ops = insn.ops
        if trace:
            log.append(f"{pc:#010x} {insn.mnemonic} {ops}")
        cycles += cycle_estimate(cfg, insn.mnemonic, ops, st)
        name = insn.mnemonic
        if name in ("load", "store", "stamp") and ops["addr"] % bb:
            return stop("align")
        if name == "load":
            buf = bufs.get(buf_names.get(ops["buf"], ""))
            span = -(-ops["nbytes"] // bb) * bb
            if buf is None or ops["nbytes"] == 0 or span > buf.size:
                return stop("limit")
            if ops["addr"] + span > mem.size:
                return stop("bus")
            buf[:span] = mem[ops["addr"] : ops["addr"] + span]
        elif name == "store":
            nb = ops["nbytes"]
            if nb == 0 or nb > out.size:
                return stop("limit")
            if ops["addr"] + -(-nb // bb) * bb > mem.size:
                return stop("bus")
            mem[ops["addr"] : ops["addr"] + nb] = out[:nb]
        elif name == "stamp":
            if ops["addr"] + 8 > mem.size:
                return stop("bus")
            mem[ops["addr"] : ops["addr"] + 8] = np.frombuffer(cycles.to_bytes(8, "little"), np.uint8)
        elif name == "shape":
            st.metric, st.k, st.v, st.c, st.d, st.m = (ops[f] for f in ("metric", "k", "v", "c", "d", "m"))
        elif name == "quant":
            st.relu, st.shift, st.mult, st.bits = ops["relu"], ops["shift"], ops["mult"], ops["bits"]
        elif name == "run":
            if not layer_fits(cfg, st, ops["n"]):
                return stop("limit")
            _run_layer(cfg, st, ops["n"], bufs, out)
        elif name == "end":
            count += 1
            return stop("none")
        count += 1
        pc += 8
    raise SimError(f"no end after {max_insns} instructions")


def layer_fits(cfg: HwConfig, st: _State, n: int) -> bool:
    """The run-time limit check the hardware makes before a ``run`` (error ``limit`` when False)."""
    return (
        1 <= st.k <= cfg.KMax
        and 1 <= st.v <= cfg.VMax
        and 1 <= st.c <= cfg.CMax
        and 1 <= st.m <= cfg.MMax
        and (st.c - 1) * st.v < st.d <= st.c * st.v
        and st.c * st.k * st.v <= cfg.ProtoBytes
        and st.c * st.k * st.m * cfg.lut_bytes <= cfg.LutBytes
        and n >= 1
        and n * st.d <= cfg.ActBytes
        and n * st.m <= cfg.OutBytes
        and st.shift <= 47
        and 2 <= st.bits <= cfg.ActW
    )


def _run_layer(cfg: HwConfig, st: _State, n: int, bufs: dict[str, np.ndarray], out: np.ndarray) -> None:
    c, k, v, d, m = st.c, st.k, st.v, st.d, st.m
    x = np.zeros((n, c * v), np.int64)
    x[:, :d] = bufs["act"][: n * d].view(np.int8).reshape(n, d)
    protos = bufs["proto"][: c * k * v].view(np.int8).reshape(c, k, v)
    lb = cfg.lut_bytes
    raw = bufs["lut"][: c * k * m * lb].reshape(c * k * m, lb).astype(np.int64)
    lut = wrap(sum(raw[:, i] << (8 * i) for i in range(lb)), cfg.LutW).reshape(c, k, m)
    bias = bufs["bias"][: 4 * m].view("<i4").astype(np.int64)
    idx = encode(x.reshape(n, c, v), protos, st.metric)
    acc = lookup(idx, lut, bias, cfg.AccW)
    y = requantize(acc, st.mult, st.shift, bool(st.relu), st.bits)
    out[: n * m] = y.astype(np.int8).view(np.uint8).reshape(-1)
