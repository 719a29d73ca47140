"""The PQA instruction set: encode, decode, assemble and disassemble, all driven by the spec."""

from __future__ import annotations

from dataclasses import dataclass, field

from .spec import Instruction, load


class IllegalInstruction(ValueError):
    """An instruction word that the hardware rejects (unknown opcode or a non-zero reserved bit)."""


class AsmError(ValueError):
    """A line of assembly that cannot be encoded."""


@dataclass(frozen=True)
class Insn:
    """One decoded instruction: mnemonic plus named operand values (enums as their integer values)."""

    mnemonic: str
    ops: dict[str, int] = field(default_factory=dict)

    def __getattr__(self, key: str) -> int:
        try:
            return self.ops[key]
        except KeyError:
            raise AttributeError(key) from None


def encode(mnemonic: str, **ops: int | str) -> int:
    spec = load()
    desc = spec.by_mnemonic(mnemonic)
    word = desc.opcode << spec.opcode_field.lsb
    names = {f.name for f in desc.fields}
    unknown = set(ops) - names
    if unknown:
        raise AsmError(f"{mnemonic}: unknown operand(s) {sorted(unknown)}")
    for f in desc.fields:
        if f.name not in ops and f.default is None:
            raise AsmError(f"{mnemonic}: missing operand {f.name!r}")
        val = ops.get(f.name, f.default)
        assert val is not None
        if isinstance(val, str):
            if f.enum is None or val not in spec.enums[f.enum]:
                raise AsmError(f"{mnemonic}.{f.name}: bad value {val!r}")
            val = spec.enums[f.enum][val]
        val = int(val)
        if not 0 <= val <= f.mask:
            raise AsmError(f"{mnemonic}.{f.name}: {val} does not fit {f.width} bits")
        word |= val << f.lsb
    return word


def _desc(word: int) -> Instruction:
    spec = load()
    op = (word >> spec.opcode_field.lsb) & spec.opcode_field.mask
    desc = spec.by_opcode(op)
    if desc is None:
        raise IllegalInstruction(f"unknown opcode {op:#x} in instruction word {word:#018x}")
    return desc


def with_field(word: int, name: str, value: int) -> int:
    """``word`` with operand ``name`` of its instruction replaced by ``value`` (no range check beyond the
    field width: used to build illegal variants of legal instructions)."""
    f = _desc(word).field(name)
    return (word & ~(f.mask << f.lsb)) | ((value & f.mask) << f.lsb)


def field_max(mnemonic: str, name: str) -> int:
    """The largest value operand ``name`` of instruction ``mnemonic`` can hold (its spec field width)."""
    return load().by_mnemonic(mnemonic).field(name).mask


def reserved_mask(desc: Instruction) -> int:
    spec = load()
    used = spec.opcode_field.mask << spec.opcode_field.lsb
    for f in desc.fields:
        used |= f.mask << f.lsb
    return ((1 << spec.insn_bits) - 1) & ~used


def decode(word: int) -> Insn:
    desc = _desc(word)
    if word & reserved_mask(desc):
        raise IllegalInstruction(f"{desc.mnemonic}: reserved bits set in instruction word {word:#018x}")
    return Insn(desc.mnemonic, {f.name: (word >> f.lsb) & f.mask for f in desc.fields})


def disassemble(word: int) -> str:
    spec = load()
    insn = decode(word)
    desc = spec.by_mnemonic(insn.mnemonic)
    parts = []
    for f in desc.fields:
        val = insn.ops[f.name]
        if f.enum is not None:
            names = {v: k for k, v in spec.enums[f.enum].items()}
            parts.append(f"{f.name}={names.get(val, val)}")
        else:
            parts.append(f"{f.name}={val:#x}" if f.name == "addr" else f"{f.name}={val}")
    return " ".join([insn.mnemonic, *parts]).strip()


def assemble_line(line: str) -> int | None:
    """``mnemonic name=value ...`` (``#`` starts a comment); returns None for an empty line."""
    text = line.split("#", 1)[0].strip()
    if not text:
        return None
    mnemonic, *args = text.split()
    ops: dict[str, int | str] = {}
    for a in args:
        if "=" not in a:
            raise AsmError(f"operand {a!r} is not name=value")
        k, v = a.split("=", 1)
        try:
            ops[k] = int(v, 0)
        except ValueError:
            ops[k] = v
    try:
        return encode(mnemonic, **ops)
    except KeyError as exc:
        raise AsmError(str(exc)) from None


def assemble(text: str) -> list[int]:
    words = []
    for lineno, line in enumerate(text.splitlines(), 1):
        try:
            w = assemble_line(line)
        except AsmError as exc:
            raise AsmError(f"line {lineno}: {exc}") from None
        if w is not None:
            words.append(w)
    return words
