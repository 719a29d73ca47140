"""``make sim``: run a pqcompile build directory on the RTL under Verilator and check it.

The build directory is verified first (``pqcompile.build``: the manifest's own digest and the digest of every
file it names), so a damaged or edited build is refused before anything runs. The run passes only when the
RTL equals the golden simulator (every memory byte but the cycle words of the stamp
records; status, ERR_CODE, ERR_PC, INSN_COUNT) and the golden simulator equals what the compiler wrote into the
build (error state, retired instructions, ``expected_output.npy``). Prints per-layer and total cycles, compute
cycles and bytes moved over the AXI master (from the RTL's own ``stamp`` records and cycle counter) and the
accuracy of the float model, the quantized model and the RTL on the build's inputs. Nothing is written into
the build directory. While the simulation runs: a bar of the elapsed time against the expected one (the golden
simulator's cycle estimate at the measured speed) on a terminal, a start and an end line in a log or under
CI=true (``pqcompile.progress``; ``PQA_PROGRESS=0``: lines only).

Exit status: 0 when every check passed; 1 when a check failed (a mismatch, a hang, an error state other
than the expected one) or on an internal error; 2 when the input is refused (not a build directory, a
damaged or edited build, a bad option), with a one-line message naming the file and field.
``--mem hdl`` (default) runs on the external memory written in HDL (tb/hdl/, no Python per cycle: for long
runs); ``--mem axiram`` runs the pyuvm environment on cocotbext-axi's AxiRam (the verification path). See
docs/simulation.md.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
from pqa_runner import run, run_hdlmem

from pqcompile import build as pqbuild
from pqcompile.backend import format_report
from pqcompile.clitools import ArgumentParser, printable
from pqcompile.hexfmt import HexFormatError
from pqcompile.progress import timed
from pqcompile.spec import load

ROOT = Path(__file__).resolve().parents[1]
WAVES_DEFAULT = Path("<default>")
# simulated cycles per second of wall time measured on the 2-core machine (docs/simulation.md, "Measured
# speeds": 0.5-2.2 M under Verilator on the HDL memory with and without other load), for the expected time
SIM_RATE = {("verilator", "hdl"): 1e6, ("icarus", "hdl"): 12e3, ("verilator", "axiram"): 62e3,
            ("icarus", "axiram"): 3.7e3}


def report(manifest: dict[str, Any], res: dict[str, Any], builddir: Path, wall: float) -> bool:
    """Print the run's report; True when every check passed."""
    info = res["info"]
    stamps = info["stamps"]
    n = int(manifest.get("n_columns", manifest.get("n_images", 1)) or 1)
    if stamps and manifest["layers"]:
        measured = pqbuild.op_deltas(manifest, stamps)  # summed over the passes of a --batch build
        print(format_report(manifest, measured=measured, total_measured=int(info["cycles"]),
                            perf_records=info.get("perf") or None))
    print(f"  total: {info['cycles']} cycles ({info['cycles'] / n:.0f} per input), "
          f"simulator's estimate {info['sim_cycle_estimate']}; wall time {wall:.1f} s")
    if info.get("run_wall_s", 0) > 0:
        print(f"  simulated run: {info['host_cycles']} cycles in {info['run_wall_s']:.1f} s "
              f"({info['host_cycles'] / info['run_wall_s'] / 1e3:.0f}k cycles/s)")
    errs = {v: k for k, v in load().errors.items()}
    exp = manifest["expected"]
    state = f"ERR_CODE {info['err_code']} ({errs.get(info['err_code'], '?')})"
    if not info.get("done"):
        print(f"  stopped with {state}, ERR_PC {info['err_pc']:#x}, {info['insn_count']} instructions retired "
              f"(the build expects ERR_CODE {exp['sim_err_code']} ({errs.get(exp['sim_err_code'], '?')}))")
    n_build = int(info.get("build_mismatches", 0))
    n_rtl = len(res["errors"]) - n_build
    what = f"{exp['sim_insns']} instructions, {errs.get(exp['sim_err_code'], '?')}" + \
        (f", {exp['output']}" if exp.get("output") else "")
    print(f"  golden simulator vs the build's expected results ({what}): {'MATCH' if not n_build else 'MISMATCH'}")
    print(f"  RTL vs golden simulator: {'MATCH' if not n_rtl else 'MISMATCH'} "
          f"({info['bytes_compared']} memory bytes compared)")
    for e in res["errors"]:
        print(f"    {printable(e, 400)}")
    ok = bool(res["passed"])
    acc = manifest.get("accuracy") or {}
    files = manifest.get("files") or {}
    if acc and "labels" in files and res.get("output") is not None:
        y = pqbuild.file_array(builddir, manifest, files["labels"])
        rtl = np.asarray(res["output"])
        rtl_acc = float((rtl.argmax(1) == y).mean())
        print(f"  accuracy on {len(y)} test inputs: float PQ model {100 * acc['float']:.2f}%, quantized "
              f"{100 * acc['quantized']:.2f}%, RTL {100 * rtl_acc:.2f}%")
        if rtl_acc != acc["quantized"]:
            print("  RTL accuracy differs from the quantized model's")
            ok = False
    print(f"run_sim: {'PASS' if ok else 'FAIL'}")
    return ok


