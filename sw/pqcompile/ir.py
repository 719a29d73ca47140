"""The integer graph: what the front end (``pqcompile.graph``: extraction, batch-norm folding, quantization
and scale propagation) hands to the back end (``pqcompile.backend``: layout, tiling, memory allocation,
scheduling, emission).

Every activation tensor is channels-last ``(h, w, ch)`` int8 (an MLP vector is ``(1, 1, n)``), with the real
scale of its integers and the clamp range its producer used. Operations map one to one onto the ISA
(docs/isa.md): :class:`PQOp` is ``run`` (linear, or conv mode with the ``fmap``/``conv`` geometry),
:class:`AddOp` is ``add``, :class:`PoolOp` is ``pool`` (global sum pooling; the 1/(h*w) of an average is in
mult / 2^shift). Ops are listed in execution order (a topological order); the graph input is the quantized
network input (or the output of the host prefix), the graph output is what the accelerator returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class TensorInfo:
    """An activation tensor: channels-last shape, scale of its integers, and its value range."""

    name: str
    shape: tuple[int, int, int]  # (h, w, ch)
    scale: float
    bits: int  # the clamp width of its producer (2..ActW)
    unsigned: bool = False  # values in [0, 2^bits-1] (else signed bits-bit)

    @property
    def size(self) -> int:
        h, w, ch = self.shape
        return h * w * ch


@dataclass
class Post:
    """The ``quant`` state of an op: y = clamp((acc * mult + 2^(shift-1)) >> shift) (``add`` ignores mult)."""

    mult: int
    shift: int
    relu: bool
    bits: int
    unsigned: bool = False


class TableShape:
    """c, k, v, m of a PQ layer from its prototypes [c, k, v] and table [c, k, m] (``PQOp``)."""

    protos: np.ndarray
    lut: np.ndarray

    @property
    def c(self) -> int:
        return int(self.protos.shape[0])

    @property
    def k(self) -> int:
        return int(self.protos.shape[1])

    @property
    def v(self) -> int:
        return int(self.protos.shape[2])

    @property
    def m(self) -> int:
        return int(self.lut.shape[2])


@dataclass
class PQOp(TableShape):
    """A PQ layer (``run``). A linear layer is a 1x1 conv on a (1, 1, d) tensor; a linear layer after
    flatten is a conv whose window is the whole fmap (kh = h, kw = w: element order = PyTorch's flatten)."""

    name: str  # the model layer it comes from, e.g. "layers.3" or "layers.4.body.0"
    inp: str
    out: str
    protos: np.ndarray  # [c, k, v] int8
    lut: np.ndarray  # [c, k, m] signed, fits LutW bits
    bias: np.ndarray  # [m] int32
    metric: str  # "l2" | "l1"
    post: Post
    kh: int = 1
    kw: int = 1
    stride: int = 1
    pad: int = 0
    info: dict[str, Any] = field(default_factory=dict)  # scales etc., copied into the manifest and report

    def inputs(self) -> list[str]:
        return [self.inp]


@dataclass
class AddOp:
    """Residual add (``add``): out = clamp((a * ma + b * mb + 2^(shift-1)) >> shift)."""

    name: str
    a: str
    b: str
    out: str
    ma: int
    mb: int
    post: Post  # mult unused
    info: dict[str, Any] = field(default_factory=dict)

    def inputs(self) -> list[str]:
        return [self.a, self.b]


@dataclass
class PoolOp:
    """Global average pooling (``pool``): out[ci] = clamp((sum_p x[p, ci] * mult + rnd) >> shift)."""

    name: str
    inp: str
    out: str
    post: Post
    info: dict[str, Any] = field(default_factory=dict)

    def inputs(self) -> list[str]:
        return [self.inp]


Op = PQOp | AddOp | PoolOp  # an op kind's handler (pqcompile.ops) is found by its class


@dataclass
class Graph:
    """A network's accelerator part. ``host_prefix`` / ``host_suffix`` name the model layers that run on the
    host (float, before quantizing the input / after dequantizing the output), only when asked for."""

    name: str
    tensors: dict[str, TensorInfo]
    ops: list[Op]
    input: str
    output: str
    host_prefix: list[str] = field(default_factory=list)
    host_suffix: list[str] = field(default_factory=list)

    def op_inputs(self, op: Op) -> list[str]:
        return op.inputs()
