"""Training report on sklearn digits: float vs PQ per fine-tuning method vs the integer pipeline.

For the digits MLP and CNN of the zoo: float accuracy; PQ accuracy (hard assignment, float tables) for every
method of ``pqtrain.train.METHODS`` (``kmeans`` is the baseline: k-means prototypes, table from the float
weights, no fine-tuning); and the accuracy of the exported integer pipeline (``pqcompile.quantize``:
act = proto = table width) at 8, 6, 4 and 2 bits: post-training with pqcompile's max-abs calibration (k-means
and ``ste`` models), the best post-training model (fine-tuned model x calibration, chosen on validation) and
QAT started from it (settings and epoch chosen on validation).

Model selection uses only a held-out 15% of the TRAINING split (``pqtrain.train.split_validation``); every
model is trained on the rest. The fixed 450-digit test split is only reported. Seeded, CPU, 1 thread.

Usage: ``python benchmarks/train_report.py [--out-dir DIR] [--quick] [--models NAME[:k=32,v=2] ...]``
-> DIR/train_report.md and .png
(default DIR: benchmarks/out/, git-ignored)
"""

from __future__ import annotations

import argparse
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
from pqtrain.integer import export_integer  # noqa: E402
from pqtrain.train import (  # noqa: E402
    METHODS,
    TrainConfig,
    accuracy,
    choose_calib,
    convert_to_pq,
    finetune,
    float_arch,
    hard_score,
    integer_accuracy,
    integer_score,
    kmeans_inputs,
    reshape_inputs,
    split_validation,
    train_float,
    train_qat_search,
)

BITS = (8, 6, 4, 2)
# the shipped MLP (K=16, v=4: fits the "small" config), a finer MLP, and the CNN (zoo defaults)
MODELS = ("digits_mlp", "digits_mlp:k=32,v=2", "digits_cnn")
QAT_GRID: tuple[dict[str, Any], ...] = ({"qat_lr": 1e-3}, {"qat_lr": 3e-3}, {"qat_lr": 2e-4})
HERE = Path(__file__).resolve().parent


def parse_model(spec: str) -> tuple[str, dict[str, Any]]:
    """``NAME`` or ``NAME:key=value,...`` (zoo keyword arguments, integers or strings) -> (label, arch)."""
    name, _, args = spec.partition(":")
    kwargs: dict[str, Any] = {}
    for item in filter(None, args.split(",")):
        key, eq, val = item.partition("=")
        if not eq:
            raise SystemExit(f"--models {spec!r}: {item!r} is not key=value")
        kwargs[key] = int(val) if val.lstrip("-").isdigit() else val
    try:
        arch = zoo.arch(name, **kwargs)
    except (KeyError, TypeError) as exc:
        raise SystemExit(f"--models {spec!r}: {exc}") from None
    pq = [lay for lay in arch["layers"] if lay["type"].startswith("pq_")]
    shapes = sorted({(lay["k"], lay["v"]) for lay in pq})
    label = f"{name} (" + "; ".join(f"K={k} v={v}" for k, v in shapes) + ")"
    return label, arch


