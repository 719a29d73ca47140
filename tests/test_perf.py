"""PQA's cycle formula (pqcompile.perf): the formula by hand, its lanes, the manifest ops it covers, and the
figure of the issue (ResNet-20's 18 3x3 convs at NS=16, NP=16, PL=9, NOUT=32: 11,776 cycles)."""

from __future__ import annotations

import pytest

from pqcompile import perf

PQA = {"NS": 16, "NP": 16, "PL": 9, "NOUT": 32}
NARROW = {"NS": 1, "NP": 1, "PL": 1, "NOUT": 1}


def test_pq_formula_by_hand() -> None:
    # columns * ceil(C/NS) * max(ceil(v/PL) * ceil(K/NP), ceil(M/NOUT))
    assert perf.pq_cycles(10, 16, 16, 9, 16, 16, 16, 9, 32) == 10 * 1 * max(1 * 1, 1)
    assert perf.pq_cycles(1, 33, 17, 10, 65, 16, 16, 9, 32) == 3 * max(2 * 2, 3)  # every ceiling partial
    assert perf.pq_cycles(1, 4, 2, 3, 100, 2, 3, 2, 3) == 2 * max(2 * 1, 34)  # look-up bound
    assert perf.pq_cycles(7, 5, 16, 9, 16) == 7 * 5 * 144  # one lane each: C * max(K*v, M) per column
    assert perf.vec_cycles(64, 64, 32) == 128 and perf.vec_cycles(5, 3) == 15
    with pytest.raises(ValueError, match="bad shape or lanes"):
        perf.pq_cycles(1, 1, 1, 1, 1, ns=0)


def _conv(cin: int, cout: int, hw: int, k: int = 16, v: int = 9, ks: int = 3) -> dict:
    """A manifest layer entry of a conv with ks x ks kernels over cin channels, hw x hw output pixels."""
    return {"kind": "conv", "c": -(-cin * ks * ks // v), "k": k, "v": v, "in_shape": [hw, hw, cin],
            "out_shape": [hw, hw, cout]}


def resnet20_convs() -> list[dict]:
    """ResNet-20's 18 3x3 convs (the three stages after the host stem), as PQA models them (K=16, v=9)."""
    out = []
    for cin, cout, hw in ((16, 16, 32), (16, 32, 16), (32, 64, 8)):
        out += [_conv(cin, cout, hw)] + [_conv(cout, cout, hw) for _ in range(5)]
    return out


def test_resnet20_at_pqa_lanes_is_the_paper_figure() -> None:
    convs = resnet20_convs()
    assert len(convs) == 18
    assert sum(perf.op_cycles(PQA, lay) for lay in convs) == 11_776
    # the narrow datapath's formula (one lane each) for the same convs, per image, and for a batch of 4
    narrow = sum(perf.op_cycles(NARROW, lay) for lay in convs)
    assert narrow == sum(lay["out_shape"][0] ** 2 * lay["c"] * max(16 * 9, lay["out_shape"][2]) for lay in convs)
    assert sum(perf.op_cycles(NARROW, lay, 4) for lay in convs) == 4 * narrow


def test_vector_ops_and_columns() -> None:
    add = {"kind": "add", "c": 0, "k": 0, "v": 0, "in_shape": [8, 8, 64], "out_shape": [8, 8, 64]}
    pool = {"kind": "pool", "c": 0, "k": 0, "v": 0, "in_shape": [8, 8, 64], "out_shape": [1, 1, 64]}
    lin = {"kind": "linear", "c": 16, "k": 16, "v": 4, "in_shape": [1, 1, 64], "out_shape": [1, 1, 10]}
    assert perf.op_cycles(PQA, add) == 64 * 2 and perf.op_cycles(NARROW, add, 3) == 3 * 64 * 64
    assert perf.op_cycles(PQA, pool) == 64 * 2 and perf.columns(pool, 5) == 5
    assert perf.op_cycles(PQA, lin, 450) == 450 * 1 * max(1 * 1, 1) and perf.columns(lin, 450) == 450
    with pytest.raises(ValueError, match="no formula for op kind 'scan'"):
        perf.op_cycles(PQA, {**add, "kind": "scan"})
