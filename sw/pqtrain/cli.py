"""``pqtrain``: train a PQ model (float -> PQ -> fine-tune -> optional QAT) on sklearn digits or CIFAR-10 and
write a pqa-model file; convert a saved float model to PQ; evaluate a model (float PQ and integer pipeline).

``pqtrain train`` runs on ``--device auto|cpu|cuda``, in one process or several under ``torchrun``
(DistributedDataParallel; rank 0 writes), with a checkpoint after every epoch (``--checkpoint-dir``,
``--resume``) and a per-epoch CSV log (``--log-csv``, default ``<checkpoint-dir>/log.csv``): docs/training.md.

Exit status: 0 on success (also when ``--stop-after`` stopped the run with its checkpoint written); 2 when the
input is refused, with one line ``pqtrain: error: ...`` naming the file and the field (a missing, unreadable or
refused model file, data set or checkpoint, an output that is a directory, lies in a missing directory or is an
existing file that is not a PQA model file, a model the data cannot feed, a model the integer pipeline cannot
run, a device that is not there, a bad option); 1 for an internal error (one line; ``PQA_TRACEBACK=1`` prints
the traceback). A model file is written atomically and only over a missing file or a PQA model file.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import asdict, fields, replace
from typing import Any

import torch

from pqcompile.backend import CompileError
from pqcompile.clitools import EXIT_FAILED, EXIT_OK, ArgumentParser, fail, printable
from pqmodel.data import DataError, load_cifar10, load_digits_split
from pqmodel.model import ModelFormatError, build, check_output, iter_layers, load, save, validate_arch

from . import zoo
from .integer import export_integer
from .recipes import DEFAULT_WORKERS, RECIPES
from .run import (
    DEVICES,
    Checkpoints,
    Run,
    RunError,
    Stopped,
    check_same_weights,
    init_distributed,
    shutdown_distributed,
)
from .train import (
    METHODS,
    OPTIMIZERS,
    SCHEDULES,
    TrainConfig,
    accuracy,
    convert_to_pq,
    mlp_arch,
    pq_arch_from_float,
    reshape_inputs,
    train_pipeline,
)

PROG = "pqtrain"
DIGITS_SHAPES = ([64], [1, 8, 8])  # the input shapes the 8x8 digits feed (flat or one channel)
CIFAR_SHAPE = [3, 32, 32]
MAX_SEED = (1 << 32) - 1  # scikit-learn's split takes a 32-bit seed
Data = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
DATASETS = ("digits", "cifar10")



class UsageError(ValueError):
    """A bad option or an input this command cannot use (exit status 2)."""


def _int_arg(lo: int, hi: int | None = None) -> Callable[[str], int]:
    """argparse type: an integer in [lo, hi] (one-line usage error otherwise)."""

    def parse(text: str) -> int:
        try:
            val = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if val < lo or (hi is not None and val > hi):
            raise argparse.ArgumentTypeError(f"{val} is out of range ({lo}..{hi})" if hi is not None
                                             else f"{val} must be at least {lo}")
        return val

    return parse


def _float_arg(positive: bool = False) -> Callable[[str], float]:
    """argparse type: a finite float (non-negative, or positive with ``positive``)."""

    def parse(text: str) -> float:
        try:
            val = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(val) or val < 0 or (positive and val == 0):
            raise argparse.ArgumentTypeError(f"{text} must be a finite {'positive' if positive else 'non-negative'} "
                                             "number")
        return val

    return parse


def _fraction(text: str) -> float:
    val = _float_arg()(text)
    if val >= 1:
        raise argparse.ArgumentTypeError(f"{text} must be below 1")
    return val


def _qat_bits(text: str) -> int:
    val = _int_arg(0, 8)(text)
    if val == 1:
        raise argparse.ArgumentTypeError("1 is out of range (0: off, or 2..8)")
    return val


def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=ArgumentParser)
    pos, nonneg, seed = _int_arg(1), _int_arg(0), _int_arg(0, MAX_SEED)
    t = sub.add_parser("train", help="train float MLP -> PQ -> fine-tune, save .pt")
    t.add_argument("-o", "--out", required=True, help="output model file (.pt)")
    t.add_argument("--model", choices=list(zoo.ZOO), default=None,
                   help="a zoo architecture (digits_mlp, digits_cnn train on digits); default: an MLP from --hidden")
    t.add_argument("--hidden", type=pos, nargs="*", default=[64], help="hidden layer widths")
    t.add_argument("--k", type=pos, default=16)
    t.add_argument("--v", type=pos, default=4, help="sub-vector length (MLP only; zoo models fix their own)")
    t.add_argument("--metric", choices=["l2", "l1"], default="l2")
    t.add_argument("--method", choices=METHODS, default="ste")
    t.add_argument("--name", default="digits_mlp")
    t.add_argument("--data", choices=DATASETS, default="digits",
                   help="digits (sklearn, built in) or cifar10 (from --data-dir); sets the recipe's defaults")
    t.add_argument("--data-dir", default=None, help="directory of the data set (cifar10: the binary or python "
                   "version, cifar-10-batches-bin/ or cifar-10-batches-py/ or their files)")
    # None: the recipe's value (RECIPES[--data])
    t.add_argument("--seed", type=seed, default=None)
    t.add_argument("--float-epochs", type=nonneg, default=None)
    t.add_argument("--pq-epochs", type=nonneg, default=None)
    t.add_argument("--float-lr", type=_float_arg(), default=None)
    t.add_argument("--pq-lr", type=_float_arg(), default=None)
    t.add_argument("--t-start", type=_float_arg(positive=True), default=None)
    t.add_argument("--t-end", type=_float_arg(positive=True), default=None)
    t.add_argument("--weight-decay", type=_float_arg(), default=None)
    t.add_argument("--pq-weight-decay", type=_float_arg(), default=None, help="of fine-tuning (default: the recipe's)")
    t.add_argument("--distill", type=_float_arg(), default=None,
                   help="weight of distillation from the float model")
    t.add_argument("--qat-bits", type=_qat_bits, default=None,
                   help="quantization-aware training at this width (2..8; 0: none; default: the recipe's)")
    t.add_argument("--qat-epochs", type=nonneg, default=None)
    t.add_argument("--qat-lr", type=_float_arg(), default=None)
    t.add_argument("--qat-val-images", type=nonneg, default=None,
                   help="QAT's epoch selection scores the integer model on this many validation inputs (0: all)")
    t.add_argument("--batch-size", type=pos, default=None, help="per process")
    t.add_argument("--optimizer", choices=OPTIMIZERS, default=None, help="of the float stage")
    t.add_argument("--momentum", type=_float_arg(), default=None)
    t.add_argument("--schedule", choices=SCHEDULES, default=None)
    t.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="pad-4 random crop + horizontal flip (image data)")
    t.add_argument("--val-fraction", type=_fraction, default=None,
                   help="part of the training split held out for model selection (0: none)")
    t.add_argument("--kmeans-images", type=nonneg, default=None, help="inputs k-means sees (0: all)")
    t.add_argument("--kmeans-iters", type=pos, default=None)
    t.add_argument("--fast-dist", action=argparse.BooleanOptionalAction, default=None,
                   help="L2 distances by matrix product in fine-tuning and QAT (faster; default: the recipe's)")
    t.add_argument("--float-only", action="store_true", help="train and save the float model only")
    t.add_argument("--device", choices=DEVICES, default="auto", help="auto: CUDA when available, else the CPU")
    t.add_argument("--workers", type=nonneg, default=None,
                   help="data-loading worker processes per training process (default: 0 digits, 4 cifar10)")
    t.add_argument("--threads", type=pos, default=None,
                   help="torch CPU threads per process (default: 2, or fewer when fewer are available)")
    t.add_argument("--checkpoint-dir", default=None, help="write DIR/checkpoint.pt after every epoch")
    t.add_argument("--resume", action="store_true",
                   help="continue the run checkpointed in --checkpoint-dir (from the start if there is none)")
    t.add_argument("--log-csv", default=None, help="per-epoch log (default: <checkpoint-dir>/log.csv)")
    t.add_argument("--stop-after", type=pos, default=None,
                   help="stop after this many epochs of this invocation, once checkpointed (--resume continues)")
    c = sub.add_parser("convert", help="float model file -> PQ model file (k-means on real activations)")
    c.add_argument("model")
    c.add_argument("-o", "--out", required=True)
    c.add_argument("--k", type=pos, default=16)
    c.add_argument("--v", type=pos, default=4)
    c.add_argument("--metric", choices=["l2", "l1"], default="l2")
    c.add_argument("--layers", nargs="*", default=None, help="paths of the layers to convert (default: all)")
    c.add_argument("--seed", type=seed, default=0)
    i = sub.add_parser("init", help="save an untrained zoo model (e.g. resnet20 for compiler and RTL runs)")
    i.add_argument("--model", choices=list(zoo.ZOO), required=True)
    i.add_argument("-o", "--out", required=True, help="output model file (.pt)")
    i.add_argument("--seed", type=seed, default=0)
    i.add_argument("--bn-batches", type=nonneg, default=4,
                   help="batches of 16 random inputs (uniform [0, 1)) that set the batch-norm running statistics, "
                        "so that folding them is not the identity (0: PyTorch's initial statistics)")
    e = sub.add_parser("eval", help="test accuracy of a saved model (digits split or CIFAR-10 test set)")
    e.add_argument("model")
    e.add_argument("--data", choices=DATASETS, default="digits")
    e.add_argument("--data-dir", default=None)
    e.add_argument("--device", choices=DEVICES, default="auto")
    e.add_argument("--seed", type=seed, default=0, help="split seed")
    e.add_argument("--bits", type=_int_arg(2, 8), nargs="*", default=[],
                   help="also the integer pipeline at these widths (2..8)")
    e.add_argument("--count", type=pos, default=None, help="the first COUNT test inputs only (default: all)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    threads = getattr(args, "threads", None)
    torch.set_num_threads(threads if threads is not None else min(2, torch.get_num_threads()))
    commands: dict[str, Callable[[argparse.Namespace], int]] = {
        "train": _train, "convert": _convert, "init": _init, "eval": _eval}
    ok = False
    try:
        status = commands[args.cmd](args)
        ok = True
        return status
    except Stopped as exc:
        ok = True
        if os.environ.get("RANK", "0") == "0":
            print(f"{PROG}: {exc}; run the same command with --resume to continue")
        return EXIT_OK
    except (ModelFormatError, UsageError, DataError, CompileError, RunError) as exc:
        return fail(PROG, exc)
    except OSError as exc:  # e.g. no permission to write beside -o, disk full
        where = f"{exc.filename}: " if exc.filename else ""
        return fail(PROG, f"{where}{exc.strerror or exc}")
    except MemoryError:
        return fail(PROG, "out of memory (the model or the data are too large for this machine)")
    except Exception as exc:  # noqa: BLE001  (anything else is ours: an internal error, one line)
        print(f"{PROG}: internal error: {printable(exc, 1000)} (please report it; PQA_TRACEBACK=1 prints the "
              "traceback)", file=sys.stderr)
        if os.environ.get("PQA_TRACEBACK"):
            traceback.print_exc()
        return EXIT_FAILED
    finally:
        shutdown_distributed(wait=ok)


def _digits(arch: dict[str, Any], source: str, seed: int) -> Data:
    """The digits split reshaped to the model's input, or a UsageError naming ``source`` (a file or option)."""
    shape = arch["input_shape"]
    if shape not in DIGITS_SHAPES:
        raise UsageError(f"{source}: input_shape {shape} cannot be fed the 8x8 digits (they give [64] or "
                         "[1, 8, 8]); use --data cifar10 for [3, 32, 32], or this model from Python with its own "
                         "data loader (docs/training.md)")
    return reshape_inputs(load_digits_split(seed=seed), arch)


