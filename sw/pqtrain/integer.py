"""The integer pipeline of the accelerator for a trained PQ network, computed by ``pqcompile.graph``.

Every number comes from the compiler's front end: :func:`pqcompile.graph.build_graph` (batch-norm folding,
ReLU fusion, scales, unsigned ranges, integer prototypes, tables, biases, mult/shift) and
:func:`pqcompile.graph.reference` (the integer forward pass in torch, checked bit for bit against the golden
simulator). This module only wraps them for training: :class:`IntegerNet` maps float inputs to the integer
outputs, and :func:`calibrate_qat` installs each PQ layer's integer parameters (:class:`QatParams`) so that the
fake-quant forward of ``pqtrain.qat`` computes the same integers.

Export works for every network the accelerator runs, with host layers (``host_layers``, as ``pqcompile
--host-layers``: a float prefix and suffix run on the host); it always reads the weights back to the CPU, so the
integer model depends on the weights only, not on the device that trained them. :func:`calibrate_qat` (and
:func:`qat_params`) cover chains of PQ layers (``pq_linear``, ``pq_conv2d``, each optionally followed by
``relu``, and ``flatten``); :func:`compute_qat` / :func:`install_qat` (:class:`QatPlan`, what
:func:`pqtrain.train.train_qat` uses) cover every op of the integer graph: PQ layers with batch norm folded in,
residual adds and global average pooling, behind and before host layers (ResNet-20).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from pqcompile import ir
from pqcompile.backend import CompileError
from pqcompile.graph import Frontend, build_graph, reference
from pqcompile.spec import load as load_spec
from pqmodel.layers import PQLinear
from pqmodel.model import PQNet, Residual

from .qat import AddQat, Folded, InputQat, PoolQat, QatParams, set_qat

DEFAULT_CONFIG = "default"  # ActW 8, LutW 16, AccW 32: every act/lut width from 2 to 8 is allowed
CHUNK = 256  # inputs per pass of the integer reference (its im2col columns are int64)


class IntegerNet:
    """The exported integer model: ``forward(x_float)`` -> int64 outputs [N, classes] (the accelerator's)."""

    def __init__(self, frontend: Frontend, act_bits: int, lut_bits: int, acc_w: int) -> None:
        self.frontend = frontend
        self.act_bits = act_bits
        self.lut_bits = lut_bits
        self.acc_w = acc_w

    @property
    def graph(self) -> ir.Graph:
        return self.frontend.graph

    @property
    def input_scale(self) -> float:
        return float(self.graph.tensors[self.graph.input].scale)

    @property
    def output_scale(self) -> float:
        return float(self.graph.tensors[self.graph.output].scale)

    def quantize_input(self, x: Tensor) -> Tensor:
        """Float inputs [N, *input_shape] -> the integer graph input [N, h, w, ch] (channels-last, int64)."""
        return torch.from_numpy(self.frontend.quantize_input(x.detach().cpu().numpy()))

    @property
    def host_suffix(self) -> bool:
        """Layers after the accelerator run on the host (the classes come from them)."""
        return bool(self.frontend.suffix)

    def _reference(self, x: Tensor) -> np.ndarray:
        """The accelerator's integer outputs [N, h, w, ch] (int64), ``CHUNK`` inputs at a time."""
        if x.shape[0] <= CHUNK:
            return reference(self.graph, self.quantize_input(x).numpy(), self.acc_w)
        return np.concatenate([reference(self.graph, self.quantize_input(x[i : i + CHUNK]).numpy(), self.acc_w)
                               for i in range(0, x.shape[0], CHUNK)])

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        """Float inputs [N, ...] -> the accelerator's integer outputs [N, M] (int64; a feature map flattened in
        CHW order)."""
        y = self._reference(x)
        return torch.from_numpy(y.transpose(0, 3, 1, 2).reshape(y.shape[0], -1).copy())

    __call__ = forward

    def dequantized(self, x: Tensor) -> Tensor:
        """The network's float outputs: the integer outputs times their scale (float64), then the host layers
        after the accelerator, if any (``Frontend.finish``)."""
        if self.host_suffix:
            return torch.from_numpy(self.frontend.finish(self._reference(x))).to(torch.float64)
        return self.forward(x).to(torch.float64) * self.output_scale

    def accuracy(self, x: Tensor, y: Tensor) -> float:
        """Top-1 accuracy; ties go to the lowest class, as numpy's argmax (``pqcompile``'s report) does. With host
        layers after the accelerator, of their outputs (as ``pqcompile``'s ``accuracy_host``)."""
        out = self.dequantized(x) if self.host_suffix else self.forward(x)
        pred = np.argmax(out.numpy(), axis=1)
        return float((pred == y.cpu().numpy()).mean())


@torch.no_grad()
def export_integer(model: PQNet, arch: dict[str, Any], calib: Tensor, act_bits: int = 8,
                   lut_bits: int | None = None, config: str = DEFAULT_CONFIG, act_calib: str = "max",
                   lut_calib: str = "max", out_bits: int | None = None,
                   host_layers: Sequence[str] = ()) -> IntegerNet:
    """Quantize ``model`` for the integer pipeline with calibration inputs ``calib`` (float, [n, *input_shape]).

    ``act_bits`` is the width of activations and prototypes, ``lut_bits`` (default ``act_bits``) that of the
    table entries; ``act_calib`` / ``lut_calib`` the calibration of the activation / table scales
    (``pqcompile.quantize.calib_range``: ``"max"``, ``"percentile"`` or ``"mse"``); ``out_bits`` the width of the
    network's output (default the config's ActW: 8-bit logits whatever ``act_bits`` is); ``host_layers`` the
    top-level layers run on the host (``pqcompile --host-layers``). Raises ``ValueError`` (``CompileError``) for a
    network the accelerator cannot run. The weights are read back to the CPU first (the export is the same
    whichever device holds the model).
    """
    cfg = load_spec().config(config)
    lut_bits = lut_bits or act_bits
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    try:
        fe = build_graph(arch, state, calib.detach().cpu().to(torch.float64).numpy(), cfg,
                         act_bits=act_bits, lut_bits=lut_bits, act_calib=act_calib, lut_calib=lut_calib,
                         name=str(arch.get("name", "model")), out_bits=out_bits, host_layers=tuple(host_layers))
    except CompileError as exc:
        raise CompileError(f"not supported by the integer pipeline: {exc}") from None
    return IntegerNet(fe, act_bits, lut_bits, cfg.AccW)


def _layer_index(name: str) -> int:
    parts = name.split(".")
    if len(parts) != 2 or parts[0] != "layers":
        raise ValueError(f"{name}: quantization-aware training covers top-level PQ layers only")
    return int(parts[1])


def qat_params(inet: IntegerNet) -> dict[int, QatParams]:
    """The fake-quant parameters of each PQ layer (by layer index) of an exported integer model.

    Raises ``ValueError`` for a graph that fake-quant training does not model (batch norm folded into a PQ
    layer, residual add, pooling)."""
    g = inet.graph
    out = {}
    for op in g.ops:
        if not isinstance(op, ir.PQOp):
            raise ValueError(f"{op.name} ({op.info.get('kind')}): quantization-aware training covers chains of PQ "
                             "layers (with ReLU and flatten) only, not residual adds or pooling")
        if op.info.get("bn"):
            raise ValueError(f"{op.info['bn']} (batchnorm2d): quantization-aware training does not cover batch norm "
                             f"(it is folded into {op.name} at compile time)")
        out[_layer_index(op.name)] = _pq_params(inet, op)
    return out


def _pq_params(inet: IntegerNet, op: ir.PQOp) -> QatParams:
    g = inet.graph
    ti, to = g.tensors[op.inp], g.tensors[op.out]
    return QatParams(
        in_scale=float(ti.scale), lut_scale=float(op.info["lut_scale"]), mult=int(op.post.mult),
        shift=int(op.post.shift), out_scale=float(to.scale), act_bits=inet.act_bits, lut_bits=inet.lut_bits,
        relu=bool(op.post.relu), in_unsigned=bool(ti.unsigned), out_unsigned=bool(op.post.unsigned),
        out_bits=0 if op.post.bits == inet.act_bits else int(op.post.bits), bn=str(op.info.get("bn") or ""))


def calibrate_qat(model: PQNet, arch: dict[str, Any], calib: Tensor, act_bits: int,
                  lut_bits: int | None = None, act_calib: str = "max", lut_calib: str = "max",
                  out_bits: int | None = None) -> IntegerNet:
    """Export the current weights with ``pqcompile.graph`` and install the resulting integer parameters
    in every PQ layer of a chain (:func:`qat_params`), switching on its fake-quant forward. Returns the exported
    model."""
    clear_qat(model)
    inet = export_integer(model, arch, calib, act_bits, lut_bits, act_calib=act_calib, lut_calib=lut_calib,
                          out_bits=out_bits)
    install_qat(model, QatPlan(layers={f"layers.{i}": p for i, p in qat_params(inet).items()}))
    return inet


@dataclass
class QatPlan:
    """The fake-quant parameters of every op of an exported integer graph, by module path (plain data: it is
    computed on rank 0 and broadcast)."""

    layers: dict[str, QatParams] = field(default_factory=dict)  # PQ layers (QatParams.bn: the folded batch norm)
    adds: dict[str, AddQat] = field(default_factory=dict)  # residual blocks
    pools: dict[str, PoolQat] = field(default_factory=dict)  # global average pooling
    inputs: dict[str, InputQat] = field(default_factory=dict)  # the layer whose output is the accelerator's input


def qat_plan(inet: IntegerNet) -> QatPlan:
    """The :class:`QatPlan` of an exported integer model: every PQ op (batch norm folded), add and pool op, and
    the input quantization after the host layers before the accelerator."""
    g = inet.graph
    plan = QatPlan()
    for op in g.ops:
        post = op.post
        if isinstance(op, ir.PQOp):
            plan.layers[op.name] = _pq_params(inet, op)
        elif isinstance(op, ir.AddOp):
            plan.adds[op.name] = AddQat(float(g.tensors[op.a].scale), float(g.tensors[op.b].scale), int(op.ma),
                                        int(op.mb), int(post.shift), float(g.tensors[op.out].scale), bool(post.relu),
                                        int(post.bits), bool(post.unsigned))
        elif isinstance(op, ir.PoolOp):
            plan.pools[op.name] = PoolQat(float(g.tensors[op.inp].scale), int(post.mult), int(post.shift),
                                          float(g.tensors[op.out].scale), bool(post.relu), int(post.bits),
                                          bool(post.unsigned))
        else:
            raise ValueError(f"{op.name} ({op.info.get('kind')}): quantization-aware training does not model this op")
    if g.host_prefix:
        ti = g.tensors[g.input]
        plan.inputs[g.host_prefix[-1]] = InputQat(float(ti.scale), int(ti.bits), bool(ti.unsigned))
    return plan


def compute_qat(model: PQNet, arch: dict[str, Any], calib: Tensor, act_bits: int, lut_bits: int | None = None,
                act_calib: str = "max", lut_calib: str = "max", out_bits: int | None = None,
                host_layers: Sequence[str] = ()) -> QatPlan:
    """The fake-quant parameters of the current weights (export with ``pqcompile.graph``, then
    :func:`qat_plan`), without installing them (to compute them in one process and broadcast them)."""
    return qat_plan(export_integer(model, arch, calib, act_bits, lut_bits, act_calib=act_calib,
                                   lut_calib=lut_calib, out_bits=out_bits, host_layers=host_layers))


def _output(fn: Any) -> Any:
    return lambda _m, _args, out: fn(out)


class _AddHooks:
    """A residual block's add: its body's (and shortcut's) outputs kept by forward hooks, then :class:`AddQat`
    replaces the block's float sum (an identity shortcut's operand is the block's input)."""

    def __init__(self, add: AddQat, shortcut: bool) -> None:
        self.add, self.shortcut = add, shortcut
        self.got: dict[str, Tensor] = {}

    def keep(self, key: str) -> Any:
        return lambda _m, _args, out: self.got.__setitem__(key, out)

    def __call__(self, _m: nn.Module, args: tuple[Tensor, ...], _out: Tensor) -> Tensor:
        return self.add.forward(self.got.pop("a"), self.got.pop("b") if self.shortcut else args[0])


def install_qat(model: PQNet, plan: QatPlan) -> None:
    """Switch on the fake-quant forward of :func:`compute_qat`'s plan, removing any earlier one: each PQ layer's
    ``qat`` hook (with its batch norm folded in, the batch norm module then passes its input through), and
    forward hooks on residual blocks (the add), pooling layers and the last host layer before the accelerator
    (the input quantization). The batch norms should be in eval mode while it is on (frozen statistics: the
    fold uses the running ones, :func:`pqtrain.train.train_qat` does so)."""
    clear_qat(model)
    handles: list[Any] = []
    for path, p in plan.layers.items():
        layer = model.get_submodule(path)
        assert isinstance(layer, PQLinear), path
        if p.bn:
            bn = model.get_submodule(p.bn)
            set_qat(layer, Folded(p, bn))
            handles.append(bn.register_forward_hook(lambda _m, args, _out: args[0]))  # folded: pass through
        else:
            set_qat(layer, p)
    for path, a in plan.adds.items():
        block = model.get_submodule(path)
        assert isinstance(block, Residual), path
        add = _AddHooks(a, len(block.shortcut) > 0)
        handles.append(block.body[len(block.body) - 1].register_forward_hook(add.keep("a")))
        if add.shortcut:
            handles.append(block.shortcut[len(block.shortcut) - 1].register_forward_hook(add.keep("b")))
        handles.append(block.register_forward_hook(add))
    for path, pl in plan.pools.items():  # from the pool's input (the float mean is replaced)
        pool = model.get_submodule(path)
        handles.append(pool.register_forward_hook(lambda _m, args, _out, pl=pl: pl.forward(args[0])))
    for path, iq in plan.inputs.items():
        handles.append(model.get_submodule(path).register_forward_hook(_output(iq.forward)))
    model._qat_handles = handles  # type: ignore[assignment]


def clear_qat(model: nn.Module) -> None:
    """Switch the fake-quant forward off (every hook :func:`install_qat` added)."""
    for m in model.modules():
        if isinstance(m, PQLinear):
            set_qat(m, None)
    for h in getattr(model, "_qat_handles", []):
        h.remove()
    if hasattr(model, "_qat_handles"):
        del model._qat_handles
