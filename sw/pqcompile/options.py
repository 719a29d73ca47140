"""The build configuration: everything a build depends on besides the model file (the hardware
configuration, the inputs, the front end's widths and calibration, the host layers). One JSON-serializable
dataclass: ``pqcompile`` fills it from its options, :func:`pqcompile.cli.compile_model` takes it, and the
manifest records it (``build_config``), so that a build says how it was made (docs/file_formats.md)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from .quantize import CALIB_METHODS

OP_ORDERS = ("auto", "model")  # --op-order


class OptionError(ValueError):
    """A build configuration value out of its range, naming the option."""


@dataclass(frozen=True)
class BuildConfig:
    config: str = "default"  # a named hardware configuration of the spec
    inputs: str = "digits-test"  # "digits-test", "random" or a .npy file of float inputs
    count: int = 100  # inputs (images or columns) in the build
    seed: int = 0  # of --inputs random
    act_bits: int | None = None  # activation and prototype width (None: the configuration's ActW)
    lut_bits: int | None = None  # table entry width (None: the configuration's LutW)
    act_calib: str = "max"  # calibration of the activation scales (quantize.CALIB_METHODS)
    lut_calib: str = "max"  # calibration of the table scales
    host_layers: tuple[str, ...] = ()  # top-level layers run on the host (a leading prefix / trailing suffix)
    batch: int | None = None  # inputs a pass: tables loaded once per B inputs (None: all --count in one pass)
    batch_from: str | None = None  # the op from which on a pass runs its B inputs at once (before it: one by one);
    # "auto": the schedule the cycle model finishes soonest (backend.auto_split; it may change batch to 1)
    mem_bw: int = 0  # bytes a cycle the schedule assumes the memory delivers (0: one bus word a cycle): the order
    # of long table loads (backend.fetch_order) and --batch-from auto's choice
    op_order: str = "auto"  # "auto": the order of independent ops the cycle model finishes soonest
    # (backend.order_ops); "model": the model's own order

    def __post_init__(self) -> None:
        for f in fields(self):
            val = getattr(self, f.name)
            if f.name == "host_layers":
                if not isinstance(val, tuple | list) or not all(isinstance(h, str) for h in val):
                    raise OptionError(f"host_layers must be a list of layer names, got {val!r}")
                object.__setattr__(self, "host_layers", tuple(h for item in val for h in item.split(",") if h))
            elif f.name in ("act_bits", "lut_bits", "batch"):
                if val is not None and (not isinstance(val, int) or isinstance(val, bool)):
                    raise OptionError(f"{f.name} must be an integer or null, got {val!r}")
            elif f.name == "batch_from":
                if val is not None and not isinstance(val, str):
                    raise OptionError(f"batch_from must be an op name or null, got {val!r}")
            elif f.name in ("count", "seed", "mem_bw"):
                if not isinstance(val, int) or isinstance(val, bool):
                    raise OptionError(f"{f.name} must be an integer, got {val!r}")
            elif not isinstance(val, str):
                raise OptionError(f"{f.name} must be a string, got {val!r}")
        if self.count < 1:
            raise OptionError("--count must be at least 1")
        if self.batch is not None and self.batch < 1:
            raise OptionError("--batch must be at least 1")
        if self.mem_bw < 0:
            raise OptionError("--mem-bw must be 0 (one bus word a cycle) or a positive number of bytes a cycle")
        if self.op_order not in OP_ORDERS:
            raise OptionError(f"op_order must be one of {', '.join(OP_ORDERS)}, got {self.op_order!r}")
        if self.seed < 0:
            raise OptionError("--seed must be a non-negative integer")
        for name in ("act_calib", "lut_calib"):
            if getattr(self, name) not in CALIB_METHODS:
                raise OptionError(f"{name} must be one of {', '.join(CALIB_METHODS)}, got {getattr(self, name)!r}")

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["host_layers"] = list(self.host_layers)
        return d

    @classmethod
    def from_json(cls, d: Any) -> BuildConfig:
        """The configuration a manifest's ``build_config`` records (OptionError for an unknown key or a bad
        value)."""
        if not isinstance(d, dict):
            raise OptionError(f"build_config must be an object, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise OptionError(f"build_config has unknown keys {unknown}")
        return cls(**d)
