"""``make bench-resnet20``: ResNet-20 on the RTL against PQA's formula and the memory roofline, op by op.

ResNet-20 (CIFAR-10 shapes, untrained weights: ``pqtrain init --model resnet20``; stem and classifier on the
host, ``pqtrain.zoo.HOST_LAYERS``, as ``make sim-resnet20``) is compiled for a configuration (``--config``)
on ``--batch`` random images and run on the RTL under Verilator on the HDL memory
(``pqa_runner.run_hdlmem``), bit-exact against the golden simulator (the testbench's one rule; the byte
counters of every stamp record included). From the RTL's stamp records (docs/isa.md, "Performance
counters") it prints one row per op and writes ``benchmarks/out/resnet20-<config>-b<batch>.csv`` with the
columns of :data:`CSV_COLUMNS`. Per image (the batch's figure divided by the batch):

- ``rtl_cycles``: the op's cycles (the stamps around it; the rows sum to the stamped span, the run minus its
  start and its end), ``compute_cycles``: its ``compute_cycles`` counter;
- ``formula_cycles``: PQA's formula at the configuration's lanes (``pqcompile.perf.op_cycles``: a PQ op
  ``columns * ceil(C/NS) * max(ceil(v/PL) * ceil(K/NP), ceil(M/NOUT))``, an add output pixels x
  ceil(ch/NOUT), a pool input pixels x ceil(ch/NOUT));
- ``predicted_cycles``: the golden simulator's cycle model (``sim.Timeline``: the controller's in-order
  dispatch and its three units, at the memory's bandwidth);
- ``bytes_moved``: bytes read plus written over the AXI master (``rd_bytes`` + ``wr_bytes``: fetches,
  loads, stores and stamp records); ``mem_cycles`` = bytes_moved / ``bytes_per_cycle`` (the HDL memory's
  bandwidth: ``--mem-bw`` bytes a cycle, read and write together, or one bus word a cycle when it is not
  limited); ``roofline`` = max(formula_cycles, mem_cycles).

``--mem-bw 94`` runs at PQA's DDR bandwidth (35.2 GB/s x 0.8 at 300 MHz, 93.9 bytes a cycle); ``--mem-lat``
adds a read latency (cycles).

``columns`` is the batch's (output pixels x batch). Exit status 0 when the run passed, 1 when it did not.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "benchmarks" / "out"
CSV_COLUMNS = ("op", "kind", "c", "k", "v", "m", "columns", "ns", "np", "pl", "nout", "batch", "bytes_per_cycle",
               "rtl_cycles", "compute_cycles", "formula_cycles", "predicted_cycles", "bytes_moved", "mem_cycles",
               "roofline")
PER_IMAGE = ("rtl_cycles", "compute_cycles", "formula_cycles", "predicted_cycles", "bytes_moved")


def hdl_bytes_per_cycle(params: Mapping[str, int], mem_bw: int = 0) -> int:
    """Bytes per cycle of the HDL memory (tb/hdl/pqa_axi_mem.sv): its limit ``mem_bw`` when set and below a
    bus word, else one bus word a cycle (the controller runs one transfer at a time)."""
    bus = int(params["AxiDataWidth"]) // 8
    return min(bus, mem_bw) if mem_bw > 0 else bus


def bench_rows(manifest: Mapping[str, Any], perf: Mapping[str, Sequence[int]], batch: int,
               bytes_per_cycle: float, predicted: Sequence[int] | None = None,
               only: int | None = None) -> list[dict[str, Any]]:
    """One row per op of a build (``manifest``, written by pqcompile) from the stamp records ``perf``
    (``pqcompile.build.read_perf`` of the RTL's final memory: one list per counter, one value per label), the
    columns of :data:`CSV_COLUMNS`, cycle and byte figures per image (of ``batch`` images: those of all passes,
    or of pass ``only``). ``predicted``: the cycle model's ``cycles`` counter at each stamp (default: the op's
    ``predicted_cycles`` of the manifest, at the compile's memory model)."""
    from pqcompile import build as pqbuild
    from pqcompile import perf as pqperf

    params = manifest["config_params"]
    deltas = {k: pqbuild.op_deltas(manifest, v, only) for k, v in perf.items()}
    pred = pqbuild.op_deltas(manifest, predicted, only) if predicted is not None else None
    rows = []
    for i, lay in enumerate(manifest["layers"]):
        d = {k: v[i] for k, v in deltas.items()}
        moved = (d["rd_bytes"] + d["wr_bytes"]) / batch
        formula = pqperf.op_cycles(params, lay, batch) / batch
        mem = moved / bytes_per_cycle
        rows.append({
            "op": lay["name"], "kind": lay["kind"], "c": lay["c"], "k": lay["k"], "v": lay["v"],
            "m": int(lay["out_shape"][2]), "columns": pqperf.columns(lay, batch),
            "ns": params["NS"], "np": params["NP"], "pl": params["PL"], "nout": params["NOUT"], "batch": batch,
            "bytes_per_cycle": bytes_per_cycle, "rtl_cycles": d["cycles"] / batch,
            "compute_cycles": d["compute_cycles"] / batch, "formula_cycles": formula,
            "predicted_cycles": (int(lay["predicted_cycles"]) if pred is None else pred[i]) / batch,
            "bytes_moved": moved, "mem_cycles": mem,
            "roofline": max(formula, mem),
        })
    return rows


def total(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The sums of a table's cycle and byte columns (the roofline: the sum of the per-op rooflines)."""
    out: dict[str, Any] = {"op": "total", "kind": ""}
    for k in (*PER_IMAGE, "mem_cycles", "roofline"):
        out[k] = sum(float(r[k]) for r in rows)
    return out


def _num(x: Any) -> str:
    """A figure as the CSV and the table write it: an integer when it is one, else 2 decimals."""
    if isinstance(x, float):
        return str(int(x)) if x.is_integer() else f"{x:.2f}"
    return str(x)


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """The rows as CSV with exactly the columns of :data:`CSV_COLUMNS` (a header line, then one line per op)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="ascii") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(CSV_COLUMNS)
        for r in rows:
            w.writerow([_num(r[k]) for k in CSV_COLUMNS])


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "-"


TABLE = [("op", "<21"), ("kind", "<7"), ("c", ">3"), ("k", ">3"), ("v", ">3"), ("m", ">3"), ("columns", ">7"),
         ("rtl_cycles", ">11"), ("compute_cycles", ">11"), ("formula_cycles", ">10"), ("predicted_cycles", ">11"),
         ("bytes_moved", ">9"), ("mem_cycles", ">9"), ("roofline", ">10"), ("compute/formula", ">9"),
         ("rtl/formula", ">8"), ("rtl/roofline", ">8"), ("pred/rtl", ">8")]
HEAD = {"rtl_cycles": "RTL", "compute_cycles": "compute", "formula_cycles": "formula", "predicted_cycles": "predicted",
        "bytes_moved": "bytes", "mem_cycles": "mem", "compute/formula": "comp/form", "rtl/formula": "RTL/form",
        "rtl/roofline": "RTL/roof", "pred/rtl": "pred/RTL"}
COMPUTE_TARGET = 1.05  # issue 11: every PQ op's compute cycles within 1.05 x PQA's formula


def pq_within_target(rows: Sequence[Mapping[str, Any]]) -> tuple[int, int]:
    """(PQ ops whose compute cycles are at most COMPUTE_TARGET x the formula, PQ ops)."""
    pq = [r for r in rows if r["kind"] not in ("add", "pool") and r["formula_cycles"]]
    return sum(r["compute_cycles"] <= COMPUTE_TARGET * r["formula_cycles"] for r in pq), len(pq)


PQA_MODEL = 17183  # PQA's modelled cycles per ResNet-20 image (tables loaded beside each layer's compute)
PQA_COMPUTE = 11776  # PQA's compute cycles per ResNet-20 image at its parallelism (the 3x3 convs)
PQA_CONVS = 18  # the 3x3 convs that PQA's compute bound counts


def pq_formula(rows: Sequence[Mapping[str, Any]]) -> float:
    """PQA's formula summed over the PQ ops: the compute cycles no schedule at these lanes goes below (each PQ
    op's compute is at or above its formula)."""
    return sum(float(r["formula_cycles"]) for r in rows if r["kind"] not in ("add", "pool"))


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The per-op table with the ratios compute / formula, RTL / formula, RTL / roofline and predicted / RTL, and a
    total row."""
    lines = [" ".join(f"{HEAD.get(k, k):{f}}" for k, f in TABLE)]
    for r in [*rows, total(rows)]:
        if r["op"] == "total":
            lines.append("-" * len(lines[0]))
        cells = dict(r)
        cells.update({"compute/formula": _ratio(r["compute_cycles"], r["formula_cycles"]),
                      "rtl/formula": _ratio(r["rtl_cycles"], r["formula_cycles"]),
                      "rtl/roofline": _ratio(r["rtl_cycles"], r["roofline"]),
                      "pred/rtl": _ratio(r["predicted_cycles"], r["rtl_cycles"])})
        lines.append(" ".join(f"{_num(cells.get(k, '')) if k not in ('op', 'kind') else cells[k]:{f}}"
                              for k, f in TABLE))
    return "\n".join(lines)


def build_tag(model: Path | None = None, inputs: str = "random", seed: int = 0) -> str:
    """The name the builds and CSVs of a benchmark start with: ``resnet20`` for the untrained model on random
    images (seed 0), else the model file's stem, ``-s<seed>`` for other random images, ``-<stem>`` for an input
    file."""
    tag = "resnet20" if model is None else model.stem
    if inputs != "random":
        tag += f"-{Path(inputs).stem}"
    elif seed:
        tag += f"-s{seed}"
    return tag


def compile_resnet20(config: str, batch: int, build_root: Path, lut_bits: int | None = None,
                     passes: int = 1, model: Path | None = None, inputs: str = "random", seed: int = 0,
                     batch_from: str | None = None, mem_bw: int = 0) -> Path:
    """ResNet-20 compiled for ``config`` on ``batch`` images (stem and classifier on the host) into
    ``build_root/<tag>-<config>-b<batch>`` (:func:`build_tag`; ``-t<lut_bits>`` appended when the tables are
    quantized to ``lut_bits`` bits, not the configuration's LutW: at 8 bits or fewer on a LutW > 8 build they
    go packed, ``shape.pack``, half the table bytes). ``passes`` > 1: ``passes * batch`` images in passes of
    ``batch`` (``pqcompile --batch``; ``-p<passes>`` appended). ``model``: a trained ResNet-20 (``pqtrain
    train --model resnet20``; read, never written), default the untrained one (``pqtrain init``, written to
    ``build_root/resnet20.pt``); ``inputs``: ``random`` (``seed``) or a .npy file of float images [N, 3, 32,
    32] (its first ``batch * passes``). ``batch_from``: the op from which on the ``batch`` images run at once,
    the ops before it one image at a time (``pqcompile --batch-from``; ``-from-<op>`` appended); ``auto``: the
    schedule the cycle model finishes soonest. ``mem_bw``: the memory bandwidth the schedule assumes
    (``pqcompile --mem-bw``: where long table loads go, and what ``auto`` picks; ``-bw<mem_bw>`` appended)."""
    from pqcompile.cli import main as pqcompile_main
    from pqtrain import zoo
    from pqtrain.cli import main as pqtrain_main

    build_root.mkdir(parents=True, exist_ok=True)
    if model is None:
        model = build_root / "resnet20.pt"
        if pqtrain_main(["init", "--model", "resnet20", "-o", str(model)]) != 0:
            raise SystemExit(1)
        tag = build_tag(None, inputs, seed)
    else:
        tag = build_tag(model, inputs, seed)
    out = build_root / f"{tag}-{config}-b{batch}{f'-p{passes}' if passes > 1 else ''}" \
                       f"{f'-t{lut_bits}' if lut_bits else ''}{f'-from-{batch_from}' if batch_from else ''}" \
                       f"{f'-bw{mem_bw}' if mem_bw else ''}"
    argv = [str(model), "-o", str(out), "--config", config, "--inputs", inputs, "--count", str(batch * passes),
            "--seed", str(seed), *(["--batch", str(batch)] if passes > 1 or batch_from else []),
            *(["--batch-from", batch_from] if batch_from else []),
            *(["--mem-bw", str(mem_bw)] if mem_bw else []),
            *(["--lut-bits", str(lut_bits)] if lut_bits else []), "--host-layers", *zoo.HOST_LAYERS["resnet20"]]
    rc = pqcompile_main(argv)
    if rc:
        raise SystemExit(f"bench_resnet20: pqcompile did not compile {model} (exit status {rc}, its message above)")
    return out


def add_model_args(ap: argparse.ArgumentParser) -> None:
    """The options that choose the model and the images (:func:`compile_resnet20`)."""
    ap.add_argument("--model", type=Path, default=None,
                    help="a trained ResNet-20 .pt (pqtrain train --model resnet20; default: the untrained one)")
    ap.add_argument("--inputs", default="random", help="random, or a .npy file of float images [N, 3, 32, 32]")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random images")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench_resnet20", description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="default", help="hardware configuration (spec configs)")
    ap.add_argument("--batch", type=int, default=1, help="images (random inputs)")
    ap.add_argument("--build-root", type=Path, default=ROOT / "build", help="where the model and build go")
    ap.add_argument("--out-dir", type=Path, default=OUT_DIR, help="where the CSV goes")
    ap.add_argument("--mem-bw", type=int, default=0,
                    help="HDL memory bandwidth, bytes a cycle (0: one bus word a cycle; PQA's DDR: 94)")
    ap.add_argument("--mem-lat", type=int, default=0, help="HDL memory read latency, cycles")
    ap.add_argument("--lut-bits", type=int, default=0,
                    help="table entry width (0: the config's LutW; 8 or fewer on a LutW 16 config: packed tables)")
    ap.add_argument("--passes", type=int, default=1,
                    help="a stream of passes of --batch images; the table shows the second pass, whose first "
                         "tables and input came in during the first (3: a pass in the middle of a stream)")
    ap.add_argument("--batch-from", default=None, metavar="OP",
                    help="the op from which on the batch runs at once; the ops before it one image at a time, "
                         "results on chip (pqcompile --batch-from; e.g. layers.15.body.0: batch only the "
                         "64-channel layers, whose tables are large; auto: the compiler's pick at --mem-bw)")
    add_model_args(ap)
    args = ap.parse_args(argv)
    if args.batch < 1 or args.passes < 1:
        ap.error("--batch and --passes: at least 1")
    if args.mem_bw < 0 or args.mem_lat < 0:
        ap.error("--mem-bw and --mem-lat: 0 or more")
    sys.path.insert(0, str(ROOT / "tb"))
    from pqa_runner import run_hdlmem

    from pqcompile import build as pqbuild

    builddir = compile_resnet20(args.config, args.batch, args.build_root, args.lut_bits or None, args.passes,
                                args.model, args.inputs, args.seed, args.batch_from, args.mem_bw)
    manifest = pqbuild.read(builddir)
    if args.batch_from == "auto":  # what the compiler picked
        args.batch_from = manifest.get("batch_from")
        print(f"bench_resnet20: --batch-from auto: "
              f"{args.batch_from or ('every op batched' if manifest['batch'] > 1 else 'one image a pass')}")
    print(f"bench_resnet20: {builddir.name} on the RTL (Verilator, HDL memory), "
          f"{manifest['expected']['sim_cycle_estimate']} cycles estimated", flush=True)
    t0 = time.perf_counter()
    res = run_hdlmem("verilator", builddir, args.config, mem_bw=args.mem_bw, mem_lat=args.mem_lat)
    wall = time.perf_counter() - t0
    info = res["info"]
    if not res["passed"] or not info.get("perf"):
        for e in res["errors"]:
            print(f"  {e}")
        print("bench_resnet20: FAIL (the RTL does not equal the golden simulator)")
        return 1
    bpc = hdl_bytes_per_cycle(manifest["config_params"], args.mem_bw)
    # the cycle model at the memory's bandwidth (the manifest's is at a bus word a cycle)
    from pqcompile import sim

    _, image = pqbuild.load(builddir)
    model = sim.run(pqbuild.config_of(builddir, manifest), image, int(manifest["insn_base"]), mem_bw=args.mem_bw)
    only = 1 if args.passes > 1 else None  # the second pass of a stream
    model_cycles = pqbuild.read_perf(manifest, model.mem)["cycles"]
    rows = bench_rows(manifest, info["perf"], args.batch, bpc, model_cycles, only)
    p = manifest["config_params"]
    print(f"config '{args.config}': NS={p['NS']} NP={p['NP']} PL={p['PL']} NOUT={p['NOUT']}, batch {args.batch}"
          + (f" from {args.batch_from} on (the ops before it one image at a time)" if args.batch_from else "") + ", "
          f"{bpc} bytes per cycle (HDL memory, read latency {args.mem_lat}); cycles and bytes per image"
          + (f"; pass 2 of a stream of {args.passes} passes (its first tables and input loaded during pass 1"
             + (", the next pass's during its last ops)" if args.passes > 2 else ")") if only else ""))
    print(format_table(rows))
    tot = total(rows)
    whole = info["cycles"] / (args.batch * args.passes)
    print(f"RTL {_num(tot['rtl_cycles'])} cycles per image over the ops ({whole:.0f} for the "
          f"whole run: the start's buffer clearing, the first stamp and `end` besides); compute "
          f"{_num(tot['compute_cycles'])} ({_ratio(tot['compute_cycles'], tot['formula_cycles'])} x the formula); "
          f"PQA's formula {_num(tot['formula_cycles'])}; roofline "
          f"{_num(tot['roofline'])}; ratios RTL/formula {_ratio(tot['rtl_cycles'], tot['formula_cycles'])}, "
          f"RTL/roofline {_ratio(tot['rtl_cycles'], tot['roofline'])}, predicted/RTL "
          f"{_ratio(tot['predicted_cycles'], tot['rtl_cycles'])}")
    if only is not None:
        per_pass = [sum(pqbuild.op_deltas(manifest, info["perf"]["cycles"], q)) / args.batch
                    for q in range(args.passes)]
        print(f"stream of {args.passes} passes: RTL cycles per image over the ops, pass by pass: "
              f"{', '.join(_num(c) for c in per_pass)}; {_num(sum(per_pass) / args.passes)} on average")
    ok, n_pq = pq_within_target(rows)
    print(f"PQ ops with compute <= {COMPUTE_TARGET} x the formula: {ok} of {n_pq}")
    print(f"compute bound at these lanes: the PQ ops at the formula, {_num(pq_formula(rows))} cycles per image "
          f"(PQA's {PQA_COMPUTE:,} counts {PQA_CONVS} 3x3 convs of ResNet-20; this network runs {n_pq} PQ ops, "
          f"the shortcut convs included), before any add or pool")
    from pqcompile.backend import unit_summary

    print(f"RTL counters, {unit_summary(info['perf'])}")
    print(f"cycle model,  {unit_summary(pqbuild.read_perf(manifest, model.mem))}")
    print(f"RTL == golden simulator: MATCH ({info['bytes_compared']} memory bytes compared); simulated "
          f"{info['cycles']} cycles in {wall:.0f} s")
    bw = f"-bw{args.mem_bw}" if args.mem_bw else ""
    tb = f"-t{args.lut_bits}" if args.lut_bits else ""
    ps = f"-p{args.passes}" if args.passes > 1 else ""
    fr = f"-from-{args.batch_from}" if args.batch_from else ""
    path = args.out_dir / (f"{build_tag(args.model, args.inputs, args.seed)}-{args.config}-b{args.batch}{ps}{bw}{tb}"
                           f"{fr}.csv")
    write_csv(path, rows)
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
