"""Front end: a saved PQ model (architecture + state dict) -> the integer graph (:mod:`pqcompile.ir`).

Passes, each a function of its own (docs/compiler.md, "Passes (front end)"):

1. :func:`extract`: walk the architecture (residual bodies and shortcuts included) into a :class:`FloatGraph`
   of channels-last float ops; refuse what the accelerator cannot run unless it is a host layer (only a
   leading prefix and a trailing suffix of the network may run on the host).
2. :func:`fold_batchnorm`: fold each batch norm into the PQ layer before it (weight and bias per output
   channel).
3. :func:`fuse_relu`: fuse each ReLU into the op that produces its input (PQ, add, pool).
4. :func:`quantize_graph`: calibration, per-tensor scales, unsigned ranges, integer tables, mult/shift.

The hardware configuration's limits are checked once, by the back end (``backend.check_graph``, which
``emit_graph`` runs); the golden simulator (``sim.layer_fits``) and the RTL check them again at run time.

:func:`build_graph` runs them all and returns a :class:`Frontend` (the graph plus the host's part: input
quantization, output dequantization, host layers). :func:`reference` is the quantized model in torch integer
arithmetic, written independently of the golden simulator (``sim.py``) so that the two check each other;
:func:`float_forward` is the float graph's own forward pass.

What each kind of op does in these passes (extraction, forward, quantization, integer reference) is its
handler's (:mod:`pqcompile.ops`); the passes here are generic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from . import ir, kernels, ops, quantize
from .errors import CompileError
from .fgraph import Extraction, FloatGraph, FOp, FTensor, to_channels_last
from .ops.pq import FPQ
from .spec import HwConfig

SUPPORTED = ("pq_linear, pq_conv2d, batchnorm2d after a PQ layer, relu after a PQ layer / residual add / "
             "global_avgpool, residual (add), global_avgpool, flatten")
CALIB_FLOWS = ("quantized", "float")


# ------------------------------------------------------------------------------------------------------------
# extraction
# ------------------------------------------------------------------------------------------------------------
def host_split(arch: dict[str, Any], host_layers: Sequence[str]) -> tuple[list[int], list[int]]:
    """The top-level layer indices of the host prefix and suffix; a host layer elsewhere is an error."""
    n = len(arch["layers"])
    names = {f"layers.{i}": i for i in range(n)}
    idx = set()
    for h in host_layers:
        if h not in names:
            raise CompileError(f"host layer {h!r} is not a top-level layer of the model (layers.0 .. layers.{n - 1}; "
                               "a layer inside a residual block cannot run on the host)")
        idx.add(names[h])
    pre = 0
    while pre in idx:
        pre += 1
    suf = n
    while suf - 1 in idx and suf - 1 >= pre:
        suf -= 1
    middle = sorted(i for i in idx if pre <= i < suf)
    if middle:
        raise CompileError(f"host layers must be a leading prefix and/or a trailing suffix of the network: "
                           f"{', '.join(f'layers.{i}' for i in middle)} lies between accelerator layers")
    if pre >= suf:
        raise CompileError("every layer is a host layer: nothing is left for the accelerator")
    return list(range(pre)), list(range(suf, n))


def host_modules(arch: dict[str, Any], state: dict[str, Tensor], indices: Sequence[int]) -> list[nn.Module]:
    """The float64 torch modules (eval mode) of the given top-level layers, with the model's weights."""
    if not indices:
        return []
    from pqmodel.model import build

    model = build(arch)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CompileError(f"the state dict does not fit the architecture: {exc}") from None
    return [model.layers[i].double().eval() for i in indices]


def _run_modules(mods: Sequence[nn.Module], x: Tensor) -> Tensor:
    with torch.no_grad():
        for m in mods:
            x = m(x)
    return x


