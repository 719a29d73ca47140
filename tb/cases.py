"""Build directories for the RTL tests: random PQ models compiled through the project's own front end
(quantizer) and back end, random integer conv graphs (tb/graphgen.py) compiled by the back end's planner,
and hand-written programs for single instructions (pool, add) and the error paths."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from graphgen import RandomGraph, calibrate

from pqcompile import backend, graph, sim
from pqcompile import build as pqbuild
from pqcompile.isa import encode
from pqcompile.spec import HwConfig, load


@dataclass(frozen=True)
class LayerShape:
    d: int
    m: int
    k: int
    v: int
    metric: str
    relu: bool


def copy_build(src: Path, dst: Path) -> Path:
    """A copy of build directory ``src`` at ``dst`` (replaced if there), to damage in a test."""
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    return dst


def reseal(b: Path) -> None:
    """Recompute a build's digests after an edit, as a forger would (files no longer there are dropped from the
    seal), so that the checks behind the digests are reached."""
    man = json.loads((b / "manifest.json").read_text())
    if isinstance(man, dict) and isinstance(man.get("sha256"), dict):
        man["sha256"] = {k: v for k, v in man["sha256"].items() if (b / str(k)).is_file()}
        (b / "manifest.json").write_text(json.dumps(pqbuild.seal(man, b)))


def random_mlp(rng: np.random.Generator, shapes: list[LayerShape]) -> tuple[dict, dict[str, torch.Tensor]]:
    """A PQ MLP model (the architecture and state dict that pqtrain writes) with random weights: prototypes
    N(0, 1) (zero in the padded dimensions), weights N(0, 1/d), biases N(0, 0.1)."""
    layers: list[dict] = []
    for s in shapes:
        layers.append({"type": "pq_linear", "in_features": s.d, "out_features": s.m, "k": s.k, "v": s.v,
                       "metric": s.metric})
        if s.relu:
            layers.append({"type": "relu"})
    arch = {"name": "random_mlp", "input_shape": [shapes[0].d], "num_classes": shapes[-1].m, "layers": layers}
    state: dict[str, torch.Tensor] = {}
    for li, s in zip([i for i, lay in enumerate(layers) if lay["type"] == "pq_linear"], shapes, strict=True):
        c = -(-s.d // s.v)
        protos = rng.normal(0, 1, (c, s.k, s.v))
        protos[-1, :, s.d - (c - 1) * s.v :] = 0  # padded dimensions carry no information
        state[f"layers.{li}.prototypes"] = torch.tensor(protos, dtype=torch.float32)
        state[f"layers.{li}.weight"] = torch.tensor(rng.normal(0, 1 / np.sqrt(s.d), (s.m, s.d)), dtype=torch.float32)
        state[f"layers.{li}.bias"] = torch.tensor(rng.normal(0, 0.1, s.m), dtype=torch.float32)
    return arch, state


def compiled_case(outdir: Path, cfg: HwConfig, shapes: list[LayerShape], n: int, seed: int,
                  act_bits: int | None = None, lut_bits: int | None = None) -> dict:
    """A random PQ MLP -> the front end (calibrated on random inputs) -> the back end -> build directory."""
    rng = np.random.default_rng(seed)
    arch, state = random_mlp(rng, shapes)
    fe = graph.build_graph(arch, state, rng.normal(0, 1, (256, shapes[0].d)), cfg, act_bits=act_bits,
                           lut_bits=lut_bits, name=outdir.name)
    x = fe.quantize_input(rng.normal(0, 1, (n, shapes[0].d)))
    return backend.write_build(outdir, cfg, backend.emit_graph(cfg, fe.graph, x, outdir.name))


STAMP_ADDR = 0x800  # where the hand-written programs put their stamp records (below DATA_ADDR: 8 of them)


def stamp_at(i: int) -> int:
    """The address of stamp record ``i`` of a hand-written program: STAMP_ADDR + i records."""
    return pqbuild.stamp_addr(pqbuild.stamps_entry(STAMP_ADDR, []), i)


def raw_case(outdir: Path, cfg: HwConfig, words: list[int], data: list | None = None, mem_bytes: int = 4096,
             labels: tuple[str, ...] = ("start",)) -> dict:
    """A hand-written program; its ``stamp`` instructions write the records of ``labels`` at ``stamp_at(0)``,
    ``stamp_at(1)`` .. (RTL cycles: not compared; compute cycles and byte counts: exactly)."""
    prog = backend.raw_program(cfg, words, data, mem_bytes=mem_bytes, name=outdir.name)
    prog.manifest["stamps"] = pqbuild.stamps_entry(STAMP_ADDR, list(labels))
    res = sim.run(cfg, prog.mem, prog.insn_base)
    return backend.write_build(outdir, cfg, prog, res)


def error_programs(cfg: HwConfig) -> dict[str, tuple[list[int], str, int]]:
    """name -> (instruction words, expected error name, expected ERR_PC). Each starts with a legal
    instruction so that the error PC is not the first word."""
    bufs = load().enums["buffer"]
    st = encode("stamp", addr=STAMP_ADDR)
    unused = next(o for o in range(1, 16) if o not in {d.opcode for d in load().instructions})  # from the spec
    return {
        "illegal_opcode": ([st, unused, encode("end")], "illegal_insn", 8),
        "reserved_bit": ([st, encode("end") | 1 << 40, encode("end")], "illegal_insn", 8),
        "k_beyond_limit": ([st, encode("shape", metric="l2", k=cfg.KMax + 1, v=2, c=2, d=4, m=2),
                            encode("quant", relu=0, shift=0, mult=1, bits=8), encode("run", n=1), encode("end")],
                           "limit", 24),
        "d_inconsistent": ([st, encode("shape", metric="l1", k=2, v=2, c=2, d=5, m=2), encode("run", n=1),
                            encode("end")], "limit", 16),
        "load_beyond_buffer": ([st, encode("load", buf=bufs["act"], nbytes=cfg.ActBytes + 1, addr=0x400),
                                encode("end")], "limit", 8),
        "misaligned_load": ([st, encode("load", buf=bufs["proto"], nbytes=8, addr=0x404), encode("end")],
                            "align", 8),
        "run_without_quant": ([st, encode("shape", metric="l2", k=2, v=2, c=2, d=4, m=2), encode("run", n=3),
                               encode("end")], "limit", 16),  # bits = 0 after start
        "run_with_zero_tables": ([st, encode("shape", metric="l2", k=2, v=2, c=2, d=4, m=2),
                                  encode("quant", relu=0, shift=0, mult=1, bits=8), encode("run", n=3),
                                  encode("store", nbytes=6, addr=0x400), encode("end")], "none", 0),
    }


# ------------------------------------------------------------------------------------------------------------
# Conv layers (compiled by the back end), and pool / add on their own: hand-written programs over random
# integer data (the ISA's own instructions; the golden simulator computes the expected memory)
# ------------------------------------------------------------------------------------------------------------
DATA_ADDR = 0x1000  # data segments of the hand-written programs start here (instructions and stamps below)
assert stamp_at(8) <= DATA_ADDR  # room for 8 stamp records (128 bytes apart)


@dataclass(frozen=True)
class ConvCase:
    """A conv layer over an h x w x ch fmap (stride, kh x kw window, symmetric padding; K, v, m), followed
    by ``then``: "pool" (global pooling of its output), "add" (plus a second conv of the same geometry)."""

    h: int
    w: int
    ch: int
    stride: int
    kh: int
    kw: int
    pad: int
    k: int
    v: int
    m: int
    metric: str = "l2"
    relu: bool = False
    unsigned: bool = False
    bits: int = 8
    images: int = 1


def conv_case(outdir: Path, cfg: HwConfig, cc: ConvCase, seed: int, then: str = "") -> dict:
    """A random integer conv graph (tb/graphgen.py) for ``cc`` over its images, compiled by the back end's
    planner."""
    rng = np.random.default_rng(seed)
    rg = RandomGraph(cfg, rng, (cc.h, cc.w, cc.ch), cc.images, cc.bits, name=outdir.name, jitter=False)
    geom = {"kh": cc.kh, "kw": cc.kw, "stride": cc.stride, "pad": cc.pad}
    out = {"relu": cc.relu, "unsigned": cc.unsigned, "bits": cc.bits}
    t = rg.pq("input", cc.m, cc.k, cc.v, cc.metric, **out, **geom)
    if then == "pool":
        rg.pool(t, relu=cc.relu, unsigned=cc.unsigned, bits=6)
    elif then == "add":
        rg.add(t, rg.pq("input", cc.m, cc.k, cc.v, cc.metric, **out, **geom), relu=cc.relu, unsigned=cc.unsigned,
               bits=cc.bits)
    elif then:
        raise ValueError(then)
    return backend.write_build(outdir, cfg, rg.emit())


class _Mem:
    """Data segments at DATA_ADDR upwards, each bus-word aligned."""

    def __init__(self) -> None:
        self.segs: list[tuple[int, np.ndarray, str]] = []
        self.top = DATA_ADDR

    def put(self, data: np.ndarray, what: str) -> int:
        a = self.top
        self.segs.append((a, np.asarray(data).astype(np.uint8).reshape(-1), what))
        self.top = -(-(a + data.size) // 8) * 8
        return a

    def reserve(self, nbytes: int) -> int:
        a = self.top
        self.top = -(-(a + nbytes) // 8) * 8
        return a

    def size(self) -> int:
        return -(-(self.top + 64) // 4096) * 4096


def _i8(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.int64).astype(np.int8).view(np.uint8)


def vec_case(outdir: Path, cfg: HwConfig, kind: str, seed: int) -> dict:
    """``pool`` and ``add`` on their own: "pool_relu" / "pool_unsigned" / "pool_signed" over a random fmap;
    "add_<relu|unsigned|signed>" with the second operand loaded into the output buffer (``load`` buf=out),
    odd n, and a second add in place on the first's result."""
    rng = np.random.default_rng(seed)
    bufs = load().enums["buffer"]
    mem = _Mem()
    flags = {"relu": (1, 0), "unsigned": (0, 1), "signed": (0, 0)}[kind.split("_")[1]]
    words = [encode("stamp", addr=stamp_at(0))]
    if kind.startswith("pool"):
        h, w, ch = 5, 7, 11
        fmap = rng.integers(-128, 128, h * w * ch)
        acc = fmap.reshape(h * w, ch).sum(0)
        mult, shift = calibrate(rng, acc, 5, jitter=False)
        aa = mem.put(_i8(fmap), "fmap")
        ao = mem.reserve(ch)
        words += [encode("load", buf=bufs["act"], nbytes=fmap.size, addr=aa), encode("fmap", h=h, w=w, ch=ch),
                  encode("quant", relu=flags[0], unsigned=flags[1], shift=shift, mult=mult, bits=5),
                  encode("pool"), encode("stamp", addr=stamp_at(1)), encode("store", nbytes=ch, addr=ao)]
    else:
        n = 203
        a, b = rng.integers(-128, 128, n), rng.integers(-128, 128, n)
        aa, ab = mem.put(_i8(a), "act operand"), mem.put(_i8(b), "out operand")
        ao = mem.reserve(n)
        words += [encode("load", buf=bufs["act"], nbytes=n, addr=aa),
                  encode("load", buf=bufs["out"], nbytes=n, addr=ab),
                  encode("quant", relu=flags[0], unsigned=flags[1], shift=14, mult=12345, bits=7),
                  encode("add", n=n, ma=int(rng.integers(1 << 12, 1 << 14)), mb=int(rng.integers(1 << 12, 1 << 14))),
                  encode("stamp", addr=stamp_at(1)),
                  encode("quant", relu=0, unsigned=0, shift=1, mult=0, bits=8),
                  encode("add", n=n - 6, ma=1, mb=1),
                  encode("store", nbytes=n, addr=ao)]
    words.append(encode("end"))
    return raw_case(outdir, cfg, words, mem.segs, mem_bytes=mem.size(), labels=("start", kind))


