"""Top-level tests of ``pqa_top``: compiled PQ layers and models run on the RTL, bit-exact against the
golden simulator, under Verilator and Icarus.

pytest functions (``test_*``) compile build directories with the project's own back end and run the
pyuvm test ``PqaBuildTest`` (tb/pqa_env.py) over all of them in one simulator process per simulator.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import pyuvm
from cases import (
    CONV_CASES,
    VEC_CASES,
    LayerShape,
    compiled_case,
    conv_case,
    error_programs,
    new_error_programs,
    prefetch_slverr_case,
    raw_case,
    residual_case,
    round_trip_case,
    vec_case,
)
from pqa_env import PqaBuildTest, PqaRandomTest
from pqa_runner import run

from pqcompile import build as pqbuild
from pqcompile.isa import decode
from pqcompile.spec import load

pyuvm.test()(PqaBuildTest)
pyuvm.test()(PqaRandomTest)

SIMS = ["verilator", "icarus"]
ROOT = Path(__file__).resolve().parents[1]

# (name, layers, columns): v not dividing d, K not a power of two, M not a multiple of anything, both
# metrics, ReLU on and off, chained layers, and more columns than the activation buffer holds (tiling).
SHAPES: dict[str, tuple[list[LayerShape], int] | tuple[list[LayerShape], int, int, int]] = {
    "d20_v3_k5_m13_l2_relu": ([LayerShape(20, 13, 5, 3, "l2", True)], 6),
    "d16_v4_k16_m64_l1": ([LayerShape(16, 64, 16, 4, "l1", False)], 9),
    "d7_v8_k1_m3_l2": ([LayerShape(7, 3, 1, 8, "l2", False)], 5),
    "chain_30_24_10_tiled": ([LayerShape(30, 24, 7, 8, "l2", True), LayerShape(24, 10, 3, 5, "l1", False)], 150),
    "act4_lut3_chain": ([LayerShape(12, 9, 6, 4, "l1", True), LayerShape(9, 5, 4, 3, "l2", False)], 10, 4, 3),
    # 16 groups x 16 x 22 output groups x 8 B = 45,056 B of table > LutBytes: tiled over m (two table sets)
    "d64_v2_k16_m64_table_tiled": ([LayerShape(64, 64, 16, 2, "l2", True)], 5),
    # c = 150 subspaces > CMax = 32: the column tiled over c, five chained runs per column
    "d600_v4_k8_m10_column_tiled": ([LayerShape(600, 10, 8, 4, "l2", False)], 3),
}


@pytest.fixture(scope="session")
def rtl_builds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str, int]]:
    """name -> (build dir, expected error name, expected ERR_PC) for config 'small'."""
    cfg = load().config("small")
    root = tmp_path_factory.mktemp("rtl_builds")
    out: dict[str, tuple[Path, str, int]] = {}
    for i, (name, (shapes, n, *bits)) in enumerate(SHAPES.items()):
        compiled_case(root / name, cfg, shapes, n, seed=100 + i, act_bits=bits[0] if bits else None,
                      lut_bits=bits[1] if bits else None)
        out[name] = (root / name, "none", 0)
    for i, (name, (cc, then)) in enumerate(CONV_CASES.items()):
        conv_case(root / name, cfg, cc, seed=200 + i, then=then)
        out[name] = (root / name, "none", 0)
    for i, name in enumerate(VEC_CASES):
        vec_case(root / name, cfg, name, seed=300 + i)
        out[name] = (root / name, "none", 0)
    for name, (words, err, pc) in {**error_programs(cfg), **new_error_programs(cfg)}.items():
        raw_case(root / name, cfg, words)
        out[name] = (root / name, err, pc)
    residual_case(root / "residual_block", "small", seed=400)
    out["residual_block"] = (root / "residual_block", "none", 0)
    err, pc = prefetch_slverr_case(root / "prefetch_slverr", cfg, seed=500)
    out["prefetch_slverr"] = (root / "prefetch_slverr", err, pc)
    round_trip_case(root / "store_load_round_trip", cfg, seed=600)
    out["store_load_round_trip"] = (root / "store_load_round_trip", "none", 0)
    model = ROOT / "models" / "digits_mlp.pt"
    if model.exists():
        from pqcompile.cli import compile_model
        from pqcompile.options import BuildConfig

        compile_model(str(model), str(root / "digits_mlp"), BuildConfig(config="small", count=24), quiet=True)
        out["digits_mlp"] = (root / "digits_mlp", "none", 0)
    return out


_RESULTS: dict[tuple[str, str], dict[str, dict]] = {}


CASES = [*SHAPES, *CONV_CASES, *VEC_CASES, *error_programs(load().config("small")),
         *new_error_programs(load().config("small")), "residual_block", "prefetch_slverr", "store_load_round_trip",
         "digits_mlp"]
# Icarus runs about a thousand times slower than Verilator (every build starts with 4096 cycles of buffer
# clearing at config small): by default it runs these cases, one of each kind; the others are `slow`
# (make test-all). Verilator runs every case by default.
ICARUS_CORE = ("d20_v3_k5_m13_l2_relu", "act4_lut3_chain", "conv3x3_s2_p1_ch5_l1", "conv3x3_s1_p1_add",
               "pool_unsigned", "add_signed", "illegal_opcode", "misaligned_load", "run_dst_is_src",
               "run_acc_after_a_write", "residual_block", "prefetch_slverr", "store_load_round_trip")


def _group(sim_name: str, case: str) -> str:
    """The simulator run that checks ``case``: Verilator all cases at once, Icarus its core cases, then the
    rest."""
    return "all" if sim_name != "icarus" else "core" if case in ICARUS_CORE else "rest"


def _results(sim_name: str, case: str, builds: dict[str, tuple[Path, str, int]]) -> dict[str, dict]:
    key = (sim_name, _group(sim_name, case))
    if key not in _RESULTS:
        mine = [b for name, (b, _, _) in builds.items() if _group(sim_name, name) == key[1]]
        res = run(sim_name, "small", mine)
        _RESULTS[key] = {Path(r["build"]).name: r for r in res}
    return _RESULTS[key]


def _params() -> list:
    return [pytest.param(case, sim, marks=[pytest.mark.slow] if _group(sim, case) == "rest" else [],
                         id=f"{case}-{sim}") for case in CASES for sim in SIMS]


@pytest.mark.rtl
@pytest.mark.parametrize(("case", "sim_name"), _params())
def test_rtl_matches_simulator(sim_name: str, case: str, rtl_builds: dict[str, tuple[Path, str, int]]) -> None:
    if case not in rtl_builds:
        pytest.skip("models/digits_mlp.pt is missing")
    res = _results(sim_name, case, rtl_builds)[case]
    assert res["errors"] == [], res["errors"]
    spec = load()
    _, expected_err, expected_pc = rtl_builds[case]
    # the scoreboard compared everything with the golden simulator; these check the simulator's verdict too
    assert res["info"]["err_code"] == spec.errors[expected_err]
    assert res["info"]["err_pc"] == expected_pc
    if expected_err == "none":
        assert res["info"]["done"]
        stamps = res["info"]["stamps"]
        assert stamps == sorted(stamps) and stamps[-1] > 0  # per-layer cycle stamps increase


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize("sim_name", SIMS)
def test_digits_cnn_default_config(sim_name: str, tmp_path: Path) -> None:
    """The shipped digits CNN (conv mode: 3x3 windows over 16 channels with v = 9, stride, padding, a
    flatten layer) compiled for config 'default' (its v needs VMax 16), one digit, bit-exact on the RTL."""
    model = ROOT / "models" / "digits_cnn.pt"
    if not model.exists():
        pytest.skip("models/digits_cnn.pt is missing")
    from pqcompile.cli import compile_model
    from pqcompile.options import BuildConfig

    compile_model(str(model), str(tmp_path / "digits_cnn"), BuildConfig(config="default", count=1), quiet=True)
    res = run(sim_name, "default", [tmp_path / "digits_cnn"])[0]
    assert res["errors"] == [], res["errors"]
    assert res["info"]["done"] and res["info"]["err_code"] == 0


@pytest.mark.rtl
def test_wide_bus(tmp_path: Path) -> None:
    """Config 'wide' (small's lanes and buffers on a 256-bit bus) on Verilator: a fetch brings four instructions
    into the fetch buffer (rd_bytes counts one bus word per fetched word, compared exactly), a stamp record
    takes two beats; the compiled residual CNN (its results kept on chip) and an SLVERR during a table
    prefetch on a slow memory equal the golden simulator; its tables are 8-bit on the 16-bit entries of
    'wide', so they go packed (``shape.pack``). The residual CNN over 3 images at once, scheduled for 1 byte a
    cycle (``--mem-bw 1``: its table loads are long, so ``backend.fetch_order`` puts a run right behind them,
    ahead of a store), equals the golden simulator too."""
    cfg = load().config("wide")
    residual_case(tmp_path / "residual", "wide", seed=401, count=1, lut_bits=8)
    residual_case(tmp_path / "fetch", "wide", seed=403, count=3, batch=3, mem_bw=1)
    err, pc = prefetch_slverr_case(tmp_path / "slverr", cfg, seed=501)
    res = {Path(r["build"]).name: r for r in run("verilator", "wide", [tmp_path / "residual", tmp_path / "slverr",
                                                                        tmp_path / "fetch"])}
    spec = load()

    def program(name: str) -> tuple[dict, list]:  # a build's manifest and its decoded instruction stream
        man, mem = pqbuild.load(tmp_path / name)
        return man, [decode(int.from_bytes(mem[8 * i : 8 * i + 8].tobytes(), "little")) for i in range(man["n_insns"])]

    r = res["residual"]
    assert r["errors"] == [], r["errors"]
    assert r["info"]["done"] and r["info"]["err_code"] == 0
    man, insns = program("residual")
    assert man["memory"]["on_chip"]  # results stayed on chip
    shapes = [q for q in insns if q.mnemonic == "shape"]
    assert shapes and all(q.ops["pack"] == 1 for q in shapes)  # 8-bit tables on 16-bit entries: packed
    bus = cfg.bus_bytes
    loads = sum(-(-q.ops["nbytes"] // bus) * bus for q in insns if q.mnemonic == "load")
    # the last stamp (before `end`) samples every load and one fetch per bus word of instructions up to it
    assert r["info"]["perf"]["rd_bytes"][-1] == loads + -(-(len(insns) - 1) * 8 // bus) * bus
    s = res["slverr"]
    assert s["errors"] == [], s["errors"]
    assert (s["info"]["err_code"], s["info"]["err_pc"]) == (spec.errors[err], pc)
    f = res["fetch"]
    assert f["errors"] == [], f["errors"]
    assert f["info"]["done"] and f["info"]["err_code"] == 0
    _, insns = program("fetch")
    tables = {spec.enums["buffer"][b] for b in ("proto", "lut", "bias")}
    # a run right behind a table load (moved ahead of a store; the plain schedule has none: --mem-bw 0)
    assert any(a.mnemonic == "load" and a.ops["buf"] in tables and b.mnemonic == "run"
               for a, b in zip(insns, insns[1:], strict=False))


@pytest.mark.rtl
def test_batched_passes(tmp_path: Path) -> None:
    """``pqcompile --batch 2`` on 5 digits (config small, Verilator): the program runs the MLP in three passes
    (2, 2 and 1 digits), loading the tables once a pass; the RTL equals the golden simulator (every stamp
    record's exact counters included), the outputs equal those of the one-pass build, and the per-op RTL
    cycles (``build.op_deltas``) sum the passes."""
    model = ROOT / "models" / "digits_mlp.pt"
    if not model.exists():
        pytest.skip("models/digits_mlp.pt is missing")
    from pqcompile.cli import compile_model
    from pqcompile.options import BuildConfig

    compile_model(str(model), str(tmp_path / "b2"), BuildConfig(config="small", count=5, batch=2), quiet=True)
    man5 = compile_model(str(model), str(tmp_path / "b5"), BuildConfig(config="small", count=5), quiet=True)
    r = run("verilator", "small", [tmp_path / "b2"])[0]
    assert r["errors"] == [], r["errors"]
    assert r["info"]["done"] and r["info"]["err_code"] == 0
    man, _ = pqbuild.load(tmp_path / "b2")
    assert (man["batch"], man["passes"]) == (2, 3)
    stamps = r["info"]["stamps"]
    assert len(stamps) == 3 * len(man["layers"]) + 1
    assert sum(pqbuild.op_deltas(man, stamps)) == stamps[-1] - stamps[0]
    y2 = pqbuild.file_array(tmp_path / "b2", man, "expected_output.npy")  # the RTL's, compared by the scoreboard
    y5 = pqbuild.file_array(tmp_path / "b5", man5, "expected_output.npy")
    assert y2.shape[0] == 5 and (y2 == y5).all()
    # more passes read the tables more often: the batched build reads more bytes in all (the RTL's counter
    # against the one-pass build's, which the golden simulator gives exactly)
    rd5 = sum(lay["rd_bytes"] for lay in man5["layers"])
    assert sum(pqbuild.op_deltas(man, r["info"]["perf"]["rd_bytes"])) > rd5


@pytest.mark.rtl
def test_batch_from(tmp_path: Path) -> None:
    """``pqcompile --batch 3 --batch-from layers.3.shortcut.0`` on 5 images of the residual CNN (config small,
    Verilator): its first three convs run one image at a time (the stem's and the block body's outputs stored
    for the shortcut and the add), the shortcut, add, pool and classifier over 3 and then 2 images at once;
    the RTL equals the golden simulator (every stamp record's exact counters included: a stamp per op that
    runs), and the outputs equal the one-pass build's."""
    frm = "layers.3.shortcut.0"
    residual_case(tmp_path / "mix", "small", seed=402, count=5, batch=3, batch_from=frm)
    residual_case(tmp_path / "b5", "small", seed=402, count=5)
    r = run("verilator", "small", [tmp_path / "mix"])[0]
    assert r["errors"] == [], r["errors"]
    assert r["info"]["done"] and r["info"]["err_code"] == 0
    man, _ = pqbuild.load(tmp_path / "mix")
    man5, _ = pqbuild.load(tmp_path / "b5")
    assert (man["batch"], man["passes"], man["batch_from"]) == (3, 2, frm)
    head, tail = [0, 1, 2], [3, 4, 5, 6]
    assert man["stamps"]["ops"] == [[q, i] for q, nb in ((0, 3), (1, 2)) for i in head * nb + tail]
    stamps = r["info"]["stamps"]
    assert sum(pqbuild.op_deltas(man, stamps)) == stamps[-1] - stamps[0]
    y = pqbuild.file_array(tmp_path / "mix", man, "expected_output.npy")  # the RTL's, compared by the scoreboard
    assert (y == pqbuild.file_array(tmp_path / "b5", man5, "expected_output.npy")).all()
