"""Back end for whole graphs (pqcompile.backend): hand-built integer graphs (conv, stride 2, odd channels,
v not dividing the patch, flatten-linear, pool, add, a residual block) compiled, run on the golden simulator
and compared exactly with a numpy reference composed of the simulator's own helper functions
(sim.conv_gather / encode / lookup / requantize / round_shift_clamp); conv tiling into bands, the layout of
padded tensors, memory reuse, the shipped MLP, errors and the report."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from pqcompile import backend, ir, isa, sim
from pqcompile import build as pqbuild
from pqcompile.isa import decode as isa_decode
from pqcompile.isa import field_limit
from pqcompile.ops import pq
from pqcompile.plan import PInsn
from pqcompile.spec import HwConfig, load

ROOT = Path(__file__).resolve().parents[1]
SPEC = load()
SMALL, DEFAULT = SPEC.config("small"), SPEC.config("default")


# ------------------------------------------------------------------------------------------------------------
# numpy reference and a graph builder that calibrates each op's requantization on the data it sees
# ------------------------------------------------------------------------------------------------------------
def ref_pq(op: ir.PQOp, x: np.ndarray, acc_w: int = 32) -> np.ndarray:
    """x [N, h, w, ch] -> [N, oh, ow, m]: conv_gather (untiled, whole fmap) + encode + lookup + requantize."""
    n, h, w, ch = x.shape
    oh, ow = (h + 2 * op.pad - op.kh) // op.stride + 1, (w + 2 * op.pad - op.kw) // op.stride + 1
    g = sim.ConvGeom(h, w, ch, op.stride, op.kh, op.kw, op.pad, op.pad, ow)
    d = ch * op.kh * op.kw
    out = []
    for im in range(n):
        cols = np.zeros((oh * ow, op.c * op.v), np.int64)
        cols[:, :d] = sim.conv_gather(x[im].reshape(-1).astype(np.int64), g, d, oh * ow)
        idx = sim.encode(cols.reshape(-1, op.c, op.v), op.protos, SPEC.enums["metric"][op.metric])
        acc = sim.lookup(idx, op.lut, op.bias, acc_w)
        p = op.post
        out.append(sim.requantize(acc, p.mult, p.shift, p.relu, p.bits, p.unsigned).reshape(oh, ow, op.m))
    return np.stack(out)


def ref_graph(g: ir.Graph, x: np.ndarray) -> dict[str, np.ndarray]:
    vals = {g.input: x.astype(np.int64)}
    for op in g.ops:
        p = op.post
        if isinstance(op, ir.PQOp):
            vals[op.out] = ref_pq(op, vals[op.inp])
        elif isinstance(op, ir.AddOp):
            vals[op.out] = sim.round_shift_clamp(vals[op.a] * op.ma + vals[op.b] * op.mb, p.shift, p.relu, p.bits,
                                                 p.unsigned)
        else:
            s = vals[op.inp].sum(axis=(1, 2), keepdims=True)
            vals[op.out] = sim.requantize(s, p.mult, p.shift, p.relu, p.bits, p.unsigned)
    return vals


def _shift_for(top: int, mult: int, bits: int) -> int:
    return min(field_limit("quant", "shift"), max(0, (max(top, 1) * mult).bit_length() - (bits - 1)))


@dataclass
class Builder:
    """Builds a graph op by op on concrete inputs, calibrating mult/shift so that outputs are spread."""

    x: np.ndarray  # [N, h, w, ch]
    seed: int = 0
    lut_bits: int = 8
    tensors: dict[str, ir.TensorInfo] = field(default_factory=dict)
    ops: list[ir.Op] = field(default_factory=list)
    vals: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)
        self.tensors["x"] = ir.TensorInfo("x", tuple(self.x.shape[1:]), 1.0, 8)  # type: ignore[arg-type]
        self.vals["x"] = self.x.astype(np.int64)

    def _add_tensor(self, name: str, val: np.ndarray, bits: int, unsigned: bool = False) -> str:
        self.tensors[name] = ir.TensorInfo(name, tuple(val.shape[1:]), 1.0, bits, unsigned)  # type: ignore[arg-type]
        self.vals[name] = val
        return name

    def pq(self, name: str, inp: str, m: int, k: int, v: int, kh: int = 1, kw: int | None = None, stride: int = 1,
           pad: int = 0, metric: str = "l2", relu: bool = True, bits: int = 8, unsigned: bool = False) -> str:
        kw = kh if kw is None else kw
        h, w, ch = self.tensors[inp].shape
        d = ch * kh * kw
        c = -(-d // v)
        rng = self.rng
        protos = rng.integers(-60, 60, (c, k, v))
        protos[-1, :, d - (c - 1) * v :] = 0
        lmax = 1 << (self.lut_bits - 1)
        lut = rng.integers(-lmax, lmax, (c, k, m))
        bias = rng.integers(-4 * lmax, 4 * lmax, m)
        op = ir.PQOp(name, inp, f"{name}.out", protos, lut, bias, metric, ir.Post(1 << 14, 0, relu, bits, unsigned),
                     kh, kw, stride, pad)
        op.post.mult = 1 << 14  # calibrate the shift on the data: about half the outputs saturate-free
        acc_top = int(np.abs(ref_pq(ir.PQOp(**{**op.__dict__, "post": ir.Post(1, 0, False, 63)}),
                                    self.vals[inp])).max())
        op.post.shift = _shift_for(acc_top, op.post.mult, bits)
        self.ops.append(op)
        return self._add_tensor(op.out, ref_pq(op, self.vals[inp]), bits, unsigned)

    def add(self, name: str, a: str, b: str, relu: bool = True, bits: int = 8) -> str:
        ma, mb = int(self.rng.integers(1 << 13, 1 << 14)), int(self.rng.integers(1 << 13, 1 << 14))
        top = int(np.abs(self.vals[a] * ma + self.vals[b] * mb).max())
        post = ir.Post(0, _shift_for(top, 1, bits), relu, bits)
        op = ir.AddOp(name, a, b, f"{name}.out", ma, mb, post)
        self.ops.append(op)
        p = post
        val = sim.round_shift_clamp(self.vals[a] * ma + self.vals[b] * mb, p.shift, p.relu, p.bits, p.unsigned)
        return self._add_tensor(op.out, val, bits)

    def pool(self, name: str, inp: str, bits: int = 8) -> str:
        s = self.vals[inp].sum(axis=(1, 2), keepdims=True)
        post = ir.Post(1 << 14, _shift_for(int(np.abs(s).max()), 1 << 14, bits), False, bits)
        op = ir.PoolOp(name, inp, f"{name}.out", post)
        self.ops.append(op)
        return self._add_tensor(op.out, sim.requantize(s, post.mult, post.shift, False, bits), bits)

    def graph(self, out: str, name: str = "hand") -> ir.Graph:
        return ir.Graph(name, dict(self.tensors), list(self.ops), "x", out)


def _inputs(rng: np.random.Generator, n: int, shape: tuple[int, int, int]) -> np.ndarray:
    return rng.integers(-128, 128, (n, *shape))


def run_graph(cfg: object, g: ir.Graph, x: np.ndarray) -> tuple[np.ndarray, backend.Program, sim.Result]:
    prog = backend.emit_graph(cfg, g, x)  # type: ignore[arg-type]
    res = backend.simulate(cfg, prog)  # type: ignore[arg-type]
    assert res.done and res.err_code == 0
    y = backend.read_output(prog.manifest, res.mem)
    return y.reshape(x.shape[0], *prog.manifest["output"]["tensor"]).astype(np.int64), prog, res


def _stamp_windows(prog: backend.Program) -> list[list[Any]]:
    """The decoded instructions between the stamps of ``prog``: window j >= 1 is what label j's op ran (window 0
    is empty: the program starts with a stamp; the last holds nothing but ``end``'s predecessors)."""
    windows: list[list[Any]] = [[]]
    for w in prog.words:
        q = isa_decode(w)
        if q.mnemonic == "stamp":
            windows.append([])
        else:
            windows[-1].append(q)
    return windows


def _check(cfg: object, b: Builder, out: str) -> backend.Program:
    g = b.graph(out)
    y, prog, _ = run_graph(cfg, g, b.x)
    ref = ref_graph(g, b.x)[out]
    assert np.array_equal(y, ref)
    assert np.array_equal(ref, b.vals[out])
    assert len(np.unique(ref)) >= 8  # the outputs carry information
    return prog


# ------------------------------------------------------------------------------------------------------------
# single ops
# ------------------------------------------------------------------------------------------------------------
def test_conv_stride1_pad1() -> None:
    b = Builder(_inputs(np.random.default_rng(1), 2, (8, 8, 4)), seed=1)
    t = b.pq("conv", "x", m=6, k=8, v=8, kh=3, pad=1)  # d = 36 = 4*8 + 4
    prog = _check(SMALL, b, t)
    lay = prog.manifest["layers"][0]
    assert lay["kind"] == "conv" and lay["bands"] == 1 and lay["tiles"] == 2
    assert prog.manifest["output"]["shape"] == [2, 8 * 8 * 6] and prog.manifest["output"]["tensor"] == [8, 8, 6]


def test_conv_stride2_odd_channels_v_not_dividing_patch() -> None:
    # 9x9x3 = 243 bytes per image (not a bus multiple: padded to 248), d = 27 = 5 subspaces of 5 + 2
    b = Builder(_inputs(np.random.default_rng(2), 3, (9, 9, 3)), seed=2)
    t = b.pq("conv", "x", m=5, k=7, v=5, kh=3, stride=2, pad=1, metric="l1", relu=False)
    prog = _check(SMALL, b, t)
    man = prog.manifest
    assert man["input"]["stride"] == 248 and man["output"]["stride"] == 128  # 5x5x5 = 125 -> 128
    assert b.tensors[t].shape == (5, 5, 5)


def test_conv_rectangular_kernel_no_pad() -> None:
    b = Builder(_inputs(np.random.default_rng(3), 2, (6, 7, 5)), seed=3)
    t = b.pq("conv", "x", m=4, k=5, v=4, kh=2, kw=3, stride=1, pad=0)
    _check(SMALL, b, t)


def test_flatten_linear_groups_images() -> None:
    b = Builder(_inputs(np.random.default_rng(4), 7, (4, 4, 5)), seed=4)
    t = b.pq("fc", "x", m=10, k=16, v=8, kh=4, kw=4, relu=False)
    prog = _check(SMALL, b, t)
    lay = prog.manifest["layers"][0]
    assert lay["kind"] == "flatten-linear" and lay["images_per_run"] == 7 and lay["tiles"] == 1
    assert prog.manifest["output"]["stride"] == 10  # dense [N, 10], as an MLP's output