def extract(arch: dict[str, Any], state: dict[str, Tensor], host_layers: Sequence[str] = (), *,
            prefix_modules: Sequence[nn.Module] | None = None) -> FloatGraph:
    """Pass 1: the float graph of the accelerator part of the network (batch norms and ReLUs still separate).
    ``prefix_modules``: the host prefix's modules when already built (:func:`host_modules`)."""
    from pqmodel.model import ModelFormatError, validate_arch

    try:
        validate_arch(arch)
    except ModelFormatError as exc:
        raise CompileError(f"bad architecture: {exc}") from None
    prefix, suffix = host_split(arch, host_layers)
    layers = arch["layers"]
    shape: tuple[int, ...] = tuple(arch["input_shape"])
    if prefix:
        x = torch.zeros(1, *shape, dtype=torch.float64)
        mods = host_modules(arch, state, prefix) if prefix_modules is None else prefix_modules
        shape = tuple(_run_modules(mods, x).shape[1:])
    fg = FloatGraph(str(arch.get("name", "model")), {}, [], "input", "input",
                    [str(lay["type"]) for lay in layers], [f"layers.{i}" for i in prefix],
                    [f"layers.{i}" for i in suffix])
    fg.tensors["input"] = FTensor("input", to_channels_last(shape), shape)
    start, stop = len(prefix), len(layers) - len(suffix)

    def layer(lay: dict[str, Any], name: str, t: str) -> str:
        h = ops.for_layer(str(lay["type"]))
        if h is None:
            raise CompileError(f"{name} ({lay['type']}): not supported by the accelerator (it runs {SUPPORTED}); "
                               f"{fg.host_hint(name)}")
        return h.extract(ex, lay, name, t)

    ex = Extraction(fg, state, layer)
    t = "input"
    for i in range(start, stop):
        t = layer(layers[i], f"layers.{i}", t)
    fg.output = t
    if not any(type(op) is FPQ for op in fg.ops):
        raise CompileError("the accelerator part of the model has no PQ layer")
    return fg


def _rewrite(fg: FloatGraph, layer_type: str) -> FloatGraph:
    h = ops.for_layer(layer_type)
    assert h is not None and h.float_type is not None
    for op in [op for op in fg.ops if type(op) is h.float_type]:
        h.rewrite(fg, op)
    return fg


def fold_batchnorm(fg: FloatGraph) -> FloatGraph:
    """Pass 2: each batch norm becomes part of the PQ layer before it (``ops.batchnorm``)."""
    return _rewrite(fg, "batchnorm2d")


def fuse_relu(fg: FloatGraph) -> FloatGraph:
    """Pass 3: each ReLU becomes the ``relu`` of the post-processing of the op that produces its input
    (``ops.relu``)."""
    return _rewrite(fg, "relu")


# ------------------------------------------------------------------------------------------------------------
# forward passes (the float graph and the integer reference; the kernels are shared: pqcompile.kernels)
# ------------------------------------------------------------------------------------------------------------
def float_forward(fg: FloatGraph, x: np.ndarray | Tensor) -> dict[str, Tensor]:
    """The float graph's own forward pass (float64) on channels-last inputs [N, h, w, ch]: every tensor."""
    vals: dict[str, Tensor] = {fg.input: torch.as_tensor(np.asarray(x), dtype=torch.float64)}
    for op in fg.ops:
        y = ops.of(op).forward(op, vals)
        vals[op.out] = y.clamp(min=0) if op.relu else y
    return vals


def op_columns(op: ir.PQOp, x: Tensor) -> Tensor:
    """The columns a PQ op encodes from its int64 input ``x`` [N, h, w, ch]: [N * oh * ow, ch * kh * kw]."""
    return kernels.columns(x, op.kh, op.kw, op.stride, op.pad)[0]


def accumulate(op: ir.Op, vals: Mapping[str, Tensor], acc_w: int) -> Tensor:
    """The accumulators of ``op`` before its ``quant`` step (int64 [N, h, w, ch]), from the int64 values of its
    input tensors in ``vals``: a PQ op's look-up sums plus bias (wrapped to ``acc_w`` bits), ``a * ma + b * mb``
    of an add, the channel sums of a pool."""
    return ops.of(op).accumulate(op, dict(vals), acc_w)