# name -> (ConvCase, then): 3x3 s1 p1, 3x3 s2 p1, 1x1 s2 p0, odd channel counts (3, 5), v not dividing the
# patch (27 with v=4, 16 with v=3, 12 with v=5), 144 with v=8 (subspaces across window rows and channels),
# a flatten conv (the window is the whole fmap), unsigned outputs, pool and add after a conv, and a fmap
# larger than the act buffer of config 'small' (two bands).
CONV_CASES: dict[str, tuple[ConvCase, str]] = {
    "conv3x3_s1_p1_ch3_v4": (ConvCase(8, 8, 3, 1, 3, 3, 1, k=8, v=4, m=8, relu=True), ""),
    "conv3x3_s2_p1_ch5_l1": (ConvCase(9, 7, 5, 2, 3, 3, 1, k=5, v=5, m=6, metric="l1"), ""),
    "conv1x1_s2_p0_ch16_v3": (ConvCase(6, 6, 16, 2, 1, 1, 0, k=4, v=3, m=13), ""),
    "conv3x3_ch16_v8_unsigned": (ConvCase(5, 5, 16, 1, 3, 3, 1, k=3, v=8, m=5, unsigned=True, bits=4), ""),
    "conv_flatten_4x4x3": (ConvCase(4, 4, 3, 1, 4, 4, 0, k=6, v=8, m=10), ""),
    "conv2x3_s3_p2_pool": (ConvCase(7, 8, 2, 3, 2, 3, 2, k=2, v=5, m=7, relu=True, unsigned=True, bits=6), "pool"),
    "conv3x3_s1_p1_add": (ConvCase(6, 5, 4, 1, 3, 3, 1, k=4, v=6, m=4, relu=True), "add"),
    "conv3x3_s2_banded_20x16x13": (ConvCase(20, 16, 13, 2, 3, 3, 1, k=3, v=8, m=5, relu=True), ""),
    # the table (12 groups x 16 x 22 output groups x 8 B = 33,792 B) exceeds LutBytes: tiled over m, two tiles
    # whose runs write channels 0..32 and 33..63 (run.ooff, run.ostride)
    "conv3x3_m64_table_tiled": (ConvCase(6, 6, 8, 1, 3, 3, 1, k=16, v=3, m=64, relu=True), ""),
    # a 12x12x40 output (5,760 B > ActBytes) that only a pool reads: stored in channel blocks of 24 and 16,
    # each its own table tile and run, pooled block by block
    "conv3x3_m40_pool_blocked": (ConvCase(12, 12, 8, 1, 3, 3, 1, k=8, v=8, m=40, relu=True), "pool"),
    # three images of a 16x16x12 output (3 KiB > half the output buffer): two bands an image whose outputs
    # alternate between the output buffer's halves, each band's store beside the next band's run (store.half)
    "conv3x3_out_halves_3images": (ConvCase(16, 16, 8, 1, 3, 3, 1, k=8, v=8, m=12, relu=True, images=3), ""),
}
VEC_CASES = ["pool_relu", "pool_unsigned", "pool_signed", "add_relu", "add_unsigned", "add_signed"]


