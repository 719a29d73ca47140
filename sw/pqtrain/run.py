"""Where and how a training run runs: the device, the processes (``torchrun``, torch.distributed), checkpoints
and the per-epoch CSV log.

A :class:`Run` is what the training functions of :mod:`pqtrain.train` take besides the hyper-parameters
(:class:`pqtrain.train.TrainConfig`): nothing in it changes what is computed, only where (the device, the
processes) and what survives (checkpoints, the log). ``Run()`` is the default: the CPU, one process, nothing
written.

- Device: :func:`resolve_device` (``auto``: CUDA when torch sees a device, else the CPU). Data stay on the
  CPU and go to the device a batch at a time; k-means runs on the CPU, and the integer export
  (:func:`pqtrain.integer.export_integer`) always reads the weights back to the CPU in float64, so the
  exported integer model is a function of the trained weights only, never of the device.
- Processes: under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) :func:`init_distributed` joins the
  process group (NCCL on CUDA devices, gloo on CPUs); :class:`pqtrain.train.fit` then wraps the model in
  DistributedDataParallel and shards each epoch with a DistributedSampler. Rank 0 alone logs, writes
  checkpoints, the CSV log and the model; choices (model selection, calibration) are made on rank 0 and
  broadcast, and k-means conversion runs on rank 0 whose result is broadcast, so every rank holds the same
  weights (:func:`check_same_weights`).
- Checkpoints (:class:`Checkpoints`): one file, ``<dir>/checkpoint.pt``, replaced atomically after every
  epoch (temporary file + ``os.replace``), holding plain data and tensors only (it loads with
  ``torch.load(weights_only=True)``): the stage and epoch, the model, optimizer and scheduler states, the RNG
  states (torch, CUDA, numpy, Python), the batch order's generator, the model-selection state, the finished
  stages' results and the CSV rows so far. ``--resume`` continues from it bit for bit on the same machine.
"""

from __future__ import annotations

import copy
import csv
import datetime
import hashlib
import io
import os
import pickle
import random
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as tdist
from torch import Tensor, nn

DEVICES = ("auto", "cpu", "cuda")
CHECKPOINT = "checkpoint.pt"
CHECKPOINT_FORMAT = "pqtrain-checkpoint"
CHECKPOINT_VERSION = 1
CSV_FIELDS = ("stage", "epoch", "epochs", "loss", "train_acc", "val_acc", "lr", "seconds")


class RunError(ValueError):
    """A device, process-group, checkpoint or option problem the user must fix (one line; exit status 2)."""


class Stopped(Exception):  # noqa: N818  (not an error: the run stopped where it was asked to, checkpoint written)
    """``Run.stop_after`` epochs were trained in this invocation and checkpointed; ``--resume`` continues."""

    def __init__(self, epochs: int, path: Path | None) -> None:
        super().__init__(f"stopped after {epochs} epoch{'s' if epochs != 1 else ''} of training"
                         + (f" (checkpoint {path})" if path is not None else ""))
        self.epochs = epochs
        self.path = path


# ------------------------------------------------------------------------------------------------------------
# device and processes
# ------------------------------------------------------------------------------------------------------------
def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``"auto"`` (CUDA when available, else the CPU), ``"cpu"`` or ``"cuda"`` (the ``local_rank``-th device
    when several are visible). Raises :class:`RunError` for ``cuda`` without a CUDA device."""
    if name not in DEVICES:
        raise RunError(f"--device {name}: expected one of {', '.join(DEVICES)}")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        build = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise RunError(f"--device cuda: no CUDA device is available (torch {torch.__version__}, {build}); "
                       "use --device cpu or auto")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


@dataclass(frozen=True)
class Dist:
    """This process's place among the training processes (one process: rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the process that logs and writes."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise RunError(f"environment variable {name}={text!r} is not an integer (set by torchrun)") from None


