"""Training report on sklearn digits: float vs PQ per fine-tuning method vs the integer pipeline.

For the digits MLP and CNN of the zoo: float accuracy; PQ accuracy (hard assignment, float tables) for every
method of ``pqtrain.train.METHODS`` (``kmeans`` is the baseline: k-means prototypes, table from the float
weights, no fine-tuning); and the accuracy of the exported integer pipeline (``pqcompile.quantize``:
act = proto = table width) at 8, 6, 4 and 2 bits, post-training (from the ``ste`` model) and after
quantization-aware training at that width. Everything on the fixed 450-digit test split, seeded, CPU.

Usage: ``python benchmarks/train_report.py [--out-dir DIR] [--quick]`` -> DIR/train_report.md and .png
"""

from __future__ import annotations

import argparse
import copy
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from pqtrain import zoo  # noqa: E402
from pqtrain.data import load_digits_split  # noqa: E402
from pqtrain.train import (  # noqa: E402
    METHODS,
    TrainConfig,
    accuracy,
    convert_to_pq,
    finetune,
    float_arch,
    integer_accuracy,
    reshape_inputs,
    train_float,
    train_qat,
)

BITS = (8, 6, 4, 2)
HERE = Path(__file__).resolve().parent


def run_model(name: str, cfg: TrainConfig, log: Any) -> dict[str, Any]:
    arch = zoo.arch(name)
    data = reshape_inputs(load_digits_split(seed=cfg.seed), arch)
    x_tr, _, x_te, y_te = data
    t0 = time.perf_counter()
    fmodel = train_float(float_arch(arch), data, cfg, log=None)
    res: dict[str, Any] = {"name": name, "float": accuracy(fmodel, x_te, y_te), "methods": {}, "ptq": {},
                           "ptq_kmeans": {}, "qat": {}}
    log(f"{name}: float {res['float']:.4f} ({time.perf_counter() - t0:.0f} s)")
    models = {}
    for method in METHODS:
        torch.manual_seed(cfg.seed)
        pq = convert_to_pq(fmodel, arch, x_tr, cfg.kmeans_iters, cfg.seed)
        finetune(pq, data, replace(cfg, method=method), teacher=fmodel, log=None)
        models[method] = pq
        res["methods"][method] = accuracy(pq, x_te, y_te)
        log(f"{name}: PQ {method:<15} {res['methods'][method]:.4f} ({time.perf_counter() - t0:.0f} s)")
    for bits in BITS:
        res["ptq_kmeans"][bits] = integer_accuracy(models["kmeans"], arch, data, bits, cfg.n_calib)
        res["ptq"][bits] = integer_accuracy(models["ste"], arch, data, bits, cfg.n_calib)
        qm = copy.deepcopy(models["ste"])
        train_qat(qm, arch, data, replace(cfg, qat_bits=bits), teacher=fmodel, log=None)
        res["qat"][bits] = integer_accuracy(qm, arch, data, bits, cfg.n_calib)
        log(f"{name}: integer {bits} bits: k-means {res['ptq_kmeans'][bits]:.4f} PTQ {res['ptq'][bits]:.4f} "
            f"QAT {res['qat'][bits]:.4f} ({time.perf_counter() - t0:.0f} s)")
    res["seconds"] = time.perf_counter() - t0
    return res


def table(results: list[dict[str, Any]]) -> str:
    pct = lambda a: f"{100 * a:.2f}"  # noqa: E731
    cols = [r["name"] for r in results]
    lines = ["| | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    lines.append("| float | " + " | ".join(pct(r["float"]) for r in results) + " |")
    for m in METHODS:
        label = "PQ k-means baseline (no fine-tuning)" if m == "kmeans" else f"PQ `{m}`"
        lines.append(f"| {label} | " + " | ".join(pct(r["methods"][m]) for r in results) + " |")
    for bits in BITS:
        for key, label in (("ptq_kmeans", "k-means baseline, PTQ"), ("ptq", "`ste`, PTQ"), ("qat", "`ste` + QAT")):
            lines.append(f"| integer {bits}/{bits}/{bits} bits, {label} | "
                         + " | ".join(pct(r[key][bits]) for r in results) + " |")
    lines.append("| run time (s) | " + " | ".join(f"{r['seconds']:.0f}" for r in results) + " |")
    return "\n".join(lines)


def plot(results: list[dict[str, Any]], path: Path) -> None:
    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.6), squeeze=False)
    for ax, r in zip(axes[0], results, strict=True):
        xs = list(BITS)
        ax.axhline(100 * r["float"], color="k", ls="--", label="float")
        ax.axhline(100 * r["methods"]["ste"], color="gray", ls=":", label="PQ (ste, float tables)")
        for key, label, mk in (("ptq_kmeans", "k-means PTQ", "s"), ("ptq", "ste PTQ", "o"), ("qat", "ste + QAT", "^")):
            ax.plot(xs, [100 * r[key][b] for b in xs], marker=mk, label=label)
        ax.set_xlabel("bits (activations = prototypes = table)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(r["name"])
        ax.set_xticks(xs)
        ax.set_ylim(max(0, 100 * min(min(r["qat"].values()), min(r["ptq"].values())) - 5), 100)
        ax.invert_xaxis()
        ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out-dir", type=Path, default=HERE / "out")
    p.add_argument("--models", nargs="*", default=["digits_mlp", "digits_cnn"])
    p.add_argument("--quick", action="store_true", help="few epochs (a smoke run, not the reported numbers)")
    args = p.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    t0 = time.perf_counter()
    results = []
    for name in args.models:
        cfg = TrainConfig()
        if name == "digits_cnn":  # a conv epoch costs ~10x an MLP one
            cfg = replace(cfg, float_epochs=40, pq_epochs=20, qat_epochs=6)
        if args.quick:
            cfg = replace(cfg, float_epochs=3, pq_epochs=2, qat_epochs=1, kmeans_iters=5)
        results.append(run_model(name, cfg, lambda s: print(s, flush=True)))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    md = table(results)
    (args.out_dir / "train_report.md").write_text(
        f"# pqtrain report (sklearn digits, 450 test inputs)\n\n{md}\n\ntotal {time.perf_counter() - t0:.0f} s\n")
    plot(results, args.out_dir / "train_report.png")
    print(md)
    print(f"wrote {args.out_dir}/train_report.md and train_report.png in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
