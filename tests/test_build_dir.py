"""The build-directory format (``pqcompile.build``) and the hardening of ``pqcompile -o`` (issue 9).

A build directory seals itself (the digest of every file and of the manifest), so a damaged or edited
build is refused naming the file and the field; ``-o`` never deletes or overwrites anything the compiler
did not write; directories are created with the umask's permissions; user text (the model's name) never
reaches a file unescaped; bad ``--inputs`` files are refused with exit status 2, never a traceback.
Each test here failed on the code before the fix.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from cases import copy_build, residual_arch

from pqcompile import build as pqbuild
from pqcompile import cli
from pqmodel.model import build as build_model
from pqmodel.model import save as save_model

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "digits_mlp.pt"
ARGS = ["--config", "small", "--count", "4", "-q"]


@pytest.fixture(scope="module")
def good_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("good") / "b"
    assert cli.main([str(MODEL), "-o", str(out), *ARGS]) == 0
    return out


def _one_line_error(capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pqcompile: error: "), err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def test_build_verifies_itself(good_build: Path) -> None:
    man, mem = pqbuild.load(good_build)
    assert man["format"] == "pqa-build" and man["version"] == pqbuild.VERSION
    assert set(man["sha256"]) == {"mem.hex", "program.asm", "expected_output.npy", "inputs.npy", "inputs_float.npy",
                                  "labels.npy"}
    assert sorted(p.name for p in good_build.iterdir()) == sorted([*man["sha256"], "manifest.json"])
    assert mem.size == man["mem_bytes"]


@pytest.mark.parametrize("damage", ["drop_last_hex_line", "empty_hex", "remove_expected", "edit_expected",
                                    "edit_manifest", "remove_manifest_digest", "bad_json"])
def test_damaged_build_is_refused_naming_the_file(good_build: Path, tmp_path: Path, damage: str) -> None:
    b = copy_build(good_build, tmp_path / "b")
    hexf, man = b / "mem.hex", json.loads((b / "manifest.json").read_text())
    if damage == "drop_last_hex_line":
        hexf.write_text("".join(hexf.read_text().splitlines(keepends=True)[:-1]))
        where = "mem.hex"
    elif damage == "empty_hex":
        hexf.write_text("")
        where = "mem.hex"
    elif damage == "remove_expected":
        (b / "expected_output.npy").unlink()
        where = "expected_output.npy: missing"
    elif damage == "edit_expected":
        y = np.load(b / "expected_output.npy")
        y[0, 0] ^= 1
        np.save(b / "expected_output.npy", y)
        where = "expected_output.npy"
    elif damage == "edit_manifest":
        man["insn_base"] = 8
        (b / "manifest.json").write_text(json.dumps(man))
        where = "field 'digest'"
    elif damage == "remove_manifest_digest":
        del man["digest"]
        (b / "manifest.json").write_text(json.dumps(man))
        where = "field 'digest'"
    else:
        (b / "manifest.json").write_text("{")
        where = "not valid JSON"
    with pytest.raises(pqbuild.BuildError, match=None) as exc:
        pqbuild.load(b)
    assert where in str(exc.value)


def test_resealed_but_inconsistent_build_fails_expectations(good_build: Path, tmp_path: Path) -> None:
    """A build whose seal was recomputed after an edit still has to reproduce its own expected outputs."""
    from pqcompile import sim
    from pqcompile.spec import load as load_spec

    b = copy_build(good_build, tmp_path / "b")
    y = np.load(b / "expected_output.npy")
    y[1, 2] ^= 0x10
    np.save(b / "expected_output.npy", y)
    man = json.loads((b / "manifest.json").read_text())
    pqbuild.seal(man, b)
    (b / "manifest.json").write_text(json.dumps(man))
    man, mem = pqbuild.load(b)
    res = sim.run(load_spec().config(man["config"]), mem, man["insn_base"])
    errs = pqbuild.check_expected(b, man, res)
    assert errs == [f"golden simulator's output differs from expected_output.npy in 1 of {y.size} bytes"]


def test_o_refuses_a_foreign_directory_with_a_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    web = tmp_path / "site"
    web.mkdir()
    (web / "manifest.json").write_text('{"name": "my web app", "icons": []}')
    (web / "index.html").write_text("<html>mine</html>")
    before = {p.name: p.read_bytes() for p in web.iterdir()}
    assert cli.main([str(MODEL), "-o", str(web), *ARGS]) == 2
    _one_line_error(capsys, "not an intact pqcompile build", "refusing to replace")
    assert {p.name: p.read_bytes() for p in web.iterdir()} == before


def test_o_never_touches_a_sibling_old_directory(good_build: Path, tmp_path: Path) -> None:
    b = copy_build(good_build, tmp_path / "b")
    sibling = tmp_path / ".b.old"
    sibling.mkdir()
    (sibling / "precious.txt").write_text("user data")
    assert cli.main([str(MODEL), "-o", str(b), *ARGS]) == 0  # replaces the earlier build
    assert (sibling / "precious.txt").read_text() == "user data"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".b.old", "b"]  # nothing else left beside it
    pqbuild.load(b)


@pytest.mark.parametrize("what", ["extra_file", "edited_file", "newer_version"])
def test_o_refuses_an_earlier_build_with_user_changes(good_build: Path, tmp_path: Path, what: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    b = copy_build(good_build, tmp_path / "b")
    if what == "extra_file":
        (b / "notes.txt").write_text("my notes")
        needle = "notes.txt"
    elif what == "edited_file":
        (b / "program.asm").write_text("my own program\n")
        needle = "program.asm"
    else:  # a sealed build of a format this pqcompile does not know
        man = json.loads((b / "manifest.json").read_text())
        man["version"] = pqbuild.VERSION + 1
        (b / "manifest.json").write_text(json.dumps(pqbuild.seal(man, b)))
        needle = "version"
    before = {p.name: p.read_bytes() for p in b.iterdir()}
    assert cli.main([str(MODEL), "-o", str(b), *ARGS]) == 2
    _one_line_error(capsys, needle, "refusing to replace")
    assert {p.name: p.read_bytes() for p in b.iterdir()} == before


def test_o_replaces_an_intact_build_of_an_older_version(good_build: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """A build that an earlier pqcompile wrote (an older format version, its seal intact) is replaced; the
    readers refuse it ("compile the model again"); edited, it is refused like any other."""
    b = copy_build(good_build, tmp_path / "b")
    man = json.loads((b / "manifest.json").read_text())
    man["version"] = pqbuild.VERSION - 1
    del man["stamps"]["counters"]  # an older layout: the reader does not look at its fields
    (b / "manifest.json").write_text(json.dumps(pqbuild.seal(man, b)))
    with pytest.raises(pqbuild.BuildError, match="compile the model again"):
        pqbuild.read(b)
    assert cli.main([str(MODEL), "-o", str(b), *ARGS]) == 0
    assert pqbuild.read(b)["version"] == pqbuild.VERSION
    man = json.loads((b / "manifest.json").read_text())
    man["version"] = pqbuild.VERSION - 1
    (b / "manifest.json").write_text(json.dumps(man))  # not resealed: the digest no longer matches
    capsys.readouterr()
    assert cli.main([str(MODEL), "-o", str(b), *ARGS]) == 2
    _one_line_error(capsys, "digest", "refusing to replace")


@pytest.mark.parametrize("what", ["file", "symlink_to_dir", "below_a_file"])
def test_o_refuses_files_and_links(tmp_path: Path, what: str, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "t"
    if what == "file":
        target.write_text("user file")
        out = target
    elif what == "symlink_to_dir":
        (tmp_path / "real").mkdir()
        target.symlink_to(tmp_path / "real")
        out = target
    else:
        target.write_text("user file")
        out = target / "sub" / "b"
    assert cli.main([str(MODEL), "-o", str(out), *ARGS]) == 2
    _one_line_error(capsys, str(target))
    if what == "symlink_to_dir":
        assert target.is_symlink() and not any((tmp_path / "real").iterdir())
    else:
        assert target.read_text() == "user file"


def test_failed_compile_removes_the_directories_it_created(tmp_path: Path) -> None:
    out = tmp_path / "new" / "deeper" / "b"
    assert cli.main([str(MODEL), "-o", str(out), "--config", "small", "--count", "4", "--inputs", "random",
                     "--host-layers", "layers.99", "-q"]) == 2
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_build_directory_follows_the_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        assert cli.main([str(MODEL), "-o", str(tmp_path / "b"), *ARGS]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "b").stat().st_mode) == 0o777 & ~umask
    assert stat.S_IMODE((tmp_path / "b" / "mem.hex").stat().st_mode) == 0o666 & ~umask


def _renamed(tmp_path: Path, name: str) -> Path:
    blob = torch.load(MODEL, weights_only=True)
    blob["arch"]["name"] = name
    path = tmp_path / "renamed.pt"
    torch.save(blob, path)
    return path


def test_non_ascii_model_name_compiles(good_build: Path, tmp_path: Path) -> None:
    """A non-ASCII name crashed after the whole compile (traceback, exit 1)."""
    out = tmp_path / "b"
    assert cli.main([str(_renamed(tmp_path, "réseau ✓")), "-o", str(out), *ARGS]) == 0
    assert (out / "mem.hex").read_bytes().isascii()
    man, mem = pqbuild.load(out)
    assert man["model"] == "réseau ✓"  # kept exactly (JSON escapes it)
    assert np.array_equal(mem, pqbuild.load(good_build)[1])


@pytest.mark.parametrize("name", ["x\n@00000010\nffffffffffffffff", "bell\x07\x1b[2J"])
def test_control_characters_in_the_name_are_refused(tmp_path: Path, name: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """A name holding a newline and `@00000010` injected data lines into mem.hex."""
    out = tmp_path / "b"
    assert cli.main([str(_renamed(tmp_path, name)), "-o", str(out), *ARGS]) == 2
    _one_line_error(capsys, "renamed.pt", "'name'")
    assert not out.exists()


def test_names_through_the_api_are_escaped_in_the_image(tmp_path: Path) -> None:
    """The back end's own writer escapes whatever name the Python API passes."""
    from pqcompile import backend
    from pqcompile.isa import encode
    from pqcompile.spec import load as load_spec

    cfg = load_spec().config("small")
    prog = backend.raw_program(cfg, [encode("end")], name="x\n@00000010\nffffffffffffffff\u2028")
    backend.write_build(tmp_path / "b", cfg, prog)
    text = (tmp_path / "b" / "mem.hex").read_bytes()
    assert text.isascii() and b"\n@00000010" not in text
    assert np.array_equal(pqbuild.load(tmp_path / "b")[1], prog.mem)


