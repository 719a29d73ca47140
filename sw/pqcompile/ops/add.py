"""The residual add (``residual`` blocks; instruction ``add``): out = clamp((a * ma + b * mb + 2^(shift-1))
>> shift). The model's residual block is extracted here: its body and shortcut layer lists, then the add."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .. import ir, kernels, quantize
from ..errors import CompileError
from ..fgraph import Extraction, FOp
from ..isa import field_max
from ..plan import OpPlan, PInsn, buffer, check_post, quant, tensor
from ..spec import HwConfig
from .base import OpHandler, QuantContext, register


@dataclass
class FAdd(FOp):
    name: str
    a: str
    b: str
    out: str
    relu: bool = False
    layer_type = "residual"

    def inputs(self) -> list[str]:
        return [self.a, self.b]

    def rename_input(self, old: str, new: str) -> None:
        self.a = new if self.a == old else self.a
        self.b = new if self.b == old else self.b


@register
class AddHandler(OpHandler):
    name = "add"
    ir_type = ir.AddOp
    float_type = FAdd
    layer_types = ("residual",)

    def extract(self, ex: Extraction, lay: dict[str, Any], name: str, t: str) -> str:
        a = t
        for j, sub in enumerate(lay["body"]):
            a = ex.layer(sub, f"{name}.body.{j}", a)
        b = t
        for j, sub in enumerate(lay.get("shortcut", [])):
            b = ex.layer(sub, f"{name}.shortcut.{j}", b)
        ex.fg.ops.append(FAdd(name, a, b, name))
        return ex.fg.new_tensor(name, ex.fg.tensors[a].shape, ex.fg.tensors[a].arch_shape)

    def forward(self, op: FAdd, vals: dict[str, Tensor]) -> Tensor:
        return vals[op.a] + vals[op.b]

    def quantize(self, op: FAdd, q: QuantContext) -> tuple[ir.Op, Tensor, float]:
        ta, tb = q.tensors[op.a], q.tensors[op.b]
        y = q.ints[op.a].to(torch.float64) * ta.scale + q.ints[op.b].to(torch.float64) * tb.scale
        s_out = q.out_scale(op, y, max(ta.scale, tb.scale))
        ma, mb, shift = quantize.add_mult_shift(ta.scale / s_out, tb.scale / s_out)
        # the scale the integer output really has, from the larger (more precise) multiplier
        out_scale = ta.scale * (1 << shift) / ma if ma >= mb else tb.scale * (1 << shift) / mb
        aop = ir.AddOp(op.name, op.a, op.b, op.out, ma, mb, ir.Post(0, shift, op.relu, q.bits, q.unsigned),
                       info={"kind": "add", "a_scale": ta.scale, "b_scale": tb.scale, "out_scale": out_scale})
        return aop, kernels.post(self.accumulate(aop, q.ints, q.cfg.AccW), 1, shift, aop.post), out_scale

    def accumulate(self, op: ir.AddOp, vals: dict[str, Tensor], acc_w: int) -> Tensor:
        return vals[op.a] * op.ma + vals[op.b] * op.mb

    def post_mult(self, op: ir.AddOp) -> int:
        return 1  # the multipliers are ma and mb (quant.mult is unused)

    def report(self, op: ir.AddOp, cfg: HwConfig | None) -> dict[str, Any]:
        return {"ma": op.ma, "mb": op.mb, "table_bytes": 0}

    def check(self, cfg: HwConfig, g: ir.Graph, i: int, op: ir.AddOp) -> None:
        where = f"layer {i} ({op.name} add)"
        sa, sb, so = g.tensors[op.a].shape, g.tensors[op.b].shape, g.tensors[op.out].shape
        if not sa == sb == so:
            raise CompileError(f"{where}: operand shapes {sa}, {sb} and output {so} differ")
        if not (0 <= op.ma <= field_max("add", "ma") and 0 <= op.mb <= field_max("add", "mb")):
            raise CompileError(f"{where}: multipliers ma={op.ma} mb={op.mb} exceed the add instruction's fields")
        check_post(cfg, where, 0, op.post.shift, op.post.bits, op.post.unsigned)

    def plan(self, cfg: HwConfig, g: ir.Graph, i: int, op: ir.AddOp, n: int, strides: dict[str, int]) -> OpPlan:
        """The images' bytes in chunks that fit both buffers: a in ``act``, b in ``out``, the sum stored."""
        total = n * strides[op.out]
        chunk = min(cfg.ActBytes, cfg.OutBytes) // cfg.bus_bytes * cfg.bus_bytes
        insns = [quant(op.post, mult=0)]
        for off in range(0, total, chunk):
            nb = min(chunk, total - off)
            insns += [PInsn("load", {"buf": buffer("act"), "nbytes": nb, "addr": tensor(op.a, off)}),
                      PInsn("load", {"buf": buffer("out"), "nbytes": nb, "addr": tensor(op.b, off)}),
                      PInsn("add", {"n": nb, "ma": op.ma, "mb": op.mb}),
                      PInsn("store", {"nbytes": nb, "addr": tensor(op.out, off)})]
        return OpPlan(i, op, "add", insns, -(-total // chunk), {"chunk_bytes": chunk})

    def entry(self, cfg: HwConfig, g: ir.Graph, plan: OpPlan, addr: dict[str, int]) -> dict[str, Any]:
        op = plan.op
        assert isinstance(op, ir.AddOp)
        size = g.tensors[op.a].size
        return {"d": size, "m": size, "c": 0, "k": 0, "v": 0, "relu": op.post.relu, "unsigned": op.post.unsigned,
                "shift": op.post.shift, "bits": op.post.bits, "table_bytes": 0, "ma": op.ma, "mb": op.mb,
                "b_addr": addr[f"tensor:{op.b}"]}
