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
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pqcompile import backend, hexfmt, ir, quantize, sim
from pqcompile import build as pqbuild
from pqcompile.isa import AsmError, IllegalInstruction, assemble, decode, disassemble, encode, field_limit
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
def qlayers(draw: st.DrawFn, legal: bool = True) -> tuple[list[backend.QLayer], np.ndarray]:
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    nl = draw(st.integers(1, 2))
    bits = draw(st.integers(2, CFG.ActW))
    lut_bits = draw(st.integers(2, CFG.LutW))
    d = draw(st.integers(1, 40))
    layers = []
    for _ in range(nl):
        v = draw(st.integers(-(-d // CFG.CMax), CFG.VMax if legal else CFG.VMax + 2))
        c = -(-d // v)
        k = draw(st.integers(1, CFG.KMax if legal else CFG.KMax + 2))
        m = draw(st.integers(1, 20))
        protos = rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), (c, k, v))
        protos[-1, :, d - (c - 1) * v :] = 0
        lut = rng.integers(-(1 << (lut_bits - 1)), 1 << (lut_bits - 1), (c, k, m))
        layers.append(backend.QLayer(protos, lut, rng.integers(-(1 << 20), 1 << 20, m), d,
                                     draw(st.sampled_from(["l1", "l2"])), int(rng.integers(0, 1 << 16)),
                                     draw(st.integers(0, SHIFT_MAX if legal else 60)), draw(st.booleans()),
                                     draw(st.integers(2, CFG.ActW) if legal else st.integers(0, 15))))
        d = m
    n = draw(st.integers(1, 20))
    x = rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), (n, layers[0].d))
    return layers, x


@FAST
@given(qlayers(legal=True))
def test_emitted_program_computes_the_golden_functions(case: tuple[list[backend.QLayer], np.ndarray]) -> None:
    """The instruction stream the back end emits, run on the simulator, equals the composition of the
    golden functions sim.encode / lookup / requantize, layer after layer."""
    layers, x = case
    prog = backend.emit(CFG, layers, x)
    res = sim.run(CFG, prog.mem, prog.insn_base, strict=True)
    y = x.astype(np.int64)
    for q in layers:
        xp = quantize.pad_columns(y, q.c, q.v).reshape(-1, q.c, q.v)
        acc = sim.lookup(sim.encode(xp, q.protos, load().enums["metric"][q.metric]), q.lut, q.bias, CFG.AccW)
        y = sim.requantize(acc, q.mult, q.shift, q.relu, q.bits)
    assert np.array_equal(backend.read_output(prog.manifest, res.mem).astype(np.int64), y)


@FAST
@given(qlayers(legal=False))
def test_emit_beyond_limits_is_a_compile_error(case: tuple[list[backend.QLayer], np.ndarray]) -> None:
    layers, x = case
    try:
        prog = backend.emit(CFG, layers, x)
    except backend.CompileError as exc:
        assert "layer" in str(exc) or "inputs" in str(exc)
        return
    sim.run(CFG, prog.mem, prog.insn_base, strict=True)  # what it accepted runs without an error


