"""Hostile and malformed model files (issue 9, "Hardening"): every refusal is exit status 2 with one line
naming the file and the field, from ``pqcompile`` and ``pqtrain`` alike; nothing is executed, nothing is
written, and no declared size is allocated before it is checked against the stored tensors."""

from __future__ import annotations

import io
import json
import os
import pickle
import random
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pqcompile import cli as pqcompile_cli
from pqmodel.data import DataError
from pqmodel.model import (
    MAX_JSON_DEPTH,
    MAX_JSON_NODES,
    MAX_LAYERS,
    ModelFormatError,
    build,
    load,
    load_raw,
    save,
    state_layout,
    validate_arch,
)
from pqtrain import cli as pqtrain_cli
from pqtrain import zoo
from pqtrain.train import float_arch, mlp_arch

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "models" / "digits_mlp.pt"
WEIGHT = "layers.0.weight"  # [16, 64] in the tiny model


def _tiny_arch(name: str = "tiny") -> dict[str, Any]:
    """A digits MLP small enough to compile in a second: pq_linear 64 -> 16, relu, pq_linear 16 -> 10."""
    return mlp_arch([16], k=4, v=4, metric="l2", name=name)


def _good_file(tmp_path: Path, name: str = "good.pt", arch_name: str = "tiny") -> Path:
    torch.manual_seed(0)
    arch = _tiny_arch(arch_name)
    path = tmp_path / name
    save(build(arch), arch, path, {"dataset": "none", "seed": 0})
    return path


def _raw(tmp_path: Path) -> dict[str, Any]:
    return torch.load(_good_file(tmp_path, "raw_source.pt"), weights_only=True)


def _write(tmp_path: Path, name: str, obj: Any) -> Path:
    path = tmp_path / name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.save(obj, path)
    return path


def _with_state(raw: dict[str, Any], **tensors: Any) -> dict[str, Any]:
    return {**raw, "state_dict": {**raw["state_dict"], **{k.replace("__", "."): v for k, v in tensors.items()}}}


