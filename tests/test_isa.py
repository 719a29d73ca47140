"""ISA module: every opcode round-trips; illegal words are rejected; the spec loader is strict."""

from __future__ import annotations

import random

import pytest
import yaml

from pqcompile import isa
from pqcompile.spec import SPEC_PATH, SpecError, load, parse

SPEC = load()


@pytest.mark.parametrize("insn", SPEC.instructions, ids=lambda i: i.mnemonic)
def test_round_trip_every_opcode(insn) -> None:  # noqa: ANN001
    rng = random.Random(insn.opcode)
    for _ in range(50):
        ops = {f.name: rng.randrange(1 << f.width) for f in insn.fields}
        word = isa.encode(insn.mnemonic, **ops)
        assert word >> SPEC.opcode_field.lsb & SPEC.opcode_field.mask == insn.opcode
        assert isa.decode(word) == isa.Insn(insn.mnemonic, ops)
        text = isa.disassemble(word)
        assert isa.assemble(text) == [word]


def test_field_positions_from_spec() -> None:
    # shape's m sits in bits 63:48, and nothing else is set by it
    assert isa.encode("shape", metric=0, k=0, v=0, c=0, d=0, m=0xABCD) == 0xABCD << 48 | 0x3
    assert isa.encode("load", buf="lut", nbytes=16, addr=0x100) == 0x100 << 32 | 16 << 8 | 1 << 4 | 0x1


def test_flag_with_default_may_be_omitted() -> None:
    assert isa.encode("shape", metric=0, k=1, v=1, c=1, d=1, m=1) == \
        isa.encode("shape", metric=0, conv=0, k=1, v=1, c=1, d=1, m=1)
    assert isa.decode(isa.encode("quant", relu=0, unsigned=1, shift=3, mult=5, bits=4)).ops["unsigned"] == 1
    with pytest.raises(isa.AsmError, match="missing operand 'k'"):
        isa.encode("shape", metric=0, v=1, c=1, d=1, m=1)


def test_with_field_replaces_one_operand() -> None:
    word = isa.encode("shape", metric="l1", k=3, v=4, c=5, d=17, m=9)
    assert isa.decode(isa.with_field(word, "k", 200)) == isa.Insn(
        "shape", {"metric": 1, "conv": 0, "k": 200, "v": 4, "c": 5, "d": 17, "m": 9})
    with pytest.raises(KeyError, match="no field"):
        isa.with_field(word, "addr", 8)


def test_unknown_opcode_is_illegal() -> None:
    used = {i.opcode for i in SPEC.instructions}
    for op in range(1 << SPEC.opcode_field.width):
        if op not in used:
            with pytest.raises(isa.IllegalInstruction, match="unknown opcode"):
                isa.decode(op)


def test_reserved_bits_are_illegal() -> None:
    for insn in SPEC.instructions:
        mask = isa.reserved_mask(insn)
        base = isa.encode(insn.mnemonic, **{f.name: 0 for f in insn.fields})
        for bit in (b for b in range(64) if mask >> b & 1):
            with pytest.raises(isa.IllegalInstruction, match="reserved"):
                isa.decode(base | 1 << bit)


def test_assembler_errors_name_the_line() -> None:
    with pytest.raises(isa.AsmError, match=r"^line 2: run: field 'n': value 99999999999 out of range 0\.\.16777215 "
                                           r"\(24-bit field\)$"):
        isa.assemble("end\nrun n=99999999999\n")
    with pytest.raises(isa.AsmError, match=r"^line 1: unknown mnemonic 'jump' \(known: load, store, shape, "):
        isa.assemble("jump addr=4")
    with pytest.raises(isa.AsmError, match=r"^line 1: run: missing field 'n'$"):
        isa.assemble("run")
    with pytest.raises(isa.AsmError, match="bad value"):
        isa.encode("shape", metric="cosine", k=1, v=1, c=1, d=1, m=1)


@pytest.mark.parametrize(("text", "word"), [
    ("run n=5", 5 << 8 | 0x5),
    ("run n=0x10", 16 << 8 | 0x5),
    ("run n=007", 7 << 8 | 0x5),
    ("load addr=0x100, buf=lut, nbytes=16", 0x100 << 32 | 16 << 8 | 1 << 4 | 0x1),  # any order, commas
    ("load buf=1 nbytes=16 addr=256  # same, enum as a number", 0x100 << 32 | 16 << 8 | 1 << 4 | 0x1),
    ("\tload buf=lut ,nbytes=16 ,addr=256 // comment", 0x100 << 32 | 16 << 8 | 1 << 4 | 0x1),
    (".word 0xffffffffffffffff", (1 << 64) - 1),
    (".word 0", 0),
    ("end", 0xF),
])
def test_statement_syntax(text: str, word: int) -> None:
    assert isa.assemble(text) == [word]


