"""The prototype and table row layouts (``pqcompile.layout``; docs/isa.md, "On-chip buffers"): exact round
trips at narrow, odd and PQA lanes, the dense [c][k][v] / [c][k][m] bytes at one lane, and elements placed at
the byte the spec's formula gives."""

from __future__ import annotations

import numpy as np
import pytest

from pqcompile import layout
from pqcompile.spec import HwConfig, load

BASE = load().config("small").params
LANES = [(1, 1, 1, 1), (2, 3, 2, 1), (16, 16, 9, 1), (5, 4, 3, 1), (2, 1, 1, 3), (16, 1, 1, 32), (3, 1, 1, 12)]
SHAPES = [(5, 7, 3, 3), (1, 1, 1, 1), (16, 16, 9, 16), (3, 2, 5, 40)]


def _cfg(ns: int, np_: int, pl: int, nout: int, lutw: int = 16) -> HwConfig:
    return HwConfig("t", "", {**BASE, "NS": ns, "NP": np_, "PL": pl, "NOUT": nout, "LutW": lutw})


@pytest.mark.parametrize("lanes", LANES, ids=lambda x: "x".join(map(str, x)))
@pytest.mark.parametrize("lutw", [8, 12, 16])
def test_round_trip(lanes: tuple[int, int, int, int], lutw: int) -> None:
    cfg = _cfg(*lanes, lutw=lutw)
    rng = np.random.default_rng(sum(lanes) + lutw)
    for c, k, v, m in SHAPES:
        protos = rng.integers(-128, 128, (c, k, v))
        packed = layout.pack_protos(cfg, protos)
        assert len(packed) == layout.proto_bytes(cfg, c, k, v) == cfg.proto_rows(c, k, v) * cfg.proto_row_stride
        assert np.array_equal(layout.unpack_protos(cfg, packed, c, k, v), protos)
        lut = rng.integers(-(1 << (lutw - 1)), 1 << (lutw - 1), (c, k, m))
        table = layout.pack_lut(cfg, lut)
        assert len(table) == layout.lut_bytes(cfg, c, k, m) == cfg.lut_rows(c, k, m) * cfg.lut_row_stride
        assert np.array_equal(layout.unpack_lut(cfg, table, c, k, m), lut)


def test_one_lane_is_the_dense_layout() -> None:
    cfg = _cfg(1, 1, 1, 1, lutw=16)
    rng = np.random.default_rng(3)
    protos = rng.integers(-128, 128, (5, 7, 3))
    assert np.array_equal(layout.pack_protos(cfg, protos), protos.astype(np.int8).view(np.uint8).reshape(-1))
    lut = rng.integers(-(1 << 15), 1 << 15, (5, 7, 3))
    assert np.array_equal(layout.pack_lut(cfg, lut), lut.astype("<i2").view(np.uint8).reshape(-1))


def test_elements_sit_where_the_spec_says() -> None:
    """Prototype (ci, kk, e) at byte row*stride + ((s*NP + p)*PL + l); table entry (ci, kk, mi) at byte
    row*stride + s*lane + j*entry, with the rows of docs/isa.md."""
    cfg = _cfg(2, 3, 2, 3, lutw=16)
    c, k, v, m = 5, 7, 3, 8
    protos = np.arange(c * k * v).reshape(c, k, v) % 251 - 125
    packed = layout.pack_protos(cfg, protos).view(np.int8)
    gk, gv = -(-k // cfg.NP), -(-v // cfg.PL)
    for ci, kk, e in [(0, 0, 0), (4, 6, 2), (3, 4, 1)]:
        g, s, kg, p, eg, pl = ci // 2, ci % 2, kk // 3, kk % 3, e // 2, e % 2
        row = (g * gk + kg) * gv + eg
        assert packed[row * cfg.proto_row_stride + (s * cfg.NP + p) * cfg.PL + pl] == protos[ci, kk, e]
    lut = np.arange(c * k * m).reshape(c, k, m) * 7 - 900
    table = layout.pack_lut(cfg, lut)
    gm = -(-m // cfg.NOUT)
    for ci, kk, mi in [(0, 0, 0), (4, 6, 7), (3, 2, 5)]:
        row = ((ci // 2) * k + kk) * gm + mi // 3
        at = row * cfg.lut_row_stride + (ci % 2) * cfg.lut_lane_bytes + (mi % 3) * 2
        assert int.from_bytes(table[at : at + 2].tobytes(), "little", signed=True) == lut[ci, kk, mi]


@pytest.mark.parametrize("lanes", LANES, ids=lambda x: "x".join(map(str, x)))
@pytest.mark.parametrize("lutw", [12, 16])
def test_packed_round_trip(lanes: tuple[int, int, int, int], lutw: int) -> None:
    """``shape.pack``: byte entries, two table rows to a buffer row: half the rows (rounded up), exact."""
    cfg = _cfg(*lanes, lutw=lutw)
    rng = np.random.default_rng(7 * sum(lanes) + lutw)
    for c, k, _, m in SHAPES:
        lut = rng.integers(-128, 128, (c, k, m))
        table = layout.pack_lut(cfg, lut, pack=True)
        rows = cfg.lut_rows(c, k, m)
        assert cfg.lut_rows(c, k, m, pack=True) == (rows + 1) // 2
        assert len(table) == layout.lut_bytes(cfg, c, k, m, pack=True) == (rows + 1) // 2 * cfg.lut_row_stride
        assert np.array_equal(layout.unpack_lut(cfg, table, c, k, m, pack=True), lut)
        whole = np.zeros(layout.lut_bytes(cfg, c, k, m), np.uint8)
        whole[: len(table)] = table
        if c * k * m > 1:  # read unpacked: another table
            assert not np.array_equal(layout.unpack_lut(cfg, whole, c, k, m), lut)


def test_packed_entries_sit_where_the_spec_says() -> None:
    """Table row r's entry j of lane s at byte (r // 2) * stride + s * lane + (r % 2) * lane / 2 + j."""
    cfg = _cfg(2, 3, 2, 3, lutw=16)
    c, k, m = 5, 7, 8
    lut = (np.arange(c * k * m).reshape(c, k, m) * 37) % 256 - 128
    table = layout.pack_lut(cfg, lut, pack=True).view(np.int8)
    gm = -(-m // cfg.NOUT)
    for ci, kk, mi in [(0, 0, 0), (4, 6, 7), (3, 2, 5), (1, 3, 4)]:
        row = ((ci // 2) * k + kk) * gm + mi // 3
        at = (row // 2) * cfg.lut_row_stride + (ci % 2) * cfg.lut_lane_bytes + (row % 2) * cfg.lut_lane_bytes // 2
        assert table[at + mi % 3] == lut[ci, kk, mi]


def test_pack_needs_two_byte_entries_and_byte_values() -> None:
    with pytest.raises(ValueError, match="LutW=8"):
        layout.pack_lut(_cfg(2, 3, 2, 3, lutw=8), np.zeros((2, 2, 2), np.int64), pack=True)
    with pytest.raises(ValueError, match="signed byte"):
        layout.pack_lut(_cfg(2, 3, 2, 3, lutw=16), np.full((2, 2, 2), 128), pack=True)