def new_error_programs(cfg: HwConfig) -> dict[str, tuple[list[int], str, int]]:
    """Error paths of fmap / conv / pool / add / unsigned quant / load into out: name -> (words, error,
    ERR_PC). Each starts with a legal instruction."""
    bufs = load().enums["buffer"]
    st = encode("stamp", addr=STAMP_ADDR)
    q8 = encode("quant", relu=0, shift=0, mult=1, bits=8)
    q7u = encode("quant", relu=0, unsigned=1, shift=0, mult=1, bits=7)
    q8u = encode("quant", relu=0, unsigned=1, shift=0, mult=1, bits=cfg.ActW)
    fm = encode("fmap", h=4, w=4, ch=3)
    cv = encode("conv", stride=1, kh=3, kw=3, pad_t=1, pad_l=1, out_w=4)
    shape = encode("shape", metric="l2", conv=1, k=2, v=4, c=7, d=27, m=4)
    big = cfg.ActBytes // 4 + 1  # h * w * ch = 4 * big > ActBytes
    return {
        "conv_d_mismatch": ([st, fm, cv, encode("shape", metric="l2", conv=1, k=2, v=4, c=7, d=26, m=4), q8,
                             encode("run", n=16), encode("end")], "limit", 40),
        "conv_fmap_beyond_act": ([st, encode("fmap", h=4, w=big, ch=1), encode("conv", stride=1, kh=1, kw=1, pad_t=0,
                                  pad_l=0, out_w=4), encode("shape", metric="l2", conv=1, k=2, v=1, c=1, d=1, m=1), q8,
                                  encode("run", n=4), encode("end")], "limit", 40),
        "conv_stride_zero": ([st, fm, encode("conv", stride=0, kh=3, kw=3, pad_t=1, pad_l=1, out_w=4), shape, q8,
                              encode("run", n=4), encode("end")], "limit", 40),
        "conv_ok_then_unsigned_bits8": ([st, fm, cv, shape, q7u, encode("run", n=16), q8u, encode("run", n=16),
                                         encode("end")], "limit", 56),
        "pool_unsigned_bits8": ([st, fm, q8u, encode("pool"), encode("end")], "limit", 24),
        "pool_ch_beyond_out": ([st, encode("fmap", h=1, w=1, ch=cfg.OutBytes + 1), q8, encode("pool"), encode("end")],
                               "limit", 24),
        "pool_without_fmap": ([st, q8, encode("pool"), encode("end")], "limit", 16),
        "add_n_zero": ([st, q8, encode("add", n=0, ma=1, mb=1), encode("end")], "limit", 16),
        "add_n_beyond": ([st, q8, encode("add", n=min(cfg.ActBytes, cfg.OutBytes) + 1, ma=1, mb=1), encode("end")],
                         "limit", 16),
        "add_unsigned_bits8": ([st, q8u, encode("add", n=8, ma=1, mb=1), encode("end")], "limit", 16),
        "load_out_beyond": ([st, encode("load", buf=bufs["out"], nbytes=cfg.OutBytes + 1, addr=0x400), encode("end")],
                            "limit", 8),
        "load_buf5": ([st, encode("load", buf=5, nbytes=8, addr=0x400), encode("end")], "limit", 8),
        "fmap_reserved_bit": ([st, fm | 1 << 60, encode("end")], "illegal_insn", 8),
        "conv_reserved_bit": ([st, cv | 1 << 63, encode("end")], "illegal_insn", 8),
        "pool_reserved_bit": ([st, encode("pool") | 1 << 8, encode("end")], "illegal_insn", 8),
        "add_reserved_bit": ([st, encode("add", n=1, ma=1, mb=1) | 1 << 7, encode("end")], "illegal_insn", 8),
        # shape's bit 7 is `pack`: byte table entries need LutW > 8, so at config small the run is `limit`
        "shape_pack_byte_entries": ([st, encode("shape", metric="l2", k=1, v=1, c=1, d=1, m=1, pack=1), q8,
                                     encode("run", n=1), encode("end")], "limit", 24),
        "load_out_bank1": ([st, encode("load", buf=bufs["out"], bank=1, nbytes=8, addr=0x400), encode("end")],
                           "limit", 8),  # out has one bank (act two)
        # dst: the act bank the instruction reads, or beyond the enum target
        "run_dst_is_src": ([st, fm, cv, shape, q8, encode("run", n=16, src=1, dst="act1"), encode("end")], "limit", 40),
        "run_dst_none_n16": ([st, fm, cv, shape, q8, encode("run", n=16, dst="none"), encode("end")], "limit", 40),
        "pool_dst_is_src": ([st, fm, q8, encode("pool", src=0, dst="act0"), encode("end")], "limit", 24),
        "add_dst_beyond_enum": ([st, q8, encode("add", n=8, ma=1, mb=1, src=1, dst=3), encode("end")], "limit", 16),
        # run's output stride and offset: a stride below m, an offset (or a stride) that runs past dst
        "run_ostride_below_m": ([st, fm, cv, shape, q8, encode("run", n=16, ostride=3), encode("end")], "limit", 40),
        "run_ooff_beyond_out": ([st, fm, cv, shape, q8, encode("run", n=16, ostride=5, ooff=1),
                                 encode("run", n=16, ooff=cfg.OutBytes - 63), encode("end")], "limit", 48),
        "run_ostride_beyond_act": ([st, fm, cv, shape, q8, encode("run", n=16, ostride=cfg.ActBytes // 15 + 1,
                                                                  dst="act1"), encode("end")], "limit", 40),
        # the accumulator chain (dst = none holds a column's accumulators, acc starts from them): acc with none
        # held, after a run that wrote (it ends the chain), with another m, and pool with dst = none
        "run_acc_nothing_held": ([st, fm, cv, shape, q8, encode("run", n=1, acc=1), encode("end")], "limit", 40),
        "run_acc_after_a_write": ([st, fm, cv, shape, q8, encode("run", n=1, dst="none"), encode("run", n=1, acc=1),
                                   encode("run", n=1), encode("run", n=1, acc=1), encode("end")], "limit", 64),
        "run_acc_other_m": ([st, fm, cv, shape, q8, encode("run", n=1, dst="none"),
                             encode("shape", metric="l2", conv=1, k=2, v=4, c=7, d=27, m=5), encode("run", n=1, acc=1),
                             encode("end")], "limit", 56),
        "pool_dst_none": ([st, fm, q8, encode("pool", dst="none"), encode("end")], "limit", 24),
        # store.half: the output buffer's second half, at most OutBytes/2 bytes of it
        "store_half_beyond": ([st, encode("store", half=1, nbytes=64, addr=0x400),
                               encode("store", half=1, nbytes=cfg.OutBytes // 2 + 1, addr=0x400), encode("end")],
                              "limit", 16),
    }


def residual_arch() -> dict:
    """A small residual CNN that fits config 'small': PQ conv + batch norm + ReLU, then a down-sampling
    residual block (3x3 stride-2 body of two PQ convs with batch norm, 1x1 stride-2 PQ projection shortcut
    with batch norm, add, ReLU), global average pooling and a PQ linear classifier."""

    def pqconv(cin: int, cout: int, ks: int, v: int, stride: int = 1, pad: int = 0) -> dict:
        return {"type": "pq_conv2d", "in_channels": cin, "out_channels": cout, "kernel_size": ks, "stride": stride,
                "padding": pad, "k": 8, "v": v, "metric": "l2", "bias": False}

    bn = {"type": "batchnorm2d", "num_features": 8}
    return {"name": "residual_small", "input_shape": [3, 6, 6], "num_classes": 5, "layers": [
        pqconv(3, 8, 3, 3, pad=1), bn, {"type": "relu"},
        {"type": "residual", "body": [pqconv(8, 8, 3, 8, 2, 1), bn, {"type": "relu"}, pqconv(8, 8, 3, 8, 1, 1), bn],
         "shortcut": [pqconv(8, 8, 1, 4, 2, 0), bn]},
        {"type": "relu"}, {"type": "global_avgpool"},
        {"type": "pq_linear", "in_features": 8, "out_features": 5, "k": 8, "v": 4, "metric": "l1"},
    ]}


def prefetch_slverr_case(outdir: Path, cfg: HwConfig, seed: int) -> tuple[str, int]:
    """A random MLP whose second PQ op's table loads stream in beside the first op's `run` (the schedule's
    prefetch, backend.schedule), with SLVERR on the first word of its table load, on a slow memory (random
    AR/AW latency up to 10 cycles and backpressure on every channel): the run must stop with `bus` at that
    load (the `run` beside it finishes, nothing after it reaches memory) and never hang. Returns the expected
    (error, ERR_PC)."""
    from pqa_gen import mlp_graph

    from pqcompile import ir
    from pqcompile.isa import decode

    rng = np.random.default_rng(seed)
    rg = mlp_graph(rng, cfg, 8, cfg.LutW)
    while sum(isinstance(op, ir.PQOp) for op in rg.ops) < 2:
        rg = mlp_graph(rng, cfg, 8, cfg.LutW)
    prog = rg.emit()
    insns = [decode(w) for w in prog.words]
    lut = load().enums["buffer"]["lut"]
    first_run = next(i for i, q in enumerate(insns) if q.mnemonic == "run")
    at = next(i for i, q in enumerate(insns) if i > first_run and q.mnemonic == "load" and q.ops["buf"] == lut)
    stim = {"kind": "error", "seed": seed, "index": 0, "poison": [insns[at].ops["addr"] // cfg.bus_bytes],
            "latency": 10, "pause": 0.5}
    res = sim.run(cfg, prog.mem, prog.insn_base)
    backend.write_build(outdir, cfg, prog, res, manifest_extra={"stim": stim})
    return "bus", prog.insn_base + 8 * at


def round_trip_case(outdir: Path, cfg: HwConfig, seed: int) -> None:
    """Loads of memory that the `store` just before them writes (a read after a write through external memory:
    the DMA's read and write engines are separate AXI channels, so the load must wait for the store,
    pqa_ctrl's ``mem_conflict``), on a slow memory (backpressure on every channel, AR/AW latency): a block
    goes out through the output buffer and comes back into an act bank, whole, then from a bus word before a
    store whose last word is partial, and each comes back out through ``add`` (act * 1 + out * 0) for the
    scoreboard to compare. The golden simulator runs one instruction at a time, so any stale byte is a
    mismatch."""
    b = load().enums["buffer"]
    n = min(cfg.ActBytes, cfg.OutBytes) // 2
    rng = np.random.default_rng(seed)
    blocks = [rng.integers(-128, 128, n).astype(np.int8).view(np.uint8) for _ in range(3)]
    a, src, far, out = (DATA_ADDR + i * n for i in range(4))  # out: two results; far: the second store
    words = [encode("stamp", addr=stamp_at(0)), encode("quant", relu=0, shift=0, mult=1, bits=cfg.ActW),
             encode("load", buf=b["out"], nbytes=n, addr=a),
             encode("store", nbytes=n, addr=src),  # src held blocks[1]: now blocks[0]
             encode("load", buf=b["act"], bank=0, nbytes=n, addr=src),
             encode("add", src=0, n=n, ma=1, mb=0),
             encode("store", nbytes=n - 3, addr=far),  # far held blocks[2]: its first n-3 bytes now blocks[0]
             encode("load", buf=b["act"], bank=1, nbytes=n, addr=far - cfg.bus_bytes),
             encode("store", nbytes=n, addr=out),
             encode("load", buf=b["out"], nbytes=n, addr=a + n),  # any bytes, mb = 0
             encode("add", src=1, n=n, ma=1, mb=0),
             encode("store", nbytes=n, addr=out + n), encode("stamp", addr=stamp_at(1)), encode("end")]
    data = [(a, blocks[0], "block 0"), (src, blocks[1], "block 1"), (far, blocks[2], "block 2")]
    prog = backend.raw_program(cfg, words, data, mem_bytes=DATA_ADDR + 6 * n, name=outdir.name)
    prog.manifest["stamps"] = pqbuild.stamps_entry(STAMP_ADDR, ["start", "end"])
    res = sim.run(cfg, prog.mem, prog.insn_base)
    backend.write_build(outdir, cfg, prog, res, manifest_extra={"stim": {"latency": 4, "pause": 0.5}})


def residual_case(outdir: Path, config: str, seed: int, count: int = 2, lut_bits: int | None = None,
                  batch: int | None = None, batch_from: str | None = None, mem_bw: int = 0) -> None:
    """Compile :func:`residual_arch` with random weights and non-trivial batch-norm statistics through the
    project's compiler (pqcompile.cli.compile_model: graph extraction, batch-norm folding, quantization,
    tiling, emission; bit-exact check of the quantized torch model against the golden simulator); ``lut_bits``:
    the table width (default the configuration's LutW); ``batch``, ``batch_from``: ``pqcompile --batch``,
    ``--batch-from``; ``mem_bw``: ``pqcompile --mem-bw`` (the bandwidth the schedule assumes)."""
    import torch

    from pqcompile.cli import compile_model
    from pqcompile.options import BuildConfig
    from pqmodel.model import build, save

    torch.manual_seed(seed)
    arch = residual_arch()
    model = build(arch)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.3, 0.3)
                mod.running_mean.uniform_(-0.3, 0.3)
                mod.running_var.uniform_(0.5, 2.0)
    outdir.parent.mkdir(parents=True, exist_ok=True)
    path = outdir.parent / f"{outdir.name}.pt"
    save(model.eval(), arch, path, {"seed": seed})
    compile_model(str(path), str(outdir), BuildConfig(config=config, inputs="random", count=count, seed=seed,
                                                      lut_bits=lut_bits, batch=batch, batch_from=batch_from,
                                                      mem_bw=mem_bw),
                  quiet=True)