def test_flatten_linear_group_tiles() -> None:
    # 4x4x8 = 128 bytes per image: 32 images per act buffer on "small"; 70 images -> 3 runs
    b = Builder(_inputs(np.random.default_rng(5), 70, (4, 4, 8)), seed=5)
    t = b.pq("fc", "x", m=12, k=8, v=8, kh=4, kw=4)
    prog = _check(SMALL, b, t)
    lay = prog.manifest["layers"][0]
    assert lay["images_per_run"] == 32 and lay["tiles"] == 3


def test_linear_batched_like_an_mlp() -> None:
    b = Builder(_inputs(np.random.default_rng(6), 300, (1, 1, 40)), seed=6)
    t = b.pq("fc", "x", m=50, k=4, v=8)
    prog = _check(SMALL, b, t)
    lay = prog.manifest["layers"][0]
    assert lay["kind"] == "linear" and lay["tile_columns"] == 80 and lay["tiles"] == 4


def test_pool() -> None:
    b = Builder(_inputs(np.random.default_rng(7), 3, (4, 4, 6)), seed=7)
    t = b.pool("gap", "x")
    prog = _check(SMALL, b, t)
    assert prog.manifest["output"]["stride"] == 8 and prog.manifest["layers"][0]["kind"] == "pool"


def test_add_unaligned_and_chunked() -> None:
    rng = np.random.default_rng(8)
    b = Builder(_inputs(rng, 2, (5, 5, 3)), seed=8)
    y = b.pq("conv", "x", m=3, k=4, v=3, kh=3, pad=1)
    t = b.add("res", y, "x")
    _check(SMALL, b, t)
    # 2 x 32x32x8 = 16384 bytes: 4 chunks of min(ActBytes, OutBytes) = 4096 on "small"
    b2 = Builder(_inputs(rng, 2, (32, 32, 8)), seed=9)
    t2 = b2.add("res", "x", "x", relu=False)
    prog = _check(SMALL, b2, t2)
    lay = prog.manifest["layers"][0]
    assert lay["tiles"] == 4 and lay["chunk_bytes"] == 4096 and lay["loaded_bytes"] == 2 * 16384


# ------------------------------------------------------------------------------------------------------------
# tiling into bands
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("stride", "pad", "kh"), [(1, 1, 3), (2, 1, 3), (1, 0, 3), (2, 0, 1), (1, 2, 5)])
def test_conv_bands_equal_the_untiled_result(stride: int, pad: int, kh: int) -> None:
    """32x32x8 (8192 bytes) does not fit ActBytes=4096 of "small": bands of rows give exactly the untiled
    (numpy) result and exactly the result of the same layer on "default", where it fits in one piece."""
    b = Builder(_inputs(np.random.default_rng(10 + kh), 2, (32, 32, 8)), seed=10 + stride)
    t = b.pq("conv", "x", m=8, k=16, v=8, kh=kh, stride=stride, pad=pad)
    prog = _check(SMALL, b, t)
    lay = prog.manifest["layers"][0]
    assert lay["bands"] > 1 and lay["tiles"] == 2 * lay["bands"]
    rows = lay["band_rows"]
    assert rows[0][0] == 0 and rows[-1][1] == b.tensors[t].shape[0]
    assert all(r1 == r0n for (_, r1), (r0n, _) in zip(rows[:-1], rows[1:], strict=True))
    y_def, prog_def, _ = run_graph(DEFAULT, b.graph(t), b.x)
    assert prog_def.manifest["layers"][0]["bands"] == 1
    assert np.array_equal(y_def, b.vals[t])


def test_conv_bands_unit() -> None:
    op = ir.PQOp("c", "x", "y", np.zeros((9, 2, 8)), np.zeros((9, 2, 8)), np.zeros(8), "l2",
                 ir.Post(1, 0, False, 8), 3, 3, 1, 1)
    bands = pq.conv_bands(SMALL, op, 32, 32, 8)
    for bd in bands:
        assert (bd.b - bd.a) * 32 * 8 <= SMALL.ActBytes and (bd.r1 - bd.r0) * 32 * 8 <= SMALL.OutBytes
        assert bd.a == max(0, bd.r0 - 1) and bd.pad_t == (1 if bd.r0 == 0 else 0)
        assert bd.b == min(32, bd.r1 + 1)  # only the real bottom padding is beyond the loaded rows
    assert [(bd.r0, bd.r1) for bd in bands] == [(0, 15), (15, 29), (29, 32)]


@pytest.mark.parametrize(("shape", "kh", "stride", "pad", "cfg"), [
    ((1, 3, 3), 1, 3, 1, DEFAULT),  # the only output row's window lies in the top padding
    ((3, 3, 2), 1, 1, 2, DEFAULT),  # 1x1 conv with padding 2: a border of bias-only outputs
    ((40, 40, 4), 2, 1, 3, SMALL),  # banded: the last 2 output rows see only the bottom padding
], ids=["top_padding_only", "pad_beyond_kernel", "banded_bottom_padding_only"])
def test_conv_rows_that_see_only_padding(shape: tuple[int, int, int], kh: int, stride: int, pad: int,
                                         cfg: object) -> None:
    """Padding >= kernel (legal in PyTorch): output rows whose window holds only zero padding. The back end
    used to refuse these convs ("no band of output rows from row r fits": a band with an empty fmap)."""
    b = Builder(_inputs(np.random.default_rng(3), 2, shape), seed=4)
    t = b.pq("conv", "x", m=4, k=4, v=min(8, shape[2] * kh * kh), kh=kh, stride=stride, pad=pad, relu=False)
    g = b.graph(t)
    y, prog, _ = run_graph(cfg, g, b.x)
    assert np.array_equal(y, ref_graph(g, b.x)[t])
    rows = prog.manifest["layers"][0]["band_rows"]
    assert rows[0][0] == 0 and rows[-1][1] == g.tensors[t].shape[0]
    if cfg is SMALL:
        bands = pq.conv_bands(SMALL, g.ops[0], *shape)  # type: ignore[arg-type]
        assert len(bands) > 1 and all(bd.a < bd.b <= shape[0] for bd in bands)


def test_conv_that_cannot_be_banded_is_named() -> None:
    # one input row of 300x16 = 4800 bytes exceeds ActBytes=4096
    op = ir.PQOp("wide", "x", "y", np.zeros((18, 2, 8), np.int64), np.zeros((18, 2, 4), np.int64),
                 np.zeros(4, np.int64), "l2", ir.Post(1, 0, False, 8), 3, 3, 1, 1)
    g = ir.Graph("w", {"x": ir.TensorInfo("x", (3, 300, 16), 1.0, 8), "y": ir.TensorInfo("y", (3, 300, 4), 1.0, 8)},
                 [op], "x", "y")
    with pytest.raises(backend.CompileError, match=r"layer 0 \(wide\): no band of output rows"):
        backend.emit_graph(SMALL, g, np.zeros((1, 3, 300, 16), np.int64))


# ------------------------------------------------------------------------------------------------------------
# a network: conv, strided conv, projection shortcut, add, pool, flatten-linear
# ------------------------------------------------------------------------------------------------------------
def _stem_and_block(n: int, seed: int, short_k: int = 8) -> tuple[Builder, str]:
    """On n 8x8x3 inputs: a stem conv and a down-sampling residual block (strided conv, conv, strided 1x1
    shortcut with ``short_k`` prototypes, add); the builder and the block's output."""
    b = Builder(_inputs(np.random.default_rng(seed), n, (8, 8, 3)), seed=seed)
    h = b.pq("stem", "x", m=8, k=8, v=6, kh=3, pad=1, bits=7, unsigned=True)
    y = b.pq("body0", h, m=16, k=16, v=8, kh=3, stride=2, pad=1)
    y = b.pq("body1", y, m=16, k=16, v=8, kh=3, pad=1, relu=False)
    s = b.pq("short", h, m=16, k=short_k, v=4, kh=1, stride=2, relu=False)
    return b, b.add("add", y, s)


def _mini_resnet(n: int = 2, seed: int = 11, fc: bool = True) -> tuple[Builder, str]:
    """A residual CNN on 8x8x3 inputs: stem, two convs and a strided 1x1 shortcut, add, pool, and (``fc``) a
    linear classifier."""
    b, r = _stem_and_block(n, seed)
    p = b.pool("gap", r)
    return b, b.pq("fc", p, m=10, k=16, v=8, relu=False) if fc else p


@pytest.mark.parametrize("config", ["small", "default"])
def test_residual_network(config: str) -> None:
    b, out = _mini_resnet()
    prog = _check(SPEC.config(config), b, out)
    man = prog.manifest
    assert man["stamps"]["labels"] == ["start", "stem", "body0", "body1", "short", "add", "gap", "fc"]
    assert [lay["kind"] for lay in man["layers"]] == ["conv"] * 4 + ["add", "pool", "linear"]
    assert man["output"]["shape"] == [2, 10]


