"""ISA module: every opcode round-trips; illegal words are rejected; the spec loader is strict."""

from __future__ import annotations

import random

import pytest
import yaml

from pqcompile import isa
from pqcompile.spec import (
    CONFIG_KEYS,
    SPEC_PATH,
    Bound,
    HwConfig,
    SpecError,
    camel,
    check_config,
    elem_bytes,
    load,
    parse,
    row_stride,
)

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
        "shape", {"metric": 1, "conv": 0, "bank": 0, "pack": 0, "k": 200, "v": 4, "c": 5, "d": 17, "m": 9})
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
    ("run x=1", "run: unknown field 'x' (fields of run: src, dst, acc, n, ostride, ooff)"),
    ("pool n=1", "pool: unknown field 'n' (fields of pool: src, dst)"),
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
    ("load buf=8 nbytes=1 addr=0", "load: field 'buf': value 8 out of range 0..7 (3-bit field)"),
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
        "0x00000040  0000000000000305  run src=0 dst=out acc=0 n=3 ostride=0 ooff=0\n"
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


# ---------------------------------------------------------------------------------------------------------
# Configuration rules and buffers (spec `config_rules`, `buffers`)
# ---------------------------------------------------------------------------------------------------------

def _raw() -> dict:
    return yaml.safe_load(SPEC_PATH.read_text())


@pytest.mark.parametrize(("param", "value", "rule"), [
    ("ActW", 7, "must equal 8"),                                   # eq, a number
    ("AxiDataWidth", 32, "at least isa.insn_bits = 64"),           # min, a spec value
    ("AxiDataWidth", 2048, "at most 1024"),                        # max, a number
    ("AxiDataWidth", 96, "a power of two"),                        # pow2
    ("AxiAddrWidth", 11, "at least 12"),                           # min, a number
    ("AxiAddrWidth", 33, "at most load.addr.width = 32"),          # max, a field's width
    ("LutW", 17, "at most 16"),                                    # max, a number
    ("AccW", 7, "at least LutW = 8"),                              # min, another parameter
    ("KMax", 256, "at most shape.k.max = 255"),                    # max, a field's largest value
    ("LutW", 1, "at least 2"),                                     # min, a number
    ("LutBytes", 3 << 10, "a power of two"),                       # pow2
    ("ProtoBytes", 4, "at least 8"),                               # min of a pow2 parameter
])
def test_a_configuration_breaking_a_rule_is_refused(param: str, value: int, rule: str) -> None:
    """Every configuration goes through one check (spec.check_config) over the spec's rules; the message
    names the configuration, the parameter, its value, the rule and its reason."""
    raw = _raw()
    raw["configs"]["small"][param] = value
    doc = raw["config_rules"][param]["doc"]
    with pytest.raises(SpecError) as exc:
        parse(raw)
    assert str(exc.value) == f"configs.small: {param} = {value} breaks config_rules.{param}: {rule} ({doc})"


def test_a_buffer_smaller_than_a_bus_word_is_refused() -> None:
    """pqa_top's buffers are whole bus words: a 1024-bit bus needs at least 128 bytes in each."""
    params = dict(SPEC.config("small").params, AxiDataWidth=1024, ActBytes=64)
    with pytest.raises(SpecError, match=r"^here: ActBytes = 64 is less than a bus word \(AxiDataWidth = 1024 bits\)"):
        check_config("here", params, SPEC.config_rules)
    check_config("here", dict(params, ActBytes=128), SPEC.config_rules)


def test_every_broken_rule_is_named() -> None:
    params = dict(SPEC.config("small").params, LutW=1, OutBytes=100)
    with pytest.raises(SpecError, match=r"^here: LutW = 1 breaks config_rules\.LutW: at least 2 \(.*\); "
                                        r"OutBytes = 100 breaks config_rules\.OutBytes: a power of two \(.*\)$"):
        check_config("here", params, SPEC.config_rules)
    for cfg in SPEC.configs.values():
        check_config(cfg.name, cfg.params, SPEC.config_rules)  # the named ones keep them