def _data(name: str, data_dir: str | None, arch: dict[str, Any], source: str, seed: int) -> Data:
    """The data set ``name`` for ``arch`` (a UsageError / DataError naming what is wrong)."""
    if name == "digits":
        if data_dir is not None:
            raise UsageError("--data-dir: the digits come with scikit-learn (give --data cifar10 to read a directory)")
        return _digits(arch, source, seed)
    if data_dir is None:
        raise UsageError(f"--data {name} needs --data-dir DIR (the directory holding the data set)")
    if arch["input_shape"] != CIFAR_SHAPE:
        raise UsageError(f"{source}: input_shape {arch['input_shape']} cannot be fed CIFAR-10 images {CIFAR_SHAPE} "
                         "(use --model resnet20)")
    return load_cifar10(data_dir)


def _save(model: torch.nn.Module, arch: dict[str, Any], out: str, meta: dict[str, Any]) -> None:
    try:
        save(model, arch, out, meta)
    except OSError as exc:  # the temporary file's name would say less than -o's
        raise UsageError(f"{out}: cannot write: {exc.strerror or exc}") from None


def _config(args: argparse.Namespace) -> TrainConfig:
    """The recipe of ``--data`` with every option given on the command line put in."""
    cfg = RECIPES[args.data]
    over = {f.name: getattr(args, f.name) for f in fields(TrainConfig)
            if hasattr(args, f.name) and getattr(args, f.name) is not None}
    return replace(cfg, **over)


