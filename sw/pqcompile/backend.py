"""Back end: the integer graph (:mod:`pqcompile.ir`) -> memory layout, instruction stream and a build directory.

The passes, each a function of its own (docs/programmers_guide.md, "The back end"):

1. :func:`check_graph`: every op inside the configuration's limits, its tables inside their buffers;
2. :func:`image_strides` (layout): activation tensors are channels-last ``[N][h][w][ch]`` int8 in external
   memory; an image's bytes are padded to the bus width only where an instruction addresses single images;
3. :func:`plan_op` (tiling): each op becomes a list of instructions over *symbolic* addresses (a tensor or a
   table plus an offset): a linear op on ``(1, 1, d)`` runs all images as columns (non-conv mode, in tiles of
   columns), a conv runs per image in conv mode, in bands of output rows when the fmap or the output does
   not fit the on-chip buffers (:func:`conv_bands`), a linear op after flatten runs groups of images as one
   conv-mode fmap, ``add`` in chunks, ``pool`` per image;
4. :func:`allocate`: activation tensors get addresses by liveness over the op list (first fit, freed after
   the last use), tables and the graph input are pinned;
5. :func:`emit_graph`: resolve the addresses, encode, build the memory image and the manifest; one ``stamp``
   at the start and after each op (per-op cycles), ``end``;
6. :func:`report_rows` / :func:`format_report`: the per-op report from a written manifest.

The build directory is the only thing the simulator and the testbench read (docs/file_formats.md):
``manifest.json``, ``mem.hex`` (the initial external memory: instructions, tables, inputs),
``program.asm`` (disassembly), ``expected_output.npy`` (the golden simulator's outputs).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import build, hexfmt, ir, sim
from .build import read_output, read_stamps, read_tensor  # noqa: F401  (the build format's readers)
from .errors import CompileError  # noqa: F401  (raised here; callers catch backend.CompileError)
from .isa import encode, field_limit, field_max, listing
from .spec import HwConfig, load


def _align(x: int, a: int = 8) -> int:
    return -(-x // a) * a


# ------------------------------------------------------------------------------------------------------------
# 1. checks
# ------------------------------------------------------------------------------------------------------------
def _check_tables(cfg: HwConfig, where: str, c: int, k: int, v: int, m: int, d: int, lut: np.ndarray,
                  protos: np.ndarray) -> None:
    lim = [("k", k, cfg.KMax, "KMax"), ("v", v, cfg.VMax, "VMax"), ("c", c, cfg.CMax, "CMax"),
           ("m", m, cfg.MMax, "MMax")]
    for what, val, mx, key in lim:
        if not 1 <= val <= mx:
            raise CompileError(f"{where}: {what}={val} is beyond the hardware limit {key}={mx} of config '{cfg.name}'")
    tables = [
        ("prototypes", c * k * v, cfg.ProtoBytes, "ProtoBytes", "proto"),
        ("table (LUT)", c * k * m * cfg.lut_bytes, cfg.LutBytes, "LutBytes", "lut"),
        ("bias", 4 * m, cfg.bias_bytes, "bias buffer", "bias"),
    ]
    for what, need, have, key, buf in tables:
        if need > have:
            raise CompileError(f"{where}: {what} needs {need} bytes, more than buffer '{buf}' of config "
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


def _check_post(cfg: HwConfig, where: str, mult: int, shift: int, bits: int, unsigned: bool) -> None:
    if not (0 <= shift <= field_limit("quant", "shift") and 0 <= mult <= field_max("quant", "mult")):
        raise CompileError(f"{where}: requantization mult={mult} shift={shift} out of range")
    if not 2 <= bits <= cfg.ActW:
        raise CompileError(f"{where}: activation width {bits} is outside 2..ActW={cfg.ActW}")
    if unsigned and bits >= cfg.ActW:
        raise CompileError(f"{where}: an unsigned output needs bits < ActW={cfg.ActW}, got {bits}")


def op_kind(g: ir.Graph, op: ir.Op) -> str:
    """``linear`` (a PQ op on a (1, 1, d) tensor: all images as columns), ``flatten-linear`` (a PQ op whose
    window is the whole fmap), ``conv``, ``add`` or ``pool``."""
    if isinstance(op, ir.AddOp):
        return "add"
    if isinstance(op, ir.PoolOp):
        return "pool"
    h, w, _ = g.tensors[op.inp].shape
    if h == w == 1 and op.kh == op.kw == 1 and op.pad == 0:
        return "linear"
    if (op.kh, op.kw, op.pad) == (h, w, 0):
        return "flatten-linear"
    return "conv"


def conv_out_shape(op: ir.PQOp, h: int, w: int) -> tuple[int, int]:
    return (h + 2 * op.pad - op.kh) // op.stride + 1, (w + 2 * op.pad - op.kw) // op.stride + 1


def check_op(cfg: HwConfig, g: ir.Graph, i: int, op: ir.Op) -> None:
    """Raise CompileError naming op ``i`` when it is inconsistent with its tensors or beyond ``cfg``."""
    for t in [*g.op_inputs(op), op.out]:
        if t not in g.tensors:
            raise CompileError(f"layer {i} ({op.name}): unknown tensor {t!r}")
    out = g.tensors[op.out]
    if isinstance(op, ir.PQOp):
        h, w, ch = g.tensors[op.inp].shape
        d = ch * op.kh * op.kw
        where = f"layer {i} ({op.name} {d}->{op.m})"
        if not (1 <= op.stride <= field_max("conv", "stride") and 1 <= op.kh <= field_max("conv", "kh")
                and 1 <= op.kw <= field_max("conv", "kw") and 0 <= op.pad <= field_max("conv", "pad_t")):
            raise CompileError(f"{where}: conv geometry stride={op.stride} kernel={op.kh}x{op.kw} pad={op.pad} "
                               "is beyond the conv instruction's fields")
        oh, ow = conv_out_shape(op, h, w)
        if oh < 1 or ow < 1 or out.shape != (oh, ow, op.m):
            raise CompileError(f"{where}: output tensor {op.out} has shape {out.shape}, the op gives {(oh, ow, op.m)}")
        _check_tables(cfg, where, op.c, op.k, op.v, op.m, d, op.lut, op.protos)
        if op.metric not in ("l1", "l2"):
            raise CompileError(f"{where}: metric {op.metric!r} is not supported (l2, l1)")
        if op_kind(g, op) == "linear":
            for what, need, have, key in (("input column", d, cfg.ActBytes, "ActBytes"),
                                          ("output column", op.m, cfg.OutBytes, "OutBytes")):
                if need > have:
                    raise CompileError(f"{where}: {what} needs {need} bytes, config '{cfg.name}' has {key}={have}")
        elif h > field_max("fmap", "h") or w > field_max("fmap", "w") or ch > field_max("fmap", "ch"):
            raise CompileError(f"{where}: fmap {h}x{w}x{ch} is beyond the fmap instruction's fields")
        _check_post(cfg, where, op.post.mult, op.post.shift, op.post.bits, op.post.unsigned)
    elif isinstance(op, ir.AddOp):
        where = f"layer {i} ({op.name} add)"
        sa, sb = g.tensors[op.a].shape, g.tensors[op.b].shape
        if not sa == sb == out.shape:
            raise CompileError(f"{where}: operand shapes {sa}, {sb} and output {out.shape} differ")
        if not (0 <= op.ma <= field_max("add", "ma") and 0 <= op.mb <= field_max("add", "mb")):
            raise CompileError(f"{where}: multipliers ma={op.ma} mb={op.mb} exceed the add instruction's fields")
        _check_post(cfg, where, 0, op.post.shift, op.post.bits, op.post.unsigned)
    else:
        h, w, ch = g.tensors[op.inp].shape
        where = f"layer {i} ({op.name} pool)"
        if out.shape != (1, 1, ch):
            raise CompileError(f"{where}: output tensor shape {out.shape}, pooling gives {(1, 1, ch)}")
        if h * w * ch > cfg.ActBytes:
            raise CompileError(f"{where}: global pooling needs the whole fmap {h}x{w}x{ch} = {h * w * ch} bytes "
                               f"in buffer 'act', config '{cfg.name}' has ActBytes={cfg.ActBytes}")
        if ch > cfg.OutBytes:
            raise CompileError(f"{where}: {ch} channels exceed OutBytes={cfg.OutBytes}")
        _check_post(cfg, where, op.post.mult, op.post.shift, op.post.bits, op.post.unsigned)


def check_graph(cfg: HwConfig, g: ir.Graph) -> None:
    """The graph is well formed (ops in a topological order, unique names) and every op fits ``cfg``."""
    if not g.ops:
        raise CompileError("nothing to compile: the model has no layer the accelerator runs")
    if g.input not in g.tensors or g.output not in g.tensors:
        raise CompileError("the graph's input or output tensor is not among its tensors")
    defined = {g.input}
    names: set[str] = set()
    for i, op in enumerate(g.ops):
        if op.name in names:
            raise CompileError(f"layer {i}: duplicate op name {op.name!r}")
        names.add(op.name)
        for t in g.op_inputs(op):
            if t not in defined:
                raise CompileError(f"layer {i} ({op.name}): input {t!r} is not computed before it")
        if op.out in defined:
            raise CompileError(f"layer {i} ({op.name}): output {op.out!r} is written twice")
        check_op(cfg, g, i, op)
        defined.add(op.out)
    if g.output not in defined:
        raise CompileError(f"the graph output {g.output!r} is computed by no op")


# ------------------------------------------------------------------------------------------------------------
# 2. layout
# ------------------------------------------------------------------------------------------------------------
def _lcm(a: int, b: int) -> int:
    return a * b // math.gcd(a, b)


def _group_step(bus: int, *sizes: int) -> int:
    """The smallest number of images whose bytes are a whole number of bus words for every size."""
    step = 1
    for s in sizes:
        step = _lcm(step, bus // math.gcd(s, bus))
    return step


def _flatten_group(cfg: HwConfig, g: ir.Graph, op: ir.PQOp, n: int) -> int:
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


def _per_image(cfg: HwConfig, g: ir.Graph, op: ir.Op, n: int) -> bool:
    """The op addresses single images in external memory (so their byte offsets must be bus aligned)."""
    kind = op_kind(g, op)
    if kind in ("conv", "pool"):
        return True
    return kind == "flatten-linear" and isinstance(op, ir.PQOp) and _flatten_group(cfg, g, op, n) == 0


def image_strides(cfg: HwConfig, g: ir.Graph, n: int) -> dict[str, int]:
    """Layout: bytes from one image to the next of every tensor ([N][h][w][ch] channels-last int8).

    Dense (h*w*ch) unless an op addresses single images of the tensor and h*w*ch is not a whole number of
    bus words: then it is padded to the bus width, and so is every tensor an op shares with it (so that the
    op can address single images of all its tensors, or take the same byte range of all of them)."""
    bus = cfg.bus_bytes
    size = {t: info.size for t, info in g.tensors.items()}
    padded: set[str] = set()
    changed = True
    while changed:
        changed = False
        for op in g.ops:
            ts = [t for t in (*g.op_inputs(op), op.out) if size[t] % bus]
            if ts and (_per_image(cfg, g, op, n) or any(t in padded for t in ts)):
                new = set(ts) - padded
                if new:
                    padded |= new
                    changed = True
    return {t: _align(s, bus) if t in padded else s for t, s in size.items()}


# ------------------------------------------------------------------------------------------------------------
# 3. tiling: each op -> instructions over symbolic addresses
# ------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Ref:
    """A symbolic external address: ``tensor:<name>``, ``proto:<op>``, ``lut:<op>``, ``bias:<op>`` or
    ``stamps``, plus a byte offset; :func:`emit_graph` resolves it after allocation."""

    sym: str
    off: int = 0


@dataclass
class PInsn:
    """An instruction before address resolution: operands are ints, enum names or :class:`Ref`."""

    mnemonic: str
    ops: dict[str, Any]


@dataclass
class Band:
    """Output rows [r0, r1) of a conv computed from input rows [a, b) (loaded as the fmap), with ``pad_t``
    zero rows above them inside the band's window."""

    r0: int
    r1: int
    a: int
    b: int
    pad_t: int