@pytest.mark.parametrize("kind", ["npz", "object", "structured", "complex", "empty_file", "text"])
def test_bad_inputs_files_are_refused(tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / f"in.{'npz' if kind == 'npz' else 'npy'}"
    x = np.zeros((3, 64), np.float32)
    if kind == "npz":
        np.savez(f, x=x)
        needle = ".npz archive"
    elif kind == "object":
        np.save(f, np.array([[{"a": 1}] * 64] * 2, dtype=object), allow_pickle=True)
        needle = "not a readable .npy array"
    elif kind == "structured":
        np.save(f, np.zeros((3, 64), dtype=[("a", "f4")]))
        needle = "real numbers"
    elif kind == "complex":
        np.save(f, x.astype(np.complex64))
        needle = "real numbers"
    elif kind == "empty_file":
        f.write_bytes(b"")
        needle = "not a readable .npy array"
    else:
        f.write_text("1 2 3\n")
        needle = "not a readable .npy array"
    out = tmp_path / "b"
    assert cli.main([str(MODEL), "-o", str(out), "--config", "small", "--inputs", str(f), "-q"]) == 2
    _one_line_error(capsys, str(f), needle)
    assert not out.exists()


def test_batch_from_an_unknown_op_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--batch-from`` naming no op of the network: exit 2, one line listing the ops, no build directory."""
    out = tmp_path / "b"
    assert cli.main([str(MODEL), "-o", str(out), *ARGS, "--batch", "2", "--batch-from", "layers.7"]) == 2
    _one_line_error(capsys, "--batch-from 'layers.7': no such op; the ops are layers.0, layers.2")
    assert not out.exists()


def test_batch_from_auto(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--batch-from auto``: one line naming the schedule the cycle model picked among the candidates (every op
    batched, one input a pass, each PQ op after the first); the manifest records the resolved schedule and the
    build configuration the option as given; the outputs are those of the plain build."""
    auto, plain = tmp_path / "auto", tmp_path / "plain"
    args = ["--config", "small", "--count", "5", "--batch", "3"]
    assert cli.main([str(MODEL), "-o", str(auto), *args, "--batch-from", "auto", "--mem-bw", "2"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if "--batch-from auto" in ln)
    assert re.search(r"the fastest of 3 schedules on the cycle model at 2 bytes a cycle", line), line
    man = json.loads((auto / "manifest.json").read_text())
    assert man["build_config"]["batch_from"] == "auto" and man["build_config"]["mem_bw"] == 2
    what = {None: "every op batched" if man["batch"] == 3 else "one input a pass", "layers.2": "layers.2"}
    assert line.startswith(f"  --batch-from auto: {what[man.get('batch_from')]} (")
    assert cli.main([str(MODEL), "-o", str(plain), *args, "-q"]) == 0
    assert np.array_equal(np.load(auto / "expected_output.npy"), np.load(plain / "expected_output.npy"))


def test_op_order(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--op-order auto`` (the default) on a residual CNN whose block is followed by a conv, scheduled for 1
    byte a cycle: one line naming the move (the block's second conv after its shortcut) and the cycles per input
    before and after it; the manifest lists the ops in the order they run; ``--op-order model`` keeps the
    model's order; the outputs are the same."""
    arch = residual_arch()
    arch["layers"][5:5] = [{"type": "pq_conv2d", "in_channels": 8, "out_channels": 8, "kernel_size": 3, "stride": 1,
                            "padding": 1, "k": 8, "v": 8, "metric": "l2", "bias": False}, {"type": "relu"}]
    torch.manual_seed(5)
    model = tmp_path / "block_then_conv.pt"
    save_model(build_model(arch).eval(), arch, model, {})
    args = [str(model), "--config", "small", "--inputs", "random", "--count", "2", "--mem-bw", "1"]
    auto, plain = tmp_path / "auto", tmp_path / "plain"
    assert cli.main([*args, "-o", str(auto)]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if "--op-order" in ln)
    m = re.fullmatch(r"  --op-order auto: layers\.3\.body\.3 after layers\.3\.shortcut\.0: ([\d,]+) cycles per input "
                     r"on the cycle model at 1 byte a cycle \(the model's order: ([\d,]+)\)", line)
    assert m, line
    after, before = (int(g.replace(",", "")) for g in m.groups())
    assert after < before
    assert cli.main([*args, "-o", str(plain), "--op-order", "model", "-q"]) == 0
    man_a, man_p = (json.loads((d / "manifest.json").read_text()) for d in (auto, plain))
    model_order = ["layers.0", "layers.3.body.0", "layers.3.body.3", "layers.3.shortcut.0", "layers.3", "layers.5",
                   "layers.7", "layers.8"]
    assert [lay["name"] for lay in man_p["layers"]] == model_order
    assert [lay["name"] for lay in man_a["layers"]] == [model_order[i] for i in (0, 1, 3, 2, 4, 5, 6, 7)]
    assert (man_a["build_config"]["op_order"], man_p["build_config"]["op_order"]) == ("auto", "model")
    assert np.array_equal(np.load(auto / "expected_output.npy"), np.load(plain / "expected_output.npy"))
    # one input a pass: the stream with every other pass's act banks swapped is timed against the plain one
    passes = tmp_path / "passes"
    assert cli.main([*args, "-o", str(passes), "--batch", "1"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if "act banks" in ln)
    m = re.fullmatch(r"  --op-order auto: every (other pass with its act banks swapped|pass with the same act banks): "
                     r"([\d,]+) cycles per input over the first passes on the cycle model at 1 byte a cycle "
                     r"\((with|without) the swap: ([\d,]+)\)", line)
    assert m, line
    swapped = m.group(1).startswith("other")
    assert m.group(3) == ("without" if swapped else "with")
    assert int(m.group(2).replace(",", "")) <= int(m.group(4).replace(",", ""))
    man = json.loads((passes / "manifest.json").read_text())
    assert man.get("mirror", False) == swapped and man["passes"] == 2
    assert np.array_equal(np.load(passes / "expected_output.npy"), np.load(plain / "expected_output.npy"))


def test_count_beyond_the_input_bound_is_refused_before_allocating(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """--count 10^8 random inputs (25 GB of float32) was allocated before anything was checked."""
    out = tmp_path / "b"
    assert cli.main([str(MODEL), "-o", str(out), "--inputs", "random", "--count", str(10**8), "-q"]) == 2
    _one_line_error(capsys, "--count 100000000", f"at most {cli.MAX_INPUT_ELEMENTS}")
    assert not out.exists()


@pytest.mark.parametrize(("field", "value", "needle"), [
    ("mem_bytes", 1 << 40, "field 'mem_bytes' must be an integer from 8 to 2^32"),
    ("insn_base", "0", "field 'insn_base' must be a byte address"),
    ("n_columns", 0, "field 'n_columns' must be a positive integer"),
    ("layers", [{"name": 3}], "field 'layers' must be a list"),
    ("expected", {"sim_insns": 1}, "field 'expected.sim_err_code'"),
    ("output", {"addr": 1 << 20, "shape": [4, 10], "stride": 10}, "field 'output' (4 x 10 bytes at 0x100000"),
    ("accuracy", {"float": 7}, "field 'accuracy' must be an object of fractions"),
    ("files", {"labels": "../../etc/passwd"}, "field 'files' must be an object naming files of the build"),
    ("batch_from", "no-such-layer", "field 'batch_from' must be the name of one of the layers"),
    ("stamps.ops", [[0, 0]], "field 'stamps.ops' must be one [pass, layer] pair per label after the first"),
])
def test_forged_manifest_fields_are_refused(good_build: Path, tmp_path: Path, field: str, value: object,
                                            needle: str) -> None:
    """A manifest edited and resealed by hand still has to be well-formed (the readers trust its fields)."""
    b = copy_build(good_build, tmp_path / "b")
    man = json.loads((b / "manifest.json").read_text())
    if field == "stamps.ops":
        man["stamps"]["ops"] = value
    else:
        man[field] = value
    (b / "manifest.json").write_text(json.dumps(pqbuild.seal(man, b)))
    with pytest.raises(pqbuild.BuildError) as exc:
        pqbuild.load(b)
    assert needle in str(exc.value)


def test_manifest_must_be_a_regular_file(good_build: Path, tmp_path: Path) -> None:
    b = copy_build(good_build, tmp_path / "b")
    (b / "manifest.json").unlink()
    os.mkfifo(b / "manifest.json")  # reading it would block forever
    with pytest.raises(pqbuild.BuildError, match="not a regular file"):
        pqbuild.load(b)


def test_duration_and_eta() -> None:
    from pqcompile.clitools import duration, eta

    assert [duration(s) for s in (0, 5, 59.6, 95, 3599, 3700)] == ["0s", "5s", "1m00s", "1m35s", "59m59s", "1h01m"]
    assert (eta(1, 4, 10), eta(4, 4, 99), eta(0, 4, 10)) == ("ETA 30s", "ETA 0s", "ETA ?")