def requantize(op: ir.Op, acc: Tensor) -> Tensor:
    """``op``'s ``quant`` step on its accumulators (an add's multipliers are in :func:`accumulate`)."""
    return kernels.post(acc, ops.of(op).post_mult(op), op.post.shift, op.post)


def run_op(op: ir.Op, vals: Mapping[str, Tensor], acc_w: int) -> Tensor:
    """``op``'s output from the values of its inputs."""
    return requantize(op, accumulate(op, vals, acc_w))


def reference(graph: ir.Graph, xq: np.ndarray, acc_w: int = 32) -> np.ndarray:
    """The quantized model in torch integer arithmetic: the graph input [N, h, w, ch] (int) -> the graph output
    [N, h, w, ch] (int64). Written from docs/isa.md independently of ``sim.py``, which it is tested against."""
    x = torch.as_tensor(np.asarray(xq, np.int64))
    if tuple(x.shape[1:]) != graph.tensors[graph.input].shape:
        raise ValueError(f"input shape {list(x.shape)} != [N, {', '.join(map(str, graph.tensors[graph.input].shape))}]")
    last_use = {}
    for i, op in enumerate(graph.ops):
        for t in graph.op_inputs(op):
            last_use[t] = i
    vals = {graph.input: x}
    for i, op in enumerate(graph.ops):
        vals[op.out] = run_op(op, vals, acc_w)
        for t in graph.op_inputs(op):
            if last_use[t] == i and t != graph.output:
                vals.pop(t, None)
    return vals[graph.output].numpy()


