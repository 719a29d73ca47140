"""Compiler: quantization, the quantized torch model against the golden simulator, layout and tiling,
and the command line's handling of bad input (clear message, exit 2, nothing left behind)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from cases import LayerShape, random_mlp

from pqcompile import backend, cli, graph, quantize, sim
from pqcompile import build as pqbuild
from pqcompile.isa import clamp_range, field_limit
from pqcompile.spec import load
from pqmodel.model import build, save

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "digits_mlp.pt"
SPEC = load()


@pytest.mark.parametrize("ratio", [1e-6, 0.0173, 0.5, 1.0, 3.7, 1000.0])
def test_mult_shift_approximates_ratio(ratio: float) -> None:
    mult, shift = quantize.mult_shift(ratio)
    assert 0 <= shift <= field_limit("quant", "shift") and 0 < mult < 1 << 16
    assert abs(mult / 2**shift - ratio) <= ratio * 2**-14 + 2**-48


def _mlp(cfg_name: str, shapes: list[LayerShape], seed: int, act_bits: int | None = None,
         lut_bits: int | None = None, calib: int = 200) -> tuple[graph.Frontend, dict[str, torch.Tensor], np.ndarray]:
    """A random PQ MLP through the front end, calibrated on ``calib`` random inputs (returned)."""
    rng = np.random.default_rng(seed)
    arch, state = random_mlp(rng, shapes)
    x = rng.normal(0, 1, (calib, shapes[0].d))
    fe = graph.build_graph(arch, state, x, SPEC.config(cfg_name), act_bits=act_bits, lut_bits=lut_bits)
    return fe, state, x


@pytest.mark.parametrize(("config", "act_bits", "lut_bits"),
                         [("small", None, None), ("default", None, None), ("default", 4, 5), ("small", 2, 3)])
@pytest.mark.parametrize("shapes", [
    [LayerShape(20, 13, 5, 3, "l2", True)],
    [LayerShape(16, 64, 16, 4, "l1", False)],
    [LayerShape(30, 24, 7, 8, "l2", True), LayerShape(24, 10, 3, 5, "l1", False)],
], ids=["v_not_dividing_d", "l1_m64", "chain"])
def test_quantized_torch_model_equals_simulator(config: str, act_bits: int | None, lut_bits: int | None,
                                               shapes: list[LayerShape]) -> None:
    """The integer reference (graph.reference, torch) equals the golden simulator running the emitted program;
    activations and tables stay inside the requested widths, the logits keep ActW bits."""
    cfg = SPEC.config(config)
    fe, _, _ = _mlp(config, shapes, 7, act_bits, lut_bits)
    bits = act_bits or cfg.ActW
    x = fe.quantize_input(np.random.default_rng(8).normal(0, 1, (300, shapes[0].d)))
    prog = backend.emit_graph(cfg, fe.graph, x)
    y_sim = backend.read_output(prog.manifest, backend.simulate(cfg, prog).mem)
    y_torch = graph.reference(fe.graph, x, cfg.AccW).reshape(300, -1)
    assert y_sim.shape == (300, shapes[-1].m)
    assert (y_sim == y_torch).all()
    assert y_sim.min() >= -(1 << (cfg.ActW - 1)) and y_sim.max() < 1 << (cfg.ActW - 1)
    assert len(np.unique(y_sim)) >= min(10, 1 << (bits - 1))  # the outputs carry information
    lmax = 1 << ((lut_bits or cfg.LutW) - 1)
    for op in fe.graph.ops:
        assert -lmax <= int(op.lut.min()) and int(op.lut.max()) < lmax
        assert (op.post.bits == bits) == (op.out != fe.graph.output) or bits == cfg.ActW
        lo, hi = clamp_range(False, bits, fe.graph.tensors[op.inp].unsigned)
        assert lo <= int(op.protos.min()) and int(op.protos.max()) <= hi


def test_quantization_tracks_the_float_layer() -> None:
    """The integer layer's dequantized output stays close to the float PQ layer on the same codes."""
    fe, state, x = _mlp("default", [LayerShape(24, 16, 8, 4, "l2", False)], 3, calib=500)
    xq = fe.quantize_input(x)
    (op,) = fe.graph.ops
    s_in = fe.graph.tensors[fe.graph.input].scale
    y_int = graph.reference(fe.graph, xq).reshape(500, -1) * fe.graph.tensors[fe.graph.output].scale
    # the float layer with the same (integer-domain) codes
    idx = sim.encode(xq.reshape(-1, 6, 4), op.protos, 0)
    weight, bias = state["layers.0.weight"].double().numpy(), state["layers.0.bias"].double().numpy()
    lut_f = np.einsum("ckv,mcv->ckm", op.protos * s_in, weight.reshape(16, 6, 4))
    y_f = lut_f[np.arange(6)[None], idx].sum(1) + bias
    err = np.abs(y_int - y_f).max() / np.abs(y_f).max()
    assert err < 0.03


