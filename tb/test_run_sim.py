"""tb/run_sim.py (``make sim``) passes only when the RTL, the golden simulator and the build's own expected
results agree (issue 9): a damaged build is refused (exit 2, one line naming the file) before any simulator
starts; a build whose seal was recomputed after an edit still fails (exit 1) unless the golden simulator
reproduces the compiler's expected error state, instruction count and ``expected_output.npy`` and the RTL
equals the simulator. The property test damages builds at random (truncate, flip a digit, drop or duplicate a
line, edit or remove the manifest or an expected output; resealed or not) and checks every pass against the
files independently.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import pytest
import run_sim
from cases import copy_build, reseal
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pqcompile import build as pqbuild
from pqcompile import sim
from pqcompile.cli import compile_model
from pqcompile.options import BuildConfig
from pqcompile.spec import load

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "digits_mlp.pt"
FILES = ["mem.hex", "manifest.json", "expected_output.npy", "program.asm", "labels.npy"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runsim") / "mlp"
    compile_model(str(MODEL), str(out), BuildConfig(config="small", count=3), quiet=True)
    return out


def _run(b: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    rc = run_sim.main([str(b), *extra])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


@pytest.mark.rtl
def test_intact_build_passes(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = sorted(p.name for p in tiny.iterdir())
    out = tmp_path / "rtl.npy"
    rc, text, _ = _run(tiny, capsys, "--save-output", str(out))
    assert rc == 0, text
    assert "golden simulator vs the build's expected results (" in text and "run_sim: PASS" in text
    assert np.array_equal(np.load(out), np.load(tiny / "expected_output.npy"))
    assert sorted(p.name for p in tiny.iterdir()) == before  # nothing written into the build


@pytest.mark.parametrize("damage", ["drop_last_line", "empty"])
def test_damaged_image_is_refused(tiny: Path, tmp_path: Path, damage: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's reproduction: before, both ran and printed MATCH with exit 0."""
    b = copy_build(tiny, tmp_path / "b")
    lines = (b / "mem.hex").read_text().splitlines(keepends=True)
    (b / "mem.hex").write_text("".join(lines[:-1]) if damage == "drop_last_line" else "")
    rc, text, err = _run(b, capsys)
    assert rc == 2 and "PASS" not in text and "MATCH" not in text
    assert err.count("\n") == 1 and err.startswith("run_sim: error: ") and "mem.hex" in err, err


@pytest.mark.rtl
@pytest.mark.parametrize("edit", ["err_code", "insns", "output"])
def test_resealed_build_with_wrong_expectations_fails(tiny: Path, tmp_path: Path, edit: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    b = copy_build(tiny, tmp_path / "b")
    man = json.loads((b / "manifest.json").read_text())
    if edit == "err_code":
        man["expected"]["sim_err_code"] = load().errors["illegal_insn"]
    elif edit == "insns":
        man["expected"]["sim_insns"] += 1
    else:
        y = np.load(b / "expected_output.npy")
        y[-1, -1] = ~y[-1, -1]
        np.save(b / "expected_output.npy", y)
    (b / "manifest.json").write_text(json.dumps(man))
    reseal(b)
    rc, text, _ = _run(b, capsys)
    assert rc == 1, text
    assert "golden simulator vs the build's expected results" in text and "MISMATCH" in text
    assert "run_sim: FAIL" in text


def _damage(b: Path, data: st.DataObject) -> str:
    name = data.draw(st.sampled_from(FILES), label="file")
    path = b / name
    op = data.draw(st.sampled_from(["truncate", "flip_digit", "drop_line", "dup_line", "remove", "edit_json",
                                    "edit_npy"]), label="op")
    raw = path.read_bytes()
    if op == "remove":
        path.unlink()
    elif op == "truncate":
        path.write_bytes(raw[: data.draw(st.integers(0, max(0, len(raw) - 1)), label="keep")])
    elif op == "flip_digit":
        digits = [i for i, c in enumerate(raw) if chr(c) in "0123456789abcdef"]
        if not digits:
            return f"{name}: no digit"
        i = data.draw(st.sampled_from(digits), label="at")
        new = data.draw(st.sampled_from([c for c in "0123456789abcdef" if ord(c) != raw[i]]), label="to")
        path.write_bytes(raw[:i] + new.encode() + raw[i + 1 :])
    elif op in ("drop_line", "dup_line"):
        lines = raw.splitlines(keepends=True)
        if not lines:
            return f"{name}: empty"
        i = data.draw(st.integers(0, len(lines) - 1), label="line")
        lines[i : i + 1] = [] if op == "drop_line" else [lines[i], lines[i]]
        path.write_bytes(b"".join(lines))
    elif op == "edit_json":
        man = json.loads((b / "manifest.json").read_text())
        key = data.draw(st.sampled_from(sorted(man) + ["expected.sim_err_code", "expected.sim_insns",
                                                       "expected.sim_err_pc", "output.addr", "output.shape"]))
        val = data.draw(st.one_of(st.integers(-2, 1 << 20), st.none(), st.text(max_size=3), st.just([1, 2])))
        if "." in key:
            outer, inner = key.split(".")
            man[outer][inner] = val
        else:
            man[key] = val
        (b / "manifest.json").write_text(json.dumps(man))
        return f"manifest {key} = {val!r}"
    elif op == "edit_npy":
        y = np.load(b / "expected_output.npy")
        i = data.draw(st.integers(0, y.size - 1), label="index")
        y.reshape(-1).view(np.uint8)[i] ^= data.draw(st.integers(1, 255), label="xor")
        np.save(b / "expected_output.npy", y)
        return f"expected_output.npy[{i}]"
    return f"{name}: {op}"


@pytest.mark.rtl
@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data(), reseal=st.booleans())
def test_run_sim_never_passes_a_build_that_disagrees(tiny: Path, tmp_path_factory: pytest.TempPathFactory,
                                                     capsys: pytest.CaptureFixture[str], data: st.DataObject,
                                                     reseal: bool) -> None:
    b = copy_build(tiny, tmp_path_factory.mktemp("damaged") / "b")
    what = _damage(b, data)
    if reseal and (b / "manifest.json").is_file():
        try:
            reseal(b)
        except (ValueError, TypeError, KeyError, OSError):
            pass  # a manifest too damaged to reseal stays as it is
    out = b.parent / "rtl.npy"
    rc, text, err = _run(b, capsys, "--save-output", str(out))
    event(f"exit {rc}{' resealed' if reseal else ''}")
    assert rc in (0, 1, 2), (what, rc)
    assert "Traceback" not in err
    if rc == 2:
        assert err.count("\n") == 1 and err.startswith("run_sim: error: "), (what, err)
    if rc != 0:
        assert "run_sim: PASS" not in text
        return
    # a pass: check it against the files, independently of run_sim
    man, mem = pqbuild.load(b)
    res = sim.run(load().config(man["config"]), mem, man["insn_base"])
    exp = man["expected"]
    assert (res.err_code, res.insn_count, res.err_pc) == (exp["sim_err_code"], exp["sim_insns"], exp["sim_err_pc"])
    want = np.load(b / exp["output"])
    assert np.array_equal(pqbuild.read_output(man, res.mem), want), what
    assert np.array_equal(np.load(out), want), what