def _run(args: argparse.Namespace) -> Run:
    """Device, processes (torchrun), checkpoints and CSV log of ``pqtrain train``."""
    dist, dev = init_distributed(args.device)
    ck = None
    if args.checkpoint_dir is not None or args.log_csv is not None or args.resume:
        ck = Checkpoints(args.checkpoint_dir, dist, resume=args.resume, csv_path=args.log_csv)
        if args.resume and ck.loaded is None and dist.main:
            print(f"{PROG}: no checkpoint in {printable(args.checkpoint_dir)}: starting from the beginning")
    workers = args.workers if args.workers is not None else DEFAULT_WORKERS[args.data]
    return Run(dev, dist, ck, workers, args.stop_after)


def _train(args: argparse.Namespace) -> int:
    cfg = _config(args)
    if args.model is not None:
        arch = zoo.arch(args.model, k=args.k, metric=args.metric)
        source = f"--model {args.model}"
        cfg = replace(cfg, host_layers=list(zoo.HOST_LAYERS.get(args.model, [])))
    else:
        arch = mlp_arch(args.hidden, k=args.k, v=args.v, metric=args.metric, name=args.name)
        source = "--hidden/--k/--v/--name"
    try:
        validate_arch(arch)
    except ModelFormatError as exc:
        raise UsageError(f"{source}: the architecture is refused: {exc}") from None
    if cfg.augment and len(arch["input_shape"]) != 3:
        raise UsageError(f"--augment: crops and flips images; {source} takes inputs of shape {arch['input_shape']}")
    check_output(args.out)  # before training, not after it
    data = _data(args.data, args.data_dir, arch, source, cfg.seed)
    run = _run(args)
    main = run.dist.main
    say = print if main else (lambda _text: None)
    if run.dist.active:
        say(f"[ddp] {run.dist.world} processes ({'NCCL' if run.device.type == 'cuda' else 'gloo'}), "
            f"batch {cfg.batch_size} per process")
    where = {"device": str(run.device), "processes": run.dist.world}
    if args.float_only:
        from .train import float_arch, train_float

        farch = float_arch(arch)
        rdata = reshape_inputs(data, farch)
        if run.checkpoints is not None:
            run.checkpoints.bind({"config": asdict(cfg), "arch": farch, "processes": run.dist.world,
                                  "float_only": True})
        fmodel = train_float(farch, rdata, cfg, log=print if main else None, run=run)
        digest = check_same_weights(fmodel, run.dist)
        if not main:
            return EXIT_OK
        acc = accuracy(fmodel, rdata[2], rdata[3])
        _save(fmodel, farch, args.out, {"dataset": cfg.dataset, "seed": cfg.seed, "float_test_acc": acc, **where})
        say(f"wrote {printable(args.out)}: float {acc:.4f}" + _ranks_note(run, digest))
        return EXIT_OK
    model, meta = train_pipeline(arch, data, cfg, log=print if main else None, run=run)
    digest = check_same_weights(model, run.dist)
    if not main:
        return EXIT_OK
    _save(model, arch, args.out, {**meta, **where})
    extra = f" integer({cfg.qat_bits}b) {meta['int_test_acc']:.4f}" if cfg.qat_bits else ""
    say(f"wrote {printable(args.out)}: float {meta['float_test_acc']:.4f} kmeans {meta['pq_kmeans_test_acc']:.4f} "
        f"pq {meta['pq_test_acc']:.4f}{extra}" + _ranks_note(run, digest))
    return EXIT_OK


