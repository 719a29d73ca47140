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
3b. :func:`pqcompile.onchip.keep_on_chip`: results stay on chip (act banks, the output buffer) as the next
   ops' inputs where the plans allow, their stores and loads dropped;
4. :func:`allocate`: activation tensors get addresses by liveness over the op list (first fit, freed after
   the last use), tables and the graph input are pinned;
5. :func:`emit_graph`: resolve the addresses, encode, build the memory image and the manifest; one ``stamp``
   at the start and after each op (per-op performance records: cycles, compute cycles, bytes), ``end``;
6. :func:`report_rows` / :func:`format_report`: the per-op report from a written manifest.

The build directory is the only thing the simulator and the testbench read (docs/file_formats.md):
``manifest.json``, ``mem.hex`` (the initial external memory: instructions, tables, inputs),
``program.asm`` (disassembly), ``expected_output.npy`` (the golden simulator's outputs).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from . import build, hexfmt, ir, isa, onchip, ops, perf, sim
from .build import read_output, read_perf, read_stamps, read_tensor  # noqa: F401  (the build format's readers)
from .errors import CompileError  # noqa: F401  (raised here; callers catch backend.CompileError)
from .isa import decode, encode, listing
from .plan import OpPlan, PInsn, Ref, align, shape_str
from .spec import HwConfig
from .spec import load as load_spec


# ------------------------------------------------------------------------------------------------------------
# 1. checks
# ------------------------------------------------------------------------------------------------------------
def op_kind(g: ir.Graph, op: ir.Op) -> str:
    """How the back end runs ``op`` (its handler says): ``linear``, ``flatten-linear``, ``conv``, ``add``,
    ``pool``."""
    return ops.of(op).kind(g, op)


def check_op(cfg: HwConfig, g: ir.Graph, i: int, op: ir.Op) -> None:
    """Raise CompileError naming op ``i`` when it is inconsistent with its tensors or beyond ``cfg``."""
    for t in [*g.op_inputs(op), op.out]:
        if t not in g.tensors:
            raise CompileError(f"layer {i} ({op.name}): unknown tensor {t!r}")
    ops.of(op).check(cfg, g, i, op)


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
def image_strides(cfg: HwConfig, g: ir.Graph, n: int, force: Sequence[str] = ()) -> dict[str, int]:
    """Layout: bytes from one image to the next of every tensor ([N][h][w][ch] channels-last int8).

    Dense (h*w*ch) unless an op addresses single images of the tensor (or it is in ``force``) and h*w*ch is
    not a whole number of bus words: then it is padded to the bus width, and so is every tensor an op shares
    with it (so that the op can address single images of all its tensors, or take the same byte range of all
    of them)."""
    bus = cfg.bus_bytes
    size = {t: info.size for t, info in g.tensors.items()}
    padded: set[str] = {t for t in force if size[t] % bus}
    changed = True
    while changed:
        changed = False
        for op in g.ops:
            ts = [t for t in (*g.op_inputs(op), op.out) if size[t] % bus]
            if ts and (ops.of(op).per_image(cfg, g, op, n) or any(t in padded for t in ts)):
                new = set(ts) - padded
                if new:
                    padded |= new
                    changed = True
    return {t: align(s, bus) if t in padded else s for t, s in size.items()}


# ------------------------------------------------------------------------------------------------------------
# 3. tiling: each op -> instructions over symbolic addresses (its handler's plan)
# ------------------------------------------------------------------------------------------------------------
def plan_op(cfg: HwConfig, g: ir.Graph, i: int, op: ir.Op, n: int, strides: dict[str, int]) -> OpPlan:
    """The instructions of op ``i`` over ``n`` images (tables loaded once, images looped inside)."""
    return ops.of(op).plan(cfg, g, i, op, n, strides)




def schedule(plans: list[OpPlan], banks: Sequence[int] | None = None, pass_ops: int = 0) -> list[list[PInsn]]:
    """The instruction stream, op by op, with the table loads moved ahead (docs/compiler.md, "Schedule").

    A *table set* is the tables one ``shape`` selects: a PQ op has one, an op whose table is tiled over m
    one per tile (``PInsn.tset``; with more tiles than banks, one per tile and column tile). The sets take
    the two table banks in turn (the j-th set bank j % 2: its table loads and its ``shape``s; with
    ``banks``, the bank of each PQ op, its set t gets ``banks[op] ^ (t % 2)``: the random programs of
    tb/pqa_gen.py reuse a bank so that a load must wait for the `run` that reads it). Set j's loads go
    right after the first ``run`` of set j-1, or after the last ``run`` of an earlier set of the same bank
    when that comes later, so that they stream into their bank while the set before computes from the
    other one (the controller dispatches in order and runs a load beside a ``run`` of the other bank). The
    stream means the same as the plans' own order (each run still reads only tables loaded for it); the
    plans are not changed. The moved loads sit among the earlier op's instructions, so its stamps count
    their bytes and cycles. An op's set-up instructions before its first compute instruction (``shape``,
    ``quant``, ``fmap``, ``conv``: sim.SETUP) go to the end of the op before it, ahead of that op's stamp,
    so that the controller decodes them while that op computes (it hands the units a copy of the layer
    state that holds while they work); they count in the earlier op's stamps.

    ``pass_ops``: the plans are passes of that many ops (``--batch``; addresses resolved). The loads of a
    pass's first op that precede its first compute instruction (its input) go to the start of the earliest op
    of the pass before it from which on no instruction uses the buffer bank they write or writes the memory
    they read (:func:`hoist_point`): the input of the next pass streams in while the last ops compute, as
    its tables do (the table rule above spans the passes)."""
    buffers = load_spec().enums["buffer"]
    table_bufs = {buffers[b] for b in sim.TABLE_BUFS}

    def is_table_load(q: PInsn) -> bool:
        return q.mnemonic == "load" and q.ops["buf"] in table_bufs

    out = [[q.copy() for q in p.insns] for p in plans]
    pq = [i for i, p in enumerate(plans) if any(q.mnemonic == "run" for q in p.insns)]
    # the table sets in program order, each with its bank and its loads
    key_of: dict[int, tuple[int, int]] = {}  # id(instruction) -> (op, tset)
    bank_seen: set[tuple[int, int]] = set()
    sets: list[tuple[int, int]] = []
    for i in pq:
        for q in out[i]:
            if is_table_load(q) or q.mnemonic == "shape":
                key = (i, q.tset)
                if key not in bank_seen:
                    bank_seen.add(key)
                    sets.append(key)
                key_of[id(q)] = key
    bank = {key: (banks[pq.index(key[0])] ^ (key[1] % 2)) if banks is not None else n % 2
            for n, key in enumerate(sets)}
    for i in pq:
        for q in out[i]:
            if id(q) in key_of:
                q.ops["bank"] = bank[key_of[id(q)]]

    def runs() -> dict[tuple[int, int], list[tuple[int, int]]]:
        """The (op, index) of every run of each set: a run uses the set of the shape before it."""
        found: dict[tuple[int, int], list[tuple[int, int]]] = {}
        for i in pq:
            cur = None
            for k, q in enumerate(out[i]):
                if q.mnemonic == "shape":
                    cur = key_of[id(q)]
                elif q.mnemonic == "run" and cur is not None:
                    found.setdefault(cur, []).append((i, k))
        return found

    for j in range(1, len(sets)):
        key = sets[j]
        where = runs()
        after = [where[sets[j - 1]][0]] if sets[j - 1] in where else []
        after += [where[e][-1] for e in sets[:j] if bank[e] == bank[key] and e in where]
        if not after:
            continue
        i = key[0]
        moved = [q for q in out[i] if is_table_load(q) and key_of.get(id(q)) == key]
        first = next(k for k, q in enumerate(out[i]) if q is moved[0]) if moved else -1
        at_op, at_k = max(after)
        if not moved or (at_op, at_k) > (i, first):
            continue  # the plan's own place is already the earliest (a load never moves later)
        out[i] = [q for q in out[i] if not any(q is x for x in moved)]
        out[at_op][at_k + 1 : at_k + 1] = moved
    for ins in out:  # a segment's act (or out) loads go up to just after the compute instruction before them
        for k, q in enumerate(ins):
            if q.mnemonic != "load" or is_table_load(q):
                continue
            j = k
            while j > 0 and ins[j - 1].mnemonic not in sim.COMPUTE and not _conflict(q, ins[j - 1]):
                j -= 1
            if 0 < j < k and not _conflict(q, ins[j - 1]):  # ins[j-1] is the compute instruction
                ins[j : k + 1] = [q, *ins[j:k]]
    for i in range(1, len(out)):
        first = next((k for k, q in enumerate(out[i]) if q.mnemonic in sim.COMPUTE), len(out[i]))
        lead = [q for q in out[i][:first] if q.mnemonic in sim.SETUP]
        out[i] = [q for q in out[i][:first] if q.mnemonic not in sim.SETUP] + out[i][first:]
        out[i - 1] += lead
    step = pass_ops or len(out)  # 0: one pass
    for s in range(step, len(out), step):  # each pass after the first
        first = next((k for k, q in enumerate(out[s]) if q.mnemonic in sim.COMPUTE), len(out[s]))
        for q in [q for q in out[s][:first] if q.mnemonic == "load" and not is_table_load(q)]:
            k = hoist_point(out, s, q, s - pass_ops)
            if k < s:
                out[s] = [x for x in out[s] if x is not q]
                out[k].insert(0, q)
        # the stores after the last compute instruction of the pass before go to the start of this pass: a
        # store waits for every older instruction (precise errors), so it would wait for the input load
        last = out[s - 1]
        tail = max((k for k, q in enumerate(last) if q.mnemonic in sim.COMPUTE), default=-1) + 1
        for q in [q for q in last[tail:] if q.mnemonic == "store"]:
            after = last[next(i for i, x in enumerate(last) if x is q) + 1 :]
            if not any(_conflict(q, x) for x in after):
                out[s - 1] = last = [x for x in last if x is not q]
                out[s].insert(0, q)
    return out


def _mem_range(q: PInsn) -> tuple[int, int] | None:
    """The external memory a resolved ``load`` reads or a ``store`` / ``stamp`` writes."""
    if q.mnemonic in ("load", "store"):
        return q.ops["addr"], q.ops["addr"] + q.ops["nbytes"]
    if q.mnemonic == "stamp":
        return q.ops["addr"], q.ops["addr"] + load_spec().perf_bytes
    return None


def _conflict(a: PInsn, b: PInsn) -> bool:
    """Whether resolved instructions ``a`` and ``b`` may not swap places: one writes an on-chip resource the
    other uses (:func:`pqcompile.sim.resources`; the layer state only matters to compute instructions, which
    never move), or one writes external memory that the other reads or writes."""
    names = {v: n for n, v in load_spec().enums["buffer"].items()}
    st = sim._State()
    (ra, wa), (rb, wb) = (sim.resources(q.mnemonic, decode(encode(q.mnemonic, **q.ops)).ops, st,
                                        names.get(q.ops.get("buf", -1), "")) for q in (a, b))
    if wa & (rb | wb) or wb & ra:
        return True
    ma, mb = _mem_range(a), _mem_range(b)
    if ma is None or mb is None or (a.mnemonic == "load" and b.mnemonic == "load"):
        return False
    return ma[0] < mb[1] and mb[0] < ma[1]


def fetch_order(cfg: HwConfig, seq: list[PInsn], mem_bw: int = 0) -> list[PInsn]:
    """The whole stream ``seq`` (stamps and ``end`` included, addresses resolved) with each long table load
    placed so that the compute unit has work while it runs (docs/compiler.md, "Schedule", fetch order).

    The controller fetches a bus word of instructions only when no ``load`` holds the read engine, dispatches
    in order, and a ``store`` waits for every older instruction; so behind a table load that the schedule
    moved into an op of several runs, ``[loads, store, run]``, the store waits for the load and the run for
    the store: the op computes nothing until the load is done. Where the load takes longer (at ``mem_bw``
    bytes a cycle, 0: one bus word a cycle) than the run before the stores computes plus their transfer, the
    run goes ahead of the stores when it uses neither output half they read nor the table bank the loads
    write (it is not the first run of their set), the set's largest load goes
    last and the run right behind it in the same bus word (a smaller load of the set goes behind the run
    when the large one would end a bus word; where the run cannot share its word, nothing moves): the run
    then computes while the load runs. Each swap keeps the meaning: the run and the stores touch nothing
    of each other's and keep their order against everything else."""
    spec = load_spec()
    table_bufs = {spec.enums["buffer"][b] for b in sim.TABLE_BUFS}
    per = cfg.bus_bytes // isa.insn_bytes()
    bpc = sim.bytes_per_cycle(cfg, mem_bw)
    lanes = [int(cfg.params[k]) for k in perf.LANES]
    half = cfg.OutBytes // 2

    def table_load(q: PInsn) -> bool:
        return q.mnemonic == "load" and q.ops["buf"] in table_bufs

    def full(q: PInsn) -> dict[str, int]:  # every field, the omitted ones at their defaults
        return decode(encode(q.mnemonic, **q.ops)).ops

    def run_cycles(st: dict[str, int], q: PInsn) -> int:
        return perf.pq_cycles(q.ops["n"], st["c"], st["k"], st["v"], st["m"], *lanes)

    out = list(seq)
    shape: dict[str, int] = {}
    last_run: PInsn | None = None
    k = 0
    while k < len(out):
        q = out[k]
        if q.mnemonic == "shape":
            shape = full(q)
        if q.mnemonic == "run":
            last_run = q
        if not table_load(q) or last_run is None or not shape:
            k += 1
            continue
        g = k
        while g < len(out) and table_load(out[g]) and out[g].ops["bank"] == q.ops["bank"]:
            g += 1
        r = g
        while r < len(out) and out[r].mnemonic == "store":
            r += 1
        group, stores = out[k:g], out[g:r]
        if not stores or r == len(out) or out[r].mnemonic != "run":
            k = g
            continue
        run = out[r]
        big = max(range(len(group)), key=lambda j: (group[j].ops["nbytes"], j))
        load_cycles = -(-group[big].ops["nbytes"] // bpc)
        store_cycles = sum(-(-x.ops["nbytes"] // bpc) for x in stores)
        st = sim._State(m=shape["m"])
        _, run_w = sim.resources("run", full(run), st, "", half)
        used = set().union(*(sim.resources("store", full(x), st, "", half)[1] for x in stores))
        if load_cycles <= run_cycles(shape, last_run) + store_cycles or run_w & used or \
                sim.target(full(run)) != ("out", 0) or shape["bank"] == q.ops["bank"]:
            k = g
            continue
        small = [x for j, x in enumerate(group) if j != big]
        behind = []  # the smaller loads that go behind the run, so that the run shares the large one's bus word
        while small and (k + len(small)) // per != (k + len(small) + 1) // per:
            behind.insert(0, small.pop())
        if (k + len(small)) // per != (k + len(small) + 1) // per:  # (a bus word of one instruction)
            k = g
            continue
        out[k:r + 1] = [*small, group[big], run, *behind, *stores]
        k = r + 1
    return out


def hoist_point(out: list[list[PInsn]], s: int, ld: PInsn, lo: int) -> int:
    """The earliest op k >= ``lo`` such that no instruction from the start of op k up to the load ``ld`` (in
    op ``s``; resolved addresses) conflicts with it (:func:`_conflict`: uses the on-chip bank it writes, or
    writes the memory it reads): ``ld`` means the same at the start of op k."""
    before = out[s][: next(i for i, q in enumerate(out[s]) if q is ld)]
    if any(_conflict(ld, q) for q in before):
        return s
    k = s
    while k > lo and not any(_conflict(ld, q) for q in out[k - 1]):
        k -= 1
    return k


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


def allocate(g: ir.Graph, sizes: dict[str, int], unit: int = 8, pinned: Sequence[str] = ()) -> Allocation:
    """First-fit allocation over the op list: an op's output is placed (at the lowest offset where it
    overlaps no live tensor) while its inputs are still live; a tensor's bytes are free after its last use.
    ``pinned`` tensors are placed with the input, before any op, and stay until their last use (the ops
    before them may run several times, once per input: ``emit_graph``'s ``batch_from``)."""
    live = liveness(g)
    for t in pinned:
        live[t] = (-1, live[t][1])
    offsets: dict[str, int] = {}
    active: dict[str, tuple[int, int]] = {}  # tensor -> (start, end)

    def place(t: str) -> None:
        need = align(max(sizes[t], 1), unit)
        at = 0
        for s, e in sorted(active.values()):
            if s - at >= need:
                break
            at = max(at, e)
        offsets[t] = at
        active[t] = (at, at + need)

    place(g.input)
    for t in pinned:
        place(t)
    for i, op in enumerate(g.ops):
        if op.out not in offsets:
            place(op.out)
        for t in [*g.op_inputs(op), op.out]:
            if live[t][1] <= i:
                active.pop(t, None)
    used = {t: align(max(sizes[t], 1), unit) for t in offsets}
    peak = max(offsets[t] + used[t] for t in offsets)
    return Allocation(offsets, {t: sizes[t] for t in offsets}, {t: live[t] for t in offsets}, peak,
                      sum(used.values()))


# ------------------------------------------------------------------------------------------------------------
# 5. emission
# ------------------------------------------------------------------------------------------------------------
@dataclass
class Program:
    mem: np.ndarray  # initial memory image, bytes
    insn_base: int
    words: list[int]
    manifest: dict[str, Any]
    segments: list[tuple[int, np.ndarray, str]]
    plans: list[OpPlan] = field(default_factory=list)
    allocation: Allocation | None = None


def _op_entry(cfg: HwConfig, g: ir.Graph, plan: OpPlan, addr: dict[str, int], runs: int = 1) -> dict[str, Any]:
    """The manifest's entry of an op (its first pass); ``runs``: how often the pass runs its plan (an op before
    ``batch_from``: once per input), which its bytes and instructions count (its tiles are one run's)."""
    op, i = plan.op, plan.index
    ins = g.op_inputs(op)
    e: dict[str, Any] = {
        "index": i, "name": op.name, "kind": plan.kind, "inputs": ins, "output": op.out,
        "in_shape": list(g.tensors[ins[0]].shape), "out_shape": list(g.tensors[op.out].shape),
        "in_addr": addr[f"tensor:{ins[0]}"], "out_addr": addr[f"tensor:{op.out}"],
        "tiles": plan.tiles, **plan.info, "loaded_bytes": runs * plan.traffic(True),
        "stored_bytes": runs * plan.traffic(False), "n_insns": runs * (len(plan.insns) + 1),
    }
    e.update(ops.of(op).entry(cfg, g, plan, addr))
    if any(q.mnemonic == "store" and q.ops.get("half") for q in plan.insns):
        e["out_halves"] = True  # its segments alternate between the output buffer's halves (store.half)
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


def split_point(g: ir.Graph, batch_from: str | None) -> int:
    """The index of op ``batch_from`` (0 without one): the ops before it run one input at a time. A name no op
    has, the first op, or an op after the one that computes the graph output is refused."""
    if batch_from is None:
        return 0
    names = [op.name for op in g.ops]
    if batch_from not in names:
        raise CompileError(f"--batch-from {batch_from!r}: no such op; the ops are {', '.join(names)}")
    k = names.index(batch_from)
    if k == 0:
        raise CompileError(f"--batch-from {batch_from!r} is the first op: nothing would run one input at a time "
                           "(leave --batch-from out)")
    if not any(op.out == g.output for op in g.ops[k:]):
        raise CompileError(f"--batch-from {batch_from!r}: the graph output {g.output!r} is computed before it")
    return k


AUTO = "auto"  # --batch-from auto: auto_split picks the schedule


def timed_schedule(cfg: HwConfig, g: ir.Graph, x: np.ndarray, mem_bw: int, what: str, **emit: Any) -> float:
    """Cycles per input of the program :func:`emit_graph` makes of ``g`` on inputs ``x`` (with ``emit``'s
    options) on the cycle model at ``mem_bw`` bytes a cycle: how the compiler's searches (:func:`auto_split`,
    :func:`order_ops`, :func:`choose_mirror`) compare schedules. ``what`` names the schedule in the error a
    program that does not finish raises (a compiler bug)."""
    prog = emit_graph(cfg, g, x, mem_bw=mem_bw, **emit)
    res = sim.run(cfg, prog.mem, prog.insn_base, max_insns=max(1_000_000, 2 * len(prog.words)), mem_bw=mem_bw)
    if res.err_code or not res.done:
        raise RuntimeError(f"the golden simulator did not finish {what} (error code {res.err_code})")
    return res.cycles / len(x)


def auto_split(cfg: HwConfig, g: ir.Graph, x: np.ndarray, batch: int | None, mem_bw: int = 0
               ) -> tuple[str | None, int, list[tuple[float, str]]]:
    """``--batch-from auto``: the schedule of a pass of ``batch`` inputs (default: all of ``x``) that the cycle
    model (``sim.run`` at ``mem_bw`` bytes a cycle; 0: one bus word a cycle) finishes soonest, run on the first
    pass's inputs of ``x``: every op batched, one input a pass, or batching from each PQ op after the first
    (from an op without tables it never pays: batching shares table loads and costs activation traffic).
    Returns (batch_from, batch) of the fastest and every candidate's (cycles per input, what it is), fastest
    first (ties: the earlier split)."""
    x = np.asarray(x)
    bsz = min(batch or len(x), len(x))
    if bsz <= 1:
        return None, bsz, []
    done = {i for i, op in enumerate(g.ops) if op.out == g.output}
    cands: list[tuple[str | None, int, str]] = [(None, 1, "one input a pass"), (None, bsz, "every op batched")]
    cands += [(op.name, bsz, op.name) for i, op in enumerate(g.ops)
              if i and isinstance(op, ir.PQOp) and max(done) >= i]
    timed = sorted((timed_schedule(cfg, g, x[:bsz], mem_bw, f"the {what} schedule", batch=b, batch_from=frm), j)
                   for j, (frm, b, what) in enumerate(cands))
    frm, b, _ = cands[timed[0][1]]
    return frm, b, [(c, cands[j][2]) for c, j in timed]


def op_moves(g: ir.Graph, batch_from: str | None = None) -> list[tuple[tuple[str, ...], str]]:
    """The op orders one move away from ``g.ops``'s: one op taken out and put at another place where it still
    comes after the ops that compute its inputs and before the ops that read its result (a topological order:
    the results never change). An op never crosses ``batch_from`` (which stays where it is), so the ops that run
    one input at a time stay those. Each order once, as the ops' names, with the move in words ("layers.9.
    shortcut.0 after layers.9.body.0"), in the order the moves are found."""
    names = [op.name for op in g.ops]
    made = {op.out: op.name for op in g.ops}
    needs = {op.name: {made[t] for t in g.op_inputs(op) if t in made} for op in g.ops}
    k = split_point(g, batch_from)
    seen = {tuple(names)}
    orders: list[tuple[tuple[str, ...], str]] = []
    for i, name in enumerate(names):
        if name == batch_from:
            continue
        rest = names[:i] + names[i + 1:]
        readers = [j for j, r in enumerate(rest) if name in needs[r]]
        lo = max((j + 1 for j, r in enumerate(rest) if r in needs[name]), default=0)
        hi = min(readers, default=len(rest))
        if k:  # stay on this side of the split (batch_from's index in rest)
            s = rest.index(batch_from)
            lo, hi = (lo, min(hi, s)) if i < k else (max(lo, s + 1), hi)
        for p in range(lo, hi + 1):
            order = tuple(rest[:p] + [name] + rest[p:])
            if order not in seen:
                seen.add(order)
                orders.append((order, f"{name} after {rest[p - 1]}" if p else f"{name} first"))
    return orders


def order_ops(cfg: HwConfig, g: ir.Graph, x: np.ndarray, batch: int | None = None, batch_from: str | None = None,
              mem_bw: int = 0) -> tuple[ir.Graph, list[str], list[float]]:
    """``--op-order auto``: the order of ``g``'s ops that the cycle model finishes soonest, found by moving one op
    at a time (:func:`op_moves`) as long as a move makes the schedule faster (the fastest move first). Each
    order is timed as :func:`auto_split` times a schedule: emitted for the first pass's inputs of ``x`` (``batch``,
    ``batch_from``) and run on the golden simulator at ``mem_bw`` bytes a cycle. Where ops do not depend on each
    other (a residual block's shortcut conv and its body), the order decides which table loads during which op's
    compute: a small op that carries a large table waits for it. Returns the graph with its ops in that order
    (``g`` itself when no move pays), the moves made (:func:`op_moves`' words) and the cycles per input of the
    model's order and after each move (``[]``, nothing simulated, when no op can move)."""
    x = np.asarray(x)
    bsz = min(batch or len(x), len(x))
    by_name = {op.name: op for op in g.ops}

    def cycles(order: Sequence[str]) -> float:
        return timed_schedule(cfg, replace(g, ops=[by_name[n] for n in order]), x[:bsz], mem_bw,
                              f"the order {', '.join(order)}", batch=bsz, batch_from=batch_from)

    cur, made, timed = g, [], []
    while moves := op_moves(cur, batch_from):
        if not timed:
            timed.append(cycles([op.name for op in g.ops]))
        t, j = min((cycles(order), j) for j, (order, _) in enumerate(moves))
        if t >= timed[-1]:
            break
        cur = replace(g, ops=[by_name[n] for n in moves[j][0]])
        made.append(moves[j][1])
        timed.append(t)
    return cur, made, timed


def mirror_banks(q: PInsn) -> PInsn:
    """``q`` with act banks 0 and 1 swapped (a `load` into the act buffer, the `src` and an act `dst` of `run`,
    `pool` and `add`); anything else unchanged. A program whose every instruction is mirrored computes the same:
    the two banks are alike."""
    spec = load_spec()
    act, a0, a1 = spec.enums["buffer"]["act"], spec.enums["target"]["act0"], spec.enums["target"]["act1"]
    if q.mnemonic == "load" and q.ops["buf"] == act:
        return q.copy({**q.ops, "bank": 1 - int(q.ops.get("bank", 0))})
    if q.mnemonic in sim.COMPUTE:
        dst = q.ops.get("dst", spec.enums["target"]["out"])
        return q.copy({**q.ops, "src": 1 - int(q.ops.get("src", 0)), "dst": {a0: a1, a1: a0}.get(dst, dst)})
    return q


def choose_mirror(cfg: HwConfig, g: ir.Graph, x: np.ndarray, batch: int | None = None,
                  batch_from: str | None = None, mem_bw: int = 0) -> tuple[bool, list[float]]:
    """Whether the stream runs faster with every other pass mirrored (``emit_graph(mirror=True)``): where a
    pass takes its input in the act bank it uses last, the next pass's input can load only after it, and
    in the mirrored pass it goes into the other bank, which the pass before frees earlier. Timed on the cycle
    model at ``mem_bw`` over the first two passes' inputs (the one pass's when there is one: with
    ``batch_from`` its inputs run one by one, and every other one is mirrored); returns the pick and the cycles
    per input without and with, or (False, []) when the program has nothing to mirror (one pass, no
    ``batch_from``)."""
    x = np.asarray(x)
    bsz = min(batch or len(x), len(x))
    n = min(len(x), 2 * bsz)
    if n <= 1 or (n == bsz and not batch_from):
        return False, []
    timed = [timed_schedule(cfg, g, x[:n], mem_bw, f"the stream (mirror={flip})", batch=bsz, batch_from=batch_from,
                            mirror=flip) for flip in (False, True)]
    return timed[1] < timed[0], timed


def handed_on(g: ir.Graph, k: int) -> list[str]:
    """The tensors that ops before op ``k`` compute and ops from ``k`` on read (the graph input aside: it has
    its own region), in the order the ops compute them."""
    later = {t for op in g.ops[k:] for t in g.op_inputs(op)}
    return [op.out for op in g.ops[:k] if op.out in later and op.out != g.input]


def emit_graph(cfg: HwConfig, g: ir.Graph, x: np.ndarray, name: str | None = None,
               table_banks: Sequence[int] | None = None, on_chip: bool = True, batch: int | None = None,
               batch_from: str | None = None, mem_bw: int = 0, mirror: bool = False) -> Program:
    """Lay out memory and emit the instruction stream that runs graph ``g`` on the integer inputs ``x``
    ([N, h, w, ch] channels-last, or [N, h*w*ch]) of its input tensor. ``table_banks``: the table bank of
    each PQ op (:func:`schedule`; default: alternating). ``on_chip``: results stay on chip as the next
    ops' inputs where they can (:func:`pqcompile.onchip.keep_on_chip`); False: every op loads its operands
    and stores its result. ``batch``: inputs per pass (default: all N in one pass): the program runs the ops
    over B = ``batch`` inputs at a time, ceil(N/B) passes, each loading every op's tables once for its B
    inputs; the passes share the intermediate tensors, the input and output regions hold all N.
    ``batch_from``: the name of an op: the ops before it run one input at a time (their tables loaded for each
    input, their results kept on chip as at batch 1), the op and those after it over the pass's B inputs at
    once; the tensors the first part hands the second (:func:`handed_on`) hold the pass's B inputs in memory.
    ``mem_bw``: the memory bandwidth (bytes a cycle; 0: one bus word a cycle) the schedule assumes: where long
    table loads go (:func:`fetch_order`); with ``batch_from`` ``"auto"`` the schedule :func:`auto_split` picks
    for it, which may be every op batched or one input a pass. The results never depend on it. ``mirror``: every
    other pass (or one-input run before ``batch_from``) runs with its act banks swapped (:func:`mirror_banks`;
    :func:`choose_mirror` says when it pays).
    A pass then has one part-one run per input and one part-two run after them, and the stamps follow the ops
    that run (the manifest's ``stamps.ops``)."""
    check_graph(cfg, g)
    name = name or g.name
    tin = g.tensors[g.input]
    x = np.asarray(x)
    n = int(x.shape[0]) if x.ndim else 0
    if n < 1 or x.size != n * tin.size or x.ndim not in (2, 4) or list(x.shape[1:]) not in (
            [tin.size], list(tin.shape)):
        raise CompileError(f"inputs must be [n, {shape_str(tin.shape).replace('x', ', ')}] (or [n, {tin.size}]) "
                           f"with n >= 1, got {list(x.shape)}")
    if x.min() < -128 or x.max() > 127:
        raise CompileError(f"inputs must be int8 values, got {int(x.min())}..{int(x.max())}")
    if batch is not None and batch < 1:
        raise CompileError(f"batch must be at least 1, got {batch}")
    if batch_from == AUTO:
        batch_from, batch, _ = auto_split(cfg, g, x, batch, mem_bw)
    bsz = min(batch or n, n)
    passes = [min(bsz, n - p0) for p0 in range(0, n, bsz)]  # inputs of each pass
    split = split_point(g, batch_from)
    cross = handed_on(g, split) if split else []
    bus = cfg.bus_bytes
    # one layout for every pass (the last may be smaller): a tensor padded at either size is padded
    # a pass's slices of the input and output regions start at bus words: with several passes those tensors are
    # padded to whole bus words an image unless B images of them are; with batch_from the first part addresses
    # single inputs of the input and of the tensors it hands on
    whole = len(passes) > 1 or split > 0  # the input and output regions hold all n inputs
    force = [t for t in (g.input, g.output) if whole and bsz * g.tensors[t].size % bus]
    force += [t for t in (g.input, *cross) if split and g.tensors[t].size % bus]
    counts = {bsz, passes[-1]} | ({1} if split else set())
    layouts = [image_strides(cfg, g, c, force) for c in sorted(counts)]
    strides = {t: max(lay[t] for lay in layouts) for t in g.tensors}

    def plans_for(lo: int, hi: int, nb: int) -> tuple[list[OpPlan], dict[str, str]]:
        """The plans of ops lo..hi-1 over nb inputs, results kept on chip where they can."""
        pp = [plan_op(cfg, g, i, op, nb, strides) for i, op in enumerate(g.ops[lo:hi], lo)]
        sz = {t: nb * strides[t] for t in g.tensors}
        dt = {t: nb * info.size if nb == 1 or strides[t] == info.size else sz[t] for t, info in g.tensors.items()}
        if not on_chip:
            return pp, {}
        part = g if (lo, hi) == (0, len(g.ops)) else replace(g, ops=g.ops[lo:hi])
        return pp, onchip.keep_on_chip(cfg, part, pp, sz, dt, keep=cross if hi == split else ())

    # the stream: its passes in order, each a list of (plan, the byte offsets of the tensors the plan addresses
    # at a slice: the pass's inputs of the input and output regions, one input of the handed-on tensors);
    # with batch_from a pass is one run of the first part per input (the second part's ops absent: None),
    # then the second part's ops in the last
    stream: list[list[tuple[OpPlan | None, dict[str, int]]]] = []
    kept: dict[str, str] = {}
    first_plans: list[OpPlan] = []
    cache: dict[tuple[int, int, int], tuple[list[OpPlan], dict[str, str]]] = {}

    def cached(lo: int, hi: int, nb: int) -> tuple[list[OpPlan], dict[str, str]]:
        if (lo, hi, nb) not in cache:
            cache[lo, hi, nb] = plans_for(lo, hi, nb)
        return cache[lo, hi, nb]

    img0 = 0
    for q, nb in enumerate(passes):
        at_pass = {g.input: img0 * strides[g.input], g.output: img0 * strides[g.output]}
        tail, k_tail = cached(split, len(g.ops), nb)
        if split:
            head, k_head = cached(0, split, 1)
            for j in range(nb):
                at_one = {g.input: (img0 + j) * strides[g.input], **{t: j * strides[t] for t in cross}}
                last = j == nb - 1
                stream.append([(p, at_one) for p in head] + [(p if last else None, at_pass) for p in tail])
            if not q:
                kept, first_plans = {**k_head, **k_tail}, [*head, *tail]
        else:
            stream.append([(p, at_pass) for p in tail])
            if not q:
                kept, first_plans = k_tail, tail
        img0 += nb
    plans = first_plans
    sizes = {t: (1 if t not in cross and any(t == op.out for op in g.ops[:split]) else bsz) * strides[t]
             for t in g.tensors}
    # a stamp after every op that runs: the manifest's stamps.ops says which op of which pass each one ends
    stamp_ops: list[tuple[int, int]] = []
    for q, pp in enumerate(stream):
        stamp_ops += [(q, i) for i, (p, _) in enumerate(pp) if p is not None]
    if split:  # a pass of the stream is one input; the manifest's passes are the passes of B inputs
        owner = [q for q, nb in enumerate(passes) for _ in range(nb)]
        stamp_ops = [(owner[q], i) for q, i in stamp_ops]
    n_insns = 1 + sum(len(p.insns) + 1 for pp in stream for p, _ in pp if p is not None) + 1
    addr: dict[str, int] = {"stamps": align(n_insns * 8, bus)}
    stamps = build.stamps_entry(addr["stamps"], ["start"] + [g.ops[i].name for _, i in stamp_ops])
    if split:
        stamps["ops"] = [[q, i] for q, i in stamp_ops]
    at = build.stamp_addr(stamps, len(stamps["labels"]))
    segs: list[tuple[int, np.ndarray, str]] = []
    table_base = at
    for i, op in enumerate(g.ops):
        for key, data, what in ops.of(op).tables(cfg, g, op):
            addr[f"{key}:{i}"] = at
            segs.append((at, data, f"layer {i} ({op.name}) {what}"))
            at = align(at + data.size, bus)
    table_bytes = at - table_base
    arena = at
    alloc = allocate(g, sizes, bus, pinned=cross)
    for t, off in alloc.offsets.items():
        addr[f"tensor:{t}"] = arena + off
    mem_bytes = align(arena + alloc.peak, 4096)
    if whole:  # the input and output regions hold all n inputs, after the arena of one pass
        for t in (g.input, g.output):
            addr[f"tensor:{t}"] = mem_bytes
            mem_bytes = align(mem_bytes + n * strides[t], 4096)
    if mem_bytes > 1 << cfg.AxiAddrWidth:
        raise CompileError(f"the memory image needs {mem_bytes} bytes (tables {table_bytes}, activations "
                           f"{alloc.peak} for {bsz} inputs a pass): beyond the {cfg.AxiAddrWidth}-bit address space "
                           f"of config '{cfg.name}'; compile fewer inputs (--count) or fewer a pass (--batch)")
    xin = np.zeros((n, strides[g.input]), np.int64)
    xin[:, : tin.size] = x.reshape(n, tin.size)
    segs.append((addr[f"tensor:{g.input}"], xin.astype(np.int8).view(np.uint8).reshape(-1),
                 f"input {g.input} [{n}][{shape_str(tin.shape)}] int8, {strides[g.input]} bytes per image"))

    def resolve(p: PInsn, offs: dict[str, int]) -> PInsn:
        def value(v: Any) -> Any:
            if not isinstance(v, Ref):
                return v
            t = v.sym[len("tensor:"):] if v.sym.startswith("tensor:") else None
            return addr[v.sym] + v.off + (offs.get(t, 0) if t is not None else 0)
        return p.copy({k: value(v) for k, v in p.ops.items()})

    # the passes' plans, addresses resolved, scheduled as one stream: a pass's first tables and inputs are
    # prefetched during the pass before it; an absent op (None) is an empty plan without a stamp
    flat: list[OpPlan] = []
    present: list[bool] = []
    flip = mirror and len(stream) > 1
    for e, pp in enumerate(stream):
        for i, (p, offs) in enumerate(pp):
            base = p if p is not None else plans[i]
            insns = [resolve(ins, offs) for ins in p.insns] if p is not None else []
            flat.append(replace(base, insns=[mirror_banks(q) for q in insns] if flip and e % 2 else insns))
            present.append(p is not None)
    seq: list[PInsn] = [PInsn("stamp", {"addr": build.stamp_addr(stamps, 0)})]
    banks = None
    if table_banks is not None:  # the bank of each PQ op, for every pass in which it runs
        bank_of = dict(zip([p.index for p in plans if any(q.mnemonic == "run" for q in p.insns)], table_banks,
                           strict=True))
        banks = [bank_of[p.index] for p in flat if any(q.mnemonic == "run" for q in p.insns)]
    label = 1
    for i, insns in enumerate(schedule(flat, banks, len(g.ops))):
        seq += insns
        if present[i]:
            seq.append(PInsn("stamp", {"addr": build.stamp_addr(stamps, label)}))
            label += 1
    seq.append(PInsn("end", {}))
    words = [encode(q.mnemonic, **q.ops) for q in fetch_order(cfg, seq, mem_bw)]
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
        "batch": bsz,
        "passes": len(passes),
        **({"batch_from": g.ops[split].name} if split else {}),
        **({"mirror": True} if flip else {}),
        "input": region(g.input),
        "output": region(g.output),
        "stamps": stamps,
        "host_layers": {"prefix": list(g.host_prefix), "suffix": list(g.host_suffix)},
        "memory": {
            "instructions": len(words) * 8, "tables": table_bytes, "arena_addr": arena,
            "arena_peak": alloc.peak, "arena_without_reuse": alloc.total, "on_chip": kept,
            "tensors": {t: {"addr": addr[f"tensor:{t}"],
                            "bytes": n * strides[t] if whole and t in (g.input, g.output) else alloc.sizes[t],
                            "stride": strides[t],
                            "shape": list(g.tensors[t].shape), "live": list(alloc.live[t])}
                        for t in alloc.offsets},
        },
        "layers": [_op_entry(cfg, g, p, addr, passes[0] if p.index < split else 1) for p in plans],
    }
    return Program(mem, 0, words, manifest, segs, plans, alloc)


def op_perf(manifest: dict[str, Any], mem: np.ndarray, prefix: str = "predicted_") -> list[dict[str, int]]:
    """Per op, the differences of the stamp records around it in ``mem`` (the golden simulator's or the
    RTL's final memory): ``<prefix>cycles``, ``<prefix>compute_cycles`` and the exact ``rd_bytes`` /
    ``wr_bytes`` (never prefixed: the RTL must move exactly these)."""
    perf = {k: build.op_deltas(manifest, v) for k, v in read_perf(manifest, mem).items()}
    return [{(k if k.endswith("_bytes") else prefix + k): v[i] for k, v in perf.items()}
            for i in range(len(manifest["layers"]))]


# ------------------------------------------------------------------------------------------------------------
# 6. the per-op report
# ------------------------------------------------------------------------------------------------------------
REPORT_COLUMNS = [("op", "<24"), ("kind", "<15"), ("in", "<9"), ("out", "<9"), ("K", ">3"), ("v", ">3"),
                  ("c", ">4"), ("m", ">4"), ("table B", ">8"), ("loaded B", ">9"), ("stored B", ">9"),
                  ("tiles", ">6"), ("pred. cycles", ">13"), ("formula", ">10")]


def report_rows(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per op (and a ``total`` row) from a manifest written by :func:`write_build` (predicted cycles
    are the golden simulator's stamps; 0 when the program was not simulated; ``formula``: PQA's formula at the
    configuration's lanes, :func:`pqcompile.perf.op_cycles`, over all images)."""
    rows = []
    params = manifest.get("config_params", {})
    images = int(manifest.get("n_images", 1) or 1)
    for lay in manifest["layers"]:
        try:
            formula: int | str = perf.op_cycles(params, lay, images)
        except (KeyError, ValueError):
            formula = "-"  # a hand-made manifest without lanes or shapes
        rows.append({
            "op": lay["name"], "kind": lay.get("kind", "linear"),
            "in": shape_str(lay.get("in_shape", [1, 1, lay["d"]])), "out": shape_str(lay.get("out_shape",
                                                                                          [1, 1, lay["m"]])),
            "K": lay["k"] or "-", "v": lay["v"] or "-", "c": lay["c"] or "-",
            "m": lay.get("out_shape", [0, 0, lay["m"]])[2], "table B": lay["table_bytes"],
            "loaded B": lay.get("loaded_bytes", 0), "stored B": lay.get("stored_bytes", 0),
            "tiles": lay["tiles"], "pred. cycles": lay.get("predicted_cycles", 0), "formula": formula,
        })
    tot: dict[str, Any] = {k: "" for k, _ in REPORT_COLUMNS}
    tot["op"] = "total"
    for k in ("table B", "loaded B", "stored B", "tiles", "pred. cycles"):
        tot[k] = sum(int(r[k]) for r in rows)
    tot["formula"] = sum(int(r["formula"]) for r in rows) if all(r["formula"] != "-" for r in rows) else "-"
    exp = manifest.get("expected", {})
    if exp.get("sim_cycle_estimate") is not None:
        tot["pred. cycles"] = int(exp["sim_cycle_estimate"])  # includes the start and the stamps
    return [*rows, tot]


MEASURED_COLUMNS = [("RTL cycles", ">11"), ("per input", ">10"), ("RTL/pred.", ">9")]
PERF_COLUMNS = [("compute", ">11"), ("RTL bytes", ">10")]


UNIT_COUNTERS = ("compute_cycles", "load_cycles", "store_cycles", "dep_cycles", "fetch_cycles")


def unit_summary(perf_records: dict[str, list[int]]) -> str:
    """One line on the units from stamp records (first to last record): the cycles each unit was busy and
    the controller's stalls on dependencies and on fetches (docs/isa.md, "Performance counters"); empty when
    the records lack those counters."""
    if any(k not in perf_records or len(perf_records[k]) < 2 for k in ("cycles", *UNIT_COUNTERS)):
        return ""
    d = {k: perf_records[k][-1] - perf_records[k][0] for k in ("cycles", *UNIT_COUNTERS)}
    span = max(1, d["cycles"])

    def part(k: str) -> str:
        return f"{d[k]} ({100 * d[k] / span:.0f}%)"

    return (f"units over {d['cycles']} cycles: compute busy {part('compute_cycles')}, load busy "
            f"{part('load_cycles')}, store busy {part('store_cycles')}; decode stalled on dependencies "
            f"{part('dep_cycles')}, fetching {part('fetch_cycles')}")


def format_report(manifest: dict[str, Any], rows: list[dict[str, Any]] | None = None,
                  measured: list[int] | None = None, total_measured: int | None = None,
                  perf_records: dict[str, list[int]] | None = None) -> str:
    """The report as text: a table of :func:`report_rows`, the host layers and the memory figures.
    ``measured`` (one cycle count per op, e.g. from the RTL's stamps) and ``total_measured`` add the columns
    of :data:`MEASURED_COLUMNS`: cycles, cycles per input and the ratio to the prediction. ``perf_records``
    (the RTL's stamp records, :func:`pqcompile.build.read_perf`) adds :data:`PERF_COLUMNS`: each op's compute
    cycles and the bytes it read and wrote over the AXI master (totals: their sums)."""
    rows = [dict(r) for r in (rows if rows is not None else report_rows(manifest))]
    cols = list(REPORT_COLUMNS)
    units = ""
    if measured is not None:
        cols += MEASURED_COLUMNS
        n = max(1, int(manifest.get("n_columns", manifest.get("n_images", 1)) or 1))
        for r, cyc in zip(rows, [*measured, total_measured], strict=True):
            pred = int(r["pred. cycles"] or 0)
            r.update({"RTL cycles": "" if cyc is None else cyc, "per input": "" if cyc is None else f"{cyc / n:.0f}",
                      "RTL/pred.": f"{cyc / pred:.3f}" if cyc is not None and pred else "-"})
    if perf_records is not None:
        cols += PERF_COLUMNS
        pr = {k: build.op_deltas(manifest, v) for k, v in perf_records.items()}
        comp = pr["compute_cycles"]
        moved = [r + w for r, w in zip(pr["rd_bytes"], pr["wr_bytes"], strict=True)]
        for r, c, b in zip(rows, [*comp, sum(comp)], [*moved, sum(moved)], strict=True):
            r.update({"compute": c, "RTL bytes": b})
        units = unit_summary(perf_records)
    lines = ["  " + " ".join(f"{k:{f}}" for k, f in cols)]
    for r in rows:
        if r["op"] == "total":
            lines.append("  " + "-" * (len(lines[0]) - 2))
        lines.append("  " + " ".join(f"{r[k]!s:{f}}" for k, f in cols))
    if perf_records is not None and units:
        lines.append("  " + units)
    host = manifest.get("host_layers", {})
    if host.get("prefix") or host.get("suffix"):
        lines.append(f"  host layers: before the accelerator {host.get('prefix') or '-'}, "
                     f"after it {host.get('suffix') or '-'}")
    passes = int(manifest.get("passes", 1))
    if passes > 1 or "batch" in manifest:
        n_in = int(manifest.get("n_images", 1))
        total = next((r for r in rows if r["op"] == "total"), {})
        pred = int(total.get("pred. cycles") or 0)
        frm = manifest.get("batch_from")
        tables = (f"the ops before {frm} one input at a time, {frm} and the ops after it over the pass's inputs "
                  "at once, their tables loaded once a pass" if frm else "every op's tables loaded once a pass")
        lines.append(f"  batch {manifest.get('batch', n_in)}: {n_in} inputs in {passes} pass{'es' * (passes > 1)}, "
                     f"{tables}; predicted {pred / max(1, n_in):.0f} cycles per input (the cycle model at one bus "
                     f"word, {int(manifest['config_params']['AxiDataWidth']) // 8} bytes, a cycle)")
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
        # the simulator's stamp records: its cycle model (per-layer predictions for the reports) and the exact
        # bytes each op reads and writes over the AXI master (fetches and stamp records included)
        manifest["layers"] = [{**lay, **rec} for lay, rec in zip(manifest["layers"], op_perf(manifest, res.mem),
                                                                  strict=True)]
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