def test_config_rules_cover_every_parameter_and_only_known_bounds() -> None:
    assert list(SPEC.config_rules) == list(CONFIG_KEYS)
    raw = _raw()
    del raw["config_rules"]["LutW"]
    with pytest.raises(SpecError, match=r"config_rules: missing keys \['LutW'\]"):
        parse(raw)
    for rule, msg in [
        ({"max": "shape.q.max", "doc": "x"}, r"config_rules.KMax.max: 'shape.q.max' is neither an integer"),
        ({"max": "KMax", "doc": "x"}, r"config_rules.KMax.max: a parameter cannot bound itself"),
        ({"eq": 8, "min": 1, "doc": "x"}, r"config_rules.KMax: eq excludes min and max"),
        ({"doc": "x"}, r"config_rules.KMax: no rule"),
        ({"pow2": "yes", "doc": "x"}, r"config_rules.KMax.pow2: true or false"),
        ({"min": 1, "mx": 3, "doc": "x"}, r"config_rules.KMax: unknown keys \['mx'\]"),
    ]:
        raw = _raw()
        raw["config_rules"]["KMax"] = rule
        with pytest.raises(SpecError, match=msg):
            parse(raw)
    rules = SPEC.config_rules
    assert rules["AccW"].min == Bound("LutW", param="LutW")
    assert rules["AxiAddrWidth"].max == Bound("load.addr.width", value=SPEC.by_mnemonic("load").field("addr").width)
    assert rules["CMax"].describe() == "1 .. shape.c.max (255)"


def test_cycle_counter_is_one_instruction_word() -> None:
    raw = _raw()
    raw["isa"]["insn_bits"] = 128
    with pytest.raises(SpecError, match=r"isa.cycles_bits: 64 must equal isa.insn_bits \(128\)"):
        parse(raw)


def test_a_configuration_may_not_be_named_rule() -> None:
    raw = _raw()
    raw["configs"]["rule"] = raw["configs"]["small"]
    with pytest.raises(SpecError, match="configs.rule: the name is taken"):
        parse(raw)


def test_buffers_follow_the_buffer_enum() -> None:
    """One buffer per value of enum `buffer`, in its order, each with its layout, element width and size."""
    assert [(b.name, b.value) for b in SPEC.buffers.values()] == sorted(SPEC.enums["buffer"].items(),
                                                                        key=lambda kv: kv[1])
    for change, msg in [
        (lambda r: r["buffers"].pop("bias"), r"buffers: missing keys \['bias'\]"),
        (lambda r: r["buffers"].update(scratch=r["buffers"]["act"]), r"buffers: unknown keys \['scratch'\]"),
        (lambda r: r["buffers"]["bias"].update(bytes="OutBytes"), "buffers.bias: give exactly one of bytes and"),
        (lambda r: r["buffers"]["lut"].update(elem_bits="LutBits"), "buffers.lut.elem_bits: 'LutBits' is neither"),
        (lambda r: r["buffers"]["lut"].update(elem_bits=0), "buffers.lut.elem_bits: 0 is neither"),
        (lambda r: r["buffers"]["act"].update(bytes="ActSize"), "buffers.act: 'ActSize' is not a configuration"),
        (lambda r: r["buffers"]["act"].pop("layout"), r"buffers.act: missing keys \['layout'\]"),
    ]:
        raw = _raw()
        change(raw)
        with pytest.raises(SpecError, match=msg):
            parse(raw)


