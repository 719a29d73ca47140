"""Mini-batches of an epoch: the order, the sharding over processes, augmentation, worker processes.

Two sources, chosen by :func:`make_batches`:

- :class:`TensorBatches`: one process, tensors in memory, no augmentation, no workers: one seeded generator
  draws a permutation per epoch (the order the digits models were always trained with). Its state (the
  generator's) is checkpointed.
- :class:`LoaderBatches`: everything else: a ``torch.utils.data.DataLoader`` with a ``DistributedSampler``
  (each process its share of a per-epoch permutation fixed by the seed and the epoch; one process is the
  world of one), optional worker processes and the standard image augmentation (:class:`ImageSet`). The order
  and the augmentation depend only on (seed, epoch, sample), never on the number of workers or on the state of
  a worker, so a resumed epoch is the epoch an uninterrupted run would have trained.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from .run import Run

PAD = 4  # pad-4 random crop


class Batches(Protocol):
    """The mini-batches (inputs, labels) of each epoch, on the CPU."""

    def epoch(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class TensorBatches:
    """One process: ``randperm`` from one generator seeded once, sliced into batches."""

    def __init__(self, x: Tensor, y: Tensor, batch_size: int, seed: int) -> None:
        self.x, self.y, self.batch_size = x, y, batch_size
        self.gen = torch.Generator().manual_seed(seed)

    def epoch(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        perm = torch.randperm(self.x.shape[0], generator=self.gen)
        for i in range(0, self.x.shape[0], self.batch_size):
            idx = perm[i : i + self.batch_size]
            yield self.x[idx], self.y[idx]

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "tensor", "generator": self.gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != "tensor":
            raise ValueError(f"batch state of kind {state.get('kind')!r}, expected 'tensor'")
        self.gen.set_state(state["generator"])


def augment_params(n: int, seed: int, epoch: int) -> tuple[Tensor, Tensor]:
    """Per-sample crop offsets [n, 2] in 0..2*PAD and horizontal flips [n] of ``epoch``: a function of (seed,
    epoch) only."""
    s = np.random.SeedSequence([seed, epoch, 0x5051]).generate_state(2, np.uint64)
    g = torch.Generator().manual_seed(int(s[0] >> np.uint64(1)))
    return torch.randint(0, 2 * PAD + 1, (n, 2), generator=g), torch.randint(0, 2, (n,), generator=g)


class ImageSet(Dataset[tuple[Tensor, Tensor]]):
    """Images [N, C, H, W] and labels; with ``augment``: zero-pad 4 pixels, crop H x W at a random offset and
    flip left-right with probability 1/2 (the standard CIFAR-10 augmentation), parameters from
    :func:`augment_params` for the epoch set by :meth:`set_epoch`."""

    def __init__(self, x: Tensor, y: Tensor, augment: bool, seed: int) -> None:
        if augment and x.dim() != 4:
            raise ValueError(f"augmentation needs images [N, C, H, W], got inputs of shape {list(x.shape)}")
        self.x, self.y, self.augment, self.seed = x, y, augment, seed
        self.shift: Tensor | None = None
        self.flip: Tensor | None = None

    def set_epoch(self, epoch: int) -> None:
        if self.augment:
            self.shift, self.flip = augment_params(self.x.shape[0], self.seed, epoch)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        img = self.x[i]
        if self.augment:
            assert self.shift is not None and self.flip is not None, "set_epoch() first"
            h, w = img.shape[1], img.shape[2]
            dy, dx = int(self.shift[i, 0]), int(self.shift[i, 1])
            img = nn.functional.pad(img, (PAD, PAD, PAD, PAD))[:, dy : dy + h, dx : dx + w]
            if int(self.flip[i]):
                img = img.flip(-1)
            img = img.contiguous()
        return img, self.y[i]


class LoaderBatches:
    """A DataLoader over :class:`ImageSet` with a DistributedSampler (``run.dist``'s share of each epoch)."""

    def __init__(self, x: Tensor, y: Tensor, batch_size: int, seed: int, run: Run, augment: bool) -> None:
        self.data = ImageSet(x, y, augment, seed)
        self.sampler = DistributedSampler(self.data, num_replicas=run.dist.world, rank=run.dist.rank, shuffle=True,
                                          seed=seed, drop_last=False)
        self.loader = DataLoader(self.data, batch_size=batch_size, sampler=self.sampler, num_workers=run.workers,
                                 pin_memory=run.device.type == "cuda", persistent_workers=False)

    def epoch(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        self.sampler.set_epoch(epoch)
        self.data.set_epoch(epoch)
        yield from self.loader

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "loader"}  # the order and augmentation are functions of (seed, epoch)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != "loader":
            raise ValueError(f"batch state of kind {state.get('kind')!r}, expected 'loader'")


def make_batches(x: Tensor, y: Tensor, batch_size: int, seed: int, run: Run, augment: bool = False) -> Batches:
    """:class:`TensorBatches` for one process without augmentation or workers, else :class:`LoaderBatches`."""
    if not run.dist.active and not augment and run.workers == 0:
        return TensorBatches(x, y, batch_size, seed)
    return LoaderBatches(x, y, batch_size, seed, run, augment)
