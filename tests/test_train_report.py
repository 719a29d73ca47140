"""benchmarks/train_report.py: aggregation over seeds, formatting and target verdicts on synthetic results
(no training)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("train_report", ROOT / "benchmarks" / "train_report.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["train_report"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


tr = _load()


def fake_run(seed: int, float_acc: float, qat: dict[int, float], best: str = "ste",
             qat_from: str = "ste max/mse") -> dict[str, Any]:
    """One model, one seed, as run_model returns it; every unlisted accuracy is 0.5."""
    return {"name": "m", "seed": seed, "float": float_acc, "methods": {m: 0.5 for m in tr.METHODS},
            "val": {m: 0.5 for m in tr.METHODS}, "best_method": best,
            "ptq": {b: 0.5 for b in tr.BITS}, "ptq_kmeans": {b: 0.5 for b in tr.BITS},
            "ptq_best": {b: 0.5 for b in tr.BITS}, "qat": {b: qat.get(b, 0.5) for b in tr.BITS},
            "qat_from": {b: qat_from for b in tr.BITS}, "qat_epoch": {b: 0 for b in tr.BITS}, "seconds": 10.0}


def test_spread_mean_std_range() -> None:
    s = tr.spread([0.96, 0.98, 0.97])
    assert s.n == 3
    assert s.mean == pytest.approx(0.97)
    assert s.std == pytest.approx(0.01)
    assert (s.lo, s.hi) == (0.96, 0.98)
    one = tr.spread([0.5])
    assert (one.mean, one.std, one.lo, one.hi, one.n) == (0.5, 0.0, 0.5, 0.5, 1)
    with pytest.raises(ValueError):
        tr.spread([])


def test_fmt_spread() -> None:
    assert tr.fmt_spread(tr.spread([0.96, 0.98, 0.97])) == "97.00 (96.00..98.00)"
    assert tr.fmt_spread(tr.spread([0.9622])) == "96.22"
    assert tr.fmt_spread(tr.spread([-0.0089, 0.0022]), signed=True) == "-0.33 (-0.89..+0.22)"
    assert tr.fmt_spread(tr.spread([-0.00001, 0.0]), signed=True) == "+0.00 (+0.00..+0.00)"  # no "-0.00"


def test_fmt_counts_most_frequent_first_ties_by_name() -> None:
    assert tr.fmt_counts(["ste", "lutnn", "ste", "soft"]) == "ste 2, lutnn 1, soft 1"


def test_verdicts_on_the_means() -> None:
    # 8 bits: gaps -1.0, 0.0 points (mean -0.5: met, exactly on the target); 4 bits: gaps -3, -1.2 (mean -2.1)
    runs = [fake_run(0, 0.97, {8: 0.96, 4: 0.94}), fake_run(1, 0.96, {8: 0.96, 4: 0.948})]
    v8, v4 = tr.verdicts({"m": runs})
    assert (v8.bits, v8.tolerance, v4.bits, v4.tolerance) == (8, 0.5, 4, 2.0)
    assert v8.gap.mean == pytest.approx(-0.005)
    assert v8.met
    assert v4.gap.mean == pytest.approx(-0.021)
    assert not v4.met
    # gaps -3.0 and -1.2 points: sample std 1.2728, standard error 0.90
    assert v4.line() == ("m: 4 bits -2.10 +- 0.90 (standard error, 2 seeds) points vs float on the mean "
                         "(target within 2; worst seed -3.00): NOT met")


def test_report_tables_and_json() -> None:
    runs = [fake_run(0, 0.96, {8: 0.96}, best="ste"),
            fake_run(1, 0.98, {8: 0.97}, best="lutnn", qat_from="lutnn max/max"),
            fake_run(2, 0.97, {8: 0.99}, best="ste")]
    by_model = {"m": runs}
    md = tr.report(by_model, [0, 1, 2], {"torch": "x"}, quick=False, seconds=30.0)
    lines = md.splitlines()
    assert "| float | 97.00 (96.00..98.00) |" in lines
    assert "| integer 8/8/8 bits, QAT from best PTQ | 97.33 (96.00..99.00) |" in lines
    assert "| 8 bits: QAT from best PTQ minus float (points) | +0.33 (-1.00..+2.00) |" in lines
    assert "| best fine-tuning method (validation; seeds) | ste 2, lutnn 1 |" in lines
    assert "| 8 bits: QAT start method (seeds) | ste 2, lutnn 1 |" in lines
    assert "| m | 1 | 98.00 | 50.00 | 97.00 | 50.00 | 50.00 | 50.00 |" in lines
    assert ("- m: 8 bits +0.33 +- 0.88 (standard error, 3 seeds) points vs float on the mean (target within 0.5; "
            "worst seed -1.00): met") in lines
    assert "QUICK" not in md
    data = json.loads(tr.to_json(by_model, [0, 1, 2], {"torch": "x"}, quick=False))
    assert data["seeds"] == [0, 1, 2]
    assert data["results"]["m"][1]["qat"]["8"] == 0.97


def test_parse_model_label() -> None:
    label, arch = tr.parse_model("digits_mlp:k=32,v=2")
    assert label == "digits_mlp (K=32 v=2)"
    assert arch["name"] == "digits_mlp"
    with pytest.raises(SystemExit):
        tr.parse_model("digits_mlp:k")
