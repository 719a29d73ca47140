"""Flatten (``flatten``): no op. Tensors are channels-last (h, w, ch); the next PQ layer's window reads them in
PyTorch's CHW flatten order, so only the shape PyTorch sees changes."""

from __future__ import annotations

from typing import Any

from ..errors import CompileError
from ..fgraph import Extraction
from .base import OpHandler, register


@register
class FlattenHandler(OpHandler):
    name = "flatten"
    layer_types = ("flatten",)

    def extract(self, ex: Extraction, lay: dict[str, Any], name: str, t: str) -> str:
        if ".body." in name or ".shortcut." in name:
            raise CompileError(f"{name} (flatten): a flatten inside a residual block is not supported")
        h, w, ch = ex.fg.tensors[t].shape
        ex.fg.tensors[t].arch_shape = (h * w * ch,)
        return t
