"""The prototype buffer's row layout (docs/isa.md, "On-chip buffers"): the one packer and unpacker.

The encoder reads one row per cycle: for subspace group g (subspaces g*NS .. g*NS+NS-1), prototype group kg
(prototypes kg*NP .. kg*NP+NP-1) and element group eg (elements eg*PL .. eg*PL+PL-1), row
r = (g * ceil(k/NP) + kg) * ceil(v/PL) + eg holds element [s][p][l] = prototype (g*NS+s, kg*NP+p, eg*PL+l) at
byte r * stride + (s*NP + p)*PL + l (stride: :attr:`HwConfig.proto_row_stride`). Elements past c, k or v
are padding: written as 0 by :func:`pack_protos`, ignored by the encoder. With NS = NP = PL = 1 the layout
is the dense [c][k][v] of the narrow datapath.
"""

from __future__ import annotations

import numpy as np

from .spec import HwConfig


def _blocked_shape(cfg: HwConfig, c: int, k: int, v: int) -> tuple[int, int, int]:
    return -(-c // cfg.NS), -(-k // cfg.NP), -(-v // cfg.PL)


def proto_bytes(cfg: HwConfig, c: int, k: int, v: int) -> int:
    """Bytes of the prototype buffer that a `run` with c subspaces, k prototypes and v elements reads."""
    return cfg.proto_rows(c, k, v) * cfg.proto_row_stride


def pack_protos(cfg: HwConfig, protos: np.ndarray) -> np.ndarray:
    """The bytes of the prototype buffer (uint8, :func:`proto_bytes` long) for ``protos`` [c, k, v] int."""
    c, k, v = protos.shape
    ns, np_, pl = cfg.NS, cfg.NP, cfg.PL
    gc, gk, gv = _blocked_shape(cfg, c, k, v)
    full = np.zeros((gc * ns, gk * np_, gv * pl), np.int64)
    full[:c, :k, :v] = protos
    # [g][s][kg][p][eg][l] -> [g][kg][eg][s][p][l]
    rows = full.reshape(gc, ns, gk, np_, gv, pl).transpose(0, 2, 4, 1, 3, 5).reshape(gc * gk * gv, -1)
    eb = cfg.elem_bytes("proto")
    raw = rows.astype(f"<i{eb}").view(np.uint8).reshape(rows.shape[0], -1)
    out = np.zeros((rows.shape[0], cfg.proto_row_stride), np.uint8)
    out[:, : raw.shape[1]] = raw
    return out.reshape(-1)


def unpack_protos(cfg: HwConfig, buf: np.ndarray, c: int, k: int, v: int) -> np.ndarray:
    """The prototypes [c, k, v] (int64) that the encoder reads from the prototype buffer bytes ``buf``."""
    ns, np_, pl = cfg.NS, cfg.NP, cfg.PL
    gc, gk, gv = _blocked_shape(cfg, c, k, v)
    nrows = gc * gk * gv
    eb = cfg.elem_bytes("proto")
    rows = np.asarray(buf[: nrows * cfg.proto_row_stride], np.uint8).reshape(nrows, cfg.proto_row_stride)
    raw = np.ascontiguousarray(rows[:, : cfg.proto_row_bytes])
    elems = raw.view(f"<i{eb}").astype(np.int64)
    full = elems.reshape(gc, gk, gv, ns, np_, pl).transpose(0, 3, 1, 4, 2, 5).reshape(gc * ns, gk * np_, gv * pl)
    return full[:c, :k, :v]


def lut_bytes(cfg: HwConfig, c: int, k: int, m: int) -> int:
    """Bytes of the table buffer that a `run` with c subspaces, k prototypes and m outputs reads."""
    return cfg.lut_rows(c, k, m) * cfg.lut_row_stride


def _lut_entries(cfg: HwConfig, lut: np.ndarray) -> np.ndarray:
    """Entries as elem_bytes little-endian two's-complement bytes: [..., eb]."""
    eb = cfg.elem_bytes("lut")
    v = lut.astype(np.int64) & ((1 << (8 * eb)) - 1)
    return np.stack([(v >> (8 * i)) & 0xFF for i in range(eb)], axis=-1).astype(np.uint8)


def pack_lut(cfg: HwConfig, lut: np.ndarray) -> np.ndarray:
    """The bytes of the table buffer (uint8, :func:`lut_bytes` long) for ``lut`` [c, k, m] int.

    Row r = (g*k + kk) * ceil(m/NOUT) + mg holds NS lane words, lane s (subspace g*NS+s) at byte
    s * lane_bytes of the row: entries [kk][mg*NOUT + j] of that subspace for j < NOUT, one after the other
    (docs/isa.md, "On-chip buffers"). With NS = NOUT = 1 the layout is the dense [c][k][m]."""
    c, k, m = lut.shape
    ns, no, eb = cfg.NS, cfg.NOUT, cfg.elem_bytes("lut")
    gc, gm = -(-c // ns), -(-m // no)
    full = np.zeros((gc * ns, k, gm * no), np.int64)
    full[:c, :, :m] = lut
    rows = full.reshape(gc, ns, k, gm, no).transpose(0, 2, 3, 1, 4)  # [g][kk][mg][s][j]
    ent = _lut_entries(cfg, rows).reshape(gc * k * gm, ns, no * eb)
    lanes = np.zeros((ent.shape[0], ns, cfg.lut_lane_bytes), np.uint8)
    lanes[:, :, : no * eb] = ent
    out = np.zeros((ent.shape[0], cfg.lut_row_stride), np.uint8)
    out[:, : ns * cfg.lut_lane_bytes] = lanes.reshape(ent.shape[0], -1)
    return out.reshape(-1)


def unpack_lut(cfg: HwConfig, buf: np.ndarray, c: int, k: int, m: int) -> np.ndarray:
    """The table [c, k, m] (int64, sign-extended from LutW bits) that the look-up unit reads from ``buf``."""
    ns, no, eb = cfg.NS, cfg.NOUT, cfg.elem_bytes("lut")
    gc, gm = -(-c // ns), -(-m // no)
    nrows = gc * k * gm
    rows = np.asarray(buf[: nrows * cfg.lut_row_stride], np.uint8).reshape(nrows, cfg.lut_row_stride)
    lanes = rows[:, : ns * cfg.lut_lane_bytes].reshape(nrows, ns, cfg.lut_lane_bytes)[:, :, : no * eb]
    raw = lanes.reshape(nrows, ns, no, eb).astype(np.int64)
    val = sum(raw[..., i] << (8 * i) for i in range(eb))
    bits = cfg.LutW
    val = ((val & ((1 << bits) - 1)) ^ (1 << (bits - 1))) - (1 << (bits - 1))  # sign-extend from LutW bits
    full = val.reshape(gc, k, gm, ns, no).transpose(0, 3, 1, 2, 4).reshape(gc * ns, k, gm * no)
    return full[:c, :, :m]
