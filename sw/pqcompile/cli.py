"""``pqcompile model.pt -o build/<name>/``: a saved PQ model (MLP or CNN) -> a build directory for the accelerator.

Flow: the front end (``pqcompile.graph.build_graph``: extraction, batch-norm folding, ReLU fusion,
quantization; host layers split off) -> the back end (``pqcompile.backend.emit_graph``: layout, tiling,
allocation, emission) -> the golden simulator -> the check that the quantized model in torch
(``graph.reference``) equals the simulator bit for bit -> the build directory and the per-layer report.

Exit status: 0 on success; 2 when the input is refused (bad model file, unsupported layer, bad option);
1 when an internal check fails (the quantized torch model and the simulator disagree).
Nothing is left behind on failure: the build directory appears only when complete. On a terminal a bar names the
phase running (load, quantize, emit, simulate, check, write); the last line gives the time of each
(``pqcompile.progress``).
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import backend, build, graph, sim
from .clitools import ArgumentParser, printable
from .options import OP_ORDERS, BuildConfig, OptionError
from .progress import Phases
from .spec import HwConfig
from .spec import load as load_spec

CALIB_MAX = 256  # calibration inputs taken from the training split or the .npy file
CALIB_RANDOM = 4  # calibration inputs drawn for --inputs random (cycle counts do not depend on data)
# input elements of one build (count x input size): their int8 copy must fit the memory image's 32-bit address
# space with room for tables and activations, and their float32 copies the compiling machine's memory
MAX_INPUT_ELEMENTS = 1 << 26
# the phases of a compile, as the progress bar names them (pqcompile.progress.Phases)
PHASES = ("load", "quantize", "emit", "simulate", "check", "write")


class UsageError(ValueError):
    pass


def _inputs(spec: str, arch: dict[str, Any], count: int, seed: int = 0
            ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Returns (inputs [n, *input_shape], labels or None, calibration inputs)."""
    shape = [int(s) for s in arch.get("input_shape", [])]
    per_input = int(np.prod(shape)) if shape else 1
    if count * per_input > MAX_INPUT_ELEMENTS:
        raise UsageError(f"--count {count}: {count} inputs of shape {shape} are {count * per_input} elements; a build "
                         f"holds at most {MAX_INPUT_ELEMENTS} ({MAX_INPUT_ELEMENTS >> 20} Mi) input elements")
    if spec == "random":
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((count, *shape)).astype(np.float32)
        return x, None, rng.standard_normal((CALIB_RANDOM, *shape)).astype(np.float32)
    if spec == "digits-test":
        from pqmodel.data import load_digits_split

        x_tr, _y_tr, x_te, y_te = (np.asarray(t) for t in load_digits_split())
        if int(np.prod(shape)) != x_te.shape[1] or shape not in ([x_te.shape[1]], [1, 8, 8]):
            raise UsageError(f"--inputs digits-test gives 8x8 digits ([{x_te.shape[1]}] or [1, 8, 8]); the model "
                             f"wants {shape}: pass --inputs FILE.npy (float [n, {', '.join(map(str, shape))}]) "
                             "or --inputs random")
        return (x_te[:count].reshape(-1, *shape), y_te[:count],
                x_tr[:CALIB_MAX].reshape(-1, *shape))
    path = Path(spec)
    if not path.exists():
        raise UsageError(f"--inputs {spec}: no such file (use digits-test, random or a .npy file of float inputs)")
    if not path.is_file():
        raise UsageError(f"--inputs {spec}: not a file")
    try:
        x = np.load(path, allow_pickle=False, mmap_mode="r")  # a large file is not read whole
    except (ValueError, OSError, EOFError) as exc:
        raise UsageError(f"--inputs {spec}: not a readable .npy array ({printable(exc)})") from None
    if not isinstance(x, np.ndarray):  # np.load gives an NpzFile for .npz archives
        if hasattr(x, "close"):
            x.close()
        raise UsageError(f"--inputs {spec}: an .npz archive; give one .npy array [n, {', '.join(map(str, shape))}] "
                         "(numpy.save)")
    if x.ndim < 2 or list(x.shape[1:]) != shape or x.shape[0] < 1:
        raise UsageError(f"--inputs {spec}: expected an array [n, {', '.join(map(str, shape))}] "
                         f"(the model's input_shape), got shape {list(x.shape)}")
    if x.dtype.fields is not None or not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise UsageError(f"--inputs {spec}: expected real numbers, got dtype {x.dtype}")
    with np.errstate(over="ignore"):
        x = x[: max(count, CALIB_MAX)].astype(np.float32)
    if not np.isfinite(x).all():
        raise UsageError(f"--inputs {spec}: expected finite float32 numbers, got NaN, inf or values beyond "
                         "float32's range")
    return x[:count], None, x[:CALIB_MAX]