def test_tiling_when_columns_exceed_the_buffers() -> None:
    cfg = SPEC.config("small")
    n = 300  # 300 * 40 bytes > ActBytes = 4096
    fe, _, x = _mlp("small", [LayerShape(40, 50, 4, 8, "l2", True)], 1, calib=n)
    x = fe.quantize_input(x)
    prog = backend.emit_graph(cfg, fe.graph, x)
    lay = prog.manifest["layers"][0]
    assert lay["tile_columns"] == 80 and lay["tiles"] == 4  # min(4096 // 40, 4096 // 50) = 81 -> 80
    res = backend.simulate(cfg, prog)
    out = backend.read_output(prog.manifest, res.mem)
    assert (out == graph.reference(fe.graph, x).reshape(n, -1)).all()


def test_layer_beyond_limits_is_named() -> None:
    fe, _, _ = _mlp("small", [LayerShape(16, 8, 32, 4, "l2", False)], 2)  # k=32 > KMax=16
    with pytest.raises(backend.CompileError, match=r"layer 0 .*k=32 is beyond the hardware limit KMax=16"):
        backend.emit_graph(SPEC.config("small"), fe.graph, np.zeros((4, 16), np.int64))


def _pqcompile(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pqcompile.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT / "sw")})


def test_cli_compiles_the_shipped_model(tmp_path: Path) -> None:
    out = tmp_path / "b"
    assert cli.main([str(MODEL), "-o", str(out), "--config", "small", "--count", "40", "-q"]) == 0
    man = json.loads((out / "manifest.json").read_text())
    assert man["config"] == "small" and man["n_columns"] == 40 and len(man["layers"]) == 2
    _, mem = pqbuild.load(out)
    expected = np.load(out / "expected_output.npy")
    assert (backend.read_output(man, mem) == 0).all()  # outputs are produced by running, not stored
    assert expected.shape == (40, 10)
    assert man["accuracy"]["quantized"] >= 0.9
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def _bad_models(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    data = MODEL.read_bytes()
    trunc = tmp_path / "truncated.pt"
    trunc.write_bytes(data[: len(data) // 2])
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> tuple:
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pt"
    torch.save({"format": "pqa-model", "version": 1, "arch": Evil(), "state_dict": {}, "meta": {}}, evil)
    arch = {"name": "mixed", "input_shape": [64], "num_classes": 10, "layers": [
        {"type": "pq_linear", "in_features": 64, "out_features": 32, "k": 16, "v": 4, "metric": "l2"},
        {"type": "relu"}, {"type": "linear", "in_features": 32, "out_features": 10}]}
    unsupported = tmp_path / "unsupported.pt"
    save(build(arch), arch, unsupported, {})
    big = {**arch, "layers": [
        {"type": "pq_linear", "in_features": 64, "out_features": 10, "k": 64, "v": 4, "metric": "l2"}]}
    too_big = tmp_path / "too_big.pt"
    save(build(big), big, too_big, {})
    return {
        "truncated": (trunc, "truncated or corrupt"),
        "pickled_code": (evil, "refused"),
        # the graph front end names layers by module path and says how to run a float layer on the host
        "unsupported_layer": (unsupported, r"layers\.2 \(linear\): not supported by the accelerator.*"
                                           r"--host-layers layers\.2"),
        "beyond_limits": (too_big, r"layers\.0 .*k=64 is beyond the hardware limit KMax=16"),
        "missing": (tmp_path / "nope.pt", "no such model file"),
    }


@pytest.mark.parametrize("case", ["truncated", "pickled_code", "unsupported_layer", "beyond_limits", "missing"])
def test_cli_refuses_bad_models_and_leaves_nothing(tmp_path: Path, case: str) -> None:
    path, msg = _bad_models(tmp_path)[case]
    out = tmp_path / "out" / "build"
    r = _pqcompile(str(path), "-o", str(out), "--config", "small")
    assert r.returncode == 2, r.stderr
    assert "pqcompile: error:" in r.stderr
    assert __import__("re").search(msg, r.stderr), r.stderr
    assert not out.exists()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert not (tmp_path / "pwned").exists()  # the pickled code never ran


def test_cli_keeps_old_build_on_failure(tmp_path: Path) -> None:
    out = tmp_path / "b"
    assert cli.main([str(MODEL), "-o", str(out), "--config", "small", "--count", "8", "-q"]) == 0
    before = (out / "manifest.json").read_bytes()
    assert cli.main([str(MODEL), "-o", str(out), "--config", "nonexistent", "-q"]) == 2
    assert (out / "manifest.json").read_bytes() == before
