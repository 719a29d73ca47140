"""The op handler interface and its registry.

An op kind is one module of :mod:`pqcompile.ops` with one :class:`OpHandler` subclass, registered with
:func:`register`. The handler holds everything the compiler does with that kind of op, pass by pass:

- front end: ``layer_types`` / :meth:`~OpHandler.extract` (model layer -> float op), :meth:`~OpHandler.rewrite`
  (a float-only op folded into its neighbours: batch norm, ReLU), :meth:`~OpHandler.forward`
  (the float op's value), :meth:`~OpHandler.quantize` (float op -> integer op, with its calibrated
  requantization), :meth:`~OpHandler.accumulate` / :meth:`~OpHandler.post_mult` (the integer reference);
- back end: :meth:`~OpHandler.check` (the limits of a configuration), :meth:`~OpHandler.kind`,
  :meth:`~OpHandler.per_image` (layout), :meth:`~OpHandler.tables` (what it lays out in memory),
  :meth:`~OpHandler.plan` (its instructions), :meth:`~OpHandler.entry` / :meth:`~OpHandler.report` (manifest
  and report fields).

The generic passes (:mod:`pqcompile.graph`, :mod:`pqcompile.backend`) look handlers up by the op's class
(:func:`of`) or the model layer type (:func:`for_layer`) and never test op types themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from torch import Tensor

from .. import ir
from ..errors import CompileError
from ..fgraph import Extraction, FloatGraph, FOp
from ..plan import OpPlan
from ..spec import HwConfig


@dataclass
class QuantContext:
    """What :meth:`OpHandler.quantize` gets: the integer tensors so far (``tensors``: their scales and ranges;
    ``ints``: their values on the calibration inputs), the output's width and signedness, and the
    calibration rules (:meth:`scale_of`)."""

    cfg: HwConfig
    tensors: dict[str, ir.TensorInfo]
    ints: dict[str, Tensor]
    bits: int  # the output's width
    unsigned: bool  # the output's range is unsigned
    lut_bits: int
    lut_calib: str
    scale_of: Callable[[Tensor | np.ndarray, bool, float, int], float]  # (values, unsigned, fallback, bits)
    calibrated: Callable[[FOp, Tensor, bool], Tensor]  # (op, its dequantized output, relu) -> values to calibrate

    def out_scale(self, op: FOp, y: Tensor, fallback: float) -> float:
        """The output scale of ``op`` whose dequantized output on the calibration inputs is ``y``."""
        return self.scale_of(self.calibrated(op, y, op.relu), self.unsigned, fallback, self.bits)


class OpHandler:
    """The base of the op handlers; a method an op kind does not need keeps its default."""

    name: ClassVar[str] = ""  # the op kind (for messages)
    ir_type: ClassVar[type | None] = None  # its integer op class (ir.PQOp, ...); None: folded away before
    float_type: ClassVar[type | None] = None  # its float op class
    layer_types: ClassVar[tuple[str, ...]] = ()  # the model layer types it extracts

    # ---- front end ---------------------------------------------------------------------------------------
    def extract(self, ex: Extraction, lay: dict[str, Any], name: str, t: str) -> str:
        """Append the float op(s) of model layer ``lay`` (named ``name``) reading tensor ``t``; its output."""
        raise NotImplementedError(self.name)

    def rewrite(self, fg: FloatGraph, op: Any) -> None:
        """Fold a float-only op (one without an integer op: ``ir_type`` None) into the ops around it."""
        raise NotImplementedError(self.name)

    def forward(self, op: Any, vals: dict[str, Tensor]) -> Tensor:
        """The float op's output (float64, channels-last) from the values of its inputs (before its ReLU)."""
        raise NotImplementedError(self.name)

    def nonneg(self, op: Any, nonneg: dict[str, bool]) -> bool:
        """The op's output is non-negative without a ReLU (given which of its inputs are)."""
        return False

    def quantize(self, op: Any, q: QuantContext) -> tuple[ir.Op, Tensor, float]:
        """(integer op, its output on the calibration inputs, the output's scale)."""
        raise CompileError(f"{op.name}: {self.name} ops must be folded into the op before them before quantization")

    def accumulate(self, op: Any, vals: dict[str, Tensor], acc_w: int) -> Tensor:
        """The integer op's accumulators before its ``quant`` step (int64, channels-last)."""
        raise NotImplementedError(self.name)

    def post_mult(self, op: Any) -> int:
        """The multiplier the ``quant`` step applies to the accumulators."""
        return int(op.post.mult)

    def report(self, op: Any, cfg: HwConfig | None) -> dict[str, Any]:
        """Op-specific fields of the front end's report row."""
        return {}

    # ---- back end ----------------------------------------------------------------------------------------
    def kind(self, g: ir.Graph, op: Any) -> str:
        return self.name

    def check(self, cfg: HwConfig, g: ir.Graph, i: int, op: Any) -> None:
        """Raise CompileError naming op ``i`` when it is inconsistent with its tensors or beyond ``cfg``."""

    def per_image(self, cfg: HwConfig, g: ir.Graph, op: Any, n: int) -> bool:
        """The op addresses single images in external memory (their byte offsets must be bus aligned)."""
        return False

    def tables(self, cfg: HwConfig, g: ir.Graph, op: Any) -> list[tuple[str, np.ndarray, str]]:
        """(key, bytes, description) of each table the op needs in memory; plans address it as ``key:index``."""
        return []

    def plan(self, cfg: HwConfig, g: ir.Graph, i: int, op: Any, n: int, strides: dict[str, int]) -> OpPlan:
        """The instructions of op ``i`` over ``n`` images, addresses symbolic (:class:`plan.Ref`)."""
        raise NotImplementedError(self.name)

    def entry(self, cfg: HwConfig, g: ir.Graph, plan: OpPlan, addr: dict[str, int]) -> dict[str, Any]:
        """Op-specific fields of the manifest's layer entry."""
        return {}


_BY_IR: dict[type, OpHandler] = {}
_BY_FLOAT: dict[type, OpHandler] = {}
_BY_LAYER: dict[str, OpHandler] = {}


def register(cls: type[OpHandler]) -> type[OpHandler]:
    """Class decorator: one instance of the handler, found by its integer and float op classes and by the
    model layer types it extracts."""
    h = cls()
    for table, keys in ((_BY_IR, [cls.ir_type]), (_BY_FLOAT, [cls.float_type]), (_BY_LAYER, list(cls.layer_types))):
        for k in keys:
            if k is None:
                continue
            if k in table:
                raise ValueError(f"op handler {cls.__name__}: {k} is already handled by {type(table[k]).__name__}")
            table[k] = h  # type: ignore[index]
    return cls


def of(op: Any) -> OpHandler:
    """The handler of an integer or float op."""
    h = _BY_IR.get(type(op)) or _BY_FLOAT.get(type(op))
    if h is None:
        raise CompileError(f"{getattr(op, 'name', op)!r}: no op handler for {type(op).__name__}")
    return h


def for_layer(layer_type: str) -> OpHandler | None:
    """The handler that extracts model layers of ``layer_type`` (None: the accelerator has none)."""
    return _BY_LAYER.get(layer_type)


def layer_types() -> list[str]:
    """Every model layer type some handler extracts."""
    return sorted(_BY_LAYER)
