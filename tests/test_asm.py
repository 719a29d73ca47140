"""pqasm (pqcompile.asm): assembly source and listings -> memory images -> listings, the round trip on a compiled
program and on random words, every refused input (exit 2, one line naming FILE:LINE), safe outputs."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pytest
from cases import LayerShape, random_mlp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pqcompile import asm, backend, graph, hexfmt, isa
from pqcompile.spec import HwConfig, load

ROOT = Path(__file__).resolve().parents[1]

SPEC = load()
SMALL = SPEC.config("small")
FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

PROG = """\
# a hand-written program
load buf=act nbytes=64 addr=0x100   // the input
shape metric=l1, k=4, v=4, c=4, d=16, m=8
quant relu=1 shift=3 mult=5 bits=8
run n=1
store nbytes=8 addr=0x200
end
"""
PROG_WORDS = [0x0000010000004031, 0x0008001004040413, 0x0000000800050314, 0x0000000000000105,
              0x0000020000000802, 0x000000000000000F]
PROG_LISTING = """\
0x00000000  0000010000004031  load buf=act bank=0 nbytes=64 addr=0x100
0x00000008  0008001004040413  shape metric=l1 conv=0 bank=0 pack=0 k=4 v=4 c=4 d=16 m=8
0x00000010  0000000800050314  quant relu=1 unsigned=0 shift=3 mult=5 bits=8
0x00000018  0000000000000105  run src=0 dst=out acc=0 n=1 ostride=0 ooff=0
0x00000020  0000020000000802  store half=0 nbytes=8 addr=0x200
0x00000028  000000000000000f  end
"""


def run(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    rc = asm.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def words_at(image: dict[int, int], base: int, n: int, bus: int = 8) -> list[int]:
    """n instruction words from byte address base of an image of bus-word words."""
    raw = b"".join(image.get(a, 0).to_bytes(bus, "little") for a in range(base // bus, (base + 8 * n) // bus + 1))
    off = base % bus
    return [int.from_bytes(raw[off + 8 * i : off + 8 * i + 8], "little") for i in range(n)]


# ------------------------------------------------------------------------------------------------------------
# syntax, listing columns, the image written
# ------------------------------------------------------------------------------------------------------------
def test_hand_written_program(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "p.asm").write_text(PROG)
    assert run(capsys, "assemble", tmp_path / "p.asm", "-o", tmp_path / "p.hex") == (0, "", "")
    text = (tmp_path / "p.hex").read_text()
    assert text.splitlines()[0] == (f"// pqasm image from {tmp_path}/p.asm (pqasm overwrites a file only when its "
                                    "first line starts '// pqasm image')")
    assert text.splitlines()[3:] == ["@00000000"] + [f"{w:016x}" for w in PROG_WORDS]
    assert hexfmt.read_image(tmp_path / "p.hex") == dict(enumerate(PROG_WORDS))
    assert run(capsys, "disassemble", tmp_path / "p.hex") == (0, PROG_LISTING, "")


@pytest.mark.parametrize("form", ["text", "listing", "address_only", "word_only"])
def test_listing_columns_are_optional(tmp_path: Path, capsys: pytest.CaptureFixture[str], form: str) -> None:
    lines = PROG_LISTING.splitlines()
    if form == "text":
        lines = [line.split(None, 2)[2] for line in lines]
    elif form == "address_only":
        lines = [" ".join(line.split()[:1] + line.split()[2:]) for line in lines]
    elif form == "word_only":
        lines = [line.split(None, 1)[1] for line in lines]
    src = "\n".join(["// header comment", "", *lines[:3], "   # indented comment", *lines[3:]]) + "\n"
    assert asm.assemble_source(src).words == PROG_WORDS
    (tmp_path / "l.asm").write_text(src)
    assert run(capsys, "assemble", tmp_path / "l.asm", "-o", tmp_path / "l.hex") == (0, "", "")
    assert hexfmt.read_image(tmp_path / "l.hex") == dict(enumerate(PROG_WORDS))


def test_base_address(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    listing = "".join(isa.listing_line(0x100 + 8 * i, w) + "\n" for i, w in enumerate(PROG_WORDS))
    (tmp_path / "l.asm").write_text(listing)
    assert run(capsys, "assemble", tmp_path / "l.asm", "--base", "0x100", "-o", tmp_path / "l.hex") == (0, "", "")
    assert hexfmt.read_image(tmp_path / "l.hex") == {0x20 + i: w for i, w in enumerate(PROG_WORDS)}
    assert run(capsys, "disassemble", tmp_path / "l.hex", "--base", "256") == (0, listing, "")
    rc, out, err = run(capsys, "assemble", tmp_path / "l.asm", "-o", tmp_path / "m.hex")  # base 0: addresses differ
    assert (rc, out) == (2, "")
    assert err == (f"pqasm: error: {tmp_path}/l.asm:1: address column 0x100 is not this instruction's address 0x0 "
                   "(instruction 0 of a stream at base 0x0; see --base)\n")
    assert not (tmp_path / "m.hex").exists()


def test_word_directive_places_illegal_words(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reserved = isa.encode("pool") | 1 << 8  # run has no reserved bit left (bit 7 is acc)
    (tmp_path / "w.asm").write_text(f"run n=1\n.word 0x0\n.word {reserved:#x}\n.word 18446744073709551615\nend\n")
    assert run(capsys, "assemble", tmp_path / "w.asm", "-o", tmp_path / "w.hex") == (0, "", "")
    words = [isa.encode("run", n=1), 0, reserved, (1 << 64) - 1, 0xF]
    assert hexfmt.read_image(tmp_path / "w.hex") == dict(enumerate(words))
    rc, out, err = run(capsys, "disassemble", tmp_path / "w.hex")
    assert (rc, err) == (0, "")
    assert out.splitlines() == [
        "0x00000000  0000000000000105  run src=0 dst=out acc=0 n=1 ostride=0 ooff=0",
        "0x00000008  0000000000000000  .word 0x0000000000000000  # illegal: unknown opcode 0x0 in instruction word "
        "0x0000000000000000",
        "0x00000010  0000000000000109  .word 0x0000000000000109  # illegal: pool: reserved bits set in instruction "
        "word 0x0000000000000109",
        "0x00000018  ffffffffffffffff  .word 0xffffffffffffffff  # illegal: end: reserved bits set in instruction "
        "word 0xffffffffffffffff",  # an end opcode with reserved bits does not stop the listing
        "0x00000020  000000000000000f  end",
    ]
    assert asm.assemble_source(out).words == words


def test_disassemble_count_and_stream_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hexfmt.write_image(tmp_path / "i.hex", [(0, b"".join(w.to_bytes(8, "little") for w in PROG_WORDS[:4]), "x")])
    rc, out, err = run(capsys, "disassemble", tmp_path / "i.hex", "--count", "2")
    assert (rc, out, err) == (0, "".join(PROG_LISTING.splitlines(keepends=True)[:2]), "")
    assert run(capsys, "disassemble", tmp_path / "i.hex", "--count", "0") == (0, "", "")
    rc, out, err = run(capsys, "disassemble", tmp_path / "i.hex")
    assert (rc, out) == (2, "")
    assert err == (f"pqasm: error: {tmp_path}/i.hex: no 'end' instruction from base 0x0 to the end of the image "
                   "(byte address 0x20); give --count\n")
    rc, out, err = run(capsys, "disassemble", tmp_path / "i.hex", "--count", "5")
    assert err == (f"pqasm: error: {tmp_path}/i.hex: --count 5 from base 0x0 reads beyond the image's last word "
                   "(byte address 0x20)\n") and (rc, out) == (2, "")


def test_disassemble_to_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "p.asm").write_text(PROG)
    assert run(capsys, "assemble", tmp_path / "p.asm", "-o", tmp_path / "p.hex")[0] == 0
    for _ in range(2):  # the second time it replaces its own file
        assert run(capsys, "disassemble", tmp_path / "p.hex", "-o", tmp_path / "l.asm") == (0, "", "")
    text = (tmp_path / "l.asm").read_text()
    assert text == (f"# pqasm listing of {tmp_path}/p.hex, base 0x0 (pqasm overwrites a file only when its first "
                    "line starts '# pqasm listing')\n" + PROG_LISTING)
    assert asm.assemble_source(text).words == PROG_WORDS


def test_wider_bus_places_the_stream_inside_bus_words() -> None:
    """Instruction words are 64-bit; a 128-bit bus word holds two, and a base inside a bus word is kept."""
    wide = HwConfig("wide", "test only", {**SMALL.params, "AxiDataWidth": 128})
    src = asm.assemble_source(PROG, "p.asm", base=0x18)
    text = asm.image_text(src, wide)
    img = hexfmt.parse_image(text, "wide.hex", 16)
    assert img == {1: PROG_WORDS[0] << 64, 2: PROG_WORDS[2] << 64 | PROG_WORDS[1],
                   3: PROG_WORDS[4] << 64 | PROG_WORDS[3], 4: PROG_WORDS[5]}
    assert asm.read_stream(img, 16, 0x18, None, "wide.hex") == PROG_WORDS
    assert words_at(img, 0x18, 6, 16) == PROG_WORDS


# ------------------------------------------------------------------------------------------------------------
# round trip: a compiled program, random legal instructions, random words
# ------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, backend.Program]:
    rng = np.random.default_rng(5)
    arch, state = random_mlp(rng, [LayerShape(40, 24, 8, 4, "l2", True), LayerShape(24, 10, 4, 3, "l1", False)])
    fe = graph.build_graph(arch, state, rng.normal(0, 1, (64, 40)), SMALL)
    prog = backend.emit_graph(SMALL, fe.graph, fe.quantize_input(rng.normal(0, 1, (150, 40))))  # tiled: 2 tiles
    out = tmp_path_factory.mktemp("compiled") / "build"
    backend.write_build(out, SMALL, prog)
    return out, prog


def test_compiled_program_round_trip(compiled: tuple[Path, backend.Program], tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    build, prog = compiled
    listing = (build / "program.asm").read_text()
    assert {line.split()[2] for line in listing.splitlines()} == {"stamp", "load", "shape", "quant", "run", "store",
                                                                  "end"}
    # the compiler's listing assembles, unchanged, to the compiler's words
    assert asm.assemble_source(listing, "program.asm").words == prog.words
    # with the data segments of the build as --data, the image is the compiler's image word for word
    hexfmt.write_image(tmp_path / "data.hex", prog.segments[1:], SMALL.bus_bytes)
    rc = asm.main(["assemble", str(build / "program.asm"), "--data", str(tmp_path / "data.hex"), "--config", "small",
                   "-o", str(tmp_path / "full.hex")])
    assert rc == 0
    assert hexfmt.read_image(tmp_path / "full.hex") == hexfmt.read_image(build / "mem.hex")
    # disassembling the compiler's image prints the compiler's listing exactly
    assert run(capsys, "disassemble", build / "mem.hex", "--config", "small") == (0, listing, "")
    # and the text column alone is enough
    text_only = "".join(line.split(None, 2)[2] + "\n" for line in listing.splitlines())
    (tmp_path / "t.asm").write_text(text_only)
    assert run(capsys, "assemble", tmp_path / "t.asm", "-o", tmp_path / "t.hex") == (0, "", "")
    img = hexfmt.read_image(tmp_path / "t.hex")
    assert words_at(img, 0, len(prog.words)) == prog.words and len(img) == len(prog.words)


@st.composite
def legal_words(draw: st.DrawFn) -> int:
    desc = draw(st.sampled_from(SPEC.instructions))
    return isa.encode(desc.mnemonic, **{f.name: draw(st.integers(0, f.mask)) for f in desc.fields})


@FAST
@given(st.lists(legal_words(), min_size=1, max_size=12), st.integers(0, 1 << 20).map(lambda a: 8 * a))
def test_random_legal_instructions_round_trip(words: list[int], base: int) -> None:
    assert isa.assemble("\n".join(isa.disassemble(w) for w in words)) == words
    src = asm.assemble_source(isa.listing(base, words), "r.asm", base)
    assert src.words == words and src.lines == list(range(1, len(words) + 1))


@FAST
@given(st.lists(st.one_of(legal_words(), st.integers(0, (1 << 64) - 1)), min_size=1, max_size=12))
def test_any_words_round_trip_through_image_and_listing(words: list[int]) -> None:
    src = asm.assemble_source("".join(isa.statement(w) + "\n" for w in words))
    img = hexfmt.parse_image(asm.image_text(src, SMALL), "r.hex")
    assert img == dict(enumerate(words))
    again = asm.read_stream(img, 8, 0, len(words), "r.hex")
    assert asm.assemble_source(isa.listing(0, again)).words == words


# ------------------------------------------------------------------------------------------------------------
# refused input: exit 2, one line "pqasm: error: FILE:LINE: ..."
# ------------------------------------------------------------------------------------------------------------
ERRORS = {
    "unknown_mnemonic": ("jump addr=4", "unknown mnemonic 'jump' (known: load, store, shape, quant, run, stamp, fmap, "
                                        "conv, pool, add, end, .word)"),
    "unknown_field": ("run n=1 k=2", "run: unknown field 'k' (fields of run: src, dst, acc, n, ostride, ooff)"),
    "missing_field": ("load buf=act addr=0x100", "load: missing field 'nbytes'"),
    "duplicate_field": ("stamp addr=8 addr=16", "stamp: field 'addr' given twice"),
    "out_of_range": ("fmap h=1 w=65536 ch=1", "fmap: field 'w': value 65536 out of range 0..65535 (16-bit field)"),
    "malformed_number": ("run n=12a", "run: field 'n': malformed number '12a' (write decimal or 0x hex)"),
    "unknown_enum": ("load buf=table nbytes=8 addr=0", "load: field 'buf': unknown buffer name 'table' (known: "
                                                       "proto, lut, bias, act, out, or a number)"),
    "not_name_value": ("run 5", "run: expected field=value (no space around '='), got '5'"),
    "bad_address_column": ("0x12g4  0000000000000105  run n=1", "bad address column '0x12g4' (write 0x and hex "
                                                                "digits)"),
    "wrong_address": ("0x00000010  0000000000000105  run n=1", "address column 0x10 is not this instruction's address "
                                                               "0x8 (instruction 1 of a stream at base 0x0; see "
                                                               "--base)"),
    "short_word_column": ("0x00000008  105  run n=1", "bad word column '105' (expected 16 hex digits)"),
    "decimal_address": ("8  run n=1", "'8' is neither an address column (0x...) nor a word column (16 hex "
                                      "digits)"),
    "word_mismatch": ("0x00000008  0000000000000205  run n=1", "word column 0000000000000205 differs from "
                                                               "0000000000000105, the word the text assembles to"),
    "illegal_marker": ("0x00000008  00000000000000ff  <illegal: end: reserved bits set in instruction word "
                       "0x00000000000000ff>",
                       "the listing marks an illegal instruction word here (<illegal: end: reserved bits set in "
                       "instruction word 0x00000000000000ff>); write it as .word 0x00000000000000ff to place the raw "
                       "word"),
    "column_only": ("0x00000008  0000000000000105  # run n=1", "a listing column without an instruction"),
    "word_directive_range": (".word 0x1ffffffffffffffff", ".word: value 0x1ffffffffffffffff out of range "
                                                          "0..0xffffffffffffffff (64-bit word)"),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_errors_exit_2_naming_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    line, msg = ERRORS[case]
    src = tmp_path / "bad.asm"
    src.write_text(f"0x00000000  000000000000000f  end\n\n{line}\n")  # the bad line is line 3, instruction 1
    rc, out, err = run(capsys, "assemble", src, "-o", tmp_path / "bad.hex")
    assert (rc, out, err) == (2, "", f"pqasm: error: {src}:3: {msg}\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.asm"]  # nothing written, no temporary file


def test_console_script_one_line_no_traceback(tmp_path: Path) -> None:
    (ep,) = [e for e in entry_points(group="console_scripts") if e.name == "pqasm"]
    assert ep.value == "pqcompile.asm:main"
    src = tmp_path / "bad.asm"
    src.write_text("end\nrun n=99999999\n")
    res = subprocess.run([sys.executable, "-m", "pqcompile.asm", "assemble", str(src), "-o", str(tmp_path / "o.hex")],
                         capture_output=True, text=True, check=False)
    assert (res.returncode, res.stdout) == (2, "")
    assert res.stderr == (f"pqasm: error: {src}:2: run: field 'n': value 99999999 out of range 0..16777215 (24-bit "
                          "field)\n")


def test_file_names_and_text_are_escaped_to_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "r\u00e9seau\nx.asm"
    src.write_text("end\nr\u00e9n n=1\n", encoding="utf-8")
    rc, out, err = run(capsys, "assemble", src, "-o", tmp_path / "o.hex")
    assert (rc, out) == (2, "")
    assert err == (f"pqasm: error: {tmp_path}/r\\xe9seau\\nx.asm:2: unknown mnemonic 'r\\xe9n' (known: load, "
                   "store, shape, quant, run, stamp, fmap, conv, pool, add, end, .word)\n")
    src.write_text("end\n")
    assert run(capsys, "assemble", src, "-o", tmp_path / "o\u2713.hex") == (0, "", "")
    head = (tmp_path / "o\u2713.hex").read_bytes().splitlines()[0]
    assert head == (f"// pqasm image from {tmp_path}/r\\xe9seau\\nx.asm (pqasm overwrites a file only when its "
                    "first line starts '// pqasm image')").encode()


@pytest.mark.parametrize(("args", "msg"), [
    (["--base", "4"], "--base 0x4 is not 8-byte aligned (the instruction fetch needs it)"),
    (["--base", "0x1g"], "--base: malformed number '0x1g' (write decimal or 0x hex)"),
    (["--base", "-8"], "--base: -8 is negative"),
    (["--base", "0x100000000"], "--base 0x100000000 lies beyond the 32-bit address space"),
    (["--config", "huge"], "--config: unknown hardware configuration 'huge'; known: small, wide, default, pqa"),
])
def test_bad_options_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], msg: str) -> None:
    (tmp_path / "p.asm").write_text(PROG)
    assert run(capsys, "assemble", tmp_path / "p.asm", "-o", tmp_path / "p.hex", *args) == (2, "",
                                                                                          f"pqasm: error: {msg}\n")


@pytest.mark.parametrize(("args", "msg"), [
    ([], "pqasm: error: the following arguments are required: command (see --help)"),
    (["assemble", "p.asm"], "pqasm assemble: error: the following arguments are required: -o/--output (see --help)"),
    (["disassemble", "i.hex", "--cont", "3"], "pqasm: error: unrecognized arguments: --cont 3 (see --help)"),
])
def test_bad_command_line_is_one_line(capsys: pytest.CaptureFixture[str], args: list[str], msg: str) -> None:
    with pytest.raises(SystemExit) as exc:
        asm.main(args)
    assert exc.value.code == 2 and capsys.readouterr() == ("", msg + "\n")


def test_unreadable_inputs_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "assemble", tmp_path / "none.asm", "-o", tmp_path / "o.hex") == (
        2, "", f"pqasm: error: {tmp_path}/none.asm: cannot read (No such file or directory)\n")
    (tmp_path / "bin.asm").write_bytes(b"end\nrun n=1 # caf\xe9\n")
    assert run(capsys, "assemble", tmp_path / "bin.asm", "-o", tmp_path / "o.hex") == (
        2, "", f"pqasm: error: {tmp_path}/bin.asm:2: not UTF-8 text (invalid continuation byte at byte 17)\n")
    (tmp_path / "bad.hex").write_text("@0\n0000000000000001\n0001\n")
    assert run(capsys, "disassemble", tmp_path / "bad.hex") == (
        2, "", f"pqasm: error: {tmp_path}/bad.hex:3: word '0001' has 4 digits, expected 16\n")
    (tmp_path / "p.asm").write_text(PROG)
    assert run(capsys, "assemble", tmp_path / "p.asm", "--data", tmp_path / "bad.hex", "-o", tmp_path / "o.hex") == (
        2, "", f"pqasm: error: {tmp_path}/bad.hex:3: word '0001' has 4 digits, expected 16\n")
    assert not (tmp_path / "o.hex").exists()


def test_data_overlaps_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "p.asm").write_text(PROG)  # 6 instructions: bytes 0x0..0x2f
    (tmp_path / "d1.hex").write_text("// data\n@8\n0000000000000001\n0000000000000002\n")
    (tmp_path / "d2.hex").write_text("@9\n0000000000000003\n")
    (tmp_path / "d3.hex").write_text("@4\n0000000000000001\n0000000000000002\n")
    base = ["assemble", tmp_path / "p.asm", "-o", tmp_path / "o.hex", "--data", tmp_path / "d1.hex"]
    assert run(capsys, *base, "--data", tmp_path / "d2.hex") == (
        2, "", f"pqasm: error: {tmp_path}/d2.hex:2: word address 0x9 is also written by {tmp_path}/d1.hex:4\n")
    assert run(capsys, *base, "--data", tmp_path / "d3.hex") == (
        2, "", f"pqasm: error: {tmp_path}/d3.hex:2: word address 0x4 (byte address 0x20) overlaps the instruction "
               "stream (byte addresses 0x0..0x2f)\n")
    assert run(capsys, *base) == (0, "", "")
    assert hexfmt.read_image(tmp_path / "o.hex") == {**dict(enumerate(PROG_WORDS)), 8: 1, 9: 2}
    (tmp_path / "far.hex").write_text("@20000000\n0000000000000001\n")
    assert run(capsys, *base[:4], "--data", tmp_path / "far.hex") == (
        2, "", f"pqasm: error: {tmp_path}/far.hex:2: word address 0x20000000 lies beyond the 32-bit address space\n")


def test_stream_beyond_the_address_space(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "p.asm").write_text(PROG)
    assert run(capsys, "assemble", tmp_path / "p.asm", "-o", tmp_path / "o.hex", "--base", "0xffffffe8") == (
        2, "", f"pqasm: error: {tmp_path}/p.asm:5: the instruction stream leaves the 32-bit address space (base "
               "0xffffffe8, 6 instructions)\n")


# ------------------------------------------------------------------------------------------------------------
# outputs: atomic, and never replacing a file pqasm did not write
# ------------------------------------------------------------------------------------------------------------
def test_foreign_outputs_are_never_replaced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "p.asm").write_text(PROG)
    foreign = tmp_path / "mem.hex"
    foreign.write_text("// PQA memory image: written by someone else\n@0\n0000000000000001\n")
    assert run(capsys, "assemble", tmp_path / "p.asm", "-o", foreign) == (
        2, "", f"pqasm: error: {foreign}: exists and was not written by pqasm (its first line is not '// pqasm "
               "image ...'); pqasm does not replace it: remove it or choose another name\n")
    assert foreign.read_text() == "// PQA memory image: written by someone else\n@0\n0000000000000001\n"
    lookalike = tmp_path / "x.hex"
    lookalike.write_text("// pqasm imagery\n")
    assert run(capsys, "assemble", tmp_path / "p.asm", "-o", lookalike)[0] == 2
    assert run(capsys, "disassemble", foreign, "--count", "1", "-o", tmp_path / "p.asm")[0] == 2  # source kept
    assert (tmp_path / "p.asm").read_text() == PROG
    (tmp_path / "dir").mkdir()
    assert run(capsys, "assemble", tmp_path / "p.asm", "-o", tmp_path / "dir") == (
        2, "", f"pqasm: error: {tmp_path}/dir: exists and is not a regular file; pqasm does not replace it\n")
    (tmp_path / "link.hex").symlink_to(foreign)
    assert run(capsys, "assemble", tmp_path / "p.asm", "-o", tmp_path / "link.hex")[0] == 2
    assert run(capsys, "assemble", tmp_path / "p.asm", "-o", tmp_path / "nodir" / "o.hex") == (
        2, "", f"pqasm: error: {tmp_path}/nodir/o.hex: cannot write (No such file or directory)\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "link.hex", "mem.hex", "p.asm", "x.hex"]


def test_own_output_is_replaced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "p.asm").write_text(PROG)
    (tmp_path / "q.asm").write_text("end\n")
    out = tmp_path / "o.hex"
    assert run(capsys, "assemble", tmp_path / "p.asm", "-o", out) == (0, "", "")
    assert run(capsys, "assemble", tmp_path / "q.asm", "-o", out) == (0, "", "")
    assert hexfmt.read_image(out) == {0: 0xF}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.hex", "p.asm", "q.asm"]


def test_internal_error_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_args: object) -> str:
        raise RuntimeError("a bug")

    monkeypatch.setattr(asm, "image_text", boom)
    monkeypatch.delenv("PQA_TRACEBACK", raising=False)
    (tmp_path / "p.asm").write_text(PROG)
    assert run(capsys, "assemble", tmp_path / "p.asm", "-o", tmp_path / "o.hex") == (
        1, "", "pqasm: internal error: a bug (please report it; PQA_TRACEBACK=1 prints the traceback)\n")
    monkeypatch.setenv("PQA_TRACEBACK", "1")
    rc, out, err = run(capsys, "assemble", tmp_path / "p.asm", "-o", tmp_path / "o.hex")
    assert (rc, out) == (1, "") and err.startswith("pqasm: internal error: a bug") and "Traceback" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.asm"]
