"""Quantization helpers shared by the front end (``pqcompile.graph``) and the legacy MLP path.

Scheme (docs/compiler.md, "Quantization"):
- activations are ``bits``-bit integers with a per-tensor scale ``s``: q = clamp(round(x / s)) to the signed
  range [-2^(bits-1), 2^(bits-1)-1], or to the unsigned range [0, 2^bits-1] for a non-negative tensor when
  ``bits`` < ActW (``quant.unsigned``; :mod:`pqcompile.graph` decides, the legacy path is always signed);
- a layer's prototypes use its input scale and range (so integer distances order exactly as the dequantized
  ones);
- the table is built from the *dequantized* prototypes and the float weight, and quantized to LutW bits
  with one per-layer scale ``s_lut``; the bias is quantized to int32 with the same scale
  (:func:`quantize_table`);
- the accumulator (scale ``s_lut``) is requantized to the output scale with mult / 2^shift, round half up.

``extract`` / ``quantize_layers`` / ``QuantPQNet`` are the MLP-only path of the first compiler (``QLayer``s for
``backend.emit``); ``pqcompile.graph.build_graph`` computes the same integers for an MLP at ActW bits (tested).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from . import sim
from .backend import CompileError, QLayer
from .isa import field_limit
from .spec import HwConfig

SUPPORTED = "pq_linear (optionally followed by relu), flatten at the input"


@dataclass
class FloatPQLayer:
    index: int  # index in the model's layer list
    prototypes: np.ndarray  # [c, k, v] float
    weight: np.ndarray  # [m, d] float
    bias: np.ndarray  # [m] float
    metric: str
    relu: bool

    @property
    def d(self) -> int:
        return int(self.weight.shape[1])

    @property
    def m(self) -> int:
        return int(self.weight.shape[0])


def extract(arch: dict[str, Any], state: dict[str, torch.Tensor]) -> list[FloatPQLayer]:
    """Walk the architecture; fuse each ReLU into its PQ layer; reject what the accelerator cannot run."""
    out: list[FloatPQLayer] = []
    layers = arch.get("layers", [])
    for i, lay in enumerate(layers):
        t = lay.get("type")
        if t == "pq_linear":
            p = f"layers.{i}."
            try:
                protos = state[p + "prototypes"].detach().double().numpy()
                weight = state[p + "weight"].detach().double().numpy()
            except KeyError as exc:
                raise CompileError(f"layer {i} (pq_linear): state dict has no {exc.args[0]!r}") from None
            b = state.get(p + "bias")
            bias = b.detach().double().numpy() if b is not None else np.zeros(weight.shape[0])
            metric = lay.get("metric", "l2")
            if metric not in ("l2", "l1"):
                raise CompileError(f"layer {i} (pq_linear): metric {metric!r} is not supported (l2, l1)")
            out.append(FloatPQLayer(i, protos, weight, bias, metric, relu=False))
        elif t == "relu":
            if not out or out[-1].relu or out[-1].index != i - 1:
                raise CompileError(f"layer {i} (relu): a ReLU must directly follow a pq_linear layer")
            out[-1].relu = True
        elif t == "flatten" and not out:
            continue
        else:
            raise CompileError(
                f"layer {i} ({t}): not supported by the accelerator; supported: {SUPPORTED}"
            )
    if not out:
        raise CompileError("the model has no pq_linear layer to run")
    return out


def act_range(bits: int, unsigned: bool = False) -> tuple[int, int]:
    """The integer range of a ``bits``-bit activation: [-2^(bits-1), 2^(bits-1)-1], or [0, 2^bits-1] unsigned."""
    return (0, (1 << bits) - 1) if unsigned else (-(1 << (bits - 1)), (1 << (bits - 1)) - 1)


def act_levels(bits: int, unsigned: bool = False) -> int:
    """The largest integer of the range: the number of levels a calibrated range r is divided into."""
    return act_range(bits, unsigned)[1]


def quantize_act(x: np.ndarray, scale: float, bits: int = 8, unsigned: bool = False) -> np.ndarray:
    """clamp(round(x / scale)) to :func:`act_range` (round half to even), as int64."""
    lo, hi = act_range(bits, unsigned)
    return np.clip(np.round(np.asarray(x, np.float64) / scale), lo, hi).astype(np.int64)


def mult_shift(ratio: float) -> tuple[int, int]:
    """mult / 2^shift ~= ratio with mult in [2^14, 2^15) where the shift range allows."""
    if ratio <= 0 or not math.isfinite(ratio):
        raise CompileError(f"requantization ratio {ratio} is not a positive number")
    shift = 14 - math.floor(math.log2(ratio))
    shift = min(max(shift, 0), field_limit("quant", "shift"))
    mult = round(ratio * (1 << shift))
    if mult >= 1 << 16:
        raise CompileError(f"requantization ratio {ratio} is too large for a 16-bit multiplier")
    return max(mult, 1), shift


def add_mult_shift(ratio_a: float, ratio_b: float) -> tuple[int, int, int]:
    """(ma, mb, shift) with ma / 2^shift ~= ratio_a and mb / 2^shift ~= ratio_b, one shift for both: the
    larger ratio's multiplier lies in [2^14, 2^15) where the shift range allows, so both fit 16 bits."""
    for r in (ratio_a, ratio_b):
        if r <= 0 or not math.isfinite(r):
            raise CompileError(f"requantization ratio {r} is not a positive number")
    _, shift = mult_shift(max(ratio_a, ratio_b))
    return round(ratio_a * (1 << shift)), round(ratio_b * (1 << shift)), shift