@pytest.mark.parametrize(("text", "msg"), [
    ("run n=5 n=6", "run: field 'n' given twice"),
    ("run x=1", "run: unknown field 'x' (fields of run: n)"),
    ("pool n=1", "pool: unknown field 'n' (fields of pool: none)"),
    ("run n=0x", "run: field 'n': malformed number '0x' (write decimal or 0x hex)"),
    ("run n=1e3", "run: field 'n': malformed number '1e3' (write decimal or 0x hex)"),
    ("run n=", "run: field 'n': no value after '='"),
    ("run n = 5", "run: expected field=value (no space around '='), got 'n'"),
    ("run n=5,", "run: empty operand (a stray comma)"),
    ("run n=-1", "run: field 'n': value -1 out of range 0..16777215 (24-bit field)"),
    ("conv stride=16 kh=1 kw=1 pad_t=0 pad_l=0 out_w=1", "conv: field 'stride': value 16 out of range 0..15 "
                                                         "(4-bit field)"),
    ("load buf=lutt nbytes=1 addr=0", "load: field 'buf': unknown buffer name 'lutt' (known: proto, lut, bias, act, "
                                      "out, or a number)"),
    ("load buf=16 nbytes=1 addr=0", "load: field 'buf': value 16 out of range 0..15 (4-bit field)"),
    ("shape metric=cos k=1 v=1 c=1 d=1 m=1", "shape: field 'metric': unknown metric name 'cos' (known: l2, l1, or a "
                                             "number)"),
    (".word", ".word takes exactly one value (the instruction word), got ''"),
    (".word 1 2", ".word takes exactly one value (the instruction word), got '1 2'"),
    (".word 0x10000000000000000", ".word: value 0x10000000000000000 out of range 0..0xffffffffffffffff (64-bit word)"),
    ("r\u00e9n n=1", "unknown mnemonic 'r\\xe9n'"),
])
def test_statement_errors_name_the_field(text: str, msg: str) -> None:
    with pytest.raises(isa.AsmError) as exc:
        isa.assemble("end\n" + text)
    assert str(exc.value).startswith("line 2: " + msg)


def test_listing_of_legal_and_illegal_words() -> None:
    words = [isa.encode("run", n=3), 0xFF, isa.encode("end")]
    assert isa.listing(0x40, words) == (
        "0x00000040  0000000000000305  run n=3\n"
        "0x00000048  00000000000000ff  .word 0x00000000000000ff  # illegal: end: reserved bits set in instruction "
        "word 0x00000000000000ff\n"
        "0x00000050  000000000000000f  end\n")
    assert isa.assemble("\n".join(isa.statement(w) for w in words)) == words


def test_spec_loader_rejects_unknown_and_missing_keys() -> None:
    raw = yaml.safe_load(SPEC_PATH.read_text())
    raw["configs"]["small"]["Bogus"] = 1
    with pytest.raises(SpecError, match="unknown keys.*Bogus"):
        parse(raw)
    raw = yaml.safe_load(SPEC_PATH.read_text())
    del raw["configs"]["small"]["KMax"]
    with pytest.raises(SpecError, match="missing keys.*KMax"):
        parse(raw)
    raw = yaml.safe_load(SPEC_PATH.read_text())
    raw["isa"]["instructions"][0]["fields"][0]["lsb"] = 0
    with pytest.raises(SpecError, match="overlaps"):
        parse(raw)


def test_field_max_is_the_spec_width() -> None:
    spec = load()
    for insn in spec.instructions:
        for f in insn.fields:
            assert isa.field_max(insn.mnemonic, f.name) == (1 << f.width) - 1
    assert isa.field_max("conv", "stride") == 15 and isa.field_max("fmap", "h") == 0xFFFF


def test_field_limit_comes_from_the_spec() -> None:
    """A field's ``limit`` (quant.shift) bounds what the hardware accepts; it must lie below the field's
    largest value, and fields without one are limited by their width."""
    raw = yaml.safe_load(SPEC_PATH.read_text())
    quant = next(i for i in raw["isa"]["instructions"] if i["mnemonic"] == "quant")
    shift = next(f for f in quant["fields"] if f["name"] == "shift")
    assert isa.field_limit("quant", "shift") == shift["limit"] < (1 << shift["width"]) - 1
    assert isa.field_limit("quant", "mult") == isa.field_max("quant", "mult")
    shift["limit"] = (1 << shift["width"]) - 1
    with pytest.raises(SpecError, match="limit .* must be below"):
        parse(raw)
    pkg = (SPEC_PATH.parents[3] / "rtl" / "pqa_pkg.sv").read_text()
    assert f"localparam int QuantShiftLimit = {isa.field_limit('quant', 'shift')};" in pkg
