"""Constrained-random top-level regression (tb/regress.py) under pytest: a fast seeded subset on both
simulators, the mutants (each built under its define in its own build directory) that the random
regression must catch, and the long regression (slow)."""

from __future__ import annotations

from pathlib import Path

import pytest
from regress import regress, report

FAST = {"verilator": 16, "icarus": 8}  # jobs in the default (fast) run


def _check_clean(s: dict) -> None:
    assert s["checked"] == s["count"], report(s)
    assert s["mismatches"] == 0 and s["hangs"] == 0, report(s)
    cov = s["coverage"]
    assert cov["pqa.opcode"]["percent"] == 100.0, report(s)  # every opcode executed, and an illegal word


@pytest.mark.rtl
@pytest.mark.parametrize("sim_name", list(FAST))
def test_random_regression_fast(sim_name: str) -> None:
    # seed 3: its first 8 jobs execute every opcode and an illegal word (checked on the golden simulator,
    # pqa_env.expected_result's opcodes, whenever the generator's draws change: seed 11 lost its illegal word to
    # the on-chip draw of tb/pqa_gen.py, seed 2 its pool and add to the long columns and wide convs)
    _check_clean(regress(sim_name, "small", seed=3, count=FAST[sim_name], log=False))


@pytest.mark.rtl
def test_random_regression_wide() -> None:
    """Random legal programs at config 'wide' (256-bit bus, 16-bit table entries: tables of 2..16 bits, those
    of 8 or fewer packed, ``shape.pack``) on Verilator (the build test_pqa.py::test_wide_bus uses)."""
    s = regress("verilator", "wide", seed=3, count=8, log=False, kinds="legal")
    assert s["checked"] == s["count"] and s["mismatches"] == 0 and s["hangs"] == 0, report(s)


@pytest.mark.rtl
@pytest.mark.parametrize("mutant", ["ties", pytest.param("tree", marks=pytest.mark.slow),
                                    pytest.param("trunc", marks=pytest.mark.slow), "nodep"])
def test_random_regression_catches_mutant(mutant: str) -> None:
    """A deliberately broken RTL (argmin ties to the highest index across prototype groups, or between the
    distance units of a comparator tree; truncating requantizer; a table load that does not wait for the
    `run` reading its bank) must give scoreboard mismatches on a handful
    of random jobs at config small (2 x 3 x 2 lanes; Icarus: its build takes a fraction of a second), run
    one at a time up to the first mismatch. The default run has the dependency and tie mutants, the others
    are `slow` (about 2 min each, for CI's time)."""
    s = _caught("icarus", mutant, count=6)
    assert s["mismatches"] > 0, f"mutant {mutant} not caught:\n{report(s)}"


# The seed of each mutant's jobs: one whose first legal jobs catch it (checked on Verilator whenever
# tb/pqa_gen.py's draws change: `tb/regress.py --seed S --count 8 --mutant M --kinds legal --batch 1`; the
# dependency mutant needs a program whose table load would overwrite a bank that a `run` still reads).
MUTANT_SEED = {"ties": 5, "tree": 5, "trunc": 5, "nodep": 4, "nomem": 3}
# the jobs that can catch it: legal (compiled) programs, or for a load that does not wait for the store of its
# memory the random words (only they load memory that a store just wrote: their round trips, tb/pqa_gen.py)
MUTANT_KINDS = {"nomem": "words"}


