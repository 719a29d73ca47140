"""Constrained-random regression of ``pqa_top`` against the golden simulator, with functional coverage.

    python tb/regress.py --seed 1 --count 200 --sim verilator [--config small] [--mutant ties|tree|trunc|nodep|nomem]
                         [--batch 100] [--jobs N] [--coverage cov.json] [--quiet]

Jobs (seed, 0) .. (seed, count-1) of tb/pqa_gen.py (legal compiled programs, programs with one bad
instruction, random instruction words; random AXI backpressure and latency, SLVERR injection, reset in
the middle of a run, START while busy, back-to-back starts) run in the pyuvm environment of
tb/pqa_env.py, ``--batch`` jobs per simulator process, ``--jobs`` simulator processes at once (default: one
per core; the model is built once before). Shows progress as batches finish (a bar with ETA on a
terminal, a few plain lines in a log or under CI=true; none with ``--quiet``: pqcompile.progress). Prints the
programs checked, mismatches, hangs and the coverage summary; exits 1 on any mismatch or hang (with
``--mutant``: exits 1 when the mutant is *not* caught). A failing job's build directory is kept under
sim_build/regress-failures/ and is reproduced by ``--seed S --first I --count 1``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import pqa_coverage
from pqa_runner import build, run_random

from pqcompile.progress import Progress

MUTANTS = {"ties": "PQA_MUTANT_TIES", "tree": "PQA_MUTANT_TREE", "trunc": "PQA_MUTANT_TRUNC",
           "nodep": "PQA_MUTANT_NODEP", "nomem": "PQA_MUTANT_NOMEM"}


def merge_coverage(total: dict[str, Any], cov: dict[str, Any]) -> dict[str, Any]:
    """Add the bin hits of one batch to the running total and recompute the percentages."""
    for name, c in cov.items():
        t = total.setdefault(name, {"bins": {}, "size": c["size"]})
        for b, n in c["bins"].items():
            t["bins"][b] = t["bins"].get(b, 0) + n
    for t in total.values():
        t["covered"] = sum(1 for n in t["bins"].values() if n > 0)
        t["size"] = max(t["size"], len(t["bins"]))
        t["percent"] = round(100.0 * t["covered"] / t["size"], 1) if t["size"] else 100.0
    return total


def regress(sim: str, config: str, seed: int, count: int, first: int = 0, mutant: str | None = None,
            batch: int = 100, log: bool = True, kinds: str = "", jobs: int = 1) -> dict[str, Any]:
    """Jobs ``first`` .. ``first + count - 1`` of ``seed`` in batches of ``batch`` jobs per simulator process,
    ``jobs`` processes at once; the results in job order."""
    defines = {MUTANTS[mutant]: 1} if mutant else None
    tag = f"mutant-{mutant}" if mutant else ""
    results: list[dict[str, Any]] = []
    cov: dict[str, Any] = {}
    t0 = time.time()
    build(sim, config, defines, tag)  # once, before the processes that share it start
    starts = list(range(first, first + count, batch))
    done: dict[int, list[dict[str, Any]]] = {}
    with Progress("  regression", count, unit="jobs", quiet=not log) as progress, \
            ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {pool.submit(run_random, sim, config, seed, min(batch, first + count - start), start, defines,
                               tag, None, kinds): start for start in starts}
        for fut in as_completed(futures):
            start = futures[fut]
            res, c = fut.result()
            done[start] = res
            merge_coverage(cov, c)
            failing = sum(1 for rs in done.values() for r in rs if r["errors"])
            progress.update(len(res), f"{failing} failing")
    for start in starts:
        results += done[start]
    failing = [r for r in results if r["errors"]]
    hangs = [r for r in results if r["info"].get("hang")]
    kinds: dict[str, int] = {}
    for r in results:
        k = r["info"].get("stim", {}).get("kind", "?")
        kinds[k] = kinds.get(k, 0) + 1
    return {"sim": sim, "config": config, "seed": seed, "first": first, "count": count, "mutant": mutant,
            "checked": len(results), "mismatches": len(failing) - len([r for r in failing if r in hangs]),
            "hangs": len(hangs), "kinds": kinds, "failing": failing, "coverage": cov,
            "wall_s": round(time.time() - t0, 1)}


def report(s: dict[str, Any]) -> str:
    lines = [f"regression: sim {s['sim']}, config {s['config']}, seed {s['seed']}, jobs {s['first']}.."
             f"{s['first'] + s['count'] - 1}" + (f", mutant {s['mutant']}" if s["mutant"] else ""),
             f"programs checked: {s['checked']} ({', '.join(f'{k} {v}' for k, v in sorted(s['kinds'].items()))})",
             f"mismatches: {s['mismatches']}", f"hangs: {s['hangs']}", f"wall time: {s['wall_s']} s"]
    for r in s["failing"][:10]:
        stim = r["info"].get("stim", {})
        lines.append(f"  FAIL job {stim.get('index')}: {r['errors'][0]}  (kept: {r['info'].get('kept', '-')})")
    cov = s["coverage"]
    if cov:
        bins = sum(c["size"] for c in cov.values())
        hit = sum(c["covered"] for c in cov.values())
        lines.append(f"functional coverage: {hit}/{bins} bins ({100.0 * hit / bins:.1f}%)")
        lines.append(pqa_coverage.format_summary(cov))
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--first", type=int, default=0)
    ap.add_argument("--sim", choices=["verilator", "icarus"], default="verilator")
    ap.add_argument("--config", default="small")
    ap.add_argument("--mutant", choices=sorted(MUTANTS))
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                    help="simulator processes at once (default: one per core)")
    ap.add_argument("--coverage", type=Path, help="write the coverage summary (JSON) here")
    ap.add_argument("--kinds", default="", help="only these job kinds (legal,error,words), no fault injection")
    ap.add_argument("-q", "--quiet", action="store_true",
                    help="no progress while the jobs run (default: a bar with ETA on a terminal, else a few lines)")
    a = ap.parse_args()
    s = regress(a.sim, a.config, a.seed, a.count, a.first, a.mutant, a.batch, log=not a.quiet, kinds=a.kinds,
                jobs=a.jobs)
    print(report(s))
    if a.coverage:
        a.coverage.write_text(json.dumps(s["coverage"], indent=1))
    failed = s["mismatches"] + s["hangs"] > 0
    if a.mutant:
        print(f"mutant {a.mutant}: {'CAUGHT' if failed else 'NOT CAUGHT'}")
        return 0 if failed else 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