def _ranks_note(run: Run, digest: str) -> str:
    return f" (the {run.dist.world} processes hold identical weights, sha256 {digest[:16]})" if run.dist.active else ""


def _convert(args: argparse.Namespace) -> int:
    check_output(args.out)
    model, arch, meta = load(args.model)
    data = _digits(arch, args.model, args.seed)
    float_paths = [path for path, layer in iter_layers(arch) if layer["type"] in ("linear", "conv2d")]
    chosen = float_paths if args.layers is None else args.layers
    unknown = [p for p in chosen if p not in float_paths]
    if unknown:
        raise UsageError(f"--layers {unknown[0]}: not a float linear or conv2d layer of {args.model} (those are: "
                         f"{', '.join(float_paths) or 'none'})")
    if not chosen:
        raise UsageError(f"{args.model}: no float linear or conv2d layer to convert (is it a PQ model already?)")
    sel = None if args.layers is None else (lambda path, _layer: path in chosen)
    try:
        parch = pq_arch_from_float(arch, args.k, args.v, args.metric, select=sel)
    except ModelFormatError as exc:
        raise UsageError(f"--k/--v: the converted architecture is refused: {exc}") from None
    pq = convert_to_pq(model, parch, data[0], seed=args.seed)
    acc = accuracy(pq, data[2], data[3])
    _save(pq, parch, args.out, {**meta, "converted_from": str(args.model), "method": "kmeans", "pq_test_acc": acc})
    print(f"wrote {printable(args.out)}: float {accuracy(model, data[2], data[3]):.4f} -> PQ k-means {acc:.4f}")
    return EXIT_OK


