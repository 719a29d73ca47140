"""PQA's analytical cycle formula, per op, for a configuration's lanes (NS, NP, PL, NOUT).

The formula of the PQA paper for a PQ op (linear, conv, flatten-linear): each output column (an output pixel
of one image) takes ceil(C / NS) groups of NS subspaces; a group costs the longer of its encoding,
ceil(v / PL) * ceil(K / NP) cycles (NS lanes of NP distance units of PL elements each), and its look-up,
ceil(M / NOUT) cycles (NOUT output lanes), the two overlapped:

    cycles = columns * ceil(C / NS) * max(ceil(v / PL) * ceil(K / NP), ceil(M / NOUT))

The vector ops take NOUT channels of one pixel per cycle (the post-processing lanes): ``add`` costs
pixels * ceil(ch / NOUT), ``pool`` input pixels * ceil(ch / NOUT). At NS = NP = PL = NOUT = 1 the formula
gives C * max(K*v, M) per column: today's narrow datapath does the same work serially, C*K*v + C*M + 5 cycles
per column (``sim.compute_estimate``), and one cycle per element of an add or pool. Compute only: moving
tables and activations is ``bytes / bytes per cycle`` (the roofline's memory side,
benchmarks/bench_resnet20.py). Used by the ResNet-20 benchmark and by the compiler's report (``formula``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

PQ_KINDS = ("linear", "conv", "flatten-linear")
LANES = ("NS", "NP", "PL", "NOUT")


def _ceil(a: int, b: int) -> int:
    return -(-int(a) // int(b))


def pq_cycles(columns: int, c: int, k: int, v: int, m: int, ns: int = 1, np_: int = 1, pl: int = 1,
              nout: int = 1) -> int:
    """PQA's formula for a PQ op: ``columns * ceil(c/ns) * max(ceil(v/pl) * ceil(k/np), ceil(m/nout))``."""
    if min(columns, c, k, v, m) < 0 or min(ns, np_, pl, nout) < 1:
        raise ValueError(f"pq_cycles: bad shape or lanes {columns, c, k, v, m, ns, np_, pl, nout}")
    return columns * _ceil(c, ns) * max(_ceil(v, pl) * _ceil(k, np_), _ceil(m, nout))


def vec_cycles(pixels: int, channels: int, nout: int = 1) -> int:
    """The formula of a vector op (``add``, ``pool``): NOUT channels of one pixel per cycle."""
    if min(pixels, channels) < 0 or nout < 1:
        raise ValueError(f"vec_cycles: bad shape or lanes {pixels, channels, nout}")
    return pixels * _ceil(channels, nout)


def columns(layer: Mapping[str, Any], images: int = 1) -> int:
    """Output pixels x images of a manifest layer entry (``out_shape`` [h, w, ch]): a PQ op's columns."""
    h, w, _ = (int(x) for x in layer["out_shape"])
    return h * w * int(images)


def op_cycles(params: Mapping[str, int], layer: Mapping[str, Any], images: int = 1) -> int:
    """PQA's formula for one op of a build (a manifest ``layers`` entry) over ``images`` images at the lanes
    of ``params`` (a configuration's parameters: ``HwConfig.params`` or a manifest's ``config_params``):
    :func:`pq_cycles` for a PQ op (linear, conv, flatten-linear), :func:`vec_cycles` over the output pixels
    of an ``add`` and the input pixels of a ``pool``."""
    kind = layer["kind"]
    ns, np_, pl, nout = (int(params[k]) for k in LANES)
    if kind in PQ_KINDS:
        return pq_cycles(columns(layer, images), int(layer["c"]), int(layer["k"]), int(layer["v"]),
                         int(layer["out_shape"][2]), ns, np_, pl, nout)
    if kind == "add":
        return vec_cycles(columns(layer, images), int(layer["out_shape"][2]), nout)
    if kind == "pool":
        h, w, ch = (int(x) for x in layer["in_shape"])
        return vec_cycles(h * w * int(images), ch, nout)
    raise ValueError(f"op_cycles: no formula for op kind {kind!r}")
