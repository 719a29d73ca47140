"""The HDL external-memory testbench (tb/hdl/, ``pqa_runner.run_hdlmem``) for long runs: the shipped digits
MLP runs on it and the final memory equals the golden simulator's byte for byte (but the cycle words of the
stamp records; their byte counters exactly);
accesses beyond the memory answer DECERR and stop the program with ERR_CODE ``bus`` at the right ERR_PC,
as the golden simulator says; a malformed memory image is refused before any simulator starts, naming the
file and line.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cases import STAMP_ADDR, copy_build, raw_case, reseal
from pqa_runner import HDLMEM_BYTES, HDLMEM_SOURCES, hdlmem_capacity, lint, run_hdlmem

from pqcompile import backend, hexfmt, sim
from pqcompile.isa import encode
from pqcompile.spec import HwConfig, load

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "digits_mlp.pt"
MEM = 4096  # bytes of memory of the hand-written programs (backend.raw_program's default)


def bus_programs(cfg: HwConfig) -> dict[str, tuple[list[int], str, int]]:
    """name -> (instruction words, expected error, expected ERR_PC): accesses beyond the 4 KiB memory."""
    bufs = load().enums["buffer"]
    st = encode("stamp", addr=STAMP_ADDR)
    quant = encode("quant", relu=0, shift=0, mult=1, bits=8)
    return {
        "load_beyond": ([st, encode("load", buf=bufs["act"], nbytes=16, addr=MEM + 0x100), encode("end")], "bus", 8),
        # a store whose bursts run off the end (over 0xaa bytes): the words inside the memory are
        # written, the others answer DECERR
        "store_across_end": ([st, quant, encode("store", nbytes=64, addr=MEM - 32), encode("end")], "bus", 16),
        "stamp_beyond": ([st, quant, encode("stamp", addr=MEM), encode("end")], "bus", 16),
        # a record whose last words lie beyond the end: `bus`, the record's bytes unspecified (the RTL writes
        # the words inside), the 0xaa bytes before it unchanged
        "stamp_across_end": ([st, quant, encode("stamp", addr=MEM - load().perf_bytes // 2), encode("end")], "bus",
                             16),
    }


def fetch_beyond(outdir: Path, cfg: HwConfig) -> dict:
    """A program that fills the whole memory with no `end`: the fetch at MEM answers DECERR."""
    words = [encode("quant", relu=0, shift=0, mult=1, bits=8)] * (MEM // 8)
    prog = backend.raw_program(cfg, words, name=outdir.name)
    return backend.write_build(outdir, cfg, prog, sim.run(cfg, prog.mem, prog.insn_base))


def misaligned_base(outdir: Path, cfg: HwConfig) -> dict:
    """INSN_BASE = 4: the first fetch stops with `align` (the spec's error for an unaligned address) at ERR_PC 4,
    before any instruction retires (it was `bus` before issue 9)."""
    prog = backend.raw_program(cfg, [encode("end")] * 2, name=outdir.name)
    prog.insn_base = prog.manifest["insn_base"] = 4
    return backend.write_build(outdir, cfg, prog, sim.run(cfg, prog.mem, prog.insn_base))


@pytest.fixture(scope="module")
def small_builds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str, int]]:
    cfg = load().config("small")
    root = tmp_path_factory.mktemp("hdlmem")
    out: dict[str, tuple[Path, str, int]] = {}
    fill = [(MEM - 64, np.full(64, 0xAA, np.uint8), "0xaa bytes at the end of the memory")]
    for name, (words, err, pc) in bus_programs(cfg).items():
        raw_case(root / name, cfg, words, fill)
        out[name] = (root / name, err, pc)
    fetch_beyond(root / "fetch_beyond", cfg)
    out["fetch_beyond"] = (root / "fetch_beyond", "bus", MEM)
    misaligned_base(root / "misaligned_base", cfg)
    out["misaligned_base"] = (root / "misaligned_base", "align", 4)
    if MODEL.exists():
        from pqcompile.cli import compile_model
        from pqcompile.options import BuildConfig

        compile_model(str(MODEL), str(root / "digits_mlp"), BuildConfig(config="small", count=24), quiet=True)
        out["digits_mlp"] = (root / "digits_mlp", "none", 0)
    return out


def check(res: dict, err: str, pc: int) -> None:
    assert res["errors"] == [], res["errors"]
    info = res["info"]
    assert info["err_code"] == load().errors[err]
    assert info["err_pc"] == pc
    assert info["done"] == (err == "none")
    assert not info["hang"]


CASES = ["digits_mlp", *bus_programs(load().config("small")), "fetch_beyond", "misaligned_base"]


@pytest.mark.rtl
@pytest.mark.parametrize("case", CASES)
def test_hdlmem_verilator(case: str, small_builds: dict[str, tuple[Path, str, int]]) -> None:
    if case not in small_builds:
        pytest.skip("models/digits_mlp.pt is missing")
    build, err, pc = small_builds[case]
    res = run_hdlmem("verilator", build)
    check(res, err, pc)
    if case == "digits_mlp":
        stamps = res["info"]["stamps"]
        assert stamps == sorted(stamps) and stamps[-1] > 0
        perf = res["info"]["perf"]  # the byte counters equal the golden simulator's (check_run), and grow
        assert perf["rd_bytes"] == sorted(perf["rd_bytes"]) and perf["wr_bytes"][-1] > perf["wr_bytes"][0] == 0
        assert res["info"]["bytes_compared"] > 0


@pytest.mark.rtl
def test_hdlmem_cycle_limit(small_builds: dict[str, tuple[Path, str, int]]) -> None:
    """A run cut by the cycle limit is reported as a hang (the host still reads the registers: busy)."""
    if "digits_mlp" not in small_builds:
        pytest.skip("models/digits_mlp.pt is missing")
    res = run_hdlmem("verilator", small_builds["digits_mlp"][0], max_cycles=2000)
    assert res["info"]["hang"] and not res["passed"]
    assert any("hang" in e for e in res["errors"]), res["errors"]
    assert 2000 <= res["info"]["host_cycles"] < 2100 and res["info"]["cycles"] >= 2000


@pytest.mark.rtl
@pytest.mark.parametrize("case", ["digits_mlp", "store_across_end", "misaligned_base"])
def test_hdlmem_icarus(case: str, small_builds: dict[str, tuple[Path, str, int]]) -> None:
    if case not in small_builds:
        pytest.skip("models/digits_mlp.pt is missing")
    build, err, pc = small_builds[case]
    check(run_hdlmem("icarus", build), err, pc)


@pytest.mark.parametrize("bad, message", [
    ("zz0000000000000000", "is not a hex word"),
    ("0123", "has 4 digits"),
    ("@zz", "bad address record"),
])
def test_malformed_image_is_refused(bad: str, message: str, small_builds: dict[str, tuple[Path, str, int]],
                                    tmp_path: Path) -> None:
    b = copy_build(small_builds["load_beyond"][0], tmp_path / "bad")
    lines = (b / "mem.hex").read_text().splitlines()
    lines.insert(3, bad)
    (b / "mem.hex").write_text("\n".join(lines) + "\n")
    reseal(b)  # past the digest check: the hex reader itself must name the line
    with pytest.raises(hexfmt.HexFormatError, match=rf"mem\.hex:4: .*{message}"):
        run_hdlmem("verilator", b)


def test_image_beyond_memory_is_refused(small_builds: dict[str, tuple[Path, str, int]], tmp_path: Path) -> None:
    b = copy_build(small_builds["load_beyond"][0], tmp_path / "big")
    man = json.loads((b / "manifest.json").read_text())
    man["mem_bytes"] = 1024  # the image holds words at 0x800 and beyond
    del man["stamps"]  # (its region lies beyond 1024 bytes too, which the manifest check would name first)
    (b / "manifest.json").write_text(json.dumps(man))
    reseal(b)
    with pytest.raises(hexfmt.HexFormatError, match=r"mem\.hex:\d+: word address 0x[0-9a-f]+ .*beyond the 1024-byte"):
        run_hdlmem("verilator", b)


@pytest.mark.rtl
@pytest.mark.parametrize("config", list(load().configs))
def test_hdlmem_top_lint_clean(config: str) -> None:
    r = lint(config, top="pqa_tb_top", extra=HDLMEM_SOURCES, args=["--timing"])
    assert r.returncode == 0 and "%Warning" not in r.stderr, r.stderr


def test_hdlmem_capacity() -> None:
    """Images up to 16 MiB share one build per (simulator, config); bigger ones get a power-of-two build."""
    assert hdlmem_capacity(4096) == hdlmem_capacity(HDLMEM_BYTES) == HDLMEM_BYTES
    assert hdlmem_capacity(HDLMEM_BYTES + 1) == 2 * HDLMEM_BYTES


@pytest.mark.rtl
@pytest.mark.slow
def test_resnet20_on_rtl(tmp_path: Path) -> None:
    """ResNet-20 (CIFAR-10 shapes, untrained weights with batch-norm statistics from random inputs; stem and
    classifier on the host) compiled for config 'default' and run for one random 32x32 image on the RTL under
    Verilator with the HDL memory: every memory byte equals the golden simulator (whose output the compiler
    checked against the quantized torch model), per-op cycles within 3% of the cycle model for the convs.
    About 1.5 min on the 2-core machine once the Verilator model is built (`make sim-resnet20` does the same)."""
    from pqcompile.cli import compile_model
    from pqcompile.options import BuildConfig
    from pqtrain import zoo
    from pqtrain.cli import main as pqtrain_main

    model = tmp_path / "resnet20.pt"
    assert pqtrain_main(["init", "--model", "resnet20", "-o", str(model)]) == 0
    manifest = compile_model(str(model), str(tmp_path / "r20"), BuildConfig(
        config="default", inputs="random", count=1, host_layers=tuple(zoo.HOST_LAYERS["resnet20"])), quiet=True)
    kinds = [lay["kind"] for lay in manifest["layers"]]
    assert kinds.count("conv") == 20 and kinds.count("add") == 9 and kinds.count("pool") == 1
    res = run_hdlmem("verilator", tmp_path / "r20", config="default")
    assert res["errors"] == [], res["errors"]
    info = res["info"]
    assert info["done"] and info["err_code"] == 0
    stamps = info["stamps"]
    for i, lay in enumerate(manifest["layers"]):
        if lay["kind"] == "conv":
            assert abs((stamps[i + 1] - stamps[i]) / lay["predicted_cycles"] - 1) < 0.03, lay["name"]


@pytest.mark.rtl
@pytest.mark.slow
def test_kws_on_rtl(tmp_path: Path) -> None:
    """The zoo's KWS (untrained, one random input, its host layers) on config 'default' under Verilator with the
    HDL memory: its last conv's table tiled over m and its output pooled in two channel blocks (128 + 68)
    by the RTL exactly as by the golden simulator, every memory byte compared."""
    from pqcompile.cli import compile_model
    from pqcompile.options import BuildConfig
    from pqtrain import zoo
    from pqtrain.cli import main as pqtrain_main

    model = tmp_path / "kws.pt"
    assert pqtrain_main(["init", "--model", "kws", "-o", str(model)]) == 0
    manifest = compile_model(str(model), str(tmp_path / "kws"), BuildConfig(
        config="default", inputs="random", count=1, host_layers=tuple(zoo.HOST_LAYERS["kws"])), quiet=True)
    assert manifest["layers"][-1]["channel_blocks"] == [[0, 128], [128, 196]]
    res = run_hdlmem("verilator", tmp_path / "kws", config="default")
    assert res["errors"] == [], res["errors"]
    assert res["info"]["done"] and res["info"]["err_code"] == 0