def run_model(spec: str, cfg: TrainConfig, log: Any, grid: tuple[dict[str, Any], ...] = ({},)) -> dict[str, Any]:
    name, arch = parse_model(spec)
    data = reshape_inputs(load_digits_split(seed=cfg.seed), arch)
    x_tr, _, x_te, y_te = data
    _, _, x_val, y_val = split_validation(data, cfg.val_fraction, cfg.seed)  # part of TRAIN: for selection
    calib = x_tr[: cfg.n_calib]
    t0 = time.perf_counter()
    fmodel = train_float(float_arch(arch), data, cfg, log=None)
    res: dict[str, Any] = {"name": name, "float": accuracy(fmodel, x_te, y_te), "methods": {}, "val": {},
                           "ptq": {}, "ptq_kmeans": {}, "ptq_best": {}, "qat": {}, "qat_from": {}}
    log(f"{name}: float {res['float']:.4f} ({time.perf_counter() - t0:.0f} s)")
    models = {}
    for method in METHODS:
        torch.manual_seed(cfg.seed)
        pq = convert_to_pq(fmodel, arch, kmeans_inputs(data, cfg), cfg.kmeans_iters, cfg.seed)
        finetune(pq, data, replace(cfg, method=method), teacher=fmodel, log=None)
        models[method] = pq
        res["methods"][method] = accuracy(pq, x_te, y_te)
        res["val"][method] = accuracy(pq, x_val, y_val)
        log(f"{name}: PQ {method:<15} test {res['methods'][method]:.4f} val {res['val'][method]:.4f} "
            f"({time.perf_counter() - t0:.0f} s)")
    tuned = [m for m in METHODS if m != "kmeans"]
    res["best_method"] = max(tuned, key=lambda m: hard_score(models[m], x_val, y_val))  # first among equals
    log(f"{name}: best fine-tuning method on validation: {res['best_method']}")
    for bits in BITS:
        res["ptq_kmeans"][bits] = integer_accuracy(models["kmeans"], arch, data, bits, cfg.n_calib)
        res["ptq"][bits] = integer_accuracy(models["ste"], arch, data, bits, cfg.n_calib)
        # the best PTQ model at this width: fine-tuned model x calibration, scored on validation only
        cands = []
        for m in METHODS:
            ac, lc = choose_calib(models[m], arch, calib, x_val, y_val, bits)
            inet = export_integer(models[m], arch, calib, bits, act_calib=ac, lut_calib=lc)
            cands.append((integer_score(inet, x_val, y_val), m, ac, lc, inet.accuracy(x_te, y_te)))
        best = max(cands, key=lambda c: c[0])
        res["ptq_best"][bits] = best[4]
        res["qat_from"][bits] = f"{best[1]}, {best[2]}/{best[3]}"
        qm, qr, over = train_qat_search(models[best[1]], arch, data,
                                        replace(cfg, qat_bits=bits, calib=f"{best[2]}/{best[3]}"), grid,
                                        teacher=fmodel, log=None)
        res["qat_from"][bits] += f", {over}" if over else ""
        res["qat"][bits] = integer_accuracy(qm, arch, data, bits, cfg.n_calib, qr.act_calib, qr.lut_calib)
        log(f"{name}: integer {bits} bits: k-means {res['ptq_kmeans'][bits]:.4f} ste {res['ptq'][bits]:.4f} "
            f"best PTQ ({res['qat_from'][bits]}) {res['ptq_best'][bits]:.4f} QAT {res['qat'][bits]:.4f} "
            f"(epoch {qr.selected_epoch}) ({time.perf_counter() - t0:.0f} s)")
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
    lines.append("| best fine-tuning method (validation) | " + " | ".join(r["best_method"] for r in results) + " |")
    for bits in BITS:
        for key, label in (("ptq_kmeans", "k-means baseline, PTQ (max calib)"), ("ptq", "`ste`, PTQ (max calib)"),
                           ("ptq_best", "best PTQ (validation)"), ("qat", "QAT from best PTQ")):
            lines.append(f"| integer {bits}/{bits}/{bits} bits, {label} | "
                         + " | ".join(pct(r[key][bits]) for r in results) + " |")
        lines.append(f"| {bits} bits: QAT start (method, act/lut calib) | "
                     + " | ".join(r["qat_from"][bits] for r in results) + " |")
    lines.append("| run time (s) | " + " | ".join(f"{r['seconds']:.0f}" for r in results) + " |")
    return "\n".join(lines)


def plot(results: list[dict[str, Any]], path: Path) -> None:
    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.6), squeeze=False)
    for ax, r in zip(axes[0], results, strict=True):
        xs = list(BITS)
        ax.axhline(100 * r["float"], color="k", ls="--", label="float")
        ax.axhline(100 * r["methods"]["ste"], color="gray", ls=":", label="PQ (ste, float tables)")
        for key, label, mk in (("ptq_kmeans", "k-means PTQ", "s"), ("ptq", "ste PTQ", "o"),
                               ("ptq_best", "best PTQ", "D"), ("qat", "QAT", "^")):
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
    p.add_argument("--models", nargs="*", default=list(MODELS),
                   help="zoo models, NAME or NAME:key=value,... (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="few epochs (a smoke run, not the reported numbers)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # 1 thread: 2 threads on a shared 2-core machine are ~10x slower
    t0 = time.perf_counter()
    results = []
    for spec in args.models:
        cnn = spec.startswith("digits_cnn")
        cfg = TrainConfig()
        if cnn:  # a conv epoch costs ~10x an MLP one
            cfg = replace(cfg, float_epochs=40, pq_epochs=20, qat_epochs=6)
        if args.quick:
            cfg = replace(cfg, float_epochs=3, pq_epochs=2, qat_epochs=1, kmeans_iters=5)
        # QAT settings tried per width (best on validation); a CNN QAT epoch is expensive: defaults only
        grid = QAT_GRID if not cnn and not args.quick else ({},)
        results.append(run_model(spec, cfg, lambda s: print(s, flush=True), grid))
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
