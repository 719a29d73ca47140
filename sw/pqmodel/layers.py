"""Product-quantized layers (PQ / LUT-based inference): :class:`PQLinear` and :class:`PQConv2d`.

y = W x + b is approximated as follows. x (length D) is zero-padded to C*v (C = ceil(D/v)) and split into C
sub-vectors of length v. Each sub-vector is encoded as the index of its nearest prototype among K per
subspace (squared L2 or L1, lowest index on ties); the output is
``y[m] = b[m] + sum_c LUT[c, idx[c], m]`` with ``LUT[c, k, m] = P[c, k, :] . Wpad[m, c*v:(c+1)*v]``.

A convolution is the same computation on its im2col columns (``torch.nn.functional.unfold`` order: input
channel major, then kernel row, then kernel column), so with ``v = kh * kw`` subspace c is exactly input
channel c's kh x kw patch.

Training-time assignment (``assign_mode``): ``"ste"`` (value: hard one-hot; gradient: that of
``softmax(-dist / temperature)``, as in LUT-NN) or ``"soft"`` (value and gradient: the softmax). Evaluation is
always hard. ``temperature`` may be a float or a tensor (a learned temperature, LUT-NN style).

Quantization-aware training replaces a layer's forward on its columns by a hook (:attr:`PQLinear.qat`, an object
with ``forward(layer, columns)``): ``pqtrain.qat`` installs there the integer parameters of the compiler's pipeline
(``pqcompile.graph``: input scale, table scale, mult/shift, widths and ranges, fused ReLU), whose forward computes
exactly that pipeline's arithmetic with straight-through estimators (see docs/training.md). The hook may use the
layer's :meth:`PQLinear._split`, :meth:`PQLinear._combine` and :meth:`PQLinear.padded_weight`.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
from torch import Tensor, nn

METRICS = ("l2", "l1")
ASSIGN_MODES = ("ste", "soft")


def first_argmin(dist: Tensor) -> Tensor:
    """argmin over the last dim with ties going to the lowest index (torch.argmin does not promise it)."""
    best = dist.min(-1, keepdim=True).values
    ks = torch.arange(dist.shape[-1], device=dist.device).expand_as(dist)
    return torch.where(dist == best, ks, dist.shape[-1]).min(-1).values


class ColumnsHook(Protocol):
    """A replacement for a PQ layer's forward on its columns (:attr:`PQLinear.qat`; ``pqtrain.qat.QatParams``)."""

    def forward(self, layer: PQLinear, x: Tensor) -> Tensor:
        """``layer``'s columns ``x`` [N, D] -> outputs [N, M]."""
        ...


def pairwise_dist(xs: Tensor, protos: Tensor, metric: str, fast: bool = False) -> Tensor:
    """Distances between sub-vectors and prototypes.

    xs: [B, C, v], protos: [C, K, v] -> [B, C, K] (squared L2 or L1). ``fast`` (L2 only): computed as
    ``|x|^2 - 2 x.p + |p|^2`` with a batched matrix product instead of an element-wise difference ([B, C, K, v]
    in memory): several times faster for the large batches of convolutions, but rounded differently (the
    hard assignment may differ on near-ties; on integer-valued float64 inputs both are exact).
    """
    if fast and metric == "l2":
        xp = torch.einsum("bcv,ckv->bck", xs, protos)
        return (xs * xs).sum(-1, keepdim=True) - 2 * xp + (protos * protos).sum(-1)[None]
    diff = xs[:, :, None, :] - protos[None, :, :, :]
    if metric == "l1":
        return diff.abs().sum(-1)
    if metric == "l2":
        return (diff * diff).sum(-1)
    raise ValueError(f"unknown metric {metric!r}; expected one of {METRICS}")


def kmeans(data: Tensor, k: int, iters: int = 25, seed: int = 0, metric: str = "l2") -> Tensor:
    """Seeded k-means (k-means++ init, Lloyd iterations) on ``data`` [N, v] -> centroids [k, v].

    With ``metric="l1"`` the update uses the coordinate-wise median (k-medians). Empty clusters are
    re-seeded with the point farthest from its centroid. If N < k, points are repeated.
    """
    data = data.detach().to(torch.float32)
    n = data.shape[0]
    if n == 0:
        raise ValueError("kmeans needs at least one data point")
    g = torch.Generator().manual_seed(seed)
    if n < k:
        data = data[torch.arange(k) % n]
        n = k
    # k-means++ initialisation
    cent = torch.empty(k, data.shape[1])
    cent[0] = data[torch.randint(n, (1,), generator=g)]
    d2 = ((data - cent[0]) ** 2).sum(-1)
    for j in range(1, k):
        total = d2.sum()
        if total <= 0:
            i = int(torch.randint(n, (1,), generator=g))
        else:
            i = int(torch.multinomial(d2 / total, 1, generator=g))
        cent[j] = data[i]
        d2 = torch.minimum(d2, ((data - cent[j]) ** 2).sum(-1))
    for _ in range(iters):
        dist = pairwise_dist(data[:, None, :], cent[None], metric)[:, 0, :]  # [N, k]
        assign = dist.argmin(-1)
        new = cent.clone()
        for j in range(k):
            members = data[assign == j]
            if members.shape[0] == 0:
                far = int(dist.gather(1, assign[:, None]).squeeze(1).argmax())
                new[j] = data[far]
            elif metric == "l1":
                new[j] = members.median(dim=0).values
            else:
                new[j] = members.mean(dim=0)
        if torch.equal(new, cent):
            break
        cent = new
    return cent


