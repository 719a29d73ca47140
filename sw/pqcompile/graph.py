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
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from . import ir, quantize
from .errors import CompileError
from .isa import clamp_range
from .spec import HwConfig

BN_EPS = 1e-5  # torch.nn.BatchNorm2d's default: the architecture format has no eps field
SUPPORTED = ("pq_linear, pq_conv2d, batchnorm2d after a PQ layer, relu after a PQ layer / residual add / "
             "global_avgpool, residual (add), global_avgpool, flatten")
CALIB_FLOWS = ("quantized", "float")
_CHUNK = 1 << 22  # elements per intermediate tensor in the PQ forward passes (bounds memory)


# ------------------------------------------------------------------------------------------------------------
# the float graph
# ------------------------------------------------------------------------------------------------------------
@dataclass
class FTensor:
    """A float tensor: channels-last shape (h, w, ch) and the shape PyTorch sees ((C, H, W) or (d,))."""

    name: str
    shape: tuple[int, int, int]
    arch_shape: tuple[int, ...]


@dataclass
class FPQ:
    """A PQ layer as a conv on a channels-last tensor (a linear layer's window is the whole fmap)."""

    name: str
    kind: str  # "pq_conv2d" | "pq_linear"
    inp: str
    out: str
    protos: np.ndarray  # [c, k, v] float64
    weight: np.ndarray  # [m, d] float64, d in (ci, ky, kx) order (PyTorch's unfold / CHW flatten)
    bias: np.ndarray  # [m] float64
    metric: str
    kh: int = 1
    kw: int = 1
    stride: int = 1
    pad: int = 0
    relu: bool = False
    bn: str = ""  # the batch norm folded into weight and bias

    @property
    def d(self) -> int:
        return int(self.weight.shape[1])

    @property
    def m(self) -> int:
        return int(self.weight.shape[0])


@dataclass
class FBatchNorm:
    """y = x * mul + add per channel (eval-mode batch norm)."""

    name: str
    inp: str
    out: str
    mul: np.ndarray
    add: np.ndarray


@dataclass
class FRelu:
    name: str
    inp: str
    out: str


@dataclass
class FAdd:
    name: str
    a: str
    b: str
    out: str
    relu: bool = False


@dataclass
class FPool:
    """Global average pooling: (h, w, ch) -> (1, 1, ch)."""

    name: str
    inp: str
    out: str
    relu: bool = False


FOp = FPQ | FBatchNorm | FRelu | FAdd | FPool


def _kind(op: FOp) -> str:
    """The model layer type an op comes from."""
    if isinstance(op, FPQ):
        return op.kind
    return {FBatchNorm: "batchnorm2d", FRelu: "relu", FAdd: "residual", FPool: "global_avgpool"}[type(op)]


def _inputs(op: FOp) -> list[str]:
    return [op.a, op.b] if isinstance(op, FAdd) else [op.inp]


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
        return [op for op in self.ops if t in _inputs(op)]

    def rename(self, old: str, new: str) -> None:
        """Every use of tensor ``old`` becomes a use of ``new`` (``old`` is dropped)."""
        for op in self.ops:
            if isinstance(op, FAdd):
                op.a = new if op.a == old else op.a
                op.b = new if op.b == old else op.b
            elif op.inp == old:
                op.inp = new
        if self.output == old:
            self.output = new
        gone = self.tensors.pop(old, None)
        if gone is not None and new in self.tensors:
            self.tensors[new].arch_shape = gone.arch_shape  # a flatten seen by the later name

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


def _state(state: dict[str, Tensor], name: str, kind: str, key: str, shape: tuple[int, ...],
           optional: bool = False) -> np.ndarray | None:
    """Parameter ``key`` of layer ``name``: present (unless ``optional``), of the ``shape`` the architecture gives,
    finite; else a CompileError naming it."""
    t = state.get(f"{name}.{key}")
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


