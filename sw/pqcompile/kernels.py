"""The tensor kernels of the compiler's forward passes (torch): column gathering, nearest-prototype encoding,
table look-up, the accumulator wrap and the ``quant`` step. The float graph's forward pass and the integer
reference (:mod:`pqcompile.graph`) share them; the op handlers (:mod:`pqcompile.ops`) compose them. Written
from docs/isa.md independently of the golden simulator (``sim.py``), which they are tested against."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from .ir import Post
from .isa import clamp_range

CHUNK = 1 << 22  # elements per intermediate tensor in the PQ forward passes (bounds memory)


def columns(x: Tensor, kh: int, kw: int, stride: int, pad: int) -> tuple[Tensor, int, int]:
    """Channels-last [N, h, w, ch] -> columns [N * oh * ow, ch * kh * kw] (element (ci * kh + ky) * kw + kx,
    zero padding; PyTorch's unfold order), oh, ow."""
    xc = x.permute(0, 3, 1, 2)
    if pad:
        xc = nn.functional.pad(xc, (pad, pad, pad, pad))
    cols = xc.unfold(2, kh, stride).unfold(3, kw, stride)  # [N, ch, oh, ow, kh, kw]
    n, ch, oh, ow = cols.shape[:4]
    return cols.permute(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, ch * kh * kw), oh, ow


def encode(cols: Tensor, protos: Tensor, metric: str) -> Tensor:
    """Nearest prototype per subspace, lowest index on ties: cols [B, d] (zero-padded to c*v) -> [B, c]."""
    c, k, v = protos.shape
    if cols.shape[1] < c * v:
        cols = nn.functional.pad(cols, (0, c * v - cols.shape[1]))
    xs = cols.reshape(-1, c, 1, v)
    fast = metric == "l2" and not cols.is_floating_point()
    if fast:  # integers: |p|^2 - 2 x.p ranks like |x - p|^2 and is exact in float64 (|values| < 2^53)
        pf = protos.to(torch.float64)
        # times k plus the index: one unique minimum per subspace, the lowest index among equal distances
        p2 = ((pf * pf).sum(-1) * k + torch.arange(k, dtype=torch.float64)).unsqueeze(1)  # [c, 1, k]
        pt = pf.transpose(1, 2) * (2 * k)  # [c, v, k]
        xf = xs[:, :, 0, :].to(torch.float64).transpose(0, 1)  # [c, B, v]
    step = max(1, CHUNK // (c * k * (1 if fast else v)))
    out = []
    for i in range(0, xs.shape[0], step):
        if fast:
            out.append((p2 - torch.bmm(xf[:, i : i + step], pt)).argmin(-1).transpose(0, 1))
            continue
        diff = xs[i : i + step] - protos.unsqueeze(0)
        dist = diff.abs().sum(-1) if metric == "l1" else (diff * diff).sum(-1)
        best = dist.min(-1, keepdim=True).values
        ks = torch.arange(k).expand_as(dist)
        out.append(torch.where(dist == best, ks, k).min(-1).values)
    return torch.cat(out) if out else torch.zeros(0, c, dtype=torch.int64)


def lookup(idx: Tensor, lut: Tensor) -> Tensor:
    """sum_c lut[c, idx[:, c], :] -> [B, m] (lut int64 or float64)."""
    c = lut.shape[0]
    step = max(1, CHUNK // (c * lut.shape[2]))
    cs = torch.arange(c).unsqueeze(0)
    return torch.cat([lut[cs, idx[i : i + step]].sum(1) for i in range(0, idx.shape[0], step)])


def float_lut(protos: np.ndarray, weight: np.ndarray) -> Tensor:
    """The float table [c, k, m] of prototypes [c, k, v] and a weight [m, d] (zero-padded to c*v)."""
    c, _, v = protos.shape
    m, d = weight.shape
    wpad = np.zeros((m, c * v))
    wpad[:, :d] = weight
    return torch.einsum("ckv,mcv->ckm", torch.from_numpy(protos), torch.from_numpy(wpad).reshape(m, c, v))


def wrap(x: Tensor, bits: int) -> Tensor:
    """Two's-complement wrap of int64 values to ``bits`` bits (the accumulator)."""
    x = x & ((1 << bits) - 1)
    return torch.where(x >= 1 << (bits - 1), x - (1 << bits), x)


def post(acc: Tensor, mult: int, shift: int, p: Post) -> Tensor:
    """clamp((acc * mult + 2^(shift-1)) >> shift): round half up, arithmetic shift, the ``quant`` clamp."""
    y = acc * mult
    if shift:
        y = (y + (1 << (shift - 1))) >> shift
    return y.clamp(*clamp_range(p.relu, p.bits, p.unsigned))
