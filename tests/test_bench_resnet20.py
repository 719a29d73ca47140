"""benchmarks/bench_resnet20.py: the per-op rows and the CSV writer on a small compiled residual network, with
the golden simulator's stamp records standing in for the RTL's (the benchmark itself runs ResNet-20 on the
RTL: `make bench-resnet20`)."""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
from cases import residual_case

from pqcompile import build as pqbuild
from pqcompile import perf, sim
from pqcompile.spec import load

ROOT = Path(__file__).resolve().parents[1]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_resnet20", ROOT / "benchmarks" / "bench_resnet20.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_resnet20"] = mod
    spec.loader.exec_module(mod)
    return mod


bench = _load()
BATCH = 2


@pytest.fixture(scope="module")
def residual(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict[str, list[int]]]:
    """The small residual CNN of tb/cases.py compiled for config 'small' on 2 images, and the golden
    simulator's stamp records of its run."""
    out = tmp_path_factory.mktemp("bench") / "residual"
    residual_case(out, "small", seed=3, count=BATCH)
    manifest, mem = pqbuild.load(out)
    res = sim.run(load().config("small"), mem, manifest["insn_base"])
    assert res.done
    return manifest, pqbuild.read_perf(manifest, res.mem)


def test_rows_and_csv(residual: tuple[dict, dict[str, list[int]]], tmp_path: Path) -> None:
    manifest, recs = residual
    bpc = bench.hdl_bytes_per_cycle(manifest["config_params"])
    assert bpc == 8  # the HDL memory takes one 64-bit word a cycle
    rows = bench.bench_rows(manifest, recs, BATCH, bpc)
    assert [r["op"] for r in rows] == [lay["name"] for lay in manifest["layers"]]
    kinds = {r["kind"] for r in rows}
    assert {"conv", "add", "pool", "linear"} <= kinds
    # the rows sum to the stamped span, per image; the simulator's records equal its predictions
    assert sum(r["rtl_cycles"] for r in rows) == (recs["cycles"][-1] - recs["cycles"][0]) / BATCH
    for r, lay in zip(rows, manifest["layers"], strict=True):
        assert r["predicted_cycles"] == r["rtl_cycles"] == lay["predicted_cycles"] / BATCH
        assert r["compute_cycles"] == lay["predicted_compute_cycles"] / BATCH > 0
        assert r["bytes_moved"] == (lay["rd_bytes"] + lay["wr_bytes"]) / BATCH
        assert r["formula_cycles"] == perf.op_cycles(manifest["config_params"], lay, BATCH) / BATCH
        assert r["mem_cycles"] == r["bytes_moved"] / bpc and r["roofline"] == max(r["formula_cycles"],
                                                                                   r["mem_cycles"])
        assert r["columns"] == lay["out_shape"][0] * lay["out_shape"][1] * BATCH and r["batch"] == BATCH
        assert (r["ns"], r["np"], r["pl"], r["nout"]) == (2, 3, 2, 3)  # config small
    path = tmp_path / "out" / "resnet20-small-b2.csv"
    bench.write_csv(path, rows)
    with open(path, newline="") as fh:
        got = list(csv.reader(fh))
    assert tuple(got[0]) == bench.CSV_COLUMNS == (
        "op", "kind", "c", "k", "v", "m", "columns", "ns", "np", "pl", "nout", "batch", "bytes_per_cycle",
        "rtl_cycles", "compute_cycles", "formula_cycles", "predicted_cycles", "bytes_moved", "mem_cycles",
        "roofline")
    assert len(got) == 1 + len(rows)
    for line, r in zip(got[1:], rows, strict=True):
        assert line[0] == r["op"] and float(line[13]) == pytest.approx(r["rtl_cycles"], abs=0.005)
        assert all(x != "" for x in line)
    table = bench.format_table(rows)
    assert table.splitlines()[-1].startswith("total") and "RTL/form" in table.splitlines()[0]
    assert "comp/form" in table.splitlines()[0]


def test_pq_ops_within_the_compute_target() -> None:
    rows = [{"kind": "conv", "compute_cycles": 105, "formula_cycles": 100},
            {"kind": "linear", "compute_cycles": 106, "formula_cycles": 100},
            {"kind": "add", "compute_cycles": 500, "formula_cycles": 100},
            {"kind": "flatten-linear", "compute_cycles": 90, "formula_cycles": 100}]
    assert bench.pq_within_target(rows) == (2, 3)


def test_number_format() -> None:
    assert [bench._num(x) for x in (3, 4.0, 2.5, 1 / 3, "conv")] == ["3", "4", "2.50", "0.33", "conv"]


def test_memory_bandwidth_and_curve_plot(tmp_path: Path) -> None:
    """The roofline's bytes per cycle follow the HDL memory's limit (below a bus word) and `make bench-curve`'s
    plot is written from its points."""
    pqa = load().config("pqa").params
    assert bench.hdl_bytes_per_cycle(pqa) == 128 and bench.hdl_bytes_per_cycle(pqa, 94) == 94
    assert bench.hdl_bytes_per_cycle(pqa, 200) == 128
    assert bench.hdl_bytes_per_cycle(load().config("small").params, 94) == 8  # its bus: 8 bytes
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_curve

    pts = [{"batch": b, "bytes_per_cycle": bw, "rtl_cycles": 30000 / b + bw} for b in (1, 2) for bw in (47, 94)]
    bench_curve.plot(pts, tmp_path / "c.png", "pqa")
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_table_pool_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """benchmarks/table_pool_model.py on the small residual CNN (one image): the rearranged stream runs to its
    end on the golden simulator, a pool that holds every table never takes longer than today's two banks and
    a pool of one bus word cannot hoist anything (the loads stay in the op before their `run`)."""
    spec = importlib.util.spec_from_file_location("table_pool_model", ROOT / "benchmarks" / "table_pool_model.py")
    assert spec and spec.loader
    tpm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tpm)
    out = tmp_path / "residual"
    residual_case(out, "small", seed=3, count=1)
    manifest, mem = pqbuild.load(out)
    cfg = load().config("small")
    today = tpm.ops_cycles(manifest, sim.run(cfg, mem, manifest["insn_base"], mem_bw=4).mem)
    assert tpm.project(out, 4, 1 << 20) <= today
    assert tpm.project(out, 4, cfg.bus_bytes) >= today - 8 * len(manifest["layers"])
    assert tpm.main([str(out), "--mem-bw", "4", "--pools", "1,64"]) == 0
    text = capsys.readouterr().out
    assert "today (two table banks)" in text and "table pool of 64 KiB" in text


def test_another_model_and_images_name_their_own_builds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`make bench-resnet20 RESNET=... IMAGES=... IMAGE_SEED=...`: the builds and CSVs of another model or other
    images are named after them (the untrained model's files keep their names), and a model pqcompile cannot
    read stops the benchmark with pqcompile's message, writing nothing."""
    assert bench.build_tag() == "resnet20"
    assert bench.build_tag(None, "random", 3) == "resnet20-s3"
    assert bench.build_tag(Path("runs/r20_trained.pt")) == "r20_trained"
    assert bench.build_tag(Path("m.pt"), str(tmp_path / "cifar_test.npy"), 5) == "m-cifar_test"
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    with pytest.raises(SystemExit, match="pqcompile did not compile .*bad.pt .exit status 2"):
        bench.compile_resnet20("pqa", 1, tmp_path / "builds", model=bad)
    assert "pqcompile: error" in capsys.readouterr().err
    assert not (tmp_path / "builds" / "bad-pqa-b1").exists()
