"""Generated files (rtl/pqa_pkg.sv, docs/isa.md) must equal what the spec generates now."""

from __future__ import annotations

from pqcompile import gen
from pqcompile.spec import load


def test_generated_files_are_up_to_date() -> None:
    assert gen.stale() == [], "run `make gen` and commit the result"


def test_package_carries_every_opcode_and_error() -> None:
    spec = load()
    pkg = gen.sv_package(spec)
    for insn in spec.instructions:
        assert f"Opc{gen._camel(insn.mnemonic)} = 4'h{insn.opcode:x};" in pkg
    for name, code in spec.errors.items():
        assert f"Err{gen._camel(name)} = 8'd{code};" in pkg
    doc = gen.isa_doc(spec)
    for r in spec.registers:
        assert f"`{r['name'].upper()}`" in doc
