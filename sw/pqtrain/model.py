"""The PQA saved-model format (``.pt``) and the network builder.

A model file is a plain dict readable with ``torch.load(path, weights_only=True)``::

    {"format": "pqa-model", "version": 1, "arch": ARCH, "state_dict": {str: Tensor}, "meta": {...}}

ARCH is plain JSON: ``{"name": str, "input_shape": [64] | [C, H, W], "num_classes": N, "layers": [LAYER, ...]}``
where LAYER is one of (docs/file_formats.md has the full table)

- ``{"type": "pq_linear", "in_features": D, "out_features": M, "k": K, "v": v, "metric": "l2"|"l1"}``
- ``{"type": "linear", "in_features": D, "out_features": M}`` (plain float layer)
- ``{"type": "pq_conv2d", "in_channels", "out_channels", "kernel_size", "stride", "padding", "k", "v", "metric"}``
- ``{"type": "conv2d", "in_channels", "out_channels", "kernel_size", "stride", "padding"}`` (float)
- ``{"type": "batchnorm2d", "num_features": C}``
- ``{"type": "avgpool", "kernel_size", "stride", "padding", "ceil_mode"}`` / ``{"type": "maxpool", ...}``
- ``{"type": "global_avgpool"}`` ([C, H, W] -> [C])
- ``{"type": "pad_channels", "out_channels": C2, "stride": s}`` (ResNet option-A shortcut: subsample by s,
  zero-pad the channels)
- ``{"type": "residual", "body": [LAYER, ...], "shortcut": [LAYER, ...]}`` (y = body(x) + shortcut(x);
  an empty shortcut is the identity)
- ``{"type": "relu"}``, ``{"type": "flatten"}``

Linear and conv kinds take an optional ``"bias": bool`` (default true); ``stride`` defaults to 1 and
``padding`` to 0. state_dict keys are ``layers.<i>.<param>`` with ``i`` the index in the layer list, and
``layers.<i>.body.<j>.<param>`` / ``layers.<i>.shortcut.<j>.<param>`` inside a residual block.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .layers import METRICS, PQConv2d, PQLinear

FORMAT = "pqa-model"
VERSION = 1
LAYER_TYPES = ("pq_linear", "linear", "pq_conv2d", "conv2d", "batchnorm2d", "avgpool", "maxpool",
               "global_avgpool", "pad_channels", "residual", "relu", "flatten")


class ModelFormatError(ValueError):
    """A model file or architecture description that is missing, corrupt, unsafe or inconsistent."""


class Sequence(nn.Module):
    """Layers applied in order (the body of :class:`PQNet` and of residual branches)."""

    def __init__(self, layers: list[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class Residual(nn.Module):
    """y = body(x) + shortcut(x); parameters under ``body.<j>`` and ``shortcut.<j>``."""

    def __init__(self, body: list[nn.Module], shortcut: list[nn.Module]) -> None:
        super().__init__()
        self.body = nn.ModuleList(body)
        self.shortcut = nn.ModuleList(shortcut)

    def forward(self, x: Tensor) -> Tensor:
        y = x
        for layer in self.body:
            y = layer(y)
        s = x
        for layer in self.shortcut:
            s = layer(s)
        return y + s


class PadChannels(nn.Module):
    """ResNet option-A shortcut: x[:, :, ::stride, ::stride] zero-padded (both sides) to ``out_channels``."""

    def __init__(self, out_channels: int, stride: int) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        extra = self.out_channels - x.shape[1]
        return nn.functional.pad(x, (0, 0, 0, 0, extra // 2, extra - extra // 2))


class GlobalAvgPool(nn.Module):
    """[B, C, H, W] -> [B, C] (mean over the pixels)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=(2, 3))


class PQNet(Sequence):
    """A network of the layer kinds in :data:`LAYER_TYPES`."""

    def pq_layers(self) -> list[PQLinear]:
        """The PQ layers (PQLinear and PQConv2d) in execution order, residual bodies included."""
        return [m for m in self.modules() if isinstance(m, PQLinear)]

    def set_temperature(self, temperature: float) -> None:
        for m in self.pq_layers():
            m.temperature = temperature

    def set_assign_mode(self, mode: str) -> None:
        for m in self.pq_layers():
            m.assign_mode = mode