def _caught(sim_name: str, mutant: str, count: int) -> dict:
    """Jobs 0 .. count-1 of the mutant's seed (MUTANT_SEED; legal ones, or MUTANT_KINDS), one simulator
    process each, up to the first that catches it (a mismatch): the regression's verdict on the mutant at a
    fraction of the time of all of them (Icarus runs a job in about 25 s)."""
    for first in range(count):
        s = regress(sim_name, "small", seed=MUTANT_SEED[mutant], count=1, first=first, mutant=mutant, log=False,
                    kinds=MUTANT_KINDS.get(mutant, "legal"))
        if s["mismatches"]:
            break
    return s


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize("mutant", ["ties", "tree", "trunc", "nodep", "nomem"])
def test_random_regression_catches_mutant_verilator(mutant: str) -> None:
    s = _caught("verilator", mutant, count=12)
    assert s["mismatches"] > 0, f"mutant {mutant} not caught:\n{report(s)}"


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize("sim_name", ["verilator", "icarus"])
def test_random_regression_long(sim_name: str) -> None:
    s = regress(sim_name, "small", seed=1, count=200 if sim_name == "verilator" else 60, log=False)
    _check_clean(s)
    cov = s["coverage"]
    for point in ("pqa.err_code", "pqa.stim", "pqa.data", "pqa.metric", "pqa.layers", "pqa.lanes", "pqa.gather"):
        assert cov[point]["percent"] == 100.0, report(s)


def test_a_mutated_batched_program_is_a_valid_build(tmp_path: Path) -> None:
    """Job 106 of seed 43 is an `error` job whose legal program ran image by image up to an op
    (``--batch-from``): the mutated program is rebuilt as a raw one (no layers) that keeps the compiled
    stamps, their ``ops`` included, and the build must still load (a regression of seed 43 stopped here on
    ``stamps.ops`` checked against layers the raw manifest does not have)."""
    import pqa_gen

    from pqcompile import build as pqbuild
    from pqcompile.spec import load

    m = pqa_gen.random_job(43, 106, load().config("small"), tmp_path / "job")
    assert m["stim"]["kind"] == "error" and m["layers"] == [] and m["stamps"]["ops"]
    man, _ = pqbuild.load(tmp_path / "job")
    assert man["stamps"]["ops"] == m["stamps"]["ops"]


def test_a_schedule_that_misses_its_graph_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """The generator checks every legal program on the golden simulator against the integer reference its
    graph was grown with, so that a scheduling bug (a move that changes what the stream computes, which the RTL
    would then reproduce faithfully) stops the regression: a fetch order that takes the bias loads to the end
    of the stream makes ``legal_program`` raise. No simulator."""
    import numpy as np
    import pqa_gen

    from pqcompile import backend
    from pqcompile.spec import load

    bias = load().enums["buffer"]["bias"]

    def late_bias(cfg: object, seq: list, mem_bw: int = 0) -> list:
        late = [q for q in seq if q.mnemonic == "load" and q.ops["buf"] == bias]
        return [q for q in seq[:-1] if not any(q is x for x in late)] + late + seq[-1:]

    cfg = load().config("small")
    pqa_gen.legal_program(np.random.default_rng(4), cfg)  # the real schedule passes
    monkeypatch.setattr(backend, "fetch_order", late_bias)
    with pytest.raises(RuntimeError, match="does not compute its graph"):
        pqa_gen.legal_program(np.random.default_rng(4), cfg)


def test_reserved_bit_mutation_sets_a_reserved_bit() -> None:
    """The generator's `reserved_bit` error sets one reserved bit of one instruction, whatever it picks (it
    crashed when it picked `shape`, which has had no reserved bit since `pack` took bit 7). No simulator."""
    import numpy as np
    import pqa_gen

    from pqcompile.isa import IllegalInstruction, decode
    from pqcompile.spec import load

    cfg = load().config("small")
    prog, _ = pqa_gen.legal_program(np.random.default_rng(4), cfg)
    assert "shape" in {decode(w).mnemonic for w in prog.words}
    for s in range(60):
        words = pqa_gen._mutate(np.random.default_rng(s), cfg, prog.words, "reserved_bit", prog.manifest["mem_bytes"])
        changed = [i for i, (a, b) in enumerate(zip(prog.words, words, strict=True)) if a != b]
        assert len(changed) == 1
        with pytest.raises(IllegalInstruction):
            decode(words[changed[0]])