def _to_channels_last(shape: Sequence[int]) -> tuple[int, int, int]:
    if len(shape) == 3:
        return (int(shape[1]), int(shape[2]), int(shape[0]))
    return (1, 1, math.prod(int(s) for s in shape))


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
    from pqtrain.model import build

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
    from pqtrain.model import ModelFormatError, validate_arch

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
    fg.tensors["input"] = FTensor("input", _to_channels_last(shape), shape)
    start, stop = len(prefix), len(layers) - len(suffix)
    t = "input"
    for i in range(start, stop):
        t = _extract_layer(fg, layers[i], f"layers.{i}", t, state)
    fg.output = t
    if not any(isinstance(op, FPQ) for op in fg.ops):
        raise CompileError("the accelerator part of the model has no PQ layer")
    return fg


def _new(fg: FloatGraph, name: str, shape: tuple[int, int, int], arch_shape: tuple[int, ...]) -> str:
    fg.tensors[name] = FTensor(name, shape, arch_shape)
    return name


def _extract_layer(fg: FloatGraph, lay: dict[str, Any], name: str, t: str, state: dict[str, Tensor]) -> str:
    kind = lay["type"]
    h, w, ch = fg.tensors[t].shape
    if kind in ("pq_linear", "pq_conv2d"):
        ks = lay.get("kernel_size", 1)
        kh, kw = (int(ks[0]), int(ks[1])) if isinstance(ks, list) else (int(ks), int(ks))
        m = int(lay["out_features" if kind == "pq_linear" else "out_channels"])
        d = h * w * ch if kind == "pq_linear" else ch * kh * kw
        v = int(lay["v"])
        protos = _state(state, name, kind, "prototypes", (-(-d // v), int(lay["k"]), v))
        weight = _state(state, name, kind, "weight", (m, d) if kind == "pq_linear" else (m, ch, kh, kw))
        assert protos is not None and weight is not None
        bias = _state(state, name, kind, "bias", (m,), optional=not lay.get("bias", True))
        if kind == "pq_linear":  # the window is the whole fmap: element order = PyTorch's CHW flatten
            op = FPQ(name, kind, t, name, protos, weight.reshape(m, -1), np.zeros(m) if bias is None else bias,
                     lay["metric"], kh=h, kw=w)
            fg.ops.append(op)
            return _new(fg, name, (1, 1, m), (m,))
        s, p = int(lay.get("stride", 1)), int(lay.get("padding", 0))
        oh, ow = (h + 2 * p - kh) // s + 1, (w + 2 * p - kw) // s + 1
        fg.ops.append(FPQ(name, kind, t, name, protos, weight.reshape(m, -1), np.zeros(m) if bias is None else bias,
                          lay["metric"], kh=kh, kw=kw, stride=s, pad=p))
        return _new(fg, name, (oh, ow, m), (m, oh, ow))
    if kind == "batchnorm2d":
        g, b = _state(state, name, kind, "weight", (ch,)), _state(state, name, kind, "bias", (ch,))
        mean, var = _state(state, name, kind, "running_mean", (ch,)), _state(state, name, kind, "running_var", (ch,))
        assert g is not None and b is not None and mean is not None and var is not None
        if (var + BN_EPS <= 0).any():
            raise CompileError(f"{name} (batchnorm2d): '{name}.running_var' has values <= -eps ({BN_EPS}): not a "
                               "variance")
        mul = g / np.sqrt(var + BN_EPS)
        fg.ops.append(FBatchNorm(name, t, name, mul, b - mean * mul))
        return _new(fg, name, (h, w, ch), fg.tensors[t].arch_shape)
    if kind == "relu":
        fg.ops.append(FRelu(name, t, name))
        return _new(fg, name, (h, w, ch), fg.tensors[t].arch_shape)
    if kind == "global_avgpool":
        fg.ops.append(FPool(name, t, name))
        return _new(fg, name, (1, 1, ch), (ch,))
    if kind == "flatten":  # no op: channels-last (h, w, ch) read in CHW order by the next PQ layer's window
        if ".body." in name or ".shortcut." in name:
            raise CompileError(f"{name} (flatten): a flatten inside a residual block is not supported")
        fg.tensors[t].arch_shape = (h * w * ch,)
        return t
    if kind == "residual":
        a = t
        for j, sub in enumerate(lay["body"]):
            a = _extract_layer(fg, sub, f"{name}.body.{j}", a, state)
        b = t
        for j, sub in enumerate(lay.get("shortcut", [])):
            b = _extract_layer(fg, sub, f"{name}.shortcut.{j}", b, state)
        fg.ops.append(FAdd(name, a, b, name))
        return _new(fg, name, fg.tensors[a].shape, fg.tensors[a].arch_shape)
    raise CompileError(f"{name} ({kind}): not supported by the accelerator (it runs {SUPPORTED}); "
                       f"{fg.host_hint(name)}")


def fold_batchnorm(fg: FloatGraph) -> FloatGraph:
    """Pass 2: each batch norm becomes part of the PQ layer before it: W'[m] = W[m] * mul[m],
    b'[m] = b[m] * mul[m] + add[m] (the encoder does not see W, so the fold is exact in float)."""
    for bn in [op for op in fg.ops if isinstance(op, FBatchNorm)]:
        prod = fg.producer(bn.inp)
        if not isinstance(prod, FPQ) or prod.bn:
            what = "the network input (or a host layer)" if prod is None else f"{prod.name} ({_kind(prod)})"
            raise CompileError(f"{bn.name} (batchnorm2d): follows {what}, not a PQ layer, so it cannot be folded; "
                               f"{fg.host_hint(bn.name)}")
        if len(fg.consumers(bn.inp)) != 1:
            raise CompileError(f"{bn.name} (batchnorm2d): the output of {prod.name} is also used without the batch "
                               "norm, so it cannot be folded")
        prod.weight = prod.weight * bn.mul[:, None]
        prod.bias = prod.bias * bn.mul + bn.add
        prod.bn = bn.name
        fg.ops.remove(bn)
        fg.rename(bn.out, prod.out)
    return fg


def fuse_relu(fg: FloatGraph) -> FloatGraph:
    """Pass 3: each ReLU becomes the ``relu`` of the post-processing of the op that produces its input."""
    for r in [op for op in fg.ops if isinstance(op, FRelu)]:
        prod = fg.producer(r.inp)
        if prod is None or isinstance(prod, FBatchNorm | FRelu):
            what = "the network input (or a host layer)" if prod is None else f"{prod.name} ({_kind(prod)})"
            raise CompileError(f"{r.name} (relu): its input comes from {what}, which has no post-processing to fuse "
                               f"it into; {fg.host_hint(r.name)}")
        if not prod.relu and len(fg.consumers(r.inp)) != 1:
            raise CompileError(f"{r.name} (relu): the output of {prod.name} is also used without the ReLU, so the "
                               "ReLU cannot be fused into it")
        prod.relu = True
        fg.ops.remove(r)
        fg.rename(r.out, prod.out)
    return fg


# ------------------------------------------------------------------------------------------------------------
# forward passes (float graph and integer graph share the column gathering and the encoder)
# ------------------------------------------------------------------------------------------------------------
def _columns(x: Tensor, kh: int, kw: int, stride: int, pad: int) -> tuple[Tensor, int, int]:
    """Channels-last [N, h, w, ch] -> columns [N * oh * ow, ch * kh * kw] (element (ci * kh + ky) * kw + kx,
    zero padding; PyTorch's unfold order), oh, ow."""
    xc = x.permute(0, 3, 1, 2)
    if pad:
        xc = nn.functional.pad(xc, (pad, pad, pad, pad))
    cols = xc.unfold(2, kh, stride).unfold(3, kw, stride)  # [N, ch, oh, ow, kh, kw]
    n, ch, oh, ow = cols.shape[:4]
    return cols.permute(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, ch * kh * kw), oh, ow


def _encode(cols: Tensor, protos: Tensor, metric: str) -> Tensor:
    """Nearest prototype per subspace, lowest index on ties: cols [B, d] (zero-padded to c*v) -> [B, c]."""
    c, k, v = protos.shape
    if cols.shape[1] < c * v:
        cols = nn.functional.pad(cols, (0, c * v - cols.shape[1]))
    xs = cols.reshape(-1, c, 1, v)
    fast = metric == "l2" and not cols.is_floating_point()
    if fast:  # integers: |p|^2 - 2 x.p ranks like |x - p|^2 and is exact in float64 (|values| < 2^53)
        pf = protos.to(torch.float64)
        # times k plus the index: one unique minimum per subspace, the lowest index among equal distances
        p2 = ((pf * pf).sum(-1) * k + torch.arange(k, dtype=torch.float64)).unsqueeze(1)  # [c, 1, k]
        pt = pf.transpose(1, 2) * (2 * k)  # [c, v, k]
        xf = xs[:, :, 0, :].to(torch.float64).transpose(0, 1)  # [c, B, v]
    step = max(1, _CHUNK // (c * k * (1 if fast else v)))
    out = []
    for i in range(0, xs.shape[0], step):
        if fast:
            out.append((p2 - torch.bmm(xf[:, i : i + step], pt)).argmin(-1).transpose(0, 1))
            continue
        diff = xs[i : i + step] - protos.unsqueeze(0)
        dist = diff.abs().sum(-1) if metric == "l1" else (diff * diff).sum(-1)
        best = dist.min(-1, keepdim=True).values
        ks = torch.arange(k).expand_as(dist)
        out.append(torch.where(dist == best, ks, k).min(-1).values)
    return torch.cat(out) if out else torch.zeros(0, c, dtype=torch.int64)


def _lookup(idx: Tensor, lut: Tensor) -> Tensor:
    """sum_c lut[c, idx[:, c], :] -> [B, m] (lut int64 or float64)."""
    c = lut.shape[0]
    step = max(1, _CHUNK // (c * lut.shape[2]))
    cs = torch.arange(c).unsqueeze(0)
    return torch.cat([lut[cs, idx[i : i + step]].sum(1) for i in range(0, idx.shape[0], step)])


def float_forward(fg: FloatGraph, x: np.ndarray | Tensor) -> dict[str, Tensor]:
    """The float graph's own forward pass (float64) on channels-last inputs [N, h, w, ch]: every tensor."""
    vals: dict[str, Tensor] = {fg.input: torch.as_tensor(np.asarray(x), dtype=torch.float64)}
    for op in fg.ops:
        if isinstance(op, FPQ):
            xi = vals[op.inp]
            cols, oh, ow = _columns(xi, op.kh, op.kw, op.stride, op.pad)
            protos = torch.from_numpy(op.protos)
            c, _, v = protos.shape
            wpad = np.zeros((op.m, c * v))
            wpad[:, : op.d] = op.weight
            lut = torch.einsum("ckv,mcv->ckm", protos, torch.from_numpy(wpad).reshape(op.m, c, v))
            y = _lookup(_encode(cols, protos, op.metric), lut) + torch.from_numpy(op.bias)
            y = y.reshape(xi.shape[0], oh, ow, op.m)
        elif isinstance(op, FBatchNorm):
            y = vals[op.inp] * torch.from_numpy(op.mul) + torch.from_numpy(op.add)
        elif isinstance(op, FRelu):
            y = vals[op.inp].clamp(min=0)
        elif isinstance(op, FAdd):
            y = vals[op.a] + vals[op.b]
        else:
            y = vals[op.inp].mean(dim=(1, 2), keepdim=True)
        if not isinstance(op, FBatchNorm | FRelu) and op.relu:
            y = y.clamp(min=0)
        vals[op.out] = y
    return vals


def _wrap(x: Tensor, bits: int) -> Tensor:
    x = x & ((1 << bits) - 1)
    return torch.where(x >= 1 << (bits - 1), x - (1 << bits), x)


def _post(acc: Tensor, mult: int, shift: int, post: ir.Post) -> Tensor:
    """clamp((acc * mult + 2^(shift-1)) >> shift): round half up, arithmetic shift, the ``quant`` clamp."""
    y = acc * mult
    if shift:
        y = (y + (1 << (shift - 1))) >> shift
    return y.clamp(*clamp_range(post.relu, post.bits, post.unsigned))


def _pq_acc(op: ir.PQOp, x: Tensor, acc_w: int) -> Tensor:
    """A PQ op's accumulators [N, oh, ow, m] (bias included, wrapped to ``acc_w`` bits) on int64 input x."""
    cols, oh, ow = _columns(x, op.kh, op.kw, op.stride, op.pad)
    protos = torch.from_numpy(op.protos.astype(np.int64))
    acc = _lookup(_encode(cols, protos, op.metric), torch.from_numpy(op.lut.astype(np.int64)))
    acc = _wrap(acc + torch.from_numpy(op.bias.astype(np.int64)), acc_w)
    return acc.reshape(x.shape[0], oh, ow, op.m)


def _add_acc(op: ir.AddOp, a: Tensor, b: Tensor) -> Tensor:
    return a * op.ma + b * op.mb


def _pool_acc(x: Tensor) -> Tensor:
    return x.sum(dim=(1, 2), keepdim=True)


def op_columns(op: ir.PQOp, x: Tensor) -> Tensor:
    """The columns a PQ op encodes from its int64 input ``x`` [N, h, w, ch]: [N * oh * ow, ch * kh * kw]."""
    return _columns(x, op.kh, op.kw, op.stride, op.pad)[0]


def accumulate(op: ir.Op, vals: Mapping[str, Tensor], acc_w: int) -> Tensor:
    """The accumulators of ``op`` before its ``quant`` step (int64 [N, h, w, ch]), from the int64 values of its
    input tensors in ``vals``: a PQ op's look-up sums plus bias (wrapped to ``acc_w`` bits), ``a * ma + b * mb``
    of an add, the channel sums of a pool."""
    if isinstance(op, ir.PQOp):
        return _pq_acc(op, vals[op.inp], acc_w)
    if isinstance(op, ir.AddOp):
        return _add_acc(op, vals[op.a], vals[op.b])
    return _pool_acc(vals[op.inp])


def requantize(op: ir.Op, acc: Tensor) -> Tensor:
    """``op``'s ``quant`` step on its accumulators (an add's multipliers are in :func:`accumulate`)."""
    return _post(acc, 1 if isinstance(op, ir.AddOp) else op.post.mult, op.post.shift, op.post)


def _run_op(op: ir.Op, vals: dict[str, Tensor], acc_w: int) -> Tensor:
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
        vals[op.out] = _run_op(op, vals, acc_w)
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
    ops: list[ir.Op] = []

    def calibrated(op: FOp, y_quant: Tensor, relu: bool) -> Tensor:
        y = fvals[op.out] if calib_flow == "float" else y_quant
        return y.clamp(min=0) if relu else y

    for op in fg.ops:
        if isinstance(op, FBatchNorm | FRelu):
            raise CompileError(f"{op.name}: quantize_graph needs a graph after fold_batchnorm and fuse_relu")
        where = f"{op.name} ({_kind(op)})"
        out_nonneg = op.relu or (isinstance(op, FPool) and nonneg[op.inp])
        bits = out_bits if op.out == fg.output else act_bits
        out_uns = out_nonneg and bits < cfg.ActW
        try:
            if isinstance(op, FPQ):
                ti = tensors[op.inp]
                pq, lut, bias, s_lut = quantize.quantize_table(
                    op.protos, op.weight, op.bias, ti.scale, quantize.act_range(ti.bits, ti.unsigned), lut_bits,
                    lut_calib)
                qop = ir.PQOp(op.name, op.inp, op.out, pq.astype(np.int8), lut.astype(np.int32),
                              bias.astype(np.int32), op.metric, ir.Post(1, 0, op.relu, bits, out_uns),
                              op.kh, op.kw, op.stride, op.pad)
                acc = _pq_acc(qop, ints[op.inp], cfg.AccW)
                s_out = scale_of(calibrated(op, acc.to(torch.float64) * s_lut, op.relu), out_uns, s_lut, bits)
                mult, shift = quantize.mult_shift(s_lut / s_out)
                qop.post = ir.Post(mult, shift, op.relu, bits, out_uns)
                out_scale = s_lut * (1 << shift) / mult
                qop.info = {"kind": op.kind, "in_scale": ti.scale, "lut_scale": s_lut, "out_scale": out_scale,
                            "d": op.d, "bn": op.bn or None}
                ints[op.out] = _post(acc, mult, shift, qop.post)
                ops.append(qop)
            elif isinstance(op, FAdd):
                ta, tb = tensors[op.a], tensors[op.b]
                y = ints[op.a].to(torch.float64) * ta.scale + ints[op.b].to(torch.float64) * tb.scale
                s_out = scale_of(calibrated(op, y, op.relu), out_uns, max(ta.scale, tb.scale), bits)
                ma, mb, shift = quantize.add_mult_shift(ta.scale / s_out, tb.scale / s_out)
                # the scale the integer output really has, from the larger (more precise) multiplier
                out_scale = ta.scale * (1 << shift) / ma if ma >= mb else tb.scale * (1 << shift) / mb
                aop = ir.AddOp(op.name, op.a, op.b, op.out, ma, mb, ir.Post(0, shift, op.relu, bits, out_uns),
                               info={"kind": "add", "a_scale": ta.scale, "b_scale": tb.scale, "out_scale": out_scale})
                ints[op.out] = _post(_add_acc(aop, ints[op.a], ints[op.b]), 1, shift, aop.post)
                ops.append(aop)
            else:
                assert isinstance(op, FPool)
                ti = tensors[op.inp]
                h, w, _ = ti.shape
                acc = _pool_acc(ints[op.inp])
                s_out = scale_of(calibrated(op, acc.to(torch.float64) * (ti.scale / (h * w)), op.relu), out_uns,
                                 ti.scale, bits)
                mult, shift = quantize.mult_shift(ti.scale / (h * w) / s_out)
                out_scale = ti.scale / (h * w) * (1 << shift) / mult
                pop = ir.PoolOp(op.name, op.inp, op.out, ir.Post(mult, shift, op.relu, bits, out_uns),
                                info={"kind": "global_avgpool", "in_scale": ti.scale, "out_scale": out_scale})
                ints[op.out] = _post(acc, mult, shift, pop.post)
                ops.append(pop)
        except CompileError as exc:
            raise CompileError(f"{where}: {exc}") from None
        tensors[op.out] = ir.TensorInfo(op.out, fg.tensors[op.out].shape, out_scale, bits, out_uns)
        nonneg[op.out] = out_nonneg
    return ir.Graph(fg.name, tensors, ops, fg.input, fg.output, list(fg.host_prefix), list(fg.host_suffix))


# ------------------------------------------------------------------------------------------------------------
# limits
# ------------------------------------------------------------------------------------------------------------
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
        lut_bytes = self.cfg.lut_bytes if self.cfg is not None else 2
        rows: list[dict[str, Any]] = [{"name": n, "kind": "host", "type": self.host_types.get(n, ""),
                                       "where": "prefix"} for n in g.host_prefix]
        for op in g.ops:
            ins = g.op_inputs(op)
            row: dict[str, Any] = {
                "name": op.name, "kind": op.info.get("kind", ""), "in_shapes": [list(g.tensors[t].shape) for t in ins],
                "out_shape": list(g.tensors[op.out].shape), "in_scales": [g.tensors[t].scale for t in ins],
                "out_scale": g.tensors[op.out].scale, "relu": op.post.relu, "bits": op.post.bits,
                "unsigned": op.post.unsigned, "shift": op.post.shift}
            if isinstance(op, ir.PQOp):
                row.update({"K": op.k, "v": op.v, "c": op.c, "m": op.m, "d": op.info.get("d"), "metric": op.metric,
                            "kh": op.kh, "kw": op.kw, "stride": op.stride, "pad": op.pad, "mult": op.post.mult,
                            "lut_scale": op.info.get("lut_scale"), "bn": op.info.get("bn"),
                            "table_bytes": op.c * op.k * op.v + op.c * op.k * op.m * lut_bytes + 4 * op.m})
            elif isinstance(op, ir.AddOp):
                row.update({"ma": op.ma, "mb": op.mb, "table_bytes": 0})
            else:
                row.update({"mult": op.post.mult, "table_bytes": 0})
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