@pytest.mark.parametrize("batch", [1, 2, 3, 5])
def test_batch_passes(batch: int) -> None:
    """``emit_graph(batch=B)``: the mini ResNet over 5 images in ceil(5/B) passes (the last one smaller when B
    does not divide 5) gives the one-pass outputs bit for bit; every pass loads every op's tables once; the
    stamps are one per op per pass, and the per-op figures (``build.op_deltas``) sum the passes: the compute
    cycles of the passes add up to the one-pass program's at B = 5."""
    b, out = _mini_resnet(n=5, seed=13)
    g = b.graph(out)
    whole = backend.emit_graph(SMALL, g, b.x)
    prog = backend.emit_graph(SMALL, g, b.x, batch=batch)
    res, ref = backend.simulate(SMALL, prog), backend.simulate(SMALL, whole)
    assert res.done and res.err_code == 0
    y = backend.read_output(prog.manifest, res.mem)
    assert np.array_equal(y, backend.read_output(whole.manifest, ref.mem))
    assert np.array_equal(y.reshape(5, -1).astype(np.int64), ref_graph(g, b.x)[out].reshape(5, -1))
    passes = -(-5 // batch)
    man = prog.manifest
    assert (man["batch"], man["passes"], man["n_images"]) == (batch, passes, 5)
    assert man["stamps"]["labels"] == ["start"] + [op.name for op in g.ops] * passes
    words = [int.from_bytes(res.mem[8 * i : 8 * i + 8].tobytes(), "little") for i in range(man["n_insns"])]
    tables = SPEC.enums["buffer"]
    loads = [isa_decode(w) for w in words]
    n_proto = sum(q.mnemonic == "load" and q.ops["buf"] == tables["proto"] for q in loads)
    assert n_proto == passes * sum(isinstance(op, ir.PQOp) for op in g.ops)
    perf = backend.op_perf(man, res.mem)
    stamps = pqbuild.read_perf(man, res.mem)
    assert sum(p["predicted_cycles"] for p in perf) == stamps["cycles"][-1] - stamps["cycles"][0]
    one = backend.op_perf(whole.manifest, ref.mem)
    if batch == 5:
        assert perf == one
    else:  # more passes: more table bytes, the same outputs
        assert sum(p["rd_bytes"] for p in perf) > sum(p["rd_bytes"] for p in one)
    with pytest.raises(backend.CompileError, match="batch must be at least 1"):
        backend.emit_graph(SMALL, g, b.x, batch=0)


def test_passes_stream_into_each_other() -> None:
    """``schedule(..., pass_ops)`` at batch 1 over 4 images of the mini ResNet up to its pool: each later
    pass's input load sits in the pass before it, at the start of the pool (``hoist_point``: the earliest op
    from which on nothing uses its act bank) and each earlier pass's output store at the start of the pass
    after it; the set-up of every op but the first precedes the stamp before it. The outputs are those of the
    one-pass program. (With the classifier, which reads the input's act bank, nothing moves.)"""
    b, out = _mini_resnet(n=4, seed=5, fc=False)
    g = b.graph(out)
    prog = backend.emit_graph(SMALL, g, b.x, batch=1)
    res = backend.simulate(SMALL, prog)
    whole = backend.emit_graph(SMALL, g, b.x)
    assert np.array_equal(backend.read_output(prog.manifest, res.mem),
                          backend.read_output(whole.manifest, backend.simulate(SMALL, whole).mem))
    man, nl = prog.manifest, len(g.ops)
    windows = _stamp_windows(prog)  # window 1 + q*nl + i is op i of pass q
    assert len(windows) == 1 + 4 * nl + 1
    inp, outr = man["input"], man["output"]

    def where(pred: Callable[[Any], bool]) -> list[int]:
        return [w for w, ins in enumerate(windows) for q in ins if pred(q)]

    for img in range(4):
        in_at = where(lambda q, i=img: q.mnemonic == "load" and q.ops["addr"] == inp["addr"] + i * inp["stride"])
        out_at = where(lambda q, i=img: q.mnemonic == "store"
                       and inp["addr"] != q.ops["addr"] == outr["addr"] + i * outr["stride"])
        assert len(in_at) == 1 and len(out_at) == 1
        assert in_at[0] == (img * nl if img else 1)  # the previous pass's pool, or the first op
        assert out_at[0] == ((img + 1) * nl + 1 if img < 3 else 4 * nl)  # the next pass's first op, or its own
    for w in range(2, 4 * nl + 1):  # every op but the first: no set-up before its first compute instruction
        first = next(k for k, q in enumerate(windows[w]) if q.mnemonic in sim.COMPUTE)
        assert not [q for q in windows[w][:first] if q.mnemonic in sim.SETUP]


def _fetch_case(lead: int = 0, lut: int = 4096, ooff: int = 2048, tbank: int = 1) -> list[PInsn]:
    """A batched op at config ``wide`` (4 instructions a bus word) as the schedule leaves it: the next op's
    table set (proto, lut, bias into bank 1) moved in after the first run and the second image's input, then
    the first image's store (output half 0) and the second run (at ``ooff``). ``lead``: ``quant``s ahead;
    ``tbank``: the bank of the set's loads (0: the run's own tables, a set loaded right before its run)."""
    quant = PInsn("quant", {"relu": 0, "shift": 0, "mult": 1, "bits": 8})
    shape = PInsn("shape", {"metric": 0, "bank": 0, "k": 4, "v": 2, "c": 4, "d": 8, "m": 8})

    def ld(buf: str, bank: int, nbytes: int, addr: int) -> PInsn:
        return PInsn("load", {"buf": SPEC.enums["buffer"][buf], "bank": bank, "nbytes": nbytes, "addr": addr})

    def run(src: int, at: int) -> PInsn:
        return PInsn("run", {"src": src, "dst": SPEC.enums["target"]["out"], "n": 2, "ooff": at})

    return [PInsn("stamp", {"addr": 1 << 16}), *[quant] * lead, shape, ld("act", 0, 64, 4096), run(0, 0),
            ld("act", 1, 64, 4160), ld("proto", tbank, 64, 8192), ld("lut", tbank, lut, 8256),
            ld("bias", tbank, 32, 8192 + lut + 64), PInsn("store", {"nbytes": 16, "addr": 32768}), run(1, ooff),
            PInsn("stamp", {"addr": (1 << 16) + 64}), PInsn("end", {})]


def test_fetch_order() -> None:
    """``backend.fetch_order``: behind a table load longer than the run before it, the next run goes ahead of
    the store before it and into the large load's bus word (a smaller load behind the run when the large one
    would end the word); nothing moves when the load is short, when the run writes the half the store reads or
    reads the tables the loads write, or on a bus word of one instruction."""
    wide = SPEC.config("wide")
    names = lambda seq: [q.mnemonic if q.mnemonic != "load" else ("act", "proto", "lut", "bias")[  # noqa: E731
        [SPEC.enums["buffer"][b] for b in ("act", "proto", "lut", "bias")].index(q.ops["buf"])] for q in seq]
    head = ["stamp", "shape", "act", "run", "act"]
    # the lut load at word position 7 would end its word (4 a word): the bias goes behind the run
    assert names(backend.fetch_order(wide, _fetch_case())) == [
        *head, "proto", "lut", "run", "bias", "store", "stamp", "end"]
    # one instruction more ahead: the lut at position 8, the run at 9, one word
    assert names(backend.fetch_order(wide, _fetch_case(lead=1))) == [
        "stamp", "quant", *head[1:], "proto", "bias", "lut", "run", "store", "stamp", "end"]
    # a short load; the run in the store's half; the run reading the bank the loads write (its own tables)
    for seq in (_fetch_case(lut=64), _fetch_case(ooff=0), _fetch_case(tbank=0)):
        assert backend.fetch_order(wide, seq) == seq
    assert backend.fetch_order(SMALL, _fetch_case()) == _fetch_case()  # 8-byte bus: one instruction a word
    # a 256-byte table: 8 cycles at 32 bytes a cycle, shorter than the run before (2 columns x 2 groups x 3
    # cycles, PQA's formula at wide's lanes) and the store (1): it stays; at 1 byte a cycle (256) it moves
    assert backend.fetch_order(wide, _fetch_case(lut=256)) == _fetch_case(lut=256)
    assert names(backend.fetch_order(wide, _fetch_case(lut=256), mem_bw=1)) == names(
        backend.fetch_order(wide, _fetch_case()))


def test_fetch_order_keeps_the_results() -> None:
    """The mini ResNet over 4 images in one pass at config ``wide``, scheduled for 1 byte a cycle: the stream
    moves runs ahead of stores (the words differ from the plain schedule's), the outputs are the integer
    reference's, and the cycle model at that bandwidth finishes sooner than with the plain order."""
    wide = SPEC.config("wide")
    b, out = _mini_resnet(n=4, seed=13)
    g = b.graph(out)
    prog = backend.emit_graph(wide, g, b.x, batch=4, mem_bw=1)
    res = sim.run(wide, prog.mem, prog.insn_base, mem_bw=1)
    assert res.done and res.err_code == 0
    assert np.array_equal(backend.read_output(prog.manifest, res.mem).reshape(4, -1).astype(np.int64),
                          ref_graph(g, b.x)[out].reshape(4, -1))
    plain_order = backend.fetch_order
    try:
        backend.fetch_order = lambda cfg, seq, mem_bw=0: seq  # type: ignore[assignment]
        plain = backend.emit_graph(wide, g, b.x, batch=4, mem_bw=1)
    finally:
        backend.fetch_order = plain_order
    assert plain.words != prog.words and sorted(plain.words) == sorted(prog.words)
    assert res.cycles < sim.run(wide, plain.mem, plain.insn_base, mem_bw=1).cycles


def test_hoist_point_respects_conflicts() -> None:
    """``backend.hoist_point``: a load into act bank 0 moves back over ops that do not use act bank 0 and do not
    write the memory it reads, and stops after the last one that does (a `run` reading it, a `store` into its
    source bytes)."""
    from pqcompile.plan import PInsn

    tgt, buf = SPEC.enums["target"], SPEC.enums["buffer"]
    ld = PInsn("load", {"buf": buf["act"], "bank": 0, "nbytes": 64, "addr": 0x1000})
    run0 = PInsn("run", {"n": 1, "src": 0, "dst": tgt["out"]})  # reads act 0
    run1 = PInsn("run", {"n": 1, "src": 1, "dst": tgt["out"]})
    pool1 = PInsn("pool", {"src": 1, "dst": tgt["out"]})
    st_far = PInsn("store", {"nbytes": 64, "addr": 0x2000})
    st_over = PInsn("store", {"nbytes": 64, "addr": 0x1020})  # writes bytes the load reads
    assert backend.hoist_point([[run0], [run1], [pool1, st_far], [ld]], 3, ld, 0) == 1
    assert backend.hoist_point([[run1], [run1], [pool1, st_far], [ld]], 3, ld, 0) == 0
    assert backend.hoist_point([[run1], [run1], [pool1, st_far], [ld]], 3, ld, 2) == 2  # not before lo
    assert backend.hoist_point([[run1], [st_over], [pool1], [ld]], 3, ld, 0) == 2
    assert backend.hoist_point([[run1], [pool1], [run0, ld]], 2, ld, 0) == 2  # its own op uses the bank first


@pytest.mark.parametrize("config", ["small", "default"])
def test_results_on_chip(config: str) -> None:
    """At one image every op of the mini ResNet is single-shot: results stay in the act banks or the output
    buffer (onchip.keep_on_chip), only the input is loaded and only the output stored, and the outputs equal
    the reference and the program that moves everything through memory."""
    cfg = SPEC.config(config)
    b, out = _mini_resnet(n=1)
    prog = _check(cfg, b, out)
    g = b.graph(out)
    off = backend.emit_graph(cfg, g, b.x, on_chip=False)
    res_off = backend.simulate(cfg, off)
    assert np.array_equal(backend.read_output(off.manifest, res_off.mem).reshape(1, -1),
                          ref_graph(g, b.x)[out].reshape(1, -1))
    assert prog.manifest["memory"]["on_chip"] == {
        "stem.out": "act1", "body0.out": "act0", "body1.out": "out", "short.out": "act0", "add.out": "act1",
        "gap.out": "act0"}
    assert off.manifest["memory"]["on_chip"] == {}
    buffers, target = SPEC.enums["buffer"], SPEC.enums["target"]
    from pqcompile.isa import decode
    insns = [decode(w) for w in prog.words]
    act_loads = [q for q in insns if q.mnemonic == "load" and q.ops["buf"] in (buffers["act"], buffers["out"])]
    stores = [q for q in insns if q.mnemonic == "store"]
    assert len(act_loads) == 1 and len(stores) == 1  # the input in, the output out
    adds = [q for q in insns if q.mnemonic == "add"]
    # the add's operands: the shortcut (act0) first, the body (output buffer) second, swapped with ma / mb
    assert [(q.ops["src"], q.ops["dst"], q.ops["ma"], q.ops["mb"]) for q in adds] == [
        (0, target["act1"], b.ops[4].mb, b.ops[4].ma)]
    moved = sum(lay["loaded_bytes"] + lay["stored_bytes"] for lay in prog.manifest["layers"])
    moved_off = sum(lay["loaded_bytes"] + lay["stored_bytes"] for lay in off.manifest["layers"])
    assert moved < moved_off


def test_images_of_a_per_image_op_take_the_act_banks_in_turn() -> None:
    """Four 16x16x8 images of a 3x3 conv on ``small`` (2 KiB an image in and out: four are beyond an act bank
    and the output buffer, 4 KiB each) run image by image: image i's input goes to act bank i % 2, its
    run reads that bank, and its load sits right after the run of image i-1, ahead of image i-1's store
    (a store waits for every older instruction, so a load behind it would wait for the run before it). The
    outputs equal the reference and the cycle model predicts fewer cycles than the same program with every
    image in bank 0 and every load after the store before it."""
    b = Builder(_inputs(np.random.default_rng(3), 4, (16, 16, 8)), seed=3)
    t = b.pq("conv", "x", m=8, k=8, v=8, kh=3, pad=1)
    prog = _check(SMALL, b, t)
    assert 4 * 16 * 16 * 8 > SMALL.ActBytes == SMALL.OutBytes >= 16 * 16 * 8  # one image fits, four do not
    buffers = SPEC.enums["buffer"]
    insns = [isa_decode(w) for w in prog.words]
    body = [q for q in insns if q.mnemonic in ("load", "run", "store") and (
        q.mnemonic != "load" or q.ops["buf"] == buffers["act"])]
    kinds = "".join(q.mnemonic[0] for q in body)
    assert kinds == "lr" + "lsr" * 3 + "s", kinds  # load 0, run 0, (load i+1, store i, run i+1), store 3
    loads = [q for q in body if q.mnemonic == "load"]
    runs = [q for q in body if q.mnemonic == "run"]
    assert [q.ops["bank"] for q in loads] == [0, 1, 0, 1]
    assert [q.ops["src"] for q in runs] == [0, 1, 0, 1]
    # the outputs (2 KiB an image) alternate between the output buffer's halves, so that the next run
    # writes one half while the store reads the other
    assert [q.ops["ooff"] for q in runs] == [0, SMALL.OutBytes // 2] * 2
    assert [q.ops["half"] for q in body if q.mnemonic == "store"] == [0, 1] * 2
    assert [q.ops["addr"] for q in loads] == [prog.manifest["input"]["addr"] + i * prog.manifest["input"]["stride"]
                                             for i in range(4)]
    # the same stream, every image in bank 0 and loaded after the store before it: more cycles
    serial: list[int] = []
    pending: int | None = None
    for w in prog.words:
        q = isa_decode(w)
        if q.mnemonic == "load" and q.ops["buf"] == buffers["act"] and serial and pending is None and any(
                isa_decode(x).mnemonic == "run" for x in serial):
            pending = len(serial)
        if q.mnemonic == "load" and q.ops["buf"] == buffers["act"]:
            w = isa.with_field(w, "bank", 0)
        if q.mnemonic == "run":
            w = isa.with_field(w, "src", 0)
        serial.append(w)
    order: list[int] = []
    held: list[int] = []
    for w in serial:
        q = isa_decode(w)
        if q.mnemonic == "load" and q.ops["buf"] == buffers["act"] and any(
                isa_decode(x).mnemonic == "run" for x in order):
            held.append(w)
            continue
        order.append(w)
        if q.mnemonic == "store" and held:
            order.append(held.pop(0))
    assert len(order) == len(prog.words)
    mem = np.array(backend.simulate(SMALL, prog).mem, copy=True)
    image = np.array(prog.mem, copy=True)
    image[: 8 * len(order)] = np.frombuffer(b"".join(w.to_bytes(8, "little") for w in order), np.uint8)
    slow = sim.run(SMALL, image, 0)
    assert slow.done and np.array_equal(backend.read_output(prog.manifest, slow.mem),
                                        backend.read_output(prog.manifest, mem))
    assert backend.simulate(SMALL, prog).cycles < slow.cycles


def test_conv_over_several_images_bands_for_half_the_output_buffer() -> None:
    """A 3x3 conv whose image output (16x16x12 = 3 KiB) exceeds half of small's 4 KiB output buffer: at one
    image one band; over three images two bands an image (10 and 6 output rows: 1,920 <= 2,048 bytes), their outputs in
    alternate halves of the output buffer (``run.ooff`` 0 / 2048, ``store.half`` 0 / 1), so that a band's
    store overlaps the next band's run. Both exact."""
    half = SMALL.OutBytes // 2
    rows = half // (16 * 12)  # output rows of 16 x 12 bytes in half the buffer: 10
    assert rows == 10 and 11 * 16 * 8 <= SMALL.ActBytes  # their 11 input rows fit an act bank
    for n, bands in ((1, [[0, 16]]), (3, [[0, rows], [rows, 16]])):
        b = Builder(_inputs(np.random.default_rng(4), n, (16, 16, 8)), seed=4)
        t = b.pq("conv", "x", m=12, k=8, v=8, kh=3, pad=1)
        prog = _check(SMALL, b, t)
        assert prog.manifest["layers"][0]["band_rows"] == bands
    insns = [isa_decode(w) for w in prog.words]
    assert [q.ops["ooff"] for q in insns if q.mnemonic == "run"] == [0, half] * 3
    assert [(q.ops["half"], q.ops["nbytes"]) for q in insns if q.mnemonic == "store"] == [
        (0, rows * 16 * 12), (1, (16 - rows) * 16 * 12)] * 3


def test_allocation_reuses_memory_and_never_overlaps_live_tensors() -> None:
    b = Builder(_inputs(np.random.default_rng(12), 2, (16, 16, 8)), seed=12)
    t = "x"
    for i in range(5):
        t = b.pq(f"conv{i}", t, m=8, k=8, v=8, kh=3, pad=1)
    prog = _check(SMALL, b, t)
    mem = prog.manifest["memory"]
    assert mem["arena_peak"] < mem["arena_without_reuse"]
    assert mem["arena_peak"] == 3 * 2 * 16 * 16 * 8  # input (pinned), and two alternating buffers
    _assert_no_live_overlap(prog.manifest)
    b2, out = _mini_resnet(n=3)
    _assert_no_live_overlap(_check(SMALL, b2, out).manifest)


def _assert_no_live_overlap(man: dict) -> None:
    ts = man["memory"]["tensors"]
    for a, ta in ts.items():
        for c, tc in ts.items():
            if a >= c:
                continue
            (d0, l0), (d1, l1) = ta["live"], tc["live"]
            if d0 <= l1 and d1 <= l0:  # both live at some op (an op's output meets its inputs)
                assert ta["addr"] + ta["bytes"] <= tc["addr"] or tc["addr"] + tc["bytes"] <= ta["addr"], (a, c)


def test_allocate_unit() -> None:
    b = Builder(_inputs(np.random.default_rng(13), 1, (4, 4, 8)), seed=13)
    y = b.pq("a", "x", m=8, k=4, v=8, kh=3, pad=1)
    z = b.pq("b", y, m=8, k=4, v=8, kh=3, pad=1)
    w = b.pq("c", z, m=8, k=4, v=8, kh=3, pad=1)
    g = b.graph(w)
    al = backend.allocate(g, {t: 128 for t in g.tensors})
    assert al.offsets == {"x": 0, y: 128, z: 256, w: 128}  # y is dead after op b
    assert al.peak == 384 and al.total == 512
    assert al.live[y] == (0, 1) and al.live["x"] == (-1, 3) and al.live[w] == (2, 3)


# ------------------------------------------------------------------------------------------------------------
# checks and errors
# ------------------------------------------------------------------------------------------------------------
def _runs_and_table_loads(prog: backend.Program) -> list[tuple[str, dict[str, Any]]]:
    """The program's `run`s, `shape`s and `lut` loads in order: (mnemonic, operands)."""
    lut = SPEC.enums["buffer"]["lut"]
    out = []
    for w in prog.words:
        ins = isa_decode(w)
        if ins.mnemonic in ("run", "shape") or (ins.mnemonic == "load" and ins.ops["buf"] == lut):
            out.append((ins.mnemonic, ins.ops))
    return out


def test_table_tiled_over_m_keeps_a_bank_per_tile() -> None:
    """A table larger than the buffer is tiled over m, not refused: 27 subspaces in 14 groups of small's 2 lanes,
    16 prototypes, 22 output groups of 3, rows of 8 bytes: 39,424 B > LutBytes=32768. Two tiles of 33 and 31
    outputs (whole output groups), each a table set of its own bank, loaded once for both images; every run
    writes its tile's channels (ooff = 0 or 33, ostride = 64), the second image's in the output buffer's
    second half (ooff + 2048, `store.half`: the first image's store overlaps its runs). The result equals the
    untiled reference."""
    b = Builder(_inputs(np.random.default_rng(14), 2, (4, 4, 24)), seed=14, lut_bits=8)
    t = b.pq("big", "x", m=64, k=16, v=8, kh=3, pad=1)
    prog = _check(SMALL, b, t)
    lay = prog.manifest["layers"][0]
    assert lay["m_tiles"] == [[0, 33], [33, 64]] and lay["tiles"] == 4  # 2 images x 2 tiles
    seq = _runs_and_table_loads(prog)
    loads = [ops for mn, ops in seq if mn == "load"]
    assert [ld["nbytes"] for ld in loads] == [14 * 16 * 11 * 8] * 2 and {ld["bank"] for ld in loads} == {0, 1}
    bank_of_m = {ops["m"]: ops["bank"] for mn, ops in seq if mn == "shape"}
    assert bank_of_m == {33: loads[0]["bank"], 31: loads[1]["bank"]}
    runs = [(ops["ooff"], ops["ostride"]) for mn, ops in seq if mn == "run"]
    half = SMALL.OutBytes // 2
    assert runs == [(0, 64), (33, 64), (half, 64), (half + 33, 64)]
    # tile 1's table streams in during tile 0's first run (right after it), not after it
    kinds = [mn for mn, _ in seq]
    assert kinds[kinds.index("run") + 1] == "load"
    y_def, prog_def, _ = run_graph(DEFAULT, b.graph(t), b.x)  # fits LutBytes=131072: one tile
    assert prog_def.manifest["layers"][0]["m_tiles"] == [[0, 64]] and np.array_equal(y_def, b.vals[t])


def test_table_tiled_over_m_beyond_the_banks_reloads() -> None:
    """With LutBytes=8192 the same table needs six tiles (four output groups of 3, 7,168 B, each): more than the
    two banks, so every tile's tables load again for every run (image), the sets alternating banks in program
    order. Still exact."""
    cfg = HwConfig("small_lut8k", "small with an 8 KiB table buffer", {**SMALL.params, "LutBytes": 8192})
    b = Builder(_inputs(np.random.default_rng(15), 2, (4, 4, 24)), seed=15, lut_bits=8)
    t = b.pq("big", "x", m=64, k=16, v=8, kh=3, pad=1)
    prog = _check(cfg, b, t)
    tiles = prog.manifest["layers"][0]["m_tiles"]
    assert tiles == [[m0, min(64, m0 + 12)] for m0 in range(0, 64, 12)]
    seq = _runs_and_table_loads(prog)
    loads = [ops for mn, ops in seq if mn == "load"]
    assert len(loads) == 2 * len(tiles)
    assert [ld["bank"] for ld in loads] == [i % 2 for i in range(len(loads))]
    shapes = [ops for mn, ops in seq if mn == "shape"]
    assert [s["bank"] for s in shapes] == [ld["bank"] for ld in loads]
    half = cfg.OutBytes // 2  # the second image's outputs in the output buffer's second half
    assert [ops["ooff"] for mn, ops in seq if mn == "run"] == [m0 for m0, _ in tiles] + [half + m0 for m0, _ in tiles]


def test_linear_column_tiled_over_c_chains_its_runs() -> None:
    """A 600-element column (c = 150 subspaces of 4 > CMax = 32 of small) is tiled over c: slices of 32
    subspaces (128 bytes, whole bus words), each loaded to act byte 0 with its own prototypes and table; per
    image the five runs chain their accumulators (dst = none, then acc = 1; only the first loads a bias), the
    last writes the outputs. Three images, exact against the one-piece reference."""
    b = Builder(_inputs(np.random.default_rng(20), 3, (1, 1, 600)), seed=20)
    t = b.pq("fc", "x", m=10, k=8, v=4)
    prog = _check(SMALL, b, t)
    lay = prog.manifest["layers"][0]
    assert lay["c_tiles"] == [[0, 32], [32, 64], [64, 96], [96, 128], [128, 150]] and lay["m_tiles"] == [[0, 10]]
    runs = [isa_decode(w).ops for w in prog.words if isa_decode(w).mnemonic == "run"]
    none = SPEC.enums["target"]["none"]
    assert [(r["n"], r["dst"], r["acc"]) for r in runs] == [(1, none, 0), *[(1, none, 1)] * 3, (1, 0, 1)] * 3
    shapes = [isa_decode(w).ops for w in prog.words if isa_decode(w).mnemonic == "shape"]
    assert [(s["c"], s["d"]) for s in shapes[:5]] == [(32, 128)] * 4 + [(22, 88)]
    bias = SPEC.enums["buffer"]["bias"]
    assert sum(isa_decode(w).mnemonic == "load" and isa_decode(w).ops["buf"] == bias for w in prog.words) == 3


def test_linear_tiled_over_c_and_m() -> None:
    """With LutBytes=4096 the table of each 32-subspace slice (16 groups x 8 x 14 output groups x 8 B) is tiled
    over m too: for each m tile a chain over the c tiles, exact."""
    cfg = HwConfig("small_lut4k", "small with a 4 KiB table buffer", {**SMALL.params, "LutBytes": 4096})
    b = Builder(_inputs(np.random.default_rng(21), 2, (1, 1, 300)), seed=21)
    t = b.pq("fc", "x", m=40, k=8, v=4)
    prog = _check(cfg, b, t)
    lay = prog.manifest["layers"][0]
    assert len(lay["c_tiles"]) == 3 and len(lay["m_tiles"]) > 1
    runs = [isa_decode(w).ops for w in prog.words if isa_decode(w).mnemonic == "run"]
    assert len(runs) == 2 * len(lay["m_tiles"]) * 3
    assert sorted({r["ooff"] for r in runs if r["dst"] == 0}) == [m0 for m0, _ in lay["m_tiles"]]


def test_tables_beyond_buffers_name_op_and_buffer() -> None:
    """Tiling over m stops at one output group: a table whose single group of NOUT outputs does not fit is
    refused (tiling over c is not built), naming the op, the bytes and the buffer."""
    cfg = HwConfig("small_lut1k", "small with a 1 KiB table buffer", {**SMALL.params, "LutBytes": 1024})
    b = Builder(_inputs(np.random.default_rng(14), 1, (4, 4, 24)), seed=14, lut_bits=8)
    t = b.pq("big", "x", m=64, k=16, v=8, kh=3, pad=1)
    with pytest.raises(backend.CompileError, match=r"layer 0 \(big .*the table of even 3 output\(s\) .* needs 1792 "
                                                   r"bytes, more than buffer 'lut'.*tiling over c is not supported"):
        backend.emit_graph(cfg, b.graph(t), b.x)


@pytest.mark.parametrize(("m", "blocks"), [(40, [[0, 24], [24, 40]]), (64, [[0, 24], [24, 48], [48, 64]])])
def test_pool_of_a_fmap_beyond_the_act_buffer_in_channel_blocks(m: int, blocks: list[list[int]]) -> None:
    """A 12x12xm conv output (5,760 or 9,216 B > ActBytes=4096 of small) read only by a global pool is stored
    channel-blocked: blocks of 24 channels (whole bus words and output groups of 3; 144*24 = 3,456 B fits the
    act bank, 48 would not), the conv's table tiled into the same blocks (each block's run dense, stored at
    byte c0*144 of the image), the pool loading, pooling and storing one block at a time (its channels at
    their offset). Two images; exact against the reference."""
    b = Builder(_inputs(np.random.default_rng(16 + m), 2, (12, 12, 8)), seed=16)
    c = b.pq("conv", "x", m=m, k=8, v=8, kh=3, pad=1)
    t = b.pool("gap", c)
    prog = _check(SMALL, b, t)
    conv, pool = prog.manifest["layers"]
    assert conv["m_tiles"] == blocks and conv["channel_blocked"] and pool["channel_blocks"] == blocks
    conv_base, pool_base = conv["out_addr"], pool["out_addr"]
    stride_in = prog.manifest["memory"]["tensors"][c]["stride"]
    stride_out = prog.manifest["memory"]["tensors"][t]["stride"]
    ins = [isa_decode(w) for w in prog.words]
    act, loads = SPEC.enums["buffer"]["act"], []
    for a, q in enumerate(ins):
        if q.mnemonic == "pool":
            ld = next(x for x in reversed(ins[:a]) if x.mnemonic == "load" and x.ops["buf"] == act)
            st = next(x for x in ins[a:] if x.mnemonic == "store")
            loads.append((ld.ops["addr"] - conv_base, ld.ops["nbytes"], st.ops["addr"] - pool_base, st.ops["nbytes"]))
    assert loads == [(im * stride_in + c0 * 144, (c1 - c0) * 144, im * stride_out + c0, c1 - c0)
                     for im in range(2) for c0, c1 in blocks]
    assert [q.ops["m"] for q in ins if q.mnemonic == "shape"][:len(blocks)] == [c1 - c0 for c0, c1 in blocks]


def test_pool_beyond_act_buffer_read_by_another_op_is_refused() -> None:
    """The blocked layout is only for a fmap the pool alone reads: a conv output that an add reads too is
    refused, naming the pool, the bytes and why."""
    b = Builder(_inputs(np.random.default_rng(17), 1, (12, 12, 8)), seed=17)
    c = b.pq("conv", "x", m=40, k=8, v=8, kh=3, pad=1)
    b.add("res", c, c)  # a second reader of the conv's output
    t = b.pool("gap", c)
    with pytest.raises(backend.CompileError, match=r"layer 2 \(gap pool\): global pooling needs the whole fmap "
                                                   r"12x12x40 = 5760 bytes in buffer 'act'.*only when a PQ conv writes "
                                                   r"it for the pool alone"):
        backend.emit_graph(SMALL, b.graph(t), b.x)


def test_zoo_kws_runs_with_tiled_tables_and_a_blocked_pool(tmp_path: Path) -> None:
    """The zoo's KWS (untrained, random inputs, its host layers) on config default: layers.15's table (131,712
    B at 16 bits > 131,072) and its 5x25x196 output (24,500 B > ActBytes=16384) were refused; now the conv
    runs as two blocks of 128 and 68 channels (its table tiled the same way) and the pool pools them one at
    a time. The compiler's check (quantized torch model == golden simulator, bit for bit) passes."""
    from pqcompile.cli import compile_model
    from pqcompile.options import BuildConfig
    from pqtrain import zoo
    from pqtrain.cli import main as pqtrain_main

    model = tmp_path / "kws.pt"
    assert pqtrain_main(["init", "--model", "kws", "-o", str(model)]) == 0
    man = compile_model(str(model), str(tmp_path / "kws"), BuildConfig(
        config="default", inputs="random", count=2, host_layers=tuple(zoo.HOST_LAYERS["kws"])), quiet=True)
    by = {lay["name"]: lay for lay in man["layers"]}
    assert by["layers.15"]["m_tiles"] == [[0, 128], [128, 196]] and by["layers.15"]["channel_blocked"]
    assert by["layers.18"]["channel_blocks"] == [[0, 128], [128, 196]]
    assert all(lay.get("m_tiles", [[0, 0]]) == [[0, lay["m"]]] for name, lay in by.items()
               if lay["kind"] == "conv" and name != "layers.15")


def test_pool_beyond_act_buffer() -> None:
    g = ir.Graph("p", {"x": ir.TensorInfo("x", (32, 32, 8), 1.0, 8), "y": ir.TensorInfo("y", (1, 1, 8), 1.0, 8)},
                 [ir.PoolOp("gap", "x", "y", ir.Post(1, 10, False, 8))], "x", "y")
    with pytest.raises(backend.CompileError, match=r"layer 0 \(gap pool\): global pooling needs the whole fmap "
                                                   r"32x32x8 = 8192 bytes in buffer 'act'"):
        backend.emit_graph(SMALL, g, np.zeros((1, 32, 32, 8), np.int64))
    backend.emit_graph(DEFAULT, g, np.zeros((1, 32, 32, 8), np.int64))


def test_bad_graphs_and_inputs() -> None:
    b, out = _mini_resnet()
    g = b.graph(out)
    with pytest.raises(backend.CompileError, match=r"inputs must be \[n, 8, 8, 3\]"):
        backend.emit_graph(SMALL, g, np.zeros((2, 8, 8, 4), np.int64))
    with pytest.raises(backend.CompileError, match="int8"):
        backend.emit_graph(SMALL, g, np.full((1, 8, 8, 3), 200))
    g2 = ir.Graph("bad", g.tensors, [g.ops[1], g.ops[0], *g.ops[2:]], "x", out)
    with pytest.raises(backend.CompileError, match=r"layer 0 \(body0\): input 'stem.out' is not computed"):
        backend.emit_graph(SMALL, g2, b.x)
    g3 = ir.Graph("bad", g.tensors, [], "x", out)
    with pytest.raises(backend.CompileError, match="nothing to compile"):
        backend.emit_graph(SMALL, g3, b.x)


# ------------------------------------------------------------------------------------------------------------
# the MLP path and the report
# ------------------------------------------------------------------------------------------------------------
def test_shipped_mlp_build() -> None:
    """models/digits_mlp.pt through the front end and the back end: the instruction stream of a chain of
    linear ops (1 + per layer (3 table loads, shape, quant, 3 per column tile, stamp) + end) and the integer
    reference's outputs. Input and output are pinned, so with two layers nothing is reused."""
    from pqcompile import graph
    from pqmodel.data import load_digits_split
    from pqmodel.model import load as load_model

    model, arch, _ = load_model(ROOT / "models" / "digits_mlp.pt")
    x_tr, _, x_te, _ = (np.asarray(t) for t in load_digits_split())
    for config, n in (("default", 450), ("small", 40)):
        cfg = SPEC.config(config)
        fe = graph.build_graph(arch, model.state_dict(), x_tr[:256], cfg)
        x = fe.quantize_input(x_te[:n])
        prog = backend.emit_graph(cfg, fe.graph, x, on_chip=False)  # every op loads and stores
        tiles = [-(-n // pq.tile_columns(cfg, fe.graph.tensors[op.inp].size, op.m,
                                                  n)) for op in fe.graph.ops]
        kept = backend.emit_graph(cfg, fe.graph, x)
        # one tile each (config small, 40 digits): the hidden layer's result stays in act bank 1, its store
        # and the next layer's load are gone; tiled (default, 450 digits): nothing is kept
        assert kept.manifest["memory"]["on_chip"] == ({"layers.0": "act1"} if tiles == [1, 1] else {})
        assert len(kept.words) == len(prog.words) - (2 if tiles == [1, 1] else 0)
        assert np.array_equal(backend.read_output(kept.manifest, backend.simulate(cfg, kept).mem),
                              backend.read_output(prog.manifest, backend.simulate(cfg, prog).mem))
        assert len(prog.words) == 1 + sum(5 + 3 * t + 1 for t in tiles) + 1
        ops = [w & 0xF for w in prog.words]
        per_layer = [[1, 1, 1, 3, 4] + [1, 5, 2] * t + [6] for t in tiles]
        for j in range(1, len(per_layer)):  # the schedule: a layer's 3 table loads follow the previous first run
            del per_layer[j][:3]
            per_layer[j - 1][7:7] = [1, 1, 1]
        for j in range(1, len(per_layer)):  # and its shape and quant go before the previous layer's stamp
            per_layer[j - 1][-1:-1] = per_layer[j][:2]
            del per_layer[j][:2]
        assert ops == [6, *sum(per_layer, []), 15]
        banks = [(w >> 7) & 1 for w in prog.words if w & 0xF == 1 and (w >> 4) & 7 < 3]
        assert banks == sum(([j % 2] * 3 for j in range(len(tiles))), [])  # table loads alternate banks
        y = backend.read_output(prog.manifest, backend.simulate(cfg, prog).mem)
        ref = graph.reference(fe.graph, x, cfg.AccW).reshape(n, -1)
        assert y.shape == (n, 10) and np.array_equal(y, ref)
        mem = prog.manifest["memory"]
        assert mem["arena_peak"] == mem["arena_without_reuse"]  # input and output are pinned
        out = prog.manifest["output"]
        assert out["stride"] == 10 and out["shape"] == [n, 10]


def test_report_rows_and_text(tmp_path: Path) -> None:
    b, out = _mini_resnet()
    g = b.graph(out)
    g.host_prefix, g.host_suffix = ["layers.0"], ["layers.9"]
    prog = backend.emit_graph(SMALL, g, b.x)
    man = backend.write_build(tmp_path / "b", SMALL, prog)
    rows = backend.report_rows(man)
    assert [r["op"] for r in rows] == ["stem", "body0", "body1", "short", "add", "gap", "fc", "total"]
    stem = rows[0]
    assert (stem["kind"], stem["in"], stem["out"], stem["K"], stem["v"], stem["c"], stem["m"]) == \
        ("conv", "8x8x3", "8x8x8", 8, 6, 5, 8)
    # prototypes: ceil(5/2) * ceil(8/3) * ceil(6/2) = 27 rows of 16 bytes (config small's 2 x 3 x 2 rows)
    # table: c=5 in 3 groups of 2 lanes, k=8, m=8 in 3 output groups: rows of 2 lane words of 3 one-byte
    # entries (4 bytes each)
    assert SMALL.lut_lane_bytes == 4
    assert stem["table B"] == 27 * 16 + 3 * 8 * 3 * 2 * 4 + 4 * 8
    assert stem["loaded B"] == stem["table B"] + 2 * 8 * 8 * 3 and stem["stored B"] == 2 * 8 * 8 * 8
    add = rows[4]
    assert add["loaded B"] == 2 * 2 * 4 * 4 * 16 and add["stored B"] == 2 * 4 * 4 * 16
    stamps = backend.read_stamps(man, backend.simulate(SMALL, prog).mem)
    assert [r["pred. cycles"] for r in rows[:-1]] == [b1 - a1 for a1, b1 in zip(stamps[:-1], stamps[1:], strict=True)]
    assert all(r["pred. cycles"] > 0 for r in rows)
    tot = rows[-1]
    assert tot["loaded B"] == sum(r["loaded B"] for r in rows[:-1])
    assert tot["pred. cycles"] == man["expected"]["sim_cycle_estimate"]
    text = backend.format_report(man)
    assert "host layers: before the accelerator ['layers.0'], after it ['layers.9']" in text
    assert "total" in text and "body0" in text and "activations" in text
    exp = np.load(tmp_path / "b" / "expected_output.npy")
    assert np.array_equal(exp.astype(np.int64), b.vals[out].reshape(2, 10))



# ------------------------------------------------------------------------------------------------------------
# the command line on graphs: CNNs, host layers, errors
# ------------------------------------------------------------------------------------------------------------
def _tiny_cnn(tmp_path: Path) -> Path:
    from pqmodel.model import build, save

    arch = {"name": "tiny_cnn", "input_shape": [3, 8, 8], "num_classes": 10, "layers": [
        {"type": "conv2d", "in_channels": 3, "out_channels": 8, "kernel_size": 3, "padding": 1, "bias": False},
        {"type": "batchnorm2d", "num_features": 8}, {"type": "relu"},
        {"type": "pq_conv2d", "in_channels": 8, "out_channels": 8, "kernel_size": 3, "stride": 2, "padding": 1,
         "k": 8, "v": 9, "metric": "l2", "bias": True}, {"type": "relu"},
        {"type": "global_avgpool"}, {"type": "linear", "in_features": 8, "out_features": 10}]}
    torch.manual_seed(0)
    path = tmp_path / "tiny_cnn.pt"
    save(build(arch), arch, path, {})
    return path


def test_cli_cnn_with_host_layers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from pqcompile import cli

    model = _tiny_cnn(tmp_path)
    out = tmp_path / "b"
    args = [str(model), "-o", str(out), "--inputs", "random", "--count", "3", "--seed", "5"]
    assert cli.main([*args, "--host-layers", "layers.0,layers.1", "layers.2", "layers.6"]) == 0
    text = capsys.readouterr().out
    assert "bit-exact" in text and "host layers: before the accelerator ['layers.0', 'layers.1', 'layers.2'], " \
        "after it ['layers.6']" in text
    assert "layers.3" in text and "layers.5" in text and "total" in text
    man = json.loads((out / "manifest.json").read_text())
    assert [lay["kind"] for lay in man["layers"]] == ["conv", "pool"]
    assert man["host_layers"] == {"prefix": ["layers.0", "layers.1", "layers.2"], "suffix": ["layers.6"]}
    assert man["input"]["tensor"] == [8, 8, 8] and man["output"]["shape"] == [3, 8]
    assert np.load(out / "inputs.npy").shape == (3, 8, 8, 8) and man["build_config"]["inputs"] == "random"
    # the same seed gives the same build
    out2 = tmp_path / "b2"
    assert cli.main([*args[:2], str(out2), *args[3:], "--host-layers", "layers.0", "layers.1", "layers.2",
                     "layers.6", "-q"]) == 0
    assert (out2 / "mem.hex").read_bytes() == (out / "mem.hex").read_bytes()


@pytest.mark.parametrize(("extra", "msg"), [
    (["--host-layers", "layers.99"], r"host layer 'layers\.99' is not a top-level layer"),
    (["--host-layers", "nonsense"], r"host layer 'nonsense' is not a top-level layer"),
    (["--host-layers", "layers.0", "layers.1", "layers.2", "layers.5"], r"leading prefix and/or a trailing suffix"),
    ([], r"layers\.0 \(conv2d\): not supported by the accelerator.*--host-layers"),
    (["--inputs", "digits-test", "--host-layers", "layers.0", "layers.1", "layers.2", "layers.6"],
     r"--inputs digits-test gives 8x8 digits.*wants \[3, 8, 8\]: pass --inputs FILE\.npy.*or --inputs random"),
    (["--inputs", "WRONG_NPY", "--host-layers", "layers.0", "layers.1", "layers.2", "layers.6"],
     r"expected an array \[n, 3, 8, 8\].*got shape \[4, 64\]"),
], ids=["unknown_name", "not_a_layer", "host_layer_in_the_middle", "no_host_layers", "digits_for_cifar",
        "npy_shape"])
def test_cli_refuses_bad_host_layers_and_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                extra: list[str], msg: str) -> None:
    import re

    from pqcompile import cli

    model = _tiny_cnn(tmp_path)
    np.save(tmp_path / "wrong.npy", np.zeros((4, 64), np.float32))
    extra = [str(tmp_path / "wrong.npy") if e == "WRONG_NPY" else e for e in extra]
    inputs = [] if "--inputs" in extra else ["--inputs", "random"]
    out = tmp_path / "out" / "b"
    assert cli.main([str(model), "-o", str(out), *inputs, "--count", "2", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pqcompile: error:") and re.search(msg, err), err
    assert not out.exists() and not (tmp_path / "out").exists()


def test_cli_digits_cnn(tmp_path: Path) -> None:
    """The shipped digits CNN ([1, 8, 8] inputs from the digits test split): conv, strided conv, flatten-linear,
    all on the accelerator, bit-exact, accuracy close to the float model's."""
    import json

    from pqcompile import cli

    out = tmp_path / "cnn"
    assert cli.main([str(ROOT / "models" / "digits_cnn.pt"), "-o", str(out), "--count", "40", "-q"]) == 0
    man = json.loads((out / "manifest.json").read_text())
    assert [lay["kind"] for lay in man["layers"]] == ["conv", "conv", "flatten-linear"]
    assert man["output"]["shape"] == [40, 10] and man["output"]["stride"] == 10
    assert man["accuracy"]["quantized"] >= man["accuracy"]["float"] - 0.05
    _, mem = pqbuild.load(out)
    res = sim.run(SPEC.config(man["config"]), mem, man["insn_base"])
    assert np.array_equal(backend.read_output(man, res.mem), np.load(out / "expected_output.npy"))


def _pq_cnn(path: Path, tweak: str = "") -> Path:
    """A model the accelerator runs whole (PQ conv + BN + ReLU, pool, PQ classifier), optionally broken."""
    from pqmodel.model import build, save

    arch = {"name": "pq_cnn", "input_shape": [3, 8, 8], "num_classes": 10, "layers": [
        {"type": "pq_conv2d", "in_channels": 3, "out_channels": 8, "kernel_size": 3, "stride": 2, "padding": 1,
         "k": 8, "v": 9, "metric": "l2"}, {"type": "batchnorm2d", "num_features": 8}, {"type": "relu"},
        {"type": "global_avgpool"},
        {"type": "pq_linear", "in_features": 8, "out_features": 10, "k": 8, "v": 4, "metric": "l2"}]}
    torch.manual_seed(0)
    model = build(arch)
    with torch.no_grad():
        if tweak == "nan_weight":
            model.layers[0].weight[0, 0, 0, 0] = float("nan")
        elif tweak == "negative_variance":
            model.layers[1].running_var[3] = -2.0
    save(model, arch, path, {})
    return path


@pytest.mark.parametrize(("case", "msg"), [
    ("seed", r"--seed must be a non-negative integer"),
    ("out_is_file", r"-o .*out: exists and is not a directory; refusing to replace it"),
    ("out_is_other_dir", r"-o .*out: exists and is not an intact pqcompile build \(no manifest\.json .*refusing"),
    ("out_below_file", r"-o .*f/b: .*f is not a directory"),
    ("npy_beyond_float32", r"--inputs .*big\.npy: expected finite float32 numbers"),
    ("npy_complex", r"--inputs .*c\.npy: expected real numbers, got dtype complex"),
    ("nan_weight", r"layers\.0 \(pq_conv2d\): 'layers\.0\.weight' holds NaN or infinite values"),
    ("negative_variance", r"layers\.1 \(batchnorm2d\): 'layers\.1\.running_var' has values <= -eps"),
])
def test_cli_user_errors_exit_2_and_touch_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str,
                                                  msg: str) -> None:
    """User errors end in exit 2 and a message naming the problem, never a traceback, and leave every existing
    file as it was. Before: a negative --seed and -o below a file raised tracebacks; -o naming a file or an
    unrelated directory renamed it away and replaced it by the build (then crashed removing the file); inputs
    beyond float32 and broken weights ended in 'requantization ratio nan', naming no cause."""
    import re

    from pqcompile import cli

    model = _pq_cnn(tmp_path / "m.pt", case if case in ("nan_weight", "negative_variance") else "")
    out = tmp_path / "out"
    args = ["--inputs", "random", "--count", "2"]
    if case == "seed":
        args += ["--seed", "-1"]
    elif case == "out_is_file":
        out.write_text("keep me")
    elif case == "out_is_other_dir":
        out.mkdir()
        (out / "notes.txt").write_text("keep me")
    elif case == "out_below_file":
        (tmp_path / "f").write_text("keep me")
        out = tmp_path / "f" / "b"
    elif case == "npy_beyond_float32":
        x = np.random.default_rng(0).standard_normal((4, 3, 8, 8))
        x[1, 0, 0, 0] = 1e300
        np.save(tmp_path / "big.npy", x)
        args = ["--inputs", str(tmp_path / "big.npy")]
    elif case == "npy_complex":
        np.save(tmp_path / "c.npy", np.ones((4, 3, 8, 8), np.complex64))
        args = ["--inputs", str(tmp_path / "c.npy")]
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert cli.main([str(model), "-o", str(out), *args, "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pqcompile: error:") and re.search(msg, err) and "Traceback" not in err, err
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    assert not [p for p in tmp_path.rglob(".*")], "temporary or renamed files left behind"


def test_unit_summary() -> None:
    """The report's line on the units, from the first to the last stamp record; nothing from records without
    the units' counters (an older build)."""
    pr = {"cycles": [10, 210], "compute_cycles": [0, 100], "load_cycles": [5, 55], "store_cycles": [0, 20],
          "dep_cycles": [1, 11], "fetch_cycles": [0, 30], "rd_bytes": [0, 8], "wr_bytes": [0, 8]}
    assert backend.unit_summary(pr) == (
        "units over 200 cycles: compute busy 100 (50%), load busy 50 (25%), store busy 20 (10%); decode stalled "
        "on dependencies 10 (5%), fetching 30 (15%)")
    assert backend.unit_summary({k: v for k, v in pr.items() if k != "dep_cycles"}) == ""


@pytest.mark.parametrize("config", ["small", "default"])
def test_a_partly_loaded_tensor_is_not_reused(config: str) -> None:
    """A 1x1 stride-2 conv loads only the input rows its window reads (7 of 8): the 3x3 conv after it must load
    the whole tensor again, not take the partial copy left in the act bank (the outputs equal the reference)."""
    b = Builder(_inputs(np.random.default_rng(5), 1, (8, 8, 8)), seed=5)
    s = b.pq("short", "x", m=8, k=8, v=4, kh=1, stride=2)  # the graph input, loaded from memory
    y = b.pq("body", "x", m=8, k=8, v=8, kh=3, stride=2, pad=1)
    out = b.add("add", y, s)
    prog = _check(SPEC.config(config), b, out)
    assert "short.out" in prog.manifest["memory"]["on_chip"]


@pytest.mark.parametrize(("batch", "frm"), [(2, "body0"), (5, "short"), (3, "add"), (1, "gap"), (5, "fc")])
def test_batch_from(batch: int, frm: str) -> None:
    """``emit_graph(batch=B, batch_from=op)``: the mini ResNet over 5 images, the ops before ``op`` one image at
    a time and the rest over each pass's images at once: the one-pass outputs bit for bit; the ops before
    ``op`` load their tables once an image, the others once a pass; a stamp after each op that runs (one per
    image before ``op``, one per pass from it on: the manifest's ``stamps.ops``), and the per-op figures sum
    to the whole run. The tensors the first part hands on hold a pass's images in memory, and the single-image
    part keeps its other results on chip: it stores nothing but them."""
    b, out = _mini_resnet(n=5, seed=13)
    g = b.graph(out)
    whole = backend.emit_graph(SMALL, g, b.x)
    ref = backend.simulate(SMALL, whole)
    prog = backend.emit_graph(SMALL, g, b.x, batch=batch, batch_from=frm)
    res = backend.simulate(SMALL, prog)
    assert res.done and res.err_code == 0
    y = backend.read_output(prog.manifest, res.mem)
    assert np.array_equal(y, backend.read_output(whole.manifest, ref.mem))
    assert np.array_equal(y.reshape(5, -1).astype(np.int64), ref_graph(g, b.x)[out].reshape(5, -1))
    names = [op.name for op in g.ops]
    k = names.index(frm)
    passes = -(-5 // batch)
    sizes = [min(batch, 5 - p0) for p0 in range(0, 5, batch)]
    man = prog.manifest
    assert (man["batch"], man["passes"], man["batch_from"]) == (batch, passes, frm)
    want = [[q, i] for q, nb in enumerate(sizes) for i in [*range(k)] * nb + [*range(k, len(names))]]
    assert man["stamps"]["ops"] == want
    assert man["stamps"]["labels"] == ["start"] + [names[i] for _, i in want]
    insns = [isa_decode(w) for w in prog.words]
    tables = SPEC.enums["buffer"]
    n_proto = sum(q.mnemonic == "load" and q.ops["buf"] == tables["proto"] for q in insns)
    pq = [isinstance(op, ir.PQOp) for op in g.ops]
    assert n_proto == 5 * sum(pq[:k]) + passes * sum(pq[k:])
    perf = backend.op_perf(man, res.mem)
    stamps = pqbuild.read_perf(man, res.mem)
    assert sum(p["predicted_cycles"] for p in perf) == stamps["cycles"][-1] - stamps["cycles"][0]
    handed = backend.handed_on(g, k)
    # the mini ResNet: stem -> body0 -> body1, stem -> short, add(body1, short) -> gap -> fc
    assert handed == {"body0": ["stem.out"], "short": ["stem.out", "body1.out"], "add": ["body1.out", "short.out"],
                      "gap": ["add.out"], "fc": ["gap.out"]}[frm]
    # the first part stores nothing but the tensors it hands on (and a pass's output, whose store may start
    # the next pass): every image of them
    tin = man["memory"]["tensors"]
    windows = _stamp_windows(prog)  # window j >= 1: the instructions of label j's op
    first = [q for j, w in enumerate(windows[1:-1]) if want[j][1] < k for q in w if q.mnemonic == "store"]
    regions = [(tin[t]["addr"], tin[t]["addr"] + tin[t]["bytes"]) for t in [*handed, g.output]]
    assert all(any(lo <= q.ops["addr"] < hi for lo, hi in regions) for q in first)
    for t in handed:
        lo, hi = tin[t]["addr"], tin[t]["addr"] + tin[t]["bytes"]
        assert sum(q.ops["nbytes"] for q in first if lo <= q.ops["addr"] < hi) >= 5 * g.tensors[t].size


@pytest.mark.parametrize("mem_bw", [1, 0])
def test_batch_from_auto(mem_bw: int) -> None:
    """``batch_from="auto"`` (``auto_split``): the candidates are every op batched, one input a pass and each PQ
    op after the first, timed on the cycle model over the first pass's inputs, fastest first; the schedule it
    picks is no slower than the alternatives simulated here, and the program is that schedule's, bit-exact."""
    b, out = _mini_resnet(n=5, seed=13)
    g = b.graph(out)
    frm, batch, timed = backend.auto_split(SMALL, g, b.x, 4, mem_bw)
    pq_names = [op.name for op in g.ops[1:] if isinstance(op, ir.PQOp)]
    assert sorted(w for _, w in timed) == sorted(["every op batched", "one input a pass", *pq_names])
    assert [c for c, _ in timed] == sorted(c for c, _ in timed)

    def cycles(**kw: Any) -> float:  # a pass of the first 4 inputs on the cycle model, per input
        p = backend.emit_graph(SMALL, g, b.x[:4], **kw)
        return sim.run(SMALL, p.mem, p.insn_base, mem_bw=mem_bw).cycles / 4

    best = cycles(batch=batch, batch_from=frm)
    assert best == timed[0][0]
    assert best <= min(cycles(batch=4), cycles(batch=1), cycles(batch=4, batch_from=pq_names[-1]))
    prog = backend.emit_graph(SMALL, g, b.x, batch=4, batch_from="auto", mem_bw=mem_bw)
    assert prog.words == backend.emit_graph(SMALL, g, b.x, batch=batch, batch_from=frm).words
    assert (prog.manifest["batch"], prog.manifest.get("batch_from")) == (batch, frm)
    res = backend.simulate(SMALL, prog)
    assert np.array_equal(backend.read_output(prog.manifest, res.mem).reshape(5, -1).astype(np.int64),
                          ref_graph(g, b.x)[out].reshape(5, -1))
    assert backend.auto_split(SMALL, g, b.x[:1], 4, mem_bw) == (None, 1, [])


def test_op_moves() -> None:
    """``op_moves``: each op taken out and put back anywhere after the ops it reads and before the ops that read
    it, never across ``batch_from`` (worked out by hand on the mini ResNet: only the block's second conv and its
    shortcut can move; ``short after body0`` is ``body1 after short`` again)."""
    b, _ = _mini_resnet(n=2)
    g = b.graph("fc.out")
    both = [(("stem", "body0", "short", "body1", "add", "gap", "fc"), "body1 after short"),
            (("stem", "short", "body0", "body1", "add", "gap", "fc"), "short after stem")]
    assert backend.op_moves(g) == both
    assert backend.op_moves(g, "add") == both  # every move stays before add
    assert backend.op_moves(g, "body1") == []  # body1 stays; short would cross it
    assert backend.op_moves(g, "short") == []
    first = ir.Graph(g.name, g.tensors, [g.ops[i] for i in (0, 3, 1, 2, 4, 5, 6)], g.input, g.output)
    assert [w for _, w in backend.op_moves(first)] == ["short after body0", "short after body1"]


def _block_then_conv(n: int, seed: int = 3) -> tuple[Builder, str]:
    """A down-sampling residual block (strided conv, conv, 1x1 shortcut, add) and a conv after it: the order
    of the shortcut decides which op's compute the next op's table loads under."""
    b, r = _stem_and_block(n, seed, short_k=16)
    y = b.pq("next", r, m=16, k=16, v=8, kh=3, pad=1)
    return b, b.pq("fc", b.pool("gap", y), m=10, k=16, v=8, relu=False)


def test_order_ops() -> None:
    """``order_ops`` (``--op-order auto``) at 1 byte a cycle: the block's shortcut goes before its second conv,
    which then carries the next conv's table; the order it returns is the fastest of the model's and every one
    move away, timed here on the cycle model, and its program's outputs are the integer reference's."""
    b, out = _block_then_conv(n=2)
    g = b.graph(out)

    def cycles(order: Sequence[str], mem_bw: int = 1) -> float:
        h = ir.Graph(g.name, g.tensors, [next(op for op in g.ops if op.name == n) for n in order], g.input, out)
        p = backend.emit_graph(SMALL, h, b.x, mem_bw=mem_bw)
        return sim.run(SMALL, p.mem, p.insn_base, mem_bw=mem_bw).cycles / 2

    model = [op.name for op in g.ops]
    h, moved, timed = backend.order_ops(SMALL, g, b.x, mem_bw=1)
    assert moved == ["body1 after short"]
    assert [op.name for op in h.ops] == ["stem", "body0", "short", "body1", "add", "next", "gap", "fc"]
    assert timed == [cycles(model), cycles([op.name for op in h.ops])]
    assert timed[1] < timed[0]
    assert timed[1] == min(cycles(order) for order, _ in backend.op_moves(g))
    prog = backend.emit_graph(SMALL, h, b.x, mem_bw=1)
    res = backend.simulate(SMALL, prog)
    assert np.array_equal(backend.read_output(prog.manifest, res.mem).reshape(2, -1).astype(np.int64),
                          ref_graph(g, b.x)[out].reshape(2, -1))
    assert [lay["name"] for lay in prog.manifest["layers"]] == [op.name for op in h.ops]
    # the pick depends on the bandwidth: at 8 bytes a cycle another order is the fastest one move away
    h8, moved8, timed8 = backend.order_ops(SMALL, g, b.x, mem_bw=8)
    orders8 = [model] + [list(order) for order, _ in backend.op_moves(g)]
    assert len(moved8) == 1 and moved8 != moved
    assert timed8[-1] == cycles([op.name for op in h8.ops], 8) == min(cycles(o, 8) for o in orders8)
    chain = ir.Graph(g.name, g.tensors, g.ops[:3], g.input, g.ops[2].out)  # nothing can move, nothing simulated
    assert backend.order_ops(SMALL, chain, b.x) == (chain, [], [])


def test_mirror_banks() -> None:
    """``mirror_banks`` swaps act banks 0 and 1 where an instruction names one, nothing else."""
    act, lut = SPEC.enums["buffer"]["act"], SPEC.enums["buffer"]["lut"]
    out, a0, a1 = (SPEC.enums["target"][t] for t in ("out", "act0", "act1"))
    cases = [(PInsn("load", {"buf": act, "bank": 0, "nbytes": 8, "addr": 64}), {"bank": 1}),
             (PInsn("load", {"buf": lut, "bank": 1, "nbytes": 8, "addr": 64}), {}),
             (PInsn("run", {"src": 1, "dst": a0, "n": 4}), {"src": 0, "dst": a1}),
             (PInsn("run", {"src": 0, "dst": out, "n": 4}), {"src": 1}),
             (PInsn("add", {"src": 1, "dst": out, "n": 4, "ma": 1, "mb": 1}), {"src": 0}),
             (PInsn("pool", {"src": 0, "dst": a1}), {"src": 1, "dst": a0}),
             (PInsn("store", {"half": 0, "nbytes": 8, "addr": 64}), {})]
    for q, changed in cases:
        m = backend.mirror_banks(q)
        assert (m.mnemonic, m.ops) == (q.mnemonic, {**q.ops, **changed})
        assert backend.mirror_banks(m).ops == q.ops


def test_choose_mirror() -> None:
    """``choose_mirror``: the stream with every other one-input run's act banks swapped, timed against the plain
    one on the cycle model over the first two passes (the mini ResNet over 4 images, 2 a pass, from body1, 2
    bytes a cycle, where the swap is faster); the second image's input goes into the other bank; the outputs
    are the integer reference's; one pass of one input has nothing to mirror."""
    b, out = _mini_resnet(n=4, seed=13)
    g = b.graph(out)
    flip, timed = backend.choose_mirror(SMALL, g, b.x, 2, "body1", mem_bw=2)

    def emit(mirror: bool) -> tuple[backend.Program, float]:
        p = backend.emit_graph(SMALL, g, b.x, batch=2, batch_from="body1", mem_bw=2, mirror=mirror)
        return p, sim.run(SMALL, p.mem, p.insn_base, mem_bw=2).cycles / 4

    (plain, c0), (mirrored, c1) = emit(False), emit(True)
    assert timed == [c0, c1] and c1 < c0 and flip
    assert mirrored.manifest["mirror"] is True and "mirror" not in plain.manifest
    act = SPEC.enums["buffer"]["act"]
    base, stride = mirrored.manifest["input"]["addr"], mirrored.manifest["input"]["stride"]

    def input_banks(p: backend.Program) -> list[int]:  # the act bank each image's input loads into
        insns = [isa_decode(w) for w in p.words]
        loads = {q.ops["addr"]: q.ops["bank"] for q in insns if q.mnemonic == "load" and q.ops["buf"] == act}
        return [loads[base + j * stride] for j in range(4)]

    assert input_banks(plain) == [0, 0, 0, 0]
    assert input_banks(mirrored) == [0, 1, 0, 1]
    res = backend.simulate(SMALL, mirrored)
    assert np.array_equal(backend.read_output(mirrored.manifest, res.mem).reshape(4, -1).astype(np.int64),
                          ref_graph(g, b.x)[out].reshape(4, -1))
    assert backend.choose_mirror(SMALL, g, b.x[:1], 1) == (False, [])


def test_batch_from_refuses() -> None:
    """``batch_from`` must name an op after the first one whose part computes the graph output."""
    b, out = _mini_resnet(n=2, seed=1)
    g = b.graph(out)
    with pytest.raises(backend.CompileError, match="no such op; the ops are stem, body0"):
        backend.emit_graph(SMALL, g, b.x, batch=2, batch_from="nope")
    with pytest.raises(backend.CompileError, match="is the first op"):
        backend.emit_graph(SMALL, g, b.x, batch=2, batch_from="stem")
    g2 = ir.Graph(g.name, g.tensors, g.ops, g.input, g.ops[2].out)
    with pytest.raises(backend.CompileError, match="computed before it"):
        backend.emit_graph(SMALL, g2, b.x, batch=2, batch_from="add")
