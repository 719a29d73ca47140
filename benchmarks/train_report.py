"""Training report on sklearn digits over several seeds: float vs PQ per fine-tuning method vs the integer pipeline.

For the digits MLP and CNN of the zoo: float accuracy; PQ accuracy (hard assignment, float tables) for every
method of ``pqtrain.train.METHODS`` (``kmeans`` is the baseline: k-means prototypes, table from the float
weights, no fine-tuning); and the accuracy of the exported integer pipeline (``pqtrain.integer.export_integer``:
act = proto = table width) at 8, 6, 4 and 2 bits: post-training with pqcompile's max-abs calibration (k-means
and ``ste`` models), the best post-training model (fine-tuned model x calibration, chosen on validation) and
QAT started from it (settings and epoch chosen on validation).

Every model runs once per seed (default 0..4: about 23 minutes on a 2-core machine at 1 thread) and every cell
is reported as the mean over the seeds and its range (min..max). A seed sets everything that is random in the
recipe: the stratified train/test split of the digits (450 test digits each), the validation part of the
training split, the weight initialisation, the k-means initialisation and the batch order; so the spread
covers test-set sampling (repeated random hold-out) as well as training noise. The targets (integer 8 bits
within 0.5 points of float, 4 bits within 2) are judged on the means, for the model the recipe selects (QAT
from the best post-training model).

Model selection uses only a held-out 15% of the TRAINING split (``pqtrain.train.split_validation``); every
model is trained on the rest. The test split is only reported. CPU, 1 torch thread: results are bit-identical
on re-run on the same machine at 1 thread; another thread count or CPU gives other numbers within the spread.

Usage: ``python benchmarks/train_report.py [--out-dir DIR] [--seeds S ...] [--quick] [--models NAME[:k=32,v=2] ...]``
-> DIR/train_report.md (tables), .json (every per-seed figure) and .png
(default DIR: benchmarks/out/, git-ignored). While it runs: each run's steps and, after every run, its progress
(a bar with ETA on a terminal; a line "train_report: 3/10 runs (30%), ..., ETA ..." in a log or under CI=true).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import sklearn  # noqa: E402
import torch  # noqa: E402

from pqcompile.progress import Progress  # noqa: E402
from pqmodel.data import load_digits_split  # noqa: E402
from pqtrain import zoo  # noqa: E402
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
DEFAULT_SEEDS = (0, 1, 2, 3, 4)
QUICK_SEEDS = (0, 1)
QAT_GRID: tuple[dict[str, Any], ...] = ({"qat_lr": 1e-3}, {"qat_lr": 3e-3}, {"qat_lr": 2e-4})
# integer width -> largest loss (points) against float that the project targets, judged on the means over seeds
TARGETS: dict[int, float] = {8: 0.5, 4: 2.0}
# integer rows per width: result key, label
INT_ROWS: tuple[tuple[str, str], ...] = (
    ("ptq_kmeans", "k-means baseline, PTQ (max calib)"), ("ptq", "`ste`, PTQ (max calib)"),
    ("ptq_best", "best PTQ (validation)"), ("qat", "QAT from best PTQ"))
HERE = Path(__file__).resolve().parent

Log = Callable[[str], None]
Result = dict[str, Any]  # one model, one seed (see run_model)


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


def model_config(spec: str, quick: bool) -> tuple[TrainConfig, tuple[dict[str, Any], ...]]:
    """Training settings (seed 0) and the QAT settings searched per width for model ``spec``."""
    cnn = spec.startswith("digits_cnn")
    cfg = TrainConfig()
    if cnn:  # a conv epoch costs ~10x an MLP one
        cfg = replace(cfg, float_epochs=40, pq_epochs=20, qat_epochs=6)
    if quick:
        cfg = replace(cfg, float_epochs=3, pq_epochs=2, qat_epochs=1, kmeans_iters=5)
    # QAT settings tried per width (best on validation); a CNN QAT epoch is expensive: defaults only
    grid = QAT_GRID if not cnn and not quick else ({},)
    return cfg, grid


def run_model(spec: str, cfg: TrainConfig, log: Log, grid: tuple[dict[str, Any], ...] = ({},)) -> Result:
    """Every row of the report for one model and one seed (``cfg.seed``: split, initialisation, order).
    Accuracies are fractions of the test split of that seed."""
    name, arch = parse_model(spec)
    data = reshape_inputs(load_digits_split(seed=cfg.seed), arch)
    x_tr, _, x_te, y_te = data
    _, _, x_val, y_val = split_validation(data, cfg.val_fraction, cfg.seed)  # part of TRAIN: for selection
    calib = x_tr[: cfg.n_calib]
    t0 = time.perf_counter()

    def step(msg: str) -> None:
        log(f"seed {cfg.seed}: {name}: {msg} ({time.perf_counter() - t0:.0f} s)")

    fmodel = train_float(float_arch(arch), data, cfg, log=None)
    res: Result = {"name": name, "seed": cfg.seed, "float": accuracy(fmodel, x_te, y_te), "methods": {},
                   "val": {}, "ptq": {}, "ptq_kmeans": {}, "ptq_best": {}, "qat": {}, "qat_from": {},
                   "qat_epoch": {}}
    step(f"float {res['float']:.4f}")
    models = {}
    for method in METHODS:
        torch.manual_seed(cfg.seed)
        pq = convert_to_pq(fmodel, arch, kmeans_inputs(data, cfg), cfg.kmeans_iters, cfg.seed)
        finetune(pq, data, replace(cfg, method=method), teacher=fmodel, log=None)
        models[method] = pq
        res["methods"][method] = accuracy(pq, x_te, y_te)
        res["val"][method] = accuracy(pq, x_val, y_val)
        step(f"PQ {method:<15} test {res['methods'][method]:.4f} val {res['val'][method]:.4f}")
    tuned = [m for m in METHODS if m != "kmeans"]
    res["best_method"] = max(tuned, key=lambda m: hard_score(models[m], x_val, y_val))  # first among equals
    step(f"best fine-tuning method on validation: {res['best_method']}")
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
        qm, qr, over = train_qat_search(models[best[1]], arch, data,
                                        replace(cfg, qat_bits=bits, calib=f"{best[2]}/{best[3]}"), grid,
                                        teacher=fmodel, log=None)
        res["qat_from"][bits] = (f"{best[1]} {best[2]}/{best[3]}"  # the method first: see table()
                                 + "".join(f" {k} {v:g}" for k, v in over.items()))
        res["qat"][bits] = integer_accuracy(qm, arch, data, bits, cfg.n_calib, qr.act_calib, qr.lut_calib)
        res["qat_epoch"][bits] = qr.selected_epoch
        step(f"integer {bits} bits: k-means {res['ptq_kmeans'][bits]:.4f} ste {res['ptq'][bits]:.4f} "
             f"best PTQ ({res['qat_from'][bits]}) {res['ptq_best'][bits]:.4f} QAT {res['qat'][bits]:.4f} "
             f"(epoch {qr.selected_epoch})")
    res["seconds"] = time.perf_counter() - t0
    return res


# --- aggregation over seeds -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spread:
    """Mean, sample standard deviation (0 for one value) and range of one cell over the seeds."""

    mean: float
    std: float
    lo: float
    hi: float
    n: int


def spread(values: Sequence[float]) -> Spread:
    """The :class:`Spread` of ``values`` (at least one)."""
    if not values:
        raise ValueError("spread of no values")
    vals = [float(v) for v in values]
    std = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return Spread(statistics.fmean(vals), std, min(vals), max(vals), len(vals))


def fmt_spread(s: Spread, scale: float = 100.0, signed: bool = False) -> str:
    """``mean (min..max)`` of ``scale`` x the values, 2 decimals (``mean`` alone for one seed); ``signed``
    writes a sign on every number (gaps)."""
    def f(x: float) -> str:
        v = round(scale * x, 2) + 0.0  # + 0.0: no "-0.00"
        return f"{v:+.2f}" if signed else f"{v:.2f}"

    return f(s.mean) if s.n == 1 else f"{f(s.mean)} ({f(s.lo)}..{f(s.hi)})"


def fmt_counts(labels: Sequence[str]) -> str:
    """How often each label occurs over the seeds, most frequent first (ties by name): ``"ste 3, lutnn 2"``."""
    counts = Counter(labels)
    return ", ".join(f"{lab} {n}" for lab, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def cell(runs: Sequence[Result], key: str, sub: str | int | None = None) -> Spread:
    """The spread over seeds of ``run[key]`` (or ``run[key][sub]``)."""
    return spread([r[key] if sub is None else r[key][sub] for r in runs])


def gap(runs: Sequence[Result], bits: int) -> Spread:
    """Integer model the recipe selects (QAT from the best PTQ) minus float, per seed (fractions)."""
    return spread([r["qat"][bits] - r["float"] for r in runs])


@dataclass(frozen=True)
class Verdict:
    """One target: the selected integer model at ``bits`` within ``tolerance`` points of float, on the means."""

    model: str
    bits: int
    tolerance: float  # points
    gap: Spread  # integer - float over the seeds (fractions)

    @property
    def met(self) -> bool:
        return 100 * self.gap.mean >= -self.tolerance - 1e-9

    def line(self) -> str:
        """The verdict with the standard error of the mean gap (sample std / sqrt(seeds)) and the worst seed."""
        g = self.gap
        sem = "" if g.n == 1 else f" +- {100 * g.std / math.sqrt(g.n):.2f} (standard error, {g.n} seeds)"
        worst = "" if g.n == 1 else f"; worst seed {100 * g.lo:+.2f}"
        return (f"{self.model}: {self.bits} bits {100 * g.mean:+.2f}{sem} points vs float on the mean "
                f"(target within {self.tolerance:g}{worst}): {'met' if self.met else 'NOT met'}")


def verdicts(by_model: dict[str, list[Result]]) -> list[Verdict]:
    """Every target of :data:`TARGETS` for every model."""
    return [Verdict(name, bits, tol, gap(runs, bits)) for name, runs in by_model.items()
            for bits, tol in TARGETS.items()]


def table(by_model: dict[str, list[Result]]) -> str:
    """Every row, one column per model: accuracies in % as mean (min..max) over the seeds; choices counted (the
    QAT start's calibration and QAT setting per seed are in the JSON and the log)."""
    cols = list(by_model)
    runs = [by_model[c] for c in cols]

    def row(label: str, cells: list[str]) -> str:
        return f"| {label} | " + " | ".join(cells) + " |"

    lines = [row("", cols), "|---|" + "---|" * len(cols)]
    lines.append(row("float", [fmt_spread(cell(rs, "float")) for rs in runs]))
    for m in METHODS:
        label = "PQ k-means baseline (no fine-tuning)" if m == "kmeans" else f"PQ `{m}`"
        lines.append(row(label, [fmt_spread(cell(rs, "methods", m)) for rs in runs]))
    lines.append(row("best fine-tuning method (validation; seeds)", [fmt_counts([r["best_method"] for r in rs])
                                                                      for rs in runs]))
    for bits in BITS:
        for key, label in INT_ROWS:
            lines.append(row(f"integer {bits}/{bits}/{bits} bits, {label}",
                             [fmt_spread(cell(rs, key, bits)) for rs in runs]))
        lines.append(row(f"{bits} bits: QAT from best PTQ minus float (points)",
                         [fmt_spread(gap(rs, bits), signed=True) for rs in runs]))
        lines.append(row(f"{bits} bits: QAT start method (seeds)",
                         [fmt_counts([r["qat_from"][bits].split()[0] for r in rs]) for rs in runs]))
    lines.append(row("run time per seed (s)", [f"{statistics.fmean(r['seconds'] for r in rs):.0f}" for rs in runs]))
    return "\n".join(lines)


def seed_table(by_model: dict[str, list[Result]]) -> str:
    """The per-seed figures behind the means: float, PQ ``ste`` and the selected integer model per width (%)."""
    head = ["model", "seed", "float", "PQ `ste`", *(f"QAT {b} bits" for b in BITS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, runs in by_model.items():
        for r in runs:
            vals = [r["float"], r["methods"]["ste"], *(r["qat"][b] for b in BITS)]
            lines.append(f"| {name} | {r['seed']} | " + " | ".join(f"{100 * v:.2f}" for v in vals) + " |")
    return "\n".join(lines)


def environment() -> dict[str, str]:
    """What the figures are bit-reproducible on: versions, CPU and thread counts."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return {"python": platform.python_version(), "torch": str(torch.__version__), "numpy": np.__version__,
            "scikit-learn": sklearn.__version__, "cpu": cpu, "cpus": str(os.cpu_count()),
            "torch_threads": str(torch.get_num_threads()), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "")}


def report(by_model: dict[str, list[Result]], seeds: Sequence[int], env: dict[str, str], quick: bool,
           seconds: float) -> str:
    """The markdown report."""
    vlines = "\n".join(f"- {v.line()}" for v in verdicts(by_model))
    envs = ", ".join(f"{k} {v}" for k, v in env.items())
    return (f"# pqtrain report (sklearn digits, 450 test inputs per seed){' (QUICK: not the reported numbers)' * quick}"
            f"\n\nSeeds {' '.join(map(str, seeds))}: each seed draws its own train/test split, validation split, "
            "initialisation and batch order. Cells: mean over the seeds (min..max), accuracy in %; choices: how "
            "many seeds chose each. All choices are made on the validation part of the training split.\n\n"
            f"{table(by_model)}\n\n## Targets (on the means; integer model = QAT from best PTQ)\n\n{vlines}\n\n"
            f"## Per seed\n\n{seed_table(by_model)}\n\nEnvironment: {envs}.\n\ntotal {seconds:.0f} s\n")


def plot(by_model: dict[str, list[Result]], path: Path) -> None:
    """Accuracy vs width per model: means over the seeds, bars = min..max."""
    fig, axes = plt.subplots(1, len(by_model), figsize=(5 * len(by_model), 3.6), squeeze=False)
    for ax, (name, runs) in zip(axes[0], by_model.items(), strict=True):
        xs = list(BITS)
        for s, label, style in ((cell(runs, "float"), "float", "--"),
                                (cell(runs, "methods", "ste"), "PQ (ste, float tables)", ":")):
            ax.axhline(100 * s.mean, color="k" if label == "float" else "gray", ls=style, label=label)
            ax.axhspan(100 * s.lo, 100 * s.hi, color="k" if label == "float" else "gray", alpha=0.08)
        for (key, _), label, mk in zip(INT_ROWS, ("k-means PTQ", "ste PTQ", "best PTQ", "QAT"), "soD^", strict=True):
            cells = [cell(runs, key, b) for b in xs]
            means = np.array([100 * c.mean for c in cells])
            err = np.array([[100 * (c.mean - c.lo) for c in cells], [100 * (c.hi - c.mean) for c in cells]])
            ax.errorbar(xs, means, yerr=err, marker=mk, capsize=3, label=label)
        ax.set_xlabel("bits (activations = prototypes = table)")
        ax.set_ylabel(f"test accuracy (%): mean, min..max of {len(runs)} seeds", fontsize=8)
        ax.set_title(name, fontsize=9)
        ax.set_xticks(xs)
        low = min(min(cell(runs, k, b).lo for b in xs) for k in ("qat", "ptq"))
        ax.set_ylim(max(0, 100 * low - 5), 100)
        ax.invert_xaxis()
        ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def to_json(by_model: dict[str, list[Result]], seeds: Sequence[int], env: dict[str, str], quick: bool) -> str:
    """Every per-seed figure (accuracies as fractions; per-width dicts keyed by the width as a string)."""
    return json.dumps({"seeds": list(seeds), "quick": quick, "environment": env, "results": by_model}, indent=1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out-dir", type=Path, default=HERE / "out")
    p.add_argument("--models", nargs="*", default=list(MODELS),
                   help="zoo models, NAME or NAME:key=value,... (default: %(default)s)")
    p.add_argument("--seeds", nargs="+", type=int, default=None,
                   help=f"seeds to run every model with (default: {' '.join(map(str, DEFAULT_SEEDS))}; "
                        f"with --quick {' '.join(map(str, QUICK_SEEDS))})")
    p.add_argument("--quick", action="store_true", help="few epochs (a smoke run, not the reported numbers)")
    args = p.parse_args(argv)
    seeds: list[int] = args.seeds if args.seeds is not None else list(QUICK_SEEDS if args.quick else DEFAULT_SEEDS)
    if len(set(seeds)) != len(seeds):
        raise SystemExit(f"--seeds {seeds}: a seed is repeated")
    specs = {parse_model(spec)[0]: spec for spec in args.models}  # label -> spec; checks every spec first
    torch.set_num_threads(1)  # 1 thread: 2 threads on a shared 2-core machine are ~10x slower
    t0 = time.perf_counter()
    by_model: dict[str, list[Result]] = {label: [] for label in specs}
    # a line after every run in a log (a run takes minutes), a bar with ETA on a terminal
    with Progress("train_report", len(seeds) * len(specs), unit="runs", every=0) as progress:
        for seed in seeds:
            for label, spec in specs.items():
                cfg, grid = model_config(spec, args.quick)
                by_model[label].append(run_model(spec, replace(cfg, seed=seed), progress.write, grid))
                progress.update(1, f"last: {spec} seed {seed}")
    seconds = time.perf_counter() - t0
    env = environment()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    md = report(by_model, seeds, env, args.quick, seconds)
    (args.out_dir / "train_report.md").write_text(md)
    (args.out_dir / "train_report.json").write_text(to_json(by_model, seeds, env, args.quick) + "\n")
    plot(by_model, args.out_dir / "train_report.png")
    print(md)
    print(f"wrote {args.out_dir}/train_report.md, .json and .png in {time.perf_counter() - t0:.0f} s "
          f"({len(seeds)} seeds x {len(specs)} models)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
