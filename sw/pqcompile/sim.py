"""The golden instruction-set simulator: executes a PQA instruction stream over a memory image.

Integer only and bit-exact: the RTL must reproduce every byte it writes. The layer semantics are those
of docs/isa.md; the helpers ``encode``, ``lookup`` and ``requantize`` are the reference functions that
block-level tests and the quantized torch model are checked against.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .isa import IllegalInstruction, clamp_range, decode, field_limit
from .layout import unpack_lut, unpack_protos
from .spec import HwConfig, load


class SimError(RuntimeError):
    """Raised by :func:`run` with ``strict=True`` when the program stops with an error code."""


def encode(x: np.ndarray, protos: np.ndarray, metric: int) -> np.ndarray:
    """Nearest prototype per subspace, lowest index on ties.

    x: [n, c, v] int, protos: [c, k, v] int -> [n, c] int64 indices. ``metric`` is the spec's enum value.
    """
    diff = x[:, :, None, :].astype(np.int64) - protos[None, :, :, :].astype(np.int64)
    l1 = load().enums["metric"]["l1"]
    dist = np.abs(diff).sum(-1) if metric == l1 else (diff * diff).sum(-1)
    return np.argmin(dist, axis=-1)  # argmin returns the first minimum: lowest index wins ties


def wrap(x: np.ndarray, bits: int) -> np.ndarray:
    """Two's-complement wrap of int64 values to ``bits`` bits."""
    x = np.asarray(x, dtype=np.int64) & ((1 << bits) - 1)
    return np.where(x >= 1 << (bits - 1), x - (1 << bits), x)


def lookup(idx: np.ndarray, lut: np.ndarray, bias: np.ndarray, acc_w: int = 32) -> np.ndarray:
    """acc[n, m] = bias[m] + sum_c lut[c, idx[n, c], m], wrapped to ``acc_w`` bits."""
    c = np.arange(lut.shape[0])
    acc = lut[c[None, :], idx, :].astype(np.int64).sum(axis=1) + bias.astype(np.int64)[None, :]
    return wrap(acc, acc_w)


def requantize(acc: np.ndarray, mult: int, shift: int, relu: bool, bits: int = 8,
               unsigned: bool = False) -> np.ndarray:
    """y = clamp((acc * mult + 2^(shift-1)) >> shift) to ``isa.clamp_range``: round half up, arithmetic
    shift."""
    return round_shift_clamp(np.asarray(acc, dtype=np.int64) * int(mult), shift, relu, bits, unsigned)


def round_shift_clamp(y: np.ndarray, shift: int, relu: bool, bits: int, unsigned: bool = False) -> np.ndarray:
    """clamp((y + 2^(shift-1)) >> shift) (no rounding term when shift = 0); ``y`` int64."""
    y = np.asarray(y, dtype=np.int64)
    if shift > 0:
        y = (y + (1 << (shift - 1))) >> shift
    lo, hi = clamp_range(relu, bits, unsigned)
    return np.clip(y, lo, hi)


def conv_gather(act: np.ndarray, g: ConvGeom, d: int, n: int) -> np.ndarray:
    """The ``n`` columns [n, d] of ``run`` in conv mode (docs/isa.md): act is the channels-last int8 fmap
    [h*w*ch] (as int64), element e = (ci*kh + ky)*kw + kx of column j = output pixel (j // out_w, j % out_w);
    zero outside the fmap."""
    j = np.arange(n)
    oy, ox = j // g.out_w, j % g.out_w
    e = np.arange(d)
    ci, ky, kx = e // (g.kh * g.kw), (e // g.kw) % g.kh, e % g.kw
    iy = oy[:, None] * g.stride + ky[None, :] - g.pad_t
    ix = ox[:, None] * g.stride + kx[None, :] - g.pad_l
    inside = (iy >= 0) & (iy < g.h) & (ix >= 0) & (ix < g.w)
    addr = np.where(inside, (iy * g.w + ix) * g.ch + ci[None, :], 0)
    return np.where(inside, act[addr], 0)


@dataclass
class Result:
    """Outcome of a run: the final memory, status and counters (``perf``: every performance counter of the
    spec by name, as a ``stamp`` at the stop would sample it; ``cycles`` is ``perf["cycles"]``)."""

    mem: np.ndarray
    done: bool
    err_code: int
    err_pc: int
    insn_count: int
    cycles: int
    trace: list[str] = field(default_factory=list)
    perf: dict[str, int] = field(default_factory=dict)