@pytest.mark.parametrize("what", ["missing", "file", "no_manifest", "foreign_manifest", "bad_option", "save_exists"])
def test_bad_input_is_one_line_exit_2(tiny: Path, tmp_path: Path, what: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Before issue 9 these printed Python tracebacks."""
    args: list[str] = []
    if what == "missing":
        target, needle = tmp_path / "nope", "no such build directory"
    elif what == "file":
        target = tmp_path / "f"
        target.write_text("x")
        needle = "no such build directory"
    elif what == "no_manifest":
        target = tmp_path / "d"
        target.mkdir()
        needle = "no manifest.json"
    elif what == "foreign_manifest":
        target = tmp_path / "app"
        target.mkdir()
        (target / "manifest.json").write_text('{"name": "web app"}')
        needle = "field 'format'"
    elif what == "bad_option":
        target, args, needle = tiny, ["--sim", "questa"], "invalid choice"
    else:
        (tmp_path / "o.npy").write_text("mine")
        target, args, needle = tiny, ["--save-output", str(tmp_path / "o.npy")], "refusing to overwrite"
    with pytest.raises(SystemExit) if what == "bad_option" else contextlib.nullcontext():
        rc = run_sim.main([str(target), *args])
        assert rc == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("run_sim: error: ") and needle in err, err
    if what == "save_exists":
        assert (tmp_path / "o.npy").read_text() == "mine"



RTL_SCOPES = ("u_dut.u_ctrl", "u_dut.u_dma", "u_dut.u_encoder.u_convgen", "u_dut.u_lookup.gen_post[0].u_postproc",
              "u_dut.u_vec", "u_dut.u_regs", "u_dut.gen_tbl_bank[1].u_lut_mem", "u_dut.gen_tbl_bank[0].u_proto_mem",
              "u_mem")


@pytest.mark.rtl
@pytest.mark.parametrize("sim_name", ["verilator", "icarus"])
def test_waves_trace_the_whole_design(tiny: Path, tmp_path: Path, sim_name: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """``run_sim --waves FILE.fst`` (``make sim WAVES=1``): an FST of every block of the design, for the run."""
    import pywellen

    fst = tmp_path / "run.fst"
    rc, text, _ = _run(tiny, capsys, "--sim", sim_name, "--waves", str(fst))
    assert rc == 0 and f"waves: {fst}" in text, text
    w = pywellen.Waveform(str(fst))
    assert w.file_format == "FST"
    scopes = {s.full_name for s in w.all_scopes()}
    for block in RTL_SCOPES:
        assert f"pqa_tb_top.{block}" in scopes, (block, sorted(scopes))
    assert len(list(w.all_vars())) > 500
    rc, _, err = _run(tiny, capsys, "--sim", sim_name, "--waves", str(fst))  # never overwrites a file
    assert rc == 2 and "name a new .fst file" in err


@pytest.mark.parametrize(("edit", "needle"), [
    ({"config": "huge"}, "field 'config': unknown hardware configuration 'huge'"),
    ({"config": "default"}, "field 'config_params' differs from config 'default' of this spec"),
])
@pytest.mark.parametrize("mem", ["hdl", "axiram"])
def test_build_for_another_configuration_is_refused(tiny: Path, tmp_path: Path, edit: dict, needle: str, mem: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    b = copy_build(tiny, tmp_path / "b")
    man = json.loads((b / "manifest.json").read_text())
    man.update(edit)
    (b / "manifest.json").write_text(json.dumps(man))
    reseal(b)
    rc, _, err = _run(b, capsys, "--mem", mem)
    assert rc == 2 and err.count("\n") == 1 and needle in err, err