def _check_out(out: str) -> None:
    """``-o`` may name a new path, an empty directory or an intact earlier build holding only its own files
    (replaced when the new one is complete): never anything else (``pqcompile.build.check_target``)."""
    try:
        build.check_target(out)
    except build.BuildError as exc:
        raise UsageError(str(exc)) from None


def _bytes(n: int) -> str:
    return f"{n} byte" if n == 1 else f"{n} bytes"


def _auto_line(cfg: HwConfig, mem_bw: int, timed: list[tuple[float, str]]) -> str:
    """What ``--batch-from auto`` picked (``backend.auto_split``'s candidates, fastest first), one line."""
    if not timed:
        return "  --batch-from auto: one input a pass, nothing to batch"
    bw = _bytes(sim.bytes_per_cycle(cfg, mem_bw))
    best = f"{timed[0][1]} ({timed[0][0]:,.0f} cycles per input)"
    rest = ", ".join(f"{what} {c:,.0f}" for c, what in timed[1:4])
    return (f"  --batch-from auto: {best}, the fastest of {len(timed)} schedules on the cycle model at {bw} a cycle "
            f"(next: {rest})")


def compile_model(model_path: str, out: str, bc: BuildConfig | None = None, *, quiet: bool = False
                  ) -> dict[str, Any]:
    """Compile ``model_path`` into build directory ``out`` as ``bc`` says (default: :class:`BuildConfig`'s
    defaults); the manifest it wrote."""
    from pqmodel.model import load as load_model

    t0 = time.perf_counter()
    bc = bc or BuildConfig()
    try:
        cfg = load_spec().config(bc.config)
    except KeyError as exc:
        raise UsageError(str(exc.args[0])) from None
    _check_out(out)
    # a bar over the phases on a terminal (a big network takes minutes: calibration and the golden simulation);
    # in a log nothing but the lines below, the last one with the time of each phase
    with Phases("pqcompile", PHASES, quiet=quiet) as phases:
        say = (lambda text: None) if quiet else phases.write
        with phases.phase("load"):
            model, arch, meta = load_model(model_path)
            name = str(arch.get("name", Path(model_path).stem))
            say(f"pqcompile: {printable(model_path)} ({printable(name)}) for config '{cfg.name}'")
            x, labels, calib = _inputs(bc.inputs, arch, bc.count, bc.seed)
        with phases.phase("quantize"):
            fe = graph.build_graph(arch, model.state_dict(), calib, cfg, act_bits=bc.act_bits, lut_bits=bc.lut_bits,
                                   act_calib=bc.act_calib, lut_calib=bc.lut_calib, host_layers=bc.host_layers,
                                   name=name)
            g = fe.graph
            xq = fe.quantize_input(x)
        with phases.phase("emit"):
            batch, batch_from, mirror = bc.batch, bc.batch_from, False
            if batch_from == backend.AUTO:
                batch_from, batch, timed = backend.auto_split(cfg, g, xq, batch, bc.mem_bw)
                say(_auto_line(cfg, bc.mem_bw, timed))
            if bc.op_order == "auto":
                g, moved, timed_order = backend.order_ops(cfg, g, xq, batch, batch_from, bc.mem_bw)
                if timed_order:
                    say(_order_line(cfg, bc.mem_bw, moved, timed_order))
                mirror, timed_mirror = backend.choose_mirror(cfg, g, xq, batch, batch_from, bc.mem_bw)
                if timed_mirror:
                    say(_mirror_line(cfg, bc.mem_bw, mirror, timed_mirror))
            prog = backend.emit_graph(cfg, g, xq, name=name, batch=batch, batch_from=batch_from, mem_bw=bc.mem_bw,
                                      mirror=mirror)
        with phases.phase("simulate"):
            res = backend.simulate(cfg, prog)
        with phases.phase("check"):
            n = int(xq.shape[0])
            y_sim = backend.read_output(prog.manifest, res.mem).reshape(n, *g.tensors[g.output].shape)
            y_sim = y_sim.astype(np.int64)
            y_ref = np.asarray(graph.reference(g, xq, cfg.AccW)).reshape(y_sim.shape)
            n_diff = int((y_ref != y_sim).sum())
            if n_diff:
                raise RuntimeError(f"quantized torch model and golden simulator differ in {n_diff} of {y_sim.size} "
                                   "outputs")
            say(f"  quantized torch model == golden simulator: {y_sim.size} outputs, bit-exact")
            tin = g.tensors[g.input]
            flat_in = tin.shape[:2] == (1, 1)
            extra = {"inputs_float": np.asarray(x, np.float32),
                     "inputs": (xq.reshape(n, -1) if flat_in else xq).astype(np.int8)}
            acc: dict[str, float] = {}
            if labels is not None:
                with torch.no_grad():
                    y_float = model.eval()(torch.from_numpy(np.asarray(x, np.float32))).numpy()
                y_q = fe.finish(y_sim)
                acc = {"float": float((y_float.argmax(1) == labels).mean()),
                       "quantized": float((y_q.argmax(1) == labels).mean())}
                extra["labels"] = labels.astype(np.int64)
        # "accuracy" is the accelerator output's own argmax (what tb/run_sim.py checks the RTL against); with host
        # layers after the accelerator the classes come from the host, so the figures go to "accuracy_host"
        acc_key = "accuracy_host" if g.host_suffix else "accuracy"
        with phases.phase("write"):
            manifest = backend.write_build(out, cfg, prog, res, extra=extra, manifest_extra={
                "source_model": str(model_path), "input_scale": tin.scale, "output_scale": g.tensors[g.output].scale,
                "act_bits": tin.bits, "lut_bits": bc.lut_bits or cfg.LutW, acc_key: acc,
                **({"accuracy": {}} if g.host_suffix else {}), "n_columns": n, "model_meta": meta,
                "build_config": replace(bc, inputs=bc.inputs if bc.inputs in ("digits-test", "random")
                                        else str(Path(bc.inputs))).to_json(),
            })
    say(report(manifest))
    if acc:
        where = " (classes after the host layers)" if g.host_suffix else ""
        say(f"  accuracy on {n} inputs{where}: float PQ model {100 * acc['float']:.2f}%, "
            f"quantized (integer pipeline) {100 * acc['quantized']:.2f}%")
    say(f"  wrote {out}/ ({manifest['n_insns']} instructions, {manifest['mem_bytes']} bytes of memory image) "
        f"in {time.perf_counter() - t0:.1f} s ({phases.summary()})")
    return manifest


