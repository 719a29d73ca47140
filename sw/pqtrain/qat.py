"""Quantization-aware training: the fake-quant forward of the accelerator's integer pipeline (training only).

:func:`set_qat` installs a layer's integer-pipeline parameters (:class:`QatParams`, as the compiler's front end
``pqcompile.graph.build_graph`` chose them; :func:`pqtrain.integer.calibrate_qat` computes them) as the layer's
``qat`` hook: :meth:`pqmodel.layers.PQLinear.forward_columns` then returns :meth:`QatParams.forward`, which
computes exactly that pipeline's arithmetic with straight-through estimators (see docs/training.md).

Networks with more than chains of PQ layers (ResNet-20) have the rest of the pipeline modelled as well: a
batch norm folded into the PQ layer before it (:class:`QatParams` with ``bn``: the fold of the compiler's
``ops.batchnorm``, computed from the batch norm's live parameters and running statistics; the batch norm
module itself passes its input through), the residual add (:class:`AddQat`), global average pooling
(:class:`PoolQat`) and the quantization of the accelerator's input after host layers (:class:`InputQat`).
Every op returns its integer output times its scale, so the next one recovers the integers by rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pqcompile.isa import clamp_range
from pqmodel.layers import PQLinear, pairwise_dist

BN_EPS = 1e-5  # torch.nn.BatchNorm2d's default, which pqcompile's fold assumes (ops.batchnorm.BN_EPS)


def ste_round_clamp(x: Tensor, lo: float, hi: float) -> Tensor:
    """clamp(round(x), lo, hi) in value (round half to even, as numpy); identity gradient inside [lo, hi]."""
    y = torch.clamp(x, lo, hi)
    return y + (torch.round(y) - y).detach()


def ste_round(x: Tensor) -> Tensor:
    """round(x) in value, identity gradient (an op's input that already is integer x scale)."""
    return x + (torch.round(x) - x).detach()


def ste_requant(acc: Tensor, mult: int, shift: int, relu: bool, bits: int, unsigned: bool) -> Tensor:
    """The ``quant`` step on integer-valued float64 accumulators: clamp(floor((acc * mult + 2^(shift-1)) /
    2^shift)) (round half up, ``pqcompile.kernels.post``) in value; gradient of acc * mult / 2^shift inside the
    clamp range."""
    lin = acc * (mult / float(1 << shift))
    if shift:
        y = torch.floor((acc.detach() * mult + float(1 << (shift - 1))) / float(1 << shift))
    else:
        y = acc.detach() * mult
    y = lin + (y - lin).detach()
    lo, hi = clamp_range(relu, bits, unsigned)
    return torch.clamp(y, float(lo), float(hi))


def bn_fold(bn: nn.Module) -> tuple[Tensor, Tensor]:
    """(mul, add) in float64 of an eval-mode batch norm, y = x * mul + add, as pqcompile folds it."""
    assert isinstance(bn, nn.BatchNorm2d)
    assert bn.weight is not None and bn.bias is not None and bn.running_mean is not None
    assert bn.running_var is not None
    mul = bn.weight.to(torch.float64) / torch.sqrt(bn.running_var.to(torch.float64) + BN_EPS)
    return mul, bn.bias.to(torch.float64) - bn.running_mean.to(torch.float64) * mul


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
    bn: str = ""  # module path of the batch norm folded into this layer ("" for none)

    def forward(self, layer: PQLinear, x: Tensor, fold: nn.Module | None = None) -> Tensor:
        """``layer``'s columns ``x`` [N, D] -> [N, M] through the compiler's integer pipeline (docs/compiler.md,
        "Quantization") in float64 with straight-through estimators. The value returned is the integer output
        times ``out_scale``; the hard assignment and every rounding are the pipeline's (activations, prototypes,
        table, bias: round half to even; requantization: round half up), so after :func:`set_qat` with freshly
        calibrated parameters the output equals the compiler's integer reference (``pqcompile.graph.reference``)
        dequantized. The 32-bit accumulator wrap is not modelled. ``fold``: the batch norm folded into the layer
        (weight rows and bias scaled, its shift added to the bias, in float64 as the compiler does)."""
        qmax = (1 << (self.lut_bits - 1)) - 1
        xs = layer._split(x.to(torch.float64))
        lo_in, hi_in = clamp_range(False, self.act_bits, self.in_unsigned)
        xq = ste_round_clamp(xs / self.in_scale, lo_in, hi_in)  # integer-valued
        pq = ste_round_clamp(layer.prototypes.to(torch.float64) / self.in_scale, lo_in, hi_in)
        dist = pairwise_dist(xq.detach(), pq.detach(), layer.metric)  # exact integers
        soft_dist = pairwise_dist(xq * self.in_scale, pq * self.in_scale, layer.metric,  # real units, carries gradient
                                  fast=layer.fast_dist)
        a = layer._combine(dist, soft_dist)
        w = layer.padded_weight().to(torch.float64)
        bias = None if layer.bias is None else layer.bias.to(torch.float64)
        if fold is not None:
            mul, add = bn_fold(fold)
            w = w * mul[:, None]
            bias = add if bias is None else bias * mul + add
        w = w.reshape(layer.out_features, layer.c, layer.v)
        lut = ste_round_clamp(torch.einsum("ckv,mcv->ckm", pq * self.in_scale, w) / self.lut_scale, -qmax - 1, qmax)
        acc = torch.einsum("bck,ckm->bm", a, lut)
        if bias is not None:
            lim = (1 << 31) - 1 - layer.c * (qmax + 1)
            acc = acc + ste_round_clamp(bias / self.lut_scale, -lim, lim)
        lin = acc * (self.mult / float(1 << self.shift))
        if self.shift:
            y = torch.floor((acc.detach() * self.mult + float(1 << (self.shift - 1))) / float(1 << self.shift))
        else:
            y = acc.detach() * self.mult
        y = lin + (y - lin).detach()
        lo, hi = clamp_range(self.relu, self.out_bits or self.act_bits, self.out_unsigned)
        y = torch.clamp(y, float(lo), float(hi))
        return (y * self.out_scale).to(x.dtype)


class Folded:
    """A PQ layer's :class:`QatParams` with the batch norm folded into it (the layer's ``qat`` hook)."""

    def __init__(self, params: QatParams, bn: nn.Module) -> None:
        self.params, self.bn = params, bn

    def forward(self, layer: PQLinear, x: Tensor) -> Tensor:
        return self.params.forward(layer, x, fold=self.bn)


@dataclass
class AddQat:
    """A residual add (``pqcompile.ops.add``): clamp((a * ma + b * mb + 2^(shift-1)) >> shift), ReLU fused."""

    a_scale: float
    b_scale: float
    ma: int
    mb: int
    shift: int
    out_scale: float
    relu: bool
    bits: int
    unsigned: bool

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        acc = ste_round(a.to(torch.float64) / self.a_scale) * self.ma + ste_round(b.to(torch.float64) / self.b_scale) \
            * self.mb
        y = ste_requant(acc, 1, self.shift, self.relu, self.bits, self.unsigned)
        return (y * self.out_scale).to(a.dtype)


@dataclass
class PoolQat:
    """Global average pooling (``pqcompile.ops.pool``): clamp((sum * mult + 2^(shift-1)) >> shift) per channel."""

    in_scale: float
    mult: int
    shift: int
    out_scale: float
    relu: bool
    bits: int
    unsigned: bool

    def forward(self, x: Tensor) -> Tensor:
        """[B, C, H, W] (integer x ``in_scale``) -> [B, C] (integer x ``out_scale``)."""
        acc = ste_round(x.to(torch.float64) / self.in_scale).sum(dim=(2, 3))
        y = ste_requant(acc, self.mult, self.shift, self.relu, self.bits, self.unsigned)
        return (y * self.out_scale).to(x.dtype)


@dataclass
class InputQat:
    """The quantization of the accelerator's input (after the host layers before it): clamp(round(x / scale))."""

    scale: float
    bits: int
    unsigned: bool

    def forward(self, x: Tensor) -> Tensor:
        lo, hi = clamp_range(False, self.bits, self.unsigned)
        return (ste_round_clamp(x.to(torch.float64) / self.scale, lo, hi) * self.scale).to(x.dtype)


def set_qat(layer: PQLinear, params: QatParams | Folded | None) -> None:
    """Install (or, with None, remove) the integer-pipeline parameters used by ``layer``'s fake-quant forward."""
    layer.qat = params
