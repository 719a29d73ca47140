"""``pqtrain``: train a PQ MLP on sklearn digits and write a pqa-model file; or evaluate one."""

from __future__ import annotations

import argparse
import json
import sys

import torch

from .data import load_digits_split
from .model import ModelFormatError, load, save
from .train import METHODS, TrainConfig, accuracy, mlp_arch, train_pipeline


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pqtrain", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train float MLP -> PQ -> fine-tune, save .pt")
    t.add_argument("-o", "--out", required=True, help="output model file (.pt)")
    t.add_argument("--hidden", type=int, nargs="*", default=[64], help="hidden layer widths")
    t.add_argument("--k", type=int, default=16)
    t.add_argument("--v", type=int, default=4)
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
    e = sub.add_parser("eval", help="test accuracy of a saved model on the fixed digits split")
    e.add_argument("model")
    e.add_argument("--seed", type=int, default=0, help="split seed")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    if args.cmd == "eval":
        try:
            model, arch, meta = load(args.model)
        except ModelFormatError as exc:
            print(f"pqtrain: {exc}", file=sys.stderr)
            return 1
        _, _, x_te, y_te = load_digits_split(seed=args.seed)
        print(json.dumps({"name": arch["name"], "test_acc": accuracy(model, x_te, y_te), "meta": meta}, indent=1))
        return 0
    cfg = TrainConfig(seed=args.seed, float_epochs=args.float_epochs, pq_epochs=args.pq_epochs,
                      float_lr=args.float_lr, pq_lr=args.pq_lr, t_start=args.t_start, t_end=args.t_end,
                      weight_decay=args.weight_decay, distill=args.distill, method=args.method)
    arch = mlp_arch(args.hidden, k=args.k, v=args.v, metric=args.metric, name=args.name)
    data = load_digits_split(seed=args.seed)
    model, meta = train_pipeline(arch, data, cfg)
    save(model, arch, args.out, meta)
    print(f"wrote {args.out}: float {meta['float_test_acc']:.4f} kmeans {meta['pq_kmeans_test_acc']:.4f} "
          f"pq {meta['pq_test_acc']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
