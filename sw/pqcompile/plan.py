"""What the back end's planning works with: instructions over symbolic addresses (:class:`PInsn`,
:class:`Ref`), one op's plan (:class:`OpPlan`), and the limit checks every op handler shares. A leaf module
of the back end: the op handlers (:mod:`pqcompile.ops`) and :mod:`pqcompile.backend` both import it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import ir
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


def check_fits(cfg: HwConfig, where: str, items: list[tuple[str, int, int, str]]) -> None:
    """Each (what, bytes needed, bytes the buffer has, the buffer's parameter) fits."""
    for what, need, have, key in items:
        if need > have:
            raise CompileError(f"{where}: {what} needs {need} bytes, config '{cfg.name}' has {key}={have}")
