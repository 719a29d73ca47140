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

What the reader (:func:`load_raw`) accepts, so that a hostile file can neither run code nor exhaust memory
or time (everything is checked before the network is built; a refusal is a :class:`ModelFormatError` whose
one-line message names the file and the field):

- the file: a regular file of 1 byte .. :data:`MAX_FILE_BYTES` (2 GiB), a zip archive as ``torch.save``
  writes it (``<name>/data.pkl`` and the tensor records) with *stored* (uncompressed) entries only, so that
  no entry expands beyond the file; read with ``weights_only=True`` (no pickled code or class is run).
- ``arch`` and ``meta``: plain JSON: dicts with string keys, lists, strings (valid Unicode), integers in
  [-2^63, 2^63), finite floats, booleans and None; at most :data:`MAX_JSON_NODES` (2^20) values each, nested
  at most :data:`MAX_JSON_DEPTH` (32) levels. Errors name the key path (``meta.foo``, ``arch.layers[2]``).
- ``arch["name"]``: 1 .. :data:`MAX_NAME_CHARS` (200) printable characters (any script; no control
  characters, newlines or tabs).
- declared sizes (checked while the shapes are inferred, before anything is allocated):
  ``input_shape`` 1 to 4 positive integers; every activation (the input, each layer's output and the padded
  input of a conv or pool) at most :data:`MAX_ACTIVATION` (2^24) elements per input;
  ``in_features``, ``out_features``, ``in_channels``, ``out_channels``, ``num_features``, ``k`` and ``v`` at
  most :data:`MAX_DIM` (65536); ``kernel_size`` (each side), ``stride`` and ``padding`` at most
  :data:`MAX_WINDOW` (64); at most :data:`MAX_LAYERS` (1024) layers, residual bodies and shortcuts included;
  per layer and input, a conv's im2col columns (Ho*Wo*Cin*kh*kw), a PQ layer's distance work
  (columns x C x K x v) and its table (C x K x M) at most :data:`MAX_LAYER_WORK` (2^28) elements; the
  parameters of the whole network (what ``state_dict`` must hold) at most :data:`MAX_PARAMETERS` (2^28)
  elements.
- ``state_dict``: exactly the keys and shapes the arch implies (:func:`state_layout`; a missing key, an
  unexpected key or a shape mismatch is named with both shapes); every tensor a dense (strided,
  non-overlapping) CPU tensor that its storage holds whole, not sparse, nested, quantized or on another device;
  dtype float16, bfloat16, float32 or float64, except ``num_batches_tracked`` (batch norm), which is int64.

The writer (:func:`save`) checks the same, writes atomically (a temporary file in the same directory, then
``os.replace``) and never replaces an existing file that is not a PQA model file (:func:`check_output`).
"""

from __future__ import annotations

import json
import math
import os
import pickle
import stat
import tempfile
import warnings
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

# Caps on what a model file may declare (the module docstring says what each bounds)
MAX_FILE_BYTES = 1 << 31
MAX_JSON_NODES = 1 << 20
MAX_JSON_DEPTH = 32
MAX_NAME_CHARS = 200
MAX_INPUT_DIMS = 4
MAX_ACTIVATION = 1 << 24
MAX_DIM = 1 << 16
MAX_WINDOW = 64
MAX_LAYERS = 1024
MAX_LAYER_WORK = 1 << 28
MAX_PARAMETERS = 1 << 28
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_INT64_MIN, _INT64_END = -(1 << 63), 1 << 63

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



def _brief(value: Any, limit: int = 60) -> str:
    """A short description of a user value for a message: the repr of a scalar (cut), the type of the rest."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return "a very large integer"  # (repr of a huge int is slow, and refused beyond 4300 digits)
    if value is None or isinstance(value, (bool, int, float, str)):
        text = repr(value[:limit] if isinstance(value, str) else value)
        return text if len(text) <= limit else text[: limit - 3] + "..."
    if isinstance(value, Tensor):
        return f"a tensor {list(value.shape)}" if not value.is_nested else "a nested tensor"
    return f"a {type(value).__name__}"


def _key_path(where: str, key: str) -> str:
    """``meta.foo`` for an identifier-like key, ``meta['a b']`` otherwise."""
    if key and len(key) <= 60 and key.isascii() and key.replace("_", "a").replace("-", "a").isalnum():
        return f"{where}.{key}"
    return f"{where}[{_brief(key)}]"