# ------------------------------------------------------------------------------------------------------------
# quantization
# ------------------------------------------------------------------------------------------------------------
def quantize_graph(fg: FloatGraph, calib: np.ndarray, cfg: HwConfig, *, act_bits: int | None = None,
                   lut_bits: int | None = None, act_calib: str = "max", lut_calib: str = "max",
                   calib_flow: str = "quantized", out_bits: int | None = None) -> ir.Graph:
    """Pass 4: integer tensors and ops from a folded, fused float graph and calibration inputs ``calib``
    (float, channels-last [N, h, w, ch] of the graph input).

    Each tensor gets one scale and a range: unsigned [0, 2^bits-1] when it is non-negative (the network input
    with calibration minimum >= 0, a ReLU's output, the pooled mean of a non-negative tensor) and ``bits`` <
    ActW, else signed. An op's output scale comes from ``act_calib`` over its calibrated output: with
    ``calib_flow="quantized"`` (default) the values the quantized graph computes up to that op (dequantized),
    with ``"float"`` the float graph's own values. ``out_bits`` (default ActW) is the width of the graph
    output: the network's result (logits) is not an activation that feeds another layer, so it keeps the full
    ActW bits behind narrower activations (at 4 bits and below, 2^bits-level logits tie often and the
    lowest class wins the tie: docs/training.md).
    """
    act_bits = act_bits or cfg.ActW
    lut_bits = lut_bits or cfg.LutW
    out_bits = out_bits or cfg.ActW
    if not 2 <= act_bits <= cfg.ActW or not 2 <= lut_bits <= cfg.LutW or not 2 <= out_bits <= cfg.ActW:
        raise CompileError(f"widths act_bits={act_bits}, lut_bits={lut_bits}, out_bits={out_bits} exceed config "
                           f"'{cfg.name}' (ActW={cfg.ActW}, LutW={cfg.LutW}) or are below 2")
    for meth in (act_calib, lut_calib):
        if meth not in quantize.CALIB_METHODS:
            raise CompileError(f"unknown calibration method {meth!r}; expected one of {quantize.CALIB_METHODS}")
    if calib_flow not in CALIB_FLOWS:
        raise CompileError(f"unknown calibration flow {calib_flow!r}; expected one of {CALIB_FLOWS}")
    calib = np.asarray(calib, np.float64)
    if calib.ndim != 4 or tuple(calib.shape[1:]) != fg.tensors[fg.input].shape or not calib.shape[0]:
        raise CompileError(f"calibration inputs must be [n >= 1, h, w, ch] = [n, "
                           f"{', '.join(map(str, fg.tensors[fg.input].shape))}], got {list(calib.shape)}")
    if not np.isfinite(calib).all():
        where = " (after the host layers before the accelerator)" if fg.host_prefix else ""
        raise CompileError(f"calibration inputs{where} hold NaN or infinite values")
    fvals = float_forward(fg, calib) if calib_flow == "float" else {}

    def scale_of(y: Tensor | np.ndarray, unsigned: bool, fallback: float, bits: int = act_bits) -> float:
        lv = quantize.act_levels(bits, unsigned)
        return quantize.calib_range(np.asarray(y), lv, act_calib) / lv or fallback

    in_uns = act_bits < cfg.ActW and float(calib.min()) >= 0
    s0 = scale_of(calib, in_uns, 0.0)
    if s0 <= 0:
        raise CompileError("calibration inputs are all zero: cannot choose an input scale")
    tensors = {fg.input: ir.TensorInfo(fg.input, fg.tensors[fg.input].shape, s0, act_bits, in_uns)}
    nonneg = {fg.input: float(calib.min()) >= 0}
    ints: dict[str, Tensor] = {fg.input: torch.from_numpy(quantize.quantize_act(calib, s0, act_bits, in_uns))}
    qops: list[ir.Op] = []

    def calibrated(op: FOp, y_quant: Tensor, relu: bool) -> Tensor:
        y = fvals[op.out] if calib_flow == "float" else y_quant
        return y.clamp(min=0) if relu else y

    for op in fg.ops:
        h = ops.of(op)
        if h.float_type is not None and h.ir_type is None:
            raise CompileError(f"{op.name}: quantize_graph needs a graph after fold_batchnorm and fuse_relu")
        out_nonneg = op.relu or h.nonneg(op, nonneg)
        bits = out_bits if op.out == fg.output else act_bits
        q = ops.QuantContext(cfg, tensors, ints, bits, out_nonneg and bits < cfg.ActW, lut_bits, lut_calib, scale_of,
                             calibrated)
        try:
            qop, ints[op.out], out_scale = h.quantize(op, q)
        except CompileError as exc:
            raise CompileError(f"{op.name} ({op.kind()}): {exc}") from None
        qops.append(qop)
        tensors[op.out] = ir.TensorInfo(op.out, fg.tensors[op.out].shape, out_scale, bits, q.unsigned)
        nonneg[op.out] = out_nonneg
    return ir.Graph(fg.name, tensors, qops, fg.input, fg.output, list(fg.host_prefix), list(fg.host_suffix))


