"""Quantization arithmetic of the front end (``pqcompile.graph``): a leaf module (it imports the ISA's
clamp rule and field limits, never the back end).

Scheme (docs/compiler.md, "Quantization"):
- activations are ``bits``-bit integers with a per-tensor scale ``s``: q = clamp(round(x / s)) to the signed
  range [-2^(bits-1), 2^(bits-1)-1], or to the unsigned range [0, 2^bits-1] for a non-negative tensor when
  ``bits`` < ActW (``quant.unsigned``; :mod:`pqcompile.graph` decides); the range is the ``quant`` step's
  (``isa.clamp_range`` without ReLU): one rule for the hardware, the simulator and the quantizer;
- a layer's prototypes use its input scale and range (so integer distances order exactly as the dequantized
  ones);
- the table is built from the *dequantized* prototypes and the float weight, and quantized to LutW bits
  with one per-layer scale ``s_lut``; the bias is quantized to int32 with the same scale
  (:func:`quantize_table`);
- the accumulator (scale ``s_lut``) is requantized to the output scale with mult / 2^shift, round half up.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import CompileError
from .isa import clamp_range, field_limit, field_max


def act_range(bits: int, unsigned: bool = False) -> tuple[int, int]:
    """The integer range of a ``bits``-bit activation: the ``quant`` clamp without ReLU (``isa.clamp_range``)."""
    return clamp_range(False, bits, unsigned)


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
    if mult > field_max("quant", "mult"):
        raise CompileError(f"requantization ratio {ratio} is too large for the quant.mult field "
                           f"(at most {field_max('quant', 'mult')})")
    return max(mult, 1), shift


def add_mult_shift(ratio_a: float, ratio_b: float) -> tuple[int, int, int]:
    """(ma, mb, shift) with ma / 2^shift ~= ratio_a and mb / 2^shift ~= ratio_b, one shift for both: the
    larger ratio's multiplier lies in [2^14, 2^15) where the shift range allows, so both fit 16 bits."""
    for r in (ratio_a, ratio_b):
        if r <= 0 or not math.isfinite(r):
            raise CompileError(f"requantization ratio {r} is not a positive number")
    _, shift = mult_shift(max(ratio_a, ratio_b))
    return round(ratio_a * (1 << shift)), round(ratio_b * (1 << shift)), shift


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
