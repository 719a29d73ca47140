"""Product-quantized linear layer (PQ / LUT-based inference, straight-through training).

y = W x + b is approximated as follows. x (length D) is zero-padded to C*v (C = ceil(D/v)) and split into C
sub-vectors of length v. Each sub-vector is encoded as the index of its nearest prototype among K per
subspace (squared L2 or L1, lowest index on ties); the output is
``y[m] = b[m] + sum_c LUT[c, idx[c], m]`` with ``LUT[c, k, m] = P[c, k, :] . Wpad[m, c*v:(c+1)*v]``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

METRICS = ("l2", "l1")


def pairwise_dist(xs: Tensor, protos: Tensor, metric: str) -> Tensor:
    """Distances between sub-vectors and prototypes.

    xs: [B, C, v], protos: [C, K, v] -> [B, C, K] (squared L2 or L1).
    """
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
        self.temperature: float = 1.0
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

    def padded_weight(self) -> Tensor:
        """W zero-padded to C*v columns: [M, C*v]."""
        pad = self.c * self.v - self.in_features
        return nn.functional.pad(self.weight, (0, pad)) if pad else self.weight

    def lut(self) -> Tensor:
        """LUT[c, k, m] = P[c, k, :] . Wpad[m, c*v:(c+1)*v] -> [C, K, M]."""
        w = self.padded_weight().reshape(self.out_features, self.c, self.v)
        return torch.einsum("ckv,mcv->ckm", self.prototypes, w)

    def distances(self, x: Tensor) -> Tensor:
        """[B, D] -> [B, C, K] distances of each sub-vector to each prototype."""
        return pairwise_dist(self._split(x), self.prototypes, self.metric)

    def encode(self, x: Tensor) -> Tensor:
        """Hard assignment: [B, D] -> idx [B, C] (int64), lowest index on ties."""
        with torch.no_grad():
            return self.distances(x).argmin(-1)

    def assignment(self, x: Tensor) -> Tensor:
        """[B, C, K] assignment weights: hard one-hot in value; straight-through soft gradient in training."""
        dist = self.distances(x)
        hard = nn.functional.one_hot(dist.argmin(-1), self.k).to(dist.dtype)
        if not self.training:
            return hard
        soft = torch.softmax(-dist / self.temperature, dim=-1)
        return hard - soft.detach() + soft

    def forward(self, x: Tensor) -> Tensor:
        y = torch.einsum("bck,ckm->bm", self.assignment(x), self.lut())
        if self.bias is not None:
            y = y + self.bias
        return y

    @torch.no_grad()
    def init_from_linear(self, linear: nn.Linear, activations: Tensor, iters: int = 25, seed: int = 0) -> None:
        """Copy ``linear``'s weight/bias and set prototypes by per-subspace k-means on ``activations``.

        activations: [N, D], the real inputs this layer sees.
        """
        if linear.weight.shape != self.weight.shape:
            raise ValueError(f"weight shape {list(linear.weight.shape)} != {list(self.weight.shape)}")
        self.weight.copy_(linear.weight)
        if self.bias is not None:
            if linear.bias is None:
                self.bias.zero_()
            else:
                self.bias.copy_(linear.bias)
        xs = self._split(activations.detach().to(torch.float32))
        for c in range(self.c):
            self.prototypes[c] = kmeans(xs[:, c, :], self.k, iters=iters, seed=seed + c, metric=self.metric)