def report(manifest: dict[str, Any]) -> str:
    """The per-layer report of a written build (backend.format_report)."""
    return backend.format_report(manifest)


def _order_line(cfg: HwConfig, mem_bw: int, moved: list[str], timed: list[float]) -> str:
    """What ``--op-order auto`` did (``backend.order_ops``: its moves, and the cycles per input of the model's
    order and after each move), one line."""
    bw = _bytes(sim.bytes_per_cycle(cfg, mem_bw))
    if not moved:
        return (f"  --op-order auto: the model's order, no move faster on the cycle model at {bw} a cycle "
                f"({timed[0]:,.0f} cycles per input)")
    return (f"  --op-order auto: {'; '.join(moved)}: {timed[-1]:,.0f} cycles per input on the cycle model at {bw} a "
            f"cycle (the model's order: {timed[0]:,.0f})")


def _mirror_line(cfg: HwConfig, mem_bw: int, mirror: bool, timed: list[float]) -> str:
    """What ``--op-order auto`` chose for the act banks of every other pass (``backend.choose_mirror``)."""
    bw = _bytes(sim.bytes_per_cycle(cfg, mem_bw))
    what = "every other pass with its act banks swapped" if mirror else "every pass with the same act banks"
    return (f"  --op-order auto: {what}: {min(timed):,.0f} cycles per input over the first passes on the cycle "
            f"model at {bw} a cycle ({'without' if mirror else 'with'} the swap: {max(timed):,.0f})")


