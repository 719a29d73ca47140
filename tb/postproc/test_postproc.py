"""Block bench of ``pqa_postproc`` (combinational requantizer) against ``pqcompile.sim.requantize``:
rounding half up at every shift (exact halves, one below, one above, positive and negative), shift 0 and
the spec's limit (``quant.shift``), saturation at both ends for every output width 2..ActW, ReLU, the
unsigned clamp [0, 2^bits-1] for every width 2..ActW-1 (with and without ReLU: unsigned wins), the
extreme accumulators, plus random cases; parametrized over AccW / ActW (odd widths included)."""

from __future__ import annotations

import random

import cocotb
import numpy as np
import pytest
from block_util import SIMS, check_block, params
from cocotb.triggers import Timer
from pqa_runner import block_sources

from pqcompile import sim
from pqcompile.isa import field_limit

SHIFT_MAX = field_limit("quant", "shift")  # the largest requantization shift (the spec's limit)


def corner_cases(accw: int, actw: int, rng: random.Random) -> list[tuple[int, int, int, int, int, int]]:
    lo, hi = -(1 << (accw - 1)), (1 << (accw - 1)) - 1
    out = []
    for shift in range(0, SHIFT_MAX + 1):
        half = 1 << (shift - 1) if shift else 0
        for mult in (1, 3, 0xFFFF):
            for base in (0, 5, -5):
                for d in (-1, 0, 1):
                    num = base * (1 << shift) + half + d  # acc * mult near a rounding boundary
                    if num % mult == 0:
                        acc = num // mult
                        if lo <= acc <= hi:
                            out.append((acc, mult, shift, rng.randint(0, 1), rng.randint(2, actw), 0))
    for bits in range(2, actw + 1):
        for acc in (lo, hi, 0, -1, 1, (1 << (bits - 1)) - 1, 1 << (bits - 1), -(1 << (bits - 1)),
                    -(1 << (bits - 1)) - 1):
            if lo <= acc <= hi:
                for relu in (0, 1):
                    out.append((acc, 1, 0, relu, bits, 0))
                    out.append((acc, 0xFFFF, SHIFT_MAX, relu, bits, 0))
                    out.append((acc, 0xFFFF, 0, relu, bits, 0))
    for bits in range(2, actw):  # unsigned: [0, 2^bits - 1], bits < ActW
        for acc in (lo, hi, 0, -1, 1, (1 << bits) - 1, 1 << bits, (1 << bits) - 2, (1 << (bits - 1)) - 1,
                    1 << (bits - 1)):
            if lo <= acc <= hi:
                for relu in (0, 1):
                    out.append((acc, 1, 0, relu, bits, 1))
                    out.append((acc, 0xFFFF, SHIFT_MAX, relu, bits, 1))
                    out.append((acc * 2, 1, 1, relu, bits, 1) if lo <= acc * 2 <= hi else (acc, 3, 1, relu, bits, 1))
    return out


@cocotb.test()
async def requantize_matches_golden(dut: object) -> None:
    p = params()
    accw, actw = p["AccW"], p["ActW"]
    rng = random.Random(cocotb.RANDOM_SEED)
    cases = corner_cases(accw, actw, rng)
    for _ in range(1500):
        uns = rng.random() < 0.3
        cases.append((rng.randint(-(1 << (accw - 1)), (1 << (accw - 1)) - 1), rng.randint(0, 0xFFFF),
                      rng.randint(0, SHIFT_MAX), rng.randint(0, 1), rng.randint(2, actw - 1 if uns else actw),
                      int(uns)))
    hit = {"round_up": 0, "sat_hi": 0, "sat_lo": 0, "relu": 0, "uns_hi": 0, "uns_top": 0, "uns_lo": 0}
    for acc, mult, shift, relu, bits, uns in cases:
        dut.acc_i.value = acc & ((1 << accw) - 1)
        dut.mult_i.value = mult
        dut.shift_i.value = shift
        dut.relu_i.value = relu
        dut.bits_i.value = bits
        dut.unsigned_i.value = uns
        await Timer(1, unit="ns")
        got = dut.y_o.value.to_signed()
        exp = int(sim.requantize(np.array([acc]), mult, shift, bool(relu), bits, bool(uns))[0])
        assert got == exp, (f"acc={acc} mult={mult} shift={shift} relu={relu} bits={bits} unsigned={uns}: "
                            f"RTL {got}, golden {exp}")
        raw = acc * mult
        if uns:
            hit["uns_hi"] += exp == (1 << bits) - 1 and raw >> shift > exp  # saturates at 2^bits - 1
            hit["uns_top"] += exp >= 1 << (bits - 1)  # above the signed range: the unsigned one is used
            hit["uns_lo"] += exp == 0 and raw < 0
            continue
        if shift and (raw >> (shift - 1)) & 1:
            hit["round_up"] += 1
        hit["sat_hi"] += exp == (1 << (bits - 1)) - 1 and raw >> shift > exp
        hit["sat_lo"] += exp == -(1 << (bits - 1)) and not relu
        hit["relu"] += relu and exp == 0 and raw < 0
    assert all(hit.values()), f"corner not reached: {hit}"


PARAMS = [pytest.param({"AccW": 32, "ActW": 8}, marks=pytest.mark.slow), {"AccW": 19, "ActW": 5}]


@pytest.mark.rtl
@pytest.mark.parametrize("sim_name", SIMS)
@pytest.mark.parametrize("parameters", PARAMS, ids=lambda p: f"accw{p['AccW']}_actw{p['ActW']}")
def test_postproc(sim_name: str, parameters: dict[str, int]) -> None:
    check_block(sim_name, "pqa_postproc", __file__, block_sources("pqa_postproc"), parameters)




@pytest.mark.rtl
def test_postproc_bench_catches_trunc_mutant() -> None:
    """The bench can fail: with PQA_MUTANT_TRUNC (truncating shift) it must report a mismatch."""
    with pytest.raises(AssertionError, match="cocotb tests failed"):
        check_block("icarus", "pqa_postproc", __file__, block_sources("pqa_postproc"),
                    PARAMS[1], defines={"PQA_MUTANT_TRUNC": 1})
