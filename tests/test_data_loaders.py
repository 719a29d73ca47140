"""The CIFAR-10 (binary), EMNIST (IDX) and Speech Commands (.npy features) loaders on small files in the real
formats, written here."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from pqmodel.data import DataError, load_cifar10, load_emnist, load_speech_commands


def _cifar_batch(path: Path, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    pixels = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    path.write_bytes(np.concatenate([labels[:, None], pixels], axis=1).tobytes())
    return pixels.reshape(n, 3, 32, 32), labels


def test_cifar10_binary(tmp_path: Path) -> None:
    base = tmp_path / "cifar-10-batches-bin"
    base.mkdir()
    parts = [_cifar_batch(base / f"data_batch_{i}.bin", 3, i) for i in range(1, 6)]
    te_pix, te_lab = _cifar_batch(base / "test_batch.bin", 4, 9)
    x_tr, y_tr, x_te, y_te = load_cifar10(tmp_path)
    assert x_tr.shape == (15, 3, 32, 32) and x_te.shape == (4, 3, 32, 32)
    assert y_tr.tolist() == np.concatenate([p[1] for p in parts]).tolist() and y_te.tolist() == te_lab.tolist()
    np.testing.assert_array_equal((x_te.numpy() * 255).round().astype(np.uint8), te_pix)
    assert float(x_tr[3, 1, 0, 5]) == pytest.approx(parts[1][0][0, 1, 0, 5] / 255.0)  # file 2's first record
    (base / "data_batch_3.bin").unlink()
    with pytest.raises(DataError, match="missing data_batch_3.bin"):
        load_cifar10(tmp_path)
    (base / "data_batch_3.bin").write_bytes(b"\x01" * 100)
    with pytest.raises(DataError, match="whole number"):
        load_cifar10(tmp_path)
    with pytest.raises(DataError, match="not found"):
        load_cifar10(tmp_path / "nowhere")


def _idx(path: Path, arr: np.ndarray, compress: bool) -> None:
    head = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + b"".join(struct.pack(">I", d) for d in arr.shape)
    data = head + arr.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


@pytest.mark.parametrize("compress", [True, False])
def test_emnist_idx(tmp_path: Path, compress: bool) -> None:
    rng = np.random.default_rng(1)
    imgs = {p: rng.integers(0, 256, (n, 28, 28)) for p, n in (("train", 5), ("test", 3))}
    labs = {p: rng.integers(0, 47, len(imgs[p])) for p in imgs}
    sfx = ".gz" if compress else ""
    for p in imgs:
        _idx(tmp_path / f"emnist-balanced-{p}-images-idx3-ubyte{sfx}", imgs[p], compress)
        _idx(tmp_path / f"emnist-balanced-{p}-labels-idx1-ubyte{sfx}", labs[p], compress)
    x_tr, y_tr, x_te, y_te = load_emnist(tmp_path)
    assert x_tr.shape == (5, 1, 28, 28) and y_te.tolist() == labs["test"].tolist()
    # EMNIST stores images transposed: the loader returns them upright
    assert float(x_tr[2, 0, 3, 7]) == pytest.approx(imgs["train"][2, 7, 3] / 255.0)
    with pytest.raises(DataError, match="emnist-letters-train-images"):
        load_emnist(tmp_path, split="letters")
    bad = tmp_path / f"emnist-balanced-test-labels-idx1-ubyte{sfx}"
    bad.write_bytes(gzip.compress(b"\x01\x02") if compress else b"\x01\x02")
    with pytest.raises(DataError, match="not an IDX file"):
        load_emnist(tmp_path)


def test_speech_commands_features(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    np.save(tmp_path / "train_features.npy", rng.standard_normal((6, 10, 50)).astype(np.float32))
    np.save(tmp_path / "train_labels.npy", rng.integers(0, 12, 6))
    np.save(tmp_path / "test_features.npy", rng.standard_normal((2, 10, 50)).astype(np.float32))
    with pytest.raises(DataError, match="missing test_labels.npy"):
        load_speech_commands(tmp_path)
    np.save(tmp_path / "test_labels.npy", np.array([3, 11]))
    x_tr, y_tr, x_te, y_te = load_speech_commands(tmp_path)
    assert x_tr.shape == (6, 1, 10, 50) and y_te.tolist() == [3, 11]
    np.save(tmp_path / "test_labels.npy", np.array([{"a": 1}, {}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="not a readable"):
        load_speech_commands(tmp_path)
