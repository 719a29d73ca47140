"""Training: float model -> PQ conversion (k-means on real activations) -> fine-tuning -> optional QAT.

Fine-tuning methods (``method``, :data:`METHODS`):

- ``"kmeans"``: no fine-tuning (the baseline: k-means prototypes, table from the float weights, hard argmin).
- ``"ste"``: prototypes, weights and biases, hard forward / soft straight-through gradient, annealed
  temperature (LUT-NN's estimator).
- ``"ste-prototypes"``: prototypes only (weights/biases frozen at the float values).
- ``"ste-weights"``: weights/biases (i.e. the table) only, prototypes frozen at k-means.
- ``"soft"``: everything, with the pure soft assignment (softmax over negative distances) in training,
  temperature annealed from ``t_start`` to ``soft_t_end``; evaluation is hard.
- ``"lutnn"``: everything, straight-through with a *learned* temperature per layer (LUT-NN).

Quantization-aware training (``qat_bits`` > 0) follows the fine-tuning: every PQ layer computes the
integer pipeline of the compiler (``pqcompile.graph``: activations, prototypes and table at ``qat_bits``)
with straight-through estimators, its parameters re-calibrated with ``pqcompile.graph.build_graph`` at the
start of every epoch (:func:`pqtrain.integer.calibrate_qat`).
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn

from pqcompile.progress import Progress
from pqmodel.model import PQNet, build, iter_layers, validate_arch

from .batches import make_batches
from .integer import IntegerNet, clear_qat, compute_qat, export_integer, install_qat
from .run import (
    Run,
    all_sum,
    average_gradients,
    broadcast_module,
    broadcast_object,
    iter_chunks,
    rng_state,
    set_rng_state,
    state_digest,
    to_cpu,
)

METHODS = ("ste", "ste-prototypes", "ste-weights", "soft", "lutnn", "kmeans")
OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("cosine", "step")
STAGES = ("float", "pq", "qat")  # the trained stages of train_pipeline, in order (checkpoints name them)
EVAL_BATCH = 2048  # evaluation forward passes take at most this many inputs at a time (fewer for big inputs)
EVAL_ELEMENTS = 1 << 21  # ... and about this many input elements (CIFAR-10: 682 images)

Log = Callable[[str], None]
Data = tuple[Tensor, Tensor, Tensor, Tensor]

# (act_calib, lut_calib) pairs tried by calib="auto" (pqcompile.quantize.calib_range); the first is pqcompile's
# default, and wins ties
CALIB_CHOICES: tuple[tuple[str, str], ...] = (("max", "max"), ("max", "mse"), ("mse", "max"), ("mse", "mse"))


@dataclass
class TrainConfig:
    """Hyper-parameters of :func:`train_pipeline`."""

    seed: int = 0
    float_epochs: int = 100
    float_lr: float = 3e-3
    pq_epochs: int = 40
    pq_lr: float = 2e-3  # chosen on validation (MLP and CNN) among 1e-4, 5e-4, 2e-3
    batch_size: int = 64
    weight_decay: float = 1e-4
    t_start: float = 3.0
    t_end: float = 0.3
    soft_t_end: float = 0.02  # final temperature of the "soft" method (soft ~ hard at the end)
    kmeans_iters: int = 25
    method: str = "ste"
    distill: float = 1.0  # weight of the KL term to the float teacher's soft targets during fine-tuning
    distill_t: float = 2.0  # softmax temperature of that term
    qat_bits: int = 0  # 0: no QAT; 2..8: width of activations, prototypes and table entries
    qat_epochs: int = 20
    qat_lr: float = 1e-3  # chosen on validation (MLP, 4 bits) among 2e-4, 1e-3, 3e-3
    n_calib: int = 256  # calibration inputs: the first n_calib training inputs (pqcompile uses 256)
    val_fraction: float = 0.15  # held-out part of the TRAIN split for model selection (0: none, old behaviour)
    calib: str = "auto"  # integer scales: "auto" (best of CALIB_CHOICES on validation), "ACT/LUT" or one method
    dataset: str = "sklearn-digits"
    optimizer: str = "adam"  # of the float stage: "adam" or "sgd" (fine-tuning and QAT use Adam)
    momentum: float = 0.9  # SGD's
    schedule: str = "cosine"  # every stage: "cosine" (to 5% of the lr) or "step" (x0.1 at 1/2 and 3/4 of the epochs)
    pq_weight_decay: float | None = None  # of fine-tuning (None: weight_decay)
    augment: bool = False  # pad-4 random crop + horizontal flip of image inputs (the CIFAR-10 augmentation)
    kmeans_images: int = 0  # k-means sees the first this many fit inputs (0: all of them)
    fast_dist: bool = False  # fine-tuning and QAT: L2 distances by matrix product (pqmodel.layers.pairwise_dist)
    qat_val_images: int = 0  # QAT's epoch selection scores the integer model on this many validation inputs (0: all)
    host_layers: list[str] = field(default_factory=list)  # run on the host (pqcompile --host-layers) in the export


def check_config(cfg: TrainConfig) -> None:
    """Refuse settings the pipeline cannot run (ValueError naming the field)."""
    if cfg.method not in METHODS:
        raise ValueError(f"unknown method {cfg.method!r}; expected one of {METHODS}")
    if cfg.qat_bits and not 2 <= cfg.qat_bits <= 8:
        raise ValueError(f"qat_bits must be 0 (off) or 2..8, got {cfg.qat_bits}")
    if cfg.optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}; expected one of {OPTIMIZERS}")
    if cfg.schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {cfg.schedule!r}; expected one of {SCHEDULES}")
    if cfg.batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {cfg.batch_size}")


def _convert_layers(layers: list[dict[str, Any]], fn: Callable[[dict[str, Any]], dict[str, Any]]) -> list[Any]:
    out = []
    for layer in layers:
        layer = fn(layer)
        if layer["type"] == "residual":
            layer = {**layer, "body": _convert_layers(layer["body"], fn),
                     "shortcut": _convert_layers(layer.get("shortcut", []), fn)}
        out.append(layer)
    return out


def _to_float(layer: dict[str, Any]) -> dict[str, Any]:
    if layer["type"] == "pq_linear":
        return {"type": "linear", "in_features": layer["in_features"], "out_features": layer["out_features"],
                "bias": layer.get("bias", True)}
    if layer["type"] == "pq_conv2d":
        return {"type": "conv2d", **{k: layer[k] for k in ("in_channels", "out_channels", "kernel_size")},
                "stride": layer.get("stride", 1), "padding": layer.get("padding", 0), "bias": layer.get("bias", True)}
    return dict(layer)


def float_arch(arch: dict[str, Any]) -> dict[str, Any]:
    """The float teacher of a PQ architecture: ``pq_linear`` -> ``linear``, ``pq_conv2d`` -> ``conv2d``."""
    out = copy.deepcopy(arch)
    out["name"] = f"{arch['name']}-float"
    out["layers"] = _convert_layers(arch["layers"], _to_float)
    return out


def pq_arch_from_float(
    arch: dict[str, Any], k: int = 16, v: int = 4, metric: str = "l2",
    select: Callable[[str, dict[str, Any]], bool] | None = None, name: str | None = None,
) -> dict[str, Any]:
    """Replace the chosen ``linear``/``conv2d`` layers of a float architecture by PQ layers.

    ``select(path, layer)`` (path as in :func:`pqmodel.model.iter_layers`, e.g. ``"layers.3"``) picks the
    layers; default: all of them.
    """
    paths = {id(layer): path for path, layer in iter_layers(arch)}

    def fn(layer: dict[str, Any]) -> dict[str, Any]:
        if layer["type"] not in ("linear", "conv2d") or (select is not None and not select(paths[id(layer)], layer)):
            return dict(layer)
        pq = {**layer, "type": f"pq_{layer['type']}", "k": k, "v": v, "metric": metric}
        return pq

    out = {**arch, "layers": _convert_layers(arch["layers"], fn)}
    out["name"] = name or str(arch["name"]).removesuffix("-float") + "-pq"
    validate_arch(out)
    return out


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter or buffer (the CPU for a module without any)."""
    t = next(itertools.chain(model.parameters(), model.buffers()), None)
    return t.device if t is not None else torch.device("cpu")