def _eval(args: argparse.Namespace) -> int:
    from .run import resolve_device

    model, arch, meta = load(args.model)
    data = _data(args.data, args.data_dir, arch, args.model, args.seed)
    if args.count is not None:
        data = (data[0], data[1], data[2][: args.count], data[3][: args.count])
    model.to(resolve_device(args.device))
    out = {"name": arch["name"], "test_inputs": int(data[2].shape[0]), "test_acc": accuracy(model, data[2], data[3])}
    hosts = zoo.HOST_LAYERS.get(str(arch.get("name")), [])
    for b in args.bits:
        out[f"int{b}_test_acc"] = export_integer(model, arch, data[0][:256], b, host_layers=hosts).accuracy(
            data[2], data[3])
    print(json.dumps({**out, "meta": meta}, indent=1))
    return EXIT_OK


def _init(args: argparse.Namespace) -> int:
    """An untrained zoo model: seeded weights and prototypes, batch-norm statistics from random inputs."""
    check_output(args.out)
    torch.manual_seed(args.seed)
    arch = zoo.arch(args.model)
    model = build(arch)
    gen = torch.Generator().manual_seed(args.seed)
    model.train()
    with torch.no_grad():
        for _ in range(args.bn_batches):
            model(torch.rand(16, *arch["input_shape"], generator=gen))
    model.eval()
    _save(model, arch, args.out, {"untrained": True, "seed": args.seed, "bn_batches": args.bn_batches})
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {printable(args.out)}: untrained {arch['name']} ({n} parameters, input {arch['input_shape']})")
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
