"""Data sets for training PQA models."""

from __future__ import annotations

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
