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
    with pytest.raises(isa.AsmError, match="line 2"):
        isa.assemble("end\nrun n=99999999999\n")
    with pytest.raises(isa.AsmError, match="unknown mnemonic"):
        isa.assemble("jump addr=4")
    with pytest.raises(isa.AsmError, match="missing operand"):
        isa.assemble("run")
    with pytest.raises(isa.AsmError, match="bad value"):
        isa.encode("shape", metric="cosine", k=1, v=1, c=1, d=1, m=1)


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
