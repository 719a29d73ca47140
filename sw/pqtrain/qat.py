"""Quantization-aware training: the fake-quant forward of a PQ layer (training only).

:func:`set_qat` installs a layer's integer-pipeline parameters (:class:`QatParams`, as the compiler's front end
``pqcompile.graph.build_graph`` chose them; :func:`pqtrain.integer.calibrate_qat` computes them) as the layer's
``qat`` hook: :meth:`pqmodel.layers.PQLinear.forward_columns` then returns :meth:`QatParams.forward`, which
computes exactly that pipeline's arithmetic with straight-through estimators (see docs/training.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from pqcompile.isa import clamp_range
from pqmodel.layers import PQLinear, pairwise_dist


def ste_round_clamp(x: Tensor, lo: float, hi: float) -> Tensor:
    """clamp(round(x), lo, hi) in value (round half to even, as numpy); identity gradient inside [lo, hi]."""
    y = torch.clamp(x, lo, hi)
    return y + (torch.round(y) - y).detach()


@dataclass
class QatParams:
    """One layer's integer-pipeline parameters, as the compiler (``pqcompile.graph.build_graph``) chose them."""

    in_scale: float  # scale of the layer's integer input (and of its prototypes)
    lut_scale: float  # scale of the table entries and the bias
    mult: int
    shift: int
    out_scale: float  # the scale the integer output really has: lut_scale * 2^shift / mult
    act_bits: int  # width of activations and prototypes
    lut_bits: int  # width of the table entries
    relu: bool  # the ReLU that follows is fused into the requantization clamp
    in_unsigned: bool = False  # the input (and the prototypes) are unsigned act_bits-bit: [0, 2^act_bits-1]
    out_unsigned: bool = False  # the output clamp is unsigned [0, 2^out_bits-1] (quant.unsigned)
    out_bits: int = 0  # width of the output clamp (0: act_bits; the network's last layer returns ActW-bit logits)

    def forward(self, layer: PQLinear, x: Tensor) -> Tensor:
        """``layer``'s columns ``x`` [N, D] -> [N, M] through the compiler's integer pipeline (docs/compiler.md,
        "Quantization") in float64 with straight-through estimators. The value returned is the integer output
        times ``out_scale``; the hard assignment and every rounding are the pipeline's (activations, prototypes,
        table, bias: round half to even; requantization: round half up), so after :func:`set_qat` with freshly
        calibrated parameters the output equals the compiler's integer reference (``pqcompile.graph.reference``)
        dequantized. The 32-bit accumulator wrap is not modelled."""
        qmax = (1 << (self.lut_bits - 1)) - 1
        xs = layer._split(x.to(torch.float64))
        lo_in, hi_in = clamp_range(False, self.act_bits, self.in_unsigned)
        xq = ste_round_clamp(xs / self.in_scale, lo_in, hi_in)  # integer-valued
        pq = ste_round_clamp(layer.prototypes.to(torch.float64) / self.in_scale, lo_in, hi_in)
        dist = pairwise_dist(xq.detach(), pq.detach(), layer.metric)  # exact integers
        soft_dist = pairwise_dist(xq * self.in_scale, pq * self.in_scale, layer.metric,  # real units, carries gradient
                                  fast=layer.fast_dist)
        a = layer._combine(dist, soft_dist)
        w = layer.padded_weight().to(torch.float64).reshape(layer.out_features, layer.c, layer.v)
        lut = ste_round_clamp(torch.einsum("ckv,mcv->ckm", pq * self.in_scale, w) / self.lut_scale, -qmax - 1, qmax)
        acc = torch.einsum("bck,ckm->bm", a, lut)
        if layer.bias is not None:
            lim = (1 << 31) - 1 - layer.c * (qmax + 1)
            acc = acc + ste_round_clamp(layer.bias.to(torch.float64) / self.lut_scale, -lim, lim)
        lin = acc * (self.mult / float(1 << self.shift))
        if self.shift:
            y = torch.floor((acc.detach() * self.mult + float(1 << (self.shift - 1))) / float(1 << self.shift))
        else:
            y = acc.detach() * self.mult
        y = lin + (y - lin).detach()
        lo, hi = clamp_range(self.relu, self.out_bits or self.act_bits, self.out_unsigned)
        y = torch.clamp(y, float(lo), float(hi))
        return (y * self.out_scale).to(x.dtype)


def set_qat(layer: PQLinear, params: QatParams | None) -> None:
    """Install (or, with None, remove) the integer-pipeline parameters used by ``layer``'s fake-quant forward."""
    layer.qat = params
