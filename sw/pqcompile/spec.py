"""Loader and validator of the one PQA specification (``spec/pqa.yml``).

Everything that names an opcode, a field, a register, an error code, an on-chip buffer's layout and size,
or a hardware limit reads it from here; nothing restates those numbers by hand. Every named configuration
is checked against the spec's ``config_rules`` by one helper, :func:`check_config`.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

SPEC_PATH = Path(str(resources.files("pqcompile") / "spec" / "pqa.yml"))


class SpecError(ValueError):
    """The specification file is malformed."""


@dataclass(frozen=True)
class Field:
    name: str
    lsb: int
    width: int
    doc: str
    enum: str | None = None
    default: int | None = None  # value the assembler uses when the operand is omitted (None: required)
    limit: int | None = None  # the largest value the hardware accepts (larger encodable ones stop with `limit`)

    @property
    def mask(self) -> int:
        return (1 << self.width) - 1


@dataclass(frozen=True)
class Instruction:
    mnemonic: str
    opcode: int
    doc: str
    fields: tuple[Field, ...]

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"{self.mnemonic} has no field {name!r}")


def elem_bytes(bits: int) -> int:
    """Bytes that an element of ``bits`` bits takes in an on-chip buffer and in memory: ceil(bits / 8),
    little-endian (the spec's ``buffers`` rule; pqa_pkg::elem_bytes is the RTL's copy)."""
    return (bits + 7) // 8


def row_stride(row_bytes: int, bus_bytes: int) -> int:
    """Bytes from one row of a banked buffer (prototype rows, table rows, a table lane's word) to the next:
    ``row_bytes`` rounded up to a power of two up to a bus word (rows never straddle a bus word), else to
    whole bus words (a row is whole words of the banked buffer); pqa_pkg::row_stride is the RTL's copy."""
    if row_bytes <= bus_bytes:
        return 1 << (row_bytes - 1).bit_length()
    return -(-row_bytes // bus_bytes) * bus_bytes


@dataclass(frozen=True)
class Buffer:
    """One on-chip buffer (spec ``buffers``): what ``load`` writes with ``buf`` = ``value``."""

    name: str
    value: int  # its value of enum `buffer` (load's `buf` field)
    layout: str  # element order, last index fastest: "[c][k][v]"
    elem: str  # what an element is
    elem_bits: int | str  # element width: a number, or the configuration parameter that sets it
    bytes: str | None  # the configuration parameter that gives its size in bytes ...
    entries: str | None  # ... or the one that gives its size in elements
    doc: str
    banks: int = 1  # banks of that size (load's `bank`; a `run` reads the tables of shape's `bank`)


@dataclass(frozen=True)
class HwConfig:
    """One named hardware configuration: the elaboration parameters of ``pqa_top``."""

    name: str
    doc: str
    params: dict[str, int]
    # the spec's buffers (None: those of the spec file, for configurations made by hand in tests)
    buffers: dict[str, Buffer] | None = field(default=None, compare=False, repr=False)

    def __getattr__(self, key: str) -> int:
        try:
            return self.params[key]
        except KeyError:
            raise AttributeError(key) from None

    @property
    def bus_bytes(self) -> int:
        return self.params["AxiDataWidth"] // 8

    def buffer(self, name: str) -> Buffer:
        bufs = self.buffers if self.buffers is not None else load().buffers
        try:
            return bufs[name]
        except KeyError:
            raise KeyError(f"unknown buffer {name!r}; known: {', '.join(bufs)}") from None

    def elem_bits(self, buf: str) -> int:
        """Bits of an element of buffer ``buf``."""
        b = self.buffer(buf)
        return b.elem_bits if isinstance(b.elem_bits, int) else self.params[b.elem_bits]

    def elem_bytes(self, buf: str) -> int:
        """Bytes an element of buffer ``buf`` takes (in the buffer and in memory)."""
        return elem_bytes(self.elem_bits(buf))

    def buffer_bytes(self, buf: str) -> int:
        """Usable size of buffer ``buf`` in bytes: its parameter (or entries x element bytes); the prototype
        buffer holds whole rows only (:attr:`proto_cap`)."""
        if buf == "proto":
            return self.proto_cap
        if buf == "lut":
            return self.lut_cap
        b = self.buffer(buf)
        return self.params[b.bytes] if b.bytes is not None else self.params[str(b.entries)] * self.elem_bytes(buf)

    # The prototype buffer's row layout (spec ``buffers.proto``): the encoder reads one row per cycle, the
    # NS x NP x PL prototype elements of NS subspaces, NP prototypes and PL elements.
    @property
    def proto_row_bytes(self) -> int:
        """Bytes of the elements of one prototype row: NS * NP * PL elements."""
        return self.params["NS"] * self.params["NP"] * self.params["PL"] * self.elem_bytes("proto")

    @property
    def proto_row_stride(self) -> int:
        """Bytes from one prototype row to the next: the row bytes rounded up to a power of two when they are
        less than a bus word, else to whole bus words (pqa_pkg::row_stride)."""
        return row_stride(self.proto_row_bytes, self.bus_bytes)

    def _whole_rows(self, size_param: str, stride: int) -> int:
        return self.params[size_param] // stride * stride

    @property
    def proto_cap(self) -> int:
        """Bytes of the prototype buffer that hold rows: the whole rows that fit ProtoBytes."""
        return self._whole_rows("ProtoBytes", self.proto_row_stride)

    # Window positions one act read of the encoder's lanes gather mode may cover (pqa_top's GatherPos), and
    # the window rows it reads at once with NS > 1 (pqa_top's GatherRowsMax: that many act read ports).
    GATHER_POSITIONS = 3
    GATHER_ROWS = 3
    GATHER_CH_GROUPS = 4  # channel groups of NS up to which a read covers GATHER_POSITIONS positions (pqa_top)

    @property
    def gather_rows(self) -> int:
        """Act read ports of the column feed (copies of the act buffer): GATHER_ROWS with NS > 1 (a lanes-mode
        gather reads that many window rows at once), 1 on the narrow datapath."""
        return self.GATHER_ROWS if self.params["NS"] > 1 else 1

    @property
    def gather_bytes(self) -> int:
        """Bytes of each act read port of the column feed: (GATHER_POSITIONS-1)*ch + NS with NS > 1, ch =
        min(GATHER_CH_GROUPS*NS, CMax) (so that GATHER_POSITIONS positions of NS channels fit at channel counts
        up to ch: 144 at `pqa`, every channel count up to its CMax of 64), GATHER_POSITIONS*NS on the narrow
        datapath; at least VMax."""
        p = self.params
        ch = min(self.GATHER_CH_GROUPS * p["NS"], p["CMax"])
        span = (self.GATHER_POSITIONS - 1) * ch + p["NS"] if p["NS"] > 1 else self.GATHER_POSITIONS * p["NS"]
        return max(span, p["VMax"])

    def gather_positions(self, ch: int, kw: int) -> int:
        """Window positions a lanes-mode read covers: the largest p <= GATHER_POSITIONS (and <= kw) with
        (p-1)*ch + NS <= :attr:`gather_bytes` (position p's NS channels lie at byte (p-1)*ch of the read)."""
        best = 1
        for p in range(2, self.GATHER_POSITIONS + 1):
            if (p - 1) * ch + self.params["NS"] <= self.gather_bytes and p <= kw:
                best = p
        return best

    @property
    def vec_lanes(self) -> int:
        """Lanes of the vector unit (``pool`` / ``add`` elements per cycle): as wide as the act buffer's port
        (max(:attr:`gather_bytes`, NOUT, bus) bytes: the column feed, and the look-up unit's results kept on
        chip) and the output buffer's (max(NOUT, bus) bytes), the narrower: max(NOUT, bus)."""
        p = self.params
        return min(max(self.gather_bytes, p["NOUT"], self.bus_bytes), max(p["NOUT"], self.bus_bytes))

    def gather_mode(self, conv: bool, v: int, kh: int, kw: int) -> str:
        """How the encoder gathers a column into its register (docs/theory.md, "Column feed"): ``lanes`` in
        conv mode with v = kh*kw (a subspace is one channel's window: up to GATHER_POSITIONS neighbouring
        window positions of NS channels on up to GATHER_ROWS window rows a cycle), ``contiguous`` without conv
        mode or for a 1x1 window (a column is contiguous act bytes: a group of NS subspaces, or one subspace,
        a cycle), ``element`` otherwise (one element a cycle)."""
        if conv and v == kh * kw:
            return "lanes"
        if not conv or (kh == 1 and kw == 1):
            return "contiguous"
        return "element"

    def gather_cycles(self, c: int, v: int, conv: bool, kh: int, kw: int, ch: int) -> int:
        """Cycles the encoder spends gathering one column (:meth:`gather_mode`): ceil(c/NS)*ceil(kh/R)*
        ceil(kw/P) (lanes, R = :attr:`gather_rows`, P = :meth:`gather_positions` of the fmap's ch channels);
        contiguous: ceil(c/NS) when a group's NS*v bytes fit one read (:attr:`gather_bytes`), else c;
        element: c*v."""
        mode = self.gather_mode(conv, v, kh, kw)
        groups = -(-c // self.params["NS"])
        if mode == "lanes":
            return groups * -(-kh // self.gather_rows) * -(-kw // self.gather_positions(ch, kw))
        if mode == "contiguous":
            return groups if self.params["NS"] * v <= self.gather_bytes else c
        return c * v

    def proto_rows(self, c: int, k: int, v: int) -> int:
        """Rows a `run` with c subspaces, k prototypes and v elements reads: ceil(c/NS) ceil(k/NP) ceil(v/PL)."""
        p = self.params
        return -(-c // p["NS"]) * -(-k // p["NP"]) * -(-v // p["PL"])

    # The table buffer's row layout (spec ``buffers.lut``): NS lanes, each reading one lane word (NOUT table
    # entries) per cycle from its own bank, at its own row.
    @property
    def lut_lane_bytes(self) -> int:
        """Bytes of a table lane word: NOUT entries, rounded as a row (:func:`row_stride`)."""
        return row_stride(self.params["NOUT"] * self.elem_bytes("lut"), self.bus_bytes)

    @property
    def lut_row_stride(self) -> int:
        """Bytes from one table row (NS lane words) to the next (:func:`row_stride`)."""
        return row_stride(self.params["NS"] * self.lut_lane_bytes, self.bus_bytes)

    @property
    def lut_cap(self) -> int:
        """Bytes of the table buffer that hold rows: the whole rows that fit LutBytes."""
        return self._whole_rows("LutBytes", self.lut_row_stride)

    def lut_rows(self, c: int, k: int, m: int, pack: bool = False) -> int:
        """Buffer rows of the table of a `run` with c subspaces, k prototypes and m outputs: its table rows
        ceil(c/NS) k ceil(m/NOUT), or half of them rounded up with ``pack`` (``shape.pack``: byte entries, two
        table rows to a buffer row)."""
        p = self.params
        rows = -(-c // p["NS"]) * k * -(-m // p["NOUT"])
        return -(-rows // 2) if pack else rows

    @property
    def can_pack(self) -> bool:
        """``shape.pack`` is legal: table entries are wider than a byte (LutW > 8)."""
        return self.elem_bytes("lut") > 1

    @property
    def lut_bytes(self) -> int:
        """Bytes one table entry occupies in memory and in the on-chip table buffer."""
        return self.elem_bytes("lut")

    @property
    def bias_bytes(self) -> int:
        """Size of the bias buffer in bytes."""
        return self.buffer_bytes("bias")


CONFIG_KEYS = (
    "AxiDataWidth", "AxiAddrWidth", "ActW", "ProtoW", "LutW", "AccW", "KMax", "VMax", "CMax", "MMax",
    "ProtoBytes", "LutBytes", "ActBytes", "OutBytes",
    "NS", "NP", "PL", "NOUT",  # lanes: subspaces, distance units, elements per distance, outputs per cycle
)
RULE_KINDS = ("min", "max", "eq", "pow2")


@dataclass(frozen=True)
class Bound:
    """A bound of a configuration rule as the spec writes it (``text``): a number or a spec value
    (``value``, resolved when the spec is loaded), or another configuration parameter (``param``)."""

    text: str
    value: int | None = None
    param: str | None = None

    def resolve(self, params: dict[str, int]) -> int:
        """The bound's value in the configuration ``params``."""
        if self.param is not None:
            return params[self.param]
        assert self.value is not None
        return self.value

    def describe(self, params: dict[str, int]) -> str:
        """The bound and its value for ``params``: "16", "LutW = 8", "load.addr.width = 32"."""
        n = self.resolve(params)
        return str(n) if self.text == str(n) else f"{self.text} = {n}"

    def __str__(self) -> str:
        """The bound as the spec writes it, with the value of a spec value: "12", "LutW",
        "load.addr.width (32)"."""
        return self.text if self.value is None or self.text == str(self.value) else f"{self.text} ({self.value})"


@dataclass(frozen=True)
class ConfigRule:
    """What a configuration may set for one parameter (spec ``config_rules``)."""

    param: str
    doc: str
    min: Bound | None = None
    max: Bound | None = None
    eq: Bound | None = None
    pow2: bool = False

    def failures(self, params: dict[str, int]) -> list[str]:
        """The parts of this rule that ``params`` breaks, in words ("at most 16")."""
        v = params[self.param]
        out = []
        if self.eq is not None and v != self.eq.resolve(params):
            out.append(f"must equal {self.eq.describe(params)}")
        if self.min is not None and v < self.min.resolve(params):
            out.append(f"at least {self.min.describe(params)}")
        if self.max is not None and v > self.max.resolve(params):
            out.append(f"at most {self.max.describe(params)}")
        if self.pow2 and (v < 1 or v & (v - 1)):
            out.append("a power of two")
        return out

    def describe(self) -> str:
        """The rule in words: "12 .. load.addr.width (32)", "= 8", ">= LutW", "power of two, >= 8"."""
        parts = ["power of two"] if self.pow2 else []
        if self.eq is not None:
            parts.append(f"= {self.eq}")
        if self.min is not None and self.max is not None:
            parts.append(f"{self.min} .. {self.max}")
        elif self.min is not None:
            parts.append(f">= {self.min}")
        elif self.max is not None:
            parts.append(f"<= {self.max}")
        return ", ".join(parts)


BUS_WORD_BUFFERS = ("ProtoBytes", "LutBytes", "ActBytes", "OutBytes")  # at least one bus word each (pqa_top)


def check_config(where: str, params: dict[str, int], rules: dict[str, ConfigRule]) -> None:
    """Raise SpecError, naming ``where``, each parameter, its value and the rule it breaks, unless
    ``params`` (a configuration: pqa_top's parameters) keeps every rule. The one check of a configuration."""
    broken = [r for r in rules.values() if r.failures(params)]
    bad = [f"{r.param} = {params[r.param]} breaks config_rules.{r.param}: {' and '.join(r.failures(params))} "
           f"({r.doc})" for r in broken]
    bad += [f"{b} = {params[b]} is less than a bus word (AxiDataWidth = {params['AxiDataWidth']} bits): the buffers "
            "are whole bus words" for b in BUS_WORD_BUFFERS if b in params and "AxiDataWidth" in params
            and params[b] * 8 < params["AxiDataWidth"] and not any(r.param in (b, "AxiDataWidth") for r in broken)]
    if bad:
        raise SpecError(f"{where}: " + "; ".join(bad))


@dataclass(frozen=True)
class PerfCounter:
    """One performance counter of a ``stamp`` record (spec ``isa.perf_counters``): its word ``index``."""

    name: str
    index: int
    doc: str
    exact: bool  # the golden simulator's value is exact (the RTL must equal it), else its cycle model's estimate


@dataclass(frozen=True)
class Spec:
    insn_bits: int
    cycles_bits: int  # the width of every performance counter (the cycle counter: CYCLES_LO / CYCLES_HI)
    perf_counters: tuple[PerfCounter, ...]  # a `stamp` record, in order: one counter per bus word
    opcode_field: Field
    instructions: tuple[Instruction, ...]
    enums: dict[str, dict[str, int]]
    enum_docs: dict[str, str]
    errors: dict[str, int]
    error_docs: dict[str, str]
    err_bits: int  # width of an error code
    registers: tuple[dict[str, Any], ...]
    reg_addr_bits: int  # AXI4-Lite address width of the register map
    reg_data_bits: int  # register (AXI4-Lite data) width
    reg_id_value: int
    ctrl_bits: dict[str, int]
    status_bits: dict[str, int]
    buffers: dict[str, Buffer]  # in enum `buffer` order
    config_rules: dict[str, ConfigRule]  # one per configuration parameter, in CONFIG_KEYS order
    configs: dict[str, HwConfig]

    @property
    def perf_bytes(self) -> int:
        """Bytes of a ``stamp`` record: one counter of ``cycles_bits`` per performance counter."""
        return len(self.perf_counters) * self.cycles_bits // 8

    def perf_counter(self, name: str) -> PerfCounter:
        for c in self.perf_counters:
            if c.name == name:
                return c
        raise KeyError(f"unknown performance counter {name!r}; known: {', '.join(c.name for c in self.perf_counters)}")

    def by_mnemonic(self, mnemonic: str) -> Instruction:
        for insn in self.instructions:
            if insn.mnemonic == mnemonic:
                return insn
        raise KeyError(f"unknown mnemonic {mnemonic!r}")

    def by_opcode(self, opcode: int) -> Instruction | None:
        for insn in self.instructions:
            if insn.opcode == opcode:
                return insn
        return None

    def reg(self, name: str) -> int:
        for r in self.registers:
            if r["name"] == name:
                return int(r["offset"])
        raise KeyError(f"unknown register {name!r}")

    def config(self, name: str) -> HwConfig:
        try:
            return self.configs[name]
        except KeyError:
            raise KeyError(f"unknown hardware configuration {name!r}; known: {', '.join(self.configs)}") from None


def camel(name: str) -> str:
    """``name`` as pqa_pkg spells it: ``small_fast`` -> ``SmallFast``."""
    return "".join(p.capitalize() for p in name.split("_"))


def _keys(where: str, d: Any, required: set[str], optional: set[str] = frozenset()) -> dict[str, Any]:  # type: ignore[assignment]
    if not isinstance(d, dict):
        raise SpecError(f"{where}: expected a mapping, got {type(d).__name__}")
    missing = required - d.keys()
    unknown = d.keys() - required - optional
    if missing:
        raise SpecError(f"{where}: missing keys {sorted(missing)}")
    if unknown:
        raise SpecError(f"{where}: unknown keys {sorted(unknown)}")
    return d


def _field(where: str, d: Any) -> Field:
    d = _keys(where, d, {"name", "lsb", "width", "doc"}, {"enum", "default", "limit"})
    dflt, lim = d.get("default"), d.get("limit")
    f = Field(str(d["name"]), int(d["lsb"]), int(d["width"]), str(d["doc"]), d.get("enum"),
              None if dflt is None else int(dflt), None if lim is None else int(lim))
    if f.limit is not None and not 0 <= f.limit < f.mask:
        raise SpecError(f"{where}: limit {f.limit} must be below the field's largest value {f.mask}")
    return f


def _bound(where: str, text: Any, isa: dict[str, int], insns: list[Instruction], param: str) -> Bound:
    """A rule bound: an integer, another configuration parameter, ``isa.insn_bits`` / ``isa.cycles_bits``,
    or ``<insn>.<field>.width`` / ``<insn>.<field>.max``."""
    if isinstance(text, bool):
        raise SpecError(f"{where}: {text!r} is not a bound")
    if isinstance(text, int):
        return Bound(str(text), value=text)
    s = str(text)
    if s in CONFIG_KEYS:
        if s == param:
            raise SpecError(f"{where}: a parameter cannot bound itself")
        return Bound(s, param=s)
    if s in isa:
        return Bound(s, value=isa[s])
    parts = s.split(".")
    if len(parts) == 3 and parts[2] in ("width", "max"):
        for insn in insns:
            if insn.mnemonic == parts[0]:
                for f in insn.fields:
                    if f.name == parts[1]:
                        return Bound(s, value=f.width if parts[2] == "width" else f.mask)
    raise SpecError(f"{where}: {s!r} is neither an integer, a configuration parameter, {' nor '.join(isa)}, "
                    "nor <insn>.<field>.width / .max of an instruction field")


def _config_rules(raw: Any, isa: dict[str, int], insns: list[Instruction]) -> dict[str, ConfigRule]:
    raw = _keys("config_rules", raw, set(CONFIG_KEYS))
    rules = {}
    for p in CONFIG_KEYS:
        where = f"config_rules.{p}"
        d = _keys(where, raw[p], {"doc"}, set(RULE_KINDS))
        if not set(RULE_KINDS) & d.keys():
            raise SpecError(f"{where}: no rule (give one of {', '.join(RULE_KINDS)})")
        if "eq" in d and ("min" in d or "max" in d):
            raise SpecError(f"{where}: eq excludes min and max")
        if "pow2" in d and not isinstance(d["pow2"], bool):
            raise SpecError(f"{where}.pow2: true or false, not {d['pow2']!r}")
        b = {k: _bound(f"{where}.{k}", d[k], isa, insns, p) for k in ("min", "max", "eq") if k in d}
        rules[p] = ConfigRule(p, str(d["doc"]), b.get("min"), b.get("max"), b.get("eq"), bool(d.get("pow2", False)))
    return rules


_IDENT = re.compile(r"[a-z][a-z0-9_]*$")


def _perf_counters(raw: Any) -> tuple[PerfCounter, ...]:
    """The performance counters of a ``stamp`` record: at least one, ``cycles`` among them (the CYCLES
    register's counter), unique lower-case names."""
    if not isinstance(raw, list) or not raw:
        raise SpecError("isa.perf_counters: expected a non-empty list of {name, exact, doc}")
    out = []
    for i, d in enumerate(raw):
        d = _keys(f"isa.perf_counters[{i}]", d, {"name", "exact", "doc"})
        name = str(d["name"])
        if not _IDENT.match(name) or name in {c.name for c in out}:
            raise SpecError(f"isa.perf_counters[{i}]: name {name!r} repeated or not a lower-case identifier")
        if not isinstance(d["exact"], bool):
            raise SpecError(f"isa.perf_counters[{i}].exact: true or false, not {d['exact']!r}")
        out.append(PerfCounter(name, i, str(d["doc"]), d["exact"]))
    if "cycles" not in {c.name for c in out}:
        raise SpecError("isa.perf_counters: no counter 'cycles' (the counter CYCLES_LO / CYCLES_HI read)")
    return tuple(out)


def _buffers(raw: Any, enum: dict[str, int] | None) -> dict[str, Buffer]:
    if enum is None:
        raise SpecError("buffers: enum `buffer` (the values of load's `buf`) is missing")
    raw = _keys("buffers", raw, set(enum))
    out = {}
    for name, value in sorted(enum.items(), key=lambda kv: kv[1]):
        where = f"buffers.{name}"
        d = _keys(where, raw[name], {"layout", "elem", "elem_bits", "doc"}, {"bytes", "entries", "banks"})
        if ("bytes" in d) == ("entries" in d):
            raise SpecError(f"{where}: give exactly one of bytes and entries")
        bits = d["elem_bits"]
        if not (isinstance(bits, int) and not isinstance(bits, bool) and bits > 0 or bits in CONFIG_KEYS):
            raise SpecError(f"{where}.elem_bits: {bits!r} is neither a positive integer nor a configuration "
                            "parameter")
        size = d.get("bytes", d.get("entries"))
        if size not in CONFIG_KEYS:
            raise SpecError(f"{where}: {size!r} is not a configuration parameter")
        banks = d.get("banks", 1)
        if not (isinstance(banks, int) and not isinstance(banks, bool) and banks in (1, 2)):
            raise SpecError(f"{where}.banks: {banks!r} is not 1 or 2 (load's `bank` is one bit)")
        out[name] = Buffer(name, value, str(d["layout"]), str(d["elem"]), bits, d.get("bytes"), d.get("entries"),
                           str(d["doc"]), banks)
    return out


def parse(raw: dict[str, Any]) -> Spec:
    _keys("spec", raw, {"isa", "enums", "errors", "registers", "buffers", "config_rules", "configs"})
    isa = _keys("isa", raw["isa"], {"insn_bits", "cycles_bits", "perf_counters", "opcode_field", "instructions"})
    nbits = int(isa["insn_bits"])
    if nbits % 8:
        raise SpecError(f"isa.insn_bits: {nbits} is not a whole number of bytes")
    of = isa["opcode_field"]
    opf = Field("opcode", int(of["lsb"]), int(of["width"]), "operation code")
    insns = []
    seen_ops: set[int] = set()
    for i, d in enumerate(isa["instructions"]):
        d = _keys(f"isa.instructions[{i}]", d, {"mnemonic", "opcode", "doc", "fields"})
        fields = tuple(_field(f"{d['mnemonic']}.fields[{j}]", f) for j, f in enumerate(d["fields"]))
        used = opf.mask << opf.lsb
        for f in fields:
            bits = f.mask << f.lsb
            if bits & used or f.lsb + f.width > nbits:
                raise SpecError(f"{d['mnemonic']}.{f.name}: overlaps another field or leaves the word")
            if f.default is not None and not 0 <= f.default <= f.mask:
                raise SpecError(f"{d['mnemonic']}.{f.name}: default {f.default} does not fit {f.width} bits")
            used |= bits
        op = int(d["opcode"])
        if op in seen_ops or op > opf.mask or op == 0:
            raise SpecError(f"{d['mnemonic']}: opcode {op:#x} repeated, zero or too wide")
        seen_ops.add(op)
        insns.append(Instruction(str(d["mnemonic"]), op, str(d["doc"]), fields))
    enums = {}
    enum_docs = {}
    for name, e in raw["enums"].items():
        e = _keys(f"enums.{name}", e, {"doc", "values"})
        enums[name] = {str(k): int(v) for k, v in e["values"].items()}
        enum_docs[name] = str(e["doc"])
    for insn in insns:
        for f in insn.fields:
            if f.enum is not None and f.enum not in enums:
                raise SpecError(f"{insn.mnemonic}.{f.name}: unknown enum {f.enum!r}")
    err = _keys("errors", raw["errors"], {"doc", "bits", "values"})
    err_bits = int(err["bits"])
    errors = {}
    error_docs = {}
    for name, e in err["values"].items():
        e = _keys(f"errors.{name}", e, {"code", "doc"})
        errors[str(name)] = int(e["code"])
        error_docs[str(name)] = str(e["doc"])
        if not 0 <= errors[str(name)] < 1 << err_bits:
            raise SpecError(f"errors.{name}: code {errors[str(name)]} does not fit {err_bits} bits")
    regs_raw = _keys("registers", raw["registers"],
                     {"doc", "addr_bits", "data_bits", "regs", "id_value", "ctrl_bits", "status_bits"})
    addr_bits, data_bits = int(regs_raw["addr_bits"]), int(regs_raw["data_bits"])
    if data_bits not in (32, 64):
        raise SpecError(f"registers.data_bits: AXI4-Lite data is 32 or 64 bits, not {data_bits}")
    regs = tuple(
        _keys(f"registers.regs[{i}]", r, {"name", "offset", "access", "doc"}) for i, r in enumerate(regs_raw["regs"])
    )
    for r in regs:
        off = int(r["offset"])
        if not 0 <= off < 1 << addr_bits or off % (data_bits // 8):
            raise SpecError(f"registers.{r['name']}: offset {off:#x} outside the {addr_bits}-bit map or not "
                            f"{data_bits // 8}-byte aligned")
    if not 0 <= int(regs_raw["id_value"]) < 1 << data_bits:
        raise SpecError(f"registers.id_value: does not fit {data_bits} bits")
    for group in ("ctrl_bits", "status_bits"):
        for k, v in regs_raw[group].items():
            if not 0 <= int(v) < data_bits:
                raise SpecError(f"registers.{group}.{k}: bit {v} outside a {data_bits}-bit register")
    cycles_bits = int(isa["cycles_bits"])
    if cycles_bits != 2 * data_bits:
        raise SpecError(f"isa.cycles_bits: {cycles_bits} must be twice registers.data_bits ({data_bits}): "
                        "CYCLES_LO and CYCLES_HI hold it")
    if cycles_bits != nbits:
        raise SpecError(f"isa.cycles_bits: {cycles_bits} must equal isa.insn_bits ({nbits}): a `stamp` record "
                        "packs its counters as instruction-sized words")
    perf = _perf_counters(isa["perf_counters"])
    buffers = _buffers(raw["buffers"], enums.get("buffer"))
    rules = _config_rules(raw["config_rules"], {"isa.insn_bits": nbits, "isa.cycles_bits": cycles_bits}, insns)
    configs = {}
    for name, c in raw["configs"].items():
        if camel(str(name)) == "Rule":
            raise SpecError(f"configs.{name}: the name is taken (pqa_pkg's CfgRule<Param> constants)")
        c = _keys(f"configs.{name}", c, set(CONFIG_KEYS) | {"doc"})
        params = {k: int(c[k]) for k in CONFIG_KEYS}
        check_config(f"configs.{name}", params, rules)
        configs[str(name)] = HwConfig(str(name), str(c["doc"]), params, buffers)
    return Spec(
        insn_bits=nbits,
        cycles_bits=cycles_bits,
        perf_counters=perf,
        opcode_field=opf,
        instructions=tuple(insns),
        enums=enums,
        enum_docs=enum_docs,
        errors=errors,
        error_docs=error_docs,
        err_bits=err_bits,
        registers=regs,
        reg_addr_bits=addr_bits,
        reg_data_bits=data_bits,
        reg_id_value=int(regs_raw["id_value"]),
        ctrl_bits={k: int(v) for k, v in regs_raw["ctrl_bits"].items()},
        status_bits={k: int(v) for k, v in regs_raw["status_bits"].items()},
        buffers=buffers,
        config_rules=rules,
        configs=configs,
    )


@functools.cache
def load(path: Path = SPEC_PATH) -> Spec:
    with open(path, encoding="utf-8") as fh:
        return parse(yaml.safe_load(fh))
