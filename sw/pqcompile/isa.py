"""The PQA instruction set: encode, decode, assemble and disassemble, all driven by the spec."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .spec import Field, Instruction, load


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


def field_limit(mnemonic: str, name: str) -> int:
    """The largest value of operand ``name`` the hardware accepts: the spec's ``limit`` where it has one (larger
    values encode, and stop the accelerator with ``limit``), else the field's largest value."""
    f = load().by_mnemonic(mnemonic).field(name)
    return f.mask if f.limit is None else f.limit


def clamp_range(relu: bool, bits: int, unsigned: bool = False) -> tuple[int, int]:
    """The output range of ``quant`` (docs/isa.md): signed ``bits`` bits, [0, 2^(bits-1)-1] with ReLU,
    [0, 2^bits-1] unsigned. The one rule for the simulator, the quantizer, the integer reference, QAT and the
    testbenches (an activation's range is the clamp without ReLU)."""
    if unsigned:
        return 0, (1 << bits) - 1
    return (0 if relu else -(1 << (bits - 1))), (1 << (bits - 1)) - 1


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


# ------------------------------------------------------------------------------------------------------------
# assembly source: one statement a line (the syntax of docs/assembly.md; pqcompile.asm adds the listing columns)
# ------------------------------------------------------------------------------------------------------------
WORD_DIRECTIVE = ".word"  # ``.word VALUE``: one raw instruction word (legal or not), e.g. for tests of illegal words
_NUMBER = re.compile(r"-?(?:0[xX][0-9a-fA-F]+|[0-9]+)$")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*$")
_SEPARATOR = re.compile(r"\s*,\s*|\s+")  # between operands: white space and/or one comma


def insn_bytes() -> int:
    """Bytes of one instruction word (the spec's ``insn_bits`` / 8)."""
    return load().insn_bits // 8


def strip_comment(line: str) -> str:
    """``line`` without its comment (``#`` or ``//`` to the end of the line) and surrounding white space."""
    cut = len(line)
    for mark in ("#", "//"):
        i = line.find(mark)
        if 0 <= i < cut:
            cut = i
    return line[:cut].strip()


def _show(text: str) -> str:
    """``text`` quoted for a one-line message (control and non-ASCII characters escaped)."""
    return ascii(text)


def parse_number(text: str, what: str) -> int:
    """A number of the assembly syntax: decimal or ``0x`` hex, optionally negative (refused later by the range
    check); AsmError naming ``what`` otherwise."""
    if not _NUMBER.match(text):
        raise AsmError(f"{what}: malformed number {_show(text)} (write decimal or 0x hex)")
    neg = text.startswith("-")
    body = text[1:] if neg else text
    val = int(body[2:], 16) if body[:2] in ("0x", "0X") else int(body, 10)
    return -val if neg else val


def parse_value(desc: Instruction, f: Field, text: str) -> int:
    """The value of operand ``f`` of ``desc`` written as ``text``: a number, or an enum name where the spec gives
    the field an enum; range-checked against the field's width."""
    spec = load()
    what = f"{desc.mnemonic}: field {f.name!r}"
    if not text:
        raise AsmError(f"{what}: no value after '='")
    if f.enum is not None and _NAME.match(text):
        names = spec.enums[f.enum]
        if text not in names:
            raise AsmError(f"{what}: unknown {f.enum} name {_show(text)} (known: {', '.join(names)}, or a number)")
        val = names[text]
    else:
        val = parse_number(text, what)
    if not 0 <= val <= f.mask:
        raise AsmError(f"{what}: value {text} out of range 0..{f.mask} ({f.width}-bit field)")
    return val


def parse_statement(text: str) -> int:
    """One statement without comment: ``mnemonic name=value ...`` (operands separated by white space and/or one
    comma, no space around ``=``, any order, each field once; a field with a spec default may be left out) or
    ``.word VALUE``. Returns the instruction word; AsmError naming the field otherwise."""
    spec = load()
    parts = text.split(None, 1)
    if not parts:
        raise AsmError("empty statement")
    head = parts[0]
    rest = parts[1].strip() if len(parts) > 1 else ""
    if head == WORD_DIRECTIVE:
        if not rest or len(rest.split()) != 1:
            raise AsmError(f"{WORD_DIRECTIVE} takes exactly one value (the instruction word), got {_show(rest)}")
        val = parse_number(rest, WORD_DIRECTIVE)
        if not 0 <= val < 1 << spec.insn_bits:
            raise AsmError(f"{WORD_DIRECTIVE}: value {rest} out of range 0..{(1 << spec.insn_bits) - 1:#x} "
                           f"({spec.insn_bits}-bit word)")
        return val
    try:
        desc = spec.by_mnemonic(head)
    except KeyError:
        known = ", ".join(i.mnemonic for i in spec.instructions)
        raise AsmError(f"unknown mnemonic {_show(head)} (known: {known}, {WORD_DIRECTIVE})") from None
    given: dict[str, str] = {}
    for tok in _SEPARATOR.split(rest) if rest else []:
        name, eq, value = tok.partition("=")
        if not tok:
            raise AsmError(f"{desc.mnemonic}: empty operand (a stray comma)")
        if not eq or not name:
            raise AsmError(f"{desc.mnemonic}: expected field=value (no space around '='), got {_show(tok)}")
        try:
            desc.field(name)
        except KeyError:
            fields = ", ".join(f.name for f in desc.fields) or "none"
            raise AsmError(f"{desc.mnemonic}: unknown field {_show(name)} (fields of {desc.mnemonic}: {fields})"
                           ) from None
        if name in given:
            raise AsmError(f"{desc.mnemonic}: field {name!r} given twice")
        given[name] = value
    ops: dict[str, int | str] = {}
    for f in desc.fields:
        if f.name in given:
            ops[f.name] = parse_value(desc, f, given[f.name])
        elif f.default is None:
            raise AsmError(f"{desc.mnemonic}: missing field {f.name!r}")
    return encode(desc.mnemonic, **ops)


def assemble_line(line: str) -> int | None:
    """One line of assembly (``#`` or ``//`` starts a comment); returns None for a line without a statement."""
    text = strip_comment(line)
    return parse_statement(text) if text else None


def assemble(text: str) -> list[int]:
    """Statements, one a line (no listing columns: see :func:`pqcompile.asm.assemble_source` for those);
    AsmError naming the line."""
    words = []
    for lineno, line in enumerate(text.split("\n"), 1):
        try:
            w = assemble_line(line)
        except AsmError as exc:
            raise AsmError(f"line {lineno}: {exc}") from None
        if w is not None:
            words.append(w)
    return words


def statement(word: int) -> str:
    """The text that assembles to ``word``: its disassembly, or for an illegal word ``.word 0x...`` followed by a
    comment giving the reason."""
    try:
        return disassemble(word)
    except IllegalInstruction as exc:
        return f"{WORD_DIRECTIVE} {word:#0{load().insn_bits // 4 + 2}x}  # illegal: {exc}"


def listing_line(addr: int, word: int) -> str:
    """One line of a listing (``program.asm``, ``pqasm disassemble``): ``ADDRESS  WORD  TEXT``."""
    return f"{addr:#010x}  {word:0{load().insn_bits // 4}x}  {statement(word)}"


def listing(base: int, words: list[int]) -> str:
    """The listing of ``words`` placed from byte address ``base`` on, one line per instruction."""
    step = insn_bytes()
    return "".join(listing_line(base + step * i, w) + "\n" for i, w in enumerate(words))
