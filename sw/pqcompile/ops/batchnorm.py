"""Batch norm (``batchnorm2d``, eval mode): extracted as y = x * mul + add per channel, then folded into the
PQ layer before it (``rewrite``, run by :func:`pqcompile.graph.fold_batchnorm`); it never reaches the integer
graph."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import CompileError
from ..fgraph import Extraction, FloatGraph, FOp
from .base import OpHandler, register
from .pq import FPQ

BN_EPS = 1e-5  # torch.nn.BatchNorm2d's default: the architecture format has no eps field


@dataclass
class FBatchNorm(FOp):
    """y = x * mul + add per channel (eval-mode batch norm)."""

    name: str
    inp: str
    out: str
    mul: np.ndarray
    add: np.ndarray
    layer_type = "batchnorm2d"


@register
class BatchNormHandler(OpHandler):
    name = "batchnorm2d"
    float_type = FBatchNorm
    layer_types = ("batchnorm2d",)

    def extract(self, ex: Extraction, lay: dict[str, Any], name: str, t: str) -> str:
        kind = "batchnorm2d"
        h, w, ch = ex.fg.tensors[t].shape
        g, b = ex.param(name, kind, "weight", (ch,)), ex.param(name, kind, "bias", (ch,))
        mean, var = ex.param(name, kind, "running_mean", (ch,)), ex.param(name, kind, "running_var", (ch,))
        assert g is not None and b is not None and mean is not None and var is not None
        if (var + BN_EPS <= 0).any():
            raise CompileError(f"{name} (batchnorm2d): '{name}.running_var' has values <= -eps ({BN_EPS}): not a "
                               "variance")
        mul = g / np.sqrt(var + BN_EPS)
        ex.fg.ops.append(FBatchNorm(name, t, name, mul, b - mean * mul))
        return ex.fg.new_tensor(name, (h, w, ch), ex.fg.tensors[t].arch_shape)

    def rewrite(self, fg: FloatGraph, bn: FBatchNorm) -> None:
        """Fold into the PQ layer before it: W'[m] = W[m] * mul[m], b'[m] = b[m] * mul[m] + add[m] (the encoder
        does not see W, so the fold is exact in float)."""
        prod = fg.producer(bn.inp)
        if not isinstance(prod, FPQ) or prod.bn:
            what = "the network input (or a host layer)" if prod is None else f"{prod.name} ({prod.kind()})"
            raise CompileError(f"{bn.name} (batchnorm2d): follows {what}, not a PQ layer, so it cannot be folded; "
                               f"{fg.host_hint(bn.name)}")
        if len(fg.consumers(bn.inp)) != 1:
            raise CompileError(f"{bn.name} (batchnorm2d): the output of {prod.name} is also used without the batch "
                               "norm, so it cannot be folded")
        prod.weight = prod.weight * bn.mul[:, None]
        prod.bias = prod.bias * bn.mul + bn.add
        prod.bn = bn.name
        fg.ops.remove(bn)
        fg.rename(bn.out, prod.out)

    def forward(self, op: FBatchNorm, vals: dict[str, Tensor]) -> Tensor:
        return vals[op.inp] * torch.from_numpy(op.mul) + torch.from_numpy(op.add)