def pad_columns(x: np.ndarray, c: int, v: int) -> np.ndarray:
    out = np.zeros((x.shape[0], c * v), dtype=x.dtype)
    out[:, : x.shape[1]] = x
    return out


CALIB_METHODS = ("max", "percentile", "mse")


def calib_range(x: np.ndarray, levels: int, method: str = "max", percentile: float = 99.99) -> float:
    """The clipping range r (scale = r / levels) of values ``x`` for a symmetric quantizer.

    ``"max"``: max |x| (no clipping); ``"percentile"``: that percentile of |x|; ``"mse"``: the r among
    max|x| * {0.20, 0.22, ..., 1.00} minimizing the mean squared error of clamp(round(x / s), -levels-1,
    levels) * s. Deterministic (no sampling).
    """
    a = np.abs(np.asarray(x, np.float64)).ravel()
    top = float(a.max()) if a.size else 0.0
    if method == "max" or top <= 0:
        return top
    if method == "percentile":
        return float(np.percentile(a, percentile)) or top
    if method == "mse":
        xs = np.asarray(x, np.float64).ravel()
        best, best_err = top, math.inf
        for frac in np.linspace(0.2, 1.0, 41):
            s = top * float(frac) / levels
            err = float(np.mean((np.clip(np.round(xs / s), -levels - 1, levels) * s - xs) ** 2))
            if err < best_err:
                best, best_err = top * float(frac), err
        return best
    raise CompileError(f"unknown calibration method {method!r}; expected one of {CALIB_METHODS}")


def quantize_table(protos: np.ndarray, weight: np.ndarray, bias: np.ndarray, in_scale: float,
                   in_range: tuple[int, int], lut_bits: int,
                   lut_calib: str = "max") -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """A PQ layer's integer tables: (prototypes [c, k, v], table [c, k, m], bias [m], table scale), int64.

    The prototypes take the input's scale and integer range ``in_range``; the table is built from the
    dequantized prototypes and ``weight`` ([m, d], zero-padded to c*v) and quantized to ``lut_bits`` bits
    with one scale (``lut_calib``, :func:`calib_range`); the bias is rounded to int32 with the same scale,
    leaving room for the c table entries in a 32-bit accumulator.
    """
    c, k, v = protos.shape
    m, d = weight.shape
    qmax = (1 << (lut_bits - 1)) - 1
    pq = np.clip(np.round(np.asarray(protos, np.float64) / in_scale), *in_range).astype(np.int64)
    wpad = np.zeros((m, c * v))
    wpad[:, :d] = weight
    lut_f = np.einsum("ckv,mcv->ckm", pq * in_scale, wpad.reshape(m, c, v))
    s_lut = calib_range(lut_f, qmax, lut_calib) / qmax or 1.0
    lut_q = np.clip(np.round(lut_f / s_lut), -qmax - 1, qmax).astype(np.int64)
    lim = (1 << 31) - 1 - c * (qmax + 1)
    bias_q = np.clip(np.round(np.asarray(bias, np.float64) / s_lut), -lim, lim).astype(np.int64)
    return pq, lut_q, bias_q, s_lut