# ------------------------------------------------------------------------------------------------------------
# the front end
# ------------------------------------------------------------------------------------------------------------
@dataclass
class Frontend:
    """The integer graph plus what the host does around it: the host prefix and the input quantization
    before, the output dequantization, flatten and host suffix after."""

    graph: ir.Graph
    cfg: HwConfig | None = None
    float_graph: FloatGraph | None = None
    input_shape: tuple[int, ...] = ()  # the network input shape (arch input_shape)
    output_arch_shape: tuple[int, ...] = ()  # the accelerator output as PyTorch sees it ((C, H, W) or (d,))
    prefix: list[nn.Module] = field(default_factory=list)
    suffix: list[nn.Module] = field(default_factory=list)
    host_types: dict[str, str] = field(default_factory=dict)

    def host_input(self, x: np.ndarray) -> np.ndarray:
        """Float network inputs [N, *input_shape] -> the float graph input, channels-last [N, h, w, ch]."""
        x = np.asarray(x, np.float64)
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"inputs must be [N, {', '.join(map(str, self.input_shape))}], got {list(x.shape)}")
        t = _run_modules(self.prefix, torch.from_numpy(x))
        t = t.permute(0, 2, 3, 1) if t.dim() == 4 else t.reshape(t.shape[0], 1, 1, -1)
        return t.contiguous().numpy()

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        """Float network inputs [N, *input_shape] (NCHW or [N, d]) -> int64 [N, h, w, ch] (host prefix first)."""
        ti = self.graph.tensors[self.graph.input]
        return quantize.quantize_act(self.host_input(x), ti.scale, ti.bits, ti.unsigned)

    def dequantize_output(self, y: np.ndarray) -> np.ndarray:
        """Accelerator output int [N, h, w, ch] -> float64 in PyTorch's layout ([N, C, H, W] or [N, d])."""
        y = np.asarray(y)
        to = self.graph.tensors[self.graph.output]
        if tuple(y.shape[1:]) != to.shape:
            raise ValueError(f"outputs must be [N, {', '.join(map(str, to.shape))}], got {list(y.shape)}")
        f = y.astype(np.float64) * to.scale
        if len(self.output_arch_shape) == 3:
            return f.transpose(0, 3, 1, 2).copy()
        return f.transpose(0, 3, 1, 2).reshape(f.shape[0], -1)  # CHW flatten

    def finish(self, y: np.ndarray) -> np.ndarray:
        """Accelerator output int [N, h, w, ch] -> float [N, classes] (dequantize, flatten, host suffix)."""
        t = _run_modules(self.suffix, torch.from_numpy(self.dequantize_output(y)))
        return t.reshape(t.shape[0], -1).numpy()

    def report(self) -> list[dict[str, Any]]:
        """One row per op (name, kind, shapes, K, v, c, m, table bytes, scales, post); host layers separately."""
        g = self.graph
        rows: list[dict[str, Any]] = [{"name": n, "kind": "host", "type": self.host_types.get(n, ""),
                                       "where": "prefix"} for n in g.host_prefix]
        for op in g.ops:
            ins = g.op_inputs(op)
            row: dict[str, Any] = {
                "name": op.name, "kind": op.info.get("kind", ""), "in_shapes": [list(g.tensors[t].shape) for t in ins],
                "out_shape": list(g.tensors[op.out].shape), "in_scales": [g.tensors[t].scale for t in ins],
                "out_scale": g.tensors[op.out].scale, "relu": op.post.relu, "bits": op.post.bits,
                "unsigned": op.post.unsigned, "shift": op.post.shift}
            row.update(ops.of(op).report(op, self.cfg))
            rows.append(row)
        rows += [{"name": n, "kind": "host", "type": self.host_types.get(n, ""), "where": "suffix"}
                 for n in g.host_suffix]
        return rows


def build_graph(arch: dict, state: dict[str, torch.Tensor], calib: np.ndarray, cfg: HwConfig, *,
                act_bits: int | None = None, lut_bits: int | None = None, act_calib: str = "max",
                lut_calib: str = "max", host_layers: Sequence[str] = (), name: str = "model",
                calib_flow: str = "quantized", out_bits: int | None = None) -> Frontend:
    """All front-end passes: a model (``arch`` + ``state``) and float calibration inputs ``calib``
    ([N, *input_shape]) -> the integer graph for ``cfg`` and the host's part around it."""
    prefix, suffix = host_split(arch, host_layers)
    mods = host_modules(arch, state, [*prefix, *suffix])
    fg = fuse_relu(fold_batchnorm(extract(arch, state, host_layers, prefix_modules=mods[: len(prefix)])))
    fg.name = name
    fe = Frontend(ir.Graph(name, {}, [], "", ""), cfg, fg, tuple(arch["input_shape"]),
                  fg.tensors[fg.output].arch_shape, mods[: len(prefix)], mods[len(prefix) :],
                  {f"layers.{i}": str(arch["layers"][i]["type"]) for i in (*prefix, *suffix)})
    try:
        x = fe.host_input(calib)
    except ValueError as exc:
        raise CompileError(f"calibration inputs: {exc}") from None
    fe.graph = quantize_graph(fg, x, cfg, act_bits=act_bits, lut_bits=lut_bits, act_calib=act_calib,
                              lut_calib=lut_calib, calib_flow=calib_flow, out_bits=out_bits)
    return fe
