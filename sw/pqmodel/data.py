"""Data sets for training PQA models: sklearn digits (shipped with scikit-learn), and loaders for CIFAR-10
(binary or python version), EMNIST (IDX files) and Speech Commands features (.npy) from a local directory."""

from __future__ import annotations

import gzip
import io
import math
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import Tensor


def load_digits_split(seed: int = 0, test_fraction: float = 0.25) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """sklearn 8x8 digits: (x_train, y_train, x_test, y_test); x float32 in [0, 1] ([N, 64]), y int64.

    The split is stratified and fixed by ``seed``.
    """
    ds = load_digits()
    x = (ds.data.astype(np.float32) / 16.0).astype(np.float32)
    y = ds.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)
    return (torch.from_numpy(x_tr), torch.from_numpy(y_tr), torch.from_numpy(x_te), torch.from_numpy(y_te))


# --- data sets read from a local directory (they cannot be downloaded here) -------------------------------

Split = tuple[Tensor, Tensor, Tensor, Tensor]


class DataError(ValueError):
    """A data directory or file that is missing or not in the expected format (the message names it)."""


CIFAR_RECORD = 1 + 3 * 32 * 32
CIFAR_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR_TEST = "test_batch.bin"


def read_cifar10_bin(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 binary batch: records of 1 label byte + 3072 pixel bytes (R, G, B planes of 32x32).

    Returns (images uint8 [N, 3, 32, 32], labels int64 [N]). Read with numpy; nothing is unpickled.
    """
    path = Path(path)
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % CIFAR_RECORD:
        raise DataError(f"{path}: {raw.size} bytes is not a whole number of {CIFAR_RECORD}-byte CIFAR-10 records")
    rec = raw.reshape(-1, CIFAR_RECORD)
    labels = rec[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise DataError(f"{path}: label {int(labels.max())} out of range 0..9 (not a CIFAR-10 binary batch?)")
    return rec[:, 1:].reshape(-1, 3, 32, 32), labels


CIFAR_PY_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_PY_TEST = "test_batch"
CIFAR_DIRS = ("cifar-10-batches-bin", "cifar-10-batches-py")


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles a CIFAR-10 python batch (a dict of a uint8 array, a list of labels and names) and nothing
    else: only numpy's array reconstruction is allowed, no other global (no code is run)."""

    def find_class(self, module: str, name: str) -> Any:
        from numpy._core import multiarray

        allowed: dict[tuple[str, str], Any] = {
            ("numpy.core.multiarray", "_reconstruct"): multiarray._reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): multiarray._reconstruct,
            ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
            ("_codecs", "encode"): _latin1_encode,  # how protocol-2 pickles of Python 3 write bytes
        }
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(f"global {module}.{name} is not part of a CIFAR-10 batch")
        return allowed[(module, name)]


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"unexpected encoding {encoding!r}")
    return text.encode("latin1")


