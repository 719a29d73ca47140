"""``pqcompile model.pt -o build/<name>/``: a saved PQ model -> a build directory for the accelerator.

Exit status: 0 on success; 2 when the input is refused (bad model file, unsupported layer, bad option);
1 when an internal check fails (the quantized torch model and the simulator disagree).
Nothing is left behind on failure: the build directory appears only when complete.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import backend, quantize
from .spec import load as load_spec


class UsageError(ValueError):
    pass


def _inputs(spec: str, arch: dict[str, Any], count: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Returns (inputs, labels or None, calibration inputs)."""
    from pqtrain.data import load_digits_split

    x_tr, _y_tr, x_te, y_te = (np.asarray(t) for t in load_digits_split())
    calib = x_tr[:256]
    if spec == "digits-test":
        if list(arch.get("input_shape", [])) != [x_te.shape[1]]:
            raise UsageError(f"--inputs digits-test gives {x_te.shape[1]} features; "
                             f"the model wants {arch.get('input_shape')}")
        return x_te[:count], y_te[:count], calib
    path = Path(spec)
    if not path.exists():
        raise UsageError(f"--inputs {spec}: no such file (use digits-test or a .npy file of float inputs)")
    try:
        x = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise UsageError(f"--inputs {spec}: not a readable .npy array ({exc})") from None
    if x.ndim != 2:
        raise UsageError(f"--inputs {spec}: expected a 2-D array [n, features], got shape {list(x.shape)}")
    return x[:count].astype(np.float32), None, x[: min(len(x), 256)].astype(np.float32)


def compile_model(model_path: str, out: str, config: str = "default", inputs: str = "digits-test",
                  count: int = 100, quiet: bool = False, act_bits: int | None = None,
                  lut_bits: int | None = None, act_calib: str = "max", lut_calib: str = "max") -> dict[str, Any]:
    from pqtrain.model import load as load_model

    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    t0 = time.perf_counter()
    try:
        cfg = load_spec().config(config)
    except KeyError as exc:
        raise UsageError(str(exc.args[0])) from None
    if count < 1:
        raise UsageError("--count must be at least 1")
    model, arch, meta = load_model(model_path)
    name = str(arch.get("name", Path(model_path).stem))
    say(f"pqcompile: {model_path} ({name}) for config '{cfg.name}'")
    flayers = quantize.extract(arch, model.state_dict())
    x, labels, calib = _inputs(inputs, arch, count)
    qlayers, s_in = quantize.quantize_layers(cfg, flayers, calib, act_bits=act_bits, lut_bits=lut_bits,
                                             act_calib=act_calib, lut_calib=lut_calib)
    xq = quantize.quantize_act(x, s_in, qlayers[0].bits)
    prog = backend.emit(cfg, qlayers, xq, name=name)
    res = backend.simulate(cfg, prog)
    y_sim = backend.read_output(prog.manifest, res.mem)
    with torch.no_grad():
        y_torch = quantize.QuantPQNet(qlayers, cfg.AccW)(torch.from_numpy(xq)).numpy()
        y_float = model.eval()(torch.from_numpy(np.asarray(x, np.float32))).numpy()
    n_diff = int((y_torch != y_sim).sum())
    if n_diff:
        raise RuntimeError(f"quantized torch model and golden simulator differ in {n_diff} of {y_sim.size} outputs")
    say(f"  quantized torch model == golden simulator: {y_sim.size} outputs, bit-exact")
    acc: dict[str, float] = {}
    extra = {"inputs_float": np.asarray(x, np.float32), "inputs": xq.astype(np.int8)}
    if labels is not None:
        acc = {"float": float((y_float.argmax(1) == labels).mean()),
               "quantized": float((y_sim.argmax(1) == labels).mean())}
        extra["labels"] = labels.astype(np.int64)
    manifest = backend.write_build(out, cfg, prog, res, extra=extra, manifest_extra={
        "source_model": str(model_path), "input_scale": s_in, "act_bits": qlayers[0].bits,
        "lut_bits": lut_bits or cfg.LutW, "act_calib": act_calib, "lut_calib": lut_calib, "accuracy": acc,
        "n_columns": int(x.shape[0]),
        "model_meta": meta,
    })
    say(report(manifest))
    if acc:
        say(f"  accuracy on {x.shape[0]} inputs: float PQ model {100 * acc['float']:.2f}%, "
            f"quantized (integer pipeline) {100 * acc['quantized']:.2f}%")
    say(f"  wrote {out}/ ({manifest['n_insns']} instructions, {manifest['mem_bytes']} bytes of memory image) "
        f"in {time.perf_counter() - t0:.1f} s")
    return manifest


def report(manifest: dict[str, Any]) -> str:
    rows = [f"  {'layer':<14}{'d':>5}{'m':>5}{'c':>4}{'k':>4}{'v':>4} {'metric':<7}{'relu':<6}"
            f"{'table B':>9}{'tiles':>6}{'mult':>7}{'shift':>6}{'bits':>5}{'pred. cycles':>14}"]
    for lay in manifest["layers"]:
        rows.append(f"  {lay['name']:<14}{lay['d']:>5}{lay['m']:>5}{lay['c']:>4}{lay['k']:>4}{lay['v']:>4} "
                    f"{lay['metric']:<7}{str(lay['relu']):<6}{lay['table_bytes']:>9}{lay['tiles']:>6}"
                    f"{lay['mult']:>7}{lay['shift']:>6}{lay['bits']:>5}{lay.get('predicted_cycles', 0):>14}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    from pqtrain.model import ModelFormatError

    ap = argparse.ArgumentParser(prog="pqcompile", description="Compile a saved PQ model for the PQA accelerator.")
    ap.add_argument("model", help="model file written by pqtrain (state dict + architecture, loaded weights-only)")
    ap.add_argument("-o", "--out", required=True, help="build directory to write (replaced only when complete)")
    ap.add_argument("--config", default="default", help="hardware configuration from the spec (default: default)")
    ap.add_argument("--inputs", default="digits-test",
                    help="inputs to run: 'digits-test' (the fixed test split) or a .npy file [n, features]")
    ap.add_argument("--count", type=int, default=100, help="number of input columns (default 100)")
    ap.add_argument("--act-bits", type=int, default=None,
                    help="activation and prototype width, 2..ActW (default: the config's ActW)")
    ap.add_argument("--lut-bits", type=int, default=None,
                    help="table entry width, 2..LutW (default: the config's LutW)")
    ap.add_argument("--act-calib", default="max", choices=["max", "percentile", "mse"],
                    help="how activation scales are calibrated (default max; mse helps below 6 bits)")
    ap.add_argument("--lut-calib", default="max", choices=["max", "percentile", "mse"],
                    help="how table scales are calibrated (default max)")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args(argv)
    try:
        compile_model(args.model, args.out, args.config, args.inputs, args.count, args.quiet, args.act_bits,
                      args.lut_bits, args.act_calib, args.lut_calib)
    except (ModelFormatError, backend.CompileError, UsageError) as exc:
        print(f"pqcompile: error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        print(f"pqcompile: internal check failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
