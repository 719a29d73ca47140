"""Train the digits PQ CNN of the zoo on sklearn digits and write ``models/digits_cnn.pt``.

1x8x8 -> PQ conv 3x3 (v=3) 16ch -> ReLU -> PQ conv 3x3/2 (v=9) 32ch -> ReLU -> flatten -> PQ linear 512 -> 10
(v=16), K=32, l2: every layer fits the "default" hardware config (K <= 64, v <= 16, C <= 64, M <= 256).
Float training, k-means conversion and fine-tuning with validation-based model selection (15% of the training
split held out; the test split is only reported). Seeded and CPU-only.

On the accelerator: ``make sim MODEL=digits_cnn`` (``pqcompile`` + the RTL); the integer pipeline alone:
``pqtrain eval models/digits_cnn.pt --bits 8 4`` (``pqtrain.integer.export_integer``, the compiler's graph).

Usage: ``python models/train_digits_cnn.py [--out PATH] [--seed N] [--method M]``
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from pqmodel.data import load_digits_split
from pqmodel.model import load, save
from pqtrain import zoo
from pqtrain.integer import export_integer
from pqtrain.train import METHODS, TrainConfig, accuracy, reshape_inputs, train_pipeline

HERE = Path(__file__).resolve().parent
CONFIG = TrainConfig(float_epochs=40, pq_epochs=20)  # a conv epoch costs ~10x an MLP one


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, default=HERE / "digits_cnn.pt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--method", default="ste", choices=METHODS)
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # 1 thread: 2 threads on a shared 2-core machine are ~10x slower
    arch = zoo.digits_cnn()
    data = load_digits_split(seed=args.seed)
    t0 = time.perf_counter()
    cfg = TrainConfig(**{**CONFIG.__dict__, "seed": args.seed, "method": args.method})
    model, meta = train_pipeline(arch, data, cfg)
    x_tr, _, x_te, y_te = reshape_inputs(data, arch)
    for bits in (8, 4):
        meta[f"int{bits}_test_acc"] = export_integer(model, arch, x_tr[: cfg.n_calib], bits).accuracy(x_te, y_te)
    seconds = time.perf_counter() - t0
    save(model, arch, args.out, meta)
    reloaded, _, _ = load(args.out)
    acc = accuracy(reloaded, x_te, y_te)
    assert acc == meta["pq_test_acc"], "reloaded model disagrees with the trained one"
    print(f"wrote {args.out}: float {meta['float_test_acc']:.4f}  PQ k-means {meta['pq_kmeans_test_acc']:.4f}  "
          f"PQ fine-tuned {meta['pq_test_acc']:.4f}  integer 8 bits {meta['int8_test_acc']:.4f}  "
          f"4 bits {meta['int4_test_acc']:.4f}  ({seconds:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
