"""``make bench-curve``: ResNet-20 cycles per image on the RTL against batch size and memory bandwidth.

For each batch size of ``--batches`` the model is compiled once (``bench_resnet20.compile_resnet20``: B random
images, tables loaded once per op for all of them) and run on the RTL under Verilator (HDL memory) at each
bandwidth of ``--bandwidths`` (bytes a cycle, the HDL memory's ``+PQA_MEM_BW``; a value at or above the bus
bytes is the unthrottled memory), bit-exact against the golden simulator. Per point it prints the RTL's
cycles per image over the ops (the stamped span divided by B), the cycle model's prediction at that
bandwidth, the bytes moved per image and the compute cycles per image, against PQA's modelled 17,183 cycles
per image (its DDR at 94 bytes a cycle) and its compute bound of 11,776. It writes
``benchmarks/out/curve-<config>.csv`` and the plot ``docs/resnet20_batch_bw.png`` (``--plot``; with
``--lut-bits B`` both names end in ``-tB``: tables quantized to B bits, packed at 8 or fewer; with
``--batch-from OP`` in ``-from-OP``: at every batch above 1 the ops before OP run one image at a time,
``pqcompile --batch-from``; ``auto``: the compiler picks the schedule for each bandwidth). Every point is a build
of its own, compiled for its bandwidth (``pqcompile --mem-bw``: where long table loads go).
Exit status 0 when every run passed, 1 when one did not.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from bench_resnet20 import PQA_COMPUTE, PQA_MODEL  # benchmarks/ is on the path (run as a script)

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ("config", "batch", "bytes_per_cycle", "rtl_cycles", "predicted_cycles", "compute_cycles", "bytes_moved")


def _bench() -> ModuleType:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_resnet20

    return bench_resnet20


def point(bench: ModuleType, builddir: Path, config: str, batch: int, bw: int) -> dict[str, Any] | None:
    """One run: the totals per image, or None when the RTL did not equal the golden simulator."""
    from pqa_runner import run_hdlmem

    from pqcompile import build as pqbuild
    from pqcompile import sim

    manifest, image = pqbuild.load(builddir)
    bus = int(manifest["config_params"]["AxiDataWidth"]) // 8
    mem_bw = bw if 0 < bw < bus else 0
    res = run_hdlmem("verilator", builddir, config, mem_bw=mem_bw)
    if not res["passed"] or not res["info"].get("perf"):
        for e in res["errors"]:
            print(f"  {e}")
        return None
    model = sim.run(pqbuild.config_of(builddir, manifest), image, int(manifest["insn_base"]), mem_bw=mem_bw)
    bpc = bench.hdl_bytes_per_cycle(manifest["config_params"], mem_bw)
    rows = bench.bench_rows(manifest, res["info"]["perf"], batch, bpc, pqbuild.read_perf(manifest, model.mem)["cycles"])
    tot = bench.total(rows)
    return {"config": config, "batch": batch, "bytes_per_cycle": bpc, "rtl_cycles": tot["rtl_cycles"],
            "predicted_cycles": tot["predicted_cycles"], "compute_cycles": tot["compute_cycles"],
            "bytes_moved": tot["bytes_moved"]}


def plot(points: list[dict[str, Any]], path: Path, config: str, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for bpc in sorted({p["bytes_per_cycle"] for p in points}):
        pts = sorted((p["batch"], p["rtl_cycles"]) for p in points if p["bytes_per_cycle"] == bpc)
        ax.plot([b for b, _ in pts], [c for _, c in pts], marker="o", label=f"{bpc} bytes/cycle")
    ax.axhline(PQA_MODEL, color="k", linestyle="--", linewidth=1, label=f"PQA's model ({PQA_MODEL:,})")
    ax.axhline(PQA_COMPUTE, color="gray", linestyle=":", linewidth=1, label=f"PQA's compute ({PQA_COMPUTE:,})")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch (images per table load)")
    ax.set_ylabel("RTL cycles per image")
    ax.set_title(f"ResNet-20 on the RTL, config '{config}' (make bench-curve){title}")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench_curve", description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="pqa", help="hardware configuration (spec configs)")
    ap.add_argument("--batches", default="1,2,4,8", help="batch sizes, comma-separated")
    ap.add_argument("--bandwidths", default="47,94,128", help="memory bandwidths in bytes a cycle, comma-separated")
    ap.add_argument("--build-root", type=Path, default=ROOT / "build", help="where the model and builds go")
    ap.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "out", help="where the CSV goes")
    ap.add_argument("--plot", type=Path, default=None,
                    help="the plot (default docs/resnet20_batch_bw.png, -t<bits> before .png with --lut-bits)")
    ap.add_argument("--lut-bits", type=int, default=0,
                    help="table entry width (0: the config's LutW; 8 or fewer on a LutW 16 config: packed tables)")
    ap.add_argument("--batch-from", default=None, metavar="OP",
                    help="at batches above 1, batch only OP and the ops after it (pqcompile --batch-from); "
                         "'auto': the compiler's pick at each bandwidth (a build per point)")
    bench = _bench()
    bench.add_model_args(ap)
    args = ap.parse_args(argv)
    tb = f"-t{args.lut_bits}" if args.lut_bits else ""
    tb += f"-from-{args.batch_from}" if args.batch_from else ""
    tag = bench.build_tag(args.model, args.inputs, args.seed)
    own = "" if tag == "resnet20" else f"-{tag}"  # another model or other images: files of their own
    if args.plot is None:
        args.plot = ROOT / "docs" / f"resnet20_batch_bw{own}{tb}.png"
    try:
        batches = [int(x) for x in args.batches.split(",")]
        bws = [int(x) for x in args.bandwidths.split(",")]
    except ValueError:
        ap.error("--batches and --bandwidths: comma-separated integers")
    if min(batches) < 1 or min(bws) < 1:
        ap.error("--batches and --bandwidths: 1 or more")
    sys.path.insert(0, str(ROOT / "tb"))
    points: list[dict[str, Any]] = []
    ok = True
    t0 = time.perf_counter()
    from pqcompile import build as pqbuild

    auto = args.batch_from == "auto"
    for b in batches:
        for bw in bws:  # a build per point: the schedule is made for the bandwidth (pqcompile --mem-bw)
            builddir = bench.compile_resnet20(args.config, b, args.build_root, args.lut_bits or None, 1, args.model,
                                              args.inputs, args.seed, args.batch_from if b > 1 else None, bw)
            p = point(bench, builddir, args.config, b, bw)
            if p is None:
                print(f"bench_curve: batch {b}, {bw} bytes a cycle: FAIL (the RTL does not equal the golden simulator)")
                ok = False
                continue
            points.append(p)
            ratio = p["predicted_cycles"] / p["rtl_cycles"]
            picked = ""
            if auto and b > 1:
                man = pqbuild.read(builddir)
                picked = f" [auto: {man.get('batch_from') or ('all' if man['batch'] > 1 else 'one a pass')}]"
            print(f"bench_curve: batch {b:>2}, {p['bytes_per_cycle']:>4} bytes a cycle{picked}: "
                  f"{p['rtl_cycles']:>9.0f} RTL cycles per image (predicted {p['predicted_cycles']:.0f}, "
                  f"{ratio:.3f}; compute {p['compute_cycles']:.0f}; {p['bytes_moved']:.0f} bytes); PQA's model "
                  f"{PQA_MODEL}: {p['rtl_cycles'] / PQA_MODEL:.2f} x  [{time.perf_counter() - t0:.0f} s]", flush=True)
    path = args.out_dir / f"curve{own}-{args.config}{tb}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="ascii") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(COLUMNS)
        for p in points:
            w.writerow([p[k] if isinstance(p[k], (int, str)) else f"{p[k]:.2f}" for k in COLUMNS])
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    if points:
        plot(points, args.plot, args.config, f"\nbatched from {args.batch_from} on" if args.batch_from else "")
        print(f"wrote {args.plot.relative_to(ROOT) if args.plot.is_relative_to(ROOT) else args.plot}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