def init_distributed(device: str = "auto", timeout_s: float = 1800.0) -> tuple[Dist, torch.device]:
    """Join the process group when started by ``torchrun`` (``WORLD_SIZE`` > 1): NCCL when the device is
    CUDA, else gloo. Returns (this process's :class:`Dist`, its device). One process: no group."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise RunError(f"RANK={rank} / WORLD_SIZE={world}: not a valid process rank (set by torchrun)")
    dev = resolve_device(device, local)
    if world == 1:
        return Dist(), dev
    if not tdist.is_available():
        raise RunError("this torch build has no torch.distributed: run one process")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if not tdist.is_initialized():
        kw: dict[str, Any] = {"device_id": dev} if dev.type == "cuda" else {}
        tdist.init_process_group(backend, rank=rank, world_size=world,
                                 timeout=datetime.timedelta(seconds=timeout_s), **kw)
    return Dist(rank, world, local), dev


def shutdown_distributed(wait: bool = True) -> None:
    """Leave the process group, after every rank got here (``wait``; not after an error, which the other ranks
    may never reach)."""
    if tdist.is_available() and tdist.is_initialized():
        if wait:
            tdist.barrier()
        tdist.destroy_process_group()


def _comm_device(dist: Dist) -> torch.device:
    """The device collectives run on: the current CUDA device under NCCL, else the CPU."""
    if dist.active and tdist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def broadcast_object(obj: Any, dist: Dist) -> Any:
    """Rank 0's ``obj`` on every rank (pickled by torch.distributed between our own processes)."""
    if not dist.active:
        return obj
    box = [obj if dist.main else None]
    tdist.broadcast_object_list(box, src=0, device=_comm_device(dist))
    return box[0]


def broadcast_module(module: nn.Module, dist: Dist, buffers_only: bool = False) -> None:
    """Copy rank 0's parameters and buffers (or buffers only) into ``module`` on every rank."""
    if not dist.active:
        return
    tensors = list(module.buffers()) if buffers_only else list(module.state_dict().values())
    for t in tensors:
        with torch.no_grad():
            tdist.broadcast(t, src=0)


def all_sum(values: list[float], dist: Dist) -> list[float]:
    """Element-wise sums over the ranks (float64)."""
    if not dist.active:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=_comm_device(dist))
    tdist.all_reduce(t)
    return [float(v) for v in t.cpu()]


def average_gradients(params: list[nn.Parameter], dist: Dist) -> None:
    """Mean of the gradients over the ranks (for parameters outside the DDP-wrapped module)."""
    if not dist.active:
        return
    for p in params:
        if p.grad is not None:
            tdist.all_reduce(p.grad)
            p.grad.div_(dist.world)


def state_digest(module: nn.Module) -> str:
    """sha256 of every parameter and buffer (name, dtype, shape, bytes): equal digests, equal weights."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        a = t.detach().cpu().contiguous()
        h.update(f"{name}:{a.dtype}:{list(a.shape)};".encode())
        h.update(a.numpy().tobytes() if a.dtype != torch.bfloat16 else a.view(torch.int16).numpy().tobytes())
    return h.hexdigest()


def check_same_weights(module: nn.Module, dist: Dist) -> str:
    """Every rank's digest of ``module``; raises RuntimeError when the ranks' weights differ."""
    digest = state_digest(module)
    if not dist.active:
        return digest
    got: list[Any] = [None] * dist.world
    tdist.all_gather_object(got, digest)
    if len(set(got)) != 1:
        raise RuntimeError(f"the ranks' final weights differ (digests {', '.join(str(g)[:12] for g in got)})")
    return digest


# ------------------------------------------------------------------------------------------------------------
# RNG states as tensors and plain data (loadable with weights_only)
# ------------------------------------------------------------------------------------------------------------
def rng_state(device: torch.device) -> dict[str, Any]:
    """The RNG states of torch (CPU and, on a CUDA device, CUDA), numpy's global generator and Python's
    ``random``, as tensors and plain values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]
    version, py_state, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else [],
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": int(version), "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss": None if gauss is None else float(gauss)},
    }


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))