def _int_field(layer: dict[str, Any], key: str, where: str, default: int | None = None, minimum: int = 1) -> int:
    val = layer.get(key, default)
    if not isinstance(val, int) or isinstance(val, bool) or val < minimum:
        kind = "a positive" if minimum == 1 else "a non-negative"
        raise ModelFormatError(f"{where} ({layer.get('type')}): '{key}' must be {kind} integer, got {val!r}")
    return val


def _kernel(layer: dict[str, Any], where: str) -> tuple[int, int]:
    ks = layer.get("kernel_size")
    if isinstance(ks, list) and len(ks) == 2:
        kh = _int_field({"type": layer.get("type"), "k": ks[0]}, "k", where)
        kw = _int_field({"type": layer.get("type"), "k": ks[1]}, "k", where)
        return kh, kw
    k = _int_field(layer, "kernel_size", where)
    return k, k


def _pool_out(n: int, k: int, s: int, p: int, ceil_mode: bool) -> int:
    if ceil_mode:
        out = -(-(n + 2 * p - k) // s) + 1
        if (out - 1) * s >= n + p:  # torch's rule: the last window must start inside the input or left padding
            out -= 1
        return out
    return (n + 2 * p - k) // s + 1


def _infer(layers: Any, shape: list[int], where: str) -> list[int]:
    """Check a layer list against an input shape; return the output shape."""
    if not isinstance(layers, list):
        raise ModelFormatError(f"{where}: layers must be a list")
    for i, layer in enumerate(layers):
        at = f"{where}{i}"
        if not isinstance(layer, dict) or "type" not in layer:
            raise ModelFormatError(f"{at}: must be a dict with a 'type', got {layer!r}")
        kind = layer["type"]
        if kind not in LAYER_TYPES:
            raise ModelFormatError(f"{at}: unknown layer type {kind!r} (known: {', '.join(LAYER_TYPES)})")
        if kind in ("pq_linear", "pq_conv2d"):
            _int_field(layer, "k", at)
            _int_field(layer, "v", at)
            if layer.get("metric") not in METRICS:
                raise ModelFormatError(f"{at} ({kind}): metric must be one of {METRICS}, got {layer.get('metric')!r}")
        if kind in ("linear", "pq_linear", "conv2d", "pq_conv2d") and not isinstance(layer.get("bias", True), bool):
            raise ModelFormatError(f"{at} ({kind}): 'bias' must be a bool")
        if kind == "flatten":
            shape = [math.prod(shape)]
        elif kind in ("linear", "pq_linear"):
            d = _int_field(layer, "in_features", at)
            m = _int_field(layer, "out_features", at)
            if len(shape) != 1 or d != shape[0]:
                raise ModelFormatError(f"{at} ({kind}): in_features {d} but the previous layer gives {shape}")
            shape = [m]
        elif kind in ("conv2d", "pq_conv2d"):
            cin = _int_field(layer, "in_channels", at)
            cout = _int_field(layer, "out_channels", at)
            kh, kw = _kernel(layer, at)
            s = _int_field(layer, "stride", at, 1)
            p = _int_field(layer, "padding", at, 0, minimum=0)
            if len(shape) != 3 or shape[0] != cin:
                raise ModelFormatError(f"{at} ({kind}): in_channels {cin} but the previous layer gives {shape}")
            ho, wo = (shape[1] + 2 * p - kh) // s + 1, (shape[2] + 2 * p - kw) // s + 1
            if ho < 1 or wo < 1:
                raise ModelFormatError(f"{at} ({kind}): kernel larger than the padded input {shape}")
            shape = [cout, ho, wo]
        elif kind == "batchnorm2d":
            c = _int_field(layer, "num_features", at)
            if len(shape) != 3 or shape[0] != c:
                raise ModelFormatError(f"{at} (batchnorm2d): num_features {c} but the previous layer gives {shape}")
        elif kind in ("avgpool", "maxpool"):
            k = _int_field(layer, "kernel_size", at)
            s = _int_field(layer, "stride", at, k)
            p = _int_field(layer, "padding", at, 0, minimum=0)
            if not isinstance(layer.get("ceil_mode", False), bool):
                raise ModelFormatError(f"{at} ({kind}): 'ceil_mode' must be a bool")
            if len(shape) != 3 or 2 * p > k:
                raise ModelFormatError(f"{at} ({kind}): needs a [C, H, W] input and padding <= kernel_size / 2")
            cm = layer.get("ceil_mode", False)
            shape = [shape[0], _pool_out(shape[1], k, s, p, cm), _pool_out(shape[2], k, s, p, cm)]
        elif kind == "global_avgpool":
            if len(shape) != 3:
                raise ModelFormatError(f"{at} (global_avgpool): needs a [C, H, W] input, got {shape}")
            shape = [shape[0]]
        elif kind == "pad_channels":
            c2 = _int_field(layer, "out_channels", at)
            s = _int_field(layer, "stride", at, 1)
            if len(shape) != 3 or c2 < shape[0]:
                raise ModelFormatError(f"{at} (pad_channels): needs [C, H, W] with C <= out_channels, got {shape}")
            shape = [c2, -(-shape[1] // s), -(-shape[2] // s)]
        elif kind == "residual":
            a = _infer(layer.get("body"), shape, f"{at}.body.")
            b = _infer(layer.get("shortcut", []), shape, f"{at}.shortcut.")
            if a != b:
                raise ModelFormatError(f"{at} (residual): body gives {a} but shortcut gives {b}")
            shape = a
    return shape


def validate_arch(arch: Any) -> None:
    """Check an ARCH description (types, fields, shapes); raises :class:`ModelFormatError` naming the layer."""
    if not isinstance(arch, dict):
        raise ModelFormatError(f"arch must be a dict, got {type(arch).__name__}")
    try:
        json.dumps(arch)
    except (TypeError, ValueError) as exc:
        raise ModelFormatError(f"arch is not JSON-able: {exc}") from exc
    for key in ("name", "input_shape", "num_classes", "layers"):
        if key not in arch:
            raise ModelFormatError(f"arch lacks '{key}'")
    shape = arch["input_shape"]
    if not isinstance(shape, list) or not shape or not all(isinstance(s, int) and s > 0 for s in shape):
        raise ModelFormatError(f"arch 'input_shape' must be a list of positive integers, got {shape!r}")
    layers = arch["layers"]
    if not isinstance(layers, list) or not layers:
        raise ModelFormatError("arch 'layers' must be a non-empty list")
    out = _infer(layers, list(shape), "layer ")
    if out != [arch["num_classes"]]:
        raise ModelFormatError(f"the last layer gives {out} outputs but num_classes is {arch['num_classes']}")


def _build_layer(layer: dict[str, Any]) -> nn.Module:
    kind = layer["type"]
    bias = layer.get("bias", True)
    if kind == "pq_linear":
        return PQLinear(layer["in_features"], layer["out_features"], layer["k"], layer["v"], metric=layer["metric"],
                        bias=bias)
    if kind == "linear":
        return nn.Linear(layer["in_features"], layer["out_features"], bias=bias)
    if kind in ("conv2d", "pq_conv2d"):
        ks = layer["kernel_size"]
        ks = tuple(ks) if isinstance(ks, list) else ks
        s, p = layer.get("stride", 1), layer.get("padding", 0)
        if kind == "conv2d":
            return nn.Conv2d(layer["in_channels"], layer["out_channels"], ks, stride=s, padding=p, bias=bias)
        return PQConv2d(layer["in_channels"], layer["out_channels"], ks, layer["k"], layer["v"],
                        metric=layer["metric"], stride=s, padding=p, bias=bias)
    if kind == "batchnorm2d":
        return nn.BatchNorm2d(layer["num_features"])
    if kind in ("avgpool", "maxpool"):
        k = layer["kernel_size"]
        args = {"stride": layer.get("stride", k), "padding": layer.get("padding", 0),
                "ceil_mode": layer.get("ceil_mode", False)}
        return nn.AvgPool2d(k, **args) if kind == "avgpool" else nn.MaxPool2d(k, **args)
    if kind == "global_avgpool":
        return GlobalAvgPool()
    if kind == "pad_channels":
        return PadChannels(layer["out_channels"], layer.get("stride", 1))
    if kind == "residual":
        return Residual([_build_layer(x) for x in layer["body"]], [_build_layer(x) for x in layer.get("shortcut", [])])
    if kind == "relu":
        return nn.ReLU()
    return nn.Flatten()


def build(arch: dict[str, Any]) -> PQNet:
    """Build an (untrained) :class:`PQNet` from an ARCH description."""
    validate_arch(arch)
    return PQNet([_build_layer(layer) for layer in arch["layers"]])


def iter_layers(arch: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(module path, LAYER) for every layer, residual bodies and shortcuts included, in execution order."""

    def walk(layers: list[dict[str, Any]], prefix: str) -> Iterator[tuple[str, dict[str, Any]]]:
        for i, layer in enumerate(layers):
            yield f"{prefix}{i}", layer
            if layer["type"] == "residual":
                yield from walk(layer["body"], f"{prefix}{i}.body.")
                yield from walk(layer.get("shortcut", []), f"{prefix}{i}.shortcut.")

    return walk(arch["layers"], "layers.")


def save(model: nn.Module, arch: dict[str, Any], path: str | os.PathLike[str], meta: dict[str, Any]) -> None:
    """Write ``model`` to ``path`` in the pqa-model format, atomically (temp file + rename)."""
    validate_arch(arch)
    try:  # JSON round trip: plain dict/list/str/int/float only (weights_only refuses e.g. str subclasses)
        meta = json.loads(json.dumps(meta))
    except (TypeError, ValueError) as exc:
        raise ModelFormatError(f"meta is not JSON-able: {exc}") from exc
    arch = json.loads(json.dumps(arch))
    state = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    obj = {"format": FORMAT, "version": VERSION, "arch": arch, "state_dict": state, "meta": meta}
    _check_state(obj["state_dict"], arch)
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _check_state(state: Any, arch: dict[str, Any]) -> None:
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()):
        raise ModelFormatError("state_dict must map str keys to tensors")
    expected = {k: tuple(v.shape) for k, v in build(arch).state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ModelFormatError(f"state_dict does not match arch: missing keys {missing}, unexpected keys {unexpected}")
    for key, shape in expected.items():
        if tuple(state[key].shape) != shape:
            raise ModelFormatError(f"state_dict '{key}' has shape {list(state[key].shape)}, arch expects {list(shape)}")
        if key.endswith("num_batches_tracked"):  # BatchNorm's step counter is an integer
            if state[key].dtype != torch.int64:
                raise ModelFormatError(f"state_dict '{key}' has dtype {state[key].dtype}, expected torch.int64")
        elif not state[key].is_floating_point():
            raise ModelFormatError(f"state_dict '{key}' has dtype {state[key].dtype}, expected floating point")


def _reason(exc: BaseException) -> str:
    """The informative line of torch's weights_only error (it names the refused global)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for ln in lines:
        if "WeightsUnpickler error" in ln or "GLOBAL" in ln:
            return ln
    return lines[0] if lines else repr(exc)


def load_raw(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a model file without building the network. Raises :class:`ModelFormatError`."""
    path = Path(path)
    if not path.is_file():
        raise ModelFormatError(f"{path}: no such model file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ModelFormatError(
            f"{path}: refused: the file holds something other than tensors and plain data "
            f"(weights_only loading rejected it; nothing in it was executed): {_reason(exc)}"
        ) from exc
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, KeyError, TypeError,
            AttributeError, ImportError, IndexError, UnicodeDecodeError) as exc:
        raise ModelFormatError(f"{path}: not a readable model file (truncated or corrupt?): {exc}") from exc
    if not isinstance(obj, dict):
        raise ModelFormatError(f"{path}: expected a dict at top level, got {type(obj).__name__}")
    if obj.get("format") != FORMAT:
        raise ModelFormatError(f"{path}: format is {obj.get('format')!r}, expected {FORMAT!r}")
    if obj.get("version") != VERSION:
        raise ModelFormatError(f"{path}: version {obj.get('version')!r} is not supported (expected {VERSION})")
    for key in ("arch", "state_dict", "meta"):
        if key not in obj:
            raise ModelFormatError(f"{path}: lacks '{key}'")
    if not isinstance(obj["meta"], dict):
        raise ModelFormatError(f"{path}: 'meta' must be a dict")
    try:
        validate_arch(obj["arch"])
        _check_state(obj["state_dict"], obj["arch"])
    except ModelFormatError as exc:
        raise ModelFormatError(f"{path}: {exc}") from exc
    return obj


def load(path: str | os.PathLike[str]) -> tuple[PQNet, dict[str, Any], dict[str, Any]]:
    """Load a model file -> (network in eval mode, arch, meta). Raises :class:`ModelFormatError`."""
    obj = load_raw(path)
    model = build(obj["arch"])
    model.load_state_dict(obj["state_dict"], strict=True)
    model.eval()
    return model, obj["arch"], obj["meta"]
