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