class PQLinear(nn.Module):
    """Linear layer evaluated by product quantization: encode to prototype indices, sum LUT rows.

    Parameters: ``prototypes`` [C, K, v], ``weight`` [M, D], ``bias`` [M] (if ``bias``).
    In eval mode the forward pass uses the hard (nearest-prototype) assignment. In training mode it
    uses a straight-through estimator: the value is the hard one-hot assignment, the gradient is that
    of the soft assignment ``softmax(-dist / temperature)``.
    """

    def __init__(
        self, in_features: int, out_features: int, k: int, v: int, metric: str = "l2", bias: bool = True
    ) -> None:
        super().__init__()
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; expected one of {METRICS}")
        if min(in_features, out_features, k, v) < 1:
            raise ValueError("in_features, out_features, k and v must be positive")
        self.in_features = in_features
        self.out_features = out_features
        self.k = k
        self.v = v
        self.c = math.ceil(in_features / v)
        self.metric = metric
        self.temperature: float | Tensor = 1.0
        self.assign_mode = "ste"
        self.qat: ColumnsHook | None = None  # the fake-quant forward of quantization-aware training (pqtrain.qat)
        self.fast_dist = False  # L2 distances by matrix product (pairwise_dist's fast; a training-time setting)
        self.prototypes = nn.Parameter(torch.randn(self.c, k, v) * 0.1)
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if bias:
            self.bias: nn.Parameter | None = nn.Parameter(torch.zeros(out_features))
        else:
            self.register_parameter("bias", None)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, k={self.k}, v={self.v}, "
            f"c={self.c}, metric={self.metric}, bias={self.bias is not None}"
        )

    def _split(self, x: Tensor) -> Tensor:
        """[B, D] -> zero-padded [B, C, v]."""
        if x.dim() != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"expected input [B, {self.in_features}], got {list(x.shape)}")
        pad = self.c * self.v - self.in_features
        if pad:
            x = nn.functional.pad(x, (0, pad))
        return x.reshape(x.shape[0], self.c, self.v)

    def weight_matrix(self) -> Tensor:
        """W as an [M, D] matrix (for a conv: the kernel flattened in unfold order)."""
        return self.weight

    def padded_weight(self) -> Tensor:
        """W zero-padded to C*v columns: [M, C*v]."""
        pad = self.c * self.v - self.in_features
        w = self.weight_matrix()
        return nn.functional.pad(w, (0, pad)) if pad else w

    def columns(self, x: Tensor) -> Tensor:
        """The layer's input as PQ columns [N, D] (identity for a linear layer)."""
        return x

    def lut(self) -> Tensor:
        """LUT[c, k, m] = P[c, k, :] . Wpad[m, c*v:(c+1)*v] -> [C, K, M]."""
        w = self.padded_weight().reshape(self.out_features, self.c, self.v)
        return torch.einsum("ckv,mcv->ckm", self.prototypes, w)

    def distances(self, x: Tensor) -> Tensor:
        """[B, D] columns -> [B, C, K] distances of each sub-vector to each prototype."""
        return pairwise_dist(self._split(x), self.prototypes, self.metric, fast=self.fast_dist)

    def encode(self, x: Tensor) -> Tensor:
        """Hard assignment of the layer's input (a conv: of its columns) -> idx [N, C] (int64), lowest on ties."""
        with torch.no_grad():
            return first_argmin(self.distances(self.columns(x)))

    def _combine(self, dist: Tensor, soft_dist: Tensor | None = None) -> Tensor:
        """Assignment weights [B, C, K] from distances: hard in eval; ``assign_mode`` in training."""
        hard = nn.functional.one_hot(first_argmin(dist), self.k).to(dist.dtype)
        if not self.training:
            return hard
        sd = dist if soft_dist is None else soft_dist
        soft = torch.softmax(-sd / self.temperature, dim=-1).to(dist.dtype)
        if self.assign_mode == "soft":
            return soft
        return hard - soft.detach() + soft

    def assignment(self, x: Tensor) -> Tensor:
        """[B, C, K] assignment weights of columns ``x`` (hard in eval; see ``assign_mode`` for training)."""
        return self._combine(self.distances(x))

    def forward_columns(self, x: Tensor) -> Tensor:
        """[N, D] columns -> [N, M] outputs (the :attr:`qat` hook's, fake-quantized, when one is set)."""
        if self.qat is not None:
            return self.qat.forward(self, x)
        y = torch.einsum("bck,ckm->bm", self.assignment(x), self.lut())
        if self.bias is not None:
            y = y + self.bias
        return y

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_columns(x)

    @torch.no_grad()
    def init_from_linear(self, linear: nn.Module, activations: Tensor, iters: int = 25, seed: int = 0,
                         max_columns: int = 20000) -> None:
        """Copy the float layer's weight/bias and set prototypes by per-subspace k-means on ``activations``.

        linear: an ``nn.Linear`` (for :class:`PQLinear`) or ``nn.Conv2d`` (for :class:`PQConv2d`) of the same
        shape. activations: the real inputs this layer sees ([N, D], or images [N, Cin, H, W] for a conv);
        at most ``max_columns`` columns (a seeded random subset) go into k-means.
        """
        weight = linear.weight
        bias = linear.bias
        if not isinstance(weight, Tensor) or weight.shape != self.weight.shape:
            shape = list(weight.shape) if isinstance(weight, Tensor) else None
            raise ValueError(f"weight shape {shape} != {list(self.weight.shape)}")
        self.weight.copy_(weight)
        if self.bias is not None:
            if isinstance(bias, Tensor):
                self.bias.copy_(bias)
            else:
                self.bias.zero_()
        self.init_prototypes(activations, iters=iters, seed=seed, max_columns=max_columns)

    @torch.no_grad()
    def init_prototypes(self, activations: Tensor, iters: int = 25, seed: int = 0, max_columns: int = 20000) -> None:
        """Per-subspace k-means on the columns of ``activations`` (the layer's real inputs)."""
        cols = self.columns(activations.detach().to(torch.float32))
        if cols.shape[0] > max_columns:
            g = torch.Generator().manual_seed(seed)
            cols = cols[torch.randperm(cols.shape[0], generator=g)[:max_columns]]
        xs = self._split(cols)
        for c in range(self.c):
            self.prototypes[c] = kmeans(xs[:, c, :], self.k, iters=iters, seed=seed + c, metric=self.metric)


