"""Build directories for the RTL tests: PQ layers of several shapes compiled through the project's own
quantizer and back end, and hand-written programs for the error paths."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pqcompile import backend, quantize, sim
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


def random_float_layers(rng: np.random.Generator, shapes: list[LayerShape]) -> list[quantize.FloatPQLayer]:
    out = []
    for i, s in enumerate(shapes):
        c = -(-s.d // s.v)
        protos = rng.normal(0, 1, (c, s.k, s.v))
        protos[-1, :, s.d - (c - 1) * s.v :] = 0  # padded dimensions carry no information
        out.append(quantize.FloatPQLayer(i, protos, rng.normal(0, 1 / np.sqrt(s.d), (s.m, s.d)),
                                         rng.normal(0, 0.1, s.m), s.metric, s.relu))
    return out


def compiled_case(outdir: Path, cfg: HwConfig, shapes: list[LayerShape], n: int, seed: int,
                  act_bits: int | None = None, lut_bits: int | None = None) -> dict:
    """Random float PQ layers -> quantize (calibrated on random inputs) -> emit -> build directory."""
    rng = np.random.default_rng(seed)
    layers = random_float_layers(rng, shapes)
    calib = rng.normal(0, 1, (256, shapes[0].d))
    q, s_in = quantize.quantize_layers(cfg, layers, calib, act_bits=act_bits, lut_bits=lut_bits)
    x = quantize.quantize_act(rng.normal(0, 1, (n, shapes[0].d)), s_in, q[0].bits)
    return backend.write_build(outdir, cfg, backend.emit(cfg, q, x, name=outdir.name))


STAMP_ADDR = 0x800  # where the hand-written programs put their one cycle stamp


def raw_case(outdir: Path, cfg: HwConfig, words: list[int], data: list | None = None) -> dict:
    prog = backend.raw_program(cfg, words, data, name=outdir.name)
    prog.manifest["stamps"] = {"addr": STAMP_ADDR, "labels": ["start"]}  # RTL cycles: not compared
    res = sim.run(cfg, prog.mem, prog.insn_base)
    return backend.write_build(outdir, cfg, prog, res)


def error_programs(cfg: HwConfig) -> dict[str, tuple[list[int], str, int]]:
    """name -> (instruction words, expected error name, expected ERR_PC). Each starts with a legal
    instruction so that the error PC is not the first word."""
    bufs = load().enums["buffer"]
    st = encode("stamp", addr=STAMP_ADDR)
    return {
        "illegal_opcode": ([st, 0x7, encode("end")], "illegal_insn", 8),
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