def read_cifar10_py(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch (``data_batch_1`` ... ``test_batch`` of cifar-10-python.tar.gz, as torchvision
    downloads it): a pickled dict with ``data`` (uint8 [N, 3072]: R, G, B planes of 32x32) and ``labels``.
    Read with an unpickler that allows numpy arrays only. Returns (images uint8 [N, 3, 32, 32], labels int64)."""
    path = Path(path)
    try:
        obj = _CifarUnpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError) as exc:
        raise DataError(f"{path}: not a CIFAR-10 python batch ({type(exc).__name__}: {str(exc)[:120]})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: not a CIFAR-10 python batch (holds a {type(obj).__name__}, not a dict)")
    obj = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}
    data, labels = obj.get("data"), obj.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{path}: 'data' is not a uint8 array [N, 3072] (not a CIFAR-10 python batch?)")
    try:
        lab = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        raise DataError(f"{path}: 'labels' is not a list of integers") from None
    if lab.shape != (data.shape[0],):
        raise DataError(f"{path}: {lab.size} labels for {data.shape[0]} images")
    if lab.size and (lab.min() < 0 or lab.max() > 9):
        raise DataError(f"{path}: label {int(lab.max()) if lab.max() > 9 else int(lab.min())} out of range 0..9")
    return data.reshape(-1, 3, 32, 32), lab


def cifar10_files(root: str | os.PathLike[str], train_batches: int = 5) -> tuple[list[Path], Path]:
    """The training batches and the test batch of CIFAR-10 under ``root``: the binary version
    (``data_batch_1.bin`` ...) or the python version (``data_batch_1`` ...), in ``root`` itself or in
    ``cifar-10-batches-bin`` / ``cifar-10-batches-py`` below it. Raises :class:`DataError` naming what is
    missing."""
    base = Path(root)
    if not base.is_dir():
        raise DataError(f"CIFAR-10 not found: directory {base} does not exist")
    for where in (base, *(base / d for d in CIFAR_DIRS)):
        for train, test in ((CIFAR_TRAIN, CIFAR_TEST), (CIFAR_PY_TRAIN, CIFAR_PY_TEST)):
            if (where / train[0]).is_file() or (where / test).is_file():
                names = [*train[:train_batches], test]
                missing = [n for n in names if not (where / n).is_file()]
                if missing:
                    raise DataError(f"CIFAR-10 in {where} is incomplete: missing {', '.join(missing)}")
                return [where / n for n in train[:train_batches]], where / test
    raise DataError(f"CIFAR-10 not found in {base}: expected data_batch_1..5 and test_batch, binary (.bin, "
                    "cifar-10-binary.tar.gz) or python version (cifar-10-python.tar.gz), in it or in "
                    f"{' or '.join(CIFAR_DIRS)}/")


def load_cifar10(root: str | os.PathLike[str], train_batches: int = 5) -> Split:
    """CIFAR-10 from ``root`` (:func:`cifar10_files`: binary or python version): (x_train, y_train, x_test,
    y_test); x float32 [N, 3, 32, 32] in [0, 1], y int64. ``train_batches`` (1..5) limits the training files."""
    train, test = cifar10_files(root, train_batches)
    read = read_cifar10_bin if test.suffix == ".bin" else read_cifar10_py
    parts = [read(p) for p in train]
    x_te, y_te = read(test)
    x_tr = np.concatenate([p[0] for p in parts])
    y_tr = np.concatenate([p[1] for p in parts])
    f = lambda a: torch.from_numpy(a.astype(np.float32) / 255.0)  # noqa: E731
    return f(x_tr), torch.from_numpy(y_tr), f(x_te), torch.from_numpy(y_te)


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """An IDX file (MNIST/EMNIST ``*-idx3-ubyte`` / ``*-idx1-ubyte``), raw or gzip-compressed (``.gz``)."""
    path = Path(path)
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{path}: not an IDX file (bad magic)")
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if data[2] not in dtypes:
        raise DataError(f"{path}: unknown IDX element type 0x{data[2]:02x}")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise DataError(f"{path}: truncated IDX header")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    dt = np.dtype(dtypes[data[2]])
    body = data[4 + 4 * ndim :]
    if len(body) != math.prod(dims) * dt.itemsize:
        raise DataError(f"{path}: {len(body)} data bytes, header {dims} needs {math.prod(dims) * dt.itemsize}")
    return np.frombuffer(body, dtype=dt).reshape(dims).astype(dt.newbyteorder("="))


def _find(base: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (base / name).is_file():
            return base / name
    raise DataError(f"EMNIST file {stem}[.gz] not found in {base}")


def load_emnist(root: str | os.PathLike[str], split: str = "balanced") -> Split:
    """EMNIST ``split`` (balanced, byclass, letters, digits, mnist, ...) from the IDX files in ``root`` (or
    ``root/gzip``): ``emnist-<split>-{train,test}-{images-idx3,labels-idx1}-ubyte[.gz]``. Images are stored
    transposed in EMNIST and are returned upright: x float32 [N, 1, 28, 28] in [0, 1], y int64."""
    base = Path(root)
    if not base.is_dir():
        raise DataError(f"EMNIST directory {base} does not exist")
    if (base / "gzip").is_dir() and not any(base.glob(f"emnist-{split}-*")):
        base = base / "gzip"
    out: list[Tensor] = []
    for part in ("train", "test"):
        imgs = read_idx(_find(base, f"emnist-{split}-{part}-images-idx3-ubyte"))
        labels = read_idx(_find(base, f"emnist-{split}-{part}-labels-idx1-ubyte"))
        if imgs.ndim != 3 or labels.ndim != 1 or imgs.shape[0] != labels.shape[0]:
            raise DataError(f"EMNIST {split} {part}: images {imgs.shape} and labels {labels.shape} do not match")
        x = imgs.transpose(0, 2, 1)[:, None].astype(np.float32) / 255.0
        y = labels.astype(np.int64)
        if split == "letters":
            y = y - 1  # letters are labelled 1..26
        out += [torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y)]
    return out[0], out[1], out[2], out[3]


SPEECH_FILES = ("train_features.npy", "train_labels.npy", "test_features.npy", "test_labels.npy")


def load_speech_commands(root: str | os.PathLike[str]) -> Split:
    """Speech Commands *features* (computed offline, e.g. 10 MFCCs x 50 frames) in this layout:

    ``root/train_features.npy`` float32 [N, F, T], ``root/train_labels.npy`` integer [N] (0..classes-1),
    ``root/test_features.npy``, ``root/test_labels.npy`` likewise, and optionally ``root/labels.txt`` (one
    class name per line). Read with ``allow_pickle=False``. Returns x float32 [N, 1, F, T], y int64.
    """
    base = Path(root)
    missing = [n for n in SPEECH_FILES if not (base / n).is_file()]
    if missing:
        raise DataError(f"Speech Commands features not found in {base}: missing {', '.join(missing)} "
                        "(layout: docs/training.md)")
    arrs = []
    for n in SPEECH_FILES:
        try:
            arrs.append(np.load(base / n, allow_pickle=False))
        except (ValueError, OSError) as exc:
            raise DataError(f"{base / n}: not a readable .npy array ({exc})") from None
    out: list[Tensor] = []
    for feats, labels, part in ((arrs[0], arrs[1], "train"), (arrs[2], arrs[3], "test")):
        if feats.ndim != 3 or labels.ndim != 1 or feats.shape[0] != labels.shape[0]:
            raise DataError(f"{base}: {part} features {feats.shape} / labels {labels.shape}: expected [N, F, T] / [N]")
        if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
            raise DataError(f"{base}: {part}_labels.npy must hold non-negative integers")
        out += [torch.from_numpy(feats.astype(np.float32)[:, None]), torch.from_numpy(labels.astype(np.int64))]
    if out[0].shape[2:] != out[2].shape[2:]:
        raise DataError(f"{base}: train features {list(out[0].shape[2:])} and test {list(out[2].shape[2:])} differ")
    return out[0], out[1], out[2], out[3]
