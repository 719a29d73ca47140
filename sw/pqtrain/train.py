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
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from pqcompile.progress import Progress
from pqmodel.model import PQNet, build, iter_layers, validate_arch

from .integer import IntegerNet, calibrate_qat, clear_qat, export_integer

METHODS = ("ste", "ste-prototypes", "ste-weights", "soft", "lutnn", "kmeans")

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
    before_epoch: Callable[[int], None] | None = None,
    before_batch: Callable[[], None] | None = None,
    log_every: int = 10,
    select: Callable[[], tuple[float, ...]] | None = None,
    info: dict[str, Any] | None = None,
) -> list[float]:
    """Adam + cross-entropy over mini-batches; returns the mean training loss per epoch.

    ``temperature(epoch)``, if given, sets the PQ soft-assignment temperature before each epoch;
    ``before_epoch(epoch)`` / ``before_batch()`` run before each epoch / optimizer step.
    The learning rate follows a cosine schedule to 5% of ``lr``. With a ``teacher`` and ``distill`` > 0 the
    loss adds ``distill * T^2 * KL(teacher || model)`` on logits softened by ``distill_t``.
    Progress (epoch, loss, train and test accuracy) is logged every ``log_every`` epochs and at the end; with
    a ``log``, a terminal also shows a bar over the epochs with ETA (``pqcompile.progress``; none in a log or CI).

    With ``select`` (a score, higher is better, compared as a tuple: e.g. validation accuracy, then minus
    validation loss), the model is scored before training and after every epoch and the best-scoring state
    (the latest among equals) is restored at the end: early stopping by model selection (its epoch and score
    go to ``info["selected_epoch"]`` / ``info["selected_score"]`` when ``info`` is given). ``data``'s third and
    fourth entries are then the validation split, never the test split.
    """
    x_tr, y_tr, x_te, y_te = data
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda e: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * e / max(1, epochs)))
    )
    losses: list[float] = []
    best: tuple[tuple[float, ...], int, dict[str, Tensor]] | None = None

    def consider(epoch: int) -> None:
        nonlocal best
        if select is None:
            return
        was = model.training
        model.eval()
        score = select()
        model.train(was)
        if best is None or score >= best[0]:
            best = (score, epoch, copy.deepcopy(model.state_dict()))

    consider(0)
    # on a terminal (and with a log), a bar over the epochs with ETA; the log lines print above it
    with Progress(f"[{tag}]", epochs, unit="epochs", quiet=log is None, lines=False, leave=False) as bar:
        for epoch in range(epochs):
            if temperature is not None and isinstance(model, PQNet):
                model.set_temperature(temperature(epoch))
            if before_epoch is not None:
                before_epoch(epoch)
            model.train()
            total = 0.0
            for idx in _batches(x_tr.shape[0], batch_size, gen):
                opt.zero_grad()
                if before_batch is not None:
                    before_batch()
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
            if log is not None and ((epoch + 1) % log_every == 0 or epoch == epochs - 1):
                t = f" T={temperature(epoch):.3f}" if temperature is not None else ""
                msg = (f"[{tag}] epoch {epoch + 1:3d}/{epochs} loss {losses[-1]:.4f} "
                       f"train {accuracy(model, x_tr, y_tr):.4f} {'val' if select else 'test'} "
                       f"{accuracy(model, x_te, y_te):.4f}{t}")
                with bar.suspend():
                    log(msg)
            consider(epoch + 1)
            bar.update(1, f"loss {losses[-1]:.4f}")
    if best is not None:
        model.load_state_dict(best[2])
        if info is not None:
            info.update(selected_epoch=best[1], selected_score=best[0])
        if log is not None:
            log(f"[{tag}] selected epoch {best[1]}/{epochs} (score {tuple(round(v, 4) for v in best[0])})")
    model.eval()
    return losses


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
    converted earlier layers.
    """
    pq = build(arch)
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
                pq(x_calib)
        except _Captured:
            pass
        finally:
            handle.remove()
        layer_seed = seed + 1000 * top[id(mod)] if id(mod) in top else seed + 1000 * len(pq.layers) + 100 * j
        mod.init_prototypes(got[0], iters=kmeans_iters, seed=layer_seed, max_columns=max_columns)
    return pq


def split_validation(data: Data, fraction: float, seed: int = 0) -> Data:
    """(x_fit, y_fit, x_val, y_val): a stratified, seeded split of the TRAIN part of ``data`` only (its test
    part is ignored), ``fraction`` of it held out for validation / model selection."""
    from sklearn.model_selection import train_test_split

    x_tr, y_tr = data[0], data[1]
    idx = torch.arange(x_tr.shape[0]).numpy()
    fit_idx, val_idx = train_test_split(idx, test_size=fraction, random_state=seed, stratify=y_tr.numpy())
    fi, vi = torch.from_numpy(fit_idx), torch.from_numpy(val_idx)
    return x_tr[fi], y_tr[fi], x_tr[vi], y_tr[vi]


@torch.no_grad()
def hard_score(model: nn.Module, x: Tensor, y: Tensor) -> tuple[float, float]:
    """(accuracy, -cross-entropy) of the hard (eval-mode) model: the selection score."""
    logits = model(x)
    return (logits.argmax(-1) == y).float().mean().item(), -nn.functional.cross_entropy(logits, y).item()


def integer_score(inet: IntegerNet, x: Tensor, y: Tensor) -> tuple[float, float]:
    """(accuracy, -cross-entropy of the dequantized logits) of an exported integer model."""
    logits = inet.dequantized(x)
    return inet.accuracy(x, y), -nn.functional.cross_entropy(logits, y).item()


def choose_calib(model: PQNet, arch: dict[str, Any], calib: Tensor, x_val: Tensor, y_val: Tensor, bits: int,
                 choices: tuple[tuple[str, str], ...] = CALIB_CHOICES) -> tuple[str, str]:
    """The (act_calib, lut_calib) of ``choices`` whose exported integer model scores best on the validation
    inputs (the first among equals)."""
    best: tuple[tuple[float, float], tuple[str, str]] | None = None
    for ac, lc in choices:
        sc = integer_score(export_integer(model, arch, calib, bits, act_calib=ac, lut_calib=lc), x_val, y_val)
        if best is None or sc > best[0]:
            best = (sc, (ac, lc))
    assert best is not None
    return best[1]


def kmeans_inputs(data: Data, cfg: TrainConfig) -> Tensor:
    """The inputs k-means sees in :func:`convert_to_pq`: the training inputs less the validation part."""
    return split_validation(data, cfg.val_fraction, cfg.seed)[0] if cfg.val_fraction > 0 else data[0]


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
                log: Log | None = print) -> PQNet:
    """Train a float network (``arch`` must have no PQ layer) with the pipeline's settings.

    With ``cfg.val_fraction`` > 0 it trains on the fit part of the training split only (the validation part
    stays unseen by every model of the pipeline) and keeps the epoch that scores best on validation."""
    torch.manual_seed(cfg.seed)
    fmodel = build(arch)
    select = None
    if cfg.val_fraction > 0:
        data = split_validation(data, cfg.val_fraction, cfg.seed)
        x_val, y_val = data[2], data[3]

        def select() -> tuple[float, ...]:
            return hard_score(fmodel, x_val, y_val)

    fit(fmodel, list(fmodel.parameters()), data, cfg.float_epochs, cfg.float_lr, cfg.batch_size,
        cfg.weight_decay, cfg.seed, log=log, tag="float", select=select)
    return fmodel


def finetune(pq: PQNet, data: tuple[Tensor, Tensor, Tensor, Tensor], cfg: TrainConfig,
             teacher: nn.Module | None = None, log: Log | None = print) -> list[float]:
    """Fine-tune a converted PQ network with ``cfg.method`` for ``cfg.pq_epochs``; returns the losses."""
    if cfg.method not in METHODS:
        raise ValueError(f"unknown method {cfg.method!r}; expected one of {METHODS}")
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
    if cfg.method == "lutnn":  # one learned temperature per layer (log-parametrised), starting at t_start
        layers = pq.pq_layers()
        log_t = [nn.Parameter(torch.tensor(math.log(cfg.t_start))) for _ in layers]
        params = params + log_t
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

    losses = fit(pq, params, data, n, cfg.pq_lr, cfg.batch_size, cfg.weight_decay, cfg.seed + 1,
                 temperature=temperature, log=log, tag=f"pq-{cfg.method}", teacher=teacher, distill=cfg.distill,
                 distill_t=cfg.distill_t, before_batch=before_batch, select=select)
    if cfg.method == "lutnn":
        if log is not None:
            log(f"[pq-lutnn] learned temperatures {[round(float(lt.exp()), 4) for lt in log_t]}")
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
    return choose_calib(model, arch, data[0][: cfg.n_calib], x_val, y_val, bits)


def train_qat(pq: PQNet, arch: dict[str, Any], data: Data, cfg: TrainConfig,
              teacher: nn.Module | None = None, log: Log | None = print) -> QatResult:
    """Quantization-aware fine-tuning at ``cfg.qat_bits`` (activations = prototypes = table width).

    Starts from the post-training-quantized model: the calibration (:func:`resolve_calib`) is chosen first on
    the validation part of the training split. Straight-through hard assignment at temperature ``t_end``;
    the integer parameters are re-calibrated with ``pqcompile.graph`` (that calibration) before every epoch.
    With ``cfg.val_fraction`` > 0 training uses the rest of the training split and the epoch kept (0 = the
    PTQ model itself) is the one whose *exported integer model* scores best on validation (accuracy, then
    cross-entropy), so QAT never makes the validation accuracy worse than PTQ. The model is left without
    fake-quant (plain float PQ): export it with :func:`pqtrain.integer.export_integer` and the returned
    calibration.
    """
    bits = cfg.qat_bits
    calib = data[0][: cfg.n_calib]
    act_calib, lut_calib = resolve_calib(pq, arch, data, cfg, bits)
    pq.set_temperature(cfg.t_end)
    pq.set_assign_mode("ste")
    select = None
    info: dict[str, Any] = {}
    if cfg.val_fraction > 0:
        data = split_validation(data, cfg.val_fraction, cfg.seed)
        x_val, y_val = data[2], data[3]

        def select() -> tuple[float, ...]:
            return integer_score(export_integer(pq, arch, calib, bits, act_calib=act_calib, lut_calib=lut_calib),
                              x_val, y_val)

    try:
        losses = fit(pq, list(pq.parameters()), data, cfg.qat_epochs, cfg.qat_lr, cfg.batch_size, 0.0,
                     cfg.seed + 2, log=log, tag=f"qat-{bits}b", teacher=teacher, distill=cfg.distill,
                     distill_t=cfg.distill_t,
                     before_epoch=lambda e: calibrate_qat(pq, arch, calib, bits, act_calib=act_calib,
                                                          lut_calib=lut_calib),
                     log_every=5, select=select, info=info)
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
                     act_calib: str = "max", lut_calib: str = "max") -> float:
    """Test accuracy of the exported integer pipeline (act = proto = table width ``bits``)."""
    x_tr, _, x_te, y_te = data
    return export_integer(model, arch, x_tr[:n_calib], bits, act_calib=act_calib,
                          lut_calib=lut_calib).accuracy(x_te, y_te)


def train_pipeline(
    arch: dict[str, Any],
    data: tuple[Tensor, Tensor, Tensor, Tensor],
    cfg: TrainConfig | None = None,
    log: Log | None = print,
    float_model: PQNet | None = None,
) -> tuple[PQNet, dict[str, Any]]:
    """Float training (unless ``float_model`` is given), PQ conversion, fine-tuning and, with ``qat_bits``,
    quantization-aware training. ``data`` inputs may be flat; they are reshaped to ``arch['input_shape']``.
    Returns (PQ model in eval mode, meta dict)."""
    cfg = cfg or TrainConfig()
    validate_arch(arch)
    if cfg.method not in METHODS:
        raise ValueError(f"unknown method {cfg.method!r}; expected one of {METHODS}")
    if cfg.qat_bits and not 2 <= cfg.qat_bits <= 8:
        raise ValueError(f"qat_bits must be 0 (off) or 2..8, got {cfg.qat_bits}")
    data = reshape_inputs(data, arch)
    x_tr, y_tr, x_te, y_te = data
    t0 = time.perf_counter()
    fmodel = float_model if float_model is not None else train_float(float_arch(arch), data, cfg, log)
    float_acc = accuracy(fmodel, x_te, y_te)

    torch.manual_seed(cfg.seed)
    pq = convert_to_pq(fmodel, arch, kmeans_inputs(data, cfg), cfg.kmeans_iters, cfg.seed)
    kmeans_acc = accuracy(pq, x_te, y_te)
    if log is not None:
        log(f"[convert] float test {float_acc:.4f} -> PQ k-means test {kmeans_acc:.4f}")
    finetune(pq, data, cfg, teacher=fmodel, log=log)
    meta_int: dict[str, Any] = {}
    if cfg.qat_bits:
        pre = integer_accuracy(pq, arch, data, cfg.qat_bits, cfg.n_calib)  # PTQ, pqcompile's max calibration
        qr = train_qat(pq, arch, data, cfg, teacher=fmodel, log=log)
        post = integer_accuracy(pq, arch, data, cfg.qat_bits, cfg.n_calib, qr.act_calib, qr.lut_calib)
        meta_int = {"qat_bits": cfg.qat_bits, "int_test_acc_before_qat": pre, "int_test_acc": post,
                    "act_calib": qr.act_calib, "lut_calib": qr.lut_calib, "qat_selected_epoch": qr.selected_epoch,
                    "compile_hint": f"pqcompile --act-bits {cfg.qat_bits} --lut-bits {cfg.qat_bits}"
                                    + ("" if (qr.act_calib, qr.lut_calib) == ("max", "max") else
                                       f" --act-calib {qr.act_calib} --lut-calib {qr.lut_calib}")}
        if log is not None:
            log(f"[qat] integer pipeline ({cfg.qat_bits} bits) test {post:.4f} "
                f"(calibration {qr.act_calib}/{qr.lut_calib}; PTQ max/max before QAT: {pre:.4f})")
    pq.eval()
    if log is not None:
        log(f"[done] {time.perf_counter() - t0:.1f} s")
    meta = {
        "dataset": cfg.dataset,
        "seed": cfg.seed,
        "method": cfg.method,
        "float_test_acc": float_acc,
        "float_train_acc": accuracy(fmodel, x_tr, y_tr),
        "pq_kmeans_test_acc": kmeans_acc,
        "pq_test_acc": accuracy(pq, x_te, y_te),
        "pq_train_acc": accuracy(pq, x_tr, y_tr),
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
