"""Model zoo: architecture descriptions (plain JSON, see docs/file_formats.md) and builders.

- ``digits_mlp``: 64 -> PQ 64 -> ReLU -> PQ 10 (K=16, v=4): fits the ``small`` hardware config.
- ``digits_cnn``: 1x8x8 -> PQ conv 3x3 (v=3: one kernel row) 16ch -> PQ conv 3x3/2 (v=9: one channel's patch)
  32ch -> flatten -> PQ linear 512 -> 10 (v=16), K=32 (K=32 beats K=16 by ~0.4 points at 8 bits); trains in a few
  minutes on 2 cores.
- ``resnet20``: CIFAR-10 ResNet-20; its 18 3x3 convs after the stem are PQ with K=16, v=9, the layer list of
  PQA (docs/design §4); the two down-sampling blocks have 1x1 stride-2 projection shortcuts (option B), PQ
  with v=``proj_v`` (4); the stem conv and the classifier stay float (run them on the host:
  ``pqcompile --host-layers``).
- ``kws``: a keyword-spotting network with PQA's KWS PQ layer shapes (1x1 convs on [84, 5, 25]: 84->120->84->84
  ->84->196, K=16, v=4) behind a float stem on 10x50 MFCC features (:func:`pqmodel.data.load_speech_commands`).
- ``emnist``: PQA's EMNIST PQ layer shapes (1x1 convs 64->96->120->150 at 14x14, 150->187->234->292 at 7x7,
  292->366->457->572 at 4x4, 572->512 at 2x2; K=12, v=4) with the down-sampling in float pooling layers,
  behind a float stem on 1x28x28 images, 47 classes (EMNIST balanced).

``arch(name)`` returns the PQ description, ``build_model(name)`` an untrained :class:`pqmodel.model.PQNet`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pqmodel.model import PQNet, build

from .train import mlp_arch

Arch = dict[str, Any]


def _pqconv(cin: int, cout: int, ks: int, k: int, v: int, stride: int = 1, padding: int = 0,
            metric: str = "l2", bias: bool = True) -> dict[str, Any]:
    return {"type": "pq_conv2d", "in_channels": cin, "out_channels": cout, "kernel_size": ks, "stride": stride,
            "padding": padding, "k": k, "v": v, "metric": metric, "bias": bias}


def digits_mlp(k: int = 16, v: int = 4, metric: str = "l2") -> Arch:
    return mlp_arch([64], k=k, v=v, metric=metric, name="digits_mlp")


def digits_cnn(k: int = 32, metric: str = "l2") -> Arch:
    return {"name": "digits_cnn", "input_shape": [1, 8, 8], "num_classes": 10, "layers": [
        _pqconv(1, 16, 3, k, 3, padding=1, metric=metric), {"type": "relu"},
        _pqconv(16, 32, 3, k, 9, stride=2, padding=1, metric=metric), {"type": "relu"},
        {"type": "flatten"},
        {"type": "pq_linear", "in_features": 512, "out_features": 10, "k": k, "v": 16, "metric": metric},
    ]}


def resnet20(k: int = 16, v: int = 9, metric: str = "l2", num_classes: int = 10, proj_v: int = 4) -> Arch:
    layers: list[dict[str, Any]] = [
        {"type": "conv2d", "in_channels": 3, "out_channels": 16, "kernel_size": 3, "padding": 1, "bias": False},
        {"type": "batchnorm2d", "num_features": 16}, {"type": "relu"}]
    cin = 16
    for cout, first_stride in ((16, 1), (32, 2), (64, 2)):
        for b in range(3):
            stride = first_stride if b == 0 else 1
            body = [_pqconv(cin, cout, 3, k, v, stride, 1, metric, bias=False),
                    {"type": "batchnorm2d", "num_features": cout}, {"type": "relu"},
                    _pqconv(cout, cout, 3, k, v, 1, 1, metric, bias=False),
                    {"type": "batchnorm2d", "num_features": cout}]
            shortcut = [] if stride == 1 and cin == cout else [
                _pqconv(cin, cout, 1, k, proj_v, stride, 0, metric, bias=False),
                {"type": "batchnorm2d", "num_features": cout}]
            layers += [{"type": "residual", "body": body, "shortcut": shortcut}, {"type": "relu"}]
            cin = cout
    layers += [{"type": "global_avgpool"}, {"type": "linear", "in_features": 64, "out_features": num_classes}]
    return {"name": "resnet20", "input_shape": [3, 32, 32], "num_classes": num_classes, "layers": layers}


def _pw_stack(widths: list[int], k: int, v: int, metric: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for cin, cout in zip(widths[:-1], widths[1:], strict=True):
        out += [_pqconv(cin, cout, 1, k, v, metric=metric, bias=False),
                {"type": "batchnorm2d", "num_features": cout}, {"type": "relu"}]
    return out


def kws(k: int = 16, v: int = 4, metric: str = "l2", num_classes: int = 12) -> Arch:
    layers: list[dict[str, Any]] = [
        {"type": "conv2d", "in_channels": 1, "out_channels": 84, "kernel_size": 3, "stride": 2, "padding": 1},
        {"type": "batchnorm2d", "num_features": 84}, {"type": "relu"},
        *_pw_stack([84, 120, 84, 84, 84, 196], k, v, metric),
        {"type": "global_avgpool"}, {"type": "linear", "in_features": 196, "out_features": num_classes}]
    return {"name": "kws", "input_shape": [1, 10, 50], "num_classes": num_classes, "layers": layers}


def emnist(k: int = 12, v: int = 4, metric: str = "l2", num_classes: int = 47) -> Arch:
    pool = {"type": "avgpool", "kernel_size": 2, "stride": 2, "ceil_mode": True}
    layers: list[dict[str, Any]] = [
        {"type": "conv2d", "in_channels": 1, "out_channels": 64, "kernel_size": 3, "stride": 2, "padding": 1},
        {"type": "batchnorm2d", "num_features": 64}, {"type": "relu"},
        *_pw_stack([64, 96, 120, 150], k, v, metric), pool,
        *_pw_stack([150, 187, 234, 292], k, v, metric), pool,
        *_pw_stack([292, 366, 457, 572], k, v, metric), pool,
        *_pw_stack([572, 512], k, v, metric),
        {"type": "global_avgpool"}, {"type": "linear", "in_features": 512, "out_features": num_classes}]
    return {"name": "emnist", "input_shape": [1, 28, 28], "num_classes": num_classes, "layers": layers}


# Layers of each zoo model that the accelerator does not run (float stems and classifiers): what to pass to
# ``pqcompile --host-layers`` (module paths of the architecture's layer list).
HOST_LAYERS: dict[str, list[str]] = {"resnet20": ["layers.0", "layers.1", "layers.2", "layers.22"],
                                     "kws": ["layers.0", "layers.1", "layers.2", "layers.19"]}

ZOO: dict[str, Callable[..., Arch]] = {
    "digits_mlp": digits_mlp, "digits_cnn": digits_cnn, "resnet20": resnet20, "kws": kws, "emnist": emnist,
}


def arch(name: str, **kwargs: Any) -> Arch:
    """The PQ architecture description of zoo model ``name`` (keyword arguments: k, v, metric, ...)."""
    if name not in ZOO:
        raise KeyError(f"unknown zoo model {name!r}; known: {', '.join(ZOO)}")
    return ZOO[name](**kwargs)


def build_model(name: str, **kwargs: Any) -> PQNet:
    """An untrained network of zoo model ``name``."""
    return build(arch(name, **kwargs))