def _unicode_ok(s: str) -> bool:
    """False for a string with lone surrogates (pickle can produce them; they cannot be written as UTF-8)."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_json(value: Any, where: str) -> None:
    """Refuse anything in ``value`` that is not plain JSON (module docstring), naming the key path from ``where``.

    Bounded: at most :data:`MAX_JSON_NODES` values are visited (a pickle can share one list many times over,
    which a naive walk would expand exponentially) and at most :data:`MAX_JSON_DEPTH` levels."""
    budget = [MAX_JSON_NODES]

    def walk(v: Any, at: str, depth: int) -> None:
        budget[0] -= 1
        if budget[0] < 0:
            raise ModelFormatError(f"{where}: more than {MAX_JSON_NODES} values (a plain JSON description is small)")
        if depth > MAX_JSON_DEPTH:
            raise ModelFormatError(f"{at}: nested deeper than {MAX_JSON_DEPTH} levels")
        if v is None or isinstance(v, bool):
            return
        if isinstance(v, int):
            if not _INT64_MIN <= v < _INT64_END:
                raise ModelFormatError(f"{at}: integer out of the 64-bit range")
        elif isinstance(v, float):
            if not math.isfinite(v):
                raise ModelFormatError(f"{at}: {v!r} is not a finite number (JSON has no NaN or infinity)")
        elif isinstance(v, str):
            if not _unicode_ok(v):
                raise ModelFormatError(f"{at}: string is not valid Unicode (lone surrogate)")
        elif isinstance(v, list):
            for i, x in enumerate(v):
                walk(x, f"{at}[{i}]", depth + 1)
        elif isinstance(v, dict):
            for k, x in v.items():
                if not isinstance(k, str):
                    raise ModelFormatError(f"{at}: key {_brief(k)} is not a string (JSON object keys are strings)")
                if not _unicode_ok(k):
                    raise ModelFormatError(f"{at}: key {_brief(k)} is not valid Unicode (lone surrogate)")
                walk(x, _key_path(at, k), depth + 1)
        else:
            raise ModelFormatError(f"{at}: {_brief(v)} is not a JSON value (expected a dict, list, string, number, "
                                   "bool or null)")

    walk(value, where, 0)


def _int_field(layer: dict[str, Any], key: str, where: str, default: int | None = None, minimum: int = 1,
               maximum: int = MAX_DIM) -> int:
    val = layer.get(key, default)
    if not isinstance(val, int) or isinstance(val, bool) or val < minimum:
        kind = "a positive" if minimum == 1 else "a non-negative"
        raise ModelFormatError(f"{where} ({layer.get('type')}): '{key}' must be {kind} integer, got {_brief(val)}")
    if val > maximum:
        raise ModelFormatError(f"{where} ({layer.get('type')}): '{key}' is {val}; at most {maximum} is accepted")
    return val


def _kernel(layer: dict[str, Any], where: str) -> tuple[int, int]:
    ks = layer.get("kernel_size")
    if isinstance(ks, list) and len(ks) == 2:
        kind = layer.get("type")
        kh = _int_field({"type": kind, "kernel_size[0]": ks[0]}, "kernel_size[0]", where, maximum=MAX_WINDOW)
        kw = _int_field({"type": kind, "kernel_size[1]": ks[1]}, "kernel_size[1]", where, maximum=MAX_WINDOW)
        return kh, kw
    k = _int_field(layer, "kernel_size", where, maximum=MAX_WINDOW)
    return k, k


def _pool_out(n: int, k: int, s: int, p: int, ceil_mode: bool) -> int:
    if ceil_mode:
        out = -(-(n + 2 * p - k) // s) + 1
        if (out - 1) * s >= n + p:  # torch's rule: the last window must start inside the input or left padding
            out -= 1
        return out
    return (n + 2 * p - k) // s + 1


def _check_size(n: int, limit: int, at: str, kind: str, what: str) -> None:
    if n > limit:
        raise ModelFormatError(f"{at} ({kind}): {what} is {n} elements per input; at most {limit} is accepted")


def _pq_work(layer: dict[str, Any], at: str, kind: str, d: int, m: int, columns: int) -> None:
    """A PQ layer's table (C x K x M) and per-input distance work (columns x C x K x v) within MAX_LAYER_WORK."""
    k, v = layer["k"], layer["v"]
    c = -(-d // v)
    if c * k * m > MAX_LAYER_WORK:
        raise ModelFormatError(f"{at} ({kind}): its table C*K*M = {c}*{k}*{m} is {c * k * m} elements; at most "
                               f"{MAX_LAYER_WORK} is accepted")
    _check_size(columns * c * k * v, MAX_LAYER_WORK, at, kind, "the distance work (columns x C x K x v)")


def _infer(layers: Any, shape: list[int], where: str, count: list[int] | None = None) -> list[int]:
    """Check a layer list against an input shape; return the output shape. ``count``: layers seen so far."""
    count = [0] if count is None else count
    if not isinstance(layers, list):
        raise ModelFormatError(f"{where}: layers must be a list, got {_brief(layers)}")
    for i, layer in enumerate(layers):
        at = f"{where}{i}"
        count[0] += 1
        if count[0] > MAX_LAYERS:
            raise ModelFormatError(f"{at}: more than {MAX_LAYERS} layers (residual bodies and shortcuts included)")
        if not isinstance(layer, dict) or "type" not in layer:
            raise ModelFormatError(f"{at}: must be a dict with a 'type', got {_brief(layer)}")
        kind = layer["type"]
        if kind not in LAYER_TYPES:
            raise ModelFormatError(f"{at}: unknown layer type {_brief(kind)} (known: {', '.join(LAYER_TYPES)})")
        if kind in ("pq_linear", "pq_conv2d"):
            _int_field(layer, "k", at)
            _int_field(layer, "v", at)
            if layer.get("metric") not in METRICS:
                raise ModelFormatError(f"{at} ({kind}): metric must be one of {METRICS}, got "
                                       f"{_brief(layer.get('metric'))}")
        if kind in ("linear", "pq_linear", "conv2d", "pq_conv2d") and not isinstance(layer.get("bias", True), bool):
            raise ModelFormatError(f"{at} ({kind}): 'bias' must be a bool")
        if kind == "flatten":
            shape = [math.prod(shape)]
        elif kind in ("linear", "pq_linear"):
            d = _int_field(layer, "in_features", at)
            m = _int_field(layer, "out_features", at)
            if len(shape) != 1 or d != shape[0]:
                raise ModelFormatError(f"{at} ({kind}): in_features {d} but the previous layer gives {shape}")
            if kind == "pq_linear":
                _pq_work(layer, at, kind, d, m, 1)
            shape = [m]
        elif kind in ("conv2d", "pq_conv2d"):
            cin = _int_field(layer, "in_channels", at)
            cout = _int_field(layer, "out_channels", at)
            kh, kw = _kernel(layer, at)
            s = _int_field(layer, "stride", at, 1, maximum=MAX_WINDOW)
            p = _int_field(layer, "padding", at, 0, minimum=0, maximum=MAX_WINDOW)
            if len(shape) != 3 or shape[0] != cin:
                raise ModelFormatError(f"{at} ({kind}): in_channels {cin} but the previous layer gives {shape}")
            _check_size(cin * (shape[1] + 2 * p) * (shape[2] + 2 * p), MAX_ACTIVATION, at, kind, "the padded input")
            ho, wo = (shape[1] + 2 * p - kh) // s + 1, (shape[2] + 2 * p - kw) // s + 1
            if ho < 1 or wo < 1:
                raise ModelFormatError(f"{at} ({kind}): kernel larger than the padded input {shape}")
            _check_size(ho * wo * cin * kh * kw, MAX_LAYER_WORK, at, kind, "the im2col columns (Ho*Wo*Cin*kh*kw)")
            if kind == "pq_conv2d":
                _pq_work(layer, at, kind, cin * kh * kw, cout, ho * wo)
            shape = [cout, ho, wo]
        elif kind == "batchnorm2d":
            c = _int_field(layer, "num_features", at)
            if len(shape) != 3 or shape[0] != c:
                raise ModelFormatError(f"{at} (batchnorm2d): num_features {c} but the previous layer gives {shape}")
        elif kind in ("avgpool", "maxpool"):
            k = _int_field(layer, "kernel_size", at, maximum=MAX_WINDOW)
            s = _int_field(layer, "stride", at, k, maximum=MAX_WINDOW)
            p = _int_field(layer, "padding", at, 0, minimum=0, maximum=MAX_WINDOW)
            if not isinstance(layer.get("ceil_mode", False), bool):
                raise ModelFormatError(f"{at} ({kind}): 'ceil_mode' must be a bool")
            if len(shape) != 3 or 2 * p > k:
                raise ModelFormatError(f"{at} ({kind}): needs a [C, H, W] input and padding <= kernel_size / 2")
            _check_size(shape[0] * (shape[1] + 2 * p) * (shape[2] + 2 * p), MAX_ACTIVATION, at, kind,
                        "the padded input")
            cm = layer.get("ceil_mode", False)
            ho, wo = _pool_out(shape[1], k, s, p, cm), _pool_out(shape[2], k, s, p, cm)
            if ho < 1 or wo < 1:
                raise ModelFormatError(f"{at} ({kind}): kernel larger than the padded input {shape}")
            shape = [shape[0], ho, wo]
        elif kind == "global_avgpool":
            if len(shape) != 3:
                raise ModelFormatError(f"{at} (global_avgpool): needs a [C, H, W] input, got {shape}")
            shape = [shape[0]]
        elif kind == "pad_channels":
            c2 = _int_field(layer, "out_channels", at)
            s = _int_field(layer, "stride", at, 1, maximum=MAX_WINDOW)
            if len(shape) != 3 or c2 < shape[0]:
                raise ModelFormatError(f"{at} (pad_channels): needs [C, H, W] with C <= out_channels, got {shape}")
            shape = [c2, -(-shape[1] // s), -(-shape[2] // s)]
        elif kind == "residual":
            a = _infer(layer.get("body"), shape, f"{at}.body.", count)
            b = _infer(layer.get("shortcut", []), shape, f"{at}.shortcut.", count)
            if a != b:
                raise ModelFormatError(f"{at} (residual): body gives {a} but shortcut gives {b}")
            shape = a
        _check_size(math.prod(shape), MAX_ACTIVATION, at, kind, f"the output {shape}")
    return shape


def validate_arch(arch: Any) -> None:
    """Check an ARCH description (plain JSON, types, fields, caps, shapes); raises :class:`ModelFormatError`
    naming the field or the layer."""
    if not isinstance(arch, dict):
        raise ModelFormatError(f"arch must be a dict, got {_brief(arch)}")
    check_json(arch, "arch")
    for key in ("name", "input_shape", "num_classes", "layers"):
        if key not in arch:
            raise ModelFormatError(f"arch lacks '{key}'")
    name = arch["name"]
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME_CHARS or not name.isprintable():
        raise ModelFormatError(f"arch 'name' must be a string of 1 to {MAX_NAME_CHARS} printable characters "
                               f"(no control characters, newlines or tabs), got {_brief(name)}")
    shape = arch["input_shape"]
    if (not isinstance(shape, list) or not 1 <= len(shape) <= MAX_INPUT_DIMS
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape)):
        raise ModelFormatError(f"arch 'input_shape' must be a list of 1 to {MAX_INPUT_DIMS} positive integers, "
                               f"got {_brief(shape, 100)}")
    if math.prod(shape) > MAX_ACTIVATION:
        raise ModelFormatError(f"arch 'input_shape' {shape} is {math.prod(shape)} elements per input; at most "
                               f"{MAX_ACTIVATION} is accepted")
    num_classes = arch["num_classes"]
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ModelFormatError(f"arch 'num_classes' must be a positive integer, got {_brief(num_classes)}")
    layers = arch["layers"]
    if not isinstance(layers, list) or not layers:
        raise ModelFormatError("arch 'layers' must be a non-empty list")
    out = _infer(layers, list(shape), "layer ")
    if out != [arch["num_classes"]]:
        raise ModelFormatError(f"the last layer gives {out} outputs but num_classes is {num_classes}")
    total = sum(math.prod(shape) for shape, _ in state_layout(arch).values())
    if total > MAX_PARAMETERS:
        raise ModelFormatError(f"the network has {total} parameters (state_dict elements); at most {MAX_PARAMETERS} "
                               "is accepted")


def state_layout(arch: dict[str, Any]) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """key -> (shape, dtype) of every tensor in the state dict of ``build(arch)``, computed from the description
    alone (nothing is allocated). ``arch`` must have passed the layer checks of :func:`validate_arch`."""
    out: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
    f32 = torch.float32

    def walk(layers: list[dict[str, Any]], prefix: str) -> None:
        for i, layer in enumerate(layers):
            p = f"{prefix}{i}."
            kind = layer["type"]
            if kind in ("linear", "pq_linear", "conv2d", "pq_conv2d"):
                if kind in ("linear", "pq_linear"):
                    d, m = layer["in_features"], layer["out_features"]
                    weight: tuple[int, ...] = (m, d)
                else:
                    kh, kw = _kernel(layer, p)
                    cin, m = layer["in_channels"], layer["out_channels"]
                    d, weight = cin * kh * kw, (m, cin, kh, kw)
                if kind.startswith("pq_"):
                    out[p + "prototypes"] = ((-(-d // layer["v"]), layer["k"], layer["v"]), f32)
                out[p + "weight"] = (weight, f32)
                if layer.get("bias", True):
                    out[p + "bias"] = ((m,), f32)
            elif kind == "batchnorm2d":
                c = layer["num_features"]
                for name in ("weight", "bias", "running_mean", "running_var"):
                    out[p + name] = ((c,), f32)
                out[p + "num_batches_tracked"] = ((), torch.int64)
            elif kind == "residual":
                walk(layer["body"], p + "body.")
                walk(layer.get("shortcut", []), p + "shortcut.")

    walk(arch["layers"], "layers.")
    return out


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



def _dense_in_storage(t: Tensor) -> bool:
    """The tensor's elements are non-overlapping and dense (strides a permutation of contiguous ones) and lie
    within its storage (a stride-0 ``expand`` saved by torch.save is tiny on disk but huge as a view)."""
    if t.numel() == 0:
        return True
    step = 1
    for size, stride in sorted(zip(t.shape, t.stride(), strict=True), key=lambda p: p[1]):
        if size == 1:
            continue
        if stride != step:
            return False
        step *= size
    end = (t.storage_offset() + t.numel()) * t.element_size()
    return t.storage_offset() >= 0 and end <= t.untyped_storage().nbytes()


def _check_tensor(key: str, t: Any) -> None:
    at = f"state_dict {_brief(key)}"
    if not isinstance(t, Tensor):
        raise ModelFormatError(f"{at} must be a tensor, got {_brief(t)}")
    if t.is_nested:
        raise ModelFormatError(f"{at} is a nested tensor; expected a dense tensor")
    if t.layout != torch.strided:
        raise ModelFormatError(f"{at} has layout {t.layout} (sparse?); expected a dense (torch.strided) tensor")
    if t.is_quantized:
        raise ModelFormatError(f"{at} is a quantized tensor ({t.dtype}); expected a floating-point tensor")
    if t.device.type != "cpu":
        raise ModelFormatError(f"{at} is on device '{t.device}'; expected a CPU tensor with its data")
    if t.dtype not in (*FLOAT_DTYPES, torch.int64):
        raise ModelFormatError(f"{at} has dtype {t.dtype}; expected float16, bfloat16, float32 or float64 "
                               "(int64 for batch norm's num_batches_tracked)")
    n = math.prod(t.shape)
    if n > MAX_PARAMETERS:
        raise ModelFormatError(f"{at} has {n} elements; at most {MAX_PARAMETERS} is accepted")
    if not _dense_in_storage(t):
        raise ModelFormatError(f"{at} (shape {list(t.shape)}, strides {list(t.stride())}) is not a dense tensor "
                               "held whole by its storage (overlapping, expanded or out of bounds)")


def _some(items: list[str]) -> str:
    return ", ".join(items[:4]) + (f" and {len(items) - 4} more" if len(items) > 4 else "")


def _check_state(state: Any, arch: dict[str, Any]) -> None:
    """``state`` (the stored state dict) against the arch's :func:`state_layout`; ``arch`` must be valid."""
    if not isinstance(state, dict):
        raise ModelFormatError(f"state_dict must be a dict of str -> tensor, got {_brief(state)}")
    for key, t in state.items():
        if not isinstance(key, str) or not _unicode_ok(key):
            raise ModelFormatError(f"state_dict key {_brief(key)} is not a (valid Unicode) string")
        _check_tensor(key, t)
    layout = state_layout(arch)
    missing = [f"'{k}' (the arch gives {list(shape)})" for k, (shape, _) in layout.items() if k not in state]
    unexpected = [f"{_brief(k)} (stored {list(t.shape)})" for k, t in state.items() if k not in layout]
    if missing or unexpected:
        parts = ([f"missing keys {_some(missing)}"] if missing else []) + (
            [f"unexpected keys {_some(unexpected)}"] if unexpected else [])
        raise ModelFormatError(f"state_dict does not match arch: {'; '.join(parts)}")
    for key, (shape, dtype) in layout.items():
        t = state[key]
        if tuple(t.shape) != shape:
            raise ModelFormatError(f"state_dict '{key}' has shape {list(t.shape)}, the arch gives {list(shape)}")
        if dtype == torch.int64:  # BatchNorm's step counter is an integer
            if t.dtype != torch.int64:
                raise ModelFormatError(f"state_dict '{key}' has dtype {t.dtype}, expected torch.int64")
        elif t.dtype not in FLOAT_DTYPES:
            raise ModelFormatError(f"state_dict '{key}' has dtype {t.dtype}, expected floating point")


def _plain_json(value: Any, where: str) -> Any:
    """A JSON round trip of an in-memory value (tuples -> lists, str subclasses -> str: weights_only loading
    refuses such types), then :func:`check_json`."""
    try:
        value = json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError, RecursionError) as exc:
        raise ModelFormatError(f"{where} is not plain JSON: {exc}") from None
    check_json(value, where)
    return value


def is_model_file(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a readable PQA model file (any version; its content is not validated)."""
    try:
        obj = _read(Path(path))
    except ModelFormatError:
        return False
    return isinstance(obj, dict) and isinstance(obj.get("format"), str) and obj["format"] == FORMAT


def check_output(path: str | os.PathLike[str]) -> None:
    """Refuse an output path that :func:`save` must not write: a directory, a path in a missing or unwritable
    directory, or an existing file that is not a PQA model file (:func:`save` never replaces what it did not write).
    Raises :class:`ModelFormatError` naming the path."""
    p = Path(path)
    if p.is_dir():
        raise ModelFormatError(f"{p}: is a directory; give the model file to write (e.g. {p / 'model.pt'})")
    parent = p.parent
    if not parent.is_dir():
        raise ModelFormatError(f"{p}: directory '{parent}' does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ModelFormatError(f"{p}: directory '{parent}' is not writable")
    if os.path.lexists(p) and not is_model_file(p):
        raise ModelFormatError(f"{p}: exists and is not a PQA model file; refusing to overwrite it (remove it or "
                               "choose another name)")


def save(model: nn.Module, arch: dict[str, Any], path: str | os.PathLike[str], meta: dict[str, Any]) -> None:
    """Write ``model`` to ``path`` in the pqa-model format, atomically (temp file in the same directory +
    ``os.replace``: an interrupted write leaves the old file, if any, and no partial one). Refuses
    (:class:`ModelFormatError`) what :func:`check_output` refuses, and a model, arch or meta the reader would."""
    if not isinstance(meta, dict):
        raise ModelFormatError(f"meta must be a dict, got {_brief(meta)}")
    meta = _plain_json(meta, "meta")
    arch = _plain_json(arch, "arch")
    validate_arch(arch)
    path = Path(path)
    check_output(path)
    state = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    _check_state(state, arch)
    obj = {"format": FORMAT, "version": VERSION, "arch": arch, "state_dict": state, "meta": meta}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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


def _reason(exc: BaseException) -> str:
    """The informative line of torch's weights_only error (it names the refused global)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for ln in lines:
        if "WeightsUnpickler error" in ln or "GLOBAL" in ln:
            return ln
    return lines[0] if lines else type(exc).__name__


def _not_zip(head: bytes) -> str:
    """What a file that is not a zip archive looks like (for the message)."""
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "a pickle (torch's pre-1.6 format or plain pickle)"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        text = head[: exc.start].decode("utf-8") if exc.start >= len(head) - 3 else ""
    if text and all(c.isprintable() or c in "\t\r\n\f" for c in text):
        return "a text file"
    return "unrecognised binary data"


def _check_archive(path: Path) -> None:
    """File-level checks before torch.load: a regular, non-empty file within MAX_FILE_BYTES that is a zip
    archive as torch.save writes it, with stored (uncompressed) entries only."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ModelFormatError(f"{path}: no such model file") from None
    except OSError as exc:
        raise ModelFormatError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise ModelFormatError(f"{path}: is a directory, not a model file")
    if not stat.S_ISREG(st.st_mode):
        raise ModelFormatError(f"{path}: not a regular file")
    if st.st_size == 0:
        raise ModelFormatError(f"{path}: not a PQA model file (empty file)")
    if st.st_size > MAX_FILE_BYTES:
        raise ModelFormatError(f"{path}: {st.st_size} bytes; a model file has at most {MAX_FILE_BYTES} bytes")
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as exc:
        raise ModelFormatError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not head.startswith(b"PK\x03\x04"):
        raise ModelFormatError(f"{path}: not a PQA model file ({_not_zip(head)}, not a zip/torch archive)")
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001  (zipfile raises BadZipFile, NotImplementedError, struct.error, ...)
        raise ModelFormatError(f"{path}: not a PQA model file (truncated or corrupt zip archive: "
                               f"{_reason(exc)})") from None
    if not any(i.filename == "data.pkl" or i.filename.endswith("/data.pkl") for i in infos):
        raise ModelFormatError(f"{path}: not a PQA model file (a zip archive but not a torch one: no data.pkl)")
    total = 0
    for i in infos:
        if i.compress_type != zipfile.ZIP_STORED or i.file_size != i.compress_size:
            raise ModelFormatError(f"{path}: refused: zip entry {_brief(i.filename)} is compressed "
                                   "(torch.save writes uncompressed entries; a compressed one could expand "
                                   "without bound)")
        total += i.file_size
    if total > st.st_size:
        raise ModelFormatError(f"{path}: not a PQA model file (corrupt zip archive: its entries claim {total} "
                               f"bytes in a {st.st_size}-byte file)")


def _read(path: Path) -> Any:
    """:func:`_check_archive`, then torch.load with weights_only (no pickled code or class is run)."""
    _check_archive(path)
    try:
        with warnings.catch_warnings():  # torch warns on some legal-but-odd content; the verdict is ours
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ModelFormatError(
            f"{path}: refused: the file holds something other than tensors and plain data "
            f"(weights_only loading rejected it; nothing in it was executed): {_reason(exc)}"
        ) from None
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001  (torch's reader raises many kinds on a corrupt archive)
        raise ModelFormatError(f"{path}: not a readable model file (truncated or corrupt?): "
                               f"{type(exc).__name__}: {_reason(exc)}") from None


def load_raw(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a model file without building the network. Raises :class:`ModelFormatError`, whose
    message starts with the path and names the field."""
    path = Path(path)
    obj = _read(path)
    if not isinstance(obj, dict):
        raise ModelFormatError(f"{path}: not a PQA model file (the archive holds {_brief(obj)}, not a dict)")
    if "format" not in obj:
        raise ModelFormatError(f"{path}: not a PQA model file (a torch file without 'format': {FORMAT!r}; a bare "
                               "state dict?)")
    fmt = obj["format"]
    if not isinstance(fmt, str) or fmt != FORMAT:
        raise ModelFormatError(f"{path}: 'format' is {_brief(fmt)}, expected {FORMAT!r}")
    version = obj.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version != VERSION:
        raise ModelFormatError(f"{path}: 'version' {_brief(version)} is not supported (expected {VERSION})")
    for key in ("arch", "state_dict", "meta"):
        if key not in obj:
            raise ModelFormatError(f"{path}: lacks '{key}'")
    try:
        if not isinstance(obj["meta"], dict):
            raise ModelFormatError(f"'meta' must be a dict, got {_brief(obj['meta'])}")
        check_json(obj["meta"], "meta")
        validate_arch(obj["arch"])
        _check_state(obj["state_dict"], obj["arch"])
    except ModelFormatError as exc:
        raise ModelFormatError(f"{path}: {exc}") from None
    return obj


def load(path: str | os.PathLike[str]) -> tuple[PQNet, dict[str, Any], dict[str, Any]]:
    """Load a model file -> (network in eval mode, arch, meta). Raises :class:`ModelFormatError`.

    Everything is checked (:func:`load_raw`) before the network is built, so the build allocates only what
    the file's own tensors hold."""
    obj = load_raw(path)
    model = build(obj["arch"])
    model.load_state_dict(obj["state_dict"], strict=True)
    model.eval()
    return model, obj["arch"], obj["meta"]
