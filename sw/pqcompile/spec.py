"""Loader and validator of the one PQA specification (``spec/pqa.yml``).

Everything that names an opcode, a field, a register, an error code or a hardware limit reads it from
here; nothing restates those numbers by hand.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
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


@dataclass(frozen=True)
class HwConfig:
    """One named hardware configuration: the elaboration parameters of ``pqa_top``."""

    name: str
    doc: str
    params: dict[str, int]

    def __getattr__(self, key: str) -> int:
        try:
            return self.params[key]
        except KeyError:
            raise AttributeError(key) from None

    @property
    def bus_bytes(self) -> int:
        return self.params["AxiDataWidth"] // 8

    @property
    def lut_bytes(self) -> int:
        """Bytes one table entry occupies in memory and in the on-chip table buffer."""
        return (self.params["LutW"] + 7) // 8

    @property
    def bias_bytes(self) -> int:
        return 4 * self.params["MMax"]


CONFIG_KEYS = (
    "AxiDataWidth", "AxiAddrWidth", "ActW", "ProtoW", "LutW", "AccW", "KMax", "VMax", "CMax", "MMax",
    "ProtoBytes", "LutBytes", "ActBytes", "OutBytes",
)


@dataclass(frozen=True)
class Spec:
    insn_bits: int
    cycles_bits: int  # the cycle counter (`stamp`, CYCLES_LO / CYCLES_HI)
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
    configs: dict[str, HwConfig]

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


def parse(raw: dict[str, Any]) -> Spec:
    _keys("spec", raw, {"isa", "enums", "errors", "registers", "configs"})
    isa = _keys("isa", raw["isa"], {"insn_bits", "cycles_bits", "opcode_field", "instructions"})
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
    configs = {}
    for name, c in raw["configs"].items():
        c = _keys(f"configs.{name}", c, set(CONFIG_KEYS) | {"doc"})
        params = {k: int(c[k]) for k in CONFIG_KEYS}
        if params["ActW"] != 8 or params["ProtoW"] != 8:
            raise SpecError(f"configs.{name}: this datapath supports ActW = ProtoW = 8 only")
        if not 2 <= params["LutW"] <= 16:
            raise SpecError(f"configs.{name}: LutW must be 2..16")
        if params["AxiDataWidth"] != nbits or params["AxiDataWidth"] != cycles_bits:
            raise SpecError(f"configs.{name}: this datapath supports AxiDataWidth = {nbits} only (one instruction "
                            "and one stamp per bus word)")
        if params["KMax"] > 255 or params["VMax"] > 255 or params["CMax"] > 255:
            raise SpecError(f"configs.{name}: KMax, VMax and CMax must fit the 8-bit shape fields")
        for key in ("ProtoBytes", "LutBytes", "ActBytes", "OutBytes"):
            if params[key] % 8 or params[key] & (params[key] - 1):
                raise SpecError(f"configs.{name}: {key} must be a power of two, at least 8")
        configs[str(name)] = HwConfig(str(name), str(c["doc"]), params)
    return Spec(
        insn_bits=nbits,
        cycles_bits=cycles_bits,
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
        configs=configs,
    )


@functools.cache
def load(path: Path = SPEC_PATH) -> Spec:
    with open(path, encoding="utf-8") as fh:
        return parse(yaml.safe_load(fh))
