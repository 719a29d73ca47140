"""Calibration choices of the integer pipeline and validation-based model selection (fast)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pqcompile import quantize
from pqcompile.backend import CompileError
from pqmodel.data import load_digits_split
from pqtrain.train import TrainConfig, fit, mlp_arch, split_validation, train_pipeline


def test_calib_range_methods() -> None:
    x = np.concatenate([np.linspace(-1, 1, 1001), [3.0]])
    assert quantize.calib_range(x, 7) == 3.0  # "max": max-abs, what pqcompile always did
    assert quantize.calib_range(x, 7, "percentile", 99.0) < 2.0
    r = quantize.calib_range(x, 7, "mse")
    assert 1.0 <= r < 3.0
    with pytest.raises(CompileError):
        quantize.calib_range(x, 7, "nope")


def test_split_validation_uses_train_only_and_is_fixed() -> None:
    data = load_digits_split(seed=0)
    a = split_validation(data, 0.15, 0)
    b = split_validation(data, 0.15, 0)
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert a[0].shape[0] + a[2].shape[0] == data[0].shape[0]
    assert abs(a[2].shape[0] - 0.15 * data[0].shape[0]) <= 1


def test_fit_restores_the_selected_epoch() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
    states: list[torch.Tensor] = []

    def select() -> tuple[float, ...]:  # prefer the initial weights (epoch 0) above all later ones
        states.append(model.weight.detach().clone())
        return (1.0,) if len(states) == 1 else (0.0,)

    info: dict[str, object] = {}
    fit(model, list(model.parameters()), (x, y, x, y), 3, 1e-2, log=None, select=select, info=info)
    assert info["selected_epoch"] == 0 and len(states) == 4
    assert torch.equal(model.weight, states[0])


def test_pipeline_with_qat_reports_calibration() -> None:
    x_tr, y_tr, x_te, y_te = load_digits_split(seed=0)
    data = (x_tr[:160], y_tr[:160], x_te[:64], y_te[:64])
    cfg = TrainConfig(float_epochs=2, pq_epochs=1, kmeans_iters=3, qat_bits=4, qat_epochs=1, n_calib=64)
    _, meta = train_pipeline(mlp_arch([16], k=8, v=4), data, cfg, log=None)
    assert (meta["act_calib"], meta["lut_calib"]) in {(a, b) for a in ("max", "mse") for b in ("max", "mse")}
    assert meta["qat_selected_epoch"] in (0, 1)


def test_shipped_cnn_loads_and_is_accurate() -> None:
    from pathlib import Path

    from pqmodel.model import load
    from pqtrain.train import accuracy, reshape_inputs

    path = Path(__file__).resolve().parents[1] / "models" / "digits_cnn.pt"
    if not path.exists():
        pytest.skip("models/digits_cnn.pt not built")
    model, arch, meta = load(path)
    data = reshape_inputs(load_digits_split(seed=meta["seed"]), arch)
    acc = accuracy(model, data[2], data[3])
    assert acc == meta["pq_test_acc"] and acc >= 0.95
