"""Tests of sw/pqtrain: PQLinear semantics, the pqa-model file format (incl. refusal of pickled code), training."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from pqmodel.data import load_digits_split
from pqmodel.layers import PQLinear, kmeans
from pqmodel.model import ModelFormatError, build, load, load_raw, save
from pqtrain.train import TrainConfig, fit, mlp_arch, train_pipeline

MARKER_ENV = "PQTRAIN_TEST_MARKER"


def _small_arch() -> dict[str, Any]:
    return mlp_arch([12], k=4, v=3, metric="l2", name="tiny", in_features=10, num_classes=5)


def test_pqlinear_shapes_and_gradients() -> None:
    torch.manual_seed(0)
    layer = PQLinear(10, 6, k=4, v=3)  # C = 4, padded to 12
    assert layer.prototypes.shape == (4, 4, 3)
    assert layer.lut().shape == (4, 4, 6)
    x = torch.randn(5, 10)
    assert layer.encode(x).shape == (5, 4)
    assert layer.encode(x).dtype == torch.int64
    layer.train()
    layer.temperature = 0.5
    y = layer(x)
    assert y.shape == (5, 6)
    y.square().sum().backward()
    for p in (layer.prototypes, layer.weight, layer.bias):
        assert p.grad is not None and p.grad.abs().sum() > 0
    # straight-through: training-mode value equals the hard eval-mode value
    layer.eval()
    torch.testing.assert_close(layer(x), y.detach())


@pytest.mark.parametrize("metric", ["l2", "l1"])
def test_encode_ties_go_to_lowest_index(metric: str) -> None:
    layer = PQLinear(2, 1, k=4, v=2, metric=metric)
    with torch.no_grad():
        # x = (0, 0): prototypes 1 and 3 are both at distance 1 (l2) / 1 (l1); 0 and 2 are farther
        layer.prototypes.copy_(torch.tensor([[[2.0, 2.0], [1.0, 0.0], [3.0, 0.0], [0.0, -1.0]]]))
    assert layer.encode(torch.zeros(1, 2)).tolist() == [[1]]
    with torch.no_grad():
        layer.prototypes.copy_(torch.tensor([[[5.0, 5.0], [5.0, 5.0], [5.0, 5.0], [5.0, 5.0]]]))
    assert layer.encode(torch.zeros(1, 2)).tolist() == [[0]]


def test_hard_forward_matches_hand_computation() -> None:
    torch.manual_seed(1)
    d, m, k, v = 5, 3, 3, 2  # C = 3, one zero-padded column
    layer = PQLinear(d, m, k=k, v=v)
    layer.eval()
    x = torch.randn(4, d)
    idx = layer.encode(x)
    p = layer.prototypes.detach()
    w = torch.cat([layer.weight.detach(), torch.zeros(m, 1)], dim=1)
    xp = torch.cat([x, torch.zeros(4, 1)], dim=1)
    for n in range(4):
        y = layer.bias.detach().clone()
        for c in range(3):
            dists = [float(((xp[n, c * v : (c + 1) * v] - p[c, j]) ** 2).sum()) for j in range(k)]
            assert idx[n, c] == dists.index(min(dists))
            for mm in range(m):
                y[mm] += float((p[c, idx[n, c]] * w[mm, c * v : (c + 1) * v]).sum())  # LUT[c, idx, m]
        torch.testing.assert_close(layer(x[n : n + 1])[0], y)


def test_kmeans_and_init_from_linear() -> None:
    torch.manual_seed(2)
    centers = torch.tensor([[0.0, 0.0], [5.0, 5.0], [-5.0, 5.0]])
    data = torch.cat([c + 0.1 * torch.randn(50, 2) for c in centers])
    found = kmeans(data, 3, seed=0)
    assert torch.cdist(centers, found).min(dim=1).values.max() < 0.2
    torch.testing.assert_close(found, kmeans(data, 3, seed=0))  # seeded
    lin = nn.Linear(4, 3)
    layer = PQLinear(4, 3, k=3, v=2)
    layer.init_from_linear(lin, torch.randn(40, 4))
    torch.testing.assert_close(layer.weight, lin.weight)
    torch.testing.assert_close(layer.bias, lin.bias)


def test_save_load_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(3)
    arch = _small_arch()
    model = build(arch)
    path = tmp_path / "m.pt"
    save(model, arch, path, {"dataset": "none", "seed": 3})
    loaded, arch2, meta = load(path)
    assert arch2 == arch and meta == {"dataset": "none", "seed": 3}
    assert sorted(load_raw(path)["state_dict"]) == sorted(model.state_dict())
    assert "layers.0.prototypes" in model.state_dict()
    model.eval()
    x = torch.randn(7, 10)
    assert torch.equal(model(x), loaded(x))


class _Evil:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        marker = os.environ[MARKER_ENV]
        return (os.system, (f"touch {marker}",))


def test_pickled_code_is_refused_and_not_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "executed"
    monkeypatch.setenv(MARKER_ENV, str(marker))
    path = tmp_path / "evil.pt"
    torch.save({"format": "pqa-model", "version": 1, "payload": _Evil()}, path)
    assert not marker.exists()
    with pytest.raises(ModelFormatError, match="other than tensors and plain data"):
        load(path)
    assert not marker.exists(), "loading executed code from the file"
    # a custom class instance (no __reduce__ trick) is refused too
    path2 = tmp_path / "obj.pt"
    torch.save({"format": "pqa-model", "obj": TrainConfig()}, path2)
    with pytest.raises(ModelFormatError, match="refused"):
        load(path2)


def test_missing_truncated_and_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ModelFormatError, match="no such"):
        load(tmp_path / "absent.pt")
    arch = _small_arch()
    good = tmp_path / "good.pt"
    save(build(arch), arch, good, {})
    data = good.read_bytes()
    for cut in (len(data) // 2, 10):
        bad = tmp_path / f"trunc{cut}.pt"
        bad.write_bytes(data[:cut])
        with pytest.raises(ModelFormatError):
            load(bad)
    raw = torch.load(good, weights_only=True)

    def _rewrite(obj: dict[str, Any], name: str) -> Path:
        p = tmp_path / name
        torch.save(obj, p)
        return p

    with pytest.raises(ModelFormatError, match="format"):
        load(_rewrite({**raw, "format": "other"}, "fmt.pt"))
    with pytest.raises(ModelFormatError, match="version"):
        load(_rewrite({**raw, "version": 2}, "ver.pt"))
    arch_bad = {**arch, "layers": [*arch["layers"][:1], {"type": "conv9"}, *arch["layers"][2:]]}
    with pytest.raises(ModelFormatError, match=r"layer 1: unknown layer type 'conv9'"):
        load(_rewrite({**raw, "arch": arch_bad}, "type.pt"))
    sd = dict(raw["state_dict"])
    sd.pop("layers.0.weight")
    with pytest.raises(ModelFormatError, match="missing keys"):
        load(_rewrite({**raw, "state_dict": sd}, "missing.pt"))
    sd = {**raw["state_dict"], "layers.9.weight": torch.zeros(1)}
    with pytest.raises(ModelFormatError, match="unexpected keys"):
        load(_rewrite({**raw, "state_dict": sd}, "extra.pt"))
    sd = {**raw["state_dict"], "layers.0.prototypes": torch.zeros(2, 2, 2)}
    with pytest.raises(ModelFormatError, match="shape"):
        load(_rewrite({**raw, "state_dict": sd}, "shape.pt"))


def test_digits_split_is_fixed() -> None:
    a = load_digits_split(seed=0)
    b = load_digits_split(seed=0)
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    x_tr, y_tr, x_te, y_te = a
    assert x_tr.shape[1] == 64 and x_tr.dtype == torch.float32 and float(x_tr.max()) <= 1.0
    assert x_te.shape[0] == 450 and y_te.dtype == torch.int64


def test_training_steps_lower_loss() -> None:
    torch.manual_seed(4)
    x_tr, y_tr, x_te, y_te = load_digits_split(seed=0)
    data = (x_tr[:192], y_tr[:192], x_te[:64], y_te[:64])
    model = build(mlp_arch([16], k=8, v=4))
    losses = fit(model, list(model.parameters()), data, epochs=4, lr=1e-2, seed=0,
                 temperature=lambda e: 1.0, log=None)
    assert losses[-1] < losses[0]


def test_pipeline_smoke_is_deterministic() -> None:
    x_tr, y_tr, x_te, y_te = load_digits_split(seed=0)
    data = (x_tr[:128], y_tr[:128], x_te[:64], y_te[:64])
    cfg = TrainConfig(float_epochs=2, pq_epochs=1, kmeans_iters=3)
    m1, meta1 = train_pipeline(mlp_arch([16], k=8, v=4), data, cfg, log=None)
    m2, meta2 = train_pipeline(mlp_arch([16], k=8, v=4), data, cfg, log=None)
    assert meta1["pq_test_acc"] == meta2["pq_test_acc"]
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values(), strict=True))


def test_shipped_model_loads_and_is_accurate() -> None:
    path = Path(__file__).resolve().parents[1] / "models" / "digits_mlp.pt"
    if not path.exists():
        pytest.skip("models/digits_mlp.pt not built")
    model, arch, meta = load(path)
    _, _, x_te, y_te = load_digits_split(seed=meta["seed"])
    acc = (model(x_te).argmax(-1) == y_te).float().mean().item()
    assert acc == pytest.approx(meta["pq_test_acc"]) and acc >= 0.95
    for layer in arch["layers"]:
        if layer["type"] == "pq_linear":
            c = -(-layer["in_features"] // layer["v"])
            assert layer["k"] <= 16 and layer["v"] <= 8 and c <= 32 and layer["out_features"] <= 64
