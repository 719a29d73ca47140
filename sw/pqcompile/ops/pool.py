"""Global average pooling (``global_avgpool``; instruction ``pool``): out[ci] = clamp((sum_p x[p, ci] * mult
+ rnd) >> shift), the 1/(h*w) of the average folded into mult / 2^shift."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .. import ir, kernels, quantize
from ..errors import CompileError
from ..fgraph import Extraction, FOp
from ..plan import OpPlan, PInsn, buffer, channel_blocks, check_post, quant, tensor
from ..spec import HwConfig
from .base import OpHandler, QuantContext, register


@dataclass
class FPool(FOp):
    """Global average pooling: (h, w, ch) -> (1, 1, ch)."""

    name: str
    inp: str
    out: str
    relu: bool = False
    layer_type = "global_avgpool"


@register
class PoolHandler(OpHandler):
    name = "pool"
    ir_type = ir.PoolOp
    float_type = FPool
    layer_types = ("global_avgpool",)

    def extract(self, ex: Extraction, lay: dict[str, Any], name: str, t: str) -> str:
        ex.fg.ops.append(FPool(name, t, name))
        return ex.fg.new_tensor(name, (1, 1, ex.fg.tensors[t].shape[2]), (ex.fg.tensors[t].shape[2],))

    def forward(self, op: FPool, vals: dict[str, Tensor]) -> Tensor:
        return vals[op.inp].mean(dim=(1, 2), keepdim=True)

    def nonneg(self, op: FPool, nonneg: dict[str, bool]) -> bool:
        return nonneg[op.inp]  # the mean of a non-negative tensor

    def quantize(self, op: FPool, q: QuantContext) -> tuple[ir.Op, Tensor, float]:
        ti = q.tensors[op.inp]
        h, w, _ = ti.shape
        pop = ir.PoolOp(op.name, op.inp, op.out, ir.Post(1, 0, op.relu, q.bits, q.unsigned))
        acc = self.accumulate(pop, q.ints, q.cfg.AccW)
        s_out = q.out_scale(op, acc.to(torch.float64) * (ti.scale / (h * w)), ti.scale)
        mult, shift = quantize.mult_shift(ti.scale / (h * w) / s_out)
        out_scale = ti.scale / (h * w) * (1 << shift) / mult
        pop.post = ir.Post(mult, shift, op.relu, q.bits, q.unsigned)
        pop.info = {"kind": "global_avgpool", "in_scale": ti.scale, "out_scale": out_scale}
        return pop, kernels.post(acc, mult, shift, pop.post), out_scale

    def accumulate(self, op: ir.PoolOp, vals: dict[str, Tensor], acc_w: int) -> Tensor:
        return vals[op.inp].sum(dim=(1, 2), keepdim=True)

    def report(self, op: ir.PoolOp, cfg: HwConfig | None) -> dict[str, Any]:
        return {"mult": op.post.mult, "table_bytes": 0}

    def check(self, cfg: HwConfig, g: ir.Graph, i: int, op: ir.PoolOp) -> None:
        h, w, ch = g.tensors[op.inp].shape
        out = g.tensors[op.out]
        where = f"layer {i} ({op.name} pool)"
        if out.shape != (1, 1, ch):
            raise CompileError(f"{where}: output tensor shape {out.shape}, pooling gives {(1, 1, ch)}")
        channel_blocks(cfg, g, op.inp)  # a fmap beyond the act buffer: pooled in channel blocks, or refused
        if ch > cfg.OutBytes:
            raise CompileError(f"{where}: {ch} channels exceed OutBytes={cfg.OutBytes}")
        check_post(cfg, where, op.post.mult, op.post.shift, op.post.bits, op.post.unsigned)

    def per_image(self, cfg: HwConfig, g: ir.Graph, op: ir.PoolOp, n: int) -> bool:
        return True

    def plan(self, cfg: HwConfig, g: ir.Graph, i: int, op: ir.PoolOp, n: int, strides: dict[str, int]) -> OpPlan:
        """Per image: the whole fmap loaded, pooled, the channels stored; a fmap beyond the act buffer block by
        block (:func:`pqcompile.plan.channel_blocks`: its producer stored it channel-blocked), each block's
        channels stored at their offset."""
        h, w, ch = g.tensors[op.inp].shape
        s_in, s_out = strides[op.inp], strides[op.out]
        blocks = channel_blocks(cfg, g, op.inp) or [(0, ch)]
        insns = [PInsn("fmap", {"h": h, "w": w, "ch": blocks[0][1]}), quant(op.post)]
        last = blocks[0][1]
        for im in range(n):
            for c0, c1 in blocks:
                if c1 - c0 != last:
                    insns.append(PInsn("fmap", {"h": h, "w": w, "ch": c1 - c0}))
                    last = c1 - c0
                insns += [PInsn("load", {"buf": buffer("act"), "nbytes": h * w * (c1 - c0),
                                         "addr": tensor(op.inp, im * s_in + c0 * h * w)}),
                          PInsn("pool", {}),
                          PInsn("store", {"nbytes": c1 - c0, "addr": tensor(op.out, im * s_out + c0)})]
        info = {"images": n, **({"channel_blocks": [list(bl) for bl in blocks]} if len(blocks) > 1 else {})}
        return OpPlan(i, op, "pool", insns, n * len(blocks), info)

    def entry(self, cfg: HwConfig, g: ir.Graph, plan: OpPlan, addr: dict[str, int]) -> dict[str, Any]:
        op = plan.op
        assert isinstance(op, ir.PoolOp)
        return {"d": g.tensors[op.inp].size, "m": g.tensors[op.out].shape[2], "c": 0, "k": 0, "v": 0,
                "relu": op.post.relu, "unsigned": op.post.unsigned, "shift": op.post.shift, "bits": op.post.bits,
                "table_bytes": 0, "mult": op.post.mult}
