"""Front end (pqcompile.graph): extraction, batch-norm folding, ReLU fusion, quantization, limits, and the
integer reference model against hand-computed cases and against the golden simulator, bit for bit."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from pqcompile import backend, graph, ir, layout, ops, quantize, sim
from pqcompile.backend import CompileError
from pqcompile.isa import encode
from pqcompile.ops import pq as pq_op
from pqcompile.spec import HwConfig, load
from pqmodel.data import load_digits_split
from pqmodel.model import build
from pqmodel.model import load as load_model
from pqtrain import zoo
from pqtrain.integer import calibrate_qat, clear_qat
from pqtrain.train import convert_to_pq, float_arch

ROOT = Path(__file__).resolve().parents[1]
SPEC = load()
SMALL, DEFAULT = SPEC.config("small"), SPEC.config("default")
BUF = SPEC.enums["buffer"]


# ------------------------------------------------------------------------------------------------------------
# helpers: models, and a minimal per-op "back end" of raw programs for the golden simulator
# ------------------------------------------------------------------------------------------------------------
def _pqconv(cin: int, cout: int, ks: int, k: int, v: int, stride: int = 1, padding: int = 0,
            metric: str = "l2", bias: bool = True) -> dict[str, Any]:
    return {"type": "pq_conv2d", "in_channels": cin, "out_channels": cout, "kernel_size": ks, "stride": stride,
            "padding": padding, "k": k, "v": v, "metric": metric, "bias": bias}


def _model(arch: dict[str, Any], seed: int = 0, x: np.ndarray | None = None) -> dict[str, torch.Tensor]:
    """Random weights and non-trivial batch-norm statistics; prototypes by k-means on the real inputs of each
    PQ layer when calibration inputs ``x`` are given (pqtrain's conversion), else random."""
    torch.manual_seed(seed)
    model = build(float_arch(arch) if x is not None else arch)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    if x is not None:
        model = convert_to_pq(model, arch, torch.as_tensor(x, dtype=torch.float32), kmeans_iters=4, seed=seed)
    return model.eval().state_dict()


def _residual_arch(metric: str = "l2") -> dict[str, Any]:
    """Two PQ convs + BN + projection shortcut (1x1 stride 2, v not dividing Cin) + add + ReLU, then pooling
    and a PQ classifier."""
    body = [_pqconv(5, 8, 3, 8, 9, 2, 1, metric, bias=False), {"type": "batchnorm2d", "num_features": 8},
            {"type": "relu"}, _pqconv(8, 8, 3, 8, 4, 1, 1, metric, bias=False),
            {"type": "batchnorm2d", "num_features": 8}]
    shortcut = [_pqconv(5, 8, 1, 4, 2, 2, 0, metric, bias=False), {"type": "batchnorm2d", "num_features": 8}]
    return {"name": "resblock", "input_shape": [5, 6, 6], "num_classes": 4, "layers": [
        {"type": "residual", "body": body, "shortcut": shortcut}, {"type": "relu"}, {"type": "global_avgpool"},
        {"type": "pq_linear", "in_features": 8, "out_features": 4, "k": 8, "v": 3, "metric": metric}]}


class _Mem:
    def __init__(self, base: int = 0x2000) -> None:
        self.addr = base
        self.segs: list[tuple[int, np.ndarray, str]] = []

    def put(self, data: np.ndarray) -> int:
        a = self.addr
        self.segs.append((a, np.asarray(data).astype(np.uint8).reshape(-1), "data"))
        self.addr = -(-(a + data.size) // 64) * 64
        return a

    def space(self, nbytes: int) -> int:
        return self.put(np.zeros(nbytes, np.uint8))


def _run(cfg: HwConfig, words: list[int], mem: _Mem, out: int, nbytes: int) -> np.ndarray:
    prog = backend.raw_program(cfg, [*words, encode("end")], mem.segs, mem_bytes=-(-mem.addr // 4096) * 4096 + 4096)
    res = sim.run(cfg, prog.mem, prog.insn_base, strict=True)
    return res.mem[out : out + nbytes].view(np.int8).astype(np.int64)


def _i8(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.int64).astype(np.int8).view(np.uint8).reshape(-1)


def sim_op(cfg: HwConfig, g: ir.Graph, op: ir.Op, vals: dict[str, np.ndarray]) -> np.ndarray:
    """One op of the graph on the golden simulator, image by image (conv-mode ``run``, ``add``, ``pool``)."""
    p = op.post
    quant = encode("quant", relu=int(p.relu), unsigned=int(p.unsigned), shift=p.shift, mult=p.mult, bits=p.bits)
    oh, ow, och = g.tensors[op.out].shape
    outs = []
    for x in range(vals[g.op_inputs(op)[0]].shape[0]):
        mem = _Mem()
        n_out = oh * ow * och
        if isinstance(op, ir.PQOp):
            h, w, ch = g.tensors[op.inp].shape
            packed = layout.pack_protos(cfg, op.protos)
            table = layout.pack_lut(cfg, op.lut)
            pa, la = mem.put(packed), mem.put(table)
            ba, xa = mem.put(op.bias.astype("<i4").view(np.uint8)), mem.put(_i8(vals[op.inp][x]))
            words = [encode("load", buf=BUF["proto"], nbytes=len(packed), addr=pa),
                     encode("load", buf=BUF["lut"], nbytes=len(table), addr=la),
                     encode("load", buf=BUF["bias"], nbytes=4 * op.m, addr=ba),
                     encode("load", buf=BUF["act"], nbytes=h * w * ch, addr=xa),
                     encode("shape", metric=op.metric, conv=1, k=op.k, v=op.v, c=op.c, d=ch * op.kh * op.kw, m=op.m),
                     quant, encode("fmap", h=h, w=w, ch=ch),
                     encode("conv", stride=op.stride, kh=op.kh, kw=op.kw, pad_t=op.pad, pad_l=op.pad, out_w=ow),
                     encode("run", n=oh * ow)]
        elif isinstance(op, ir.AddOp):
            aa, bb = mem.put(_i8(vals[op.a][x])), mem.put(_i8(vals[op.b][x]))
            words = [encode("load", buf=BUF["act"], nbytes=n_out, addr=aa),
                     encode("load", buf=BUF["out"], nbytes=n_out, addr=bb), quant,
                     encode("add", n=n_out, ma=op.ma, mb=op.mb)]
        else:
            h, w, ch = g.tensors[op.inp].shape
            xa = mem.put(_i8(vals[op.inp][x]))
            words = [encode("load", buf=BUF["act"], nbytes=h * w * ch, addr=xa), encode("fmap", h=h, w=w, ch=ch),
                     quant, encode("pool")]
        oa = mem.space(n_out)
        outs.append(_run(cfg, [*words, encode("store", nbytes=n_out, addr=oa)], mem, oa, n_out).reshape(oh, ow, och))
    return np.stack(outs)


def sim_graph(cfg: HwConfig, g: ir.Graph, xq: np.ndarray) -> np.ndarray:
    vals = {g.input: np.asarray(xq, np.int64)}
    for op in g.ops:
        vals[op.out] = sim_op(cfg, g, op, vals)
    return vals[g.output]


def _one_op_graph(op: ir.Op, shapes: dict[str, tuple[int, int, int]], bits: int = 8,
                  unsigned: tuple[str, ...] = ()) -> ir.Graph:
    tensors = {n: ir.TensorInfo(n, s, 1.0, bits, n in unsigned) for n, s in shapes.items()}
    return ir.Graph("t", tensors, [op], next(iter(shapes)), op.out)


# ------------------------------------------------------------------------------------------------------------
# reference: hand-computed cases
# ------------------------------------------------------------------------------------------------------------
def test_reference_pq_by_hand() -> None:
    # fmap 2x2x1 = [[1, 2], [3, 4]], a 2x2 window: one column [1, 2, 3, 4], subspaces [1, 2] and [3, 4]
    protos = np.array([[[0, 0], [1, 2]], [[3, 3], [4, 4]]], np.int8)  # c=2, k=2, v=2
    lut = np.array([[[10], [20]], [[100], [200]]], np.int32)  # [c][k][m=1]
    # [1, 2]: L2 5 vs 0 -> k=1 (20); [3, 4]: 1 vs 1, a tie -> k=0 (100); acc = 5 + 20 + 100 = 125
    # (125 * 3 + 2) >> 2 = 94
    op = ir.PQOp("p", "x", "y", protos, lut, np.array([5], np.int32), "l2", ir.Post(3, 2, False, 8), kh=2, kw=2)
    g = _one_op_graph(op, {"x": (2, 2, 1), "y": (1, 1, 1)})
    assert graph.reference(g, np.array([1, 2, 3, 4]).reshape(1, 2, 2, 1)).tolist() == [[[[94]]]]
    # L1: [3, 4] -> 1 vs 1 again a tie -> 0; the same sum; with relu and bits=4 the output clamps to 7
    op.metric, op.post = "l1", ir.Post(3, 2, True, 4)
    assert graph.reference(g, np.array([1, 2, 3, 4]).reshape(1, 2, 2, 1)).tolist() == [[[[7]]]]
    op.post = ir.Post(3, 2, True, 4, unsigned=True)  # unsigned 4 bits: [0, 15]
    assert graph.reference(g, np.array([1, 2, 3, 4]).reshape(1, 2, 2, 1)).tolist() == [[[[15]]]]


def test_reference_conv_padding_stride_by_hand() -> None:
    # fmap 3x3x1 = 1..9, 2x2 window, stride 2, pad 1: out 2x2; column of out (0, 0) = [0, 0, 0, 1] (zero padding)
    # v=4, one subspace; prototypes: k0 = [0, 0, 0, 1], k1 = [2, 3, 5, 6], k2 = [0, 0, 7, 8] ... table = k
    protos = np.array([[[0, 0, 0, 1], [2, 3, 5, 6], [0, 0, 7, 8], [0, 3, 0, 9]]], np.int8)
    lut = np.arange(4, dtype=np.int32).reshape(1, 4, 1)
    op = ir.PQOp("p", "x", "y", protos, lut, np.zeros(1, np.int32), "l2", ir.Post(1, 0, False, 8), kh=2, kw=2,
                 stride=2, pad=1)
    g = _one_op_graph(op, {"x": (3, 3, 1), "y": (2, 2, 1)})
    # columns: (0,0) [0,0,0,1] -> k0; (0,1) [0,0,2,3] -> k0 (dist 1+4+4=9 vs k2 25+25) ... computed:
    cols = [[0, 0, 0, 1], [0, 0, 2, 3], [0, 4, 0, 7], [5, 6, 8, 9]]
    want = [int(np.argmin([((np.array(c) - p) ** 2).sum() for p in protos[0].astype(int)])) for c in cols]
    assert want == [0, 0, 3, 1]
    y = graph.reference(g, np.arange(1, 10).reshape(1, 3, 3, 1))
    assert y.reshape(-1).tolist() == want


def test_reference_add_and_pool_by_hand() -> None:
    add = ir.AddOp("a", "x", "z", "y", ma=3, mb=5, post=ir.Post(0, 2, False, 8))
    g = _one_op_graph(add, {"x": (1, 1, 3), "z": (1, 1, 3), "y": (1, 1, 3)})
    g.tensors["z"] = ir.TensorInfo("z", (1, 1, 3), 1.0, 8)
    xa, xb = np.array([10, -20, 100]).reshape(1, 1, 1, 3), np.array([3, 5, 100]).reshape(1, 1, 1, 3)
    vals = {"x": torch.from_numpy(xa), "z": torch.from_numpy(xb)}
    # (30 + 15 + 2) >> 2 = 11; (-60 + 25 + 2) >> 2 = -33 >> 2 = -9 (arithmetic); (300 + 500 + 2) >> 2 = 200 -> 127
    assert graph.run_op(add, vals, 32).reshape(-1).tolist() == [11, -9, 127]
    add.post = ir.Post(0, 2, True, 8)
    assert graph.run_op(add, vals, 32).reshape(-1).tolist() == [11, 0, 127]
    pool = ir.PoolOp("p", "x", "y", ir.Post(3, 3, False, 8))
    g = _one_op_graph(pool, {"x": (2, 2, 2), "y": (1, 1, 2)})
    x = np.array([1, -1, 2, -2, 3, -3, 4, -5]).reshape(1, 2, 2, 2)
    # sums 10, -11; (30 + 4) >> 3 = 4; (-33 + 4) >> 3 = -29 >> 3 = -4
    assert graph.reference(g, x).reshape(-1).tolist() == [4, -4]


def _naive_pq(op: ir.PQOp, x: np.ndarray, acc_w: int = 32) -> np.ndarray:
    """Python loops over docs/isa.md's conv-mode run: the third implementation."""
    n, h, w, ch = x.shape
    oh, ow = (h + 2 * op.pad - op.kh) // op.stride + 1, (w + 2 * op.pad - op.kw) // op.stride + 1
    lo, hi = (0, (1 << op.post.bits) - 1) if op.post.unsigned else \
        ((0 if op.post.relu else -(1 << (op.post.bits - 1))), (1 << (op.post.bits - 1)) - 1)
    y = np.zeros((n, oh, ow, op.m), np.int64)
    protos, lut = op.protos.astype(int).tolist(), op.lut.astype(int).tolist()
    for b in range(n):
        for oy in range(oh):
            for ox in range(ow):
                col = []
                for ci in range(ch):
                    for ky in range(op.kh):
                        for kx in range(op.kw):
                            iy, ix = oy * op.stride + ky - op.pad, ox * op.stride + kx - op.pad
                            col.append(int(x[b, iy, ix, ci]) if 0 <= iy < h and 0 <= ix < w else 0)
                col += [0] * (op.c * op.v - len(col))
                acc = [int(bb) for bb in op.bias]
                for c in range(op.c):
                    sub = col[c * op.v : (c + 1) * op.v]
                    dist = [sum(abs(a - p) if op.metric == "l1" else (a - p) ** 2 for a, p in zip(sub, pr, strict=True))
                            for pr in protos[c]]
                    best = dist.index(min(dist))
                    acc = [a + e for a, e in zip(acc, lut[c][best], strict=True)]
                for m, a in enumerate(acc):
                    a = (a + (1 << (acc_w - 1))) % (1 << acc_w) - (1 << (acc_w - 1))
                    v = a * op.post.mult
                    v = (v + (1 << (op.post.shift - 1))) >> op.post.shift if op.post.shift else v
                    y[b, oy, ox, m] = min(max(v, lo), hi)
    return y


# geometry cases: (h, w, ch, kh, kw, stride, pad, v, k, m, metric, relu, unsigned_out, bits)
CONV_CASES = {
    "3x3_s2_p1_odd_ch_v4": (7, 7, 3, 3, 3, 2, 1, 4, 5, 6, "l2", False, False, 8),  # d=27, c=7: v does not divide
    "3x3_s1_p1_l1_relu": (5, 4, 2, 3, 3, 1, 1, 8, 6, 3, "l1", True, False, 8),  # d=18, c=3
    "1x1_s2_projection": (6, 6, 5, 1, 1, 2, 0, 2, 4, 7, "l2", False, False, 6),
    "whole_fmap_window": (3, 3, 4, 3, 3, 1, 0, 5, 8, 10, "l2", False, False, 8),  # flatten + pq_linear
    "5x5_s3_p2_unsigned": (8, 6, 1, 5, 5, 3, 2, 7, 3, 4, "l1", True, True, 4),
    "2x3_kernel_rect": (5, 6, 3, 2, 3, 1, 0, 6, 4, 5, "l2", False, False, 5),
}


def _random_pq(rng: np.random.Generator, cfg: HwConfig, case: tuple) -> tuple[ir.Graph, np.ndarray]:
    h, w, ch, kh, kw, stride, pad, v, k, m, metric, relu, uns, bits = case
    d = ch * kh * kw
    c = -(-d // v)
    lo, hi = quantize.act_range(bits, False)
    protos = rng.integers(lo // 2, hi // 2 + 1, (c, k, v)).astype(np.int8)
    lmax = 1 << (cfg.LutW - 1)
    lut = rng.integers(-lmax, lmax, (c, k, m)).astype(np.int32)
    op = ir.PQOp("p", "x", "y", protos, lut, rng.integers(-500, 500, m).astype(np.int32), metric,
                 ir.Post(int(rng.integers(1 << 13, 1 << 15)), int(rng.integers(14, 19)), relu, bits, uns),
                 kh=kh, kw=kw, stride=stride, pad=pad)
    oh, ow = (h + 2 * pad - kh) // stride + 1, (w + 2 * pad - kw) // stride + 1
    g = _one_op_graph(op, {"x": (h, w, ch), "y": (oh, ow, m)}, bits)
    return g, rng.integers(lo, hi + 1, (3, h, w, ch))


@pytest.mark.parametrize("case", list(CONV_CASES), ids=list(CONV_CASES))
def test_reference_pq_conv_equals_loops_and_simulator(case: str) -> None:
    rng = np.random.default_rng(sorted(CONV_CASES).index(case))
    g, x = _random_pq(rng, SMALL, CONV_CASES[case])
    y = graph.reference(g, x)
    op = g.ops[0]
    assert isinstance(op, ir.PQOp)
    assert np.array_equal(y, _naive_pq(op, x))
    assert np.array_equal(y, sim_graph(SMALL, g, x))
    assert len(np.unique(y)) > 3  # not all saturated


@pytest.mark.parametrize(("relu", "unsigned", "bits"), [(False, False, 8), (True, False, 8), (True, True, 5)])
def test_reference_add_and_pool_equal_simulator(relu: bool, unsigned: bool, bits: int) -> None:
    rng = np.random.default_rng(3)
    lo, hi = quantize.act_range(bits)
    xa, xb = rng.integers(lo, hi + 1, (2, 3, 5, 7)), rng.integers(lo, hi + 1, (2, 3, 5, 7))
    add = ir.AddOp("a", "x", "z", "y", ma=int(rng.integers(1, 1 << 16)), mb=int(rng.integers(1, 1 << 16)),
                   post=ir.Post(0, 16, relu, bits, unsigned))
    g = _one_op_graph(add, {"x": (3, 5, 7), "z": (3, 5, 7), "y": (3, 5, 7)}, bits)
    vals = {"x": xa, "z": xb}
    want = graph.run_op(add, {k: torch.from_numpy(v) for k, v in vals.items()}, 32).numpy()
    assert np.array_equal(want, sim_op(SMALL, g, add, vals))
    # the formula in numpy: clamp((a*ma + b*mb + 2^15) >> 16)
    ref = np.clip((xa * add.ma + xb * add.mb + (1 << 15)) >> 16, *sim.clamp_range(relu, bits, unsigned))
    assert np.array_equal(want, ref)
    pool = ir.PoolOp("p", "x", "y", ir.Post(int(rng.integers(1 << 14, 1 << 15)), 18, relu, bits, unsigned))
    g = _one_op_graph(pool, {"x": (3, 5, 7), "y": (1, 1, 7)}, bits)
    assert np.array_equal(graph.reference(g, xa), sim_graph(SMALL, g, xa))


# ------------------------------------------------------------------------------------------------------------
# passes
# ------------------------------------------------------------------------------------------------------------
def _bn_arch() -> dict[str, Any]:
    return {"name": "bn", "input_shape": [3, 6, 6], "num_classes": 5, "layers": [
        _pqconv(3, 4, 3, 8, 9, 1, 1), {"type": "batchnorm2d", "num_features": 4}, {"type": "relu"},
        {"type": "flatten"},
        {"type": "pq_linear", "in_features": 144, "out_features": 5, "k": 8, "v": 16, "metric": "l2"}]}


def test_batchnorm_folding_equals_float_conv_and_bn() -> None:
    arch = _bn_arch()
    x = torch.rand(6, 3, 6, 6, dtype=torch.float64)
    state = _model(arch, 1, x.numpy())
    xcl = x.permute(0, 2, 3, 1).numpy()
    fg = graph.extract(arch, state)
    assert [type(op).__name__ for op in fg.ops] == ["FPQ", "FBatchNorm", "FRelu", "FPQ"]
    before = graph.float_forward(fg, xcl)[fg.output]
    w0 = fg.ops[0].weight.copy()
    folded = graph.fold_batchnorm(fg)
    assert [type(op).__name__ for op in folded.ops] == ["FPQ", "FRelu", "FPQ"]
    pq = folded.ops[0]
    assert isinstance(pq, pq_op.FPQ) and pq.bn == "layers.1"
    g, b, mean, var, b0 = (state[f"layers.{k}"].double().numpy() for k in
                           ("1.weight", "1.bias", "1.running_mean", "1.running_var", "0.bias"))
    mul = g / np.sqrt(var + 1e-5)
    np.testing.assert_allclose(pq.weight, w0 * mul[:, None], rtol=1e-12)
    np.testing.assert_allclose(pq.bias, b0 * mul + b - mean * mul, rtol=1e-12, atol=1e-12)
    after = graph.float_forward(folded, xcl)[folded.output]
    torch.testing.assert_close(after, before, rtol=1e-10, atol=1e-10)
    # and the pqtrain model itself (PQConv2d then BatchNorm2d in eval mode, float64)
    model = build(arch).double()
    model.load_state_dict(state)
    with torch.no_grad():
        want = model.eval()(x)
    torch.testing.assert_close(after.reshape(6, -1), want, rtol=1e-10, atol=1e-10)
    fused = graph.fuse_relu(folded)
    assert len(fused.ops) == 2 and fused.ops[0].relu and not fused.ops[1].relu


def _arch(layers: list[dict[str, Any]], shape: list[int], classes: int) -> dict[str, Any]:
    return {"name": "t", "input_shape": shape, "num_classes": classes, "layers": layers}


CONV = {"type": "conv2d", "in_channels": 3, "out_channels": 4, "kernel_size": 3, "padding": 1}
BN4 = {"type": "batchnorm2d", "num_features": 4}
PQ44 = _pqconv(4, 4, 3, 4, 9, 1, 1)
LIN = {"type": "linear", "in_features": 64, "out_features": 3}
PQLIN = {"type": "pq_linear", "in_features": 64, "out_features": 3, "k": 4, "v": 8, "metric": "l2"}


@pytest.mark.parametrize(("layers", "host", "msg"), [
    ([CONV, BN4, {"type": "relu"}, PQ44, {"type": "flatten"}, LIN], (),
     r"layers\.0 \(conv2d\): not supported by the accelerator .*--host-layers layers\.0,layers\.1,layers\.2$"),
    ([CONV, BN4, {"type": "relu"}, PQ44, {"type": "flatten"}, LIN], ("layers.0", "layers.5"),
     r"layers\.1 \(batchnorm2d\): follows the network input .*--host-layers layers\.0,layers\.1,layers\.2$"),
    ([CONV, BN4, {"type": "relu"}, PQ44, {"type": "flatten"}, LIN], ("layers.0", "layers.1", "layers.2"),
     r"layers\.5 \(linear\): not supported .*--host-layers layers\.5$"),
    ([CONV, PQ44, {"type": "relu"}, {"type": "flatten"}, LIN], ("layers.0", "layers.2", "layers.4"),
     r"prefix and/or a trailing suffix of the network: layers\.2 lies between"),
    ([CONV, PQ44, {"type": "flatten"}, LIN], ("layers.0", "layers.1.x"), r"'layers\.1\.x' is not a top-level"),
    ([CONV, PQ44, {"type": "maxpool", "kernel_size": 2}, PQ44, {"type": "flatten"},
      {"type": "linear", "in_features": 16, "out_features": 3}], ("layers.0", "layers.5"),
     r"layers\.2 \(maxpool\): not supported .*between accelerator layers"),
    ([CONV, PQ44, {"type": "relu"}, BN4, {"type": "flatten"}, LIN], ("layers.0", "layers.5"),
     r"layers\.3 \(batchnorm2d\): follows layers\.2 \(relu\), not a PQ layer.*--host-layers layers\.3,layers\.4,"),
    ([CONV, {"type": "relu"}, PQ44, {"type": "flatten"}, LIN], ("layers.0", "layers.4"),
     r"layers\.1 \(relu\): its input comes from the network input .*--host-layers layers\.0,layers\.1$"),
    ([CONV, {"type": "residual", "body": [PQ44], "shortcut": [{"type": "pad_channels", "out_channels": 4}]},
      {"type": "flatten"}, LIN], ("layers.0", "layers.3"),
     r"layers\.1\.shortcut\.0 \(pad_channels\): not supported .*between accelerator layers \(it is inside layers\.1\)"),
    ([CONV, {"type": "flatten"}, LIN], ("layers.0", "layers.1", "layers.2"), "nothing is left for the accelerator"),
    ([CONV, {"type": "relu"}, {"type": "flatten"}, LIN], ("layers.0", "layers.3"), "has no PQ layer"),
], ids=["float_stem", "bn_after_host", "float_classifier", "host_in_middle", "host_not_top_level", "maxpool_between",
        "bn_after_relu", "relu_at_input", "option_a_shortcut", "all_host", "no_pq"])
def test_extraction_errors_name_the_layer(layers: list[dict[str, Any]], host: tuple[str, ...], msg: str) -> None:
    shape = [3, 4, 4]
    arch = _arch(layers, shape, 3)
    state = build(arch).state_dict()
    with pytest.raises(CompileError, match=msg):
        graph.build_graph(arch, state, np.random.default_rng(0).random((4, *shape)), DEFAULT, host_layers=host)


@pytest.mark.parametrize(("key", "value", "msg"), [
    ("layers.0.prototypes", torch.zeros(4, 4, 8), r"layers\.0 \(pq_conv2d\): 'layers\.0\.prototypes' has shape "
     r"\[4, 4, 8\], the architecture gives \[4, 4, 9\]"),
    ("layers.0.weight", torch.zeros(4, 4, 3, 2), r"'layers\.0\.weight' has shape \[4, 4, 3, 2\], the architecture "
     r"gives \[4, 4, 3, 3\]"),  # used to compile silently (the weight reshaped to [4, 24] and zero-padded)
    ("layers.0.bias", torch.zeros(3), r"'layers\.0\.bias' has shape \[3\]"),
    ("layers.1.running_var", torch.ones(5), r"layers\.1 \(batchnorm2d\): 'layers\.1\.running_var' has shape \[5\]"),
    ("layers.1.running_var", torch.tensor([1.0, -1.0, 1.0, 1.0]), r"'layers\.1\.running_var' has values <= -eps"),
    ("layers.4.weight", torch.zeros(3, 63), r"layers\.4 \(pq_linear\): 'layers\.4\.weight' has shape \[3, 63\]"),
    ("layers.4.prototypes", torch.full((8, 4, 8), float("inf")), r"'layers\.4\.prototypes' holds NaN or infinite"),
    ("layers.0.weight", torch.full((4, 4, 3, 3), float("nan")), r"'layers\.0\.weight' holds NaN or infinite values"),
], ids=["protos_shape", "conv_weight_shape", "bias_shape", "bn_shape", "bn_negative_variance", "linear_weight_shape",
        "inf_protos", "nan_weight"])
def test_state_that_does_not_fit_the_arch_is_named(key: str, value: torch.Tensor, msg: str) -> None:
    """build_graph on a state dict of the wrong shapes or with non-finite values: a CompileError naming the
    parameter (it used to be a bare numpy broadcast ValueError, a silent wrong compile, or 'requantization ratio
    nan')."""
    arch = _arch([PQ44, BN4, {"type": "relu"}, {"type": "flatten"}, PQLIN], [4, 4, 4], 3)
    state = {**build(arch).state_dict(), key: value}
    with pytest.raises(CompileError, match=msg):
        graph.build_graph(arch, state, np.random.default_rng(0).random((4, 4, 4, 4)), DEFAULT)


def test_non_finite_calibration_is_named() -> None:
    arch = _arch([CONV, PQ44, {"type": "flatten"}, PQLIN], [3, 4, 4], 3)
    state = build(arch).state_dict()
    state["layers.0.weight"] = torch.full_like(state["layers.0.weight"], float("inf"))
    with pytest.raises(CompileError, match=r"calibration inputs \(after the host layers before the accelerator\) "
                                           "hold NaN or infinite values"):
        graph.build_graph(arch, state, np.random.default_rng(0).random((4, 3, 4, 4)), DEFAULT,
                          host_layers=["layers.0"])


def test_host_prefix_and_suffix_run_on_the_host() -> None:
    arch = _arch([CONV, BN4, {"type": "relu"}, PQ44, {"type": "relu"}, {"type": "flatten"}, LIN], [3, 4, 4], 3)
    x = np.random.default_rng(1).random((20, 3, 4, 4))
    state = _model(arch, 2, x)
    fe = graph.build_graph(arch, state, x, DEFAULT, host_layers=["layers.0", "layers.1", "layers.2", "layers.6"])
    g = fe.graph
    assert g.host_prefix == ["layers.0", "layers.1", "layers.2"] and g.host_suffix == ["layers.6"]
    assert [op.name for op in g.ops] == ["layers.3"] and g.tensors[g.input].shape == (4, 4, 4)
    rep = fe.report()
    assert [r["kind"] for r in rep] == ["host"] * 3 + ["pq_conv2d", "host"]
    assert rep[-1] == {"name": "layers.6", "kind": "host", "type": "linear", "where": "suffix"}
    y = fe.finish(graph.reference(g, fe.quantize_input(x)))
    model = build(arch).double()
    model.load_state_dict(state)
    with torch.no_grad():
        want = model.eval()(torch.from_numpy(x)).numpy()
    assert y.shape == (20, 3)
    assert np.abs(y - want).max() < 0.1 * np.abs(want).max()


@pytest.mark.parametrize(("layer", "msg"), [
    ({"type": "pq_linear", "in_features": 16, "out_features": 8, "k": 32, "v": 4, "metric": "l2"},
     r"layer 0 \(layers\.0 16->8\): k=32 is beyond the hardware limit KMax=16 of config 'small'"),
    ({"type": "pq_linear", "in_features": 16, "out_features": 8, "k": 4, "v": 16, "metric": "l2"},
     r"layer 0 \(layers\.0 16->8\): v=16 is beyond the hardware limit VMax=8"),
    ({"type": "pq_linear", "in_features": 16, "out_features": 65, "k": 4, "v": 4, "metric": "l2"},
     r"m=65 is beyond the hardware limit MMax=64"),
])
def test_layer_beyond_limits_is_named(layer: dict[str, Any], msg: str) -> None:
    """The limits are checked once, by the back end (the front end builds the graph whatever the config)."""
    arch = _arch([layer], [16], layer["out_features"])
    fe = graph.build_graph(arch, build(arch).state_dict(), np.random.default_rng(0).normal(size=(8, 16)), SMALL)
    with pytest.raises(CompileError, match=msg):
        backend.check_graph(SMALL, fe.graph)


def test_subspaces_beyond_cmax_are_named() -> None:
    """A conv's column is not tiled over c: 40 channels x 3x3 = 360 elements, c = 90 subspaces > CMax = 64 is
    refused naming the limit. A linear layer of 300 -> 8 (c = 75) is tiled over c instead (chained runs)."""
    arch = _arch([_pqconv(40, 8, 3, 4, 4, padding=1, metric="l1"), {"type": "global_avgpool"}], [40, 4, 4], 8)
    fe = graph.build_graph(arch, build(arch).state_dict(), np.random.default_rng(0).normal(size=(4, 40, 4, 4)),
                           DEFAULT)
    with pytest.raises(CompileError, match=r"layer 0 \(layers\.0 360->8\): c=90 is beyond the hardware limit CMax"):
        backend.check_graph(DEFAULT, fe.graph)
    arch = _arch([{"type": "pq_linear", "in_features": 300, "out_features": 8, "k": 4, "v": 4, "metric": "l1"}],
                 [300], 8)
    fe = graph.build_graph(arch, build(arch).state_dict(), np.random.default_rng(0).normal(size=(4, 300)), DEFAULT)
    backend.check_graph(DEFAULT, fe.graph)
    assert len(ops.of(fe.graph.ops[0]).ctiles(DEFAULT, fe.graph, fe.graph.ops[0])) == 2


# ------------------------------------------------------------------------------------------------------------
# whole networks
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("metric", ["l2", "l1"])
def test_residual_block_end_to_end(metric: str) -> None:
    arch = _residual_arch(metric)
    rng = np.random.default_rng(4)
    calib, x = rng.normal(0.2, 1.0, (64, 5, 6, 6)), rng.normal(0.2, 1.0, (8, 5, 6, 6))
    state = _model(arch, 3, calib[:32])
    fe = graph.build_graph(arch, state, calib, DEFAULT, lut_bits=10)
    g = fe.graph
    kinds = [(op.name, type(op).__name__) for op in g.ops]
    assert kinds == [("layers.0.body.0", "PQOp"), ("layers.0.body.3", "PQOp"), ("layers.0.shortcut.0", "PQOp"),
                     ("layers.0", "AddOp"), ("layers.2", "PoolOp"), ("layers.3", "PQOp")]
    body0, body3, short, add, pool, lin = g.ops
    assert isinstance(add, ir.AddOp) and add.post.relu and (add.a, add.b) == (body3.out, short.out)
    assert body0.post.relu and not body3.post.relu and body0.info["bn"] == "layers.0.body.1"
    assert (body0.stride, body0.pad, short.kh, short.stride, short.v, short.c) == (2, 1, 1, 2, 2, 3)
    assert 1 << 13 <= max(add.ma, add.mb) < 1 << 15
    assert g.tensors[pool.out].shape == (1, 1, 8) and (lin.kh, lin.kw) == (1, 1)
    xq = fe.quantize_input(x)
    y = graph.reference(g, xq)
    assert np.array_equal(y, sim_graph(DEFAULT, g, xq))  # bit-exact against the golden simulator
    # the dequantized integers track the float graph (BN folded, same prototypes) within quantization error
    assert fe.float_graph is not None
    yf = graph.float_forward(fe.float_graph, fe.host_input(x))[fe.float_graph.output].numpy().reshape(8, -1)
    err = np.abs(fe.finish(y) - yf)
    assert err.mean() < 0.05 * np.abs(yf).max() and err.max() < 0.3 * np.abs(yf).max()
    # and the float graph is the pqtrain model (float64)
    model = build(arch).double()
    model.load_state_dict(state)
    with torch.no_grad():
        np.testing.assert_allclose(yf, model.eval()(torch.from_numpy(x)).numpy(), rtol=1e-9, atol=1e-9)
    # every intermediate the reference computes is what the accelerator computes: also per tensor
    rows = fe.report()
    assert [r["kind"] for r in rows] == ["pq_conv2d", "pq_conv2d", "pq_conv2d", "add", "global_avgpool", "pq_linear"]
    assert rows[0]["table_bytes"] == 5 * 8 * 9 + 5 * 8 * 8 * DEFAULT.lut_bytes + 4 * 8


@pytest.mark.parametrize("flow", graph.CALIB_FLOWS)
def test_unsigned_at_four_bits(flow: str) -> None:
    arch = _arch([_pqconv(2, 6, 3, 8, 9, 1, 1), {"type": "relu"}, _pqconv(6, 4, 3, 8, 6, 2, 1), {"type": "flatten"},
                  {"type": "pq_linear", "in_features": 36, "out_features": 3, "k": 8, "v": 4, "metric": "l2"}],
                 [2, 5, 5], 3)
    rng = np.random.default_rng(6)
    calib, x = rng.random((64, 2, 5, 5)), rng.random((10, 2, 5, 5))  # non-negative inputs
    state = _model(arch, 5, calib)
    fe = graph.build_graph(arch, state, calib, DEFAULT, act_bits=4, lut_bits=6, calib_flow=flow)
    g = fe.graph
    t_in, t1 = g.tensors[g.input], g.tensors[g.ops[0].out]
    assert t_in.unsigned and t1.unsigned and g.ops[0].post.unsigned and g.ops[0].post.relu
    assert not g.tensors[g.ops[1].out].unsigned and not g.tensors[g.output].unsigned
    assert g.ops[0].protos.min() >= 0 and g.ops[0].protos.max() <= 15  # prototypes take the input's range
    xq = fe.quantize_input(x)
    assert xq.min() >= 0 and xq.max() > 7  # the unsigned range is used
    y = graph.reference(g, xq)
    assert np.array_equal(y, sim_graph(DEFAULT, g, xq))
    vals = graph.reference(ir.Graph("h", g.tensors, g.ops[:1], g.input, g.ops[0].out), xq)
    assert vals.min() >= 0 and vals.max() > 7 and vals.max() <= 15
    # at ActW bits nothing is unsigned; a signed input (negative calibration values) stays signed
    g8 = graph.build_graph(arch, state, calib, DEFAULT).graph
    assert not any(t.unsigned for t in g8.tensors.values())
    g4 = graph.build_graph(arch, state, calib - 0.5, DEFAULT, act_bits=4, lut_bits=6).graph
    assert not g4.tensors[g4.input].unsigned and g4.tensors[g4.ops[0].out].unsigned


def test_shipped_mlp_through_build_graph() -> None:
    """The shipped MLP: two linear ops; the integer reference equals the golden simulator on every test digit
    and keeps the float model's accuracy within 2 points."""
    model, arch, meta = load_model(ROOT / "models" / "digits_mlp.pt")
    x_tr, _, x_te, y_te = (t.numpy() for t in load_digits_split(seed=meta["seed"]))
    fe = graph.build_graph(arch, model.state_dict(), x_tr[:256], SMALL)
    g = fe.graph
    assert [(op.kh, op.kw, g.tensors[op.inp].shape) for op in g.ops] == [(1, 1, (1, 1, 64)), (1, 1, (1, 1, 64))]
    xq = fe.quantize_input(x_te)
    y = graph.reference(g, xq).reshape(len(x_te), -1)
    prog = backend.emit_graph(SMALL, g, xq)
    assert np.array_equal(backend.read_output(prog.manifest, backend.simulate(SMALL, prog).mem), y)
    acc_int = float((fe.finish(y.reshape(-1, 1, 1, 10)).argmax(1) == y_te).mean())
    with torch.no_grad():
        acc_float = float((model(torch.from_numpy(x_te).float()).argmax(1).numpy() == y_te).mean())
    assert acc_int >= 0.9 and abs(acc_int - acc_float) <= 0.02


def test_digits_cnn_through_build_graph() -> None:
    model, arch, meta = load_model(ROOT / "models" / "digits_cnn.pt")
    x_tr, _, x_te, y_te = (t.numpy() for t in load_digits_split(seed=meta["seed"]))
    x_tr, x_te = x_tr.reshape(-1, 1, 8, 8), x_te.reshape(-1, 1, 8, 8)
    fe = graph.build_graph(arch, model.state_dict(), x_tr[:256], DEFAULT, lut_bits=8)  # as pqtrain's export
    g = fe.graph
    conv1, conv2, lin = g.ops
    assert isinstance(lin, ir.PQOp) and (lin.kh, lin.kw, lin.c, lin.v) == (4, 4, 32, 16)  # flatten + pq_linear
    assert (conv2.stride, conv2.pad, conv2.c, conv2.v) == (2, 1, 16, 9)
    y = graph.reference(g, fe.quantize_input(x_te))
    acc8 = float((fe.finish(y).argmax(1) == y_te).mean())
    assert acc8 >= 0.95
    # the integers equal the golden simulator running the emitted program (an independent implementation)
    prog = backend.emit_graph(DEFAULT, g, fe.quantize_input(x_te[:6]))
    res = sim.run(DEFAULT, prog.mem, prog.insn_base, strict=True)
    assert np.array_equal(backend.read_output(prog.manifest, res.mem).reshape(6, -1), y[:6].reshape(6, -1))
    # float graph == the pqtrain model in float64 (flatten order = the window's (ci, ky, kx) order)
    with torch.no_grad():
        want = model.double()(torch.from_numpy(x_te[:50])).numpy()
    yf = graph.float_forward(fe.float_graph, fe.host_input(x_te[:50]))[g.output].numpy().reshape(50, -1)
    np.testing.assert_allclose(yf, want, rtol=1e-9, atol=1e-9)
    xq = fe.quantize_input(x_te[:3])
    assert np.array_equal(sim_graph(DEFAULT, g, xq), y[:3])
    fe4 = graph.build_graph(arch, model.state_dict(), x_tr[:256], DEFAULT, act_bits=4, lut_bits=4)
    acc4 = float((fe4.finish(graph.reference(fe4.graph, fe4.quantize_input(x_te))).argmax(1) == y_te).mean())
    assert acc4 >= 0.9


def test_resnet20_builds_in_seconds() -> None:
    arch = zoo.resnet20()
    state = _model(arch, 7)
    x = np.random.default_rng(8).random((2, 3, 32, 32))
    host = ["layers.0", "layers.1", "layers.2", "layers.22"]
    t0 = time.perf_counter()
    fe = graph.build_graph(arch, state, x, DEFAULT, host_layers=host)
    elapsed = time.perf_counter() - t0
    g = fe.graph
    kinds = [type(op).__name__ for op in g.ops]
    assert kinds.count("PQOp") == 20 and kinds.count("AddOp") == 9 and kinds[-1] == "PoolOp"
    pq = [op for op in g.ops if isinstance(op, ir.PQOp)]
    assert all(op.info["bn"] for op in pq) and sum(op.kh == 1 for op in pq) == 2
    assert g.tensors[g.output].shape == (1, 1, 64) and g.host_suffix == ["layers.22"]
    y = graph.reference(g, fe.quantize_input(x[:1]))
    assert fe.finish(y).shape == (1, 10)
    assert np.array_equal(sim_graph(DEFAULT, g, fe.quantize_input(x[:1])), y)
    assert elapsed < 30, f"build_graph took {elapsed:.1f} s"


def test_wide_output_and_qat_parameters() -> None:
    """out_bits: ActW-bit outputs behind 4-bit activations; the QAT parameters reproduce the exported integers;
    QAT refuses a graph with a folded batch norm."""
    arch = _arch([_pqconv(2, 6, 3, 8, 9, 1, 1), {"type": "relu"}, {"type": "flatten"},
                  {"type": "pq_linear", "in_features": 150, "out_features": 3, "k": 8, "v": 6, "metric": "l1"}],
                 [2, 5, 5], 3)
    rng = np.random.default_rng(9)
    calib, x = rng.random((64, 2, 5, 5)), rng.random((10, 2, 5, 5))
    state = _model(arch, 9, calib)
    model = build(arch)
    model.load_state_dict(state)
    inet = calibrate_qat(model, arch, torch.from_numpy(calib).float(), 4, out_bits=8)
    g = inet.graph
    assert [g.tensors[t].bits for t in (g.input, g.ops[0].out, g.output)] == [4, 4, 8]
    assert g.tensors[g.ops[0].out].unsigned and not g.tensors[g.output].unsigned
    ints = inet(torch.from_numpy(x).float())
    assert int(ints.abs().max()) > 7  # beyond the 4-bit range
    model.eval()
    with torch.no_grad():
        fq = model(torch.from_numpy(x).float()).double()
    assert torch.equal(torch.round(fq / inet.output_scale).long(), ints)
    xq = inet.frontend.quantize_input(x)
    assert np.array_equal(sim_graph(DEFAULT, g, xq).reshape(10, -1), ints.numpy())
    clear_qat(model)
    bn = _bn_arch()
    xb = torch.rand(8, 3, 6, 6)
    mb = build(bn)
    mb.load_state_dict(_model(bn, 1, xb.numpy()))
    with pytest.raises(ValueError, match=r"layers\.1 \(batchnorm2d\): quantization-aware training does not cover"):
        calibrate_qat(mb, bn, xb, 8)
