"""Generated files (rtl/pqa_pkg.sv, docs/isa.md, the generated block of lint/verilator_waiver.vlt) must equal
what the spec generates now, and every generated file is one that the stale check compares."""

from __future__ import annotations

import re
import subprocess

from pqcompile import gen
from pqcompile.spec import load


def test_generated_files_are_up_to_date() -> None:
    assert gen.stale() == [], "run `make gen` and commit the result"


def test_stale_check_covers_every_generated_file() -> None:
    """A file that says it is generated (the banner, or the waiver block's marker) is one of gen.targets(),
    and `make help` names every target under `make gen`."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=gen.ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    marked = set()
    for name in files:
        path = gen.ROOT / name
        if path.suffix in (".sv", ".md", ".vlt", ".py", ".txt", ".yml") and path.is_file():
            text = path.read_text(encoding="utf-8", errors="replace")
            if (gen.BANNER in text or gen.WAIVER_BEGIN in text) and path.name != "gen.py":
                marked.add(path)
    assert marked == set(gen.targets(load())), "a generated file that `python -m pqcompile.gen --check` skips"
    help_line = next(line for line in (gen.ROOT / "Makefile").read_text().splitlines() if '"make gen ' in line)
    for path in gen.targets(load()):
        assert str(path.relative_to(gen.ROOT)) in help_line, help_line


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


def test_package_and_doc_carry_the_rules_and_buffers() -> None:
    """Every rule bound that is a number or a spec value is a pqa_pkg constant CfgRule<Param><Kind> (a spec
    value by its package name), each pow2 rule CfgRule<Param>Pow2; a bound naming another parameter is
    pqa_top's own check. docs/isa.md lists every rule and every buffer with its size per configuration."""
    spec = load()
    pkg, doc = gen.sv_package(spec), gen.isa_doc(spec)
    consts = set(re.findall(r"localparam (?:int|bit) (CfgRule\w+) =", pkg))
    want = {f"CfgRule{r.param}{k.capitalize()}" for r in spec.config_rules.values() for k in ("min", "max", "eq")
            if getattr(r, k) is not None and getattr(r, k).param is None}
    want |= {f"CfgRule{r.param}Pow2" for r in spec.config_rules.values() if r.pow2}
    assert consts == want
    assert "localparam int CfgRuleAxiDataWidthMin = InsnW;" in pkg
    assert "localparam int CfgRuleAxiAddrWidthMax = LoadAddrW;" in pkg
    assert "localparam int CfgRuleKMaxMax = (1 << ShapeKW) - 1;" in pkg
    assert "localparam int BufBiasElemW = 32;" in pkg and "function automatic int elem_bytes" in pkg
    for r in spec.config_rules.values():
        assert f"| {r.describe()} | {r.doc} |" in doc
    for b in spec.buffers.values():
        sizes = " | ".join(str(c.buffer_bytes(b.name)) for c in spec.configs.values())
        assert re.search(rf"^\| {b.value} \| `{b.name}` \| {re.escape(b.layout)} \|.*\| {sizes} \|$", doc, re.M), b
