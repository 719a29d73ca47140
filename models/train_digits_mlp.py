"""Train the reference PQ MLP on sklearn digits and write ``models/digits_mlp.pt``.

64 -> PQLinear(k=16, v=4, l2) -> 64 -> ReLU -> PQLinear(k=16, v=4, l2) -> 10. Every layer fits the "small"
hardware config (K <= 16, v <= 8, C <= 32, M <= 64). Seeded and CPU-only; about 10 s on 2 cores.

Usage: ``python models/train_digits_mlp.py [--out PATH] [--seed N]``
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from pqmodel.data import load_digits_split
from pqmodel.model import load, save
from pqtrain.train import TrainConfig, accuracy, mlp_arch, train_pipeline

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, default=HERE / "digits_mlp.pt")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    arch = mlp_arch([64], k=16, v=4, metric="l2", name="digits_mlp")
    data = load_digits_split(seed=args.seed)
    t0 = time.perf_counter()
    # the settings the shipped model was trained with (before validation-based selection became the default:
    # the retrained MLP lost 8-bit accuracy, see docs/training.md), so that this script reproduces it
    cfg = TrainConfig(seed=args.seed, method="ste", val_fraction=0.0, pq_lr=5e-4)
    model, meta = train_pipeline(arch, data, cfg)
    seconds = time.perf_counter() - t0
    save(model, arch, args.out, meta)
    reloaded, _, _ = load(args.out)
    acc = accuracy(reloaded, data[2], data[3])
    assert acc == meta["pq_test_acc"], "reloaded model disagrees with the trained one"
    print(f"wrote {args.out}: float {meta['float_test_acc']:.4f}  PQ k-means {meta['pq_kmeans_test_acc']:.4f}  "
          f"PQ fine-tuned {meta['pq_test_acc']:.4f}  ({seconds:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
