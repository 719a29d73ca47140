"""The PQA saved-model format (``.pt``) and the network builder.

A model file is a plain dict readable with ``torch.load(path, weights_only=True)``::

    {"format": "pqa-model", "version": 1, "arch": ARCH, "state_dict": {str: Tensor}, "meta": {...}}

ARCH is JSON-able: ``{"name": str, "input_shape": [64], "num_classes": 10, "layers": [LAYER, ...]}`` where
LAYER is one of

- ``{"type": "pq_linear", "in_features": D, "out_features": M, "k": K, "v": v, "metric": "l2"|"l1"}``
- ``{"type": "linear", "in_features": D, "out_features": M}`` (plain float layer)
- ``{"type": "relu"}``
- ``{"type": "flatten"}``

Both linear kinds take an optional ``"bias": bool`` (default true). state_dict keys are
``layers.<i>.<param>`` with ``i`` the index in the layer list.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .layers import METRICS, PQLinear

FORMAT = "pqa-model"
VERSION = 1
LAYER_TYPES = ("pq_linear", "linear", "relu", "flatten")


class ModelFormatError(ValueError):
    """A model file or architecture description that is missing, corrupt, unsafe or inconsistent."""


class PQNet(nn.Module):
    """A sequential network of the layer kinds in :data:`LAYER_TYPES`."""

    def __init__(self, layers: list[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x

    def pq_layers(self) -> list[PQLinear]:
        return [m for m in self.layers if isinstance(m, PQLinear)]

    def set_temperature(self, temperature: float) -> None:
        for m in self.pq_layers():
            m.temperature = temperature


def _int_field(layer: dict[str, Any], key: str, i: int) -> int:
    val = layer.get(key)
    if not isinstance(val, int) or isinstance(val, bool) or val < 1:
        raise ModelFormatError(f"layer {i} ({layer.get('type')}): '{key}' must be a positive integer, got {val!r}")
    return val


def validate_arch(arch: Any) -> None:
    """Check an ARCH description; raises :class:`ModelFormatError` naming the offending layer."""
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
    features = math.prod(shape) if len(shape) == 1 else None
    for i, layer in enumerate(layers):
        if not isinstance(layer, dict) or "type" not in layer:
            raise ModelFormatError(f"layer {i}: must be a dict with a 'type', got {layer!r}")
        kind = layer["type"]
        if kind not in LAYER_TYPES:
            raise ModelFormatError(f"layer {i}: unknown layer type {kind!r} (known: {', '.join(LAYER_TYPES)})")
        if kind == "flatten":
            features = math.prod(shape)
        elif kind in ("linear", "pq_linear"):
            d = _int_field(layer, "in_features", i)
            m = _int_field(layer, "out_features", i)
            if not isinstance(layer.get("bias", True), bool):
                raise ModelFormatError(f"layer {i} ({kind}): 'bias' must be a bool")
            if features is not None and d != features:
                raise ModelFormatError(f"layer {i} ({kind}): in_features {d} but the previous layer gives {features}")
            features = m
            if kind == "pq_linear":
                _int_field(layer, "k", i)
                _int_field(layer, "v", i)
                if layer.get("metric") not in METRICS:
                    raise ModelFormatError(f"layer {i} (pq_linear): metric must be one of {METRICS}, got "
                                           f"{layer.get('metric')!r}")
    if features is not None and features != arch["num_classes"]:
        raise ModelFormatError(f"the last layer gives {features} outputs but num_classes is {arch['num_classes']}")


def build(arch: dict[str, Any]) -> PQNet:
    """Build an (untrained) :class:`PQNet` from an ARCH description."""
    validate_arch(arch)
    mods: list[nn.Module] = []
    for layer in arch["layers"]:
        kind = layer["type"]
        bias = layer.get("bias", True)
        if kind == "pq_linear":
            mods.append(PQLinear(layer["in_features"], layer["out_features"], layer["k"], layer["v"],
                                 metric=layer["metric"], bias=bias))
        elif kind == "linear":
            mods.append(nn.Linear(layer["in_features"], layer["out_features"], bias=bias))
        elif kind == "relu":
            mods.append(nn.ReLU())
        else:
            mods.append(nn.Flatten())
    return PQNet(mods)


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
        if not state[key].is_floating_point():
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
