"""Keep results on chip (docs/compiler.md, "Results on chip"): a pass over the op plans that lets an op's
result stay in an act bank (or the output buffer) as the input of the ops after it, instead of a ``store``
and a ``load`` through external memory.

The act buffer has two banks and every ``run``, ``pool`` and ``add`` names the bank it reads (``src``) and
where its result goes (``dst``: the output buffer or the other act bank). The pass walks the ops in order
and tracks what the three on-chip places (``act0``, ``act1``, ``out``) hold:

- an op is *single-shot* when its plan is one compute instruction over whole tensors: its operands loaded
  from offset 0 (whole, or the first bytes of them that a strided window reads) and its result stored
  whole; only those take part (tiled ops, bands, several images
  per tensor keep their loads and stores, into a bank that holds nothing still needed);
- an operand found on chip is not loaded (``src`` names its bank; an ``add`` swaps its operands, and
  ``ma`` / ``mb``, when its first operand is in the output buffer and its second in an act bank);
- a result goes to a free act bank (one whose tensor is dead, never the bank the op reads) when every op
  that reads it is single-shot and reads it from an act bank; its ``store`` is then dropped: it never
  reaches memory. Otherwise it goes to the output buffer and its ``store`` stays, unless every reader
  took it from there (an ``add``'s second operand) and it is not the graph's output;
- a tensor kept only in an act bank must stay there until its last reader. When an op would overwrite it
  earlier (or a reader cannot take it from its bank), the pass starts again with that tensor stored.

The stream means the same as the plans' own: every op reads the same bytes (the golden simulator checks
the compiled program against the model), only fewer of them cross the AXI master.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from . import ir
from .plan import OpPlan, PInsn, Ref
from .sim import COMPUTE, out_end
from .spec import HwConfig, load


@dataclass
class _Shot:
    """The parts of a single-shot plan: the compute instruction, the loads of its act operand (and, for an
    ``add``, of its output-buffer operand), and the store of its result (indices into the plan)."""

    compute: int
    act_load: int
    act_tensor: str
    out_load: int | None
    out_tensor: str | None
    store: int


def _tensor_of(q: PInsn) -> tuple[str, int] | None:
    a = q.ops.get("addr")
    if isinstance(a, Ref) and a.sym.startswith("tensor:"):
        return a.sym[len("tensor:"):], a.off
    return None


def single_shot(g: ir.Graph, plan: OpPlan, sizes: dict[str, int], data: dict[str, int]) -> _Shot | None:
    """The single-shot parts of ``plan`` (one compute instruction, whole-tensor loads and store), or None.
    ``sizes``: each tensor's bytes in memory (all images, padding included); ``data``: its bytes without the
    padding after the last image (a transfer from offset 0 of at least ``data`` bytes moves it whole)."""
    buffers = load().enums["buffer"]
    comp = [k for k, q in enumerate(plan.insns) if q.mnemonic in COMPUTE]
    if len(comp) != 1:
        return None
    c = comp[0]
    op = plan.op
    loads = [(k, q) for k, q in enumerate(plan.insns) if q.mnemonic == "load" and q.ops["buf"] in (
        buffers["act"], buffers["out"])]
    stores = [(k, q) for k, q in enumerate(plan.insns) if q.mnemonic == "store"]
    if len(stores) != 1 or len(loads) != (2 if isinstance(op, ir.AddOp) else 1):
        return None

    def whole(q: PInsn, t: str | None, prefix: bool = False) -> bool:
        """``q`` moves all of tensor ``t`` (``prefix``: its first bytes, e.g. a conv whose window never
        reaches the last rows)."""
        ref = _tensor_of(q)
        nb = int(q.ops["nbytes"])
        return ref is not None and t is not None and ref == (t, 0) and nb <= sizes[t] and (prefix or nb >= data[t])

    ks, qs = stores[0]
    if ks < c or not whole(qs, op.out):
        return None
    act = [(k, q) for k, q in loads if q.ops["buf"] == buffers["act"]]
    out = [(k, q) for k, q in loads if q.ops["buf"] == buffers["out"]]
    if len(act) != 1 or any(k > c for k, _ in loads):
        return None
    ka, qa = act[0]
    ta = _tensor_of(qa)
    if ta is None or not whole(qa, ta[0], prefix=True):
        return None
    if isinstance(op, ir.AddOp):
        if len(out) != 1:
            return None
        kb, qb = out[0]
        tb = _tensor_of(qb)
        if tb is None or not whole(qb, tb[0], prefix=True):
            return None
        return _Shot(c, ka, ta[0], kb, tb[0], ks)
    return _Shot(c, ka, ta[0], None, None, ks)


def out_halves(cfg: HwConfig) -> bool:
    """The output buffer can be used in halves (``store.half``): OutBytes/2 is whole bus words."""
    return cfg.OutBytes >= 2 * cfg.bus_bytes


def _alternate_out_halves(cfg: HwConfig, insns: list[PInsn]) -> None:
    """Put every other output segment of a plan in the second half of the output buffer (``run`` ``ooff`` +
    OutBytes/2, ``store`` ``half``), so that a segment's store overlaps the next segment's run (the
    controller tracks the halves apart: docs/theory.md, "Decoupled units"). A segment is the stretch from
    an act ``load`` to the next; an *output segment* one with stores, whose `run`s write into the output
    buffer's first half and whose stores read only the first half, after its last such `run`. Nothing
    changes unless every segment that writes the output buffer is an output segment and every compute
    instruction writing it is a `run` (a `pool` or `add` writes from byte 0)."""
    if not out_halves(cfg):
        return
    half = cfg.OutBytes // 2
    spec = load()
    act, to_out = spec.enums["buffer"]["act"], spec.enums["target"]["out"]
    segs: list[list[PInsn]] = [[]]
    for q in insns:
        if q.mnemonic == "load" and q.ops["buf"] == act and any(x.mnemonic in COMPUTE for x in segs[-1]):
            segs.append([])
        segs[-1].append(q)
    out_segs = []
    for seg in segs:
        writes = [q for q in seg if q.mnemonic in COMPUTE and q.ops.get("dst", to_out) == to_out]
        stores = [k for k, q in enumerate(seg) if q.mnemonic == "store"]
        if not writes and not stores:
            continue
        if any(q.mnemonic != "run" for q in writes) or not stores or not writes:
            return
        last = max(k for k, q in enumerate(seg) if any(q is w for w in writes))
        ends = [out_end(int(q.ops.get("ooff", 0)), int(q.ops["n"]), int(q.ops.get("ostride", 0)), _m(insns, q))
                for q in writes]
        if min(stores) < last or max(ends) > half or any(int(seg[k].ops["nbytes"]) > half for k in stores):
            return
        out_segs.append((writes, [seg[k] for k in stores]))
    for writes, stores in out_segs[1::2]:
        for q in writes:
            q.ops["ooff"] = int(q.ops.get("ooff", 0)) + half
        for q in stores:
            q.ops["half"] = 1


def _m(insns: list[PInsn], run: PInsn) -> int:
    """The m of the ``shape`` before ``run`` in ``insns``."""
    m = 0
    for q in insns:
        if q.mnemonic == "shape":
            m = int(q.ops["m"])
        if q is run:
            return m
    raise ValueError("the run is not in the plan")


class _Restart(Exception):
    def __init__(self, tensor: str) -> None:
        self.tensor = tensor


def keep_on_chip(cfg: HwConfig, g: ir.Graph, plans: list[OpPlan], sizes: dict[str, int],
                 data: dict[str, int] | None = None, keep: Sequence[str] = ()) -> dict[str, str]:
    """Rewrite ``plans`` (in place) so that results stay on chip where they can (module doc). ``sizes``: the
    tensors' bytes in memory, ``data``: the same without the padding after the last image (default
    ``sizes``). ``keep``: tensors besides the graph output that ops after ``g``'s must find in memory (the
    part of a network that runs one input at a time hands them to the batched rest, ``emit_graph``'s
    ``batch_from``). Returns where each kept tensor lived (``act0``, ``act1`` or ``out``) for the manifest."""
    data = data if data is not None else sizes
    originals = [[q.copy() for q in p.insns] for p in plans]
    stored: set[str] = set(keep)  # tensors that must go through memory
    while True:
        for p, ins in zip(plans, originals, strict=True):
            p.insns = [q.copy() for q in ins]
        try:
            return _pass(cfg, g, plans, sizes, data, stored)
        except _Restart as r:
            stored.add(r.tensor)


def _pass(cfg: HwConfig, g: ir.Graph, plans: list[OpPlan], sizes: dict[str, int], data: dict[str, int],
          stored: set[str]) -> dict[str, str]:
    spec = load()
    target = spec.enums["target"]
    buffers = spec.enums["buffer"]
    shots = [single_shot(g, p, sizes, data) for p in plans]
    last: dict[str, int] = {}
    readers: dict[str, list[int]] = {}
    for i, op in enumerate(g.ops):
        for t in g.op_inputs(op):
            last[t] = i
            readers.setdefault(t, []).append(i)
    last[g.output] = len(g.ops)
    slot: dict[str, str | None] = {"act0": None, "act1": None, "out": None}
    act_only: set[str] = set()  # kept in an act bank, never stored
    from_mem: set[str] = set()  # some reader loads it from memory
    where: dict[str, str] = {}

    def live(t: str | None, i: int) -> bool:
        return t is not None and last.get(t, -1) > i

    def overwrite(place: str, i: int) -> None:
        t = slot[place]
        if t is not None and t in act_only and live(t, i):
            raise _Restart(t)
        slot[place] = None

    def free_bank(i: int, avoid: int | None = None) -> int | None:
        for b in (0, 1):
            if b != avoid and not live(slot[f"act{b}"], i):
                return b
        return None

    def reads_from_act(t: str) -> bool:
        """Every reader of ``t`` is single-shot and can take it from an act bank."""
        for r in readers.get(t, []):
            s = shots[r]
            if s is None:
                return False
            op = g.ops[r]
            if isinstance(op, ir.AddOp) and op.a == op.b:
                return False
        return True

    for i, (op, plan, shot) in enumerate(zip(g.ops, plans, shots, strict=True)):
        insns = plan.insns
        if shot is None:  # keeps its loads and stores: a bank that holds nothing still needed
            b = free_bank(i)
            if b is None:
                b = 0
            for t in g.op_inputs(op):
                if t in act_only:
                    raise _Restart(t)
                from_mem.add(t)
            overwrite(f"act{b}", i)
            overwrite("out", i)
            # with the other bank free too, the op's segments (its act loads and the compute instructions
            # that read them) take the two banks in turn, so that a segment's loads can stream in while the
            # segment before computes (backend.schedule moves them up)
            other = free_bank(i, avoid=b)
            banks = [b] if other is None else [b, other]
            if other is not None:
                overwrite(f"act{other}", i)
            seg, prev = -1, ""
            for q in insns:
                if q.mnemonic == "load" and q.ops["buf"] == buffers["act"]:
                    if prev != "load":
                        seg += 1
                    q.ops["bank"] = banks[seg % len(banks)]
                    prev = "load"
                elif q.mnemonic in COMPUTE:
                    q.ops["src"] = banks[max(seg, 0) % len(banks)]
                    prev = "compute"
            _alternate_out_halves(cfg, insns)
            continue
        comp = insns[shot.compute]
        drop: set[int] = set()
        a_t, b_t = shot.act_tensor, shot.out_tensor
        if isinstance(op, ir.AddOp) and b_t is not None and a_t != b_t:
            # the sum is symmetric: take the operand in the output buffer as the second one
            if slot["out"] == a_t and b_t in (slot["act0"], slot["act1"]):
                a_t, b_t = b_t, a_t
                comp.ops["ma"], comp.ops["mb"] = comp.ops["mb"], comp.ops["ma"]
                insns[shot.act_load].ops["addr"], insns[shot.out_load].ops["addr"] = (  # type: ignore[index]
                    insns[shot.out_load].ops["addr"], insns[shot.act_load].ops["addr"])  # type: ignore[index]
                insns[shot.act_load].ops["nbytes"], insns[shot.out_load].ops["nbytes"] = (  # type: ignore[index]
                    insns[shot.out_load].ops["nbytes"], insns[shot.act_load].ops["nbytes"])  # type: ignore[index]
        # the act operand
        src = next((b for b in (0, 1) if slot[f"act{b}"] == a_t), None)
        if src is not None:
            drop.add(shot.act_load)
        else:
            if a_t in act_only:
                raise _Restart(a_t)
            from_mem.add(a_t)
            src = free_bank(i)
            if src is None:
                src = 0
            overwrite(f"act{src}", i)
            insns[shot.act_load].ops["bank"] = src
            # a later reader may take it from the bank only when the load brought all of it (a strided
            # window loads just the rows it reads)
            slot[f"act{src}"] = a_t if int(insns[shot.act_load].ops["nbytes"]) >= data[a_t] else None
        comp.ops["src"] = src
        # the output-buffer operand of an add
        if shot.out_load is not None and b_t is not None:
            if slot["out"] == b_t:
                drop.add(shot.out_load)
            else:
                if b_t in act_only:
                    raise _Restart(b_t)
                from_mem.add(b_t)
                overwrite("out", i)
                slot["out"] = b_t if int(insns[shot.out_load].ops["nbytes"]) >= data[b_t] else None
        # the result
        u = op.out
        dst: int | None = None
        if u not in stored and u != g.output and sizes[u] <= cfg.ActBytes and reads_from_act(u):
            dst = free_bank(i, avoid=src)
        if dst is not None:
            overwrite(f"act{dst}", i)
            slot[f"act{dst}"] = u
            act_only.add(u)
            comp.ops["dst"] = target[f"act{dst}"]
            drop.add(shot.store)
            where[u] = f"act{dst}"
        else:
            if not (shot.out_load is not None and slot["out"] == b_t):
                overwrite("out", i)
            slot["out"] = u
            comp.ops["dst"] = target["out"]
            where[u] = "out"
        plan.insns = [q for k, q in enumerate(insns) if k not in drop]
    # a result left in the output buffer is stored only when some reader loads it (or it is the output)
    for i, op in enumerate(g.ops):
        u = op.out
        if where.get(u) == "out" and u not in from_mem and u != g.output and u not in stored:
            plans[i].insns = [q for q in plans[i].insns if not (q.mnemonic == "store" and _tensor_of(q) == (u, 0))]
        elif where.get(u) == "out":
            where.pop(u)
    return where