@dataclass
class ConvGeom:
    """``fmap`` and ``conv`` state."""

    h: int = 0
    w: int = 0
    ch: int = 0
    stride: int = 0
    kh: int = 0
    kw: int = 0
    pad_t: int = 0
    pad_l: int = 0
    out_w: int = 0


@dataclass
class _State:
    metric: int = 0
    conv: int = 0
    k: int = 0
    v: int = 0
    c: int = 0
    d: int = 0
    m: int = 0
    relu: int = 0
    unsigned: int = 0
    shift: int = 0
    mult: int = 0
    bits: int = 0
    bank: int = 0  # shape.bank: the bank of the table buffers that `run` reads
    pack: int = 0  # shape.pack: byte table entries, two table rows to a buffer row
    geom: ConvGeom = field(default_factory=ConvGeom)
    held: np.ndarray | None = None  # the m accumulators a `run` with dst = none held (for the next one's acc)


IDX_DEPTH = 4  # groups of indices the look-up unit's queue holds (pqa_lookup's IdxDepth)
RUN_DRAIN_CYCLES = 3  # a run's last look-up issue to the cycle of its last write (done), that one included
VEC_CYCLES = 3  # per `pool` / `add`: the vector unit's start and drain (its hand-over included)
FETCH_CYCLES = 6  # from the fetch's command to the dispatch of an instruction that need not wait
FETCH_HIT_CYCLES = 1  # the same from the previous dispatch, when the instruction is in the buffered bus word
GEO_SETTLE = 3  # idle cycles of the compute unit a conv-mode `run` waits after `shape` / `fmap` / `conv`
SETUP = ("shape", "quant", "fmap", "conv")  # write the layer state; the units read a copy (no wait)
GEO_SETUP = ("shape", "fmap", "conv")  # the set-up that a conv-mode run's address generator depends on
COMPUTE = ("run", "pool", "add")  # the compute unit's instructions
XFER_CYCLES = 4  # a transfer's command, first-beat and done handshakes, besides its beats


