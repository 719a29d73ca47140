"""ReLU (``relu``): extracted as its own float op, then fused into the ``quant`` step of the op before it
(:func:`pqcompile.graph.fuse_relu`); it never reaches the integer graph."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

from ..fgraph import Extraction, FOp
from .base import OpHandler, register


@dataclass
class FRelu(FOp):
    name: str
    inp: str
    out: str
    layer_type = "relu"


@register
class ReluHandler(OpHandler):
    name = "relu"
    float_type = FRelu
    layer_types = ("relu",)

    def extract(self, ex: Extraction, lay: dict[str, Any], name: str, t: str) -> str:
        ex.fg.ops.append(FRelu(name, t, name))
        return ex.fg.new_tensor(name, ex.fg.tensors[t].shape, ex.fg.tensors[t].arch_shape)

    def forward(self, op: FRelu, vals: dict[str, Tensor]) -> Tensor:
        return vals[op.inp].clamp(min=0)