def _pair(x: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(x, int):
        return (x, x)
    a, b = x
    return (int(a), int(b))


class PQConv2d(PQLinear):
    """2-D convolution evaluated by product quantization of its im2col columns.

    D = in_channels * kh * kw (unfold order), C = ceil(D / v), one column per output pixel.
    Parameters: ``prototypes`` [C, K, v], ``weight`` [Cout, Cin, kh, kw] (as ``nn.Conv2d``), ``bias`` [Cout].
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int], k: int, v: int,
        metric: str = "l2", stride: int = 1, padding: int = 0, bias: bool = True,
    ) -> None:
        kh, kw = _pair(kernel_size)
        if min(in_channels, kh, kw, stride) < 1 or padding < 0:
            raise ValueError("in_channels, kernel_size and stride must be positive, padding non-negative")
        super().__init__(in_channels * kh * kw, out_channels, k, v, metric=metric, bias=bias)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = (kh, kw)
        self.stride = stride
        self.padding = padding
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kh, kw))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, k={self.k}, v={self.v}, c={self.c}, metric={self.metric}, "
            f"bias={self.bias is not None}"
        )

    def weight_matrix(self) -> Tensor:
        return self.weight.reshape(self.out_features, self.in_features)

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        kh, kw = self.kernel_size
        return ((h + 2 * self.padding - kh) // self.stride + 1, (w + 2 * self.padding - kw) // self.stride + 1)

    def columns(self, x: Tensor) -> Tensor:
        """[B, Cin, H, W] -> im2col columns [B * Ho * Wo, D] (pixel-major within an image)."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected input [B, {self.in_channels}, H, W], got {list(x.shape)}")
        cols = nn.functional.unfold(x, self.kernel_size, padding=self.padding, stride=self.stride)  # [B, D, L]
        return cols.transpose(1, 2).reshape(-1, self.in_features)

    def forward(self, x: Tensor) -> Tensor:
        ho, wo = self.output_size(x.shape[2], x.shape[3])
        y = self.forward_columns(self.columns(x))  # [B*Ho*Wo, M]
        return y.reshape(x.shape[0], ho, wo, self.out_features).permute(0, 3, 1, 2)
