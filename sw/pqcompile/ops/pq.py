"""The PQ layer (``pq_linear``, ``pq_conv2d``; instruction ``run``): nearest-prototype encoding of each
column and the sum of the table rows it selects. A linear layer is a conv whose window is its whole input
(a (1, 1, d) vector, or the fmap before a flatten); the back end runs it as ``linear`` (all images as
columns, in column tiles), ``flatten-linear`` (images stacked as one conv-mode fmap) or ``conv`` (per image,
in bands of output rows)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .. import ir, kernels, layout, quantize
from ..errors import CompileError
from ..fgraph import Extraction, FOp
from ..isa import field_max
from ..onchip import out_halves
from ..plan import OpPlan, PInsn, Ref, buffer, channel_blocks, check_fits, check_post, quant, tensor
from ..spec import HwConfig, load
from .base import OpHandler, QuantContext, register


@dataclass
class FPQ(FOp):
    """A PQ layer as a conv on a channels-last tensor (a linear layer's window is the whole fmap)."""

    name: str
    pq_kind: str  # "pq_conv2d" | "pq_linear"
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

    def kind(self) -> str:
        return self.pq_kind


@dataclass
class Band:
    """Output rows [r0, r1) of a conv computed from input rows [a, b) (loaded as the fmap), with ``pad_t``
    zero rows above them inside the band's window."""

    r0: int
    r1: int
    a: int
    b: int
    pad_t: int


def conv_out_shape(op: ir.PQOp, h: int, w: int) -> tuple[int, int]:
    return (h + 2 * op.pad - op.kh) // op.stride + 1, (w + 2 * op.pad - op.kw) // op.stride + 1


def tile_columns(cfg: HwConfig, d: int, m: int, n: int, name: str = "") -> int:
    """Columns per tile of a linear op: as many as the activation buffers hold, a multiple of the bus width
    in bytes (so every tile's address stays bus aligned) unless one tile holds all ``n``."""
    fit = min(cfg.ActBytes // d, cfg.OutBytes // m)
    if n <= fit:
        return n
    t = fit - fit % cfg.bus_bytes
    if t < 1:
        raise CompileError(f"layer {name}: {cfg.bus_bytes} columns do not fit the activation buffers")
    return t


def conv_bands(cfg: HwConfig, op: ir.PQOp, h: int, w: int, ch: int, where: str = "",
               m_out: Sequence[int] = (), out_bytes: int | None = None) -> list[Band]:
    """Split a conv's output rows into bands whose input rows (halo included) fit the act buffer and whose
    outputs fit the output buffer; every band but the first starts at bus-aligned input and output byte
    offsets. A band reads rows beyond its loaded ones only where they are the fmap's bottom padding.

    With padding >= kernel some output rows see only zero padding: a band whose windows all lie in the top
    padding still loads one (unread) fmap row, and no band starts inside the bottom padding (its fmap would
    be empty and ``pad_t`` cannot reach below it), so such rows join the band above them.

    ``m_out``: the channels of the output as the output buffer holds it and the stores write it, one count
    per store of a band (a channel-blocked output, :func:`pqcompile.plan.channel_blocks`: one per block);
    default the op's m. ``out_bytes``: the output bytes a band may have (default: the output buffer's)."""
    oh, ow = conv_out_shape(op, h, w)
    s, p, kh = op.stride, op.pad, op.kh
    outs = [ow * mm for mm in (m_out or [op.m])]
    row_in, row_out, bus = w * ch, max(outs), cfg.bus_bytes
    cap = cfg.OutBytes if out_bytes is None else out_bytes

    def rows_in(r0: int, r1: int) -> tuple[int, int]:
        a = max(0, r0 * s - p)  # < h: a band never starts inside the bottom padding
        return a, max(a + 1, min(h, (r1 - 1) * s - p + kh))

    bands: list[Band] = []
    r0 = 0
    while r0 < oh:
        for r1 in range(oh, r0, -1):
            a, b = rows_in(r0, r1)
            if (b - a) * row_in > cfg.ActBytes or (r1 - r0) * row_out > cap:
                continue
            if r1 < oh and (r1 * s - p >= h or any((r1 * ro) % bus for ro in outs)
                            or (rows_in(r1, r1 + 1)[0] * row_in) % bus):
                continue
            bands.append(Band(r0, r1, a, b, a - (r0 * s - p)))
            r0 = r1
            break
        else:
            raise CompileError(
                f"{where}: no band of output rows from row {r0} fits: one input row is {row_in} bytes "
                f"(kernel {op.kh} rows, act buffer ActBytes={cfg.ActBytes}), one output row {row_out} bytes "
                f"(OutBytes={cfg.OutBytes}), bands must start at {bus}-byte aligned rows")
    return bands


def _band_input(insns: list[PInsn], op: ir.PQOp, bd: Band, geom: tuple[int, int, int], at: int,
                state: tuple[int, int] | None) -> tuple[int, int]:
    """Append band ``bd``'s ``fmap`` and ``conv`` (where they differ from ``state``: the last band's rows and
    pad_t) and the load of its input rows (the image at byte ``at`` of the input); ``geom``: (w, ch, out_w).
    Returns the new state."""
    w, ch, ow = geom
    if state is None or state[0] != bd.b - bd.a:
        insns.append(PInsn("fmap", {"h": bd.b - bd.a, "w": w, "ch": ch}))
    if state is None or state[1] != bd.pad_t:
        insns.append(PInsn("conv", {"stride": op.stride, "kh": op.kh, "kw": op.kw, "pad_t": bd.pad_t,
                                    "pad_l": op.pad, "out_w": ow}))
    insns.append(PInsn("load", {"buf": buffer("act"), "nbytes": (bd.b - bd.a) * w * ch,
                                "addr": tensor(op.inp, at + bd.a * w * ch)}))
    return bd.b - bd.a, bd.pad_t


def _group_step(bus: int, *sizes: int) -> int:
    """The smallest number of images whose bytes are a whole number of bus words for every size."""
    step = 1
    for s in sizes:
        step = math.lcm(step, bus // math.gcd(s, bus))
    return step


def flatten_group(cfg: HwConfig, g: ir.Graph, op: ir.PQOp, n: int) -> int:
    """Images per conv-mode run of a flatten-linear op on dense tensors (0: one image at a time)."""
    h, w, ch = g.tensors[op.inp].shape
    size = h * w * ch
    if h > field_max("conv", "stride"):  # the images are stacked as fmap rows and the window steps by h
        return 0
    fit = min(cfg.ActBytes // size, cfg.OutBytes // op.m, (field_max("fmap", "h") + 1) // h - 1)
    if n <= fit:
        return n
    grp = fit - fit % _group_step(cfg.bus_bytes, size, op.m)
    return max(grp, 0)


packs = layout.packs  # the one rule, shared with plan.channel_blocks


def table_bytes(cfg: HwConfig, c: int, k: int, v: int, m: int, pack: bool = False) -> dict[str, int]:
    """Bytes of a PQ op's tables, by buffer: prototype rows and table rows (:mod:`pqcompile.layout`; ``pack``:
    :func:`packs`), bias [m] (the spec's element sizes, docs/isa.md "On-chip buffers")."""
    return {"proto": layout.proto_bytes(cfg, c, k, v), "lut": layout.lut_bytes(cfg, c, k, m, pack),
            "bias": m * cfg.elem_bytes("bias")}


def m_tiles(cfg: HwConfig, c: int, k: int, m: int, pack: bool, where: str = "") -> list[tuple[int, int]]:
    """The output ranges [m0, m1) of a PQ op's table tiles: the whole [0, m) when its table fits a bank of the
    table buffer, else the fewest tiles of one size (whole groups of NOUT outputs, the last one smaller) whose
    tables [c][k][m1-m0] do. Each tile is a table set of its own (``shape`` with m = m1 - m0) whose ``run``
    writes its outputs at ``ooff`` = m0, ``ostride`` = m: into their channels of the op's channels-last
    result."""
    if layout.lut_bytes(cfg, c, k, m, pack) <= cfg.lut_cap:
        return [(0, m)]
    for t in range(2, m + 1):
        per = -(-m // t)  # outputs a tile, rounded up to whole output groups
        size = -(-per // cfg.NOUT) * cfg.NOUT
        if layout.lut_bytes(cfg, c, k, size, pack) <= cfg.lut_cap:
            return [(m0, min(m, m0 + size)) for m0 in range(0, m, size)]
    one = min(m, cfg.NOUT)
    raise CompileError(f"{where}: the table of even {one} output(s) (c={c} subspaces x k={k} prototypes) needs "
                       f"{layout.lut_bytes(cfg, c, k, one, pack)} bytes, more than buffer 'lut' of config "
                       f"'{cfg.name}' holds (whole rows of LutBytes={cfg.lut_cap}); tiling over c is not supported")


def c_tiles(cfg: HwConfig, op: ir.PQOp, d: int, where: str = "") -> list[tuple[int, int]]:
    """The subspace ranges [g0, g1) of a linear PQ op's column tiled over c: the whole [0, c) when one run can
    take the column (c <= CMax, the column within the act buffer and the shape.d field, the prototypes and
    one output group's table within their buffers), else the fewest tiles of one size whose runs can, each
    starting at a bus-aligned byte of the column (g0*v a whole number of bus words). The runs of a column's
    tiles chain their accumulators (``run dst=none`` holds them, ``run acc=1`` starts from them), so the
    result is exactly the one run's."""
    pack = packs(cfg, op.lut)
    c, k, v = op.c, op.k, op.v

    def fits(ct: int) -> bool:
        return (ct <= cfg.CMax and ct * v <= min(cfg.ActBytes, field_max("shape", "d"))
                and layout.proto_bytes(cfg, ct, k, v) <= cfg.proto_cap
                and layout.lut_bytes(cfg, ct, k, min(op.m, cfg.NOUT), pack) <= cfg.lut_cap)

    if fits(c) and d <= cfg.ActBytes:
        return [(0, c)]
    unit = cfg.bus_bytes // math.gcd(cfg.bus_bytes, v)  # subspaces of a whole number of bus words
    best = 0
    for ct in range(unit, c, unit):
        if not fits(ct):
            break
        best = ct
    if best == 0:
        tbl = layout.lut_bytes(cfg, unit, k, min(op.m, cfg.NOUT), pack)
        raise CompileError(f"{where}: the column (c={c} subspaces of v={v}, k={k}) does not fit one run and no tile "
                           f"of {unit} subspaces (whole bus words) does either (CMax={cfg.CMax}, "
                           f"ActBytes={cfg.ActBytes}, prototypes {layout.proto_bytes(cfg, unit, k, v)} bytes of "
                           f"{cfg.proto_cap}, table of one output group {tbl} bytes of {cfg.lut_cap}, config "
                           f"'{cfg.name}')")
    return [(g0, min(c, g0 + best)) for g0 in range(0, c, best)]


def check_tables(cfg: HwConfig, where: str, c: int, k: int, v: int, m: int, d: int, lut: np.ndarray,
                 protos: np.ndarray) -> None:
    """The limits of a PQ op's shape and tables; a table larger than the buffer is tiled over m
    (:func:`m_tiles`, which refuses one whose single output group does not fit)."""
    lim = [("k", k, cfg.KMax, "KMax"), ("v", v, cfg.VMax, "VMax"), ("c", c, cfg.CMax, "CMax"),
           ("m", m, cfg.MMax, "MMax")]
    for what, val, mx, key in lim:
        if not 1 <= val <= mx:
            raise CompileError(f"{where}: {what}={val} is beyond the hardware limit {key}={mx} of config '{cfg.name}'")
    need = table_bytes(cfg, c, k, v, m, packs(cfg, lut))
    m_tiles(cfg, c, k, m, packs(cfg, lut), where)
    tables = [
        ("prototypes", need["proto"], cfg.proto_cap, "whole rows of ProtoBytes", "proto"),
        ("bias", need["bias"], cfg.bias_bytes, "bias buffer", "bias"),
    ]
    for what, need_b, have, key, buf in tables:
        if need_b > have:
            raise CompileError(f"{where}: {what} needs {need_b} bytes, more than buffer '{buf}' of config "
                               f"'{cfg.name}' holds ({key}={have})")
    if not (c - 1) * v < d <= c * v:
        raise CompileError(f"{where}: d={d} does not match c={c} subspaces of v={v}")
    if d > field_max("shape", "d"):
        raise CompileError(f"{where}: column length d={d} does not fit the shape.d field")
    lo, hi = -(1 << (cfg.LutW - 1)), (1 << (cfg.LutW - 1)) - 1
    if lut.min(initial=0) < lo or lut.max(initial=0) > hi:
        raise CompileError(f"{where}: table entries exceed LutW={cfg.LutW} bits")
    if protos.min(initial=0) < -(1 << (cfg.ProtoW - 1)) or protos.max(initial=0) >= 1 << (cfg.ProtoW - 1):
        raise CompileError(f"{where}: prototypes exceed ProtoW={cfg.ProtoW} bits")


@register
class PQHandler(OpHandler):
    name = "pq"
    ir_type = ir.PQOp
    float_type = FPQ
    layer_types = ("pq_linear", "pq_conv2d")

    # ---- front end ---------------------------------------------------------------------------------------
    def extract(self, ex: Extraction, lay: dict[str, Any], name: str, t: str) -> str:
        kind = lay["type"]
        h, w, ch = ex.fg.tensors[t].shape
        ks = lay.get("kernel_size", 1)
        kh, kw = (int(ks[0]), int(ks[1])) if isinstance(ks, list) else (int(ks), int(ks))
        m = int(lay["out_features" if kind == "pq_linear" else "out_channels"])
        d = h * w * ch if kind == "pq_linear" else ch * kh * kw
        v = int(lay["v"])
        protos = ex.param(name, kind, "prototypes", (-(-d // v), int(lay["k"]), v))
        weight = ex.param(name, kind, "weight", (m, d) if kind == "pq_linear" else (m, ch, kh, kw))
        assert protos is not None and weight is not None
        bias = ex.param(name, kind, "bias", (m,), optional=not lay.get("bias", True))
        b = np.zeros(m) if bias is None else bias
        if kind == "pq_linear":  # the window is the whole fmap: element order = PyTorch's CHW flatten
            ex.fg.ops.append(FPQ(name, kind, t, name, protos, weight.reshape(m, -1), b, lay["metric"], kh=h, kw=w))
            return ex.fg.new_tensor(name, (1, 1, m), (m,))
        s, p = int(lay.get("stride", 1)), int(lay.get("padding", 0))
        oh, ow = (h + 2 * p - kh) // s + 1, (w + 2 * p - kw) // s + 1
        ex.fg.ops.append(FPQ(name, kind, t, name, protos, weight.reshape(m, -1), b, lay["metric"], kh=kh, kw=kw,
                             stride=s, pad=p))
        return ex.fg.new_tensor(name, (oh, ow, m), (m, oh, ow))

    def forward(self, op: FPQ, vals: dict[str, Tensor]) -> Tensor:
        xi = vals[op.inp]
        cols, oh, ow = kernels.columns(xi, op.kh, op.kw, op.stride, op.pad)
        protos = torch.from_numpy(op.protos)
        y = kernels.lookup(kernels.encode(cols, protos, op.metric), kernels.float_lut(op.protos, op.weight))
        return (y + torch.from_numpy(op.bias)).reshape(xi.shape[0], oh, ow, op.m)

    def quantize(self, op: FPQ, q: QuantContext) -> tuple[ir.Op, Tensor, float]:
        ti = q.tensors[op.inp]
        pq, lut, bias, s_lut = quantize.quantize_table(op.protos, op.weight, op.bias, ti.scale,
                                                       quantize.act_range(ti.bits, ti.unsigned), q.lut_bits,
                                                       q.lut_calib)
        qop = ir.PQOp(op.name, op.inp, op.out, pq.astype(np.int8), lut.astype(np.int32), bias.astype(np.int32),
                      op.metric, ir.Post(1, 0, op.relu, q.bits, q.unsigned), op.kh, op.kw, op.stride, op.pad)
        acc = self.accumulate(qop, q.ints, q.cfg.AccW)
        s_out = q.out_scale(op, acc.to(torch.float64) * s_lut, s_lut)
        mult, shift = quantize.mult_shift(s_lut / s_out)
        qop.post = ir.Post(mult, shift, op.relu, q.bits, q.unsigned)
        out_scale = s_lut * (1 << shift) / mult
        qop.info = {"kind": op.pq_kind, "in_scale": ti.scale, "lut_scale": s_lut, "out_scale": out_scale,
                    "d": op.d, "bn": op.bn or None}
        return qop, kernels.post(acc, mult, shift, qop.post), out_scale

    def accumulate(self, op: ir.PQOp, vals: dict[str, Tensor], acc_w: int) -> Tensor:
        """A PQ op's accumulators [N, oh, ow, m] (bias included, wrapped to ``acc_w`` bits)."""
        x = vals[op.inp]
        cols, oh, ow = kernels.columns(x, op.kh, op.kw, op.stride, op.pad)
        protos = torch.from_numpy(op.protos.astype(np.int64))
        acc = kernels.lookup(kernels.encode(cols, protos, op.metric), torch.from_numpy(op.lut.astype(np.int64)))
        acc = kernels.wrap(acc + torch.from_numpy(op.bias.astype(np.int64)), acc_w)
        return acc.reshape(x.shape[0], oh, ow, op.m)

    def report(self, op: ir.PQOp, cfg: HwConfig | None) -> dict[str, Any]:
        cfg = cfg or load().config("default")
        tb = table_bytes(cfg, op.c, op.k, op.v, op.m, packs(cfg, op.lut))
        return {"K": op.k, "v": op.v, "c": op.c, "m": op.m, "d": op.info.get("d"), "metric": op.metric,
                "kh": op.kh, "kw": op.kw, "stride": op.stride, "pad": op.pad, "mult": op.post.mult,
                "lut_scale": op.info.get("lut_scale"), "bn": op.info.get("bn"), "table_bytes": sum(tb.values())}

    # ---- back end ----------------------------------------------------------------------------------------
    def kind(self, g: ir.Graph, op: ir.PQOp) -> str:
        """``linear`` (on a (1, 1, d) tensor: all images as columns), ``flatten-linear`` (the window is the
        whole fmap) or ``conv``."""
        h, w, _ = g.tensors[op.inp].shape
        if h == w == 1 and op.kh == op.kw == 1 and op.pad == 0:
            return "linear"
        if (op.kh, op.kw, op.pad) == (h, w, 0):
            return "flatten-linear"
        return "conv"

    def check(self, cfg: HwConfig, g: ir.Graph, i: int, op: ir.PQOp) -> None:
        h, w, ch = g.tensors[op.inp].shape
        out = g.tensors[op.out]
        d = ch * op.kh * op.kw
        where = f"layer {i} ({op.name} {d}->{op.m})"
        if not (1 <= op.stride <= field_max("conv", "stride") and 1 <= op.kh <= field_max("conv", "kh")
                and 1 <= op.kw <= field_max("conv", "kw") and 0 <= op.pad <= field_max("conv", "pad_t")):
            raise CompileError(f"{where}: conv geometry stride={op.stride} kernel={op.kh}x{op.kw} pad={op.pad} "
                               "is beyond the conv instruction's fields")
        oh, ow = conv_out_shape(op, h, w)
        if oh < 1 or ow < 1 or out.shape != (oh, ow, op.m):
            raise CompileError(f"{where}: output tensor {op.out} has shape {out.shape}, the op gives {(oh, ow, op.m)}")
        ctiles = c_tiles(cfg, op, d, where) if self.kind(g, op) == "linear" else [(0, op.c)]
        ct = max(g1 - g0 for g0, g1 in ctiles)
        if len(ctiles) > 1 and not (op.c - 1) * op.v < d <= op.c * op.v:
            raise CompileError(f"{where}: d={d} does not match c={op.c} subspaces of v={op.v}")
        check_tables(cfg, where, ct, op.k, op.v, op.m, d if len(ctiles) == 1 else ct * op.v, op.lut, op.protos)
        if op.metric not in ("l1", "l2"):
            raise CompileError(f"{where}: metric {op.metric!r} is not supported (l2, l1)")
        if self.kind(g, op) == "linear":
            check_fits(cfg, where, [("output column", op.m, cfg.OutBytes, "OutBytes")])
        elif h > field_max("fmap", "h") or w > field_max("fmap", "w") or ch > field_max("fmap", "ch"):
            raise CompileError(f"{where}: fmap {h}x{w}x{ch} is beyond the fmap instruction's fields")
        check_post(cfg, where, op.post.mult, op.post.shift, op.post.bits, op.post.unsigned)

    def per_image(self, cfg: HwConfig, g: ir.Graph, op: ir.PQOp, n: int) -> bool:
        kind = self.kind(g, op)
        if kind == "linear":  # a column tiled over c is loaded slice by slice, image by image
            return len(self.ctiles(cfg, g, op)) > 1
        return kind == "conv" or (kind == "flatten-linear" and flatten_group(cfg, g, op, n) == 0)

    def ctiles(self, cfg: HwConfig, g: ir.Graph, op: ir.PQOp) -> list[tuple[int, int]]:
        """The op's column tiles over c (:func:`c_tiles`; linear ops only, else the whole [0, c))."""
        if self.kind(g, op) != "linear":
            return [(0, op.c)]
        return c_tiles(cfg, op, g.tensors[op.inp].shape[2])

    def tiles(self, cfg: HwConfig, g: ir.Graph, op: ir.PQOp) -> list[tuple[int, int]]:
        """The op's table tiles over m: its output's channel blocks when a pool reads it channel-blocked
        (:func:`pqcompile.plan.channel_blocks`), else :func:`m_tiles`."""
        return channel_blocks(cfg, g, op.out) or m_tiles(cfg, op.c, op.k, op.m, packs(cfg, op.lut))

    def tables(self, cfg: HwConfig, g: ir.Graph, op: ir.PQOp) -> list[tuple[str, np.ndarray, str]]:
        """The op's table images: ``proto``, ``lut``, ``bias``, or with a table tiled over m (:meth:`tiles`)
        ``lut.<t>``, ``bias.<t>`` for each tile t (the prototypes are shared)."""
        pack = packs(cfg, op.lut)
        width = "8-bit, packed two rows to a row," if pack else f"{cfg.LutW}-bit"
        ctiles = self.ctiles(cfg, g, op)
        if len(ctiles) > 1:
            return self._ctables(cfg, op, ctiles, width)
        tiles = self.tiles(cfg, g, op)
        out = [("proto", layout.pack_protos(cfg, op.protos),
                f"prototypes [c={op.c}][k={op.k}][v={op.v}] int8 in rows of NS={cfg.NS} x NP={cfg.NP} x PL={cfg.PL}")]
        for t, (m0, m1) in enumerate(tiles):
            one = len(tiles) == 1
            sfx, part = ("", "") if one else (f".{t}", f", outputs {m0}..{m1 - 1} (tile {t} of {len(tiles)})")
            out += [(f"lut{sfx}", layout.pack_lut(cfg, op.lut[:, :, m0:m1], pack),
                     f"table [c][k][m={op.m}] {width} in rows of NS={cfg.NS} lanes x NOUT={cfg.NOUT}{part}"),
                    (f"bias{sfx}", op.bias[m0:m1].astype(f"<i{cfg.elem_bytes('bias')}").view(np.uint8).reshape(-1),
                     f"bias [m] int{cfg.elem_bits('bias')}{part}")]
        return out

    def _prelude(self, op: ir.PQOp, i: int, conv: bool, cfg: HwConfig, d: int) -> list[PInsn]:
        pack = packs(cfg, op.lut)
        tb = table_bytes(cfg, op.c, op.k, op.v, op.m, pack)
        return [
            *(PInsn("load", {"buf": buffer(t), "nbytes": tb[t], "addr": Ref(f"{t}:{i}")})
              for t in ("proto", "lut", "bias")),
            PInsn("shape", {"metric": op.metric, "conv": int(conv), "k": op.k, "v": op.v, "c": op.c, "d": d,
                            "m": op.m, "pack": int(pack)}),
            quant(op.post),
        ]

    def _ctables(self, cfg: HwConfig, op: ir.PQOp, ctiles: list[tuple[int, int]],
                 width: str) -> list[tuple[str, np.ndarray, str]]:
        """The table images of a column tiled over c (and its table over m): ``proto.<ci>`` per c tile,
        ``lut.<mi>.<ci>`` per (m, c) tile, ``bias.<mi>`` per m tile."""
        pack = packs(cfg, op.lut)
        mtiles = m_tiles(cfg, max(g1 - g0 for g0, g1 in ctiles), op.k, op.m, pack)
        out = []
        for ci, (g0, g1) in enumerate(ctiles):
            out.append((f"proto.{ci}", layout.pack_protos(cfg, op.protos[g0:g1]),
                        f"prototypes of subspaces {g0}..{g1 - 1} [k={op.k}][v={op.v}] int8 (c tile {ci})"))
        for mi, (m0, m1) in enumerate(mtiles):
            out.append((f"bias.{mi}", op.bias[m0:m1].astype(f"<i{cfg.elem_bytes('bias')}").view(np.uint8).reshape(-1),
                        f"bias of outputs {m0}..{m1 - 1} int{cfg.elem_bits('bias')}"))
            for ci, (g0, g1) in enumerate(ctiles):
                out.append((f"lut.{mi}.{ci}", layout.pack_lut(cfg, op.lut[g0:g1, :, m0:m1], pack),
                            f"table of subspaces {g0}..{g1 - 1}, outputs {m0}..{m1 - 1} {width} (tile {mi}, {ci})"))
        return out

    def _plan_ctiled(self, cfg: HwConfig, i: int, op: ir.PQOp, n: int, d: int, s_in: int, s_out: int,
                     ctiles: list[tuple[int, int]]) -> OpPlan:
        """A linear op whose column is tiled over c (:func:`c_tiles`): per image and m tile, the column's
        slices one after the other (each loaded to act byte 0, with its own prototypes and table), the runs
        chained (dst = none holds the accumulators, the next run's acc starts from them; the last one writes
        its outputs at their channels, ``ooff`` = m0) and the image's outputs stored. The table sets of every
        (m, c) tile keep their banks when there are no more than two, else load for every image."""
        pack = packs(cfg, op.lut)
        mtiles = m_tiles(cfg, max(g1 - g0 for g0, g1 in ctiles), op.k, op.m, pack)
        grid = [(mi, ci) for mi in range(len(mtiles)) for ci in range(len(ctiles))]
        keep = len(grid) <= load().buffers["lut"].banks
        none = load().enums["target"]["none"]
        insns: list[PInsn] = [quant(op.post)]
        sets: dict[tuple[int, int], int] = {}
        for im in range(n):
            for mi, (m0, m1) in enumerate(mtiles):
                for ci, (g0, g1) in enumerate(ctiles):
                    dt = min(d, g1 * op.v) - g0 * op.v
                    insns.append(PInsn("load", {"buf": buffer("act"), "nbytes": dt,
                                                "addr": tensor(op.inp, im * s_in + g0 * op.v)}))
                    if not keep or (mi, ci) not in sets:
                        ts = sets[(mi, ci)] = sum(1 for p in insns if p.mnemonic == "shape") if not keep else len(sets)
                        tb = table_bytes(cfg, g1 - g0, op.k, op.v, m1 - m0, pack)
                        insns += [PInsn("load", {"buf": buffer("proto"), "nbytes": tb["proto"],
                                                 "addr": Ref(f"proto.{ci}:{i}")}, ts),
                                  PInsn("load", {"buf": buffer("lut"), "nbytes": tb["lut"],
                                                 "addr": Ref(f"lut.{mi}.{ci}:{i}")}, ts)]
                        if ci == 0:  # the chain's later runs start from the held accumulators
                            insns.append(PInsn("load", {"buf": buffer("bias"), "nbytes": tb["bias"],
                                                        "addr": Ref(f"bias.{mi}:{i}")}, ts))
                    last = ci == len(ctiles) - 1
                    insns += [PInsn("shape", {"metric": op.metric, "conv": 0, "k": op.k, "v": op.v, "c": g1 - g0,
                                              "d": dt, "m": m1 - m0, "pack": int(pack)}, sets[(mi, ci)]),
                              PInsn("run", {"n": 1, "acc": int(ci > 0), **({"ooff": m0} if last else {"dst": none})})]
            insns.append(PInsn("store", {"nbytes": op.m, "addr": tensor(op.out, im * s_out)}))
        return OpPlan(i, op, "linear", insns, sum(1 for p in insns if p.mnemonic == "run"),
                      {"tile_columns": 1, "c_tiles": [list(t) for t in ctiles], "m_tiles": [list(t) for t in mtiles]})

    def _set_loads(self, cfg: HwConfig, op: ir.PQOp, i: int, t: int, m0: int, m1: int, ts: int) -> list[PInsn]:
        """The table loads of tile ``t`` (outputs [m0, m1)) as table set ``ts``."""
        tb = table_bytes(cfg, op.c, op.k, op.v, m1 - m0, packs(cfg, op.lut))
        return [PInsn("load", {"buf": buffer("proto"), "nbytes": tb["proto"], "addr": Ref(f"proto:{i}")}, ts),
                PInsn("load", {"buf": buffer("lut"), "nbytes": tb["lut"], "addr": Ref(f"lut.{t}:{i}")}, ts),
                PInsn("load", {"buf": buffer("bias"), "nbytes": tb["bias"], "addr": Ref(f"bias.{t}:{i}")}, ts)]

    def _tile_m(self, cfg: HwConfig, op: ir.PQOp, plan: OpPlan) -> OpPlan:
        """``plan`` (one table set) with the table tiled over m (:func:`m_tiles`): every ``run`` becomes one
        ``shape`` and ``run`` per tile (the tile's m; ``ostride`` = m, ``ooff`` = m0: the tile's channels of
        the whole result), and each tile's tables are loaded before its first run. With no more tiles than
        table banks every tile keeps a bank (its tables load once for all the op's runs: ``tset`` t); with
        more, a tile's tables are loaded again for every run (a new table set each time)."""
        pack = packs(cfg, op.lut)
        tiles = m_tiles(cfg, op.c, op.k, op.m, pack)
        if len(tiles) == 1:
            return plan
        i = plan.index
        tbl = {buffer(t) for t in ("proto", "lut", "bias")}
        shape = next(q for q in plan.insns if q.mnemonic == "shape")
        keep = len(tiles) <= load().buffers["lut"].banks
        insns: list[PInsn] = []
        sets: dict[int, int] = {}  # tile -> its current table set
        for q in plan.insns:
            if q.mnemonic == "shape" or (q.mnemonic == "load" and q.ops["buf"] in tbl):
                continue
            if q.mnemonic != "run":
                insns.append(q)
                continue
            for t, (m0, m1) in enumerate(tiles):
                if not keep or t not in sets:
                    ts = sets[t] = len(sets) if keep else sum(1 for p in insns if p.mnemonic == "shape")
                    insns += self._set_loads(cfg, op, i, t, m0, m1, ts)
                insns += [PInsn("shape", {**shape.ops, "m": m1 - m0}, sets[t]),
                          PInsn("run", {**q.ops, "ostride": op.m, "ooff": m0})]
        info = {**plan.info, "m_tiles": [list(t) for t in tiles], "table_sets": len(set(
            p.tset for p in insns if p.mnemonic == "shape"))}
        return replace(plan, insns=insns, tiles=sum(1 for p in insns if p.mnemonic == "run"), info=info)

    def plan(self, cfg: HwConfig, g: ir.Graph, i: int, op: ir.PQOp, n: int, strides: dict[str, int]) -> OpPlan:
        ctiles = self.ctiles(cfg, g, op)
        if len(ctiles) > 1:
            d = g.tensors[op.inp].shape[2]
            return self._plan_ctiled(cfg, i, op, n, d, strides[op.inp], strides[op.out], ctiles)
        blocks = channel_blocks(cfg, g, op.out)
        if blocks:  # a pool reads the output block by block
            h, w, ch = g.tensors[op.inp].shape
            return self._plan_blocked(cfg, i, op, n, (h, w, ch), strides[op.inp], strides[op.out], blocks,
                                      f"layer {i} ({op.name})")
        return self._tile_m(cfg, op, self._plan(cfg, g, i, op, n, strides))

    def _plan_blocked(self, cfg: HwConfig, i: int, op: ir.PQOp, n: int, shape: tuple[int, int, int], s_in: int,
                      s_out: int, blocks: list[tuple[int, int]], where: str) -> OpPlan:
        """A conv whose output is stored channel-blocked (:func:`pqcompile.plan.channel_blocks`): per image and
        band of output rows (bands sized for one block in the output buffer), one ``shape`` + ``run`` per block
        (the block's table tile, its outputs dense) and a ``store`` of the block's rows into the block. Table
        sets as in :meth:`_tile_m`: with two blocks each keeps a bank, with more they load for every run."""
        h, w, ch = shape
        oh, ow = conv_out_shape(op, h, w)
        pixels = oh * ow
        bands = conv_bands(cfg, op, h, w, ch, where, [c1 - c0 for c0, c1 in blocks])
        pack = packs(cfg, op.lut)
        keep = len(blocks) <= load().buffers["lut"].banks
        shape_ops = {"metric": op.metric, "conv": 1, "k": op.k, "v": op.v, "c": op.c, "d": ch * op.kh * op.kw,
                     "pack": int(pack)}
        insns: list[PInsn] = [quant(op.post)]
        sets: dict[int, int] = {}
        state: tuple[int, int] | None = None
        for im in range(n):
            for bd in bands:
                state = _band_input(insns, op, bd, (w, ch, ow), im * s_in, state)
                rows = bd.r1 - bd.r0
                for t, (c0, c1) in enumerate(blocks):
                    if not keep or t not in sets:
                        ts = sets[t] = len(sets) if keep else sum(1 for p in insns if p.mnemonic == "shape")
                        insns += self._set_loads(cfg, op, i, t, c0, c1, ts)
                    at = im * s_out + c0 * pixels + bd.r0 * ow * (c1 - c0)  # block c0's rows from r0
                    insns += [PInsn("shape", {**shape_ops, "m": c1 - c0}, sets[t]),
                              PInsn("run", {"n": rows * ow}),
                              PInsn("store", {"nbytes": rows * ow * (c1 - c0), "addr": tensor(op.out, at)})]
        return OpPlan(i, op, "conv", insns, sum(1 for p in insns if p.mnemonic == "run"),
                      {"bands": len(bands), "band_rows": [[bd.r0, bd.r1] for bd in bands],
                       "m_tiles": [list(b) for b in blocks], "channel_blocked": True})

    def _plan(self, cfg: HwConfig, g: ir.Graph, i: int, op: ir.PQOp, n: int, strides: dict[str, int]) -> OpPlan:
        kind = self.kind(g, op)
        act = buffer("act")
        h, w, ch = g.tensors[op.inp].shape
        s_in, s_out = strides[op.inp], strides[op.out]
        d, m = ch * op.kh * op.kw, op.m
        where = f"layer {i} ({op.name})"
        if kind == "linear" and s_in == d and s_out == m:  # all images as columns, non-conv mode
            t = tile_columns(cfg, d, m, n, op.name)
            insns = self._prelude(op, i, False, cfg, d)
            for j in range(0, n, t):
                tn = min(t, n - j)
                insns += [PInsn("load", {"buf": act, "nbytes": tn * d, "addr": tensor(op.inp, j * d)}),
                          PInsn("run", {"n": tn}),
                          PInsn("store", {"nbytes": tn * m, "addr": tensor(op.out, j * m)})]
            return OpPlan(i, op, kind, insns, -(-n // t), {"tile_columns": t})
        if kind == "linear":  # a padded tensor: one image at a time
            insns = self._prelude(op, i, False, cfg, d)
            for im in range(n):
                insns += [PInsn("load", {"buf": act, "nbytes": d, "addr": tensor(op.inp, im * s_in)}),
                          PInsn("run", {"n": 1}),
                          PInsn("store", {"nbytes": m, "addr": tensor(op.out, im * s_out)})]
            return OpPlan(i, op, kind, insns, n, {"tile_columns": 1})
        if kind == "flatten-linear":
            return self._plan_flatten(cfg, g, i, op, n, s_in, s_out, where)
        return self._plan_conv(cfg, i, op, n, (h, w, ch), s_in, s_out, where)

    def _plan_flatten(self, cfg: HwConfig, g: ir.Graph, i: int, op: ir.PQOp, n: int, s_in: int, s_out: int,
                      where: str) -> OpPlan:
        act = buffer("act")
        h, w, ch = g.tensors[op.inp].shape
        size, m = h * w * ch, op.m
        if size > cfg.ActBytes:
            raise CompileError(f"{where}: the flattened fmap {h}x{w}x{ch} = {size} bytes does not fit buffer 'act' "
                               f"(ActBytes={cfg.ActBytes} of config '{cfg.name}'); tiling over d is not supported")
        grp = flatten_group(cfg, g, op, n) if (s_in, s_out) == (size, m) else 0
        insns = self._prelude(op, i, True, cfg, size)
        if grp:  # images stacked as fmap rows; the window (h x w, stride h) takes one image per column
            last = None
            for j in range(0, n, grp):
                gn = min(grp, n - j)
                if gn != last:
                    insns += [PInsn("fmap", {"h": gn * h, "w": w, "ch": ch}),
                              PInsn("conv", {"stride": h, "kh": h, "kw": w, "pad_t": 0, "pad_l": 0, "out_w": 1})]
                    last = gn
                insns += [PInsn("load", {"buf": act, "nbytes": gn * size, "addr": tensor(op.inp, j * size)}),
                          PInsn("run", {"n": gn}),
                          PInsn("store", {"nbytes": gn * m, "addr": tensor(op.out, j * m)})]
            return OpPlan(i, op, "flatten-linear", insns, -(-n // grp), {"images_per_run": grp})
        insns += [PInsn("fmap", {"h": h, "w": w, "ch": ch}),
                  PInsn("conv", {"stride": 1, "kh": h, "kw": w, "pad_t": 0, "pad_l": 0, "out_w": 1})]
        for im in range(n):
            insns += [PInsn("load", {"buf": act, "nbytes": size, "addr": tensor(op.inp, im * s_in)}),
                      PInsn("run", {"n": 1}),
                      PInsn("store", {"nbytes": m, "addr": tensor(op.out, im * s_out)})]
        return OpPlan(i, op, "flatten-linear", insns, n, {"images_per_run": 1})

    def _plan_conv(self, cfg: HwConfig, i: int, op: ir.PQOp, n: int, shape: tuple[int, int, int], s_in: int,
                   s_out: int, where: str) -> OpPlan:
        """Per image, in bands of output rows; ``fmap`` / ``conv`` only where they change. Over several images
        the bands are sized for half the output buffer where they can be, so that the store of one band
        overlaps the `run` of the next (onchip.keep_on_chip puts them in alternate halves, ``store.half``)."""
        h, w, ch = shape
        m = op.m
        _oh, ow = conv_out_shape(op, h, w)
        bands = conv_bands(cfg, op, h, w, ch, where)
        if n > 1 and out_halves(cfg) and any((bd.r1 - bd.r0) * ow * m > cfg.OutBytes // 2 for bd in bands):
            try:
                bands = conv_bands(cfg, op, h, w, ch, where, out_bytes=cfg.OutBytes // 2)
            except CompileError:
                pass  # no bands fit half the buffer: whole-buffer bands, each store before the next run
        insns = self._prelude(op, i, True, cfg, ch * op.kh * op.kw)
        state: tuple[int, int] | None = None
        for im in range(n):
            for bd in bands:
                state = _band_input(insns, op, bd, (w, ch, ow), im * s_in, state)
                rows = bd.r1 - bd.r0
                insns += [PInsn("run", {"n": rows * ow}),
                          PInsn("store", {"nbytes": rows * ow * m,
                                          "addr": tensor(op.out, im * s_out + bd.r0 * ow * m)})]
        return OpPlan(i, op, "conv", insns, n * len(bands),
                      {"bands": len(bands), "band_rows": [[bd.r0, bd.r1] for bd in bands]})

    def entry(self, cfg: HwConfig, g: ir.Graph, plan: OpPlan, addr: dict[str, int]) -> dict[str, Any]:
        op, i = plan.op, plan.index
        assert isinstance(op, ir.PQOp)
        tb = sum(data.size for _, data, _ in self.tables(cfg, g, op))
        proto, lut, bias = (next(k for k in (f"{t}:{i}", f"{t}.0:{i}", f"{t}.0.0:{i}") if k in addr)
                            for t in ("proto", "lut", "bias"))  # the first tile's (tiled over m or c)
        return {"d": g.tensors[op.inp].shape[2] * op.kh * op.kw, "m": op.m, "c": op.c, "k": op.k, "v": op.v,
                "metric": op.metric, "kh": op.kh, "kw": op.kw, "stride": op.stride, "pad": op.pad,
                "relu": op.post.relu, "unsigned": op.post.unsigned, "mult": op.post.mult, "shift": op.post.shift,
                "bits": op.post.bits, "proto_addr": addr[proto], "lut_addr": addr[lut],
                "bias_addr": addr[bias], "table_bytes": tb, "m_tiles": plan.info.get("m_tiles", [[0, op.m]]),
                "c_tiles": plan.info.get("c_tiles", [[0, op.c]])}
