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


def packs(cfg: HwConfig, lut: np.ndarray) -> bool:
    """The table goes to the hardware packed (``shape.pack``: byte entries, two table rows to a buffer row,
    half the bytes): the configuration's entries are wider than a byte and this table's fit a signed byte
    (a table quantized to 8 bits or fewer, ``pqcompile --lut-bits``)."""
    return cfg.can_pack and fits_byte(lut)


def lut_bytes(cfg: HwConfig, c: int, k: int, m: int, pack: bool = False) -> int:
    """Bytes of the table buffer that a `run` with c subspaces, k prototypes and m outputs reads (``pack``:
    ``shape.pack``, byte entries two table rows to a buffer row)."""
    return cfg.lut_rows(c, k, m, pack) * cfg.lut_row_stride


def _lut_entries(lut: np.ndarray, eb: int) -> np.ndarray:
    """Entries as ``eb`` little-endian two's-complement bytes: [..., eb]."""
    v = lut.astype(np.int64) & ((1 << (8 * eb)) - 1)
    return np.stack([(v >> (8 * i)) & 0xFF for i in range(eb)], axis=-1).astype(np.uint8)


def fits_byte(lut: np.ndarray) -> bool:
    """Every entry of ``lut`` fits a signed byte: the entries a packed table (``shape.pack``) can hold."""
    return bool(lut.min(initial=0) >= -128 and lut.max(initial=0) <= 127)


def _check_pack(cfg: HwConfig, pack: bool) -> None:
    if pack and not cfg.can_pack:
        raise ValueError(f"shape.pack needs table entries wider than a byte (config '{cfg.name}': LutW={cfg.LutW})")


def pack_lut(cfg: HwConfig, lut: np.ndarray, pack: bool = False) -> np.ndarray:
    """The bytes of the table buffer (uint8, :func:`lut_bytes` long) for ``lut`` [c, k, m] int.

    Row r = (g*k + kk) * ceil(m/NOUT) + mg holds NS lane words, lane s (subspace g*NS+s) at byte
    s * lane_bytes of the row: entries [kk][mg*NOUT + j] of that subspace for j < NOUT, one after the other
    (docs/isa.md, "On-chip buffers"). With NS = NOUT = 1 the layout is the dense [c][k][m]. With ``pack``
    (``shape.pack``; the entries must fit a signed byte) the entries are bytes and table rows 2r and 2r+1
    share buffer row r, row 2r+1 from byte lane_bytes/2 of every lane word."""
    _check_pack(cfg, pack)
    c, k, m = lut.shape
    ns, no = cfg.NS, cfg.NOUT
    eb = 1 if pack else cfg.elem_bytes("lut")
    if pack and not fits_byte(lut):
        raise ValueError("a packed table's entries must fit a signed byte")
    gc, gm = -(-c // ns), -(-m // no)
    full = np.zeros((gc * ns, k, gm * no), np.int64)
    full[:c, :, :m] = lut
    rows = full.reshape(gc, ns, k, gm, no).transpose(0, 2, 3, 1, 4)  # [g][kk][mg][s][j]
    nrows = gc * k * gm
    ent = _lut_entries(rows, eb).reshape(nrows, ns, no * eb)
    lane = cfg.lut_lane_bytes
    if pack:  # [row pair][half][s][j] -> [row pair][s][half * lane/2 + j]
        pairs = np.zeros((-(-nrows // 2) * 2, ns, no), np.uint8)
        pairs[:nrows] = ent
        halves = np.zeros((pairs.shape[0] // 2, ns, 2, lane // 2), np.uint8)
        halves[:, :, :, :no] = pairs.reshape(-1, 2, ns, no).transpose(0, 2, 1, 3)
        lanes = halves.reshape(-1, ns, lane)
    else:
        lanes = np.zeros((nrows, ns, lane), np.uint8)
        lanes[:, :, : no * eb] = ent
    out = np.zeros((lanes.shape[0], cfg.lut_row_stride), np.uint8)
    out[:, : ns * lane] = lanes.reshape(lanes.shape[0], -1)
    return out.reshape(-1)


def unpack_lut(cfg: HwConfig, buf: np.ndarray, c: int, k: int, m: int, pack: bool = False) -> np.ndarray:
    """The table [c, k, m] (int64, sign-extended from LutW bits, or from 8 with ``pack``) that the look-up
    unit reads from ``buf``."""
    _check_pack(cfg, pack)
    ns, no = cfg.NS, cfg.NOUT
    eb = 1 if pack else cfg.elem_bytes("lut")
    gc, gm = -(-c // ns), -(-m // no)
    nrows = gc * k * gm
    brows = cfg.lut_rows(c, k, m, pack)
    lane = cfg.lut_lane_bytes
    rows = np.asarray(buf[: brows * cfg.lut_row_stride], np.uint8).reshape(brows, cfg.lut_row_stride)
    lanes = rows[:, : ns * lane].reshape(brows, ns, lane)
    if pack:  # [row pair][s][half][j] -> [table row][s][j]
        lanes = lanes.reshape(brows, ns, 2, lane // 2)[..., :no].transpose(0, 2, 1, 3).reshape(2 * brows, ns, no)
        lanes = lanes[:nrows]
    else:
        lanes = lanes[:, :, : no * eb]
    raw = lanes.reshape(nrows, ns, no, eb).astype(np.int64)
    val = sum(raw[..., i] << (8 * i) for i in range(eb))
    bits = 8 if pack else cfg.LutW
    val = ((val & ((1 << bits) - 1)) ^ (1 << (bits - 1))) - (1 << (bits - 1))  # sign-extend
    full = val.reshape(gc, k, gm, ns, no).transpose(0, 3, 1, 2, 4).reshape(gc * ns, k, gm * no)
    return full[:c, :, :m]
