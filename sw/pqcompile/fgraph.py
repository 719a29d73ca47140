"""The float graph: what extraction (:func:`pqcompile.graph.extract`) builds from a model and the front end's
passes (batch-norm folding, ReLU fusion, quantization) rewrite. Every tensor is channels-last ``(h, w, ch)``;
ops are listed in execution order. The op classes themselves live with their handlers (:mod:`pqcompile.ops`):
each derives from :class:`FOp`."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from .errors import CompileError


@dataclass
class FTensor:
    """A float tensor: channels-last shape (h, w, ch) and the shape PyTorch sees ((C, H, W) or (d,))."""

    name: str
    shape: tuple[int, int, int]
    arch_shape: tuple[int, ...]


class FOp:
    """A float op: ``name`` (the model layer), ``out``, and one input ``inp`` unless :meth:`inputs` says
    otherwise. ``layer_type`` names the model layer type it comes from (in messages)."""

    name: str
    out: str
    inp: str
    relu: bool = False
    layer_type: ClassVar[str] = ""

    def inputs(self) -> list[str]:
        return [self.inp]

    def rename_input(self, old: str, new: str) -> None:
        if self.inp == old:
            self.inp = new

    def kind(self) -> str:
        return self.layer_type


@dataclass
class FloatGraph:
    """The accelerator part of a network in float, channels-last, ops in execution order."""

    name: str
    tensors: dict[str, FTensor]
    ops: list[FOp]
    input: str
    output: str
    layer_types: list[str]  # the types of the top-level layers (for the host-layer hints)
    host_prefix: list[str] = field(default_factory=list)
    host_suffix: list[str] = field(default_factory=list)

    def producer(self, t: str) -> FOp | None:
        return next((op for op in self.ops if op.out == t), None)

    def consumers(self, t: str) -> list[FOp]:
        return [op for op in self.ops if t in op.inputs()]

    def rename(self, old: str, new: str) -> None:
        """Every use of tensor ``old`` becomes a use of ``new`` (``old`` is dropped)."""
        for op in self.ops:
            op.rename_input(old, new)
        if self.output == old:
            self.output = new
        gone = self.tensors.pop(old, None)
        if gone is not None and new in self.tensors:
            self.tensors[new].arch_shape = gone.arch_shape  # a flatten seen by the later name

    def new_tensor(self, name: str, shape: tuple[int, int, int], arch_shape: tuple[int, ...]) -> str:
        self.tensors[name] = FTensor(name, shape, arch_shape)
        return name

    def host_hint(self, name: str) -> str:
        """What to do about a layer the accelerator cannot run: the --host-layers that would take it."""
        top = int(name.split(".")[1])
        pq = [i for i, t in enumerate(self.layer_types) if t in ("pq_linear", "pq_conv2d", "residual")]
        first, last = (pq[0], pq[-1]) if pq else (len(self.layer_types), -1)
        if top < first:
            names = [f"layers.{i}" for i in range(first)]
        elif top > last:
            names = [f"layers.{i}" for i in range(top, len(self.layer_types))]
        else:
            where = f" (it is inside layers.{top})" if name != f"layers.{top}" else ""
            return (f"it lies between accelerator layers{where}, and only a leading prefix and a trailing suffix "
                    "of the network can run on the host")
        return f"run it on the host with --host-layers {','.join(names)}"


@dataclass
class Extraction:
    """What an op handler's ``extract`` gets: the float graph so far, the model's state dict, and ``layer``
    (extract a nested layer list's element, e.g. a residual body, by the same rules)."""

    fg: FloatGraph
    state: dict[str, Tensor]
    layer: Callable[[dict[str, Any], str, str], str]

    def param(self, name: str, kind: str, key: str, shape: tuple[int, ...], optional: bool = False
              ) -> np.ndarray | None:
        """Parameter ``key`` of layer ``name``: present (unless ``optional``), of the ``shape`` the architecture
        gives, finite; else a CompileError naming it."""
        t = self.state.get(f"{name}.{key}")
        if t is None:
            if optional:
                return None
            raise CompileError(f"{name} ({kind}): the state dict has no '{name}.{key}'")
        if tuple(t.shape) != shape:
            raise CompileError(f"{name} ({kind}): '{name}.{key}' has shape {list(t.shape)}, the architecture gives "
                               f"{list(shape)}")
        arr = t.detach().to(torch.float64).cpu().numpy()
        if not np.isfinite(arr).all():
            raise CompileError(f"{name} ({kind}): '{name}.{key}' holds NaN or infinite values")
        return arr


def to_channels_last(shape: Sequence[int]) -> tuple[int, int, int]:
    if len(shape) == 3:
        return (int(shape[1]), int(shape[2]), int(shape[0]))
    return (1, 1, math.prod(int(s) for s in shape))