def _pqcompile_refuses(capsys: pytest.CaptureFixture[str], path: Path, *needles: str) -> str:
    """pqcompile exits 2 with one line naming the file (and each needle), and creates no build directory."""
    out = path.parent / "build_out"
    rc = pqcompile_cli.main([str(path), "-o", str(out), "--config", "small", "--count", "4", "-q"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("pqcompile: error: ") and err.count("\n") == 1 and err.endswith("\n"), err
    assert str(path) in err, err
    for needle in needles:
        assert needle in err, err
    assert not out.exists()
    return err


def _pqtrain(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = pqtrain_cli.main(list(argv))
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _pqtrain_refuses(capsys: pytest.CaptureFixture[str], *argv: str, needles: tuple[str, ...]) -> str:
    rc, _, err = _pqtrain(capsys, *argv)
    assert rc == 2, err
    assert err.startswith("pqtrain: error: ") and err.count("\n") == 1 and err.endswith("\n"), err
    for needle in needles:
        assert needle in err, err
    return err


# --- 1. files that are not model files at all ---------------------------------------------------------------


def _rezip(src: Path, dst: Path, compress_type: int) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info.filename), compress_type=compress_type)
    return dst


def _not_model_file(tmp_path: Path, case: str) -> Path:
    path = tmp_path / f"{case}.pt"
    if case == "empty":
        path.write_bytes(b"")
    elif case == "text":
        path.write_text("format: pqa-model\nthis is not a torch archive\n")
    elif case == "random":
        path.write_bytes(bytes([0xFF]) + random.Random(0).randbytes(4095))
    elif case == "pickle":
        path.write_bytes(pickle.dumps({"format": "pqa-model", "version": 1}))
    elif case == "zip_not_torch":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("readme.txt", "hello")
    elif case == "compressed":  # a deflated entry could expand ~1000x: a tiny file costing gigabytes
        _rezip(_good_file(tmp_path, "src.pt"), path, zipfile.ZIP_DEFLATED)
    elif case == "truncated":
        data = _good_file(tmp_path, "src.pt").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif case == "directory":
        path.mkdir()
    elif case == "bare_state_dict":
        _write(tmp_path, path.name, build(_tiny_arch()).state_dict())
    return path


NOT_MODEL_FILES = {
    "empty": "not a PQA model file (empty file)",
    "text": "not a PQA model file (a text file, not a zip/torch archive)",
    "random": "not a PQA model file (unrecognised binary data, not a zip/torch archive)",
    "pickle": "(a pickle (torch's pre-1.6 format or plain pickle), not a zip/torch archive)",
    "zip_not_torch": "a zip archive but not a torch one: no data.pkl",
    "compressed": "is compressed",
    "truncated": "truncated or corrupt zip archive",
    "directory": "is a directory, not a model file",
    "bare_state_dict": "a torch file without 'format'",
}


@pytest.mark.parametrize("case", list(NOT_MODEL_FILES))
def test_not_a_model_file_gets_a_clear_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    path = _not_model_file(tmp_path, case)
    _pqcompile_refuses(capsys, path, NOT_MODEL_FILES[case])
    err = _pqtrain_refuses(capsys, "eval", str(path), needles=(str(path), NOT_MODEL_FILES[case]))
    assert "Traceback" not in err


def test_random_bytes_are_refused_with_the_reason_not_a_torch_error(tmp_path: Path) -> None:
    path = tmp_path / "r.pt"
    path.write_bytes(random.Random(1).randbytes(4096).replace(b"PK", b"pk"))
    with pytest.raises(ModelFormatError, match="not a zip/torch archive") as info:
        load(path)
    assert "WeightsUnpickler" not in str(info.value) and "\n" not in str(info.value)


# --- 2. meta and arch must be plain JSON ---------------------------------------------------------------------


def _dag(levels: int) -> list[Any]:
    """A list shared twice at every level: a few hundred bytes pickled, 2^levels values when walked."""
    node: list[Any] = [0]
    for _ in range(levels):
        node = [node, node]
    return node


def _deep(levels: int) -> list[Any]:
    node: list[Any] = []
    for _ in range(levels):
        node = [node]
    return node


BAD_META: dict[str, tuple[dict[str, Any], str]] = {
    "tensor": ({"foo": torch.zeros(3)}, "meta.foo: a tensor [3] is not a JSON value"),
    "nested_tensor": ({"a": {"b": [1, torch.zeros(1)]}}, "meta.a.b[1]: a tensor [1]"),
    "nan": ({"acc": float("nan")}, "meta.acc: nan is not a finite number"),
    "infinity": ({"acc": float("inf")}, "meta.acc: inf is not a finite number"),
    "tuple": ({"t": (1, 2)}, "meta.t: a tuple is not a JSON value"),
    "set": ({"s": {1, 2}}, "meta.s: a set is not a JSON value"),
    "int_key": ({"d": {1: 2}}, "meta.d: key 1 is not a string"),
    "huge_int": ({"n": 1 << 70}, "meta.n: integer out of the 64-bit range"),
    "surrogate": ({"s": "\ud800"}, "meta.s: string is not valid Unicode"),
    "odd_key": ({"a b": torch.zeros(1)}, "meta['a b']: a tensor"),
    "shared_dag": ({"x": _dag(24)}, f"meta: more than {MAX_JSON_NODES} values"),
    "too_deep": ({"x": _deep(MAX_JSON_DEPTH + 5)}, f"nested deeper than {MAX_JSON_DEPTH} levels"),
}


@pytest.mark.parametrize("case", list(BAD_META))
def test_meta_must_be_plain_json(tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    meta, needle = BAD_META[case]
    path = _write(tmp_path, "m.pt", {**_raw(tmp_path), "meta": meta})
    _pqcompile_refuses(capsys, path, needle)


def test_save_refuses_meta_that_is_not_json(tmp_path: Path) -> None:
    arch = _tiny_arch()
    with pytest.raises(ModelFormatError, match="meta"):
        save(build(arch), arch, tmp_path / "m.pt", {"loss": float("nan")})
    with pytest.raises(ModelFormatError, match="meta"):
        save(build(arch), arch, tmp_path / "m.pt", {"t": torch.zeros(1)})
    assert not list(tmp_path.iterdir())


def _arch_case(raw: dict[str, Any], case: str) -> tuple[dict[str, Any], str]:
    arch = json.loads(json.dumps(raw["arch"]))
    if case == "tensor_field":
        arch["layers"][0]["k"] = torch.tensor(4)
        return arch, "arch.layers[0].k: a tensor"
    if case == "name_newline":
        arch["name"] = "two\nlines\x1b[31m"
        return arch, "arch 'name' must be a string of 1 to 200 printable characters"
    if case == "name_long":
        arch["name"] = "n" * 201
        return arch, "arch 'name' must be a string of 1 to 200"
    if case == "name_not_str":
        arch["name"] = 5
        return arch, "arch 'name' must be a string"
    assert case == "num_classes_bool"
    arch["num_classes"] = True
    return arch, "arch 'num_classes' must be a positive integer, got True"


@pytest.mark.parametrize("case", ["tensor_field", "name_newline", "name_long", "name_not_str", "num_classes_bool"])
def test_arch_must_be_plain_json_with_a_printable_name(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       case: str) -> None:
    raw = _raw(tmp_path)
    arch, needle = _arch_case(raw, case)
    path = _write(tmp_path, "a.pt", {**raw, "arch": arch})
    _pqcompile_refuses(capsys, path, needle)


def test_non_ascii_name_is_accepted_and_compiles(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _good_file(tmp_path, arch_name="réseau ü 网络")
    assert load(path)[1]["name"] == "réseau ü 网络"
    out = tmp_path / "b"
    assert pqcompile_cli.main([str(path), "-o", str(out), "--config", "small", "--count", "8", "-q"]) == 0
    assert json.loads((out / "manifest.json").read_text())["n_columns"] == 8
    rc, stdout, err = _pqtrain(capsys, "eval", str(path))
    assert rc == 0, err
    assert json.loads(stdout)["name"] == "réseau ü 网络"


# --- 3. state-dict tensors of a kind the model cannot hold ---------------------------------------------------


def _bad_tensor(case: str) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nested and quantized tensors warn that they are prototypes
        w = torch.randn(16, 64)
        return {
            "sparse_coo": lambda: w.to_sparse(),
            "sparse_csr": lambda: w.to_sparse_csr(),
            "complex": lambda: w.to(torch.complex64),
            "quantized": lambda: torch.quantize_per_tensor(w, 0.1, 0, torch.qint8),
            "nested": lambda: torch.nested.nested_tensor([torch.zeros(64), torch.zeros(32)]),
            "meta_device": lambda: torch.empty(16, 64, device="meta"),
            "int32": lambda: w.to(torch.int32),
            "float8": lambda: w.to(torch.float8_e4m3fn),
            "expanded": lambda: torch.zeros(1, 1).expand(16, 64),
            "overlapping": lambda: torch.zeros(79).as_strided((16, 64), (1, 1)),
            "list": lambda: [[0.0] * 64] * 16,
        }[case]()


BAD_TENSORS = {
    "sparse_coo": "has layout torch.sparse_coo (sparse?); expected a dense (torch.strided) tensor",
    "sparse_csr": "has layout torch.sparse_csr",
    "complex": "has dtype torch.complex64",
    "quantized": "is a quantized tensor",
    "nested": "is a nested tensor",
    "meta_device": "is on device 'meta'",
    "int32": "has dtype torch.int32",
    "float8": "has dtype torch.float8_e4m3fn",
    "expanded": "is not a dense tensor held whole by its storage",
    "overlapping": "is not a dense tensor held whole by its storage",
    "list": "must be a tensor, got a list",
}


@pytest.mark.parametrize("case", list(BAD_TENSORS))
def test_state_dict_tensor_kinds(tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    path = _write(tmp_path, "t.pt", _with_state(_raw(tmp_path), layers__0__weight=_bad_tensor(case)))
    _pqcompile_refuses(capsys, path, f"state_dict '{WEIGHT}'", BAD_TENSORS[case])
    _pqtrain_refuses(capsys, "eval", str(path), needles=(str(path), f"state_dict '{WEIGHT}'"))


def test_state_dict_mismatch_names_the_key_and_both_shapes(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    raw = _raw(tmp_path)
    missing = dict(raw["state_dict"])
    del missing["layers.2.bias"]
    _pqcompile_refuses(capsys, _write(tmp_path, "missing.pt", {**raw, "state_dict": missing}),
                       "missing keys 'layers.2.bias' (the arch gives [10])")
    extra = _with_state(raw, layers__7__weight=torch.zeros(3, 2))
    _pqcompile_refuses(capsys, _write(tmp_path, "extra.pt", extra),
                       "unexpected keys 'layers.7.weight' (stored [3, 2])")
    shape = _with_state(raw, layers__0__weight=torch.zeros(16, 63))
    _pqcompile_refuses(capsys, _write(tmp_path, "shape.pt", shape),
                       f"state_dict '{WEIGHT}' has shape [16, 63], the arch gives [16, 64]")


def test_state_layout_is_what_build_makes() -> None:
    """The shape check (done before anything is built) knows exactly the state dict the network has."""
    archs = [zoo.arch(name) for name in zoo.ZOO] + [float_arch(zoo.arch("resnet20"))]
    archs.append({"name": "odd", "input_shape": [2, 9, 9], "num_classes": 5, "layers": [
        {"type": "pq_conv2d", "in_channels": 2, "out_channels": 4, "kernel_size": [2, 3], "k": 3, "v": 5,
         "metric": "l1", "bias": False},
        {"type": "batchnorm2d", "num_features": 4},
        {"type": "residual", "body": [{"type": "conv2d", "in_channels": 4, "out_channels": 6, "kernel_size": 1}],
         "shortcut": [{"type": "pad_channels", "out_channels": 6}]},
        {"type": "maxpool", "kernel_size": 2}, {"type": "flatten"},
        {"type": "linear", "in_features": 6 * 4 * 3, "out_features": 5, "bias": False}]})
    for arch in archs:
        validate_arch(arch)
        built = {k: (tuple(v.shape), v.dtype) for k, v in build(arch).state_dict().items()}
        assert state_layout(arch) == built, arch["name"]


# --- 4. declared sizes: checked against the stored tensors and capped before any allocation -----------------


def _oversized(tmp_path: Path, n: int) -> Path:
    """A few-KB file whose arch declares an n x n linear layer over a one-element weight."""
    arch = {"name": "big", "input_shape": [n], "num_classes": n,
            "layers": [{"type": "linear", "in_features": n, "out_features": n}]}
    state = {"layers.0.weight": torch.zeros(1), "layers.0.bias": torch.zeros(min(n, 16000))}
    return _write(tmp_path, f"big{n}.pt", {"format": "pqa-model", "version": 1, "arch": arch, "state_dict": state,
                                           "meta": {}})


def test_oversized_declarations_are_refused_without_allocating(tmp_path: Path) -> None:
    """Before the fix: 20000 x 20000 cost 1.8 GB of memory, 16000 x 16000 1.2 GB, and 100000 x 100000 was an
    internal error (a 40 GB allocation). Now each is refused after reading the few KB of the file."""
    paths = [_oversized(tmp_path, n) for n in (16000, 20000, 100000)]
    script = (
        "import json, resource, sys\n"
        "from pqcompile.cli import main\n"
        "import pqcompile.graph, pqmodel.model, torch\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "rcs = [main([p, '-o', p + '.build', '--config', 'small', '-q']) for p in sys.argv[1:]]\n"
        "print(json.dumps({'rcs': rcs, 'grew_kb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base}))\n"
    )
    r = subprocess.run([sys.executable, "-c", script, *map(str, paths)], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT / "sw")}, timeout=300)
    res = json.loads(r.stdout)
    assert res["rcs"] == [2, 2, 2], r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 3, r.stderr
    assert f"state_dict '{WEIGHT}' has shape [1], the arch gives [16000, 16000]" in lines[0]
    assert "the network has 400020000 parameters" in lines[1]
    assert "'in_features' is 100000; at most 65536 is accepted" in lines[2]
    # the peak beyond what the imports take (which varies by machine): the smallest of these layers is 1 GB
    assert res["grew_kb"] < 250_000, res
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".build")]


def test_expanded_tensor_is_not_materialised(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A stride-0 view saved by torch.save is 4 bytes on disk and 10^10 elements as a view."""
    huge = torch.zeros(1).expand(100_000, 100_000)
    path = _write(tmp_path, "exp.pt", _with_state(_raw(tmp_path), layers__0__weight=huge))
    _pqcompile_refuses(capsys, path, f"state_dict '{WEIGHT}' has 10000000000 elements")


def _arch(layers: list[dict[str, Any]], input_shape: list[int], num_classes: int) -> dict[str, Any]:
    return {"name": "caps", "input_shape": input_shape, "num_classes": num_classes, "layers": layers}


def _conv(cin: int, cout: int, ks: int | list[int], **kw: Any) -> dict[str, Any]:
    return {"type": "conv2d", "in_channels": cin, "out_channels": cout, "kernel_size": ks, **kw}


CAPS: dict[str, tuple[dict[str, Any], str]] = {
    "input_elements": (_arch([{"type": "flatten"}], [1 << 25], 1 << 25), "'input_shape' [33554432] is 33554432"),
    "input_dims": (_arch([{"type": "flatten"}], [1, 1, 1, 1, 1], 1), "list of 1 to 4 positive integers"),
    "kernel": (_arch([_conv(1, 1, 65), {"type": "flatten"}], [1, 70, 70], 36), "'kernel_size' is 65; at most 64"),
    "kernel_list": (_arch([_conv(1, 1, [3, 99]), {"type": "flatten"}], [1, 8, 8], 1), "'kernel_size[1]' is 99"),
    "padding": (_arch([_conv(1, 1, 3, padding=65), {"type": "flatten"}], [1, 8, 8], 1), "'padding' is 65"),
    "stride": (_arch([_conv(1, 1, 1, stride=100), {"type": "flatten"}], [1, 8, 8], 1), "'stride' is 100"),
    "channels": (_arch([_conv(1, 70000, 1), {"type": "flatten"}], [1, 1, 1], 70000), "'out_channels' is 70000"),
    "activation": (_arch([_conv(1, 4097, 1), {"type": "flatten"}], [1, 64, 64], 4097 * 4096),
                   "layer 0 (conv2d): the output [4097, 64, 64] is 16781312 elements per input; at most 16777216"),
    "padded_input": (_arch([_conv(4096, 1, 1, padding=64), {"type": "flatten"}], [4096, 1, 1], 129 * 129),
                     "the padded input is"),
    "pq_table": (_arch([{"type": "pq_linear", "in_features": 4096, "out_features": 4096, "k": 4096, "v": 1,
                         "metric": "l2"}], [4096], 4096), "its table C*K*M = 4096*4096*4096"),
    "pool_too_big": (_arch([{"type": "maxpool", "kernel_size": 5}, {"type": "flatten"}], [1, 2, 2], 1),
                     "layer 0 (maxpool): kernel larger than the padded input [1, 2, 2]"),
    "layer_count": (_arch([{"type": "relu"}] * (MAX_LAYERS + 1), [4], 4), f"more than {MAX_LAYERS} layers"),
    "parameters": (_arch([{"type": "linear", "in_features": 65536, "out_features": 8192}], [65536], 8192),
                   "the network has 536879104 parameters"),
}


@pytest.mark.parametrize("case", list(CAPS))
def test_declared_size_caps(case: str) -> None:
    arch, needle = CAPS[case]
    with pytest.raises(ModelFormatError) as info:
        validate_arch(arch)
    assert needle in str(info.value)


def test_input_shape_cap_through_pqcompile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    arch = _arch([{"type": "flatten"}], [1 << 25], 1 << 25)
    path = _write(tmp_path, "in.pt", {"format": "pqa-model", "version": 1, "arch": arch, "state_dict": {},
                                      "meta": {}})
    _pqcompile_refuses(capsys, path, "arch 'input_shape' [33554432] is 33554432 elements per input; at most "
                                     "16777216 is accepted")


# --- 5. pqtrain: bad input is exit 2 with one line, never a traceback; it never overwrites a foreign file ---


def test_pqtrain_init_to_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _pqtrain_refuses(capsys, "init", "--model", "digits_mlp", "-o", str(tmp_path),
                     needles=(f"{tmp_path}: is a directory",))
    assert not list(tmp_path.iterdir())
    _pqtrain_refuses(capsys, "init", "--model", "digits_mlp", "-o", str(tmp_path / "no" / "m.pt"),
                     needles=(f"directory '{tmp_path / 'no'}' does not exist",))


def test_pqtrain_never_overwrites_a_foreign_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    notes = tmp_path / "notes.pt"
    notes.write_text("my notes\n")
    _pqtrain_refuses(capsys, "init", "--model", "digits_mlp", "-o", str(notes),
                     needles=(str(notes), "exists and is not a PQA model file; refusing to overwrite it"))
    assert notes.read_text() == "my notes\n"
    with pytest.raises(ModelFormatError, match="refusing to overwrite"):
        save(build(_tiny_arch()), _tiny_arch(), notes, {})
    assert notes.read_text() == "my notes\n"
    model = _good_file(tmp_path, "model.pt")  # a PQA model file may be replaced
    rc, out, err = _pqtrain(capsys, "init", "--model", "digits_mlp", "-o", str(model))
    assert rc == 0, err
    assert load(model)[1]["name"] == "digits_mlp"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt", "notes.pt"]  # no temporary left


def test_save_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _good_file(tmp_path, "m.pt")
    before = path.read_bytes()
    real_save = torch.save

    def interrupted(obj: Any, f: Any) -> None:
        buf = io.BytesIO()
        real_save(obj, buf)
        f.write(buf.getvalue()[:100])
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save(build(_tiny_arch()), _tiny_arch(), path, {})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]


def test_pqtrain_eval_of_a_model_the_digits_cannot_feed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    arch = mlp_arch([8], k=4, v=4, name="wide", in_features=32)
    path = tmp_path / "wide.pt"
    save(build(arch), arch, path, {})
    err = _pqtrain_refuses(capsys, "eval", str(path), needles=(str(path), "input_shape [32] cannot be fed the 8x8"))
    assert "Traceback" not in err
    _pqtrain_refuses(capsys, "convert", str(path), "-o", str(tmp_path / "c.pt"), needles=("input_shape [32]",))
    _pqtrain_refuses(capsys, "train", "--model", "kws", "-o", str(tmp_path / "k.pt"),
                     needles=("--model kws: input_shape [1, 10, 50] cannot be fed",))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wide.pt"]


def test_pqtrain_bad_options_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _pqtrain_refuses(capsys, "train", "--hidden", "70000", "-o", str(tmp_path / "m.pt"),
                     needles=("'out_features' is 70000; at most 65536",))
    _pqtrain_refuses(capsys, "train", "--name", "a\nb", "-o", str(tmp_path / "m.pt"), needles=("'name'",))
    for argv in (["eval", str(SHIPPED), "--bits", "1"], ["train", "--k", "0", "-o", "x.pt"],
                 ["train", "--seed", "-1", "-o", "x.pt"], ["train", "--t-start", "nan", "-o", "x.pt"]):
        with pytest.raises(SystemExit) as info:
            pqtrain_cli.main(argv)
        err = capsys.readouterr().err
        assert info.value.code == 2 and err.count("\n") == 1 and "error: argument" in err, (argv, err)
    assert not list(tmp_path.iterdir())


def test_pqtrain_convert(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    farch = float_arch(mlp_arch([16], k=4, v=4, name="small"))
    fpath = tmp_path / "float.pt"
    save(build(farch), farch, fpath, {"seed": 0})
    _pqtrain_refuses(capsys, "convert", str(fpath), "-o", str(tmp_path / "pq.pt"), "--layers", "layers.9",
                     needles=("--layers layers.9: not a float linear or conv2d layer", "layers.0, layers.2"))
    _pqtrain_refuses(capsys, "convert", str(SHIPPED), "-o", str(tmp_path / "pq.pt"),
                     needles=("no float linear or conv2d layer to convert",))
    rc, out, err = _pqtrain(capsys, "convert", str(fpath), "-o", str(tmp_path / "pq.pt"), "--k", "4", "--layers",
                            "layers.0")
    assert rc == 0, err
    _, arch, meta = load(tmp_path / "pq.pt")
    assert [lay["type"] for lay in arch["layers"]] == ["pq_linear", "relu", "linear"]
    assert meta["converted_from"] == str(fpath)


def test_pqtrain_maps_data_errors_to_2_and_internal_errors_to_1(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    path = _good_file(tmp_path)

    def no_data(seed: int = 0) -> Any:
        raise DataError("/data/digits: missing digits.npz")

    monkeypatch.setattr(pqtrain_cli, "load_digits_split", no_data)
    _pqtrain_refuses(capsys, "eval", str(path), needles=("/data/digits: missing digits.npz",))
    monkeypatch.undo()

    def bug(*args: Any) -> float:
        raise RuntimeError("a bug\nof ours")

    monkeypatch.setattr(pqtrain_cli, "accuracy", bug)
    rc, _, err = _pqtrain(capsys, "eval", str(path))
    assert rc == 1
    assert err.startswith("pqtrain: internal error: a bug\\nof ours") and err.count("\n") == 1, err


# --- legal models still load and compile; fuzzing --------------------------------------------------------


def test_shipped_model_loads_and_compiles(tmp_path: Path) -> None:
    model, arch, meta = load(SHIPPED)
    assert arch["name"] == "digits_mlp" and sorted(load_raw(SHIPPED)["state_dict"]) == sorted(model.state_dict())
    out = tmp_path / "b"
    assert pqcompile_cli.main([str(SHIPPED), "-o", str(out), "--config", "small", "--count", "8", "-q"]) == 0
    assert json.loads((out / "manifest.json").read_text())["model_meta"] == meta


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=0, max_size=2048), zip_magic=st.booleans())
def test_fuzz_random_bytes_give_model_format_error(tmp_path: Path, data: bytes, zip_magic: bool) -> None:
    path = tmp_path / "fuzz.pt"
    path.write_bytes((b"PK\x03\x04" if zip_magic else b"") + data)
    with pytest.raises(ModelFormatError):
        load(path)


_GOOD_BYTES: list[bytes] = []


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), min_size=1, max_size=8))
def test_fuzz_corrupted_model_loads_or_gives_model_format_error(tmp_path: Path,
                                                                edits: list[tuple[int, int]]) -> None:
    if not _GOOD_BYTES:
        _GOOD_BYTES.append(_good_file(tmp_path, "fuzz_src.pt").read_bytes())
    data = bytearray(_GOOD_BYTES[0])
    for pos, val in edits:
        data[pos % len(data)] = val
    path = tmp_path / "fuzz.pt"
    path.write_bytes(bytes(data))
    try:
        load(path)
    except ModelFormatError as exc:
        assert "\n" not in str(exc)