def main(argv: list[str] | None = None) -> int:
    from pqmodel.model import ModelFormatError

    ap = ArgumentParser(prog="pqcompile", description="Compile a saved PQ model for the PQA accelerator.")
    ap.add_argument("model", help="model file written by pqtrain (state dict + architecture, loaded weights-only)")
    ap.add_argument("-o", "--out", required=True,
                    help="build directory to write: a new path, an empty directory or an earlier build (replaced "
                         "only when complete)")
    ap.add_argument("--config", default="default", help="hardware configuration from the spec (default: default)")
    ap.add_argument("--inputs", default="digits-test",
                    help="inputs to run: 'digits-test' (the fixed test split; models with input [64] or [1, 8, 8]), "
                         "'random' (standard normal, --seed; no labels), or a .npy file [n, *input_shape] of "
                         "float inputs")
    ap.add_argument("--count", type=int, default=100, help="number of inputs (images or columns; default 100)")
    ap.add_argument("--batch", type=int, default=None, metavar="B",
                    help="inputs a pass: the program runs the network over B inputs at a time, loading every op's "
                         "tables once a pass (default: all --count inputs in one pass)")
    ap.add_argument("--batch-from", default=None, metavar="OP",
                    help="with --batch: the ops before OP (a name from the report, e.g. layers.15.body.0) run one "
                         "input at a time, their results on chip, and OP and the ops after it over the pass's B "
                         "inputs at once (batch only where the tables are large); 'auto': the fastest of every op "
                         "batched, one input a pass and each PQ op as OP, on the cycle model at --mem-bw")
    ap.add_argument("--mem-bw", type=int, default=0, metavar="BYTES",
                    help="the memory bandwidth in bytes a cycle the schedule assumes (where long table loads go, "
                         "--batch-from auto's choice; default 0: one bus word a cycle; the results never depend "
                         "on it)")
    ap.add_argument("--op-order", default="auto", choices=list(OP_ORDERS),
                    help="'auto' (default): where ops do not depend on each other (a residual block's shortcut "
                         "and body), the order the cycle model finishes soonest at --mem-bw, and in a stream of "
                         "passes every other pass with its act banks swapped where that is faster; 'model': the "
                         "model's order, no swap (the results never depend on it)")
    ap.add_argument("--seed", type=int, default=0, help="seed of --inputs random (default 0)")
    ap.add_argument("--host-layers", nargs="+", default=[], metavar="NAME",
                    help="top-level model layers (layers.<i>, as in the error messages) run on the host: a "
                         "leading prefix and/or a trailing suffix of the network; commas also separate names")
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
        bc = BuildConfig(args.config, args.inputs, args.count, args.seed, args.act_bits, args.lut_bits,
                         args.act_calib, args.lut_calib, tuple(args.host_layers), args.batch, args.batch_from,
                         args.mem_bw, args.op_order)
        compile_model(args.model, args.out, bc, quiet=args.quiet)
    except (ModelFormatError, backend.CompileError, UsageError, OptionError, build.BuildError) as exc:
        print(f"pqcompile: error: {printable(exc, 1000)}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. no permission to write beside -o, disk full
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"pqcompile: error: {printable(where)}{printable(exc.strerror or exc, 600)}", file=sys.stderr)
        return 2
    except MemoryError:
        print("pqcompile: error: out of memory (the model or the inputs are too large for this machine)",
              file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001  (anything else is ours: an internal error, one line)
        kind = "internal check failed" if isinstance(exc, RuntimeError) else "internal error"
        print(f"pqcompile: {kind}: {printable(exc, 1000)} (please report it; PQA_TRACEBACK=1 prints the "
              "traceback)", file=sys.stderr)
        if os.environ.get("PQA_TRACEBACK"):
            traceback.print_exc()
        return 1
    return 0

if __name__ == "__main__":
    sys.exit(main())
