"""The CIFAR-10 recipe end to end on a small data set written here in the real file format (the python
version's pickled batches): ``pqtrain train --model resnet20 --data cifar10`` for one epoch per stage with tiny
settings (float, PQ fine-tuning, 8-bit QAT) and worker processes, then ``pqcompile`` with the host layers of
``pqtrain.zoo.HOST_LAYERS`` and the ISS; plus the reader's refusals (missing, truncated, foreign pickles) as
one-line errors."""

from __future__ import annotations

import csv
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from pqcompile.cli import compile_model
from pqcompile.options import BuildConfig
from pqmodel.data import DataError, load_cifar10, read_cifar10_py
from pqmodel.model import load
from pqtrain import cli
from pqtrain.zoo import HOST_LAYERS


def write_cifar_py(root: Path, per_batch: int = 8, test: int = 16, seed: int = 0) -> Path:
    """CIFAR-10's python version (cifar-10-batches-py/data_batch_1..5, test_batch): pickled dicts with bytes
    keys, 'data' uint8 [N, 3072] and 'labels' (the images' brightness depends on the class)."""
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for name, n in [*((f"data_batch_{i}", per_batch) for i in range(1, 6)), ("test_batch", test)]:
        labels = rng.integers(0, 10, n)
        data = (rng.integers(0, 128, (n, 3072)) + labels[:, None] * 12).astype(np.uint8)
        obj = {b"batch_label": name.encode(), b"labels": labels.tolist(), b"data": data,
               b"filenames": [f"{i}.png".encode() for i in range(n)]}
        (base / name).write_bytes(pickle.dumps(obj, protocol=2))
    return base


def test_python_batches_are_read_and_foreign_pickles_refused(tmp_path: Path) -> None:
    base = write_cifar_py(tmp_path, per_batch=3, test=4)
    x_tr, y_tr, x_te, y_te = load_cifar10(tmp_path)
    assert x_tr.shape == (15, 3, 32, 32) and x_te.shape == (4, 3, 32, 32) and y_tr.dtype == torch.int64
    obj = pickle.loads((base / "test_batch").read_bytes())
    imgs, labels = read_cifar10_py(base / "test_batch")
    assert np.array_equal(imgs.reshape(4, -1), obj[b"data"]) and labels.tolist() == obj[b"labels"]
    np.testing.assert_array_equal((x_te.numpy() * 255).round().astype(np.uint8).reshape(4, -1), obj[b"data"])
    (base / "data_batch_2").write_bytes(pickle.dumps(os.system, protocol=2))  # a global, not a batch: not run
    with pytest.raises(DataError, match="data_batch_2: not a CIFAR-10 python batch.*posix.system"):
        load_cifar10(tmp_path)
    (base / "data_batch_2").write_bytes((base / "data_batch_1").read_bytes()[:100])
    with pytest.raises(DataError, match="data_batch_2: not a CIFAR-10 python batch"):
        load_cifar10(tmp_path)
    (base / "data_batch_2").unlink()
    with pytest.raises(DataError, match="incomplete: missing data_batch_2"):
        load_cifar10(tmp_path)


def test_missing_or_corrupt_data_set_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["train", "--model", "resnet20", "--data", "cifar10", "-o", str(tmp_path / "m.pt"), "--data-dir"]
    for where, words in ((tmp_path / "none", "does not exist"), (tmp_path, "CIFAR-10 not found in")):
        assert cli.main([*argv, str(where)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("pqtrain: error: ") and words in err, err
    base = write_cifar_py(tmp_path / "c", per_batch=2, test=2)
    (base / "test_batch").write_bytes(b"\x80\x02}q\x00(X")
    assert cli.main([*argv, str(tmp_path / "c")]) == 2
    assert "test_batch: not a CIFAR-10 python batch" in capsys.readouterr().err
    assert not (tmp_path / "m.pt").exists()


def test_resnet20_recipe_end_to_end_then_compiled(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_cifar_py(tmp_path / "data", per_batch=4, test=8)
    model, ck = tmp_path / "resnet20.pt", tmp_path / "ck"
    assert cli.main(["train", "--model", "resnet20", "--data", "cifar10", "--data-dir", str(tmp_path / "data"),
                     "-o", str(model), "--float-epochs", "1", "--pq-epochs", "1", "--qat-epochs", "1",
                     "--batch-size", "8", "--workers", "2", "--kmeans-images", "4", "--kmeans-iters", "3",
                     "--checkpoint-dir", str(ck)]) == 0
    out = capsys.readouterr().out
    for stage in ("[float] epoch   1/1", "[pq-ste] epoch   1/1", "[qat-8b] epoch   1/1", f"wrote {model}"):
        assert stage in out, out
    net, arch, meta = load(model)
    cfg = meta["config"]
    assert arch["name"] == "resnet20" and meta["dataset"] == "cifar10" and meta["qat_bits"] == 8
    assert (cfg["optimizer"], cfg["momentum"], cfg["weight_decay"], cfg["augment"], cfg["batch_size"]) == \
        ("sgd", 0.9, 5e-4, True, 8)
    assert meta["compile_hint"].endswith("--host-layers " + " ".join(HOST_LAYERS["resnet20"]))
    assert {(p.k, p.v) for p in net.pq_layers()} == {(16, 9), (16, 4)}  # the paper's K=16 v=9; 1x1 projections v=4
    assert [r["stage"] for r in csv.DictReader((ck / "log.csv").open())] == ["float", "pq-ste", "qat-8b"]
    inputs = tmp_path / "test.npy"
    np.save(inputs, load_cifar10(tmp_path / "data")[2][:2].numpy())
    man = compile_model(str(model), str(tmp_path / "build"),
                        BuildConfig(inputs=str(inputs), count=1, act_bits=8, lut_bits=8,
                                    host_layers=tuple(HOST_LAYERS["resnet20"])),
                        quiet=True)  # runs the golden ISS and checks it against the integer reference
    assert (tmp_path / "build" / "expected_output.npy").is_file() and man["n_columns"] == 1
    assert man["model_meta"]["dataset"] == "cifar10"