def quantize_layers(cfg: HwConfig, layers: list[FloatPQLayer], calib: np.ndarray,
                    input_scale: float | None = None, act_bits: int | None = None,
                    lut_bits: int | None = None, act_calib: str = "max",
                    lut_calib: str = "max") -> tuple[list[QLayer], float]:
    """Quantize float PQ layers for ``cfg`` using calibration inputs ``calib`` ([n, d0] float).

    ``act_bits`` (2..ActW, default ActW) is the width of activations and prototypes, ``lut_bits``
    (2..LutW, default LutW) the width of the table entries. ``act_calib`` / ``lut_calib`` choose how the
    activation scales / table scales are set from the calibration data (:func:`calib_range`; default
    ``"max"``: max-abs, no clipping). Returns the integer layers and the input scale.
    """
    act_bits = act_bits or cfg.ActW
    lut_bits = lut_bits or cfg.LutW
    if not 2 <= act_bits <= cfg.ActW or not 2 <= lut_bits <= cfg.LutW:
        raise CompileError(f"widths act_bits={act_bits}, lut_bits={lut_bits} exceed config '{cfg.name}' "
                           f"(ActW={cfg.ActW}, LutW={cfg.LutW}) or are below 2")
    for meth in (act_calib, lut_calib):
        if meth not in CALIB_METHODS:
            raise CompileError(f"unknown calibration method {meth!r}; expected one of {CALIB_METHODS}")
    amax = (1 << (act_bits - 1)) - 1
    s_in = input_scale or calib_range(calib, amax, act_calib) / amax
    if s_in <= 0:
        raise CompileError("calibration inputs are all zero: cannot choose an input scale")
    scale0 = s_in
    xq = quantize_act(calib, s_in, act_bits)
    out: list[QLayer] = []
    for fl in layers:
        c, k, v = fl.prototypes.shape
        pq, lut_q, bias_q, s_lut = quantize_table(fl.prototypes, fl.weight, fl.bias, s_in, act_range(act_bits),
                                                  lut_bits, lut_calib)
        metric = sim.load().enums["metric"][fl.metric]
        idx = sim.encode(pad_columns(xq, c, v).reshape(-1, c, v), pq, metric)
        acc = sim.lookup(idx, lut_q, bias_q, cfg.AccW)
        y = acc.astype(np.float64) * s_lut
        if fl.relu:
            y = np.maximum(y, 0)
        s_out = calib_range(y, amax, act_calib) / amax or s_lut
        mult, shift = mult_shift(s_lut / s_out)
        q = QLayer(pq, lut_q, bias_q, fl.d, fl.metric, mult, shift, fl.relu, act_bits, name=f"pq_linear#{fl.index}",
                   # out_scale: the scale the integer output really has (from the rounded mult/shift)
                   info={"model_layer": fl.index, "in_scale": s_in, "lut_scale": s_lut,
                         "out_scale": s_lut * (1 << shift) / mult})
        xq = sim.requantize(acc, mult, shift, fl.relu, act_bits)
        s_in = q.info["out_scale"]
        out.append(q)
    return out, scale0


class QuantPQNet(torch.nn.Module):
    """The quantized model in torch integer arithmetic: what the hardware computes, written again
    independently of the numpy simulator so that the two can check each other."""

    def __init__(self, layers: list[QLayer], acc_w: int = 32) -> None:
        super().__init__()
        self.acc_w = acc_w
        self.specs = [(q.c, q.k, q.v, q.d, q.metric, q.mult, q.shift, q.relu, q.bits) for q in layers]
        for i, q in enumerate(layers):
            self.register_buffer(f"protos{i}", torch.from_numpy(q.protos.astype(np.int64)))
            self.register_buffer(f"lut{i}", torch.from_numpy(q.lut.astype(np.int64)))
            self.register_buffer(f"bias{i}", torch.from_numpy(q.bias.astype(np.int64)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.int64)
        for i, (c, _k, v, d, metric, mult, shift, relu, bits) in enumerate(self.specs):
            lo_act, hi_act = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
            protos = getattr(self, f"protos{i}")
            lut = getattr(self, f"lut{i}")
            xs = torch.nn.functional.pad(x, (0, c * v - d)).view(-1, c, 1, v)
            diff = xs - protos.unsqueeze(0)
            dist = diff.abs().sum(-1) if metric == "l1" else (diff * diff).sum(-1)
            # torch.argmin does not promise the first of equal minima: take the lowest index explicitly
            best = dist.min(-1, keepdim=True).values
            ks = torch.arange(dist.shape[-1]).expand_as(dist)
            idx = torch.where(dist == best, ks, dist.shape[-1]).min(-1).values
            acc = lut[torch.arange(c).unsqueeze(0), idx].sum(1) + getattr(self, f"bias{i}")
            m = (1 << self.acc_w) - 1
            acc = acc & m
            acc = torch.where(acc >= 1 << (self.acc_w - 1), acc - (1 << self.acc_w), acc)
            y = acc * mult
            if shift:
                y = (y + (1 << (shift - 1))) >> shift
            x = y.clamp(0 if relu else lo_act, hi_act)
        return x
