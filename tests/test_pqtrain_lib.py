"""Tests of the pqtrain library additions: PQConv2d, soft/STE assignment, conversion, the zoo, the integer
pipeline export and quantization-aware training (fake-quant == pqcompile's integer pipeline)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pqmodel.data import load_digits_split
from pqmodel.layers import PQConv2d, PQLinear
from pqmodel.model import ModelFormatError, build, load, save, validate_arch
from pqtrain import zoo
from pqtrain.integer import IntegerNet, calibrate_qat, clear_qat, export_integer
from pqtrain.train import (
    TrainConfig,
    convert_to_pq,
    finetune,
    fit,
    float_arch,
    mlp_arch,
    pq_arch_from_float,
    reshape_inputs,
    trainable_parameters,
)


def test_pqconv2d_shapes_and_gradients() -> None:
    torch.manual_seed(0)
    conv = PQConv2d(3, 5, 3, k=4, v=9, stride=2, padding=1)
    assert conv.c == 3 and conv.weight.shape == (5, 3, 3, 3) and conv.prototypes.shape == (3, 4, 9)
    x = torch.randn(2, 3, 7, 7)
    conv.train()
    conv.temperature = 0.5
    y = conv(x)
    assert y.shape == (2, 5, 4, 4)
    y.square().sum().backward()
    for p in (conv.prototypes, conv.weight, conv.bias):
        assert p.grad is not None and p.grad.abs().sum() > 0
    conv.eval()
    torch.testing.assert_close(conv(x), y.detach())  # straight-through: value is the hard one
    assert conv.encode(x).shape == (2 * 16, 3)


def test_pqconv2d_hard_forward_equals_unfold_reference() -> None:
    torch.manual_seed(1)
    cin, cout, k = 2, 3, 3
    conv = PQConv2d(cin, cout, 2, k=k, v=4, padding=1)  # v = kh*kw: subspace c = channel c's 2x2 patch
    conv.eval()
    x = torch.randn(1, cin, 3, 3)
    xp = nn.functional.pad(x, (1, 1, 1, 1))
    p, w, b = conv.prototypes.detach(), conv.weight.detach(), conv.bias.detach()
    want = torch.zeros(1, cout, 4, 4)
    for i in range(4):
        for j in range(4):
            for m in range(cout):
                acc = float(b[m])
                for c in range(cin):
                    patch = xp[0, c, i : i + 2, j : j + 2].reshape(4)
                    dists = [float(((patch - p[c, kk]) ** 2).sum()) for kk in range(k)]
                    best = dists.index(min(dists))
                    acc += float((p[c, best] * w[m, c].reshape(4)).sum())  # LUT[c, best, m]
                want[0, m, i, j] = acc
    torch.testing.assert_close(conv(x), want)


@pytest.mark.parametrize("cls", ["linear", "conv"])
def test_soft_and_hard_agree_as_temperature_goes_to_zero(cls: str) -> None:
    torch.manual_seed(2)
    layer: PQLinear = PQLinear(8, 4, k=5, v=2) if cls == "linear" else PQConv2d(2, 4, 2, k=5, v=2)
    x = torch.randn(6, 8) if cls == "linear" else torch.randn(3, 2, 4, 4)
    layer.eval()
    hard = layer(x)
    layer.train()
    layer.assign_mode = "soft"
    gaps = []
    for t in (1.0, 0.1, 1e-3, 1e-5):
        layer.temperature = t
        gaps.append(float((layer(x) - hard).abs().max().detach()))
    assert gaps[0] > 1e-3 and gaps[-1] < 1e-5 and gaps == sorted(gaps, reverse=True)


def test_conversion_uses_real_activations_for_conv() -> None:
    torch.manual_seed(3)
    arch = zoo.digits_cnn(k=4)
    data = reshape_inputs(load_digits_split(), arch)
    fmodel = build(float_arch(arch))
    x = data[0][:16]
    pq = convert_to_pq(fmodel, arch, x, kmeans_iters=3)
    fstate = fmodel.state_dict()
    for key, val in pq.state_dict().items():
        if not key.endswith("prototypes"):
            assert torch.equal(val, fstate[key])
    # the second conv's prototypes are k-means centroids of its real (ReLU'd) input columns: all >= 0
    conv2 = pq.layers[2]
    assert isinstance(conv2, PQConv2d) and float(conv2.prototypes.detach().min()) >= 0
    with torch.no_grad():
        cols = conv2._split(conv2.columns(torch.relu(pq.layers[0](x))))
    assert float(cols.max()) >= float(conv2.prototypes.detach().max()) - 1e-5  # inside the data's hull


def test_pq_arch_from_float_selects_layers() -> None:
    farch = float_arch(zoo.digits_cnn())
    pq = pq_arch_from_float(farch, k=8, v=4, select=lambda path, layer: layer["type"] == "conv2d")
    kinds = [layer["type"] for layer in pq["layers"]]
    assert kinds == ["pq_conv2d", "relu", "pq_conv2d", "relu", "flatten", "linear"]
    assert pq["layers"][0]["k"] == 8


@pytest.mark.parametrize("name", [n if n != "resnet20" else pytest.param(n, marks=pytest.mark.slow) for n in zoo.ZOO])
def test_zoo_round_trip(name: str, tmp_path: Path) -> None:
    torch.manual_seed(4)
    arch = zoo.arch(name)
    model = zoo.build_model(name)
    model.eval()
    path = tmp_path / f"{name}.pt"
    save(model, arch, path, {"zoo": name})
    loaded, arch2, _ = load(path)
    assert arch2 == arch
    x = torch.rand(1, *arch["input_shape"])
    assert torch.equal(model(x), loaded(x))


def test_zoo_layer_shapes_match_pqa() -> None:
    pq = zoo.build_model("resnet20").pq_layers()
    convs = [m for m in pq if m.kernel_size == (3, 3)]
    assert len(convs) == 18 and all(m.k == 16 and m.v == 9 and m.c == m.in_channels for m in convs)
    assert [m.out_channels for m in convs] == [16] * 6 + [32] * 6 + [64] * 6
    proj = [m for m in pq if m.kernel_size == (1, 1)]  # option-B shortcuts of the two down-sampling blocks
    assert [(m.in_channels, m.out_channels, m.stride, m.v) for m in proj] == [(16, 32, 2, 4), (32, 64, 2, 4)]
    kws = zoo.build_model("kws").pq_layers()
    assert [m.out_features for m in kws] == [120, 84, 84, 84, 196] and all(m.v == 4 for m in kws)
    em = zoo.build_model("emnist").pq_layers()
    assert [m.out_features for m in em] == [96, 120, 150, 187, 234, 292, 366, 457, 572, 512]


def test_bad_conv_arch_is_refused() -> None:
    arch = zoo.digits_cnn()
    bad = {**arch, "layers": [{**arch["layers"][0], "in_channels": 3}, *arch["layers"][1:]]}
    with pytest.raises(ModelFormatError, match=r"layer 0 \(pq_conv2d\): in_channels 3"):
        validate_arch(bad)
    res = zoo.resnet20()
    blk = res["layers"][3]
    body = [{**blk["body"][0], "out_channels": 32}]
    bad_res = {**res, "layers": [*res["layers"][:3], {**blk, "body": body}, *res["layers"][4:]]}
    with pytest.raises(ModelFormatError, match=r"layer 3 \(residual\): body gives \[32, 32, 32\]"):
        validate_arch(bad_res)
    body = [*blk["body"][:1], {"type": "batchnorm2d", "num_features": 8}]
    bad_res = {**res, "layers": [*res["layers"][:3], {**blk, "body": body}, *res["layers"][4:]]}
    with pytest.raises(ModelFormatError, match=r"layer 3.body.1 \(batchnorm2d\)"):
        validate_arch(bad_res)
    with pytest.raises(ModelFormatError, match="unknown layer type"):
        validate_arch({**arch, "layers": [{"type": "conv3d"}]})


@pytest.mark.parametrize("method", ["ste", "ste-prototypes", "ste-weights", "soft", "lutnn"])
def test_finetune_methods_lower_the_loss(method: str) -> None:
    torch.manual_seed(5)
    x_tr, y_tr, x_te, y_te = load_digits_split()
    data = (x_tr[:128], y_tr[:128], x_te[:32], y_te[:32])
    arch = mlp_arch([16], k=8, v=4)
    fmodel = build(float_arch(arch))
    fit(fmodel, list(fmodel.parameters()), data, 3, 1e-2, log=None)
    pq = convert_to_pq(fmodel, arch, data[0], kmeans_iters=3)
    frozen = {id(p) for p in pq.parameters()} - {id(p) for p in trainable_parameters(pq, method)}
    before = {k: v.clone() for k, v in pq.state_dict().items()}
    cfg = TrainConfig(method=method, pq_epochs=3, pq_lr=3e-3, distill=0.0, val_fraction=0.0)  # no selection
    losses = finetune(pq, data, cfg, log=None)
    assert losses[-1] < losses[0]
    for name, p in pq.named_parameters():
        assert torch.equal(p, before[name]) == (id(p) in frozen), name


def test_conv_training_steps_lower_loss() -> None:
    torch.manual_seed(6)
    arch = zoo.digits_cnn(k=4)
    x_tr, y_tr, x_te, y_te = reshape_inputs(load_digits_split(), arch)
    model = build(arch)
    losses = fit(model, list(model.parameters()), (x_tr[:64], y_tr[:64], x_te[:16], y_te[:16]), epochs=3,
                 lr=1e-2, temperature=lambda e: 1.0, log=None)
    assert losses[-1] < losses[0]


def _trained_small_mlp() -> tuple[nn.Module, dict, tuple]:
    torch.manual_seed(7)
    x_tr, y_tr, x_te, y_te = load_digits_split()
    data = (x_tr[:300], y_tr[:300], x_te[:100], y_te[:100])
    arch = mlp_arch([24], k=8, v=4)
    fmodel = build(float_arch(arch))
    fit(fmodel, list(fmodel.parameters()), data, 8, 1e-2, log=None)
    return convert_to_pq(fmodel, arch, data[0], kmeans_iters=5), arch, data


def _on_simulator(inet: IntegerNet, x: torch.Tensor, config: str = "default") -> torch.Tensor:
    """The exported graph compiled by pqcompile's back end and run on the golden simulator: outputs [N, M]."""
    from pqcompile import backend
    from pqcompile.spec import load as load_spec

    cfg = load_spec().config(config)
    prog = backend.emit_graph(cfg, inet.graph, inet.quantize_input(x).numpy())
    y = backend.read_output(prog.manifest, backend.simulate(cfg, prog).mem).astype(np.int64)
    return torch.from_numpy(y.reshape(len(x), -1))


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_qat_forward_equals_exported_integer_pipeline(bits: int) -> None:
    pq, arch, (x_tr, _, x_te, _) = _trained_small_mlp()
    inet = calibrate_qat(pq, arch, x_tr[:256], bits)
    ints = inet(x_te)
    assert torch.equal(ints, _on_simulator(inet, x_te))  # the export is what the accelerator computes
    if bits < 8:  # below ActW the non-negative digits input and the ReLU output are unsigned (quant.unsigned)
        g = inet.graph
        assert g.tensors[g.input].unsigned and g.tensors[g.ops[0].out].unsigned
        assert not g.tensors[g.output].unsigned
    pq.eval()
    fq = pq(x_te).double()  # fake-quant forward (eval: hard assignment)
    assert torch.equal(torch.round(fq / inet.output_scale).long(), ints)
    torch.testing.assert_close(fq, ints.double() * inet.output_scale, rtol=1e-6, atol=1e-6)  # float32 output
    # in training mode (straight-through) the value is the same and gradients reach every parameter
    pq.train()
    out = pq(x_te)
    assert torch.equal(torch.round(out.double() / inet.output_scale).long(), ints)
    out.square().sum().backward()
    assert all(p.grad is not None for p in pq.parameters())
    clear_qat(pq)