@FAST
@given(qlayers(legal=True), st.sampled_from(["hex", "manifest", "simulate"]))
def test_write_build_is_atomic(tmp_path_factory: pytest.TempPathFactory, case: tuple[list[backend.QLayer], np.ndarray],
                               where: str) -> None:
    """A failure at any step of write_build leaves the previous build intact and nothing else behind."""
    layers, x = case
    root = tmp_path_factory.mktemp("atomic")
    prog = backend.emit(CFG, layers, x)
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
def test_quantize_layers_widths(seed: int, act_bits: int, lut_bits: int, relu: bool) -> None:
    """Any requested width: integer layers inside the widths, or a CompileError naming them."""
    rng = np.random.default_rng(seed)
    d, m, k, v = int(rng.integers(1, 20)), int(rng.integers(1, 12)), int(rng.integers(1, 6)), int(rng.integers(1, 5))
    c = -(-d // v)
    fl = quantize.FloatPQLayer(0, rng.normal(0, 1, (c, k, v)), rng.normal(0, 1, (m, d)), rng.normal(0, 0.1, m),
                               "l2", relu)
    try:
        q, s_in = quantize.quantize_layers(CFG, [fl], rng.normal(0, 1, (32, d)), act_bits=act_bits or None,
                                           lut_bits=lut_bits or None)
    except backend.CompileError as exc:
        assert "act_bits" in str(exc)
        assert not (2 <= (act_bits or CFG.ActW) <= CFG.ActW and 2 <= (lut_bits or CFG.LutW) <= CFG.LutW)
        return
    ab, lb = act_bits or CFG.ActW, lut_bits or CFG.LutW
    assert s_in > 0 and q[0].bits == ab
    assert np.abs(q[0].protos).max(initial=0) <= 1 << (ab - 1)
    assert -(1 << (lb - 1)) <= q[0].lut.min() and q[0].lut.max() < 1 << (lb - 1)
    backend.check_layer(CFG, 0, q[0])


# ------------------------------------------------------------------------------------------------
# whole networks: front end + back end + simulator against the integer reference
# ------------------------------------------------------------------------------------------------
def _pq_conv(cin: int, cout: int, ks: int, stride: int, pad: int, k: int, v: int, metric: str) -> dict:
    return {"type": "pq_conv2d", "in_channels": cin, "out_channels": cout, "kernel_size": ks, "stride": stride,
            "padding": pad, "k": k, "v": min(v, cin * ks * ks), "metric": metric}


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 3), st.integers(1, 7), st.integers(1, 7), st.data())
def test_network_compiles_to_the_reference(ch: int, h: int, w: int, data: st.DataObject) -> None:
    """Any small PQ CNN (build_graph at 8 or fewer bits, unsigned ranges, any calibration flow) is compiled by
    the back end into a program whose simulator output equals graph.reference bit for bit; the only refusals
    are the configuration's limits (CompileError naming the layer)."""
    import torch

    from pqcompile import graph
    from pqtrain.model import build

    draw = data.draw
    metric = draw(st.sampled_from(["l2", "l1"]))
    layers: list[dict] = []
    c, hh, ww = ch, h, w
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.booleans()):
            ks, s, p = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(0, 3))
            oh, ow = (hh + 2 * p - ks) // s + 1, (ww + 2 * p - ks) // s + 1
            if oh < 1 or ow < 1:
                continue
            co = draw(st.integers(1, 5))
            layers.append(_pq_conv(c, co, ks, s, p, draw(st.integers(1, 6)), draw(st.integers(1, 8)), metric))
            if draw(st.booleans()):
                layers.append({"type": "batchnorm2d", "num_features": co})
            if draw(st.booleans()):
                layers.append({"type": "relu"})
            c, hh, ww = co, oh, ow
        else:
            body = [_pq_conv(c, c, 3, 1, 1, 4, 4, metric), {"type": "batchnorm2d", "num_features": c}]
            short = [] if draw(st.booleans()) else [_pq_conv(c, c, 1, 1, 0, 3, 2, metric)]
            layers.append({"type": "residual", "body": body, "shortcut": short})
            if draw(st.booleans()):
                layers.append({"type": "relu"})
    pool = draw(st.booleans()) or c * hh * ww > CFG.CMax * 8
    layers.append({"type": "global_avgpool"} if pool else {"type": "flatten"})
    d = c if pool else c * hh * ww
    v = draw(st.integers(max(1, -(-d // 32)), 8))
    layers.append({"type": "pq_linear", "in_features": d, "out_features": 3, "k": draw(st.integers(1, 6)), "v": v,
                   "metric": metric})
    arch = {"name": "fz", "input_shape": [ch, h, w], "num_classes": 3, "layers": layers}
    seed = draw(st.integers(0, 2**31 - 1))
    torch.manual_seed(seed)
    model = build(arch)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.3, 0.3)
                mod.running_var.uniform_(0.5, 2.0)
            if hasattr(mod, "prototypes"):
                mod.prototypes.normal_(0, 1)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((draw(st.integers(1, 3)), ch, h, w))
    if draw(st.booleans()):
        x = np.abs(x)  # a non-negative input: unsigned below 8 bits
    fe = graph.build_graph(arch, model.state_dict(), x, CFG, act_bits=draw(st.sampled_from([8, 6, 4, 3])),
                           calib_flow=draw(st.sampled_from(graph.CALIB_FLOWS)),
                           act_calib=draw(st.sampled_from(quantize.CALIB_METHODS)))
    xq = fe.quantize_input(x)
    y_ref = graph.reference(fe.graph, xq, CFG.AccW)
    try:  # the limits are checked once, by the back end
        backend.check_graph(CFG, fe.graph)
    except backend.CompileError as exc:
        assert "beyond the hardware limit" in str(exc) or "exceed" in str(exc), exc
        return
    prog = backend.emit_graph(CFG, fe.graph, xq)
    res = backend.simulate(CFG, prog)
    assert np.array_equal(backend.read_output(prog.manifest, res.mem).reshape(y_ref.shape), y_ref)