def test_buffer_sizes_come_from_the_spec() -> None:
    """HwConfig.buffer_bytes / elem_bytes are the one definition of the buffer geometry: an element of W bits
    takes ceil(W / 8) bytes; a buffer is a parameter's bytes or a parameter's count of elements."""
    for cfg in SPEC.configs.values():
        assert cfg.buffer_bytes("out") == cfg.OutBytes
        # the prototype buffer holds whole rows: pqa's 2304-byte rows, 7 of them in 16 KiB
        stride = cfg.proto_row_stride
        assert cfg.buffer_bytes("proto") == cfg.proto_cap == cfg.ProtoBytes // stride * stride
        assert cfg.elem_bytes("lut") == cfg.lut_bytes == -(-cfg.LutW // 8)
        assert cfg.bias_bytes == cfg.buffer_bytes("bias") == 4 * cfg.MMax  # int32 biases
        assert cfg.elem_bytes("act") == cfg.elem_bytes("proto") == 1
    assert [elem_bytes(b) for b in (1, 8, 9, 16, 17, 32)] == [1, 1, 2, 2, 3, 4]
    raw = _raw()
    raw["buffers"]["bias"]["elem_bits"] = 16  # a change of the spec reaches every user
    small = parse(raw).config("small")
    assert small.bias_bytes == 2 * small.MMax and small.elem_bytes("bias") == 2
    by_hand = HwConfig("t", "made by hand", {"LutW": 12, "MMax": 10})  # the spec file's buffers
    assert by_hand.lut_bytes == 2 and by_hand.bias_bytes == 40
    with pytest.raises(KeyError, match="unknown buffer 'scratch'"):
        by_hand.buffer_bytes("scratch")


# ---------------------------------------------------------------------------------------------------------
# Lane parameters (NS, NP, PL, NOUT) and the performance counters of a stamp record
# ---------------------------------------------------------------------------------------------------------

LANES = ("NS", "NP", "PL", "NOUT")


def test_lane_parameters_are_in_every_configuration() -> None:
    """NS, NP, PL and NOUT are keys of every named configuration (HwConfig exposes them): the narrow default
    (1, 1, 1, 1), the odd small (2, 3, 2, 3) and pqa (16, 16, 9, 32); NS, NP, PL and NOUT are bounded by
    CMax, KMax, VMax and MMax; pqa_pkg carries the bounds and every value."""
    assert set(LANES) <= set(CONFIG_KEYS)
    lanes = {n: (c.NS, c.NP, c.PL, c.NOUT) for n, c in SPEC.configs.items()}
    assert lanes == {"default": (1, 1, 1, 1), "small": (2, 3, 2, 3), "wide": (2, 3, 2, 3), "pqa": (16, 16, 9, 32)}
    pkg = (SPEC_PATH.parents[3] / "rtl" / "pqa_pkg.sv").read_text()
    assert [SPEC.config_rules[p].describe() for p in LANES] == ["1 .. CMax", "1 .. KMax", "1 .. VMax", "1 .. MMax"]
    for p in LANES:
        assert f"localparam int CfgRule{p}Min = 1;" in pkg
        for cfg in SPEC.configs.values():
            assert f"localparam int Cfg{camel(cfg.name)}{p} = {cfg.params[p]};" in pkg
    assert "CfgRuleNOUTMax" not in pkg  # a bound by another parameter: pqa_top checks NOUT <= MMax itself
    raw = _raw()
    del raw["configs"]["small"]["NOUT"]
    with pytest.raises(SpecError, match=r"configs.small: missing keys \['NOUT'\]"):
        parse(raw)


@pytest.mark.parametrize(("param", "value", "rule"), [
    ("NS", 65, "at most CMax = 64"), ("NP", 0, "at least 1"), ("PL", 17, "at most VMax = 16"),
    ("NOUT", 257, "at most MMax = 256")])
def test_lanes_beyond_their_bounds_are_refused(param: str, value: int, rule: str) -> None:
    raw = _raw()
    raw["configs"]["default"][param] = value
    with pytest.raises(SpecError, match=rf"^configs.default: {param} = {value} breaks config_rules.{param}: {rule} "):
        parse(raw)


def test_proto_row_geometry() -> None:
    """The prototype row stride: the row bytes rounded up to a power of two below a bus word, else to whole
    bus words; the buffer holds whole rows; a run reads ceil(c/NS) ceil(k/NP) ceil(v/PL) rows."""
    assert [row_stride(r, 8) for r in (1, 2, 3, 5, 8, 9, 12, 24, 2304)] == [1, 2, 4, 8, 8, 16, 16, 24, 2304]
    small, pqa = SPEC.config("small"), SPEC.config("pqa")
    assert (small.proto_row_bytes, small.proto_row_stride, small.proto_cap) == (12, 16, 8192)
    assert (pqa.proto_row_bytes, pqa.proto_row_stride, pqa.proto_cap) == (2304, 2304, 14 * 2304)
    assert small.proto_rows(5, 7, 3) == 3 * 3 * 2 and pqa.proto_rows(64, 16, 9) == 4


def test_perf_counters_come_from_the_spec() -> None:
    """A stamp record is the spec's counters in order, one cycles_bits word each: cycles, compute_cycles,
    rd_bytes, wr_bytes and the units' busy and stall cycles; pqa_pkg carries PerfWords and each counter's
    word; the loader refuses a malformed list."""
    assert [(c.name, c.index, c.exact) for c in SPEC.perf_counters] == [
        ("cycles", 0, False), ("compute_cycles", 1, True), ("rd_bytes", 2, True), ("wr_bytes", 3, True),
        ("load_cycles", 4, False), ("store_cycles", 5, False), ("dep_cycles", 6, False), ("fetch_cycles", 7, False)]
    assert SPEC.perf_bytes == 8 * SPEC.cycles_bits // 8 and SPEC.perf_counter("rd_bytes").index == 2
    pkg = (SPEC_PATH.parents[3] / "rtl" / "pqa_pkg.sv").read_text()
    assert "localparam int PerfWords = 8;" in pkg and "localparam int PerfComputeCycles = 1;" in pkg
    with pytest.raises(KeyError, match="unknown performance counter 'stalls'"):
        SPEC.perf_counter("stalls")
    for change, msg in [
        (lambda p: p.clear(), r"isa.perf_counters: expected a non-empty list"),
        (lambda p: p.pop(0), r"isa.perf_counters: no counter 'cycles'"),
        (lambda p: p.append(dict(p[1])), r"isa.perf_counters\[8\]: name 'compute_cycles' repeated"),
        (lambda p: p[2].update(name="Rd-Bytes"), r"isa.perf_counters\[2\]: name 'Rd-Bytes' repeated or not"),
        (lambda p: p[2].update(exact="yes"), r"isa.perf_counters\[2\].exact: true or false"),
        (lambda p: p[3].pop("doc"), r"isa.perf_counters\[3\]: missing keys \['doc'\]"),
    ]:
        raw = _raw()
        change(raw["isa"]["perf_counters"])
        with pytest.raises(SpecError, match=msg):
            parse(raw)


def test_gather_geometry() -> None:
    """The column feed (docs/theory.md, "Column feed"): with NS > 1, 3 act read ports of (3-1)*min(4*NS, CMax)
    + NS bytes
    (3*NS bytes, one port, on the narrow datapath; at least VMax); a lanes-mode read covers the most window
    positions p <= 3 (and <= kw) with (p-1)*ch + NS <= those bytes, on up to 3 window rows; a column costs
    ceil(c/NS)*ceil(kh/R)*ceil(kw/p) cycles in lanes mode, ceil(c/NS) contiguous when a group's NS*v bytes fit
    a read (else c), c*v element by element. pqa_top and the encoder bench use the same numbers."""
    pqa, small, default = (SPEC.config(n) for n in ("pqa", "small", "default"))
    assert (pqa.gather_bytes, small.gather_bytes, default.gather_bytes) == (2 * 64 + 16, 2 * 8 + 2, 16)
    assert [small.gather_positions(ch, 3) for ch in (1, 8, 9, 16, 17, 32)] == [3, 3, 2, 2, 1, 1]
    assert (pqa.gather_rows, small.gather_rows, default.gather_rows) == (3, 3, 1)
    assert [pqa.gather_positions(ch, 3) for ch in (1, 16, 17, 32, 33, 64, 65)] == [3, 3, 3, 3, 3, 3, 2]
    assert [default.gather_positions(ch, 3) for ch in (1, 2, 7, 8, 16)] == [3, 3, 3, 2, 1]
    assert pqa.gather_positions(4, 2) == 2 and pqa.gather_positions(4, 1) == 1
    assert [pqa.gather_mode(True, 9, 3, 3), pqa.gather_mode(True, 4, 1, 1), pqa.gather_mode(False, 4, 1, 1),
            pqa.gather_mode(True, 4, 3, 3), pqa.gather_mode(True, 1, 1, 1)] == \
        ["lanes", "contiguous", "contiguous", "element", "lanes"]
    # ResNet-20's 3x3 layers at pqa: 16, 32 and 64 channels, one read a group; its 1x1 shortcuts (v = 4)
    assert [pqa.gather_cycles(c, 9, True, 3, 3, c) for c in (16, 32, 64)] == [1, 2, 4]
    assert [pqa.gather_cycles(c, 4, True, 1, 1, 4 * c) for c in (4, 8)] == [1, 1]
    assert pqa.gather_cycles(40, 10, False, 1, 1, 0) == 40  # 16*10 bytes do not fit 144: a subspace a cycle
    assert pqa.gather_cycles(10, 4, True, 3, 3, 4) == 40 and default.gather_cycles(16, 9, True, 3, 3, 16) == 16 * 9
    assert small.gather_cycles(3, 25, True, 5, 5, 3) == 2 * 2 * 2  # 5x5: rows 0-2, 3-4; positions 0-2, 3-4
    assert pqa.vec_lanes == 128 and small.vec_lanes == 8 and default.vec_lanes == 8  # pqa: a 128-byte bus word
    root = SPEC_PATH.parents[3]
    for f in ("rtl/pqa_top.sv", "tb/encoder/tb_encoder.sv"):
        text = (root / f).read_text()
        assert f"localparam int GatherPos{' ' * (5 if 'top' in f else 3)}= {pqa.GATHER_POSITIONS};" in text, f
        assert f"localparam int GatherRowsMax = {pqa.GATHER_ROWS};" in text, f
        assert f"localparam int GatherChGroups = {pqa.GATHER_CH_GROUPS};" in text, f
