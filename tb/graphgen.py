"""Random integer graphs (:mod:`pqcompile.ir`) for the RTL, regression and fuzz tests.

A :class:`RandomGraph` grows a graph op by op: PQ layers (linear, conv, flatten: any window, stride and
padding), residual adds and global pools, with random prototypes, tables and biases, and each op's
requantization calibrated on the values the integer graph computes up to it (most outputs inside the
clamp range, some saturating; optionally wild). Its input images and the graph are compiled by the back
end's own planner (``backend.emit_graph``: layout, tiling into columns, conv bands, image groups,
allocation), so the programs the RTL runs in random and directed tests are the ones the compiler writes.

The values are those of :func:`pqcompile.graph.accumulate` / :func:`pqcompile.graph.requantize` (the torch
integer reference); the simulator and the RTL are checked against them through the build's expectations.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from pqcompile import backend, graph, ir
from pqcompile.isa import clamp_range, field_limit, field_max
from pqcompile.ops import pq
from pqcompile.spec import HwConfig

SHIFT_MAX = field_limit("quant", "shift")  # the largest requantization shift the hardware accepts
MULT_MAX = field_max("quant", "mult")


def calibrate(rng: np.random.Generator, acc: np.ndarray | torch.Tensor, bits: int, wild: float = 0.0,
              jitter: bool = True) -> tuple[int, int]:
    """(mult, shift) taking max|acc| * mult / 2^shift to about 2^(bits-1) (one bit more or less with
    ``jitter``): most outputs inside the range, some saturating; with probability ``wild`` any mult and shift."""
    if rng.random() < wild:
        return int(rng.integers(0, MULT_MAX + 1)), int(rng.choice([0, 1, int(rng.integers(0, SHIFT_MAX + 1))]))
    mult = int(rng.integers(1 << 14, 1 << 15)) if rng.random() < 0.9 else int(rng.integers(1, 17))
    top = int(np.abs(np.asarray(acc)).max(initial=1)) * mult
    return mult, min(SHIFT_MAX, max(0, top.bit_length() - (bits - 1) + (int(rng.integers(-1, 2)) if jitter else 0)))


class RandomGraph:
    """An integer graph grown op by op over ``n`` random input images of ``shape`` (h, w, ch)."""

    def __init__(self, cfg: HwConfig, rng: np.random.Generator, shape: tuple[int, int, int], n: int, bits: int,
                 lut_bits: int | None = None, unsigned: bool = False, name: str = "random", wild: float = 0.0,
                 jitter: bool = True) -> None:
        self.cfg, self.rng, self.name, self.wild, self.jitter = cfg, rng, name, wild, jitter
        self.lut_bits = lut_bits or cfg.LutW
        lo, hi = clamp_range(False, bits, unsigned)
        self.x = rng.integers(lo, hi + 1, (n, *shape)).astype(np.int64)
        self.tensors = {"input": ir.TensorInfo("input", tuple(shape), 1.0, bits, unsigned)}  # type: ignore[arg-type]
        self.vals: dict[str, torch.Tensor] = {"input": torch.from_numpy(self.x)}
        self.ops: list[ir.Op] = []
        self.features = {"ties": 0, "sat_hi": 0, "sat_lo": 0, "round_half": 0}
        self.last = "input"

    # ----------------------------------------------------------------------------------------------------------
    def _new(self, op: ir.Op, shape: tuple[int, int, int], mult: int | None, shift: int | None) -> str:
        """Calibrate ``op`` (unless mult and shift are given), compute its output and add it to the graph."""
        acc = graph.accumulate(op, self.vals, self.cfg.AccW)
        p = op.post
        if mult is None or shift is None:
            cm, cs = calibrate(self.rng, acc, p.bits, self.wild, self.jitter)
            mult = (0 if isinstance(op, ir.AddOp) else cm) if mult is None else mult
            shift = cs if shift is None else shift
        op.post = ir.Post(mult, shift, p.relu, p.bits, p.unsigned)
        self._sample(op, acc)
        self.vals[op.out] = graph.requantize(op, acc)
        self.tensors[op.out] = ir.TensorInfo(op.out, shape, 1.0, p.bits, p.unsigned)
        self.ops.append(op)
        self.last = op.out
        return op.out

    def _sample(self, op: ir.Op, acc: torch.Tensor) -> None:
        """Saturation at both ends and exact rounding halves of ``op``'s requantization."""
        p = op.post
        prod = acc * (1 if isinstance(op, ir.AddOp) else p.mult)
        wide = (prod + (1 << (p.shift - 1))) >> p.shift if p.shift else prod  # rounded, not clamped
        lo, hi = clamp_range(p.relu, p.bits, p.unsigned)
        self.features["sat_hi"] += int((wide > hi).sum())
        self.features["sat_lo"] += int((wide < lo).sum())
        if p.shift:
            self.features["round_half"] += int(((prod & ((1 << p.shift) - 1)) == 1 << (p.shift - 1)).sum())

    def _name(self, kind: str) -> tuple[str, str]:
        i = len(self.ops)
        return f"{kind}{i}", f"t{i}"

    def pq(self, inp: str, m: int, k: int, v: int, metric: str = "l2", relu: bool = False, bits: int | None = None,
           unsigned: bool = False, kh: int = 1, kw: int = 1, stride: int = 1, pad: int = 0, ties: float = 0.5,
           wide_bias: float = 0.1, mult: int | None = None, shift: int | None = None) -> str:
        """A PQ layer on tensor ``inp`` (a linear layer on (1, 1, d), else a conv): prototypes in the input's
        range (with probability ``ties`` the last prototype of every subspace duplicates the first: exact ties
        in the encoder), table entries of ``lut_bits``, biases around the table sums (or any int32)."""
        rng, ti = self.rng, self.tensors[inp]
        h, w, ch = ti.shape
        d = ch * kh * kw
        c = -(-d // v)
        lo, hi = clamp_range(False, ti.bits, ti.unsigned)
        protos = rng.integers(lo, hi + 1, (c, k, v))
        if k > 1 and rng.random() < ties:
            protos[:, -1] = protos[:, 0]
        protos[-1, :, d - (c - 1) * v :] = 0  # padded dimensions carry no information
        lmax = 1 << (self.lut_bits - 1)
        lut = rng.integers(-lmax, lmax, (c, k, m))
        bias = rng.integers(-c * lmax, c * lmax + 1, m) if rng.random() >= wide_bias \
            else rng.integers(-(1 << 31), 1 << 31, m)
        name, out = self._name("conv" if (h, w) != (1, 1) else "linear")
        op = ir.PQOp(name, inp, out, protos.astype(np.int8), lut.astype(np.int32), bias.astype(np.int32), metric,
                     ir.Post(1, 0, relu, bits or ti.bits, unsigned), kh, kw, stride, pad)
        self._count_ties(op)
        oh, ow = pq.conv_out_shape(op, h, w)
        return self._new(op, (oh, ow, m), mult, shift)

    def _count_ties(self, op: ir.PQOp) -> None:
        cols = graph.op_columns(op, self.vals[op.inp])
        xp = torch.nn.functional.pad(cols, (0, op.c * op.v - cols.shape[1])).reshape(-1, op.c, 1, op.v)
        diff = xp - torch.from_numpy(op.protos.astype(np.int64))
        dist = diff.abs().sum(-1) if op.metric == "l1" else (diff * diff).sum(-1)
        self.features["ties"] += int(((dist == dist.min(-1, keepdim=True).values).sum(-1) > 1).sum())

    def add(self, a: str, b: str, relu: bool = False, bits: int | None = None, unsigned: bool = False) -> str:
        """A residual add of two tensors of one shape: multipliers of up to 15 bits, a calibrated shift."""
        rng = self.rng
        ma, mb = (int(rng.integers(1 << 12, 1 << 15)) for _ in range(2))
        if rng.random() < self.wild:
            ma, mb = (int(rng.integers(0, field_max("add", "ma") + 1)) for _ in range(2))
        name, out = self._name("add")
        op = ir.AddOp(name, a, b, out, ma, mb, ir.Post(0, 0, relu, bits or self.tensors[a].bits, unsigned))
        return self._new(op, self.tensors[a].shape, 0, None)

    def pool(self, inp: str, relu: bool = False, bits: int | None = None, unsigned: bool = False) -> str:
        """Global average pooling (channel sums, calibrated mult / 2^shift)."""
        name, out = self._name("pool")
        op = ir.PoolOp(name, inp, out, ir.Post(1, 0, relu, bits or self.tensors[inp].bits, unsigned))
        return self._new(op, (1, 1, self.tensors[inp].shape[2]), None, None)

    # ----------------------------------------------------------------------------------------------------------
    def graph(self, output: str | None = None) -> ir.Graph:
        return ir.Graph(self.name, dict(self.tensors), list(self.ops), "input", output or self.last)

    def output(self) -> np.ndarray:
        """The graph output the integer reference computed while the graph grew ([N, h, w, ch] int64)."""
        return self.vals[self.last].numpy()

    def emit(self, table_banks: list[int] | None = None, on_chip: bool = True, batch: int | None = None,
             batch_from: str | None = None, mem_bw: int = 0) -> backend.Program:
        """The program the back end plans for this graph and its input images (``table_banks``: the table
        bank of each PQ op, ``backend.schedule``; ``on_chip``: results kept on chip; ``batch``, ``batch_from``:
        images a pass and the op from which on they run at once; ``mem_bw``: the bandwidth the schedule
        assumes, ``backend.fetch_order``; ``backend.emit_graph``)."""
        return backend.emit_graph(self.cfg, self.graph(), self.x, self.name, table_banks, on_chip, batch, batch_from,
                                  mem_bw)

    def info(self) -> dict[str, Any]:
        """What the coverage model samples: the PQ ops' shapes, conv geometry, pool / add, data features."""
        pqs = [op for op in self.ops if isinstance(op, ir.PQOp)]
        out: dict[str, Any] = {
            "act_bits": self.tensors["input"].bits, "lut_bits": self.lut_bits, "n": int(self.x.shape[0]),
            "unsigned": any(op.post.unsigned for op in self.ops) or None,
            "layers": [{"d": self.tensors[op.inp].shape[2] * op.kh * op.kw, "m": op.m, "k": op.k, "v": op.v,
                        "c": op.c, "metric": op.metric, "relu": op.post.relu, "bits": op.post.bits,
                        "shift": op.post.shift,
                        "gather": self.cfg.gather_mode(backend.op_kind(self.graph(), op) != "linear", op.v, op.kh,
                                                       op.kw)} for op in pqs],
            "pool": any(isinstance(op, ir.PoolOp) for op in self.ops),
            "add": any(isinstance(op, ir.AddOp) for op in self.ops),
            **self.features,
        }
        conv = next((op for op in pqs if backend.op_kind(self.graph(), op) != "linear"), None)
        if conv is not None:
            h, w, ch = self.tensors[conv.inp].shape
            out["conv"] = {"stride": conv.stride, "kh": conv.kh, "kw": conv.kw, "pad": conv.pad, "ch": ch,
                           "flatten": (conv.kh, conv.kw, conv.pad) == (h, w, 0)}
        return out
