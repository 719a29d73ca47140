"""ReLU (``relu``): extracted as its own float op, then fused into the ``quant`` step of the op before it
(``rewrite``, run by :func:`pqcompile.graph.fuse_relu`); it never reaches the integer graph."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

from ..errors import CompileError
from ..fgraph import Extraction, FloatGraph, FOp
from .base import OpHandler, of, register


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

    def rewrite(self, fg: FloatGraph, r: FRelu) -> None:
        """Fuse into the ``quant`` step of the op that produces its input."""
        prod = fg.producer(r.inp)
        if prod is None or of(prod).ir_type is None:  # the input, or an op without post-processing
            what = "the network input (or a host layer)" if prod is None else f"{prod.name} ({prod.kind()})"
            raise CompileError(f"{r.name} (relu): its input comes from {what}, which has no post-processing to fuse "
                               f"it into; {fg.host_hint(r.name)}")
        if not prod.relu and len(fg.consumers(r.inp)) != 1:
            raise CompileError(f"{r.name} (relu): the output of {prod.name} is also used without the ReLU, so the "
                               "ReLU cannot be fused into it")
        prod.relu = True
        fg.ops.remove(r)
        fg.rename(r.out, prod.out)

    def forward(self, op: FRelu, vals: dict[str, Tensor]) -> Tensor:
        return vals[op.inp].clamp(min=0)