def group_costs(cfg: HwConfig, st: _State) -> tuple[list[int], int, int]:
    """(F, R, M) of a ``run``'s subspace groups: F[g] the encoder's act reads (gather cycles) for group g of a
    column (:meth:`HwConfig.gather_cycles`, group by group: the last group may hold fewer than NS
    subspaces), R = ceil(k/NP)*ceil(v/PL) the prototype rows it encodes a group in, M = ceil(m/NOUT) the
    look-up's cycles a group (one per output group)."""
    p = cfg.params
    groups = -(-st.c // p["NS"])
    g = st.geom
    mode = cfg.gather_mode(bool(st.conv), st.v, g.kh, g.kw)
    if mode == "lanes":
        reads = [-(-g.kh // cfg.gather_rows) * -(-g.kw // cfg.gather_positions(g.ch, g.kw))] * groups
    else:
        subs = [min(p["NS"], st.c - i * p["NS"]) for i in range(groups)]
        if mode == "contiguous":
            reads = [1] * groups if p["NS"] * st.v <= cfg.gather_bytes else subs
        else:
            reads = [n * st.v for n in subs]
    return reads, -(-st.k // p["NP"]) * -(-st.v // p["PL"]), -(-st.m // p["NOUT"])


def run_cycles(cfg: HwConfig, st: _State, n: int, extrapolate: bool = True) -> int:
    """The compute cycles of ``run n`` (the `compute_cycles` counter, exact): the three stages stream the
    run's n*G groups (G = ceil(c/NS)) back to back, column after column (docs/theory.md, "Streaming"):

    - the feeder gathers group q in F reads from cycle s_q on, once its column-register slot (group q-2's)
      is freed: s_q = max(s_{q-1} + F_{q-1}, e_{q-2} + R - 1), s_0 = 1; the slot is full 2 cycles after
      the last read;
    - the encoder walks group q's R prototype rows from e_q = max(e_{q-1} + R, s_q + F_q + 1, l_{q-D} + M)
      (the slot full, and room in the look-up's index queue of D = IDX_DEPTH groups); its indices enter
      the queue a cycle after its last row;
    - the look-up unit spends M cycles on group q from l_q = max(l_{q-1} + M, e_q + R) (the indices, written
      R cycles after e_q, bypass an empty queue).

    The run ends with the last group's last write, RUN_DRAIN_CYCLES after its last issue: l_last + M - 1 +
    RUN_DRAIN_CYCLES cycles, counted from the run's first cycle (0). Once a column's groups repeat the
    previous column's times shifted by one amount (a steady state), the rest is extrapolated exactly
    (``extrapolate=False`` walks every group: the tests compare the two)."""
    reads, rows, outs = group_costs(cfg, st)
    groups = len(reads)
    depth = IDX_DEPTH
    total = n * groups
    if total == 0:  # an empty run (c or n 0) stops with an error before it computes
        return 0
    s: list[int] = []
    e: list[int] = []
    lk: list[int] = []
    s_next = 1
    window = groups + max(depth, 2) + 1
    for q in range(total):
        f = reads[q % groups]
        sq = s_next if q < 2 else max(s_next, e[q - 2] + rows - 1)
        eq = sq + f + 1
        if q:
            eq = max(eq, e[q - 1] + rows)
        if q >= depth:
            eq = max(eq, lk[q - depth] + outs)
        lq = eq + rows if not q else max(eq + rows, lk[q - 1] + outs)
        s.append(sq)
        e.append(eq)
        lk.append(lq)
        s_next = sq + f
        if extrapolate and (q + 1) % groups == 0 and q + 1 >= window + groups and q + 1 < total:
            delta = lk[q] - lk[q - groups]
            if all(x[i] - x[i - groups] == delta for x in (s, e, lk) for i in range(q + 1 - window, q + 1)):
                cols_left = (total - 1 - q) // groups
                return lk[q] + cols_left * delta + outs - 1 + RUN_DRAIN_CYCLES
    return lk[-1] + outs - 1 + RUN_DRAIN_CYCLES


def compute_estimate(cfg: HwConfig, mnemonic: str, ops: dict[str, int], st: _State) -> int:
    """The model of the ``compute_cycles`` counter (docs/isa.md, "Performance counters") for one instruction:
    the cycles its compute units are busy, from the cycle after its decode to the one its last unit reports
    done. ``run n``: :func:`run_cycles` (the feeder, the encoder and the look-up unit stream the run's
    groups); ``pool``: h*w*ceil(ch/VL) + 3; ``add n``: ceil(n/VL) + 3, VL = :attr:`HwConfig.vec_lanes`; 0 for
    every other instruction. Exact on any memory (the compute units never wait on it)."""
    if mnemonic == "run":
        return run_cycles(cfg, st, ops["n"])
    if mnemonic == "add":
        return -(-ops["n"] // cfg.vec_lanes) + VEC_CYCLES
    if mnemonic == "pool":
        return st.geom.h * st.geom.w * -(-st.geom.ch // cfg.vec_lanes) + VEC_CYCLES
    return 0


TABLE_BUFS = ("proto", "lut", "bias")  # the banked table buffers: a `run` reads the tables of shape's bank


def target(ops: dict[str, int]) -> tuple[str, int] | None:
    """The (buffer, bank) that a ``run``, ``pool`` or ``add`` writes (its ``dst``), or None when ``dst`` is
    beyond the enum or the act bank it reads (``src``): error ``limit``."""
    t = load().enums["target"]
    if ops["dst"] == t["out"]:
        return ("out", 0)
    for b in (0, 1):
        if ops["dst"] == t[f"act{b}"]:
            return None if b == ops["src"] else ("act", b)
    return None


def resources(mnemonic: str, ops: dict[str, int], st: _State, buf: str = "",
              out_half: int | None = None) -> tuple[set[str], set[str]]:
    """(reads, writes) of an instruction over the on-chip resources that the controller's dependency checks
    track (docs/theory.md, "Decoupled units"): ``act0``, ``act1``, ``out0``, ``out1`` and ``tbl0``, ``tbl1``
    (the table banks: proto, lut and bias together). Every use of the output buffer counts as a write (its
    read port is shared by the vector unit and the store unit: two uses never overlap). It is two resources,
    its halves ``out0`` (bytes below OutBytes/2) and ``out1``: a ``store`` uses the halves its
    bytes lie in, a ``run`` the halves its outputs lie in (bytes ooff .. ooff + (n-1)*s + m - 1); a ``load``
    into it, a ``pool`` into it and an ``add`` use both (the buffer's write port is shared by the DMA and
    the compute unit, its read port by the store and the vector unit). ``out_half``: OutBytes/2 of the
    configuration; None: every use of the output buffer uses both halves (a conservative answer)."""
    both = {"out0", "out1"}

    def halves(lo: int, hi: int) -> set[str]:
        """The halves that bytes lo .. hi-1 of the output buffer lie in."""
        if out_half is None:
            return set(both)
        return {f"out{h}" for h in (0, 1) if lo < (h + 1) * out_half and hi > h * out_half}

    if mnemonic == "load":
        if buf == "out":
            return set(), both
        return set(), {f"tbl{ops['bank']}" if buf in TABLE_BUFS else f"act{ops['bank']}"}
    if mnemonic == "store":
        lo = (out_half or 0) if ops["half"] else 0
        return set(), halves(lo, lo + ops["nbytes"])
    if mnemonic in COMPUTE:
        dst = target(ops)
        if dst is not None and dst[0] == "act":
            w = {f"act{dst[1]}"}
        elif mnemonic == "run" and dst is not None:
            w = halves(ops["ooff"], out_end(ops["ooff"], ops["n"], ops["ostride"], st.m))
        else:
            w = set(both)
        if mnemonic == "add":
            w |= both
        r = {f"act{ops['src']}"} | ({f"tbl{st.bank}"} if mnemonic == "run" else set())
        return r, w
    return set(), set()


def transfer_words(cfg: HwConfig, mnemonic: str, ops: dict[str, int]) -> tuple[int, int]:
    """The external memory a ``load``, ``store`` or ``stamp`` moves (a stamp: its record): bytes lo .. hi-1,
    whole bus words from ``addr`` (the DMA moves whole words; a store strobes the bytes past ``nbytes`` off,
    but holds their word)."""
    nbytes = load().perf_bytes if mnemonic == "stamp" else ops["nbytes"]
    return ops["addr"], ops["addr"] + -(-nbytes // cfg.bus_bytes) * cfg.bus_bytes


def bytes_per_cycle(cfg: HwConfig, mem_bw: int = 0) -> int:
    """The bytes a cycle a memory of ``mem_bw`` bytes a cycle delivers over the configuration's bus: ``mem_bw``
    below a bus word, else (and for 0, no limit) one bus word a cycle."""
    return min(mem_bw, cfg.bus_bytes) if mem_bw > 0 else cfg.bus_bytes


class Timeline:
    """The event model of the controller and its units (docs/theory.md, "Decoupled units"): the cycle at
    which each instruction is dispatched and each unit becomes free, under the same dependency rules as
    pqa_ctrl. An instruction in the bus word the last fetch read reaches decode FETCH_HIT_CYCLES - 1 cycles
    after the previous dispatch's cycle + 1; any other is fetched once the read engine is free (no `load` in
    it) and reaches decode FETCH_CYCLES - 1 cycles later and is dispatched once no older conflicting
    instruction holds a unit (one that writes what it reads or uses what it writes, :func:`resources`; a
    `load` also waits for the store unit's `store` or `stamp` when their bus words of external memory overlap); the
    set-up instructions (SETUP) wait for nothing, and a conv-mode `run` waits until the compute unit has been
    idle GEO_SETTLE cycles after the last of them (pqa_ctrl's copy of the layer state); a
    transfer holds its unit XFER_CYCLES plus its beats (at ``mem_bw`` bytes a cycle when that is below a
    bus word), a compute instruction its compute cycles plus one. ``cycles`` (the `cycles` counter a
    `stamp` samples) is the current dispatch cycle. An estimate: the memory's latency is not modelled, and
    a throttled memory serves the two DMA engines' transfers one after the other (the RTL interleaves
    their beats)."""

    def __init__(self, cfg: HwConfig, mem_bw: int = 0) -> None:
        self.cfg = cfg
        self.bpc = bytes_per_cycle(cfg, mem_bw)
        self.t = start_cycles(cfg)  # the controller's next fetch
        self.cycles = self.t
        self.ld_free = self.st_free = self.cu_free = 0
        self.mem_free = 0  # a throttled memory: the cycle its bandwidth is free (loads and stores share it)
        # the set-up wait of a conv-mode run: idle cycles still to wait (pqa_ctrl's geo_wait), counted from
        # geo_from on, in the cycles the compute unit is idle
        self.geo_left = self.geo_from = 0
        # (reads, writes) of the last instruction of each unit
        self.uses: dict[str, tuple[set[str], set[str]]] = {u: (set(), set()) for u in ("ld", "st", "cu")}
        self.st_mem = (0, 0)  # the external memory (bus words, as bytes lo .. hi-1) the last store / stamp writes
        # the models of the performance counters load_cycles, store_cycles, dep_cycles, fetch_cycles
        self.counters = {"load_cycles": 0, "store_cycles": 0, "dep_cycles": 0, "fetch_cycles": 0}
        self.sampled = dict(self.counters)  # their values at the last dispatch (what a `stamp` samples)

    def _transfer_free(self, d: int, nbytes: int) -> int:
        """The cycle a unit is free again after a transfer of ``nbytes`` dispatched at ``d``: its beats flow
        from d + 2 at one bus word a cycle (each direction has its own channel) or, on a throttled memory,
        at ``bpc`` bytes a cycle of a bandwidth that the two engines share (their beats taken in turn)."""
        beats = -(-nbytes // self.cfg.bus_bytes)
        if self.bpc >= self.cfg.bus_bytes:
            return d + XFER_CYCLES + beats
        start = max(d + 2, self.mem_free)
        self.mem_free = start + -(-beats * self.cfg.bus_bytes // self.bpc)
        return self.mem_free + XFER_CYCLES - 2

    def step(self, mnemonic: str, ops: dict[str, int], st: _State, compute: int, buf: str = "",
             hit: bool = False) -> None:
        """Advance by one dispatched instruction (``compute``: its compute cycles; ``buf``: a load's
        buffer; ``hit``: the instruction came from the buffered bus word, no fetch)."""
        if hit:
            decode = self.t + FETCH_HIT_CYCLES - 1
        else:
            decode = max(self.t, self.ld_free) + FETCH_CYCLES - 1
        free = {"ld": self.ld_free, "st": self.st_free, "cu": self.cu_free}
        rd, wr = resources(mnemonic, ops, st, buf, self.cfg.OutBytes // 2)
        if mnemonic in ("store", "stamp", "end"):  # precise errors: after every older instruction
            ready = max(free.values())
        else:
            ready = max([0] + [free[u] for u, (ur, uw) in self.uses.items()
                               if wr & (ur | uw) or rd & uw])
            if mnemonic == "load":
                ready = max(ready, self.ld_free)  # its own unit
                lo, hi = transfer_words(self.cfg, mnemonic, ops)
                if lo < self.st_mem[1] and self.st_mem[0] < hi:  # reads what the store unit writes: after it
                    ready = max(ready, self.st_free)
            elif mnemonic in SETUP:
                ready = 0
            else:
                ready = max(ready, self.cu_free)  # the compute unit's own instruction
                if mnemonic == "run" and st.conv and self.geo_left:
                    ready = max(ready, max(self.geo_from, self.cu_free) + self.geo_left)
        d = max(decode, ready)
        self.counters["fetch_cycles"] += decode - self.t
        self.counters["dep_cycles"] += d - decode
        self.sampled = dict(self.counters)  # the instruction's own transfer is not in its sample
        self.cycles = d
        self.t = d + 1
        if mnemonic == "load":
            self.ld_free = self._transfer_free(d, ops["nbytes"])
            self.counters["load_cycles"] += self.ld_free - d - 1
            self.uses["ld"] = (rd, wr)
        elif mnemonic in ("store", "stamp"):
            nb = ops["nbytes"] if mnemonic == "store" else load().perf_bytes
            self.st_free = self._transfer_free(d, nb)
            self.st_mem = transfer_words(self.cfg, mnemonic, ops)
            self.counters["store_cycles"] += self.st_free - d - 1
            self.uses["st"] = (rd, wr)
        elif mnemonic in COMPUTE:
            # the idle cycles up to this dispatch (its own cycle included) count down the set-up wait
            self.geo_left = max(0, self.geo_left - max(0, d + 1 - max(self.geo_from, self.cu_free)))
            self.cu_free = d + compute + 1
            self.geo_from = self.cu_free
            self.uses["cu"] = (rd, wr)
        elif mnemonic in GEO_SETUP:
            self.geo_left, self.geo_from = GEO_SETTLE, d + 1
        elif mnemonic == "end":
            self.cycles = self.t = d + 2  # the finish state, then idle


def perf_record(counters: dict[str, int]) -> np.ndarray:
    """The bytes of a ``stamp`` record (docs/isa.md, "Performance counters"): each counter of the spec, in
    its order, as a little-endian word of ``cycles_bits``."""
    spec = load()
    nb = spec.cycles_bits // 8
    return np.frombuffer(b"".join(int(counters[c.name]).to_bytes(nb, "little") for c in spec.perf_counters),
                         np.uint8).copy()


def start_cycles(cfg: HwConfig) -> int:
    """Cycles a start spends clearing the on-chip buffers (one word per cycle over the largest buffer)."""
    return max(cfg.ProtoBytes, cfg.LutBytes, *(cfg.buffer_bytes(b) for b in load().buffers)) // cfg.bus_bytes


def run(cfg: HwConfig, mem: np.ndarray, insn_base: int, max_insns: int = 1_000_000,
        strict: bool = False, trace: bool = False, mem_bw: int = 0) -> Result:
    """Execute from ``insn_base`` until ``end`` or an error. ``mem`` (uint8) is copied, not changed.
    ``mem_bw``: the memory bandwidth (bytes a cycle) that the cycle model (:class:`Timeline`) assumes; 0: a
    bus word a cycle."""
    spec = load()
    err = spec.errors
    # the spec's sizes, bank by bank: banks[b][i] is bank i of buffer b
    banks = {b: [np.zeros(cfg.buffer_bytes(b), np.uint8) for _ in range(buf.banks)] for b, buf in spec.buffers.items()}
    buf_names = {b.value: b.name for b in spec.buffers.values()}
    out = banks["out"][0]
    act = banks["act"]
    mem = np.array(mem, dtype=np.uint8, copy=True)
    st = _State()
    bb = cfg.bus_bytes
    pc = insn_base
    # the performance counters (docs/isa.md): cycles and compute cycles from the cycle model, bytes exact
    perf = {"cycles": start_cycles(cfg), "compute_cycles": 0, "rd_bytes": 0, "wr_bytes": 0, "load_cycles": 0,
            "store_cycles": 0, "dep_cycles": 0, "fetch_cycles": 0}
    unmodelled = sorted({c.name for c in spec.perf_counters} - perf.keys())
    if unmodelled:  # a counter the spec adds needs its model here
        raise SimError(f"the golden simulator does not model the performance counters {unmodelled}")
    count = 0
    log: list[str] = []
    tl = Timeline(cfg, mem_bw)
    fetched = -1  # the bus word the last fetch read (the controller's fetch buffer): -1 none yet

    def stop(code: str) -> Result:
        if strict and code != "none":
            raise SimError(f"stopped with error {code} at pc {pc:#x}")
        return Result(mem, code == "none", err[code], pc if code != "none" else 0, count, perf["cycles"], log,
                      dict(perf))

    while count < max_insns:
        if pc % 8:  # only INSN_BASE can be misaligned: the pc then advances by whole words
            return stop("align")
        hit = pc // bb == fetched  # in the buffered word: no fetch
        if not hit:
            if (pc // bb + 1) * bb > mem.size:  # the fetch reads the bus word that holds the instruction
                return stop("bus")
            perf["rd_bytes"] += bb  # the fetch: one bus word
            fetched = pc // bb
        word = int.from_bytes(mem[pc : pc + 8].tobytes(), "little")
        try:
            insn = decode(word)
        except IllegalInstruction:
            return stop("illegal_insn")
        ops = insn.ops
        if trace:
            log.append(f"{pc:#010x} {insn.mnemonic} {ops}")
        compute = compute_estimate(cfg, insn.mnemonic, ops, st)
        name = insn.mnemonic

        def go(buf: str = "") -> None:  # the instruction passed its checks: it is dispatched
            tl.step(name, ops, st, compute, buf, hit)  # noqa: B023  (called in this iteration only)
            perf["cycles"] = tl.cycles
            perf.update(tl.sampled)
            perf["compute_cycles"] += compute  # noqa: B023

        if name in ("load", "store", "stamp") and ops["addr"] % bb:
            return stop("align")
        if name == "load":
            bank = banks.get(buf_names.get(ops["buf"], ""), [])
            buf = bank[ops["bank"]] if ops["bank"] < len(bank) else None
            span = -(-ops["nbytes"] // bb) * bb
            if buf is None or ops["nbytes"] == 0 or span > buf.size:
                return stop("limit")
            if ops["addr"] + span > mem.size:
                return stop("bus")
            go(buf_names[ops["buf"]])
            buf[:span] = mem[ops["addr"] : ops["addr"] + span]
            perf["rd_bytes"] += span
        elif name == "store":
            nb = ops["nbytes"]
            lo = out.size // 2 if ops["half"] else 0  # `half`: from the second half of the output buffer
            if nb == 0 or lo + nb > out.size or lo % bb:
                return stop("limit")
            if ops["addr"] + -(-nb // bb) * bb > mem.size:
                return stop("bus")
            go()
            mem[ops["addr"] : ops["addr"] + nb] = out[lo : lo + nb]
            perf["wr_bytes"] += -(-nb // bb) * bb
        elif name == "stamp":
            span = -(-load().perf_bytes // bb) * bb  # whole bus words, the last one strobed to the record's end
            if ops["addr"] + span > mem.size:
                return stop("bus")
            go()
            rec = perf_record(perf)
            mem[ops["addr"] : ops["addr"] + rec.size] = rec
            perf["wr_bytes"] += span
        elif name == "shape":
            go()
            st.metric, st.conv, st.k, st.v, st.c, st.d, st.m, st.bank, st.pack = (
                ops[f] for f in ("metric", "conv", "k", "v", "c", "d", "m", "bank", "pack"))
        elif name == "quant":
            go()
            st.relu, st.unsigned, st.shift, st.mult, st.bits = (
                ops[f] for f in ("relu", "unsigned", "shift", "mult", "bits"))
        elif name == "fmap":
            go()
            st.geom.h, st.geom.w, st.geom.ch = ops["h"], ops["w"], ops["ch"]
        elif name == "conv":
            go()
            g = st.geom
            g.stride, g.kh, g.kw, g.pad_t, g.pad_l, g.out_w = (
                ops[f] for f in ("stride", "kh", "kw", "pad_t", "pad_l", "out_w"))
        elif name in COMPUTE:
            dst = target(ops)
            dbuf = banks[dst[0]][dst[1]] if dst is not None else None
            src = act[ops["src"]]
            if name == "run":
                step, off = ops["ostride"] or st.m, ops["ooff"]
                hold = ops["dst"] == load().enums["target"]["none"]  # no output: the accumulators are held
                chain = (not (hold or ops["acc"]) or ops["n"] == 1) and (
                    not ops["acc"] or (st.held is not None and st.held.size == st.m))
                if (dbuf is None and not hold) or not chain or not layer_fits(
                        cfg, st, ops["n"], None if dbuf is None else dbuf.size, ops["ostride"], off, hold):
                    return stop("limit")
                go()
                tables = {b: banks[b][st.bank] for b in TABLE_BUFS}
                acc = _run_layer(cfg, st, ops["n"], {**tables, "act": src}, dbuf, step, off,
                                 st.held if ops["acc"] else None)
                st.held = acc[0] if hold else None
            elif name == "pool":
                if dbuf is None or not pool_fits(cfg, st, dbuf.size):
                    return stop("limit")
                go()
                g = st.geom
                x = src[: g.h * g.w * g.ch].view(np.int8).astype(np.int64).reshape(g.h * g.w, g.ch)
                y = requantize(x.sum(0), st.mult, st.shift, bool(st.relu), st.bits, bool(st.unsigned))
                dbuf[: g.ch] = y.astype(np.int8).view(np.uint8)
            else:
                n = ops["n"]
                if dbuf is None or not (1 <= n <= min(cfg.ActBytes, cfg.OutBytes) and post_fits(cfg, st)):
                    return stop("limit")
                go()
                a = src[:n].view(np.int8).astype(np.int64)
                b = out[:n].view(np.int8).astype(np.int64)
                y = round_shift_clamp(a * ops["ma"] + b * ops["mb"], st.shift, bool(st.relu), st.bits,
                                      bool(st.unsigned))
                dbuf[:n] = y.astype(np.int8).view(np.uint8)
        elif name == "end":
            go()
            count += 1
            return stop("none")
        count += 1
        pc += 8
    raise SimError(f"no end after {max_insns} instructions")


def post_fits(cfg: HwConfig, st: _State) -> bool:
    """The ``quant`` state is usable: shift range, output width (unsigned needs bits < ActW)."""
    return (st.shift <= field_limit("quant", "shift") and 2 <= st.bits <= cfg.ActW
            and not (st.unsigned and st.bits >= cfg.ActW))


def fmap_fits(cfg: HwConfig, g: ConvGeom) -> bool:
    return g.h >= 1 and g.w >= 1 and g.ch >= 1 and g.h * g.w * g.ch <= cfg.ActBytes


def pool_fits(cfg: HwConfig, st: _State, dst_bytes: int | None = None) -> bool:
    """The limit check of ``pool`` (``dst_bytes``: the size of its destination; default the output
    buffer's)."""
    return fmap_fits(cfg, st.geom) and st.geom.ch <= (dst_bytes or cfg.OutBytes) and post_fits(cfg, st)


def out_end(ooff: int, n: int, ostride: int, m: int) -> int:
    """One past the last byte a ``run`` of ``n`` columns of ``m`` outputs writes in its destination: column j
    at ooff + j*s with s = ``ostride``, or m when it is 0 (pqa_ctrl's ``oend64``)."""
    return ooff + (n - 1) * (ostride or m) + m


def layer_fits(cfg: HwConfig, st: _State, n: int, dst_bytes: int | None = None, ostride: int = 0,
               ooff: int = 0, hold: bool = False) -> bool:
    """The run-time limit check the hardware makes before a ``run`` (error ``limit`` when False;
    ``dst_bytes``: the size of its destination, default the output buffer's; ``ostride``, ``ooff``: the
    run's fields; ``hold``: dst = none, no outputs written). The accumulator chain's own rules (n = 1, the
    held m) are checked by the caller."""
    g = st.geom
    if st.conv and not (fmap_fits(cfg, g) and g.stride >= 1 and g.kh >= 1 and g.kw >= 1 and g.out_w >= 1
                        and st.d == g.ch * g.kh * g.kw):
        return False
    return (
        1 <= st.k <= cfg.KMax
        and 1 <= st.v <= cfg.VMax
        and 1 <= st.c <= cfg.CMax
        and 1 <= st.m <= cfg.MMax
        and (st.c - 1) * st.v < st.d <= st.c * st.v
        and cfg.proto_rows(st.c, st.k, st.v) * cfg.proto_row_stride <= cfg.proto_cap
        and (cfg.can_pack or not st.pack)
        and cfg.lut_rows(st.c, st.k, st.m, bool(st.pack)) * cfg.lut_row_stride <= cfg.lut_cap
        and n >= 1
        and (st.conv or n * st.d <= cfg.ActBytes)
        and (ostride == 0 or ostride >= st.m)
        and (hold or out_end(ooff, n, ostride, st.m) <= (dst_bytes or cfg.OutBytes))
        and post_fits(cfg, st)
    )


def _run_layer(cfg: HwConfig, st: _State, n: int, bufs: dict[str, np.ndarray], out: np.ndarray | None,
               step: int, off: int, start: np.ndarray | None = None) -> np.ndarray:
    """Run ``n`` columns; write them to ``out`` (None: write nothing) and return the accumulators [n, m].
    ``start``: the accumulators column 0 starts from instead of the bias (``run.acc``; n = 1)."""
    c, k, v, d, m = st.c, st.k, st.v, st.d, st.m
    x = np.zeros((n, c * v), np.int64)
    if st.conv:
        g = st.geom
        x[:, :d] = conv_gather(bufs["act"][: g.h * g.w * g.ch].view(np.int8).astype(np.int64), g, d, n)
    else:
        x[:, :d] = bufs["act"][: n * d].view(np.int8).reshape(n, d)
    protos = unpack_protos(cfg, bufs["proto"], c, k, v)
    lut = unpack_lut(cfg, bufs["lut"], c, k, m, bool(st.pack))
    eb = cfg.elem_bytes("bias")
    bias = bufs["bias"][: eb * m].view(f"<i{eb}").astype(np.int64) if start is None else start
    idx = encode(x.reshape(n, c, v), protos, st.metric)
    acc = lookup(idx, lut, bias, cfg.AccW)
    if out is None:
        return acc
    y = requantize(acc, st.mult, st.shift, bool(st.relu), st.bits, bool(st.unsigned))
    y8 = y.astype(np.int8).view(np.uint8).reshape(n, m)
    if step == m:
        out[off : off + n * m] = y8.reshape(-1)
    else:  # column j at off + j*step (step > m: the bytes between keep their values)
        rows = off + np.arange(n)[:, None] * step + np.arange(m)[None, :]
        out[rows] = y8
    return acc
