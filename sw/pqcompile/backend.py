"""Back end: integer layers -> memory layout, instruction stream and a build directory.

The build directory is the only thing the simulator and the testbench read (docs/file_formats.md):
``manifest.json``, ``mem.hex`` (the initial external memory: instructions, tables, inputs),
``program.asm`` (disassembly), ``expected_output.npy`` (the golden simulator's outputs).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import hexfmt, sim
from .isa import IllegalInstruction, disassemble, encode
from .spec import HwConfig, load

BUILD_FORMAT = "pqa-build"
BUILD_VERSION = 1


class CompileError(ValueError):
    """The model cannot be compiled for the chosen hardware configuration; the message says why."""


@dataclass
class QLayer:
    """One PQ layer in the integer form the hardware runs (``run`` semantics in docs/isa.md)."""

    protos: np.ndarray  # [c, k, v] int8
    lut: np.ndarray  # [c, k, m] signed, fits LutW bits
    bias: np.ndarray  # [m] int32
    d: int
    metric: str  # "l2" | "l1"
    mult: int
    shift: int
    relu: bool
    bits: int = 8  # output activation width (clamp range); stored as ActW-bit bytes
    name: str = ""
    info: dict[str, Any] = field(default_factory=dict)  # scales etc., copied into the manifest

    @property
    def c(self) -> int:
        return int(self.protos.shape[0])

    @property
    def k(self) -> int:
        return int(self.protos.shape[1])

    @property
    def v(self) -> int:
        return int(self.protos.shape[2])

    @property
    def m(self) -> int:
        return int(self.lut.shape[2])


def _align(x: int, a: int = 8) -> int:
    return -(-x // a) * a


def check_layer(cfg: HwConfig, i: int, q: QLayer) -> None:
    """Raise CompileError naming the layer when it is beyond the configuration's synthesized limits."""
    where = f"layer {i} ({q.name or 'pq_linear'} {q.d}->{q.m})"
    lim = [
        ("k", q.k, cfg.KMax, "KMax"), ("v", q.v, cfg.VMax, "VMax"), ("c", q.c, cfg.CMax, "CMax"),
        ("m", q.m, cfg.MMax, "MMax"),
    ]
    for what, val, mx, key in lim:
        if not 1 <= val <= mx:
            raise CompileError(f"{where}: {what}={val} is beyond the hardware limit {key}={mx} of config '{cfg.name}'")
    tables = [
        ("prototypes", q.c * q.k * q.v, cfg.ProtoBytes, "ProtoBytes"),
        ("table (LUT)", q.c * q.k * q.m * cfg.lut_bytes, cfg.LutBytes, "LutBytes"),
        ("input column", q.d, cfg.ActBytes, "ActBytes"),
        ("output column", q.m, cfg.OutBytes, "OutBytes"),
    ]
    for what, need, have, key in tables:
        if need > have:
            raise CompileError(f"{where}: {what} needs {need} bytes, config '{cfg.name}' has {key}={have}")
    if not (q.c - 1) * q.v < q.d <= q.c * q.v:
        raise CompileError(f"{where}: d={q.d} does not match c={q.c} subspaces of v={q.v}")
    lo, hi = -(1 << (cfg.LutW - 1)), (1 << (cfg.LutW - 1)) - 1
    if q.lut.min(initial=0) < lo or q.lut.max(initial=0) > hi:
        raise CompileError(f"{where}: table entries exceed LutW={cfg.LutW} bits")
    if q.protos.min(initial=0) < -128 or q.protos.max(initial=0) > 127:
        raise CompileError(f"{where}: prototypes exceed int8")
    if not (0 <= q.shift <= 47 and 0 <= q.mult < 1 << 16):
        raise CompileError(f"{where}: requantization mult={q.mult} shift={q.shift} out of range")
    if not 2 <= q.bits <= cfg.ActW:
        raise CompileError(f"{where}: activation width {q.bits} is outside 2..ActW={cfg.ActW}")


