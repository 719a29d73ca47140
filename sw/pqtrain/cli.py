"""``pqtrain``: train a PQ model on sklearn digits (float -> PQ -> fine-tune -> optional QAT) and write a
pqa-model file; convert a saved float model to PQ; evaluate a model (float PQ and integer pipeline)."""

from __future__ import annotations

import argparse
import json
import sys

import torch

from . import zoo
from .data import load_digits_split
from .integer import export_integer
from .model import ModelFormatError, build, load, save
from .train import (
    METHODS,
    TrainConfig,
    accuracy,
    convert_to_pq,
    mlp_arch,
    pq_arch_from_float,
    reshape_inputs,
    train_pipeline,
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pqtrain", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train float MLP -> PQ -> fine-tune, save .pt")
    t.add_argument("-o", "--out", required=True, help="output model file (.pt)")
    t.add_argument("--model", choices=list(zoo.ZOO), default=None,
                   help="a zoo architecture (digits_mlp, digits_cnn train on digits); default: an MLP from --hidden")
    t.add_argument("--hidden", type=int, nargs="*", default=[64], help="hidden layer widths")
    t.add_argument("--k", type=int, default=16)
    t.add_argument("--v", type=int, default=4, help="sub-vector length (MLP only; zoo models fix their own)")
    t.add_argument("--metric", choices=["l2", "l1"], default="l2")
    t.add_argument("--method", choices=METHODS, default="ste")
    t.add_argument("--name", default="digits_mlp")
    d = TrainConfig()
    t.add_argument("--seed", type=int, default=d.seed)
    t.add_argument("--float-epochs", type=int, default=d.float_epochs)
    t.add_argument("--pq-epochs", type=int, default=d.pq_epochs)
    t.add_argument("--float-lr", type=float, default=d.float_lr)
    t.add_argument("--pq-lr", type=float, default=d.pq_lr)
    t.add_argument("--t-start", type=float, default=d.t_start)
    t.add_argument("--t-end", type=float, default=d.t_end)
    t.add_argument("--weight-decay", type=float, default=d.weight_decay)
    t.add_argument("--distill", type=float, default=d.distill, help="weight of distillation from the float model")
    t.add_argument("--qat-bits", type=int, default=0, help="quantization-aware training at this width (2..8)")
    t.add_argument("--qat-epochs", type=int, default=d.qat_epochs)
    t.add_argument("--float-only", action="store_true", help="train and save the float model only")
    c = sub.add_parser("convert", help="float model file -> PQ model file (k-means on real activations)")
    c.add_argument("model")
    c.add_argument("-o", "--out", required=True)
    c.add_argument("--k", type=int, default=16)
    c.add_argument("--v", type=int, default=4)
    c.add_argument("--metric", choices=["l2", "l1"], default="l2")
    c.add_argument("--layers", nargs="*", default=None, help="paths of the layers to convert (default: all)")
    c.add_argument("--seed", type=int, default=0)
    i = sub.add_parser("init", help="save an untrained zoo model (e.g. resnet20 for compiler and RTL runs)")
    i.add_argument("--model", choices=list(zoo.ZOO), required=True)
    i.add_argument("-o", "--out", required=True, help="output model file (.pt)")
    i.add_argument("--seed", type=int, default=0)
    i.add_argument("--bn-batches", type=int, default=4,
                   help="batches of 16 random inputs (uniform [0, 1)) that set the batch-norm running statistics, "
                        "so that folding them is not the identity (0: PyTorch's initial statistics)")
    e = sub.add_parser("eval", help="test accuracy of a saved model on the fixed digits split")
    e.add_argument("model")
    e.add_argument("--seed", type=int, default=0, help="split seed")
    e.add_argument("--bits", type=int, nargs="*", default=[], help="also the integer pipeline at these widths")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    if args.cmd == "init":
        return _init(args)
    if args.cmd in ("eval", "convert"):
        try:
            model, arch, meta = load(args.model)
        except ModelFormatError as exc:
            print(f"pqtrain: {exc}", file=sys.stderr)
            return 1
        data = reshape_inputs(load_digits_split(seed=args.seed), arch)
        if args.cmd == "convert":
            sel = None if args.layers is None else (lambda path, _layer: path in args.layers)
            try:
                parch = pq_arch_from_float(arch, args.k, args.v, args.metric, select=sel)
            except ModelFormatError as exc:
                print(f"pqtrain: {exc}", file=sys.stderr)
                return 1
            pq = convert_to_pq(model, parch, data[0], seed=args.seed)
            acc = accuracy(pq, data[2], data[3])
            save(pq, parch, args.out, {**meta, "converted_from": str(args.model), "method": "kmeans",
                                       "pq_test_acc": acc})
            print(f"wrote {args.out}: float {accuracy(model, data[2], data[3]):.4f} -> PQ k-means {acc:.4f}")
            return 0
        out = {"name": arch["name"], "test_acc": accuracy(model, data[2], data[3])}
        for b in args.bits:
            try:
                out[f"int{b}_test_acc"] = export_integer(model, arch, data[0][:256], b).accuracy(data[2], data[3])
            except ValueError as exc:
                print(f"pqtrain: {exc}", file=sys.stderr)
                return 1
        print(json.dumps({**out, "meta": meta}, indent=1))
        return 0
    cfg = TrainConfig(seed=args.seed, float_epochs=args.float_epochs, pq_epochs=args.pq_epochs,
                      float_lr=args.float_lr, pq_lr=args.pq_lr, t_start=args.t_start, t_end=args.t_end,
                      weight_decay=args.weight_decay, distill=args.distill, method=args.method,
                      qat_bits=args.qat_bits, qat_epochs=args.qat_epochs)
    if args.model is not None:
        arch = zoo.arch(args.model, k=args.k, metric=args.metric)
    else:
        arch = mlp_arch(args.hidden, k=args.k, v=args.v, metric=args.metric, name=args.name)
    if arch["input_shape"] not in ([64], [1, 8, 8]):
        print(f"pqtrain: {arch['name']} does not take digits; train it from Python with its data loader",
              file=sys.stderr)
        return 1
    data = load_digits_split(seed=args.seed)
    if args.float_only:
        from .train import float_arch, train_float

        farch = float_arch(arch)
        rdata = reshape_inputs(data, farch)
        fmodel = train_float(farch, rdata, cfg)
        acc = accuracy(fmodel, rdata[2], rdata[3])
        save(fmodel, farch, args.out, {"dataset": cfg.dataset, "seed": cfg.seed, "float_test_acc": acc})
        print(f"wrote {args.out}: float {acc:.4f}")
        return 0
    model, meta = train_pipeline(arch, data, cfg)
    save(model, arch, args.out, meta)
    extra = f" integer({cfg.qat_bits}b) {meta['int_test_acc']:.4f}" if cfg.qat_bits else ""
    print(f"wrote {args.out}: float {meta['float_test_acc']:.4f} kmeans {meta['pq_kmeans_test_acc']:.4f} "
          f"pq {meta['pq_test_acc']:.4f}{extra}")
    return 0


def _init(args: argparse.Namespace) -> int:
    """An untrained zoo model: seeded weights and prototypes, batch-norm statistics from random inputs."""
    torch.manual_seed(args.seed)
    arch = zoo.arch(args.model)
    model = build(arch)
    gen = torch.Generator().manual_seed(args.seed)
    model.train()
    with torch.no_grad():
        for _ in range(max(0, args.bn_batches)):
            model(torch.rand(16, *arch["input_shape"], generator=gen))
    model.eval()
    save(model, arch, args.out, {"untrained": True, "seed": args.seed, "bn_batches": args.bn_batches})
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.out}: untrained {arch['name']} ({n} parameters, input {arch['input_shape']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
