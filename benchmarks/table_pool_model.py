"""What a table pool would buy: a projection on the golden simulator's cycle model, not a measurement.

    python benchmarks/table_pool_model.py build/resnet20-pqa-b1 [--mem-bw 94] [--pools 256,384,512,768]

Today the proto, LUT and bias buffers are two fixed banks, so an op's tables can stream in only while the op
before it computes. A *pool* (the table buffers addressed at an offset that `load` and `run` name) would let
the compiler place an op's tables anywhere free and load them during any earlier op. This script takes a
compiled build (``make bench-resnet20`` writes one), moves every PQ op's table loads into the earliest ops
whose compute can hide them (split into bus-word chunks; greedily, each op's loads within 97% of its
compute cycles; the pool never holding more than its capacity of tables loaded but not yet used), and runs
the rearranged stream on ``sim.Timeline`` with the table banks taken out of the dependency checks (a pool
never conflicts). The data are wrong (chunks land at offset 0 of a bank), the cycles are the model's: the
per-op stamps summed, as ``make bench-resnet20`` prints them. docs/theory.md and the issue 12 note describe
the design it projects.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "sw"))

from pqcompile import backend, sim  # noqa: E402
from pqcompile import build as pqbuild  # noqa: E402
from pqcompile.isa import Insn, decode, encode  # noqa: E402
from pqcompile.spec import load  # noqa: E402

FILL = 0.97  # the share of an op's compute cycles that its hoisted loads may take


def ops_cycles(manifest: dict, mem: np.ndarray) -> int:
    return sum(p["predicted_cycles"] for p in backend.op_perf(manifest, mem))


def project(builddir: Path, mem_bw: int, pool: int) -> int:
    """Cycles over the ops (cycle model) with a table pool of ``pool`` bytes."""
    manifest, mem = pqbuild.load(builddir)
    cfg = pqbuild.config_of(builddir, manifest)
    bufs = {load().enums["buffer"][b] for b in sim.TABLE_BUFS}
    words = [int.from_bytes(mem[8 * i : 8 * i + 8].tobytes(), "little") for i in range(manifest["n_insns"])]
    insns = [decode(w) for w in words]
    # the stream in op segments: the first stamp, one segment per op (ending with its stamp), `end`
    segs: list[list[tuple[Insn, int]]] = [[]]
    for q, w in zip(insns, words, strict=True):
        segs[-1].append((q, w))
        if q.mnemonic == "stamp":
            segs.append([])
    head, ops, tail = segs[0], segs[1:-1], segs[-1]
    runs = [s for s, seg in enumerate(ops) if any(q.mnemonic == "run" for q, _ in seg)]
    loads = [(q, w) for seg in ops for q, w in seg if q.mnemonic == "load" and q.ops["buf"] in bufs]
    triples = [loads[3 * j : 3 * j + 3] for j in range(len(runs))]  # each PQ op's proto, lut, bias, in order
    base = sim.run(cfg, mem, manifest["insn_base"], mem_bw=mem_bw)
    compute = [p["predicted_compute_cycles"] for p in backend.op_perf(manifest, base.mem)]
    bw = sim.bytes_per_cycle(cfg, mem_bw)
    spent = [0.0] * len(ops)  # memory cycles of the loads placed in each op
    held = [0] * (len(ops) + 1)  # table bytes in the pool while each op runs
    placed: dict[int, list[tuple[Insn, int]]] = {s: [] for s in range(len(ops))}  # after the op's compute
    first: list[tuple[Insn, int]] = []  # the first PQ op's own tables, before its run
    for j, r in enumerate(runs):
        for q, _ in triples[j]:
            rem, off, s = int(q.ops["nbytes"]), 0, 0
            while rem > 0:
                if j == 0 or s >= r - 1:  # the first op's own tables, or the op right before: all of it
                    s = r if j == 0 else r - 1
                    chunk = rem
                else:
                    room = int((compute[s] * FILL - spent[s]) * bw) // cfg.bus_bytes * cfg.bus_bytes
                    chunk = min(rem, room)
                    if chunk <= 0 or any(held[x] + chunk > pool for x in range(s, r + 1)):
                        s += 1
                        continue
                ops_ = {**q.ops, "nbytes": chunk, "addr": q.ops["addr"] + off}
                (first if j == 0 else placed[s]).append((q, encode("load", **ops_)))
                spent[s] += chunk / bw + sim.XFER_CYCLES + sim.FETCH_CYCLES  # its beats, command and fetch
                for x in range(s, r + 1):
                    held[x] += chunk
                rem, off = rem - chunk, off + chunk
                s += 1 if j else 0
    new: list[int] = [w for _, w in head]
    for s, seg in enumerate(ops):
        kept = [(q, w) for q, w in seg if not (q.mnemonic == "load" and q.ops["buf"] in bufs)]
        at = next(i for i, (q, _) in enumerate(kept) if q.mnemonic in ("run", "pool", "add"))
        own = first if s == runs[0] else []
        new += [w for _, w in kept[:at]] + [w for _, w in own] + [w for _, w in kept[at : at + 1]]
        new += [w for _, w in placed[s]] + [w for _, w in kept[at + 1 :]]
    new += [w for _, w in tail]
    # the longer stream goes after the image, so that it overwrites neither the stamp records nor the tables
    at = mem.size
    image = np.concatenate([mem, np.zeros(8 * len(new) + 4096, np.uint8)])
    for i, w in enumerate(new):
        image[at + 8 * i : at + 8 * i + 8] = np.frombuffer(w.to_bytes(8, "little"), np.uint8)
    resources = sim.resources

    def pooled(mnemonic: str, ops: dict[str, int], st: sim._State, buf: str = "",
               out_half: int | None = None) -> tuple[set[str], set[str]]:
        r, w = resources(mnemonic, ops, st, buf, out_half)
        return {x for x in r if not x.startswith("tbl")}, {x for x in w if not x.startswith("tbl")}

    sim.resources = pooled  # type: ignore[assignment]
    try:
        res = sim.run(cfg, image, at, mem_bw=mem_bw)
    finally:
        sim.resources = resources  # type: ignore[assignment]
    if not res.done:
        raise SystemExit(f"table_pool_model: the rearranged stream stopped with error {res.err_code}")
    return ops_cycles(manifest, res.mem)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="table_pool_model", description=__doc__.splitlines()[0])
    ap.add_argument("build", type=Path, help="a build directory (e.g. build/resnet20-pqa-b1 of make bench-resnet20)")
    ap.add_argument("--mem-bw", type=int, default=94, help="memory bandwidth, bytes a cycle (default 94)")
    ap.add_argument("--pools", default="256,320,384,512,768,1024", help="pool sizes in KiB, comma-separated")
    a = ap.parse_args(argv)
    manifest, mem = pqbuild.load(a.build)
    cfg = pqbuild.config_of(a.build, manifest)
    base = ops_cycles(manifest, sim.run(cfg, mem, manifest["insn_base"], mem_bw=a.mem_bw).mem)
    n = int(manifest.get("n_images", 1) or 1)
    print(f"{a.build.name}: cycle model at {a.mem_bw} bytes a cycle, over the ops, per image")
    print(f"  today (two table banks): {base / n:.0f}")
    for kib in (int(x) for x in a.pools.split(",")):
        print(f"  table pool of {kib} KiB: {project(a.build, a.mem_bw, kib << 10) / n:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