@torch.no_grad()
def predict(model: nn.Module, x: Tensor, batch_size: int | None = None) -> Tensor:
    """``model``'s outputs for inputs ``x`` (on any device) in its current mode, on the CPU; at most
    ``batch_size`` inputs go through the model at a time (all at once when they fit; default: ``EVAL_BATCH``
    inputs or ``EVAL_ELEMENTS`` input elements, the fewer)."""
    dev = model_device(model)
    if batch_size is None:
        batch_size = max(1, min(EVAL_BATCH, EVAL_ELEMENTS // max(1, x[0].numel() if x.shape[0] else 1)))
    if x.shape[0] <= batch_size:
        return model(x.to(dev)).cpu()
    return torch.cat([model(x[s].to(dev)).cpu() for s in iter_chunks(x.shape[0], batch_size)])


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """Top-1 accuracy (eval mode, i.e. hard PQ assignment); restores the training flag."""
    was = model.training
    model.eval()
    acc = (predict(model, x).argmax(-1) == y.cpu()).float().mean().item()
    model.train(was)
    return acc


def _batches(n: int, batch_size: int, gen: torch.Generator) -> list[Tensor]:
    perm = torch.randperm(n, generator=gen)
    return [perm[i : i + batch_size] for i in range(0, n, batch_size)]


def make_optimizer(name: str, params: list[nn.Parameter], lr: float, weight_decay: float,
                   momentum: float = 0.9) -> torch.optim.Optimizer:
    """``"adam"`` or ``"sgd"`` (with ``momentum``); weight decay as the optimizer's own (L2) term."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; expected one of {OPTIMIZERS}")


def make_schedule(opt: torch.optim.Optimizer, name: str, epochs: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-epoch learning-rate factor: ``"cosine"`` from 1 to 0.05 over ``epochs``, or ``"step"``: 1, then 0.1
    from half of the epochs, 0.01 from three quarters."""
    if name == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(
            opt, lambda e: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * e / max(1, epochs))))
    if name == "step":
        return torch.optim.lr_scheduler.LambdaLR(
            opt, lambda e: 0.1 ** (int(e >= epochs // 2) + int(e >= (3 * epochs) // 4)))
    raise ValueError(f"unknown schedule {name!r}; expected one of {SCHEDULES}")


def _ddp(model: nn.Module, run: Run) -> nn.Module:
    from torch.nn.parallel import DistributedDataParallel

    ids = [run.device.index] if run.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)  # buffers (batch norm): rank 0's before every forward


Score = tuple[float, ...]


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
    before_epoch: Callable[[int], None] | None = None,
    before_batch: Callable[[], None] | None = None,
    log_every: int = 10,
    select: Callable[[], Score] | None = None,
    info: dict[str, Any] | None = None,
    *,
    run: Run | None = None,
    stage: str | None = None,
    optimizer: str = "adam",
    momentum: float = 0.9,
    schedule: str = "cosine",
    augment: bool = False,
    extra_params: Sequence[nn.Parameter] = (),
) -> list[float]:
    """Mini-batch training with cross-entropy (Adam, or SGD with ``momentum``); returns the mean training loss
    per epoch.

    ``temperature(epoch)``, if given, sets the PQ soft-assignment temperature before each epoch;
    ``before_epoch(epoch)`` / ``before_batch()`` run before each epoch / optimizer step.
    The learning rate follows ``schedule`` (:func:`make_schedule`; cosine to 5% of ``lr`` by default). With a
    ``teacher`` and ``distill`` > 0 the loss adds ``distill * T^2 * KL(teacher || model)`` on logits softened by
    ``distill_t``. Progress (epoch, loss, train and test accuracy) is logged every ``log_every`` epochs and at
    the end; with a ``log``, a terminal also shows a bar over the epochs with ETA (``pqcompile.progress``; none
    in a log or CI). ``augment``: the image augmentation of :class:`pqtrain.batches.ImageSet`.

    With ``select`` (a score, higher is better, compared as a tuple: e.g. validation accuracy, then minus
    validation loss), the model is scored before training and after every epoch and the best-scoring state
    (the latest among equals) is restored at the end: early stopping by model selection (its epoch and score
    go to ``info["selected_epoch"]`` / ``info["selected_score"]`` when ``info`` is given). ``data``'s third and
    fourth entries are then the validation split, never the test split.

    ``run`` (:class:`pqtrain.run.Run`): the device (the model and ``teacher`` are moved there, batches go there
    one at a time), the processes (DistributedDataParallel and a DistributedSampler; rank 0 scores ``select``
    and logs; ``extra_params``, trained parameters outside ``model``, get their gradients averaged by hand),
    the checkpoints: after every epoch the state of the loop (model, ``extra_params``, optimizer, scheduler,
    batch order, RNGs, losses, selection) is saved as stage ``stage``, a CSV row is logged, and a checkpoint of
    this stage being resumed is loaded first (training continues at its epoch).
    """
    run = run or Run()
    dist, dev = run.dist, run.device
    if not dist.main:
        log = None
    x_tr, y_tr, x_te, y_te = data
    model.to(dev)
    if teacher is not None:
        teacher.to(dev)
    extra = list(extra_params)
    batches = make_batches(x_tr, y_tr, batch_size, seed, run, augment)
    opt = make_optimizer(optimizer, params, lr, weight_decay, momentum)
    sched = make_schedule(opt, schedule, epochs)
    ck = run.checkpoints if stage is not None else None
    losses: list[float] = []
    best: tuple[Score, int, dict[str, Tensor]] | None = None

    def consider(epoch: int) -> Score | None:
        nonlocal best
        if select is None:
            return None
        score: Score | None = None
        if dist.main:
            was = model.training
            model.eval()
            score = select()
            model.train(was)
        score = broadcast_object(score, dist)
        if best is None or score >= best[0]:
            best = (score, epoch, to_cpu(model.state_dict()))
        return score

    def loop_state(epoch: int) -> dict[str, Any]:
        return {"epoch": epoch, "model": model.state_dict(), "extra": [p.detach() for p in extra],
                "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "batches": batches.state_dict(),
                "rng": rng_state(dev), "losses": list(losses),
                "best": None if best is None else {"score": list(best[0]), "epoch": best[1], "state": best[2]}}

    start = 0
    loop = ck.resume_loop(stage) if ck is not None and stage is not None else None
    if loop is not None:
        start = int(loop["epoch"])
        model.load_state_dict(loop["model"])
        with torch.no_grad():
            for p, v in zip(extra, loop["extra"], strict=True):
                p.copy_(v)
        opt.load_state_dict(loop["optimizer"])
        sched.load_state_dict(loop["scheduler"])
        batches.load_state_dict(loop["batches"])
        losses = [float(v) for v in loop["losses"]]
        b = loop["best"]
        best = None if b is None else (tuple(float(v) for v in b["score"]), int(b["epoch"]), b["state"])
        set_rng_state(loop["rng"], dev)
        if log is not None:
            log(f"[{tag}] resumed after epoch {start}/{epochs}")
    else:
        consider(0)
    net = _ddp(model, run) if dist.active else model
    # on a terminal (and with a log), a bar over the epochs with ETA; the log lines print above it
    with Progress(f"[{tag}]", epochs - start, unit="epochs", quiet=log is None, lines=False, leave=False) as bar:
        for epoch in range(start, epochs):
            t0 = time.perf_counter()
            if temperature is not None and isinstance(model, PQNet):
                model.set_temperature(temperature(epoch))
            if before_epoch is not None:
                before_epoch(epoch)
            model.train()
            lr_now = float(opt.param_groups[0]["lr"])
            total, count, correct = 0.0, 0, 0
            for xb, yb in batches.epoch(epoch):
                xb, yb = xb.to(dev, non_blocking=True), yb.to(dev, non_blocking=True)
                opt.zero_grad()
                if before_batch is not None:
                    before_batch()
                logits = net(xb)
                loss = nn.functional.cross_entropy(logits, yb)
                if teacher is not None and distill > 0:
                    with torch.no_grad():
                        target = torch.log_softmax(teacher(xb) / distill_t, dim=-1)
                    kl = nn.functional.kl_div(torch.log_softmax(logits / distill_t, dim=-1), target,
                                              reduction="batchmean", log_target=True)
                    loss = loss + distill * distill_t**2 * kl
                loss.backward()
                average_gradients(extra, dist)
                opt.step()
                total += loss.item() * xb.shape[0]
                count += xb.shape[0]
                correct += int((logits.detach().argmax(-1) == yb).sum())
            sched.step()
            if dist.active:  # batch-norm statistics: rank 0's (DDP broadcasts them before every forward anyway)
                broadcast_module(model, dist, buffers_only=True)
                total, count, correct = run_sums([total, count, correct], run)
            losses.append(total / count)
            if log is not None and ((epoch + 1) % log_every == 0 or epoch == epochs - 1):
                t = f" T={temperature(epoch):.3f}" if temperature is not None else ""
                msg = (f"[{tag}] epoch {epoch + 1:3d}/{epochs} loss {losses[-1]:.4f} "
                       f"train {accuracy(model, x_tr, y_tr):.4f} {'val' if select else 'test'} "
                       f"{accuracy(model, x_te, y_te):.4f}{t}")
                with bar.suspend():
                    log(msg)
            score = consider(epoch + 1)
            if run.checkpoints is not None:
                run.checkpoints.add_row({
                    "stage": tag, "epoch": epoch + 1, "epochs": epochs, "loss": losses[-1],
                    "train_acc": correct / count, "val_acc": None if score is None else score[0], "lr": lr_now,
                    "seconds": round(time.perf_counter() - t0, 3)})
            if ck is not None and stage is not None and dist.main:
                ck.save(stage, epoch + 1, loop_state(epoch + 1))
            bar.update(1, f"loss {losses[-1]:.4f}")
            run.epoch_done()
    if best is not None:
        model.load_state_dict(best[2])
        if info is not None:
            info.update(selected_epoch=best[1], selected_score=best[0])
        if log is not None:
            log(f"[{tag}] selected epoch {best[1]}/{epochs} (score {tuple(round(v, 4) for v in best[0])})")
    model.eval()
    return losses


def run_sums(values: list[float], run: Run) -> tuple[float, int, int]:
    """(loss sum, count, correct) summed over the processes."""
    t, c, k = all_sum([float(v) for v in values], run.dist)
    return t, int(c), int(k)


class _Captured(Exception):
    pass


def convert_to_pq(
    float_model: PQNet, arch: dict[str, Any], x_calib: Tensor, kmeans_iters: int = 25, seed: int = 0,
    max_columns: int = 20000,
) -> PQNet:
    """Build the PQ ``arch`` and initialise it from ``float_model`` (the same architecture with ``linear`` /
    ``conv2d`` where ``arch`` has ``pq_linear`` / ``pq_conv2d``; see :func:`float_arch`).

    Every parameter (and BatchNorm statistic) is copied; each PQ layer, in execution order, gets its
    prototypes by per-subspace k-means on the real inputs it sees: ``x_calib`` pushed through the already
    converted earlier layers. The network runs on ``float_model``'s device; k-means runs on the CPU.
    """
    dev = model_device(float_model)
    pq = build(arch).to(dev)
    res = pq.load_state_dict(float_model.state_dict(), strict=False)
    bad = [k for k in res.missing_keys if not k.endswith("prototypes")]
    if bad or res.unexpected_keys:
        raise ValueError(f"float model does not match the PQ arch: missing {bad}, unexpected {res.unexpected_keys}")
    pq.eval()
    float_model.eval()
    top = {id(m): i for i, m in enumerate(pq.layers)}
    for j, mod in enumerate(pq.pq_layers()):
        got: list[Tensor] = []

        def grab(_m: nn.Module, args: tuple[Tensor, ...], got: list[Tensor] = got) -> None:
            got.append(args[0])
            raise _Captured

        handle = mod.register_forward_pre_hook(grab)
        try:
            with torch.no_grad():
                pq(x_calib.to(dev))
        except _Captured:
            pass
        finally:
            handle.remove()
        layer_seed = seed + 1000 * top[id(mod)] if id(mod) in top else seed + 1000 * len(pq.layers) + 100 * j
        mod.init_prototypes(got[0].cpu(), iters=kmeans_iters, seed=layer_seed, max_columns=max_columns)
    return pq


def split_validation(data: Data, fraction: float, seed: int = 0) -> Data:
    """(x_fit, y_fit, x_val, y_val): a stratified, seeded split of the TRAIN part of ``data`` only (its test
    part is ignored), ``fraction`` of it held out for validation / model selection (not stratified when the
    sample is too small for every class to be in both parts)."""
    from sklearn.model_selection import train_test_split

    x_tr, y_tr = data[0], data[1]
    idx = torch.arange(x_tr.shape[0]).numpy()
    try:
        fit_idx, val_idx = train_test_split(idx, test_size=fraction, random_state=seed, stratify=y_tr.numpy())
    except ValueError:  # too few inputs to hold every class out (a tiny sample): a plain seeded split
        fit_idx, val_idx = train_test_split(idx, test_size=fraction, random_state=seed)
    fi, vi = torch.from_numpy(fit_idx), torch.from_numpy(val_idx)
    return x_tr[fi], y_tr[fi], x_tr[vi], y_tr[vi]


@torch.no_grad()
def hard_score(model: nn.Module, x: Tensor, y: Tensor) -> tuple[float, float]:
    """(accuracy, -cross-entropy) of the hard (eval-mode) model: the selection score."""
    logits = predict(model, x)
    y = y.cpu()
    return (logits.argmax(-1) == y).float().mean().item(), -nn.functional.cross_entropy(logits, y).item()


def integer_score(inet: IntegerNet, x: Tensor, y: Tensor) -> tuple[float, float]:
    """(accuracy, -cross-entropy of the dequantized logits) of an exported integer model."""
    logits = inet.dequantized(x)
    return inet.accuracy(x, y), -nn.functional.cross_entropy(logits, y).item()


def choose_calib(model: PQNet, arch: dict[str, Any], calib: Tensor, x_val: Tensor, y_val: Tensor, bits: int,
                 choices: tuple[tuple[str, str], ...] = CALIB_CHOICES,
                 host_layers: Sequence[str] = ()) -> tuple[str, str]:
    """The (act_calib, lut_calib) of ``choices`` whose exported integer model scores best on the validation
    inputs (the first among equals)."""
    best: tuple[tuple[float, float], tuple[str, str]] | None = None
    for ac, lc in choices:
        sc = integer_score(export_integer(model, arch, calib, bits, act_calib=ac, lut_calib=lc,
                                          host_layers=host_layers), x_val, y_val)
        if best is None or sc > best[0]:
            best = (sc, (ac, lc))
    assert best is not None
    return best[1]


def kmeans_inputs(data: Data, cfg: TrainConfig) -> Tensor:
    """The inputs k-means sees in :func:`convert_to_pq`: the training inputs less the validation part (the first
    ``cfg.kmeans_images`` of them when that is set)."""
    x = split_validation(data, cfg.val_fraction, cfg.seed)[0] if cfg.val_fraction > 0 else data[0]
    return x[: cfg.kmeans_images] if cfg.kmeans_images > 0 else x


def trainable_parameters(model: PQNet, method: str) -> list[nn.Parameter]:
    """The parameters fine-tuned by ``method``."""
    if method in ("ste", "soft", "lutnn"):
        return list(model.parameters())
    if method == "ste-prototypes":
        return [m.prototypes for m in model.pq_layers()]
    if method == "ste-weights":
        protos = {id(m.prototypes) for m in model.pq_layers()}
        return [p for p in model.parameters() if id(p) not in protos]
    if method == "kmeans":
        return []
    raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")


def reshape_inputs(
    data: tuple[Tensor, Tensor, Tensor, Tensor], arch: dict[str, Any]
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Reshape flat inputs to the architecture's ``input_shape`` (e.g. digits [N, 64] -> [N, 1, 8, 8])."""
    shape = arch["input_shape"]
    x_tr, y_tr, x_te, y_te = data
    return x_tr.reshape(-1, *shape), y_tr, x_te.reshape(-1, *shape), y_te


def train_float(arch: dict[str, Any], data: tuple[Tensor, Tensor, Tensor, Tensor], cfg: TrainConfig,
                log: Log | None = print, run: Run | None = None) -> PQNet:
    """Train a float network (``arch`` must have no PQ layer) with the pipeline's settings (``cfg.optimizer``,
    ``cfg.schedule``, ``cfg.augment``) on ``run``'s device and processes (checkpoint stage ``"float"``).

    With ``cfg.val_fraction`` > 0 it trains on the fit part of the training split only (the validation part
    stays unseen by every model of the pipeline) and keeps the epoch that scores best on validation."""
    run = run or Run()
    torch.manual_seed(cfg.seed)
    fmodel = build(arch).to(run.device)
    select = None
    if cfg.val_fraction > 0:
        data = split_validation(data, cfg.val_fraction, cfg.seed)
        x_val, y_val = data[2], data[3]

        def select() -> tuple[float, ...]:
            return hard_score(fmodel, x_val, y_val)

    fit(fmodel, list(fmodel.parameters()), data, cfg.float_epochs, cfg.float_lr, cfg.batch_size,
        cfg.weight_decay, cfg.seed, log=log, tag="float", select=select, run=run, stage="float",
        optimizer=cfg.optimizer, momentum=cfg.momentum, schedule=cfg.schedule, augment=cfg.augment)
    return fmodel


def finetune(pq: PQNet, data: tuple[Tensor, Tensor, Tensor, Tensor], cfg: TrainConfig,
             teacher: nn.Module | None = None, log: Log | None = print, run: Run | None = None) -> list[float]:
    """Fine-tune a converted PQ network with ``cfg.method`` for ``cfg.pq_epochs`` (Adam; checkpoint stage
    ``"pq"``); returns the losses."""
    if cfg.method not in METHODS:
        raise ValueError(f"unknown method {cfg.method!r}; expected one of {METHODS}")
    run = run or Run()
    params = trainable_parameters(pq, cfg.method)
    if not params or cfg.pq_epochs <= 0:
        return []
    n = cfg.pq_epochs
    pq.set_assign_mode("soft" if cfg.method == "soft" else "ste")
    t_end = cfg.soft_t_end if cfg.method == "soft" else cfg.t_end

    def temp(e: int) -> float:  # geometric annealing t_start -> t_end
        return cfg.t_start * (t_end / cfg.t_start) ** (e / max(1, n - 1))

    temperature: Callable[[int], float] | None = temp
    before_batch = None
    log_t: list[nn.Parameter] = []
    if cfg.method == "lutnn":  # one learned temperature per layer (log-parametrised), starting at t_start
        layers = pq.pq_layers()
        log_t = [nn.Parameter(torch.tensor(math.log(cfg.t_start), device=run.device)) for _ in layers]
        temperature = None

        def before_batch() -> None:
            for layer, lt in zip(layers, log_t, strict=True):
                layer.temperature = lt.exp()

    select = None
    if cfg.val_fraction > 0:  # train on the fit part of the training split, keep the best epoch on the rest
        data = split_validation(data, cfg.val_fraction, cfg.seed)
        x_val, y_val = data[2], data[3]

        def select() -> tuple[float, ...]:
            return hard_score(pq, x_val, y_val)

    wd = cfg.weight_decay if cfg.pq_weight_decay is None else cfg.pq_weight_decay
    losses = fit(pq, params + log_t, data, n, cfg.pq_lr, cfg.batch_size, wd, cfg.seed + 1,
                 temperature=temperature, log=log, tag=f"pq-{cfg.method}", teacher=teacher, distill=cfg.distill,
                 distill_t=cfg.distill_t, before_batch=before_batch, select=select, run=run, stage="pq",
                 schedule=cfg.schedule, augment=cfg.augment, extra_params=log_t)
    if cfg.method == "lutnn":
        if log is not None and run.dist.main:
            log(f"[pq-lutnn] learned temperatures {[round(float(lt.detach().exp()), 4) for lt in log_t]}")
        for layer in pq.pq_layers():
            layer.temperature = float(torch.as_tensor(layer.temperature).detach())
    pq.set_assign_mode("ste")
    return losses


@dataclass
class QatResult:
    """What :func:`train_qat` did: training losses, the calibration to export with, the epoch kept."""

    losses: list[float]
    act_calib: str
    lut_calib: str
    selected_epoch: int | None  # None without validation (the last epoch is kept)
    selected_score: tuple[float, ...] | None = None  # its validation score (accuracy, -cross-entropy)


def resolve_calib(model: PQNet, arch: dict[str, Any], data: Data, cfg: TrainConfig, bits: int) -> tuple[str, str]:
    """The (act_calib, lut_calib) for ``bits``: ``cfg.calib`` as ``"ACT/LUT"`` or one method for both, or with
    ``"auto"`` the best of :data:`CALIB_CHOICES` on the validation part of the training split (pqcompile's
    max/max without one)."""
    if cfg.calib != "auto":
        ac, _, lc = cfg.calib.partition("/")
        return ac, lc or ac
    if cfg.val_fraction <= 0:
        return CALIB_CHOICES[0]
    _, _, x_val, y_val = split_validation(data, cfg.val_fraction, cfg.seed)
    return choose_calib(model, arch, data[0][: cfg.n_calib], x_val, y_val, bits, host_layers=cfg.host_layers)


def train_qat(pq: PQNet, arch: dict[str, Any], data: Data, cfg: TrainConfig,
              teacher: nn.Module | None = None, log: Log | None = print, run: Run | None = None,
              calib_choice: tuple[str, str] | None = None) -> QatResult:
    """Quantization-aware fine-tuning at ``cfg.qat_bits`` (activations = prototypes = table width).

    Starts from the post-training-quantized model: the calibration (:func:`resolve_calib`, or ``calib_choice``)
    is chosen first on the validation part of the training split. Straight-through hard assignment at
    temperature ``t_end``; the integer parameters are re-calibrated with ``pqcompile.graph`` (that calibration)
    before every epoch (on rank 0, broadcast to the others). With ``cfg.val_fraction`` > 0 training uses the
    rest of the training split and the epoch kept (0 = the PTQ model itself) is the one whose *exported integer
    model* scores best on validation (accuracy, then cross-entropy), so QAT never makes the validation accuracy
    worse than PTQ. The model is left without fake-quant (plain float PQ): export it with
    :func:`pqtrain.integer.export_integer` and the returned calibration.
    """
    run = run or Run()
    bits = cfg.qat_bits
    calib = data[0][: cfg.n_calib]
    if calib_choice is None:
        calib_choice = broadcast_object(resolve_calib(pq, arch, data, cfg, bits) if run.dist.main else None,
                                        run.dist)
    act_calib, lut_calib = calib_choice
    pq.set_temperature(cfg.t_end)
    pq.set_assign_mode("ste")
    select = None
    info: dict[str, Any] = {}
    if cfg.val_fraction > 0:
        data = split_validation(data, cfg.val_fraction, cfg.seed)
        n_val = cfg.qat_val_images or data[2].shape[0]
        x_val, y_val = data[2][:n_val], data[3][:n_val]

        def select() -> tuple[float, ...]:
            return integer_score(export_integer(pq, arch, calib, bits, act_calib=act_calib, lut_calib=lut_calib,
                                                host_layers=cfg.host_layers), x_val, y_val)

    def recalibrate(_epoch: int) -> None:
        plan = compute_qat(pq, arch, calib, bits, act_calib=act_calib, lut_calib=lut_calib,
                           host_layers=cfg.host_layers) if run.dist.main else None
        install_qat(pq, broadcast_object(plan, run.dist))

    norms = [m for m in pq.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    freeze = None
    if norms:  # batch norm frozen (running statistics, as folded into the PQ layers and run on the host)

        def freeze() -> None:
            for m in norms:
                m.eval()

    try:
        losses = fit(pq, list(pq.parameters()), data, cfg.qat_epochs, cfg.qat_lr, cfg.batch_size, 0.0,
                     cfg.seed + 2, log=log, tag=f"qat-{bits}b", teacher=teacher, distill=cfg.distill,
                     distill_t=cfg.distill_t, before_epoch=recalibrate, before_batch=freeze, log_every=5,
                     select=select, info=info, run=run, stage="qat", schedule=cfg.schedule, augment=cfg.augment)
    finally:
        clear_qat(pq)
    return QatResult(losses, act_calib, lut_calib, info.get("selected_epoch"), info.get("selected_score"))


def train_qat_search(pq: PQNet, arch: dict[str, Any], data: Data, cfg: TrainConfig,
                     grid: tuple[dict[str, Any], ...], teacher: nn.Module | None = None,
                     log: Log | None = print) -> tuple[PQNet, QatResult, dict[str, Any]]:
    """:func:`train_qat` from a copy of ``pq`` for every override of ``cfg`` in ``grid`` (e.g.
    ``{"qat_lr": 1e-3, "distill": 0.0}``); returns the (model, result, overrides) whose exported integer model
    scores best on the validation part of the training split (the first among equals). Needs
    ``cfg.val_fraction`` > 0."""
    if cfg.val_fraction <= 0:
        raise ValueError("train_qat_search selects on validation: cfg.val_fraction must be > 0")
    best: tuple[tuple[float, ...], PQNet, QatResult, dict[str, Any]] | None = None
    for over in grid:
        model = copy.deepcopy(pq)
        qr = train_qat(model, arch, data, replace(cfg, **over), teacher=teacher, log=log)
        assert qr.selected_score is not None
        if log is not None:
            log(f"[qat-search] {over}: validation {qr.selected_score} (epoch {qr.selected_epoch})")
        if best is None or qr.selected_score > best[0]:
            best = (qr.selected_score, model, qr, over)
    assert best is not None
    return best[1], best[2], best[3]


def integer_accuracy(model: PQNet, arch: dict[str, Any], data: Data, bits: int, n_calib: int = 256,
                     act_calib: str = "max", lut_calib: str = "max", host_layers: Sequence[str] = ()) -> float:
    """Test accuracy of the exported integer pipeline (act = proto = table width ``bits``; ``host_layers`` run
    on the host in float, as ``pqcompile --host-layers``)."""
    x_tr, _, x_te, y_te = data
    return export_integer(model, arch, x_tr[:n_calib], bits, act_calib=act_calib, lut_calib=lut_calib,
                          host_layers=host_layers).accuracy(x_te, y_te)


def set_fast_dist(model: PQNet, on: bool) -> None:
    """Switch the matrix-product L2 distances of every PQ layer on or off (``TrainConfig.fast_dist``)."""
    for m in model.pq_layers():
        m.fast_dist = on


def _identity(arch: dict[str, Any], cfg: TrainConfig, run: Run, float_model: PQNet | None) -> dict[str, Any]:
    """What a checkpoint must share with the run that resumes it."""
    return {"config": asdict(cfg), "arch": arch, "processes": run.dist.world,
            "float_model": None if float_model is None else state_digest(float_model)}


def train_pipeline(
    arch: dict[str, Any],
    data: tuple[Tensor, Tensor, Tensor, Tensor],
    cfg: TrainConfig | None = None,
    log: Log | None = print,
    float_model: PQNet | None = None,
    run: Run | None = None,
) -> tuple[PQNet, dict[str, Any]]:
    """Float training (unless ``float_model`` is given), PQ conversion, fine-tuning and, with ``qat_bits``,
    quantization-aware training. ``data`` inputs may be flat; they are reshaped to ``arch['input_shape']``.
    Returns (PQ model in eval mode, meta dict; under several processes the meta is rank 0's, the others get
    accuracies of NaN).

    ``run`` (:class:`pqtrain.run.Run`): device, processes and checkpoints. With checkpoints, a checkpoint being
    resumed skips the stages before its own (the float weights, the k-means accuracy, the calibration and the
    accuracy before QAT come from it) and continues its stage at its epoch; the result equals that of an
    uninterrupted run bit for bit (same machine, same settings). k-means conversion runs on rank 0 and its
    result is broadcast."""
    cfg = cfg or TrainConfig()
    run = run or Run()
    validate_arch(arch)
    check_config(cfg)
    main, dev, ck = run.dist.main, run.device, run.checkpoints
    if not main:
        log = None
    if ck is not None:
        ck.bind(_identity(arch, cfg, run, float_model))
    done = ck.pipeline if ck is not None else {}  # what finished stages left, carried by every checkpoint

    def finished(stage: str) -> bool:
        return ck is not None and ck.finished(stage, STAGES)

    def on_main(fn: Callable[[], Any]) -> Any:  # rank 0 computes, every rank gets it
        return broadcast_object(fn() if main else None, run.dist)

    nan = float("nan")
    data = reshape_inputs(data, arch)
    x_tr, y_tr, x_te, y_te = data
    t0 = time.perf_counter()
    if float_model is not None:
        fmodel = float_model.to(dev)
    elif finished("float"):
        fmodel = build(float_arch(arch)).to(dev)
        fmodel.load_state_dict(done["float_state"])
        fmodel.eval()
    else:
        fmodel = train_float(float_arch(arch), data, cfg, log, run)
    done["float_state"] = fmodel.state_dict()
    float_acc = accuracy(fmodel, x_te, y_te) if main else nan

    torch.manual_seed(cfg.seed)
    if finished("float"):  # resuming fine-tuning or QAT: the stage's checkpoint holds the weights
        pq = build(arch).to(dev)
        kmeans_acc = float(done["kmeans_acc"])
    else:
        if main:
            pq = convert_to_pq(fmodel, arch, kmeans_inputs(data, cfg), cfg.kmeans_iters, cfg.seed)
        else:
            pq = build(arch).to(dev)
        broadcast_module(pq, run.dist)
        kmeans_acc = accuracy(pq, x_te, y_te) if main else nan
        done["kmeans_acc"] = kmeans_acc
        if log is not None:
            log(f"[convert] float test {float_acc:.4f} -> PQ k-means test {kmeans_acc:.4f}")
    set_fast_dist(pq, cfg.fast_dist)
    if not finished("pq"):
        finetune(pq, data, cfg, teacher=fmodel, log=log, run=run)
    meta_int: dict[str, Any] = {}
    if cfg.qat_bits:
        hosts = cfg.host_layers
        if "qat_calib" in done:
            pre, calib = float(done["ptq_acc"]), tuple(done["qat_calib"])
        else:  # PTQ with pqcompile's max calibration, then the calibration QAT starts from
            pre = integer_accuracy(pq, arch, data, cfg.qat_bits, cfg.n_calib, host_layers=hosts) if main else nan
            calib = on_main(lambda: resolve_calib(pq, arch, data, cfg, cfg.qat_bits))
            done.update(ptq_acc=pre, qat_calib=list(calib))
        qr = train_qat(pq, arch, data, cfg, teacher=fmodel, log=log, run=run, calib_choice=(calib[0], calib[1]))
        post = integer_accuracy(pq, arch, data, cfg.qat_bits, cfg.n_calib, qr.act_calib, qr.lut_calib,
                                host_layers=hosts) if main else nan
        meta_int = {"qat_bits": cfg.qat_bits, "int_test_acc_before_qat": pre, "int_test_acc": post,
                    "act_calib": qr.act_calib, "lut_calib": qr.lut_calib, "qat_selected_epoch": qr.selected_epoch,
                    "compile_hint": f"pqcompile --act-bits {cfg.qat_bits} --lut-bits {cfg.qat_bits}"
                                    + ("" if (qr.act_calib, qr.lut_calib) == ("max", "max") else
                                       f" --act-calib {qr.act_calib} --lut-calib {qr.lut_calib}")
                                    + (f" --host-layers {' '.join(hosts)}" if hosts else "")}
        if log is not None:
            log(f"[qat] integer pipeline ({cfg.qat_bits} bits) test {post:.4f} "
                f"(calibration {qr.act_calib}/{qr.lut_calib}; PTQ max/max before QAT: {pre:.4f})")
    pq.eval()
    set_fast_dist(pq, False)  # the accuracies below are those of the exact distances (as pqcompile's)
    if log is not None:
        log(f"[done] {time.perf_counter() - t0:.1f} s")
    meta = {
        "dataset": cfg.dataset,
        "seed": cfg.seed,
        "method": cfg.method,
        "float_test_acc": float_acc,
        "float_train_acc": accuracy(fmodel, x_tr, y_tr) if main else nan,
        "pq_kmeans_test_acc": kmeans_acc,
        "pq_test_acc": accuracy(pq, x_te, y_te) if main else nan,
        "pq_train_acc": accuracy(pq, x_tr, y_tr) if main else nan,
        **meta_int,
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
