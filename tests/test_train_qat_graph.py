"""Quantization-aware training of whole CNNs (pqtrain.integer.compute_qat / install_qat): PQ layers with batch
norm folded in, residual adds (identity and projection shortcuts), global average pooling, host layers before
and after the accelerator. Right after calibration the fake-quant forward equals the compiler's integer
reference (pqcompile.graph.reference), integer for integer; QAT then trains ResNet-20 in the pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from pqmodel.model import build
from pqtrain.integer import clear_qat, compute_qat, export_integer, install_qat
from pqtrain.run import Checkpoints, Run, Stopped
from pqtrain.train import TrainConfig, train_pipeline


def _pq(cin: int, cout: int, ks: int, v: int, stride: int = 1, pad: int = 0) -> dict[str, Any]:
    return {"type": "pq_conv2d", "in_channels": cin, "out_channels": cout, "kernel_size": ks, "stride": stride,
            "padding": pad, "k": 8, "v": v, "metric": "l2", "bias": False}


def _bn(ch: int) -> dict[str, Any]:
    return {"type": "batchnorm2d", "num_features": ch}


ARCH: dict[str, Any] = {"name": "tiny_resnet", "input_shape": [3, 8, 8], "num_classes": 3, "layers": [
    {"type": "conv2d", "in_channels": 3, "out_channels": 4, "kernel_size": 3, "padding": 1, "bias": False},
    _bn(4), {"type": "relu"},
    {"type": "residual", "body": [_pq(4, 4, 3, 9, 1, 1), _bn(4), {"type": "relu"}, _pq(4, 4, 3, 9, 1, 1), _bn(4)],
     "shortcut": []}, {"type": "relu"},
    {"type": "residual", "body": [_pq(4, 8, 3, 9, 2, 1), _bn(8), {"type": "relu"}, _pq(8, 8, 3, 9, 1, 1), _bn(8)],
     "shortcut": [_pq(4, 8, 1, 4, 2, 0), _bn(8)]}, {"type": "relu"},
    {"type": "global_avgpool"}, {"type": "linear", "in_features": 8, "out_features": 3}]}
HOSTS = ["layers.0", "layers.1", "layers.2", "layers.8"]


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build(ARCH)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():  # batch-norm statistics that are not the identity
        for _ in range(3):
            model(torch.rand(16, 3, 8, 8, generator=gen))
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.uniform_(-0.2, 0.2, generator=gen)
    return model.eval()


@pytest.mark.parametrize("bits", [8, 4])
def test_fake_quant_forward_equals_the_integer_reference(bits: int) -> None:
    model = _model()
    gen = torch.Generator().manual_seed(1)
    calib, x = torch.rand(32, 3, 8, 8, generator=gen), torch.rand(12, 3, 8, 8, generator=gen)
    inet = export_integer(model, ARCH, calib, bits, host_layers=HOSTS)
    plan = compute_qat(model, ARCH, calib, bits, host_layers=HOSTS)
    assert len(plan.layers) == 5 and all(p.bn for p in plan.layers.values()) and len(plan.adds) == 2
    assert set(plan.inputs) == {"layers.2"} and set(plan.pools) == {"layers.7"}
    model.double()  # the host layers run in float64, as pqcompile's host side does
    install_qat(model, plan)
    pooled: list[torch.Tensor] = []
    hook = model.layers[7].register_forward_hook(lambda _m, _a, out: pooled.append(out))
    with torch.no_grad():
        logits = model(x.double())
    hook.remove()
    want = inet(x)  # the accelerator's integer outputs: the pooled channels
    assert torch.equal(torch.round(pooled[0] / plan.pools["layers.7"].out_scale).long(), want)
    assert torch.allclose(logits, inet.dequantized(x), rtol=0, atol=1e-12)  # then the host classifier
    clear_qat(model)
    with torch.no_grad():
        assert not torch.equal(model(x.double()), logits)  # off again: the float model
    assert not getattr(model, "_qat_handles", [])


def test_gradients_reach_weights_prototypes_and_batch_norm() -> None:
    model = _model()
    calib = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    install_qat(model, compute_qat(model, ARCH, calib, 8, host_layers=HOSTS))
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    model.set_temperature(0.5)
    torch.nn.functional.cross_entropy(model(calib), torch.zeros(16, dtype=torch.long)).backward()
    block = model.layers[5]
    assert block.body[0].prototypes.grad.abs().sum() > 0 and block.body[0].weight.grad.abs().sum() > 0
    assert block.body[1].weight.grad.abs().sum() > 0 and block.shortcut[1].bias.grad.abs().sum() > 0
    assert model.layers[0].weight.grad.abs().sum() > 0  # through the input quantization to the host stem


def test_pipeline_qat_of_a_residual_network_resumes_bit_exactly(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(3)
    x, y = torch.rand(60, 3, 8, 8, generator=gen), torch.randint(0, 3, (60,), generator=gen)
    data = (x[:48], y[:48], x[48:], y[48:])
    cfg = TrainConfig(float_epochs=1, pq_epochs=1, qat_bits=8, qat_epochs=2, kmeans_iters=2, batch_size=16,
                      n_calib=16, calib="max", host_layers=HOSTS, qat_val_images=5, augment=True, fast_dist=True)
    model, meta = train_pipeline(ARCH, data, cfg, log=None)
    assert meta["qat_selected_epoch"] in (0, 1, 2) and "--host-layers layers.0" in meta["compile_hint"]
    assert not getattr(model, "_qat_handles", []) and all(m.qat is None for m in model.pq_layers())
    with pytest.raises(Stopped):  # stopped after the first QAT epoch
        train_pipeline(ARCH, data, cfg, log=None, run=Run(checkpoints=Checkpoints(tmp_path), stop_after=3))
    again, meta2 = train_pipeline(ARCH, data, cfg, log=None, run=Run(checkpoints=Checkpoints(tmp_path, resume=True)))
    sa, sb = model.state_dict(), again.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa) and meta2 == meta