# ------------------------------------------------------------------------------------------------------------
# files
# ------------------------------------------------------------------------------------------------------------
def to_cpu(obj: Any) -> Any:
    """A copy of ``obj`` (nested dicts, lists, tuples) with every tensor detached, cloned and on the CPU."""
    if isinstance(obj, Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_cpu(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(to_cpu(v) for v in obj)
    return copy.copy(obj)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and ``os.replace``: a reader
    sees the old file or the new one, never a part."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(obj: dict[str, Any], path: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write(path, buf.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` (tensors and plain data only); :class:`RunError` if it is
    not one."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise RunError(f"{path}: refused: not plain tensors and data (weights_only loading rejected it: "
                       f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001  (torch's reader raises many kinds on a corrupt archive)
        raise RunError(f"{path}: not a readable checkpoint (truncated or corrupt?): {type(exc).__name__}") from None
    if not isinstance(obj, dict) or obj.get("format") != CHECKPOINT_FORMAT:
        raise RunError(f"{path}: not a pqtrain checkpoint (no 'format': {CHECKPOINT_FORMAT!r})")
    if obj.get("version") != CHECKPOINT_VERSION:
        raise RunError(f"{path}: checkpoint version {obj.get('version')!r} is not supported "
                       f"(expected {CHECKPOINT_VERSION})")
    for key in ("stage", "epoch", "identity", "pipeline", "loop", "rows"):
        if key not in obj:
            raise RunError(f"{path}: checkpoint lacks '{key}'")
    return obj


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """The per-epoch log, rewritten whole (atomically) so that it always matches the checkpoint."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for row in rows:
        w.writerow({k: _fmt(row.get(k)) for k in CSV_FIELDS})
    atomic_write(path, buf.getvalue().encode())


def _first_difference(a: Any, b: Any, at: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if k not in a or k not in b:
                return f"{at}{k}"
            d = _first_difference(a[k], b[k], f"{at}{k}.")
            if d is not None:
                return d
        return None
    return None if a == b else at.rstrip(".") or "(value)"


class Checkpoints:
    """The checkpoint of a training run in ``directory`` (``checkpoint.pt``) and its CSV log (``csv``; default
    ``directory/log.csv``; without a directory only the log, if a path is given).

    ``resume``: continue from the checkpoint in ``directory`` if there is one (else start from the beginning);
    without it an existing checkpoint is refused (it would be overwritten). Rank 0 reads the checkpoint and
    broadcasts it, so the other processes need not see the directory; only rank 0 writes."""

    def __init__(self, directory: str | os.PathLike[str] | None, dist: Dist = Dist(), resume: bool = False,
                 csv_path: str | os.PathLike[str] | None = None) -> None:
        self.dir = Path(directory) if directory is not None else None
        self.dist = dist
        self.csv = Path(csv_path) if csv_path is not None else (self.dir / "log.csv" if self.dir else None)
        self.loaded: dict[str, Any] | None = None  # the checkpoint being resumed
        self.start_stage: str | None = None  # its stage: the stages before it are finished
        self._loop: dict[str, Any] | None = None
        self.pipeline: dict[str, Any] = {}  # what finished stages left (float weights, accuracies, calibration)
        self.rows: list[dict[str, Any]] = []
        self.identity: dict[str, Any] | None = None
        if self.dir is None and resume:
            raise RunError("--resume needs --checkpoint-dir (the directory of the run to continue)")
        loaded: dict[str, Any] | None = None
        problem: str | None = None
        if dist.main:
            try:
                loaded = self._open(resume)
            except RunError as exc:
                problem = str(exc)
        problem, loaded = broadcast_object((problem, loaded), dist)
        if problem is not None:
            raise RunError(problem)
        if loaded is not None:
            self.loaded = loaded
            self.start_stage = str(loaded["stage"])
            self._loop = loaded["loop"]
            self.pipeline = loaded["pipeline"]
            self.rows = list(loaded["rows"])

    @property
    def path(self) -> Path | None:
        return self.dir / CHECKPOINT if self.dir is not None else None

    def _open(self, resume: bool) -> dict[str, Any] | None:
        loaded = self._open_dir(resume)
        if self.csv is not None and not self.csv.parent.is_dir():
            raise RunError(f"--log-csv {self.csv}: directory '{self.csv.parent}' does not exist")
        if self.csv is not None and self.csv.is_dir():
            raise RunError(f"--log-csv {self.csv}: is a directory")
        return loaded

    def _open_dir(self, resume: bool) -> dict[str, Any] | None:
        if self.dir is None:
            return None
        if self.dir.exists() and not self.dir.is_dir():
            raise RunError(f"--checkpoint-dir {self.dir}: exists and is not a directory")
        if not self.dir.exists():
            if resume:
                raise RunError(f"--checkpoint-dir {self.dir}: does not exist (nothing to resume)")
            try:
                self.dir.mkdir(parents=True)
            except OSError as exc:
                raise RunError(f"--checkpoint-dir {self.dir}: cannot create it: {exc.strerror or exc}") from None
        if not os.access(self.dir, os.W_OK | os.X_OK):
            raise RunError(f"--checkpoint-dir {self.dir}: not writable")
        path = self.dir / CHECKPOINT
        if not path.exists():
            return None
        if not resume:
            raise RunError(f"{path} exists: pass --resume to continue that run, or choose another --checkpoint-dir")
        return load_checkpoint(path)

    def bind(self, identity: dict[str, Any]) -> None:
        """The settings that must not change between a checkpoint and its resumption (hyper-parameters,
        architecture, data, number of processes); a loaded checkpoint with other ones is refused."""
        self.identity = to_cpu(identity)
        if self.loaded is not None:
            diff = _first_difference(self.loaded["identity"], self.identity)
            if diff is not None:
                old = self.loaded["identity"]
                for part in diff.split("."):
                    old = old.get(part, "<absent>") if isinstance(old, dict) else old
                raise RunError(f"{self.path}: written with other settings ({diff} was {str(old)[:80]!r}); "
                               "resume with the same options, or start a new --checkpoint-dir")

    def resume_loop(self, stage: str) -> dict[str, Any] | None:
        """The training-loop state to resume ``stage`` from, once (None when the checkpoint is of another stage)."""
        if self._loop is None or stage != self.start_stage:
            return None
        loop, self._loop = self._loop, None
        return loop

    def finished(self, stage: str, order: tuple[str, ...]) -> bool:
        """True when the checkpoint being resumed is of a stage after ``stage`` (which is therefore finished)."""
        return self.start_stage is not None and order.index(self.start_stage) > order.index(stage)

    def add_row(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if self.dist.main and self.csv is not None:
            write_csv(self.csv, self.rows)

    def save(self, stage: str, epoch: int, loop: dict[str, Any]) -> None:
        """Write the checkpoint after ``epoch`` epochs of ``stage`` (rank 0; atomic)."""
        if not self.dist.main or self.path is None:
            return
        assert self.identity is not None, "Checkpoints.bind() first"
        obj = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "stage": stage, "epoch": epoch,
               "identity": self.identity, "pipeline": to_cpu(self.pipeline), "loop": to_cpu(loop),
               "rows": list(self.rows)}
        save_checkpoint(obj, self.path)


@dataclass
class Run:
    """Where a run trains and what it writes besides the model (see the module docstring)."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dist: Dist = field(default_factory=Dist)
    checkpoints: Checkpoints | None = None
    workers: int = 0  # DataLoader worker processes (0: batches are made in this process)
    stop_after: int | None = None  # stop (Stopped) after this many epochs in this invocation, once checkpointed
    epochs_run: int = 0

    def epoch_done(self) -> None:
        """Count an epoch trained (and checkpointed) in this invocation; raise :class:`Stopped` at ``stop_after``."""
        self.epochs_run += 1
        if self.stop_after is not None and self.epochs_run >= self.stop_after:
            raise Stopped(self.epochs_run, self.checkpoints.path if self.checkpoints else None)


def iter_chunks(n: int, size: int) -> Iterator[slice]:
    for i in range(0, n, size):
        yield slice(i, min(n, i + size))
