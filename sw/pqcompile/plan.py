"""What the back end's planning works with: instructions over symbolic addresses (:class:`PInsn`,
:class:`Ref`), one op's plan (:class:`OpPlan`), and the limit checks every op handler shares. A leaf module
of the back end: the op handlers (:mod:`pqcompile.ops`) and :mod:`pqcompile.backend` both import it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from . import ir, layout
from .errors import CompileError
from .isa import field_limit, field_max
from .spec import HwConfig, load


def align(x: int, a: int = 8) -> int:
    return -(-x // a) * a


def shape_str(shape: tuple[int, ...] | list[int]) -> str:
    return "x".join(str(s) for s in shape)


@dataclass(frozen=True)
class Ref:
    """A symbolic external address: ``tensor:<name>``, ``<table>:<op index>`` (a table an op handler lays
    out, e.g. ``proto:3``) or ``stamps``, plus a byte offset; emission resolves it after allocation."""

    sym: str
    off: int = 0


def tensor(name: str, off: int) -> Ref:
    return Ref(f"tensor:{name}", off)


@dataclass
class PInsn:
    """An instruction before address resolution: operands are ints, enum names or :class:`Ref`. ``tset``:
    on a table ``load`` or a ``shape``, the op's table set it belongs to (an op whose table is tiled over m
    has several: :func:`pqcompile.backend.schedule` gives each its bank)."""

    mnemonic: str
    ops: dict[str, Any]
    tset: int = 0

    def copy(self, ops: dict[str, Any] | None = None) -> PInsn:
        """The same instruction with a copy of its operands (or ``ops``)."""
        return PInsn(self.mnemonic, dict(self.ops) if ops is None else ops, self.tset)


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


def buffer(name: str) -> int:
    """The ``load.buf`` value of an on-chip buffer (the spec's enum)."""
    return load().enums["buffer"][name]


def quant(p: ir.Post, mult: int | None = None) -> PInsn:
    return PInsn("quant", {"relu": int(p.relu), "unsigned": int(p.unsigned), "shift": p.shift,
                           "mult": p.mult if mult is None else mult, "bits": p.bits})


# ------------------------------------------------------------------------------------------------------------
# limit checks shared by the op handlers
# ------------------------------------------------------------------------------------------------------------
def check_post(cfg: HwConfig, where: str, mult: int, shift: int, bits: int, unsigned: bool) -> None:
    if not (0 <= shift <= field_limit("quant", "shift") and 0 <= mult <= field_max("quant", "mult")):
        raise CompileError(f"{where}: requantization mult={mult} shift={shift} out of range")
    if not 2 <= bits <= cfg.ActW:
        raise CompileError(f"{where}: activation width {bits} is outside 2..ActW={cfg.ActW}")
    if unsigned and bits >= cfg.ActW:
        raise CompileError(f"{where}: an unsigned output needs bits < ActW={cfg.ActW}, got {bits}")


def channel_blocks(cfg: HwConfig, g: ir.Graph, t: str) -> list[tuple[int, int]] | None:
    """The channel blocks [c0, c1) of tensor ``t`` when it is stored *channel-blocked*, else None (channels-last,
    as every other tensor). A fmap [h][w][ch] that a global pool reads and that the act buffer cannot hold
    whole is stored block by block: block [c0, c1) of an image is the dense [h][w][c1-c0] at byte c0*h*w of
    the image, so that the pool loads, pools and stores one block at a time. Its producer, a PQ conv, writes
    it so: its table is tiled over m into the same blocks (``ops.pq``). Blocks are whole bus words of
    channels (each block's pooled bytes are stored at an aligned offset) and whole groups of NOUT outputs,
    as many channels as the act buffer and the producer's table buffer allow; the last block is smaller.
    CompileError, naming the pool, when the pool's fmap does not fit and cannot be blocked: ``t`` is the
    graph's input or output, not written by a PQ op, read by another op too, or one block of a bus word of
    channels does not fit."""
    readers = [(i, op) for i, op in enumerate(g.ops) if t in g.op_inputs(op)]
    pools = [(i, op) for i, op in readers if isinstance(op, ir.PoolOp)]
    h, w, ch = g.tensors[t].shape
    if not pools or h * w * ch <= cfg.ActBytes:
        return None
    i, pool = pools[0]
    where = (f"layer {i} ({pool.name} pool): global pooling needs the whole fmap {h}x{w}x{ch} = {h * w * ch} bytes "
             f"in buffer 'act', config '{cfg.name}' has ActBytes={cfg.ActBytes}")
    producer = next((op for op in g.ops if op.out == t), None)
    if t in (g.input, g.output) or len(readers) > 1 or not isinstance(producer, ir.PQOp):
        raise CompileError(f"{where}; it is pooled in channel blocks only when a PQ conv writes it for the pool "
                           "alone (here it is the graph's input or output, another op reads it, or no PQ op "
                           "writes it)")
    unit = math.lcm(cfg.bus_bytes, cfg.NOUT)
    pack = layout.packs(cfg, producer.lut)
    best = 0
    for cb in range(unit, ch, unit):
        if h * w * cb <= cfg.ActBytes and layout.lut_bytes(cfg, producer.c, producer.k, cb, pack) <= cfg.lut_cap:
            best = cb
    if best == 0:
        tbl = layout.lut_bytes(cfg, producer.c, producer.k, unit, pack)
        raise CompileError(f"{where}; a block of {unit} channels (whole bus words and output groups) needs "
                           f"{h * w * unit} bytes of act and {tbl} of table ({producer.name}): too large to pool "
                           "in channel blocks")
    return [(c0, min(ch, c0 + best)) for c0 in range(0, ch, best)]


def check_fits(cfg: HwConfig, where: str, items: list[tuple[str, int, int, str]]) -> None:
    """Each (what, bytes needed, bytes the buffer has, the buffer's parameter) fits."""
    for what, need, have, key in items:
        if need > have:
            raise CompileError(f"{where}: {what} needs {need} bytes, config '{cfg.name}' has {key}={have}")
