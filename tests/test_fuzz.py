"""Property-based tests (hypothesis) of the software side: the hex reader, the ISA decoder / assembler,
the back end, the quantizer and the atomic build writer. Every malformed input must end in the
documented error class (HexFormatError, IllegalInstruction, AsmError, CompileError, all ValueError
subclasses) and never in a crash or a half-written output directory; every well-formed one must round
trip or execute exactly as the golden model's own functions compose."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from cases import LayerShape, random_mlp
from graphgen import RandomGraph
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pqcompile import backend, graph, hexfmt, ir, quantize, sim
from pqcompile import build as pqbuild
from pqcompile.isa import AsmError, IllegalInstruction, assemble, clamp_range, decode, disassemble, encode, field_limit
from pqcompile.spec import load

SHIFT_MAX = field_limit("quant", "shift")
FAST = settings(max_examples=60, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                       HealthCheck.too_slow])
CFG = load().config("small")

# ------------------------------------------------------------------------------------------------
# hex memory images
# ------------------------------------------------------------------------------------------------
hex_line = st.one_of(
    st.text(alphabet="0123456789abcdefABCDEF", min_size=0, max_size=20),
    st.builds(lambda a: f"@{a}", st.text(alphabet="0123456789abcdefxyz@ -", max_size=10)),
    st.text(max_size=30),
    st.just("// comment"),
    st.just(""),
)


@FAST
@given(st.lists(hex_line, max_size=12), st.sampled_from([4, 8]))
def test_hex_parse_malformed_text_is_a_clear_error(lines: list[str], word_bytes: int) -> None:
    text = "\n".join(lines)
    try:
        words = hexfmt.parse_image(text, "fuzz.hex", word_bytes)
    except hexfmt.HexFormatError as exc:
        assert str(exc).startswith("fuzz.hex:")
        return
    for a, w in words.items():
        assert a >= 0 and 0 <= w < 1 << (8 * word_bytes)


@FAST
@given(st.binary(max_size=200))
def test_hex_read_binary_is_a_clear_error(tmp_path: Path, data: bytes) -> None:
    p = tmp_path / "bin.hex"
    p.write_bytes(data)
    try:
        hexfmt.read_image(p)
    except hexfmt.HexFormatError as exc:
        assert str(p) in str(exc)


segments = st.lists(
    st.tuples(st.integers(0, 64), st.binary(min_size=1, max_size=40)), min_size=1, max_size=5,
).map(lambda segs: _disjoint(segs))


def _disjoint(segs: list[tuple[int, bytes]]) -> list[tuple[int, bytes, str]]:
    out, end = [], 0
    for gap, data in segs:
        addr = end + 8 * gap
        out.append((addr, data, f"seg at {addr}"))
        end = addr + -(-len(data) // 8) * 8
    return out


@FAST
@given(segments)
def test_hex_round_trip(segs: list[tuple[int, bytes, str]]) -> None:
    text = hexfmt.format_image(segs)
    size = max(a + -(-len(d) // 8) * 8 for a, d, _ in segs)
    mem = hexfmt.to_bytes(hexfmt.parse_image(text), size)
    for a, d, _ in segs:
        assert mem[a : a + len(d)].tobytes() == d
    with pytest.raises(hexfmt.HexFormatError):
        hexfmt.to_bytes(hexfmt.parse_image(text), size - 8)  # the last word lies beyond memory


# ------------------------------------------------------------------------------------------------
# ISA
# ------------------------------------------------------------------------------------------------
@FAST
@given(st.integers(0, (1 << 64) - 1))
def test_decode_any_word(word: int) -> None:
    try:
        insn = decode(word)
    except IllegalInstruction:
        return
    assert encode(insn.mnemonic, **insn.ops) == word  # a legal word re-encodes to itself
    assert disassemble(word).split()[0] == insn.mnemonic


@FAST
@given(st.text(max_size=80))
def test_assemble_garbage_is_a_clear_error(text: str) -> None:
    try:
        words = assemble(text)
    except AsmError as exc:
        assert "line" in str(exc)
        return
    for w in words:
        decode(w)


# ------------------------------------------------------------------------------------------------
# back end: random integer layers, legal or not
# ------------------------------------------------------------------------------------------------
@st.composite
def chains(draw: st.DrawFn, legal: bool = True) -> RandomGraph:
    """1..2 chained linear PQ ops (tb/graphgen.py) with drawn shapes, widths, mult and shift: inside the
    limits of config "small", or (``legal=False``) with K, v, shift and output width drawn beyond them."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    bits = draw(st.integers(2, CFG.ActW))
    d = draw(st.integers(1, 40))
    rg = RandomGraph(CFG, rng, (1, 1, d), draw(st.integers(1, 20)), bits, draw(st.integers(2, CFG.LutW)))
    for _ in range(draw(st.integers(1, 2))):
        v = draw(st.integers(-(-d // CFG.CMax), CFG.VMax if legal else CFG.VMax + 2))
        m = draw(st.integers(1, 20))
        rg.pq(rg.last, m, draw(st.integers(1, CFG.KMax if legal else CFG.KMax + 2)), v,
              draw(st.sampled_from(["l1", "l2"])), draw(st.booleans()), bits, wide_bias=0.0,
              mult=int(rng.integers(0, 1 << 16)), shift=draw(st.integers(0, SHIFT_MAX if legal else 60)))
        d = m
    if not legal:
        op = rg.ops[-1]
        op.post = ir.Post(op.post.mult, op.post.shift, op.post.relu, draw(st.integers(0, 15)))
    return rg


@FAST
@given(chains(legal=True))
def test_emitted_program_computes_the_golden_functions(rg: RandomGraph) -> None:
    """The instruction stream the back end emits, run on the simulator, equals the composition of the
    golden functions sim.encode / lookup / requantize, layer after layer (and the torch integer reference)."""
    prog = rg.emit()
    res = sim.run(CFG, prog.mem, prog.insn_base, strict=True)
    n = rg.x.shape[0]
    y = rg.x.reshape(n, -1)
    for op in rg.ops:
        assert isinstance(op, ir.PQOp)
        xp = np.zeros((n, op.c * op.v), np.int64)
        xp[:, : y.shape[1]] = y
        acc = sim.lookup(sim.encode(xp.reshape(-1, op.c, op.v), op.protos, load().enums["metric"][op.metric]), op.lut,
                         op.bias, CFG.AccW)
        y = sim.requantize(acc, op.post.mult, op.post.shift, op.post.relu, op.post.bits)
    out = backend.read_output(prog.manifest, res.mem).astype(np.int64)
    assert np.array_equal(out, y) and np.array_equal(out, rg.output().reshape(n, -1))


@FAST
@given(chains(legal=False))
def test_emit_beyond_limits_is_a_compile_error(rg: RandomGraph) -> None:
    try:
        prog = rg.emit()
    except backend.CompileError as exc:
        assert "layer" in str(exc) or "inputs" in str(exc)
        return
    sim.run(CFG, prog.mem, prog.insn_base, strict=True)  # what it accepted runs without an error


@FAST
@given(chains(legal=True), st.sampled_from(["hex", "manifest", "simulate"]))
def test_write_build_is_atomic(tmp_path_factory: pytest.TempPathFactory, rg: RandomGraph, where: str) -> None:
    """A failure at any step of write_build leaves the previous build intact and nothing else behind."""
    root = tmp_path_factory.mktemp("atomic")
    prog = rg.emit()
    out = root / "build"
    backend.write_build(out, CFG, prog)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    broken = backend.Program(prog.mem, prog.insn_base, list(prog.words), dict(prog.manifest), list(prog.segments))
    if where == "hex":
        broken.segments.append((3, np.zeros(4, np.uint8), "misaligned segment"))  # format_image refuses it
        err: type[Exception] = ValueError
    elif where == "manifest":
        broken.manifest["bad"] = object()  # not JSON-serializable
        err = TypeError
    else:
        broken.words.append(0)
        broken.mem = np.zeros(8, np.uint8)  # instruction 0 is illegal: the strict simulation refuses
        err = sim.SimError
    with pytest.raises(err):
        backend.write_build(out, CFG, broken)
    assert sorted(p.name for p in root.iterdir()) == ["build"], "temporary directory left behind"
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    man, mem = pqbuild.load(out)
    assert man["n_insns"] == len(prog.words) and np.array_equal(mem[: prog.mem.size], prog.mem)


@st.composite
def conv_graphs(draw: st.DrawFn) -> tuple[ir.Graph, np.ndarray]:
    """One random conv op (any kernel, stride, padding, odd channels, v not dividing the patch), sometimes
    larger than the act/output buffers of "small" (banded), on 1..3 images."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    side = st.one_of(st.integers(1, 12), st.integers(16, 28))  # large fmaps exceed the act buffer: bands
    h, w, ch = draw(side), draw(side), draw(st.one_of(st.integers(1, 5), st.integers(8, 12)))
    kh, kw = draw(st.integers(1, min(h + 2, 5))), draw(st.integers(1, min(w + 2, 5)))
    stride, pad = draw(st.integers(1, 3)), draw(st.integers(0, 2))
    oh, ow = (h + 2 * pad - kh) // stride + 1, (w + 2 * pad - kw) // stride + 1
    d = ch * kh * kw
    v = draw(st.integers(min(CFG.VMax, max(1, -(-d // CFG.CMax))), CFG.VMax))
    c, k, m = -(-d // v), draw(st.integers(1, CFG.KMax)), draw(st.integers(1, 16))
    if oh < 1 or ow < 1 or c > CFG.CMax or c * k * v > CFG.ProtoBytes or c * k * m > CFG.LutBytes:
        oh = ow = 0  # not a legal layer: the back end must refuse it cleanly
    protos = rng.integers(-128, 128, (c, k, v))
    post = ir.Post(int(rng.integers(1, 1 << 16)), draw(st.integers(0, 20)), draw(st.booleans()), 8)
    op = ir.PQOp("conv", "x", "y", protos, rng.integers(-128, 128, (c, k, m)), rng.integers(-5000, 5000, m),
                 draw(st.sampled_from(["l1", "l2"])), post, kh, kw, stride, pad)
    g = ir.Graph("fuzz", {"x": ir.TensorInfo("x", (h, w, ch), 1.0, 8),
                          "y": ir.TensorInfo("y", (max(oh, 1), max(ow, 1), m), 1.0, 8)}, [op], "x", "y")
    return g, rng.integers(-128, 128, (draw(st.integers(1, 3)), h, w, ch))


@FAST
@given(conv_graphs())
def test_conv_graph_computes_the_golden_functions(case: tuple[ir.Graph, np.ndarray]) -> None:
    """A conv op emitted by the back end (tiled into bands where it does not fit), run on the simulator,
    equals conv_gather over the whole fmap + encode + lookup + requantize; what it refuses is a CompileError."""
    g, x = case
    (op,) = g.ops
    try:
        prog = backend.emit_graph(CFG, g, x)
    except backend.CompileError as exc:
        assert "layer 0 (conv" in str(exc)
        return
    res = sim.run(CFG, prog.mem, prog.insn_base, strict=True)
    n, h, w, ch = x.shape
    oh, ow, m = g.tensors["y"].shape
    geom = sim.ConvGeom(h, w, ch, op.stride, op.kh, op.kw, op.pad, op.pad, ow)
    d = ch * op.kh * op.kw
    y = backend.read_output(prog.manifest, res.mem).reshape(n, oh * ow, m).astype(np.int64)
    for im in range(n):
        cols = np.zeros((oh * ow, op.c * op.v), np.int64)
        cols[:, :d] = sim.conv_gather(x[im].reshape(-1).astype(np.int64), geom, d, oh * ow)
        idx = sim.encode(cols.reshape(-1, op.c, op.v), op.protos, load().enums["metric"][op.metric])
        acc = sim.lookup(idx, op.lut, op.bias, CFG.AccW)
        assert np.array_equal(y[im], sim.requantize(acc, op.post.mult, op.post.shift, op.post.relu, 8))


@pytest.mark.parametrize("text", [
    "{", "", "[]", "null", '"pqa-build"', '{"format": "pqa-build", "version": 2}', '{"format": "x"}',
])
def test_load_build_rejects_bad_manifests(tmp_path: Path, text: str) -> None:
    (tmp_path / "manifest.json").write_text(text)
    with pytest.raises(ValueError):
        pqbuild.load(tmp_path)


# ------------------------------------------------------------------------------------------------
# quantizer
# ------------------------------------------------------------------------------------------------
@FAST
@given(st.floats(allow_nan=True, allow_infinity=True))
def test_mult_shift_any_ratio(ratio: float) -> None:
    try:
        mult, shift = quantize.mult_shift(ratio)
    except backend.CompileError:
        assert not (ratio > 0 and math.isfinite(ratio)) or ratio >= (1 << 16) - 0.5
        return
    assert 1 <= mult < 1 << 16 and 0 <= shift <= SHIFT_MAX
    if 2.0**-32 < ratio < 1e4:
        assert abs(mult / (1 << shift) - ratio) <= ratio * 2.0**-14 + 2.0**-48


@FAST
@given(st.integers(0, 2**32 - 1), st.integers(0, 10), st.integers(0, 18), st.booleans())
def test_quantize_widths(seed: int, act_bits: int, lut_bits: int, relu: bool) -> None:
    """Any requested width: a random PQ layer through the front end gives integer ops inside the widths (and
    inside the limits of config "small"), or a CompileError naming them."""
    rng = np.random.default_rng(seed)
    d, m, k, v = int(rng.integers(1, 20)), int(rng.integers(1, 12)), int(rng.integers(1, 6)), int(rng.integers(1, 5))
    arch, state = random_mlp(rng, [LayerShape(d, m, k, v, "l2", relu)])
    try:
        g = graph.build_graph(arch, state, rng.normal(0, 1, (32, d)), CFG, act_bits=act_bits or None,
                              lut_bits=lut_bits or None).graph
    except backend.CompileError as exc:
        assert "act_bits" in str(exc)
        assert not (2 <= (act_bits or CFG.ActW) <= CFG.ActW and 2 <= (lut_bits or CFG.LutW) <= CFG.LutW)
        return
    ab, lb = act_bits or CFG.ActW, lut_bits or CFG.LutW
    (op,) = g.ops
    assert g.tensors[g.input].scale > 0 and g.tensors[g.input].bits == ab
    lo, hi = clamp_range(False, ab, g.tensors[g.input].unsigned)
    assert lo <= op.protos.min(initial=0) and op.protos.max(initial=0) <= hi
    assert -(1 << (lb - 1)) <= op.lut.min() and op.lut.max() < 1 << (lb - 1)
    backend.check_graph(CFG, g)
