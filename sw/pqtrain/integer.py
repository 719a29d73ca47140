"""The integer pipeline of the accelerator for a trained PQ network, computed by ``pqcompile.quantize``.

Every number comes from ``pqcompile.quantize.quantize_layers`` (scales, integer prototypes, table, bias,
mult/shift) and ``pqcompile.quantize.QuantPQNet`` (the integer forward pass); this module only moves data
between layers: it quantizes the network input with ``quantize_act``, forms a conv layer's im2col columns
from the previous layer's *integer* output (zero padding is the integer 0), flattens, and fuses a ReLU into
the PQ layer it follows (as ``quantize.extract`` does). Each PQ layer is quantized on its own with
``input_scale`` = the previous layer's real output scale, which is what the chained call inside ``pqcompile``
does for an MLP (checked on the shipped MLP by
``tests/test_pqtrain_lib.py::test_shipped_mlp_export_matches_pqcompile_report``).

Supported layers: ``pq_linear``, ``pq_conv2d`` (each optionally followed by ``relu``) and ``flatten``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from pqcompile import quantize
from pqcompile.backend import QLayer
from pqcompile.spec import load as load_spec

from .layers import PQConv2d, PQLinear, QatParams
from .model import PQNet

DEFAULT_CONFIG = "default"  # ActW 8, LutW 16, AccW 32: every act/lut width from 2 to 8 is allowed


@dataclass
class _Step:
    kind: str  # "pq" | "flatten"
    layer_index: int = -1
    qlayer: QLayer | None = None
    conv: PQConv2d | None = None


def _conv_columns(conv: PQConv2d, xq: Tensor) -> tuple[Tensor, tuple[int, int, int]]:
    """Integer images [N, Cin, H, W] -> integer columns [N*Ho*Wo, D] and (N, Ho, Wo)."""
    ho, wo = conv.output_size(xq.shape[2], xq.shape[3])
    cols = conv.columns(xq.to(torch.float64))  # unfold needs floating point; integers stay exact
    return cols.round().to(torch.int64), (xq.shape[0], ho, wo)


class IntegerNet:
    """The exported integer model: ``forward(x_float)`` -> int64 logits (the accelerator's outputs)."""

    def __init__(self, steps: list[_Step], input_scale: float, act_bits: int, lut_bits: int, acc_w: int) -> None:
        self.steps = steps
        self.input_scale = input_scale
        self.act_bits = act_bits
        self.lut_bits = lut_bits
        self.acc_w = acc_w

    @property
    def qlayers(self) -> list[QLayer]:
        return [s.qlayer for s in self.steps if s.qlayer is not None]

    @property
    def output_scale(self) -> float:
        return float(self.qlayers[-1].info["out_scale"])

    def quantize_input(self, x: Tensor) -> Tensor:
        return torch.from_numpy(quantize.quantize_act(x.detach().cpu().numpy(), self.input_scale, self.act_bits))

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        """Float inputs [N, ...] -> integer outputs [N, M] (int64)."""
        return run_steps(self.steps, self.quantize_input(x), self.acc_w)

    __call__ = forward

    def dequantized(self, x: Tensor) -> Tensor:
        """The integer outputs times their scale (float64)."""
        return self.forward(x).to(torch.float64) * self.output_scale

    def accuracy(self, x: Tensor, y: Tensor) -> float:
        """Top-1 accuracy; ties go to the lowest class, as numpy's argmax (``pqcompile``'s report) does."""
        pred = np.argmax(self.forward(x).numpy(), axis=1)
        return float((pred == y.numpy()).mean())


def run_steps(steps: list[_Step], xq: Tensor, acc_w: int) -> Tensor:
    for step in steps:
        if step.kind == "flatten":
            xq = xq.reshape(xq.shape[0], -1)
            continue
        assert step.qlayer is not None
        net = quantize.QuantPQNet([step.qlayer], acc_w)
        if step.conv is not None:
            cols, (n, ho, wo) = _conv_columns(step.conv, xq)
            xq = net(cols).reshape(n, ho, wo, -1).permute(0, 3, 1, 2).contiguous()
        else:
            xq = net(xq)
    return xq


@torch.no_grad()
def export_integer(model: PQNet, arch: dict[str, Any], calib: Tensor, act_bits: int = 8,
                   lut_bits: int | None = None, config: str = DEFAULT_CONFIG, act_calib: str = "max",
                   lut_calib: str = "max") -> IntegerNet:
    """Quantize ``model`` for the integer pipeline with calibration inputs ``calib`` (float, [n, *input_shape]).

    ``act_bits`` is the width of activations and prototypes, ``lut_bits`` (default ``act_bits``) that of the
    table entries; ``act_calib`` / ``lut_calib`` the calibration of the activation / table scales
    (``pqcompile.quantize.calib_range``: ``"max"``, ``"percentile"`` or ``"mse"``). Raises ``ValueError`` for a
    layer the pipeline cannot run.
    """
    cfg = load_spec().config(config)
    lut_bits = lut_bits or act_bits
    layers = arch["layers"]
    steps: list[_Step] = []
    h: Tensor = calib.detach().to(torch.float64)
    scale: float | None = None  # None: h is still the float input
    s0 = 0.0
    for i, lay in enumerate(layers):
        t = lay["type"]
        if t == "flatten":
            steps.append(_Step("flatten"))
            h = h.reshape(h.shape[0], -1)
            continue
        if t == "relu":
            if i == 0 or layers[i - 1]["type"] not in ("pq_linear", "pq_conv2d"):
                raise ValueError(f"layer {i} (relu): the integer pipeline needs a ReLU to follow a PQ layer")
            continue
        if t not in ("pq_linear", "pq_conv2d"):
            raise ValueError(f"layer {i} ({t}): not supported by the integer pipeline "
                             "(pq_linear, pq_conv2d, relu after them, flatten)")
        mod = model.layers[i]
        assert isinstance(mod, PQLinear)
        relu = i + 1 < len(layers) and layers[i + 1]["type"] == "relu"
        conv = mod if isinstance(mod, PQConv2d) else None
        if conv is not None:
            if scale is None:
                cols = conv.columns(h)
                shape = (h.shape[0], *conv.output_size(h.shape[2], h.shape[3]))
            else:
                icols, shape = _conv_columns(conv, h.to(torch.int64))
                cols = icols.to(torch.float64)
        else:
            cols = h
        if scale is not None:
            cols = cols * scale  # the real values of the integer inputs: quantize_act recovers them exactly
        b = mod.bias.detach().double().numpy() if mod.bias is not None else np.zeros(mod.out_features)
        fl = quantize.FloatPQLayer(i, mod.prototypes.detach().double().numpy(),
                                   mod.weight_matrix().detach().double().numpy(), b, mod.metric, relu)
        (q,), s_in = quantize.quantize_layers(cfg, [fl], cols.numpy(), input_scale=scale, act_bits=act_bits,
                                              lut_bits=lut_bits, act_calib=act_calib, lut_calib=lut_calib)
        if scale is None:
            s0 = s_in
        xq = torch.from_numpy(quantize.quantize_act(cols.numpy(), s_in, act_bits))
        y = quantize.QuantPQNet([q], cfg.AccW)(xq)
        if conv is not None:
            n, ho, wo = shape
            y = y.reshape(n, ho, wo, -1).permute(0, 3, 1, 2).contiguous()
        h = y
        scale = float(q.info["out_scale"])
        steps.append(_Step("pq", i, q, conv))
    if scale is None:
        raise ValueError("the model has no PQ layer")
    return IntegerNet(steps, s0, act_bits, lut_bits, cfg.AccW)


def qat_params(inet: IntegerNet) -> dict[int, QatParams]:
    """The fake-quant parameters of each PQ layer (by layer index) of an exported integer model."""
    out = {}
    for step in inet.steps:
        q = step.qlayer
        if q is None:
            continue
        out[step.layer_index] = QatParams(
            in_scale=float(q.info["in_scale"]), lut_scale=float(q.info["lut_scale"]), mult=int(q.mult),
            shift=int(q.shift), out_scale=float(q.info["out_scale"]), act_bits=inet.act_bits,
            lut_bits=inet.lut_bits, relu=bool(q.relu))
    return out


def calibrate_qat(model: PQNet, arch: dict[str, Any], calib: Tensor, act_bits: int,
                  lut_bits: int | None = None, act_calib: str = "max", lut_calib: str = "max") -> IntegerNet:
    """Export the current weights with ``pqcompile.quantize`` and install the resulting integer parameters
    in every PQ layer, switching on its fake-quant forward. Returns the exported model."""
    was = model.training
    model.eval()
    for m in model.pq_layers():
        m.set_qat(None)
    inet = export_integer(model, arch, calib, act_bits, lut_bits, act_calib=act_calib, lut_calib=lut_calib)
    for idx, p in qat_params(inet).items():
        layer = model.layers[idx]
        assert isinstance(layer, PQLinear)
        layer.set_qat(p)
    model.train(was)
    return inet


def clear_qat(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, PQLinear):
            m.set_qat(None)
