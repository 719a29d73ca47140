"""``make sim``: run a pqcompile build directory on the RTL under Verilator and report.

Prints per-layer and total cycles (from the RTL's own ``stamp`` records and cycle counter), whether
every output byte matched the golden simulator, and the accuracy of the float model, the quantized
model and the RTL on the build's inputs. Exits 1 on any mismatch, error or hang.
``--mem hdl`` (default) runs on the external memory written in HDL (tb/hdl/, no Python per cycle: for
long runs); ``--mem axiram`` runs the pyuvm environment on cocotbext-axi's AxiRam (the verification
path). See docs/simulation.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pqa_runner import run, run_hdlmem  # noqa: E402

from pqcompile.spec import load  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("build", type=Path, help="build directory written by pqcompile")
    ap.add_argument("--sim", default="verilator", choices=["verilator", "icarus"])
    ap.add_argument("--mem", default="hdl", choices=["hdl", "axiram"],
                    help="external memory: hdl (HDL model, fast, default) or axiram (pyuvm env on AxiRam)")
    args = ap.parse_args(argv)
    manifest = json.loads((args.build / "manifest.json").read_text())
    config = manifest["config"]
    print(f"run_sim: {manifest['model']} on pqa_top (config '{config}') under {args.sim}, memory {args.mem}, "
          f"{manifest.get('n_columns', '?')} input columns", flush=True)
    t0 = time.perf_counter()
    if args.mem == "hdl":
        res = run_hdlmem(args.sim, args.build, config)
    else:
        (res,) = run(args.sim, config, [args.build])
    wall = time.perf_counter() - t0
    info = res["info"]
    stamps = info["stamps"]
    n = manifest.get("n_columns", 1)
    if stamps:
        print(f"  {'layer':<22}{'kind':<15}{'d':>7}{'m':>6}{'c':>4}{'k':>4}{'v':>4}{'RTL cycles':>12}"
              f"{'per input':>11}{'predicted':>11}{'RTL/pred.':>10}")
        for i, lay in enumerate(manifest["layers"]):
            cyc = stamps[i + 1] - stamps[i]
            pred = lay.get("predicted_cycles", 0)
            ratio = f"{cyc / pred:.3f}" if pred else "-"
            print(f"  {lay['name']:<22}{lay.get('kind', 'linear'):<15}{lay['d']:>7}{lay['m']:>6}{lay['c']:>4}"
                  f"{lay['k']:>4}{lay['v']:>4}{cyc:>12}{cyc / n:>11.0f}{pred:>11}{ratio:>10}")
    print(f"  total: {info['cycles']} cycles ({info['cycles'] / n:.0f} per input), "
          f"simulator's estimate {info['sim_cycle_estimate']}; wall time {wall:.1f} s")
    if "run_wall_s" in info and info["run_wall_s"] > 0:
        print(f"  simulated run: {info['host_cycles']} cycles in {info['run_wall_s']:.1f} s "
              f"({info['host_cycles'] / info['run_wall_s'] / 1e3:.0f}k cycles/s)")
    if not info.get("done"):
        errs = {v: k for k, v in load().errors.items()}
        print(f"  stopped with ERROR: ERR_CODE {info['err_code']} ({errs.get(info['err_code'], '?')}), "
              f"ERR_PC {info['err_pc']:#x}, {info['insn_count']} instructions retired")
    ok = res["passed"]
    print(f"  RTL vs golden simulator: {'MATCH' if ok else 'MISMATCH'} "
          f"({info['bytes_compared']} memory bytes compared)")
    for e in res["errors"]:
        print(f"    {e}")
    acc = manifest.get("accuracy") or {}
    labels_file = args.build / "labels.npy"
    if acc and labels_file.exists() and (args.build / "rtl_output.npy").exists():
        y = np.load(labels_file)
        rtl = np.load(args.build / "rtl_output.npy")
        rtl_acc = float((rtl.argmax(1) == y).mean())
        print(f"  accuracy on {len(y)} test inputs: float PQ model {100 * acc['float']:.2f}%, quantized "
              f"{100 * acc['quantized']:.2f}%, RTL {100 * rtl_acc:.2f}%")
        if rtl_acc != acc["quantized"]:
            print("  RTL accuracy differs from the quantized model's")
            ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