@dataclass
class OpPlan:
    index: int
    op: ir.Op
    kind: str
    insns: list[PInsn]
    tiles: int  # runs (PQ ops), pools or add chunks
    info: dict[str, Any] = field(default_factory=dict)  # tiling facts for the manifest

    def traffic(self, load_bytes: bool = True) -> int:
        """Bytes moved by its loads (or its stores)."""
        which = "load" if load_bytes else "store"
        return sum(int(p.ops["nbytes"]) for p in self.insns if p.mnemonic == which)


def tile_columns_for(cfg: HwConfig, d: int, m: int, n: int, name: str = "") -> int:
    """Columns per tile of a linear op: as many as the activation buffers hold, a multiple of the bus width
    in bytes (so every tile's address stays bus aligned) unless one tile holds all ``n``."""
    fit = min(cfg.ActBytes // d, cfg.OutBytes // m)
    if n <= fit:
        return n
    t = fit - fit % cfg.bus_bytes
    if t < 1:
        raise CompileError(f"layer {name}: {cfg.bus_bytes} columns do not fit the activation buffers")
    return t


def conv_bands(cfg: HwConfig, op: ir.PQOp, h: int, w: int, ch: int, where: str = "") -> list[Band]:
    """Split a conv's output rows into bands whose input rows (halo included) fit the act buffer and whose
    outputs fit the output buffer; every band but the first starts at bus-aligned input and output byte
    offsets. A band reads rows beyond its loaded ones only where they are the fmap's bottom padding.

    With padding >= kernel some output rows see only zero padding: a band whose windows all lie in the top
    padding still loads one (unread) fmap row, and no band starts inside the bottom padding (its fmap would
    be empty and ``pad_t`` cannot reach below it), so such rows join the band above them."""
    oh, ow = conv_out_shape(op, h, w)
    s, p, kh = op.stride, op.pad, op.kh
    row_in, row_out, bus = w * ch, ow * op.m, cfg.bus_bytes

    def rows_in(r0: int, r1: int) -> tuple[int, int]:
        a = max(0, r0 * s - p)  # < h: a band never starts inside the bottom padding
        return a, max(a + 1, min(h, (r1 - 1) * s - p + kh))

    bands: list[Band] = []
    r0 = 0
    while r0 < oh:
        for r1 in range(oh, r0, -1):
            a, b = rows_in(r0, r1)
            if (b - a) * row_in > cfg.ActBytes or (r1 - r0) * row_out > cfg.OutBytes:
                continue
            if r1 < oh and (r1 * s - p >= h or (r1 * row_out) % bus or (rows_in(r1, r1 + 1)[0] * row_in) % bus):
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


def _pq_prelude(op: ir.PQOp, i: int, conv: bool, cfg: HwConfig, d: int) -> list[PInsn]:
    bufs = load().enums["buffer"]
    return [
        PInsn("load", {"buf": bufs["proto"], "nbytes": op.c * op.k * op.v, "addr": Ref(f"proto:{i}")}),
        PInsn("load", {"buf": bufs["lut"], "nbytes": op.c * op.k * op.m * cfg.lut_bytes, "addr": Ref(f"lut:{i}")}),
        PInsn("load", {"buf": bufs["bias"], "nbytes": 4 * op.m, "addr": Ref(f"bias:{i}")}),
        PInsn("shape", {"metric": op.metric, "conv": int(conv), "k": op.k, "v": op.v, "c": op.c, "d": d, "m": op.m}),
        _quant(op.post),
    ]


def _quant(p: ir.Post, mult: int | None = None) -> PInsn:
    return PInsn("quant", {"relu": int(p.relu), "unsigned": int(p.unsigned), "shift": p.shift,
                           "mult": p.mult if mult is None else mult, "bits": p.bits})


def _tensor(name: str, off: int) -> Ref:
    return Ref(f"tensor:{name}", off)


def plan_op(cfg: HwConfig, g: ir.Graph, i: int, op: ir.Op, n: int, strides: dict[str, int]) -> OpPlan:
    """The instructions of op ``i`` over ``n`` images (tables loaded once, images looped inside)."""
    kind = op_kind(g, op)
    bufs = load().enums["buffer"]
    act = bufs["act"]
    if isinstance(op, ir.AddOp):
        total = n * strides[op.out]
        chunk = min(cfg.ActBytes, cfg.OutBytes) // cfg.bus_bytes * cfg.bus_bytes
        insns = [_quant(op.post, mult=0)]
        for off in range(0, total, chunk):
            nb = min(chunk, total - off)
            insns += [PInsn("load", {"buf": act, "nbytes": nb, "addr": _tensor(op.a, off)}),
                      PInsn("load", {"buf": bufs["out"], "nbytes": nb, "addr": _tensor(op.b, off)}),
                      PInsn("add", {"n": nb, "ma": op.ma, "mb": op.mb}),
                      PInsn("store", {"nbytes": nb, "addr": _tensor(op.out, off)})]
        return OpPlan(i, op, kind, insns, -(-total // chunk), {"chunk_bytes": chunk})
    h, w, ch = g.tensors[op.inp].shape
    s_in, s_out = strides[op.inp], strides[op.out]
    if isinstance(op, ir.PoolOp):
        insns = [PInsn("fmap", {"h": h, "w": w, "ch": ch}), _quant(op.post)]
        for im in range(n):
            insns += [PInsn("load", {"buf": act, "nbytes": h * w * ch, "addr": _tensor(op.inp, im * s_in)}),
                      PInsn("pool", {}),
                      PInsn("store", {"nbytes": ch, "addr": _tensor(op.out, im * s_out)})]
        return OpPlan(i, op, kind, insns, n, {"images": n})
    d, m = ch * op.kh * op.kw, op.m
    where = f"layer {i} ({op.name})"
    if kind == "linear" and s_in == d and s_out == m:  # all images as columns, non-conv mode
        t = tile_columns_for(cfg, d, m, n, op.name)
        insns = _pq_prelude(op, i, False, cfg, d)
        for j in range(0, n, t):
            tn = min(t, n - j)
            insns += [PInsn("load", {"buf": act, "nbytes": tn * d, "addr": _tensor(op.inp, j * d)}),
                      PInsn("run", {"n": tn}),
                      PInsn("store", {"nbytes": tn * m, "addr": _tensor(op.out, j * m)})]
        return OpPlan(i, op, kind, insns, -(-n // t), {"tile_columns": t})
    if kind == "linear":  # a padded tensor: one image at a time
        insns = _pq_prelude(op, i, False, cfg, d)
        for im in range(n):
            insns += [PInsn("load", {"buf": act, "nbytes": d, "addr": _tensor(op.inp, im * s_in)}),
                      PInsn("run", {"n": 1}),
                      PInsn("store", {"nbytes": m, "addr": _tensor(op.out, im * s_out)})]
        return OpPlan(i, op, kind, insns, n, {"tile_columns": 1})
    if kind == "flatten-linear":
        size = h * w * ch
        if size > cfg.ActBytes:
            raise CompileError(f"{where}: the flattened fmap {h}x{w}x{ch} = {size} bytes does not fit buffer 'act' "
                               f"(ActBytes={cfg.ActBytes} of config '{cfg.name}'); tiling over d is not supported")
        grp = _flatten_group(cfg, g, op, n) if (s_in, s_out) == (size, m) else 0
        insns = _pq_prelude(op, i, True, cfg, d)
        if grp:  # images stacked as fmap rows; the window (h x w, stride h) takes one image per column
            last = None
            for j in range(0, n, grp):
                gn = min(grp, n - j)
                if gn != last:
                    insns += [PInsn("fmap", {"h": gn * h, "w": w, "ch": ch}),
                              PInsn("conv", {"stride": h, "kh": h, "kw": w, "pad_t": 0, "pad_l": 0, "out_w": 1})]
                    last = gn
                insns += [PInsn("load", {"buf": act, "nbytes": gn * size, "addr": _tensor(op.inp, j * size)}),
                          PInsn("run", {"n": gn}),
                          PInsn("store", {"nbytes": gn * m, "addr": _tensor(op.out, j * m)})]
            return OpPlan(i, op, kind, insns, -(-n // grp), {"images_per_run": grp})
        insns += [PInsn("fmap", {"h": h, "w": w, "ch": ch}),
                  PInsn("conv", {"stride": 1, "kh": h, "kw": w, "pad_t": 0, "pad_l": 0, "out_w": 1})]
        for im in range(n):
            insns += [PInsn("load", {"buf": act, "nbytes": size, "addr": _tensor(op.inp, im * s_in)}),
                      PInsn("run", {"n": 1}),
                      PInsn("store", {"nbytes": m, "addr": _tensor(op.out, im * s_out)})]
        return OpPlan(i, op, kind, insns, n, {"images_per_run": 1})
    # conv: per image, in bands of output rows
    bands = conv_bands(cfg, op, h, w, ch, where)
    _oh, ow = conv_out_shape(op, h, w)
    insns = _pq_prelude(op, i, True, cfg, d)
    state: tuple[int, int] | None = None
    for im in range(n):
        for bd in bands:
            if state is None or state[0] != bd.b - bd.a:
                insns.append(PInsn("fmap", {"h": bd.b - bd.a, "w": w, "ch": ch}))
            if state is None or state[1] != bd.pad_t:
                insns.append(PInsn("conv", {"stride": op.stride, "kh": op.kh, "kw": op.kw, "pad_t": bd.pad_t,
                                            "pad_l": op.pad, "out_w": ow}))
            state = (bd.b - bd.a, bd.pad_t)
            rows = bd.r1 - bd.r0
            insns += [PInsn("load", {"buf": act, "nbytes": (bd.b - bd.a) * w * ch,
                                     "addr": _tensor(op.inp, im * s_in + bd.a * w * ch)}),
                      PInsn("run", {"n": rows * ow}),
                      PInsn("store", {"nbytes": rows * ow * m, "addr": _tensor(op.out, im * s_out + bd.r0 * ow * m)})]
    return OpPlan(i, op, kind, insns, n * len(bands),
                  {"bands": len(bands), "band_rows": [[bd.r0, bd.r1] for bd in bands]})


# ------------------------------------------------------------------------------------------------------------
# 4. memory allocation of the activation tensors
# ------------------------------------------------------------------------------------------------------------
@dataclass
class Allocation:
    offsets: dict[str, int]  # tensor -> byte offset in the activation arena
    sizes: dict[str, int]  # tensor -> bytes (all images, bus aligned)
    live: dict[str, tuple[int, int]]  # tensor -> (op that writes it, last op that reads it); -1 / len(ops): pinned
    peak: int  # arena bytes used
    total: int  # sum of all tensors' bytes (the arena without reuse)


def liveness(g: ir.Graph) -> dict[str, tuple[int, int]]:
    """(defining op, last reading op) of every tensor the ops touch; the graph input is defined at -1 and the
    input and output live to the end (len(ops)), so the program can be run again on the same image."""
    end = len(g.ops)
    live: dict[str, tuple[int, int]] = {g.input: (-1, end)}
    for i, op in enumerate(g.ops):
        live[op.out] = (i, end if op.out == g.output else i)
        for t in g.op_inputs(op):
            d0, last = live[t]
            live[t] = (d0, max(last, i))
    return live


def allocate(g: ir.Graph, sizes: dict[str, int], align: int = 8) -> Allocation:
    """First-fit allocation over the op list: an op's output is placed (at the lowest offset where it
    overlaps no live tensor) while its inputs are still live; a tensor's bytes are free after its last use."""
    live = liveness(g)
    offsets: dict[str, int] = {}
    active: dict[str, tuple[int, int]] = {}  # tensor -> (start, end)

    def place(t: str) -> None:
        need = _align(max(sizes[t], 1), align)
        at = 0
        for s, e in sorted(active.values()):
            if s - at >= need:
                break
            at = max(at, e)
        offsets[t] = at
        active[t] = (at, at + need)

    place(g.input)
    for i, op in enumerate(g.ops):
        place(op.out)
        for t in [*g.op_inputs(op), op.out]:
            if live[t][1] <= i:
                active.pop(t, None)
    used = {t: _align(max(sizes[t], 1), align) for t in offsets}
    peak = max(offsets[t] + used[t] for t in offsets)
    return Allocation(offsets, {t: sizes[t] for t in offsets}, {t: live[t] for t in offsets}, peak,
                      sum(used.values()))


# ------------------------------------------------------------------------------------------------------------
# 5. emission
# ------------------------------------------------------------------------------------------------------------
def lut_bytes(cfg: HwConfig, lut: np.ndarray) -> np.ndarray:
    """Table entries as LUT_BYTES little-endian bytes each (two's complement)."""
    v = lut.astype(np.int64).reshape(-1) & ((1 << (8 * cfg.lut_bytes)) - 1)
    return np.stack([(v >> (8 * i)) & 0xFF for i in range(cfg.lut_bytes)], axis=1).astype(np.uint8).reshape(-1)


@dataclass
class Program:
    mem: np.ndarray  # initial memory image, bytes
    insn_base: int
    words: list[int]
    manifest: dict[str, Any]
    segments: list[tuple[int, np.ndarray, str]]
    plans: list[OpPlan] = field(default_factory=list)
    allocation: Allocation | None = None


def _shape_str(shape: tuple[int, ...] | list[int]) -> str:
    return "x".join(str(s) for s in shape)


def _op_entry(cfg: HwConfig, g: ir.Graph, plan: OpPlan, addr: dict[str, int]) -> dict[str, Any]:
    op, i = plan.op, plan.index
    ins = g.op_inputs(op)
    in_shape, out_shape = list(g.tensors[ins[0]].shape), list(g.tensors[op.out].shape)
    e: dict[str, Any] = {
        "index": i, "name": op.name, "kind": plan.kind, "inputs": ins, "output": op.out,
        "in_shape": in_shape, "out_shape": out_shape,
        "in_addr": addr[f"tensor:{ins[0]}"], "out_addr": addr[f"tensor:{op.out}"],
        "tiles": plan.tiles, **plan.info,
        "loaded_bytes": plan.traffic(True), "stored_bytes": plan.traffic(False), "n_insns": len(plan.insns) + 1,
    }
    size = g.tensors[ins[0]].size
    if isinstance(op, ir.PQOp):
        tb = op.c * op.k * op.v + op.c * op.k * op.m * cfg.lut_bytes + 4 * op.m
        e.update({"d": in_shape[2] * op.kh * op.kw, "m": op.m, "c": op.c, "k": op.k, "v": op.v,
                  "metric": op.metric, "kh": op.kh, "kw": op.kw, "stride": op.stride, "pad": op.pad,
                  "relu": op.post.relu, "unsigned": op.post.unsigned, "mult": op.post.mult, "shift": op.post.shift,
                  "bits": op.post.bits, "proto_addr": addr[f"proto:{i}"], "lut_addr": addr[f"lut:{i}"],
                  "bias_addr": addr[f"bias:{i}"], "table_bytes": tb})
    else:
        e.update({"d": size, "m": out_shape[2] if isinstance(op, ir.PoolOp) else size, "c": 0, "k": 0, "v": 0,
                  "relu": op.post.relu, "unsigned": op.post.unsigned, "shift": op.post.shift, "bits": op.post.bits,
                  "table_bytes": 0})
        if isinstance(op, ir.AddOp):
            e.update({"ma": op.ma, "mb": op.mb, "b_addr": addr[f"tensor:{op.b}"]})
        else:
            e["mult"] = op.post.mult
    if "kind" in op.info:
        e["model_kind"] = _jsonable(op.info["kind"])
    for k, val in op.info.items():
        e.setdefault(k, _jsonable(val))  # the front end's facts (scales, ...) never replace the back end's
    return e


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    return v


def emit_graph(cfg: HwConfig, g: ir.Graph, x: np.ndarray, name: str | None = None) -> Program:
    """Lay out memory and emit the instruction stream that runs graph ``g`` on the integer inputs ``x``
    ([N, h, w, ch] channels-last, or [N, h*w*ch]) of its input tensor."""
    check_graph(cfg, g)
    name = name or g.name
    tin = g.tensors[g.input]
    x = np.asarray(x)
    n = int(x.shape[0]) if x.ndim else 0
    if n < 1 or x.size != n * tin.size or x.ndim not in (2, 4) or list(x.shape[1:]) not in (
            [tin.size], list(tin.shape)):
        raise CompileError(f"inputs must be [n, {_shape_str(tin.shape).replace('x', ', ')}] (or [n, {tin.size}]) "
                           f"with n >= 1, got {list(x.shape)}")
    if x.min() < -128 or x.max() > 127:
        raise CompileError(f"inputs must be int8 values, got {int(x.min())}..{int(x.max())}")
    bus = cfg.bus_bytes
    strides = image_strides(cfg, g, n)
    plans = [plan_op(cfg, g, i, op, n, strides) for i, op in enumerate(g.ops)]
    n_insns = 1 + sum(len(p.insns) + 1 for p in plans) + 1
    addr: dict[str, int] = {"stamps": _align(n_insns * 8, bus)}
    at = addr["stamps"] + 8 * (1 + len(g.ops))
    segs: list[tuple[int, np.ndarray, str]] = []
    table_base = at
    for i, op in enumerate(g.ops):
        if not isinstance(op, ir.PQOp):
            continue
        for key, data, what in (
                ("proto", op.protos.astype(np.int8).view(np.uint8).reshape(-1),
                 f"prototypes [c={op.c}][k={op.k}][v={op.v}] int8"),
                ("lut", lut_bytes(cfg, op.lut), f"table [c][k][m={op.m}] {cfg.LutW}-bit"),
                ("bias", op.bias.astype("<i4").view(np.uint8).reshape(-1), "bias [m] int32")):
            addr[f"{key}:{i}"] = at
            segs.append((at, data, f"layer {i} ({op.name}) {what}"))
            at = _align(at + data.size, bus)
    table_bytes = at - table_base
    arena = at
    sizes = {t: n * strides[t] for t in g.tensors}
    alloc = allocate(g, sizes, bus)
    for t, off in alloc.offsets.items():
        addr[f"tensor:{t}"] = arena + off
    mem_bytes = _align(arena + alloc.peak, 4096)
    if mem_bytes > 1 << cfg.AxiAddrWidth:
        raise CompileError(f"the memory image needs {mem_bytes} bytes (tables {table_bytes}, activations "
                           f"{alloc.peak} for {n} inputs): beyond the {cfg.AxiAddrWidth}-bit address space of config "
                           f"'{cfg.name}'; compile fewer inputs (--count)")
    xin = np.zeros((n, strides[g.input]), np.int64)
    xin[:, : tin.size] = x.reshape(n, tin.size)
    segs.append((addr[f"tensor:{g.input}"], xin.astype(np.int8).view(np.uint8).reshape(-1),
                 f"input {g.input} [{n}][{_shape_str(tin.shape)}] int8, {strides[g.input]} bytes per image"))

    def resolve(p: PInsn) -> int:
        ops = {k: (addr[v.sym] + v.off if isinstance(v, Ref) else v) for k, v in p.ops.items()}
        return encode(p.mnemonic, **ops)

    words: list[int] = [encode("stamp", addr=addr["stamps"])]
    for i, p in enumerate(plans):
        words += [resolve(q) for q in p.insns]
        words.append(encode("stamp", addr=addr["stamps"] + 8 * (i + 1)))
    words.append(encode("end"))
    assert len(words) == n_insns
    ib = np.frombuffer(b"".join(w.to_bytes(8, "little") for w in words), np.uint8)
    segs.insert(0, (0, ib, f"instruction stream, {len(words)} instructions"))
    mem = np.zeros(mem_bytes, np.uint8)
    for a, data, _ in segs:
        mem[a : a + data.size] = data

    def region(t: str) -> dict[str, Any]:
        info = g.tensors[t]
        return {"addr": addr[f"tensor:{t}"], "shape": [n, info.size], "tensor": list(info.shape),
                "stride": strides[t], "name": t, "scale": info.scale, "bits": info.bits, "unsigned": info.unsigned}

    manifest: dict[str, Any] = {
        "model": name,
        "config": cfg.name,
        "config_params": dict(cfg.params),
        "image": "mem.hex",
        "program": "program.asm",
        "mem_bytes": mem_bytes,
        "insn_base": 0,
        "n_insns": len(words),
        "n_images": n,
        "input": region(g.input),
        "output": region(g.output),
        "stamps": {"addr": addr["stamps"], "labels": ["start"] + [op.name for op in g.ops]},
        "host_layers": {"prefix": list(g.host_prefix), "suffix": list(g.host_suffix)},
        "memory": {
            "instructions": len(words) * 8, "tables": table_bytes, "arena_addr": arena,
            "arena_peak": alloc.peak, "arena_without_reuse": alloc.total,
            "tensors": {t: {"addr": addr[f"tensor:{t}"], "bytes": alloc.sizes[t], "stride": strides[t],
                            "shape": list(g.tensors[t].shape), "live": list(alloc.live[t])}
                        for t in alloc.offsets},
        },
        "layers": [_op_entry(cfg, g, p, addr) for p in plans],
    }
    return Program(mem, 0, words, manifest, segs, plans, alloc)


# ------------------------------------------------------------------------------------------------------------
# 6. the per-op report
# ------------------------------------------------------------------------------------------------------------
REPORT_COLUMNS = [("op", "<24"), ("kind", "<15"), ("in", "<9"), ("out", "<9"), ("K", ">3"), ("v", ">3"),
                  ("c", ">4"), ("m", ">4"), ("table B", ">8"), ("loaded B", ">9"), ("stored B", ">9"),
                  ("tiles", ">6"), ("pred. cycles", ">13")]


def report_rows(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per op (and a ``total`` row) from a manifest written by :func:`write_build` (predicted cycles
    are the golden simulator's stamps; 0 when the program was not simulated)."""
    rows = []
    for lay in manifest["layers"]:
        rows.append({
            "op": lay["name"], "kind": lay.get("kind", "linear"),
            "in": _shape_str(lay.get("in_shape", [1, 1, lay["d"]])), "out": _shape_str(lay.get("out_shape",
                                                                                          [1, 1, lay["m"]])),
            "K": lay["k"] or "-", "v": lay["v"] or "-", "c": lay["c"] or "-",
            "m": lay.get("out_shape", [0, 0, lay["m"]])[2], "table B": lay["table_bytes"],
            "loaded B": lay.get("loaded_bytes", 0), "stored B": lay.get("stored_bytes", 0),
            "tiles": lay["tiles"], "pred. cycles": lay.get("predicted_cycles", 0),
        })
    tot: dict[str, Any] = {k: "" for k, _ in REPORT_COLUMNS}
    tot["op"] = "total"
    for k in ("table B", "loaded B", "stored B", "tiles", "pred. cycles"):
        tot[k] = sum(int(r[k]) for r in rows)
    exp = manifest.get("expected", {})
    if exp.get("sim_cycle_estimate") is not None:
        tot["pred. cycles"] = int(exp["sim_cycle_estimate"])  # includes the start and the stamps
    return [*rows, tot]


MEASURED_COLUMNS = [("RTL cycles", ">11"), ("per input", ">10"), ("RTL/pred.", ">9")]


def format_report(manifest: dict[str, Any], rows: list[dict[str, Any]] | None = None,
                  measured: list[int] | None = None, total_measured: int | None = None) -> str:
    """The report as text: a table of :func:`report_rows`, the host layers and the memory figures.
    ``measured`` (one cycle count per op, e.g. from the RTL's stamps) and ``total_measured`` add the columns
    of :data:`MEASURED_COLUMNS`: cycles, cycles per input and the ratio to the prediction."""
    rows = [dict(r) for r in (rows if rows is not None else report_rows(manifest))]
    cols = list(REPORT_COLUMNS)
    if measured is not None:
        cols += MEASURED_COLUMNS
        n = max(1, int(manifest.get("n_columns", manifest.get("n_images", 1)) or 1))
        for r, cyc in zip(rows, [*measured, total_measured], strict=True):
            pred = int(r["pred. cycles"] or 0)
            r.update({"RTL cycles": "" if cyc is None else cyc, "per input": "" if cyc is None else f"{cyc / n:.0f}",
                      "RTL/pred.": f"{cyc / pred:.3f}" if cyc is not None and pred else "-"})
    lines = ["  " + " ".join(f"{k:{f}}" for k, f in cols)]
    for r in rows:
        if r["op"] == "total":
            lines.append("  " + "-" * (len(lines[0]) - 2))
        lines.append("  " + " ".join(f"{r[k]!s:{f}}" for k, f in cols))
    host = manifest.get("host_layers", {})
    if host.get("prefix") or host.get("suffix"):
        lines.append(f"  host layers: before the accelerator {host.get('prefix') or '-'}, "
                     f"after it {host.get('suffix') or '-'}")
    mem = manifest.get("memory")
    if mem:
        lines.append(f"  memory: {mem['instructions']} B instructions, {mem['tables']} B tables, activations "
                     f"{mem['arena_peak']} B peak ({mem['arena_without_reuse']} B without reuse), "
                     f"{manifest['mem_bytes']} B image")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------------
# build directory
# ------------------------------------------------------------------------------------------------------------
def simulate(cfg: HwConfig, prog: Program) -> sim.Result:
    return sim.run(cfg, prog.mem, prog.insn_base, strict=True, max_insns=max(1_000_000, 2 * len(prog.words)))


def write_build(outdir: str | Path, cfg: HwConfig, prog: Program, res: sim.Result | None = None,
                extra: dict[str, np.ndarray] | None = None,
                manifest_extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the build directory (simulating first unless ``res`` is given) through :func:`build.write`:
    sealed with the digest of every file, atomic, and never replacing anything but an intact earlier build.
    The manifest's ``expected`` holds what a run must reproduce: the golden simulator's error code,
    retired instructions, cycle estimate and (when the program has an output region) ``expected_output.npy``."""
    res = res or simulate(cfg, prog)
    manifest = dict(prog.manifest)
    manifest["expected"] = {"sim_insns": res.insn_count, "sim_cycle_estimate": res.cycles,
                            "sim_err_code": res.err_code, "sim_err_pc": res.err_pc}
    if "stamps" in manifest and manifest["layers"] and res.done:
        # the simulator's stamps hold its cycle model: per-layer predictions for the reports
        st = read_stamps(manifest, res.mem)
        manifest["layers"] = [{**lay, "predicted_cycles": st[i + 1] - st[i]}
                              for i, lay in enumerate(manifest["layers"])]
    expected = read_output(prog.manifest, res.mem) if "output" in manifest else None
    if expected is not None:
        manifest["expected"]["output"] = "expected_output.npy"
    manifest.update(manifest_extra or {})
    title = f"model {prog.manifest['model']}"  # hexfmt escapes comment text
    files: dict[str, Callable[[Path], None]] = {
        str(manifest["image"]): lambda p: hexfmt.write_image(p, prog.segments, cfg.bus_bytes, title=title),
        str(manifest["program"]): lambda p: p.write_text(listing(prog.insn_base, prog.words), encoding="ascii"),
    }
    if expected is not None:
        files["expected_output.npy"] = lambda p: np.save(p, expected)
    for k, arr in (extra or {}).items():
        files[f"{k}.npy"] = lambda p, arr=arr: np.save(p, arr)
        manifest.setdefault("files", {})[k] = f"{k}.npy"
    return build.write(outdir, manifest, files)


def raw_program(cfg: HwConfig, words: list[int], data: list[tuple[int, np.ndarray, str]] | None = None,
                mem_bytes: int = 4096, name: str = "raw") -> Program:
    """A hand-written instruction stream at address 0 plus data segments (for tests of the error paths
    and of single instructions); its manifest has no layers and no output."""
    ib = np.frombuffer(b"".join(w.to_bytes(8, "little") for w in words), np.uint8)
    segs = [(0, ib, f"instruction stream, {len(words)} words"), *(data or [])]
    mem = np.zeros(mem_bytes, np.uint8)
    for a, d, _ in segs:
        mem[a : a + d.size] = d
    manifest = {
        "model": name, "config": cfg.name,
        "config_params": dict(cfg.params), "image": "mem.hex", "program": "program.asm", "mem_bytes": mem_bytes,
        "insn_base": 0, "n_insns": len(words), "layers": [],
    }
    return Program(mem, 0, list(words), manifest, segs)