def tile_columns(cfg: HwConfig, q: QLayer, n: int) -> int:
    """Columns per tile: as many as the activation buffers hold, a multiple of the bus width in bytes
    (so every tile's address stays bus aligned) unless one tile holds all ``n``."""
    fit = min(cfg.ActBytes // q.d, cfg.OutBytes // q.m)
    if n <= fit:
        return n
    t = fit - fit % cfg.bus_bytes
    if t < 1:
        raise CompileError(f"layer {q.name}: {cfg.bus_bytes} columns do not fit the activation buffers")
    return t


def lut_bytes(cfg: HwConfig, lut: np.ndarray) -> np.ndarray:
    """Table entries as LUT_BYTES little-endian bytes each (two's complement)."""
    v = lut.astype(np.int64).reshape(-1) & ((1 << (8 * cfg.lut_bytes)) - 1)
    return np.stack([(v >> (8 * i)) & 0xFF for i in range(cfg.lut_bytes)], axis=1).astype(np.uint8).reshape(-1)


@dataclass
class Program:
    mem: np.ndarray  # initial memory image, bytes
    insn_base: int
    words: list[int]
    manifest: dict[str, Any]
    segments: list[tuple[int, np.ndarray, str]]


def emit(cfg: HwConfig, layers: list[QLayer], x: np.ndarray, name: str = "model") -> Program:
    """Lay out memory and emit the instruction stream that runs ``layers`` on the int8 columns ``x``
    ([n, d0]); activations go through external memory between layers."""
    if not layers:
        raise CompileError("nothing to compile: the model has no PQ layers")
    x = np.asarray(x)
    n = int(x.shape[0])
    if n < 1 or x.ndim != 2 or x.shape[1] != layers[0].d:
        raise CompileError(f"inputs must be [n, {layers[0].d}] with n >= 1, got {list(x.shape)}")
    for i, q in enumerate(layers):
        check_layer(cfg, i, q)
        if i and q.d != layers[i - 1].m:
            raise CompileError(f"layer {i}: input length {q.d} != previous layer's outputs {layers[i - 1].m}")
    tiles = [tile_columns(cfg, q, n) for q in layers]
    n_tiles = [-(-n // t) for t in tiles]
    n_insns = 1 + sum(5 + 3 * nt + 1 for nt in n_tiles) + 1
    addr = 0
    insn_base = 0
    addr = _align(n_insns * 8)
    stamp_addr = addr
    n_stamps = 1 + len(layers)
    addr += 8 * n_stamps
    segs: list[tuple[int, np.ndarray, str]] = []
    lay_info: list[dict[str, Any]] = []
    tables: list[tuple[int, int, int]] = []
    for i, q in enumerate(layers):
        pa = addr
        pb = q.protos.astype(np.int8).view(np.uint8).reshape(-1)
        addr = _align(addr + pb.size)
        la = addr
        lb = lut_bytes(cfg, q.lut)
        addr = _align(addr + lb.size)
        ba = addr
        bb = q.bias.astype("<i4").view(np.uint8).reshape(-1)
        addr = _align(addr + bb.size)
        segs += [(pa, pb, f"layer {i} prototypes [c={q.c}][k={q.k}][v={q.v}] int8"),
                 (la, lb, f"layer {i} table [c][k][m={q.m}] {cfg.LutW}-bit"),
                 (ba, bb, f"layer {i} bias [m] int32")]
        tables.append((pa, la, ba))
    in_addr = addr
    addr = _align(addr + n * layers[0].d)
    segs.append((in_addr, x.astype(np.int8).view(np.uint8).reshape(-1), f"input [{n}][{layers[0].d}] int8"))
    outs = []
    for q in layers:
        outs.append(addr)
        addr = _align(addr + n * q.m)
    mem_bytes = _align(addr, 4096)

    bufs = load().enums["buffer"]
    words: list[int] = [encode("stamp", addr=stamp_addr)]
    src = in_addr
    for i, q in enumerate(layers):
        pa, la, ba = tables[i]
        words += [
            encode("load", buf=bufs["proto"], nbytes=q.c * q.k * q.v, addr=pa),
            encode("load", buf=bufs["lut"], nbytes=q.c * q.k * q.m * cfg.lut_bytes, addr=la),
            encode("load", buf=bufs["bias"], nbytes=4 * q.m, addr=ba),
            encode("shape", metric=q.metric, k=q.k, v=q.v, c=q.c, d=q.d, m=q.m),
            encode("quant", relu=int(q.relu), shift=q.shift, mult=q.mult, bits=q.bits),
        ]
        t = tiles[i]
        for j in range(0, n, t):
            tn = min(t, n - j)
            words += [
                encode("load", buf=bufs["act"], nbytes=tn * q.d, addr=src + j * q.d),
                encode("run", n=tn),
                encode("store", nbytes=tn * q.m, addr=outs[i] + j * q.m),
            ]
        words.append(encode("stamp", addr=stamp_addr + 8 * (i + 1)))
        src = outs[i]
        lay_info.append({
            "index": i, "name": q.name, "d": q.d, "m": q.m, "c": q.c, "k": q.k, "v": q.v, "metric": q.metric,
            "relu": q.relu, "mult": q.mult, "shift": q.shift, "bits": q.bits,
            "proto_addr": pa, "lut_addr": la, "bias_addr": ba,
            "in_addr": in_addr if i == 0 else outs[i - 1], "out_addr": outs[i],
            "tile_columns": t, "tiles": n_tiles[i],
            "table_bytes": q.c * q.k * q.v + q.c * q.k * q.m * cfg.lut_bytes + 4 * q.m,
            **q.info,
        })
    words.append(encode("end"))
    assert len(words) == n_insns
    ib = np.frombuffer(b"".join(w.to_bytes(8, "little") for w in words), np.uint8)
    segs.insert(0, (insn_base, ib, f"instruction stream, {len(words)} instructions"))
    mem = np.zeros(mem_bytes, np.uint8)
    for a, data, _ in segs:
        mem[a : a + data.size] = data
    manifest: dict[str, Any] = {
        "format": BUILD_FORMAT,
        "version": BUILD_VERSION,
        "model": name,
        "config": cfg.name,
        "config_params": dict(cfg.params),
        "image": "mem.hex",
        "program": "program.asm",
        "mem_bytes": mem_bytes,
        "insn_base": insn_base,
        "n_insns": len(words),
        "input": {"addr": in_addr, "shape": [n, layers[0].d]},
        "output": {"addr": outs[-1], "shape": [n, layers[-1].m]},
        "stamps": {"addr": stamp_addr, "labels": ["start"] + [f"layer{i}" for i in range(len(layers))]},
        "layers": lay_info,
    }
    return Program(mem, insn_base, words, manifest, segs)


def simulate(cfg: HwConfig, prog: Program) -> sim.Result:
    return sim.run(cfg, prog.mem, prog.insn_base, strict=True)


def read_output(manifest: dict[str, Any], mem: np.ndarray) -> np.ndarray:
    o = manifest["output"]
    n, m = o["shape"]
    return mem[o["addr"] : o["addr"] + n * m].view(np.int8).reshape(n, m).copy()


def read_stamps(manifest: dict[str, Any], mem: np.ndarray) -> list[int]:
    s = manifest["stamps"]
    return [int.from_bytes(mem[s["addr"] + 8 * i : s["addr"] + 8 * i + 8].tobytes(), "little")
            for i in range(len(s["labels"]))]


def write_build(outdir: str | Path, cfg: HwConfig, prog: Program, res: sim.Result | None = None,
                extra: dict[str, np.ndarray] | None = None,
                manifest_extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the build directory (simulating first unless ``res`` is given) atomically: everything goes to
    a temporary directory beside ``outdir`` that replaces ``outdir`` only when complete; on any error
    nothing is left."""
    res = res or simulate(cfg, prog)
    manifest = dict(prog.manifest)
    manifest["expected"] = {"sim_insns": res.insn_count, "sim_cycle_estimate": res.cycles,
                            "sim_err_code": res.err_code}
    if "stamps" in manifest and manifest["layers"] and res.done:
        # the simulator's stamps hold its cycle model: per-layer predictions for the reports
        st = read_stamps(manifest, res.mem)
        manifest["layers"] = [{**lay, "predicted_cycles": st[i + 1] - st[i]}
                              for i, lay in enumerate(manifest["layers"])]
    expected = read_output(prog.manifest, res.mem) if "output" in manifest else None
    if expected is not None:
        manifest["expected"]["output"] = "expected_output.npy"
    manifest.update(manifest_extra or {})
    outdir = Path(outdir)
    outdir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.tmp-", dir=outdir.parent))
    try:
        hexfmt.write_image(tmp / "mem.hex", prog.segments, cfg.bus_bytes, title=f"model {prog.manifest['model']}")
        (tmp / "program.asm").write_text(
            "".join(f"{prog.insn_base + 8 * i:#010x}  {w:016x}  {_dis(w)}\n" for i, w in enumerate(prog.words)),
            encoding="ascii")
        if expected is not None:
            np.save(tmp / "expected_output.npy", expected)
        for k, arr in (extra or {}).items():
            np.save(tmp / f"{k}.npy", arr)
            manifest.setdefault("files", {})[k] = f"{k}.npy"
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        if outdir.exists():
            old = outdir.with_name(f".{outdir.name}.old")
            if old.exists():
                shutil.rmtree(old)
            outdir.rename(old)
            tmp.rename(outdir)
            shutil.rmtree(old)
        else:
            tmp.rename(outdir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _dis(word: int) -> str:
    try:
        return disassemble(word)
    except IllegalInstruction as exc:
        return f"<illegal: {exc}>"


def load_build(builddir: str | Path) -> tuple[dict[str, Any], np.ndarray]:
    """Read a build directory: the manifest and the initial memory (validated hex image)."""
    builddir = Path(builddir)
    try:
        manifest = json.loads((builddir / "manifest.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{builddir}: no manifest.json (not a pqcompile build directory)") from None
    except ValueError as exc:
        raise ValueError(f"{builddir}/manifest.json: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != BUILD_FORMAT \
            or manifest.get("version") != BUILD_VERSION:
        raise ValueError(f"{builddir}/manifest.json: not a {BUILD_FORMAT} v{BUILD_VERSION} manifest")
    try:
        bus = int(manifest["config_params"]["AxiDataWidth"]) // 8
        image, size = builddir / str(manifest["image"]), int(manifest["mem_bytes"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{builddir}/manifest.json: missing or malformed entry {exc}") from None
    words = hexfmt.read_image(image, bus)
    return manifest, hexfmt.to_bytes(words, size, bus)


def raw_program(cfg: HwConfig, words: list[int], data: list[tuple[int, np.ndarray, str]] | None = None,
                mem_bytes: int = 4096, name: str = "raw") -> Program:
    """A hand-written instruction stream at address 0 plus data segments (for tests of the error paths
    and of single instructions); its manifest has no layers and no output."""
    ib = np.frombuffer(b"".join(w.to_bytes(8, "little") for w in words), np.uint8)
    segs = [(0, ib, f"instruction stream, {len(words)} words"), *(data or [])]
    mem = np.zeros(mem_bytes, np.uint8)
    for a, d, _ in segs:
        mem[a : a + d.size] = d
    manifest = {
        "format": BUILD_FORMAT, "version": BUILD_VERSION, "model": name, "config": cfg.name,
        "config_params": dict(cfg.params), "image": "mem.hex", "program": "program.asm", "mem_bytes": mem_bytes,
        "insn_base": 0, "n_insns": len(words), "layers": [],
    }
    return Program(mem, 0, list(words), manifest, segs)
