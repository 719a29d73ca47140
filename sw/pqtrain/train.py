"""Training: float MLP -> PQ conversion (k-means on real activations) -> straight-through fine-tuning.

Fine-tuning methods (``method``):

- ``"ste"``: prototypes, weights and biases trained with the straight-through soft assignment.
- ``"ste-prototypes"``: prototypes only (weights/biases frozen at the float values).
- ``"kmeans"``: no fine-tuning (the k-means baseline).

New methods plug into :data:`METHODS` / :func:`trainable_parameters`.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .layers import PQLinear
from .model import PQNet, build, validate_arch

METHODS = ("ste", "ste-prototypes", "kmeans")

Log = Callable[[str], None]


@dataclass
class TrainConfig:
    """Hyper-parameters of :func:`train_pipeline`."""

    seed: int = 0
    float_epochs: int = 100
    float_lr: float = 3e-3
    pq_epochs: int = 40
    pq_lr: float = 5e-4
    batch_size: int = 64
    weight_decay: float = 1e-4
    t_start: float = 3.0
    t_end: float = 0.3
    kmeans_iters: int = 25
    method: str = "ste"
    distill: float = 1.0  # weight of the KL term to the float teacher's soft targets during fine-tuning
    distill_t: float = 2.0  # softmax temperature of that term


def float_arch(arch: dict[str, Any]) -> dict[str, Any]:
    """The float teacher of a PQ architecture: every ``pq_linear`` becomes a plain ``linear``."""
    out = copy.deepcopy(arch)
    out["name"] = f"{arch['name']}-float"
    layers = []
    for layer in arch["layers"]:
        if layer["type"] == "pq_linear":
            layer = {"type": "linear", "in_features": layer["in_features"], "out_features": layer["out_features"],
                     "bias": layer.get("bias", True)}
        layers.append(layer)
    out["layers"] = layers
    return out


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """Top-1 accuracy (eval mode, i.e. hard PQ assignment); restores the training flag."""
    was = model.training
    model.eval()
    acc = (model(x).argmax(-1) == y).float().mean().item()
    model.train(was)
    return acc


def _batches(n: int, batch_size: int, gen: torch.Generator) -> list[Tensor]:
    perm = torch.randperm(n, generator=gen)
    return [perm[i : i + batch_size] for i in range(0, n, batch_size)]


def fit(
    model: nn.Module,
    params: list[nn.Parameter],
    data: tuple[Tensor, Tensor, Tensor, Tensor],
    epochs: int,
    lr: float,
    batch_size: int = 64,
    weight_decay: float = 0.0,
    seed: int = 0,
    temperature: Callable[[int], float] | None = None,
    log: Log | None = print,
    tag: str = "train",
    teacher: nn.Module | None = None,
    distill: float = 0.0,
    distill_t: float = 2.0,
) -> list[float]:
    """Adam + cross-entropy over mini-batches; returns the mean training loss per epoch.

    ``temperature(epoch)``, if given, sets the PQ soft-assignment temperature before each epoch.
    The learning rate follows a cosine schedule to 5% of ``lr``. With a ``teacher`` and ``distill`` > 0 the
    loss adds ``distill * T^2 * KL(teacher || model)`` on logits softened by ``distill_t``.
    """
    x_tr, y_tr, x_te, y_te = data
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda e: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * e / max(1, epochs)))
    )
    losses: list[float] = []
    for epoch in range(epochs):
        if temperature is not None and isinstance(model, PQNet):
            model.set_temperature(temperature(epoch))
        model.train()
        total = 0.0
        for idx in _batches(x_tr.shape[0], batch_size, gen):
            opt.zero_grad()
            logits = model(x_tr[idx])
            loss = nn.functional.cross_entropy(logits, y_tr[idx])
            if teacher is not None and distill > 0:
                with torch.no_grad():
                    target = torch.log_softmax(teacher(x_tr[idx]) / distill_t, dim=-1)
                kl = nn.functional.kl_div(torch.log_softmax(logits / distill_t, dim=-1), target,
                                          reduction="batchmean", log_target=True)
                loss = loss + distill * distill_t**2 * kl
            loss.backward()
            opt.step()
            total += loss.item() * idx.shape[0]
        sched.step()
        losses.append(total / x_tr.shape[0])
        if log is not None and (epoch % 10 == 9 or epoch == epochs - 1):
            t = f" T={temperature(epoch):.3f}" if temperature is not None else ""
            log(f"[{tag}] epoch {epoch + 1:3d}/{epochs} loss {losses[-1]:.4f} "
                f"train {accuracy(model, x_tr, y_tr):.4f} test {accuracy(model, x_te, y_te):.4f}{t}")
    model.eval()
    return losses


def convert_to_pq(
    float_model: PQNet, arch: dict[str, Any], x_calib: Tensor, kmeans_iters: int = 25, seed: int = 0
) -> PQNet:
    """Build ``arch`` and initialise it from ``float_model`` (same layer list, linear where arch has pq_linear).

    Each PQLinear copies the float weights and gets prototypes by k-means on the real inputs it sees:
    ``x_calib`` pushed through the already converted earlier layers.
    """
    pq = build(arch)
    if len(pq.layers) != len(float_model.layers):
        raise ValueError("float model and PQ arch have different layer counts")
    pq.eval()
    float_model.eval()
    h = x_calib
    with torch.no_grad():
        for i, (dst, src) in enumerate(zip(pq.layers, float_model.layers, strict=True)):
            if isinstance(dst, PQLinear):
                if not isinstance(src, nn.Linear):
                    raise ValueError(f"layer {i}: PQLinear needs a float nn.Linear source, got {type(src).__name__}")
                dst.init_from_linear(src, h, iters=kmeans_iters, seed=seed + 1000 * i)
            else:
                dst.load_state_dict(src.state_dict())
            h = dst(h)
    return pq


def trainable_parameters(model: PQNet, method: str) -> list[nn.Parameter]:
    """The parameters fine-tuned by ``method``."""
    if method == "ste":
        return list(model.parameters())
    if method == "ste-prototypes":
        return [m.prototypes for m in model.pq_layers()]
    if method == "kmeans":
        return []
    raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")


def train_pipeline(
    arch: dict[str, Any],
    data: tuple[Tensor, Tensor, Tensor, Tensor],
    cfg: TrainConfig | None = None,
    log: Log | None = print,
) -> tuple[PQNet, dict[str, Any]]:
    """Float training, PQ conversion and fine-tuning. Returns (PQ model in eval mode, meta dict)."""
    cfg = cfg or TrainConfig()
    validate_arch(arch)
    if cfg.method not in METHODS:
        raise ValueError(f"unknown method {cfg.method!r}; expected one of {METHODS}")
    x_tr, y_tr, x_te, y_te = data
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    fmodel = build(float_arch(arch))
    fit(fmodel, list(fmodel.parameters()), data, cfg.float_epochs, cfg.float_lr, cfg.batch_size,
        cfg.weight_decay, cfg.seed, log=log, tag="float")
    float_acc = accuracy(fmodel, x_te, y_te)

    pq = convert_to_pq(fmodel, arch, x_tr, cfg.kmeans_iters, cfg.seed)
    kmeans_acc = accuracy(pq, x_te, y_te)
    if log is not None:
        log(f"[convert] float test {float_acc:.4f} -> PQ k-means test {kmeans_acc:.4f}")

    params = trainable_parameters(pq, cfg.method)
    if params and cfg.pq_epochs > 0:
        n = cfg.pq_epochs

        def temp(e: int) -> float:  # geometric annealing t_start -> t_end
            return cfg.t_start * (cfg.t_end / cfg.t_start) ** (e / max(1, n - 1))

        fit(pq, params, data, n, cfg.pq_lr, cfg.batch_size, cfg.weight_decay, cfg.seed + 1,
            temperature=temp, log=log, tag=f"pq-{cfg.method}", teacher=fmodel, distill=cfg.distill,
            distill_t=cfg.distill_t)
    pq.eval()
    if log is not None:
        log(f"[done] {time.perf_counter() - t0:.1f} s")
    meta = {
        "dataset": "sklearn-digits",
        "seed": cfg.seed,
        "method": cfg.method,
        "float_test_acc": float_acc,
        "float_train_acc": accuracy(fmodel, x_tr, y_tr),
        "pq_kmeans_test_acc": kmeans_acc,
        "pq_test_acc": accuracy(pq, x_te, y_te),
        "pq_train_acc": accuracy(pq, x_tr, y_tr),
        "config": asdict(cfg),
        "torch_version": str(torch.__version__),
    }
    return pq, meta


def mlp_arch(
    hidden: list[int], k: int = 16, v: int = 4, metric: str = "l2", name: str = "digits_mlp",
    in_features: int = 64, num_classes: int = 10,
) -> dict[str, Any]:
    """An MLP of PQLinear layers with ReLU between them."""
    dims = [in_features, *hidden, num_classes]
    layers: list[dict[str, Any]] = []
    for i in range(len(dims) - 1):
        if i:
            layers.append({"type": "relu"})
        layers.append({"type": "pq_linear", "in_features": dims[i], "out_features": dims[i + 1],
                       "k": k, "v": v, "metric": metric})
    return {"name": name, "input_shape": [in_features], "num_classes": num_classes, "layers": layers}