def test_integer_export_of_conv_net_runs_and_agrees_with_fake_quant() -> None:
    torch.manual_seed(8)
    arch = zoo.digits_cnn(k=4)
    x_tr, _, x_te, _ = reshape_inputs(load_digits_split(), arch)
    pq = convert_to_pq(build(float_arch(arch)), arch, x_tr[:64], kmeans_iters=3)
    inet = calibrate_qat(pq, arch, x_tr[:64], 6)
    pq.eval()
    ints = inet(x_te[:40])
    # 6-bit activations between layers, ActW (8)-bit logits at the output
    bits = {t.name: t.bits for t in inet.graph.tensors.values()}
    assert bits.pop(inet.graph.output) == 8 and set(bits.values()) == {6}
    assert ints.shape == (40, 10) and 32 < int(ints.abs().max()) <= 127
    assert torch.equal(torch.round(pq(x_te[:40]).double() / inet.output_scale).long(), ints)
    clear_qat(pq)
    with pytest.raises(ValueError, match="not supported by the integer pipeline"):
        export_integer(zoo.build_model("resnet20"), zoo.resnet20(), torch.rand(2, 3, 32, 32))


def test_shipped_mlp_export_matches_pqcompile_report() -> None:
    path = Path(__file__).resolve().parents[1] / "models" / "digits_mlp.pt"
    model, arch, meta = load(path)
    x_tr, _, x_te, y_te = load_digits_split(seed=meta["seed"])
    inet = export_integer(model, arch, x_tr[:256], 8)
    assert torch.equal(inet(x_te), _on_simulator(inet, x_te, "small"))  # "small": its LUT is 8 bits wide
    acc = inet.accuracy(x_te, y_te)
    if "qat_bits" in meta:
        assert acc == pytest.approx(meta["int_test_acc"])
    assert acc >= 0.96