def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(prog="run_sim", description=__doc__.splitlines()[0])
    ap.add_argument("build", type=Path, help="build directory written by pqcompile")
    ap.add_argument("--sim", default="verilator", choices=["verilator", "icarus"])
    ap.add_argument("--mem", default="hdl", choices=["hdl", "axiram"],
                    help="external memory: hdl (HDL model, fast, default) or axiram (pyuvm env on AxiRam)")
    ap.add_argument("--waves", nargs="?", type=Path, const=WAVES_DEFAULT, default=None, metavar="FILE.fst",
                    help="write an FST trace of the whole design for the run (for GTKWave or Surfer): to FILE.fst, "
                         "a new file, or by default to sim_build/waves/<build>.fst (also: WAVES=1 in the "
                         "environment); --mem hdl only")
    ap.add_argument("--save-output", type=Path, metavar="FILE.npy",
                    help="write the RTL's output region (int8 [n, outputs]) to this new file after a run that passed")
    args = ap.parse_args(argv)
    if args.waves is None and os.environ.get("WAVES", "").lower() in ("1", "true", "yes", "on"):
        args.waves = WAVES_DEFAULT
    if args.waves is not None:
        if args.mem != "hdl":
            print("run_sim: error: --waves traces the HDL-memory run: use it with --mem hdl", file=sys.stderr)
            return 2
        if args.waves == WAVES_DEFAULT:  # our own folder: a trace written there earlier is replaced
            args.waves = ROOT / "sim_build" / "waves" / f"{args.build.resolve().name}.fst"
            args.waves.parent.mkdir(parents=True, exist_ok=True)
        elif args.waves.suffix != ".fst" or args.waves.exists() or args.waves.is_symlink():
            print(f"run_sim: error: --waves {printable(args.waves)}: name a new .fst file", file=sys.stderr)
            return 2
    if args.save_output is not None and args.save_output.suffix != ".npy":
        print(f"run_sim: error: --save-output {printable(args.save_output)}: name a .npy file", file=sys.stderr)
        return 2
    if args.save_output is not None and (args.save_output.exists() or args.save_output.is_symlink()):
        print(f"run_sim: error: --save-output {printable(args.save_output)}: exists; refusing to overwrite it",
              file=sys.stderr)
        return 2
    try:
        manifest = pqbuild.read(args.build)  # refuses a damaged build at once (the runner reads the image)
        config = str(manifest["config"])
        print(f"run_sim: {printable(manifest.get('model', '?'))} on pqa_top (config "
              f"'{printable(config)}') under {args.sim}, memory {args.mem}, "
              f"{manifest.get('n_columns', manifest.get('n_images', '?'))} input columns", flush=True)
        est = int(manifest["expected"]["sim_cycle_estimate"])
        rate = SIM_RATE.get((args.sim, args.mem), 0)
        detail = f"{est} cycles estimated" + (f" at ~{rate / 1e6:g} M cycles/s, "
                                               f"{'plus a first build' if args.waves is None else 'longer with waves'}"
                                               if rate else "")
        t0 = time.perf_counter()
        with timed("  simulation", est / rate if rate else None, detail=detail):
            if args.mem == "hdl":
                res = run_hdlmem(args.sim, args.build, config, waves=args.waves)
            else:
                pqbuild.config_of(args.build, manifest)
                (res,) = run(args.sim, config, [args.build])
        wall = time.perf_counter() - t0
        ok = report(manifest, res, args.build, wall)
        if args.waves is not None:
            size = args.waves.stat().st_size if args.waves.exists() else 0
            print(f"  waves: {args.waves} ({size / 1e6:.1f} MB FST; gtkwave or surfer opens it)")
        if ok and args.save_output is not None and res.get("output") is not None:
            np.save(args.save_output, np.asarray(res["output"]))
        return 0 if ok else 1
    except (pqbuild.BuildError, HexFormatError) as exc:
        print(f"run_sim: error: {printable(exc, 600)}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001  (anything else is ours: one line, the traceback on request)
        print(f"run_sim: internal error: {printable(exc, 600)} (PQA_TRACEBACK=1 prints the traceback)",
              file=sys.stderr)
        if os.environ.get("PQA_TRACEBACK"):
            traceback.print_exc()
        return 1


if __name__ == "__main__":
    sys.exit(main())
