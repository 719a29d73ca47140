"""Functional coverage of the top-level runs (cocotb-coverage), sampled once per job by the environment's
coverage subscriber from the job's manifest (generator info and stimulus knobs) and the golden
simulator's trace of the run.

Covered: opcodes executed (and illegal words), error codes, job kinds x error codes, metrics, ReLU,
K / v / c / m ranges up to the synthesized limits, activation and table widths, chained layers, tiling,
tied minima in the encoder, saturation at both ends, exact rounding halves, conv-mode layers (window
1x1 / 3x3 / other / flatten, stride 1 / 2 / more, padding or none), unsigned outputs, pool, residual add
(as the back end plans them: both operands loaded), the encoder's lanes filled partially and wholly (c
against NS, k against NP, v against PL, m against NOUT, on configurations with more than one), the
encoder's gather modes (lanes, contiguous, element), and the stimulus: AXI
backpressure, AR/AW latency, SLVERR injection, reset in the middle of a run, START while busy,
back-to-back starts without reset.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cocotb_coverage.coverage import CoverCross, CoverPoint, coverage_db

from pqcompile.spec import HwConfig, load

_SAMPLE: Callable[[dict[str, Any]], None] | None = None


def _ranges(mx: int) -> tuple[list[tuple[int, int]], list[str]]:
    """1, 2..3, 4..mx-1, mx (the last bin is the synthesized limit)."""
    bins = [(1, 1), (2, 3), (4, mx - 1), (mx, mx)]
    return bins, ["1", "2-3", f"4-{mx - 1}", f"{mx}(max)"]


def _in_any(values: list[int], b: tuple[int, int]) -> bool:
    return any(b[0] <= v <= b[1] for v in values)


def sampler(cfg: HwConfig) -> Callable[[dict[str, Any]], None]:
    """Define the cover points once per process (cocotb-coverage keeps them by name)."""
    global _SAMPLE
    if _SAMPLE is not None:
        return _SAMPLE
    spec = load()
    mnemonics = [d.mnemonic for d in spec.instructions]
    errs = list(spec.errors)
    kb, kl = _ranges(cfg.KMax)
    vb, vl = _ranges(cfg.VMax)
    cb, cl = _ranges(cfg.CMax)
    mb, ml = _ranges(cfg.MMax)
    stims = ["pause", "latency", "poison", "reset_mid_run", "start_while_busy", "back_to_back"]

    def many(key: str) -> Callable[[dict[str, Any]], Any]:
        return lambda s: s.get(key, [])

    @CoverPoint("pqa.opcode", xf=many("opcodes"), rel=lambda v, b: b in v, bins=[*mnemonics, "illegal"], inj=False)
    @CoverPoint("pqa.err_code", xf=lambda s: s["err"], bins=errs)
    @CoverPoint("pqa.kind", xf=lambda s: s["kind"], bins=["legal", "error", "words"])
    @CoverCross("pqa.kind_x_err_code", items=["pqa.kind", "pqa.err_code"],
                ign_bins=[("legal", e) for e in ("illegal_insn", "limit", "align")] + [("error", "none")])
    @CoverPoint("pqa.metric", xf=many("metrics"), rel=lambda v, b: b in v, bins=list(spec.enums["metric"]), inj=False)
    @CoverPoint("pqa.relu", xf=many("relu"), rel=lambda v, b: b in v, bins=[False, True], inj=False)
    @CoverPoint("pqa.k", xf=many("k"), rel=_in_any, bins=kb, bins_labels=kl, inj=False)
    @CoverPoint("pqa.v", xf=many("v"), rel=_in_any, bins=vb, bins_labels=vl, inj=False)
    @CoverPoint("pqa.c", xf=many("c"), rel=_in_any, bins=cb, bins_labels=cl, inj=False)
    @CoverPoint("pqa.m", xf=many("m"), rel=_in_any, bins=mb, bins_labels=ml, inj=False)
    @CoverPoint("pqa.act_bits", xf=lambda s: s.get("act_bits"), bins=list(range(2, cfg.ActW + 1)))
    @CoverPoint("pqa.lut_bits", xf=lambda s: s.get("lut_bits"), rel=lambda v, b: v is not None and b[0] <= v <= b[1],
                bins=[(2, 2), (3, cfg.LutW - 1), (cfg.LutW, cfg.LutW)], bins_labels=["2", f"3-{cfg.LutW - 1}", "LutW"])
    @CoverPoint("pqa.layers", xf=lambda s: s.get("n_layers"), bins=[1, 2, 3])
    @CoverPoint("pqa.tiled", xf=lambda s: s.get("tiled"), bins=[True])
    @CoverPoint("pqa.m_tiled", xf=lambda s: s.get("m_tiled"), bins=[True])
    @CoverPoint("pqa.pool_blocked", xf=lambda s: s.get("pool_blocked"), bins=[True])
    @CoverPoint("pqa.c_tiled", xf=lambda s: s.get("c_tiled"), bins=[True])
    @CoverPoint("pqa.out_halves", xf=lambda s: s.get("out_halves"), bins=[True])
    @CoverPoint("pqa.mem_raw", xf=lambda s: s.get("mem_raw"), bins=[True])
    @CoverPoint("pqa.batching", xf=lambda s: s.get("batching"), bins=["passes", "from"])
    @CoverPoint("pqa.data", xf=many("data"), rel=lambda v, b: b in v, bins=["ties", "sat_hi", "sat_lo", "round_half"],
                inj=False)
    @CoverPoint("pqa.stim", xf=many("stim"), rel=lambda v, b: b in v, bins=stims, inj=False)
    @CoverPoint("pqa.conv_window", xf=lambda s: s.get("conv_window"), bins=["1x1", "3x3", "other", "flatten"])
    @CoverPoint("pqa.conv_stride", xf=lambda s: s.get("conv_stride"), bins=["1", "2", ">2"])
    @CoverPoint("pqa.conv_pad", xf=lambda s: s.get("conv_pad"), bins=[False, True], bins_labels=["none", "padded"])
    @CoverPoint("pqa.unsigned", xf=lambda s: s.get("unsigned"), bins=[True])
    @CoverPoint("pqa.vec", xf=many("vec"), rel=lambda v, b: b in v, bins=["pool", "add"],
                inj=False)
    @CoverPoint("pqa.table_banks", xf=lambda s: s.get("table_banks"), bins=["alternate", "reused"])
    @CoverPoint("pqa.on_chip", xf=many("on_chip"), rel=lambda v, b: b in v, bins=["act", "out", "memory"],
                inj=False)
    @CoverPoint("pqa.gather", xf=many("gather"), rel=lambda v, b: b in v, bins=["lanes", "contiguous", "element"],
                inj=False)
    def sample(s: dict[str, Any]) -> None:
        pass

    bins = lane_bins(cfg)
    if bins:
        sample = CoverPoint("pqa.lanes", xf=lambda s: lanes_hit(cfg, s), rel=lambda v, b: b in v, bins=bins,
                            inj=False)(sample)
    _SAMPLE = sample
    return sample


_LANES = (("c", "NS"), ("k", "NP"), ("v", "PL"), ("m", "NOUT"))


def lane_bins(cfg: HwConfig) -> list[str]:
    """Bins of the encoder's and the look-up's lanes: for each dimension whose lane count is above 1, a layer
    that fills its last group partially ("c%NS": c not a multiple of NS; k against NP, v against PL, m
    against NOUT) and one that fills every group ("c=j*NS")."""
    return [f"{d}{op}{lane}" for d, lane in _LANES if cfg.params[lane] > 1 for op in ("%", "=j*")]


def lanes_hit(cfg: HwConfig, s: dict[str, Any]) -> list[str]:
    out = []
    for d, lane in _LANES:
        n = cfg.params[lane]
        for val in s.get(d, []):
            out.append(f"{d}{'%' if val % n else '=j*'}{lane}")
    return out


def job_sample(manifest: dict[str, Any], opcodes: list[str], err_name: str) -> dict[str, Any]:
    """The sample of one job: its manifest's generator info / stimulus and the executed opcodes."""
    gen, stim = manifest.get("gen", {}), manifest.get("stim", {})
    lay = gen.get("layers", manifest.get("layers", []))
    s: dict[str, Any] = {"kind": stim.get("kind", "legal" if lay else "words"), "err": err_name, "opcodes": opcodes}
    pq = [q for q in lay if "metric" in q]  # PQ layers (compiled graphs also list add and pool ops)
    for key in ("k", "v", "c", "m", "metric", "relu", "gather"):
        s[key + ("s" if key == "metric" else "")] = [q[key] for q in pq if key in q]
    s["act_bits"], s["lut_bits"] = gen.get("act_bits"), gen.get("lut_bits")
    s["n_layers"] = len(lay) or None
    s["tiled"] = any(q.get("tiles", 1) > 1 for q in manifest.get("layers", []))
    s["m_tiled"] = any(len(q.get("m_tiles", [])) > 1 for q in manifest.get("layers", []))  # a table tiled over m
    s["pool_blocked"] = any("channel_blocks" in q for q in manifest.get("layers", []))  # a pool in channel blocks
    s["c_tiled"] = any(len(q.get("c_tiles", [])) > 1 for q in manifest.get("layers", []))  # runs chained over c
    s["out_halves"] = any(q.get("out_halves") for q in manifest.get("layers", []))  # store.half: halves overlap
    s["mem_raw"] = bool(gen.get("mem_raw")) or None  # a load of words the store before it wrote, executed
    s["batching"] = gen.get("batching")  # a legal program in passes, or image by image up to an op
    s["data"] = [k for k in ("ties", "sat_hi", "sat_lo", "round_half") if gen.get(k)]
    conv = gen.get("conv")
    if conv:
        s["conv_window"] = "flatten" if conv["flatten"] else {(1, 1): "1x1", (3, 3): "3x3"}.get(
            (conv["kh"], conv["kw"]), "other")
        s["conv_stride"] = str(conv["stride"]) if conv["stride"] <= 2 else ">2"
        s["conv_pad"] = conv["pad"] > 0
    s["unsigned"] = gen.get("unsigned") or None
    s["vec"] = [k for k in ("pool", "add") if gen.get(k)]
    s["table_banks"] = gen.get("table_banks")
    s["on_chip"] = gen.get("on_chip") or []
    s["stim"] = [k for k, on in (("pause", stim.get("pause")), ("latency", stim.get("latency")),
                                 ("poison", stim.get("poison")), ("reset_mid_run", "reset_after" in stim),
                                 ("start_while_busy", "restart_after" in stim),
                                 ("back_to_back", stim.get("back_to_back"))) if on]
    return s


def summary() -> dict[str, Any]:
    """{cover point: {"percent", "covered", "size", "bins": {label: hits}}} of every cover point."""
    out: dict[str, Any] = {}
    for name in sorted(coverage_db.keys()):
        item = coverage_db[name]
        if not name.startswith("pqa.") or name == "pqa":
            continue
        bins = getattr(item, "detailed_coverage", {})
        out[name] = {"percent": round(float(item.cover_percentage), 1), "covered": int(item.coverage),
                     "size": int(item.size), "bins": {str(k): int(v) for k, v in bins.items()}}
    return out


def write(path: str | Path) -> None:
    Path(path).write_text(json.dumps(summary(), indent=1))


def format_summary(cov: dict[str, Any]) -> str:
    lines = []
    for name, c in cov.items():
        missed = [b for b, n in c["bins"].items() if n == 0]
        lines.append(f"  {name:24s} {c['percent']:5.1f}% ({c['covered']}/{c['size']})"
                     + (f"  missed: {', '.join(missed[:6])}{' ...' if len(missed) > 6 else ''}" if missed else ""))
    return "\n".join(lines)
